//! The attacks: forged and tampered tokens, refresh-token theft, CSRF, password guessing,
//! account enumeration, hostile bodies, and secrets leaking into the audit log.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use fluxgate_core::claims::AccessClaims;
use fluxgate_testkit::{body, expect_error, Backend, TestApp, PASSWORD, PUBLIC_URL};
use reqwest::Method;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

both_backends!(
    forged_and_tampered_access_tokens_are_refused,
    reusing_a_spent_refresh_token_ends_the_session,
    concurrent_refreshes_get_the_same_new_pair,
    cookie_requests_from_foreign_origins_are_refused,
    repeated_failures_lock_the_account_even_for_the_right_password,
    login_answers_do_not_reveal_whether_an_email_exists,
    hostile_bodies_get_clear_client_errors,
    secrets_never_reach_the_audit_log,
);

fn b64(value: &Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(value).unwrap_or_default())
}

fn parts(jwt: &str) -> (Value, Value, String) {
    let mut it = jwt.split('.');
    let decode = |s: Option<&str>| -> Value {
        serde_json::from_slice(
            &URL_SAFE_NO_PAD
                .decode(s.unwrap_or_default())
                .unwrap_or_default(),
        )
        .unwrap_or(Value::Null)
    };
    let header = decode(it.next());
    let claims = decode(it.next());
    (header, claims, it.next().unwrap_or_default().to_string())
}

async fn refused(app: &TestApp, token: &str, what: &str) {
    let response = app.get_auth("/api/v1/auth/me", token).await;
    assert_eq!(response.status(), 401, "{what} was accepted");
    let error = body(response).await;
    assert_eq!(error["error"]["code"], "UNAUTHORIZED", "{what}");
}

async fn forged_and_tampered_access_tokens_are_refused(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.signup_verified("mo@example.com", Some("Mo")).await;
    app.signup_verified("ned@example.com", None).await;
    let tokens = app.login("mo@example.com", PASSWORD).await;
    let genuine = tokens["access_token"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert_eq!(
        app.get_auth("/api/v1/auth/me", &genuine).await.status(),
        200
    );
    let (header, claims, signature) = parts(&genuine);
    let ned_id = body(
        app.get_auth(
            "/api/v1/auth/me",
            app.login("ned@example.com", PASSWORD).await["access_token"]
                .as_str()
                .unwrap_or_default(),
        )
        .await,
    )
    .await["data"]["user"]["id"]
        .clone();

    // claims changed under the original signature (impersonate another user)
    let mut stolen = claims.clone();
    stolen["sub"] = ned_id.clone();
    refused(
        &app,
        &format!("{}.{}.{}", b64(&header), b64(&stolen), signature),
        "a tampered payload",
    )
    .await;
    // alg: none
    let none = json!({ "alg": "none", "typ": "at+jwt", "kid": header["kid"] });
    refused(
        &app,
        &format!("{}.{}.", b64(&none), b64(&stolen)),
        "alg none",
    )
    .await;
    // HS256 keyed with the public key (algorithm confusion), both raw and as published
    let jwks = body(
        app.client
            .get(app.url("/.well-known/jwks.json"))
            .send()
            .await
            .expect("jwks"),
    )
    .await;
    let x = jwks["keys"][0]["x"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    for secret in [
        URL_SAFE_NO_PAD.decode(&x).unwrap_or_default(),
        x.clone().into_bytes(),
    ] {
        let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
        h.kid = header["kid"].as_str().map(str::to_owned);
        h.typ = Some("at+jwt".into());
        let forged = jsonwebtoken::encode(
            &h,
            &stolen,
            &jsonwebtoken::EncodingKey::from_secret(&secret),
        )
        .expect("hs256");
        refused(&app, &forged, "HS256 with the public key").await;
    }
    // a different Ed25519 key claiming our kid
    let other = ed25519_dalek::SigningKey::from_bytes(&[7u8; 32]);
    let der = {
        use ed25519_dalek::pkcs8::EncodePrivateKey;
        other.to_pkcs8_der().expect("der")
    };
    let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
    h.kid = header["kid"].as_str().map(str::to_owned);
    h.typ = Some("at+jwt".into());
    let foreign = jsonwebtoken::encode(
        &h,
        &stolen,
        &jsonwebtoken::EncodingKey::from_ed_der(der.as_bytes()),
    )
    .expect("sign");
    refused(&app, &foreign, "a token signed by another key").await;

    // correctly signed by our key but expired, not yet valid, for another audience or issuer, or untyped
    let base: AccessClaims = serde_json::from_value(claims.clone()).expect("claims");
    let now = fluxgate_server::clock::now();
    let keyring = &app.state().keyring;
    let variants: Vec<(&str, AccessClaims)> = vec![
        (
            "expired",
            AccessClaims {
                iat: now - 1000,
                nbf: now - 1000,
                exp: now - 60,
                ..base.clone()
            },
        ),
        (
            "not yet valid",
            AccessClaims {
                nbf: now + 600,
                exp: now + 1200,
                ..base.clone()
            },
        ),
        (
            "another audience",
            AccessClaims {
                aud: "someone-else".into(),
                ..base.clone()
            },
        ),
        (
            "another issuer",
            AccessClaims {
                iss: "https://evil.example".into(),
                ..base.clone()
            },
        ),
    ];
    for (what, c) in variants {
        refused(&app, &keyring.sign(&c).expect("sign"), what).await;
    }
    let untyped = {
        let (_, claims, _) = parts(&genuine);
        let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
        h.kid = header["kid"].as_str().map(str::to_owned);
        h.typ = Some("JWT".into());
        // re-sign through the keyring's key by asking it for a typed token and swapping the header is
        // impossible without the key, so forge with the foreign key: the typ check comes first anyway
        jsonwebtoken::encode(
            &h,
            &claims,
            &jsonwebtoken::EncodingKey::from_ed_der(der.as_bytes()),
        )
        .expect("sign")
    };
    refused(&app, &untyped, "typ JWT").await;
    refused(&app, "not.a.jwt", "garbage").await;
    refused(&app, "", "empty").await;
    app.stop().await;
}

async fn reusing_a_spent_refresh_token_ends_the_session(backend: Backend) {
    let app = TestApp::spawn_with(backend, |t| {
        fluxgate_testkit::set_config(t, "auth.refresh_reuse_interval", "1s");
    })
    .await;
    app.signup_verified("olga@example.com", None).await;
    let first = app.login("olga@example.com", PASSWORD).await;
    let second = body(
        app.post(
            "/api/v1/auth/refresh",
            json!({ "refresh_token": first["refresh_token"] }),
        )
        .await,
    )
    .await["data"]
        .clone();
    assert!(second["refresh_token"].is_string());
    tokio::time::sleep(Duration::from_millis(2100)).await;

    // the thief (or the victim) presents the spent token after the reuse interval
    let replay = app
        .post(
            "/api/v1/auth/refresh",
            json!({ "refresh_token": first["refresh_token"] }),
        )
        .await;
    expect_error(replay, 401, "UNAUTHORIZED").await;
    // the whole family is dead: the newest refresh token and its access token too
    let newest = app
        .post(
            "/api/v1/auth/refresh",
            json!({ "refresh_token": second["refresh_token"] }),
        )
        .await;
    expect_error(newest, 401, "UNAUTHORIZED").await;
    refused(
        &app,
        second["access_token"].as_str().unwrap_or_default(),
        "an access token of a reused family",
    )
    .await;
    let audit = app
        .state()
        .store
        .audit_entries(&fluxgate_store::AuditFilter {
            action: Some("session.refresh_reuse_detected".into()),
            limit: 10,
            ..Default::default()
        })
        .await
        .expect("audit");
    assert_eq!(audit.len(), 1);
    // an unknown token changes nothing and reveals nothing
    expect_error(
        app.post(
            "/api/v1/auth/refresh",
            json!({ "refresh_token": "made-up" }),
        )
        .await,
        401,
        "UNAUTHORIZED",
    )
    .await;
    app.stop().await;
}

async fn concurrent_refreshes_get_the_same_new_pair(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.signup_verified("pia@example.com", None).await;
    let tokens = app.login("pia@example.com", PASSWORD).await;
    let body_json = json!({ "refresh_token": tokens["refresh_token"] });
    let (a, b) = tokio::join!(
        app.post("/api/v1/auth/refresh", body_json.clone()),
        app.post("/api/v1/auth/refresh", body_json.clone())
    );
    assert_eq!(
        (a.status().as_u16(), b.status().as_u16()),
        (200, 200),
        "two tabs refreshing at once both succeed"
    );
    let (a, b) = (body(a).await["data"].clone(), body(b).await["data"].clone());
    assert_eq!(
        a["refresh_token"], b["refresh_token"],
        "the same new refresh token"
    );
    assert_eq!(
        a["access_token"], b["access_token"],
        "the same new access token"
    );
    // and the session lives on: the new token refreshes normally
    let next = app
        .post(
            "/api/v1/auth/refresh",
            json!({ "refresh_token": a["refresh_token"] }),
        )
        .await;
    assert_eq!(next.status(), 200);
    // a third, late duplicate within the interval gets the pair it was exchanged for, not the newest
    let late = body(app.post("/api/v1/auth/refresh", body_json).await).await;
    assert_eq!(late["data"]["refresh_token"], a["refresh_token"]);
    app.stop().await;
}

async fn cookie_requests_from_foreign_origins_are_refused(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.signup_verified("quin@example.com", None).await;
    let tokens = app.login("quin@example.com", PASSWORD).await;
    let access_cookie = format!(
        "access_token={}",
        tokens["access_token"].as_str().unwrap_or_default()
    );
    let refresh_cookie = format!(
        "refresh_token={}",
        tokens["refresh_token"].as_str().unwrap_or_default()
    );

    let post = |path: &str, cookie: &str| {
        app.client
            .post(app.url(path))
            .header("cookie", cookie.to_owned())
    };
    let foreign = post("/api/v1/auth/logout", &access_cookie)
        .header("origin", "https://evil.example")
        .send()
        .await
        .expect("send");
    expect_error(foreign, 403, "FORBIDDEN").await;
    let bare = post("/api/v1/auth/logout", &access_cookie)
        .send()
        .await
        .expect("send");
    expect_error(bare, 403, "FORBIDDEN").await;
    let refresh = post("/api/v1/auth/refresh", &refresh_cookie)
        .header("origin", "https://evil.example")
        .send()
        .await
        .expect("send");
    expect_error(refresh, 403, "FORBIDDEN").await;
    // a foreign origin with the custom header is still foreign
    let spoof = post("/api/v1/auth/logout", &access_cookie)
        .header("origin", "https://evil.example")
        .header("x-requested-with", "XMLHttpRequest")
        .send()
        .await
        .expect("send");
    expect_error(spoof, 403, "FORBIDDEN").await;
    // the session survived all of that
    assert_eq!(
        app.get_auth(
            "/api/v1/auth/me",
            tokens["access_token"].as_str().unwrap_or_default()
        )
        .await
        .status(),
        200
    );
    // bearer requests need no CSRF defence, whatever the Origin
    let bearer = app
        .client
        .get(app.url("/api/v1/auth/sessions"))
        .bearer_auth(tokens["access_token"].as_str().unwrap_or_default())
        .header("origin", "https://evil.example")
        .send()
        .await
        .expect("send");
    assert_eq!(bearer.status(), 200);
    // same origin, or the custom header without an Origin, is allowed
    let same = post("/api/v1/auth/logout", &access_cookie)
        .header("origin", PUBLIC_URL)
        .send()
        .await
        .expect("send");
    assert_eq!(same.status(), 204);
    app.stop().await;
}

async fn repeated_failures_lock_the_account_even_for_the_right_password(backend: Backend) {
    let app = TestApp::spawn_with(backend, |t| {
        fluxgate_testkit::set_config(t, "auth.lockout_threshold", 3);
        fluxgate_testkit::set_config(t, "auth.lockout_window", "6s"); // one attempt back every 2 s
    })
    .await;
    app.signup_verified("rae@example.com", None).await;
    for email in ["rae@example.com", "nobody-here@example.com"] {
        let wrong = json!({ "email": email, "password": "not the password" });
        expect_error(
            app.post("/api/v1/auth/login", wrong.clone()).await,
            401,
            "INVALID_CREDENTIALS",
        )
        .await;
        expect_error(
            app.post("/api/v1/auth/login", wrong.clone()).await,
            401,
            "INVALID_CREDENTIALS",
        )
        .await;
        let locked = app.post("/api/v1/auth/login", wrong.clone()).await;
        let retry_header = locked
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let error = expect_error(locked, 429, "RATE_LIMITED").await;
        assert!(
            error["retry_after"]
                .as_u64()
                .is_some_and(|s| (1..=2).contains(&s)),
            "{error}"
        );
        assert!(retry_header.is_some_and(|s| (1..=2).contains(&s)));
        // locked: even the right password is refused
        let right = app
            .post(
                "/api/v1/auth/login",
                json!({ "email": email, "password": PASSWORD }),
            )
            .await;
        expect_error(right, 429, "RATE_LIMITED").await;
    }
    let lockouts = app
        .state()
        .store
        .audit_entries(&fluxgate_store::AuditFilter {
            action: Some("user.locked_out".into()),
            limit: 10,
            ..Default::default()
        })
        .await
        .expect("audit");
    assert_eq!(lockouts.len(), 2);
    assert!(
        lockouts.iter().any(|e| e.target_id.is_some()),
        "the real account's lockout names it"
    );
    // the lock lifts by itself
    tokio::time::sleep(Duration::from_millis(2200)).await;
    app.login("rae@example.com", PASSWORD).await;
    app.stop().await;
}

/// `fluxgate_password_verifications_total` as `/metrics` shows it.
async fn password_verifications(app: &TestApp) -> u64 {
    let metrics = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text");
    metrics
        .lines()
        .find_map(|line| line.strip_prefix("fluxgate_password_verifications_total "))
        .and_then(|n| n.trim().parse().ok())
        .expect("the password verification counter")
}

async fn failed_logins_recorded(app: &TestApp) -> usize {
    app.state()
        .store
        .audit_entries(&fluxgate_store::AuditFilter {
            action: Some("user.login_failed".into()),
            limit: 1000,
            ..Default::default()
        })
        .await
        .expect("audit entries")
        .len()
}

/// Known and unknown emails take the same path: exactly one argon2 verification and one audit
/// entry each (asserted through the counter and the log, not the clock), and the same answer.
/// The clock is checked only for a gross difference, on the fastest of several tries, so a
/// loaded machine cannot fail it.
async fn login_answers_do_not_reveal_whether_an_email_exists(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    for i in 0..4 {
        app.signup_verified(&format!("sam{i}@example.com"), None)
            .await;
    }
    let mut known = Vec::new();
    let mut unknown = Vec::new();
    let mut bodies = Vec::new();
    for i in 0..4 {
        for (email, times) in [
            (format!("sam{i}@example.com"), &mut known),
            (format!("ghost{i}@example.com"), &mut unknown),
        ] {
            let (verified, recorded) = (
                password_verifications(&app).await,
                failed_logins_recorded(&app).await,
            );
            let started = Instant::now();
            let response = app
                .post(
                    "/api/v1/auth/login",
                    json!({ "email": email, "password": "wrong password!" }),
                )
                .await;
            times.push(started.elapsed());
            assert_eq!(response.status(), 401);
            bodies.push(body(response).await);
            assert_eq!(
                password_verifications(&app).await - verified,
                1,
                "{email}: exactly one argon2 verification"
            );
            assert_eq!(
                failed_logins_recorded(&app).await - recorded,
                1,
                "{email}: exactly one audit entry"
            );
        }
    }
    assert!(
        bodies.windows(2).all(|w| w[0] == w[1]),
        "identical answers: {bodies:?}"
    );
    let fastest = |times: &[Duration]| times.iter().min().copied().unwrap_or_default();
    let (k, u) = (
        fastest(&known).as_secs_f64(),
        fastest(&unknown).as_secs_f64(),
    );
    assert!(
        u > k / 5.0 && u < k * 5.0,
        "unknown emails answer in {u:.4}s at best, known in {k:.4}s: the difference tells them apart"
    );
    app.stop().await;
}

async fn hostile_bodies_get_clear_client_errors(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let huge = json!({ "email": "a@b.co", "password": "x".repeat(70 * 1024) });
    expect_error(
        app.post("/api/v1/auth/signup", huge).await,
        413,
        "PAYLOAD_TOO_LARGE",
    )
    .await;
    let text = app
        .client
        .post(app.url("/api/v1/auth/login"))
        .header("content-type", "text/plain")
        .body("{}")
        .send()
        .await
        .expect("send");
    expect_error(text, 400, "BAD_REQUEST").await;
    let none = app
        .client
        .post(app.url("/api/v1/auth/login"))
        .body(r#"{"email":"a@b.co","password":"x"}"#)
        .send()
        .await
        .expect("send");
    expect_error(none, 400, "BAD_REQUEST").await;
    let broken = app
        .client
        .post(app.url("/api/v1/auth/login"))
        .header("content-type", "application/json")
        .body(r#"{"email": "a@b.co", "#)
        .send()
        .await
        .expect("send");
    expect_error(broken, 400, "BAD_REQUEST").await;
    let trailing = app
        .client
        .post(app.url("/api/v1/auth/login"))
        .header("content-type", "application/json")
        .body(r#"{"email": "a@b.co", "password": "x"} []"#)
        .send()
        .await
        .expect("send");
    expect_error(trailing, 400, "BAD_REQUEST").await;
    let wrong_type = app
        .post(
            "/api/v1/auth/signup",
            json!({ "email": 5, "password": PASSWORD }),
        )
        .await;
    let error = expect_error(wrong_type, 422, "VALIDATION_FAILED").await;
    assert!(error["fields"]["email"].is_string(), "{error}");
    let unknown_field = app
        .post(
            "/api/v1/auth/signup",
            json!({ "email": "a@b.co", "password": PASSWORD, "role": "owner" }),
        )
        .await;
    let error = expect_error(unknown_field, 422, "VALIDATION_FAILED").await;
    assert!(error["fields"]["role"].is_string(), "{error}");
    let array = app.post("/api/v1/auth/login", json!([1, 2])).await;
    expect_error(array, 422, "VALIDATION_FAILED").await;
    app.stop().await;
}

async fn secrets_never_reach_the_audit_log(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.signup_verified("tess@example.com", Some("Tess")).await;
    let tokens = app.login("tess@example.com", PASSWORD).await;
    app.post(
        "/api/v1/auth/login",
        json!({ "email": "tess@example.com", "password": "a wrong secret guess" }),
    )
    .await;
    app.post(
        "/api/v1/auth/password/forgot",
        json!({ "email": "tess@example.com" }),
    )
    .await;
    let reset_token = fluxgate_testkit::smtp::token_in(
        &app.mail.wait_for("tess@example.com", "Reset").await.body,
    );
    let new_password = "the next secret passphrase";
    app.post(
        "/api/v1/auth/password/reset",
        json!({ "token": reset_token, "password": new_password }),
    )
    .await;
    app.call(
        Method::POST,
        "/api/v1/auth/logout",
        tokens["access_token"].as_str(),
        None,
    )
    .await;

    let entries = app
        .state()
        .store
        .audit_entries(&fluxgate_store::AuditFilter {
            limit: 200,
            ..Default::default()
        })
        .await
        .expect("audit");
    assert!(entries.len() >= 5);
    let dump = format!("{entries:?}");
    for secret in [
        PASSWORD,
        "a wrong secret guess",
        new_password,
        reset_token.as_str(),
        tokens["refresh_token"].as_str().unwrap_or("-"),
        tokens["access_token"].as_str().unwrap_or("-"),
    ] {
        assert!(!dump.contains(secret), "audit log contains a secret");
    }
    app.stop().await;
}
