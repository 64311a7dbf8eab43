//! Every user-authentication flow over real HTTP, on SQLite and PostgreSQL.

use fluxgate_testkit::{
    body, eventually, expect_error, smtp, Backend, TestApp, PASSWORD, PUBLIC_URL,
};
use reqwest::Method;
use serde_json::{json, Value};
use std::time::Duration;

both_backends!(
    signup_verify_login_me_refresh_logout,
    signup_validates_every_field_and_refuses_duplicates,
    resend_verification_mails_only_unverified_accounts,
    verification_tokens_are_single_use_and_expire,
    password_reset_revokes_every_session,
    a_password_change_checks_the_current_one_and_ends_other_sessions,
    a_user_changes_their_name_and_a_bad_one_is_refused_by_field,
    sessions_can_be_listed_and_revoked,
    switch_org_issues_tokens_for_a_member_org_only,
    cookies_authenticate_and_carry_the_right_attributes,
    login_without_verification_when_configured_off,
    rotated_signing_keys_stay_verifiable,
);

fn claims_of(jwt: &str) -> Value {
    use base64::Engine;
    let payload = jwt.split('.').nth(1).expect("payload");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .expect("base64url");
    serde_json::from_slice(&bytes).expect("claims json")
}

async fn signup_verify_login_me_refresh_logout(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let signup = app
        .post("/api/v1/auth/signup", json!({ "email": "Ada@Example.com", "password": PASSWORD, "name": "Ada", "organization_name": "Acme" }))
        .await;
    assert_eq!(signup.status(), 201);
    let created = body(signup).await["data"].clone();
    assert_eq!(created["user"]["email"], "ada@example.com");
    assert_eq!(created["user"]["email_verified"], false);
    assert_eq!(created["organization"]["role"], "owner");
    let org_id = created["organization"]["id"]
        .as_str()
        .expect("org id")
        .to_string();

    // verification is required before login
    let early = app
        .post(
            "/api/v1/auth/login",
            json!({ "email": "ada@example.com", "password": PASSWORD }),
        )
        .await;
    expect_error(early, 403, "EMAIL_NOT_VERIFIED").await;

    let mail = app.mail.wait_for("ada@example.com", "Verify").await;
    assert!(
        mail.body
            .contains(&format!("{PUBLIC_URL}/verify-email?token=")),
        "{}",
        mail.body
    );
    let token = smtp::token_in(&mail.body);
    let verified = app
        .post("/api/v1/auth/verify-email", json!({ "token": token }))
        .await;
    assert_eq!(verified.status(), 200);

    let tokens = app.login("ada@example.com", PASSWORD).await;
    assert_eq!(tokens["token_type"], "Bearer");
    assert_eq!(tokens["expires_in"], 900);
    let access = tokens["access_token"].as_str().expect("access").to_string();
    let refresh = tokens["refresh_token"]
        .as_str()
        .expect("refresh")
        .to_string();
    let claims = claims_of(&access);
    assert_eq!(claims["org"], org_id.as_str());
    assert_eq!(claims["role"], "owner");
    assert_eq!(claims["iss"], PUBLIC_URL);
    assert_eq!(claims["aud"], "fluxgate");
    assert_eq!(
        claims["exp"].as_i64().unwrap_or(0) - claims["iat"].as_i64().unwrap_or(0),
        900
    );
    let perms: Vec<&str> = claims["perms"]
        .as_array()
        .expect("perms")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(perms.contains(&"org:delete") && perms.contains(&"keys:write"));
    assert!(
        !perms.contains(&"admin:orgs"),
        "a customer owner never holds operator permissions"
    );

    let me = body(app.get_auth("/api/v1/auth/me", &access).await).await["data"].clone();
    assert_eq!(me["user"]["email"], "ada@example.com");
    assert_eq!(me["user"]["name"], "Ada");
    assert_eq!(me["memberships"][0]["org"]["name"], "Acme");
    assert_eq!(me["memberships"][0]["role"], "owner");
    assert_eq!(me["active_org"]["id"], org_id.as_str());
    assert!(me["permissions"]
        .as_array()
        .expect("perms")
        .iter()
        .any(|p| p == "members:write"));

    // refresh rotates: a new pair, both tokens different, the new access token works
    let renewed = app
        .post("/api/v1/auth/refresh", json!({ "refresh_token": refresh }))
        .await;
    assert_eq!(renewed.status(), 200);
    let renewed = body(renewed).await["data"].clone();
    let access2 = renewed["access_token"]
        .as_str()
        .expect("access")
        .to_string();
    let refresh2 = renewed["refresh_token"]
        .as_str()
        .expect("refresh")
        .to_string();
    assert_ne!(refresh2, refresh);
    assert_eq!(claims_of(&access2)["sid"], claims["sid"]);
    assert_eq!(
        app.get_auth("/api/v1/auth/me", &access2).await.status(),
        200
    );

    // logout: 204, cookies cleared, the session's access tokens and refresh token stop working
    let logout = app
        .call(Method::POST, "/api/v1/auth/logout", Some(&access2), None)
        .await;
    assert_eq!(logout.status(), 204);
    let cleared: Vec<String> = logout
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok().map(str::to_owned))
        .collect();
    assert!(
        cleared
            .iter()
            .any(|c| c.starts_with("access_token=;") && c.contains("Max-Age=0")),
        "{cleared:?}"
    );
    assert!(
        cleared
            .iter()
            .any(|c| c.starts_with("refresh_token=;") && c.contains("Max-Age=0")),
        "{cleared:?}"
    );
    expect_error(
        app.get_auth("/api/v1/auth/me", &access).await,
        401,
        "UNAUTHORIZED",
    )
    .await;
    expect_error(
        app.get_auth("/api/v1/auth/me", &access2).await,
        401,
        "UNAUTHORIZED",
    )
    .await;
    let after = app
        .post("/api/v1/auth/refresh", json!({ "refresh_token": refresh2 }))
        .await;
    expect_error(after, 401, "UNAUTHORIZED").await;

    // every step is in the audit log, attributed
    let audit = app
        .state()
        .store
        .audit_entries(&fluxgate_store::AuditFilter {
            limit: 100,
            ..Default::default()
        })
        .await
        .expect("audit");
    let actions: Vec<&str> = audit.iter().map(|a| a.action.as_str()).collect();
    for action in [
        "user.signup",
        "org.created",
        "user.email_verified",
        "user.login",
        "user.logout",
    ] {
        assert!(
            actions.contains(&action),
            "{action} missing from {actions:?}"
        );
    }
    let login = audit
        .iter()
        .find(|a| a.action == "user.login")
        .expect("login entry");
    assert_eq!(login.ip.as_deref(), Some("127.0.0.1"));
    assert_eq!(login.actor_id.as_deref(), created["user"]["id"].as_str());
    app.stop().await;
}

async fn signup_validates_every_field_and_refuses_duplicates(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let bad = app
        .post("/api/v1/auth/signup", json!({ "email": "not-an-email", "password": "password1", "organization_name": "x".repeat(201) }))
        .await;
    let error = expect_error(bad, 422, "VALIDATION_FAILED").await;
    assert_eq!(error["fields"]["email"], "is not a valid email address");
    assert_eq!(
        error["fields"]["password"],
        "is too common; choose a less guessable password"
    );
    assert_eq!(
        error["fields"]["organization_name"],
        "must be at most 200 characters"
    );

    let short = app
        .post(
            "/api/v1/auth/signup",
            json!({ "email": "a@b.co", "password": "short" }),
        )
        .await;
    let error = expect_error(short, 422, "VALIDATION_FAILED").await;
    assert_eq!(error["fields"]["password"], "must be at least 8 characters");

    let missing = app
        .post("/api/v1/auth/signup", json!({ "password": PASSWORD }))
        .await;
    let error = expect_error(missing, 422, "VALIDATION_FAILED").await;
    assert!(error["fields"]["email"].is_string(), "{error}");

    let first = app
        .post(
            "/api/v1/auth/signup",
            json!({ "email": "dup@example.com", "password": PASSWORD }),
        )
        .await;
    assert_eq!(first.status(), 201);
    let created = body(first).await;
    assert!(created["data"]["organization"].is_null());
    let again = app.post("/api/v1/auth/signup", json!({ "email": "DUP@example.com", "password": PASSWORD, "organization_name": "Other" })).await;
    expect_error(again, 409, "CONFLICT").await;

    // the refused signup left nothing behind: no second org was created
    let tokens = {
        let mail = app.mail.wait_for("dup@example.com", "Verify").await;
        app.post(
            "/api/v1/auth/verify-email",
            json!({ "token": smtp::token_in(&mail.body) }),
        )
        .await;
        app.login("dup@example.com", PASSWORD).await
    };
    let me = body(
        app.get_auth(
            "/api/v1/auth/me",
            tokens["access_token"].as_str().unwrap_or(""),
        )
        .await,
    )
    .await;
    assert_eq!(me["data"]["memberships"], json!([]));
    assert!(me["data"]["active_org"].is_null());
    app.stop().await;
}

async fn resend_verification_mails_only_unverified_accounts(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let unknown = app
        .post(
            "/api/v1/auth/resend-verification",
            json!({ "email": "ghost@example.com" }),
        )
        .await;
    assert_eq!(unknown.status(), 202);

    app.post(
        "/api/v1/auth/signup",
        json!({ "email": "bo@example.com", "password": PASSWORD }),
    )
    .await;
    let first = app.mail.wait_for("bo@example.com", "Verify").await;
    let resent = app
        .post(
            "/api/v1/auth/resend-verification",
            json!({ "email": "bo@example.com" }),
        )
        .await;
    assert_eq!(resent.status(), 202);
    let second = app.mail.wait_for_nth("bo@example.com", "Verify", 2).await;
    assert_ne!(smtp::token_in(&first.body), smtp::token_in(&second.body));
    // either link works once
    let ok = app
        .post(
            "/api/v1/auth/verify-email",
            json!({ "token": smtp::token_in(&second.body) }),
        )
        .await;
    assert_eq!(ok.status(), 200);

    // verified now: another resend sends nothing
    app.post(
        "/api/v1/auth/resend-verification",
        json!({ "email": "bo@example.com" }),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(app.mail.count_to("bo@example.com"), 2);
    assert_eq!(app.mail.count_to("ghost@example.com"), 0);
    app.stop().await;
}

async fn verification_tokens_are_single_use_and_expire(backend: Backend) {
    let app = TestApp::spawn_with(backend, |t| {
        // times are whole seconds: 5-6 s of life, enough for the second token to be used on a
        // loaded machine (signup hashes a password, the mail goes through SMTP)
        fluxgate_testkit::set_config(t, "auth.verification_ttl", "6s");
    })
    .await;
    app.post(
        "/api/v1/auth/signup",
        json!({ "email": "cy@example.com", "password": PASSWORD }),
    )
    .await;
    let token = smtp::token_in(&app.mail.wait_for("cy@example.com", "Verify").await.body);
    tokio::time::sleep(Duration::from_millis(6500)).await;
    let expired = app
        .post("/api/v1/auth/verify-email", json!({ "token": token }))
        .await;
    let error = expect_error(expired, 422, "VALIDATION_FAILED").await;
    assert_eq!(
        error["fields"]["token"],
        "is invalid, already used or expired"
    );

    app.post(
        "/api/v1/auth/signup",
        json!({ "email": "di@example.com", "password": PASSWORD }),
    )
    .await;
    let token = smtp::token_in(&app.mail.wait_for("di@example.com", "Verify").await.body);
    assert_eq!(
        app.post("/api/v1/auth/verify-email", json!({ "token": token }))
            .await
            .status(),
        200
    );
    let reused = app
        .post("/api/v1/auth/verify-email", json!({ "token": token }))
        .await;
    expect_error(reused, 422, "VALIDATION_FAILED").await;
    let forged = app
        .post(
            "/api/v1/auth/verify-email",
            json!({ "token": "x".repeat(43) }),
        )
        .await;
    expect_error(forged, 422, "VALIDATION_FAILED").await;
    app.stop().await;
}

async fn password_reset_revokes_every_session(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.signup_verified("ed@example.com", None).await;
    let laptop = app.login("ed@example.com", PASSWORD).await;
    let phone = app.login("ed@example.com", PASSWORD).await;

    assert_eq!(
        app.post(
            "/api/v1/auth/password/forgot",
            json!({ "email": "nobody@example.com" })
        )
        .await
        .status(),
        202
    );
    assert_eq!(
        app.post(
            "/api/v1/auth/password/forgot",
            json!({ "email": "ed@example.com" })
        )
        .await
        .status(),
        202
    );
    let mail = app.mail.wait_for("ed@example.com", "Reset").await;
    assert!(mail
        .body
        .contains(&format!("{PUBLIC_URL}/reset-password?token=")));
    let token = smtp::token_in(&mail.body);

    let weak = app
        .post(
            "/api/v1/auth/password/reset",
            json!({ "token": token, "password": "12345678" }),
        )
        .await;
    let error = expect_error(weak, 422, "VALIDATION_FAILED").await;
    assert!(error["fields"]["password"].is_string());

    let new_password = "a brand new passphrase";
    let reset = app
        .post(
            "/api/v1/auth/password/reset",
            json!({ "token": token, "password": new_password }),
        )
        .await;
    assert_eq!(reset.status(), 200);

    for tokens in [&laptop, &phone] {
        let access = tokens["access_token"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let revoked = eventually(Duration::from_secs(1), || {
            let app = &app;
            let access = access.clone();
            async move { app.get_auth("/api/v1/auth/me", &access).await.status() == 401 }
        })
        .await;
        assert!(
            revoked,
            "access token still accepted a second after the reset"
        );
        let refresh = app
            .post(
                "/api/v1/auth/refresh",
                json!({ "refresh_token": tokens["refresh_token"] }),
            )
            .await;
        expect_error(refresh, 401, "UNAUTHORIZED").await;
    }
    let old = app
        .post(
            "/api/v1/auth/login",
            json!({ "email": "ed@example.com", "password": PASSWORD }),
        )
        .await;
    expect_error(old, 401, "INVALID_CREDENTIALS").await;
    app.login("ed@example.com", new_password).await;
    let reused = app
        .post(
            "/api/v1/auth/password/reset",
            json!({ "token": token, "password": "yet another passphrase" }),
        )
        .await;
    expect_error(reused, 422, "VALIDATION_FAILED").await;
    assert_eq!(app.mail.count_to("nobody@example.com"), 0);
    app.stop().await;
}

async fn sessions_can_be_listed_and_revoked(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.signup_verified("fay@example.com", None).await;
    app.signup_verified("gus@example.com", None).await;
    let first = app.login("fay@example.com", PASSWORD).await;
    let second = app.login("fay@example.com", PASSWORD).await;
    let other_user = app.login("gus@example.com", PASSWORD).await;
    let access = first["access_token"].as_str().unwrap_or_default();

    let list = body(app.get_auth("/api/v1/auth/sessions", access).await).await;
    let sessions = list["data"].as_array().expect("list").clone();
    assert_eq!(sessions.len(), 2);
    assert_eq!(sessions.iter().filter(|s| s["current"] == true).count(), 1);
    assert_eq!(sessions[0]["ip"], "127.0.0.1");
    assert!(sessions[0]["created_at"].is_string() && sessions[0]["last_used_at"].is_string());

    let second_sid = claims_of(second["access_token"].as_str().unwrap_or_default())["sid"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let gus_sid = claims_of(other_user["access_token"].as_str().unwrap_or_default())["sid"]
        .as_str()
        .unwrap_or_default()
        .to_string();

    // another user's session, a made-up id and garbage all answer 404
    for id in [
        gus_sid.as_str(),
        "ses_01HZZZZZZZZZZZZZZZZZZZZZZZ",
        "nonsense",
    ] {
        let r = app
            .call(
                Method::DELETE,
                &format!("/api/v1/auth/sessions/{id}"),
                Some(access),
                None,
            )
            .await;
        expect_error(r, 404, "NOT_FOUND").await;
    }
    assert_eq!(
        app.get_auth(
            "/api/v1/auth/me",
            other_user["access_token"].as_str().unwrap_or_default()
        )
        .await
        .status(),
        200
    );

    let revoke = app
        .call(
            Method::DELETE,
            &format!("/api/v1/auth/sessions/{second_sid}"),
            Some(access),
            None,
        )
        .await;
    assert_eq!(revoke.status(), 204);
    expect_error(
        app.get_auth(
            "/api/v1/auth/me",
            second["access_token"].as_str().unwrap_or_default(),
        )
        .await,
        401,
        "UNAUTHORIZED",
    )
    .await;
    let list = body(app.get_auth("/api/v1/auth/sessions", access).await).await;
    assert_eq!(list["data"].as_array().map(Vec::len), Some(1));
    let again = app
        .call(
            Method::DELETE,
            &format!("/api/v1/auth/sessions/{second_sid}"),
            Some(access),
            None,
        )
        .await;
    expect_error(again, 404, "NOT_FOUND").await;

    // "log out everywhere else": two more logins end, the caller's session stays
    let third = app.login("fay@example.com", PASSWORD).await;
    let fourth = app.login("fay@example.com", PASSWORD).await;
    let ended = app
        .call(Method::DELETE, "/api/v1/auth/sessions", Some(access), None)
        .await;
    assert_eq!(ended.status(), 200);
    assert_eq!(body(ended).await["data"]["ended"], 2);
    for other in [&third, &fourth] {
        let token = other["access_token"].as_str().unwrap();
        let refused = app.get_auth("/api/v1/auth/me", token).await;
        expect_error(refused, 401, "UNAUTHORIZED").await;
    }
    let list = body(app.get_auth("/api/v1/auth/sessions", access).await).await;
    assert_eq!(list["data"].as_array().map(Vec::len), Some(1));
    let gus = other_user["access_token"].as_str().unwrap();
    assert_eq!(
        app.get_auth("/api/v1/auth/me", gus).await.status(),
        200,
        "another user's sessions stay"
    );
    app.stop().await;
}

async fn switch_org_issues_tokens_for_a_member_org_only(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let hal = app
        .signup_verified("hal@example.com", Some("Hal Corp"))
        .await;
    let ivy = app
        .signup_verified("ivy@example.com", Some("Ivy Inc"))
        .await;
    let tokens = app.login("hal@example.com", PASSWORD).await;
    let access = tokens["access_token"].as_str().unwrap_or_default();
    let own = hal["organization"]["id"].as_str().unwrap_or_default();
    let foreign = ivy["organization"]["id"].as_str().unwrap_or_default();

    let switched = app
        .call(
            Method::POST,
            "/api/v1/auth/switch-org",
            Some(access),
            Some(json!({ "org_id": own })),
        )
        .await;
    assert_eq!(switched.status(), 200);
    let pair = body(switched).await["data"].clone();
    assert_eq!(
        claims_of(pair["access_token"].as_str().unwrap_or_default())["org"],
        own
    );
    // the new refresh token works; the one it replaced does not
    let renewed = app
        .post(
            "/api/v1/auth/refresh",
            json!({ "refresh_token": pair["refresh_token"] }),
        )
        .await;
    assert_eq!(renewed.status(), 200);
    let old = app
        .post(
            "/api/v1/auth/refresh",
            json!({ "refresh_token": tokens["refresh_token"] }),
        )
        .await;
    expect_error(old, 401, "UNAUTHORIZED").await;

    for org in [foreign, "org_01HZZZZZZZZZZZZZZZZZZZZZZZ", "garbage"] {
        let refused = app
            .call(
                Method::POST,
                "/api/v1/auth/switch-org",
                Some(access),
                Some(json!({ "org_id": org })),
            )
            .await;
        expect_error(refused, 404, "NOT_FOUND").await;
    }
    app.stop().await;
}

async fn cookies_authenticate_and_carry_the_right_attributes(backend: Backend) {
    let app = TestApp::spawn_with(backend, |t| {
        fluxgate_testkit::set_config(t, "auth.cookie_secure", true);
    })
    .await;
    app.signup_verified("jo@example.com", None).await;
    let login = app
        .post(
            "/api/v1/auth/login",
            json!({ "email": "jo@example.com", "password": PASSWORD }),
        )
        .await;
    assert_eq!(login.status(), 200);
    assert_eq!(
        login
            .headers()
            .get("cache-control")
            .and_then(|v| v.to_str().ok()),
        Some("no-store")
    );
    let cookies: Vec<String> = login
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok().map(str::to_owned))
        .collect();
    let access_cookie = cookies
        .iter()
        .find(|c| c.starts_with("access_token="))
        .expect("access cookie");
    let refresh_cookie = cookies
        .iter()
        .find(|c| c.starts_with("refresh_token="))
        .expect("refresh cookie");
    for cookie in [access_cookie, refresh_cookie] {
        for attribute in ["HttpOnly", "SameSite=Lax", "Secure"] {
            assert!(cookie.contains(attribute), "{cookie} lacks {attribute}");
        }
    }
    assert!(
        access_cookie.contains("Path=/;") || access_cookie.ends_with("Path=/"),
        "{access_cookie}"
    );
    assert!(
        refresh_cookie.contains("Path=/api/v1/auth"),
        "{refresh_cookie}"
    );
    let access = access_cookie
        .split(';')
        .next()
        .unwrap_or_default()
        .to_string();
    let refresh = refresh_cookie
        .split(';')
        .next()
        .unwrap_or_default()
        .to_string();

    let me = app
        .client
        .get(app.url("/api/v1/auth/me"))
        .header("cookie", &access)
        .send()
        .await
        .expect("me");
    assert_eq!(me.status(), 200, "a cookie authenticates reads");

    // refresh from the cookie alone, same origin
    let renewed = app
        .client
        .post(app.url("/api/v1/auth/refresh"))
        .header("cookie", &refresh)
        .header("origin", PUBLIC_URL)
        .send()
        .await
        .expect("refresh");
    assert_eq!(renewed.status(), 200);
    let new_refresh = renewed
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|c| c.starts_with("refresh_token="))
        .map(|c| c.split(';').next().unwrap_or_default().to_string())
        .expect("rotated refresh cookie");
    assert_ne!(new_refresh, refresh);
    app.stop().await;
}

async fn login_without_verification_when_configured_off(backend: Backend) {
    let app = TestApp::spawn_with(backend, |t| {
        fluxgate_testkit::set_config(t, "auth.require_email_verification", false);
    })
    .await;
    app.post(
        "/api/v1/auth/signup",
        json!({ "email": "kim@example.com", "password": PASSWORD }),
    )
    .await;
    let tokens = app.login("kim@example.com", PASSWORD).await;
    let me = body(
        app.get_auth(
            "/api/v1/auth/me",
            tokens["access_token"].as_str().unwrap_or_default(),
        )
        .await,
    )
    .await;
    assert_eq!(me["data"]["user"]["email_verified"], false);
    app.stop().await;
}

async fn rotated_signing_keys_stay_verifiable(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.signup_verified("lu@example.com", None).await;
    let before = app.login("lu@example.com", PASSWORD).await;
    let old_access = before["access_token"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let jwks = body(
        app.client
            .get(app.url("/.well-known/jwks.json"))
            .send()
            .await
            .expect("jwks"),
    )
    .await;
    assert_eq!(jwks["keys"].as_array().map(Vec::len), Some(1));
    let old_kid = jwks["keys"][0]["kid"]
        .as_str()
        .unwrap_or_default()
        .to_string();

    // what `fluxgate admin rotate-signing-key` runs, against the same database
    fluxgate_server::admin::rotate_signing_key(&app.config)
        .await
        .expect("rotate");
    app.state()
        .keyring
        .reload()
        .await
        .expect("reload, as every node does periodically");

    let jwks = body(
        app.client
            .get(app.url("/.well-known/jwks.json"))
            .send()
            .await
            .expect("jwks"),
    )
    .await;
    let kids: Vec<&str> = jwks["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .filter_map(|k| k["kid"].as_str())
        .collect();
    assert_eq!(
        kids.len(),
        2,
        "old key stays published until its tokens expire"
    );
    assert!(kids.contains(&old_kid.as_str()));
    assert_eq!(
        app.get_auth("/api/v1/auth/me", &old_access).await.status(),
        200,
        "old tokens still verify"
    );
    let after = app.login("lu@example.com", PASSWORD).await;
    let header: Value = {
        use base64::Engine;
        let h = after["access_token"]
            .as_str()
            .unwrap_or_default()
            .split('.')
            .next()
            .unwrap_or_default();
        serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(h)
                .expect("b64"),
        )
        .expect("json")
    };
    assert_ne!(
        header["kid"],
        old_kid.as_str(),
        "new tokens are signed by the new key"
    );

    // once the old key is no longer accepted, its tokens are refused — even one this node
    // verified before and remembers
    let retire = format!("UPDATE signing_keys SET retired_at = 1 WHERE kid = '{old_kid}'");
    app.sql(&retire).await;
    app.state().keyring.reload().await.expect("reload");
    assert_eq!(
        app.get_auth("/api/v1/auth/me", &old_access).await.status(),
        401,
        "a token of a key no longer accepted"
    );
    let new_access = after["access_token"].as_str().unwrap_or_default();
    assert_eq!(
        app.get_auth("/api/v1/auth/me", new_access).await.status(),
        200
    );
    app.stop().await;
}

async fn a_user_changes_their_name_and_a_bad_one_is_refused_by_field(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.signup_verified("kim@example.com", None).await;
    let tokens = app.login("kim@example.com", PASSWORD).await;
    let access = tokens["access_token"].as_str().unwrap();
    let rename = |body: Value| app.call(Method::PATCH, "/api/v1/auth/me", Some(access), Some(body));
    let renamed = rename(json!({ "name": "  Kim Lee  " })).await;
    assert_eq!(renamed.status(), 200);
    assert_eq!(body(renamed).await["data"]["user"]["name"], "Kim Lee");
    let me = body(app.get_auth("/api/v1/auth/me", access).await).await;
    assert_eq!(me["data"]["user"]["name"], "Kim Lee");

    for bad in [json!("two\nlines"), json!("x".repeat(201))] {
        let error = expect_error(
            rename(json!({ "name": bad })).await,
            422,
            "VALIDATION_FAILED",
        )
        .await;
        assert!(error["fields"]["name"].is_string(), "{error}");
    }
    let error = expect_error(
        rename(json!({ "email": "a@b.c" })).await,
        422,
        "VALIDATION_FAILED",
    )
    .await;
    assert!(error.to_string().contains("email"), "{error}");
    let unchanged = body(app.get_auth("/api/v1/auth/me", access).await).await;
    assert_eq!(unchanged["data"]["user"]["name"], "Kim Lee");

    // null clears it; without a session there is nothing to change
    let cleared = rename(json!({ "name": null })).await;
    assert!(body(cleared).await["data"]["user"]["name"].is_null());
    let anonymous = app
        .call(
            Method::PATCH,
            "/api/v1/auth/me",
            None,
            Some(json!({ "name": "x" })),
        )
        .await;
    expect_error(anonymous, 401, "UNAUTHORIZED").await;
    app.stop().await;
}

async fn a_password_change_checks_the_current_one_and_ends_other_sessions(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.signup_verified("kim@example.com", None).await;
    let here = app.login("kim@example.com", PASSWORD).await;
    let elsewhere = app.login("kim@example.com", PASSWORD).await;
    let access = here["access_token"].as_str().unwrap();
    let change = |current: &str, new: &str| {
        app.call(
            Method::POST,
            "/api/v1/auth/password/change",
            Some(access),
            Some(json!({ "current_password": current, "new_password": new })),
        )
    };
    let wrong = change("not the password", "a brand new passphrase").await;
    expect_error(wrong, 401, "INVALID_CREDENTIALS").await;
    let weak = change(PASSWORD, "short").await;
    let error = expect_error(weak, 422, "VALIDATION_FAILED").await;
    assert!(error["fields"]["new_password"].is_string(), "{error}");
    let changed = change(PASSWORD, "a brand new passphrase").await;
    assert_eq!(changed.status(), 200);
    assert_eq!(body(changed).await["data"]["ended"], 1);

    // the other session is out within a poll, this one stays; the old password is dead
    let other = elsewhere["access_token"].as_str().unwrap().to_owned();
    assert!(
        eventually(Duration::from_secs(2), || async {
            app.get_auth("/api/v1/auth/me", &other).await.status() == 401
        })
        .await
    );
    assert_eq!(app.get_auth("/api/v1/auth/me", access).await.status(), 200);
    let old = app
        .post(
            "/api/v1/auth/login",
            json!({ "email": "kim@example.com", "password": PASSWORD }),
        )
        .await;
    expect_error(old, 401, "INVALID_CREDENTIALS").await;
    app.login("kim@example.com", "a brand new passphrase").await;
    app.stop().await;
}
