//! API keys over real HTTP, on SQLite and PostgreSQL: the lifecycle, every verify code with its
//! context, rotation's grace period, escalation attempts, keys as credentials on the management
//! API, plans and entitlements, usage written in batches, and warm verifies without a database.

use fluxgate_core::secret::ExposeSecret;
use fluxgate_testkit::{
    body, eventually, expect_error, issue_key, operator_with_verifier, send, with_key, Backend,
    TestApp,
};
use reqwest::{Method, Response};
use serde_json::{json, Value};
use std::time::Duration;

both_backends!(
    keys_are_created_listed_changed_rotated_and_revoked,
    verify_answers_every_code_with_the_context,
    rotation_keeps_the_old_secret_for_its_grace_period,
    during_a_rotation_the_owner_sees_whether_the_old_secret_is_still_called,
    keys_are_never_more_powerful_than_their_maker,
    api_keys_authenticate_the_management_api,
    plans_change_limits_quotas_and_entitlements_at_once,
    usage_and_last_use_are_written_in_batches_and_at_shutdown,
    a_full_key_cache_drops_the_least_recently_used_contexts_and_still_answers_right,
    a_node_answers_before_it_has_read_every_secret,
    a_verifier_recalled_by_its_thread_loses_its_right_at_once,
);

const PRODUCT: &str = r#"
[scopes]
catalog = ["read", "write", "admin", "accounts:read"]
implies = { admin = ["write"], write = ["read"] }

[[plans]]
name = "free"
rate_limit = "100/min"
entitlements = []
quotas = { requests = 1000 }

[[plans]]
name = "pro"
rate_limit = "5000/min"
entitlements = ["bulk_export", "sso"]
quotas = { requests = 1000000 }

[[plans]]
name = "tiny"
rate_limit = "100/min"
entitlements = []
quotas = { requests = 3 }
"#;

async fn spawn(backend: Backend) -> TestApp {
    TestApp::spawn_with(backend, |t| {
        let product: toml::Table = PRODUCT.parse().unwrap();
        for (k, v) in product {
            t.insert(k, v);
        }
    })
    .await
}

async fn body_of(response: Response) -> Value {
    body(response).await["data"].clone()
}

async fn verify(app: &TestApp, root: &str, body: Value) -> Value {
    let response = with_key(app, Method::POST, "/keys/verify", root, Some(body)).await;
    assert_eq!(response.status(), 200, "verify always answers 200");
    body_of(response).await
}

async fn keys_are_created_listed_changed_rotated_and_revoked(backend: Backend) {
    let app = spawn(backend).await;
    let (owner, org) = app.owner("ada@example.com", "Acme").await;
    let created = send(
        &app,
        Method::POST,
        &format!("/orgs/{org}/keys"),
        &owner,
        Some(json!({ "name": "billing worker", "scopes": ["accounts:read", "keys:read"], "environment": "test",
                     "expires_in_days": 90, "rate_limit": { "limit": 50, "window_seconds": 60 }, "metadata": { "team": "billing" } })),
    )
    .await;
    assert_eq!(created.status(), 201);
    assert_eq!(created.headers()["cache-control"], "no-store");
    let data = body_of(created).await;
    let secret = data["key"].as_str().unwrap().to_owned();
    let id = data["id"].as_str().unwrap().to_owned();
    // the documented format, and the start people recognise it by
    let re_body = secret
        .strip_prefix("fg_test_")
        .expect("prefix and environment");
    assert_eq!(re_body.len(), 30);
    assert!(re_body.chars().all(|c| c.is_ascii_alphanumeric()));
    assert!(fluxgate_core::apikey::parse(&secret).is_ok());
    assert_eq!(data["start"], secret[..12].to_string());
    assert_eq!(data["status"], "active");
    assert_eq!(data["scopes"], json!(["accounts:read", "keys:read"]));
    assert_eq!(
        data["rate_limit"],
        json!({ "limit": 50, "window_seconds": 60 })
    );
    assert_eq!(data["metadata"], json!({ "team": "billing" }));
    assert!(data["expires_at"].is_string());

    // never shown again
    let fetch = || async {
        let path = format!("/orgs/{org}/keys/{id}");
        body_of(send(&app, Method::GET, &path, &owner, None).await).await
    };
    let fetched = fetch().await;
    assert!(fetched.get("key").is_none());
    assert!(!fetched.to_string().contains(&secret[12..]));

    // validation names the field
    for (bad, field) in [
        (json!({ "name": "", "scopes": [] }), "name"),
        (
            json!({ "name": "x", "scopes": ["nope:nothing"] }),
            "scopes[0]",
        ),
        (
            json!({ "name": "x", "scopes": [], "environment": "prod" }),
            "environment",
        ),
        (
            json!({ "name": "x", "scopes": [], "expires_at": "2000-01-01T00:00:00Z" }),
            "expires_at",
        ),
        (
            json!({ "name": "x", "scopes": [], "rate_limit": { "limit": 0, "window_seconds": 60 } }),
            "rate_limit.limit",
        ),
        (
            json!({ "name": "x", "scopes": [], "metadata": [1, 2] }),
            "metadata",
        ),
    ] {
        let error = expect_error(
            send(
                &app,
                Method::POST,
                &format!("/orgs/{org}/keys"),
                &owner,
                Some(bad),
            )
            .await,
            422,
            "VALIDATION_FAILED",
        )
        .await;
        assert!(error["fields"][field].is_string(), "{field}: {error}");
    }

    // a limit can ask to be exact across nodes; the key says so until its limit changes
    let exact = send(
        &app,
        Method::PATCH,
        &format!("/orgs/{org}/keys/{id}"),
        &owner,
        Some(json!({ "rate_limit": { "limit": 50, "window_seconds": 60, "exact": true } })),
    )
    .await;
    assert_eq!(
        body_of(exact).await["rate_limit"],
        json!({ "limit": 50, "window_seconds": 60, "exact": true })
    );
    assert_eq!(fetch().await["rate_limit"]["exact"], true);

    // change, rotate, revoke
    let patched = send(&app, Method::PATCH, &format!("/orgs/{org}/keys/{id}"), &owner,
        Some(json!({ "name": "billing v2", "rate_limit": null, "expires_at": null, "metadata": { "team": "core" } }))).await;
    assert_eq!(patched.status(), 200);
    let patched = body_of(patched).await;
    assert_eq!(patched["name"], "billing v2");
    assert!(patched["rate_limit"].is_null() && patched["expires_at"].is_null());
    let rotated = body_of(
        send(
            &app,
            Method::POST,
            &format!("/orgs/{org}/keys/{id}/rotate"),
            &owner,
            None,
        )
        .await,
    )
    .await;
    let new_secret = rotated["key"].as_str().unwrap();
    assert_ne!(new_secret, secret);
    assert_eq!(rotated["start"], new_secret[..12].to_string());
    assert!(rotated["previous_secret_expires_at"].is_string());
    assert_eq!(
        app.call(
            Method::DELETE,
            &format!("/api/v1/orgs/{org}/keys/{id}"),
            Some(&owner),
            None
        )
        .await
        .status(),
        204
    );
    assert_eq!(
        app.call(
            Method::DELETE,
            &format!("/api/v1/orgs/{org}/keys/{id}"),
            Some(&owner),
            None
        )
        .await
        .status(),
        404
    );
    expect_error(
        send(
            &app,
            Method::PATCH,
            &format!("/orgs/{org}/keys/{id}"),
            &owner,
            Some(json!({ "name": "again" })),
        )
        .await,
        409,
        "CONFLICT",
    )
    .await;

    // listing by status, with pages
    let (_, _) = issue_key(
        &app,
        &owner,
        &org,
        json!({ "name": "second", "scopes": [] }),
    )
    .await;
    let all = body(
        send(
            &app,
            Method::GET,
            &format!("/orgs/{org}/keys"),
            &owner,
            None,
        )
        .await,
    )
    .await;
    assert_eq!(all["data"].as_array().unwrap().len(), 2);
    let revoked = body(
        send(
            &app,
            Method::GET,
            &format!("/orgs/{org}/keys?status=revoked"),
            &owner,
            None,
        )
        .await,
    )
    .await;
    assert_eq!(revoked["data"][0]["id"], id.as_str());
    assert_eq!(revoked["data"][0]["status"], "revoked");
    let active = body(
        send(
            &app,
            Method::GET,
            &format!("/orgs/{org}/keys?status=active"),
            &owner,
            None,
        )
        .await,
    )
    .await;
    assert_eq!(active["data"].as_array().unwrap().len(), 1);
    assert_eq!(active["data"][0]["name"], "second");
    let page = body(
        send(
            &app,
            Method::GET,
            &format!("/orgs/{org}/keys?limit=1"),
            &owner,
            None,
        )
        .await,
    )
    .await;
    assert!(page["next_cursor"].is_string());
    expect_error(
        send(
            &app,
            Method::GET,
            &format!("/orgs/{org}/keys?status=odd"),
            &owner,
            None,
        )
        .await,
        422,
        "VALIDATION_FAILED",
    )
    .await;

    // each step audited, and no secret in the log
    let log = body(
        send(
            &app,
            Method::GET,
            &format!("/orgs/{org}/audit-log?limit=200"),
            &owner,
            None,
        )
        .await,
    )
    .await;
    for action in ["key.created", "key.updated", "key.rotated", "key.revoked"] {
        assert!(
            log["data"]
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e["action"] == action),
            "{action}"
        );
    }
    let text = log.to_string();
    assert!(
        !text.contains(&secret[8..]) && !text.contains(&new_secret[8..]),
        "a secret reached the audit log"
    );
    app.stop().await;
}

async fn verify_answers_every_code_with_the_context(backend: Backend) {
    let app = spawn(backend).await;
    let (ops, root) = operator_with_verifier(&app).await;
    let (owner, org) = app.owner("ada@example.com", "Acme").await;
    send(
        &app,
        Method::PATCH,
        &format!("/orgs/{org}"),
        &ops,
        Some(json!({ "external_id": "cus_42" })),
    )
    .await;
    let (id, key) = issue_key(&app, &owner, &org, json!({
        "name": "svc", "scopes": ["admin", "accounts:read"], "rate_limit": { "limit": 3, "window_seconds": 3600 },
        "metadata": { "tier": "gold" }, "expires_in_days": 30 })).await;

    let valid = verify(
        &app,
        &root,
        json!({ "key": key, "scopes": ["read"], "endpoint": "/v1/accounts" }),
    )
    .await;
    assert_eq!(valid["valid"], true, "{valid}");
    assert_eq!(valid["code"], "VALID");
    assert_eq!(valid["key_id"], id.as_str());
    assert_eq!(
        valid["org"],
        json!({ "id": org, "name": "Acme", "external_id": "cus_42" })
    );
    assert_eq!(valid["plan"], "free");
    assert_eq!(valid["scopes"], json!(["accounts:read", "admin"]));
    assert_eq!(valid["entitlements"], json!([]));
    assert_eq!(valid["metadata"], json!({ "tier": "gold" }));
    assert!(valid["expires_at"].is_string());
    assert_eq!(valid["ratelimit"]["limit"], 3);
    assert_eq!(valid["ratelimit"]["remaining"], 2);
    assert!(valid["ratelimit"]["reset"].as_u64().unwrap() > 1_700_000_000);

    // scopes: implications count (admin ⇒ write ⇒ read); a missing one is named by code
    assert_eq!(
        verify(&app, &root, json!({ "key": key, "scopes": ["write"] })).await["code"],
        "VALID"
    );
    let missing = verify(&app, &root, json!({ "key": key, "scopes": ["keys:write"] })).await;
    assert_eq!(
        (missing["valid"].clone(), missing["code"].clone()),
        (json!(false), json!("INSUFFICIENT_SCOPE"))
    );
    // the rate limit: 3 per hour, two spent (the refused scope check took nothing)
    let last = verify(&app, &root, json!({ "key": key })).await;
    assert_eq!(
        (last["code"].clone(), last["ratelimit"]["remaining"].clone()),
        (json!("VALID"), json!(0))
    );
    let limited = verify(&app, &root, json!({ "key": key })).await;
    assert_eq!(limited["code"], "RATE_LIMITED");
    assert_eq!(limited["valid"], false);
    assert_eq!(limited["ratelimit"]["remaining"], 0);

    // malformed, mistyped, unknown
    assert_eq!(
        verify(&app, &root, json!({ "key": "hello" })).await["code"],
        "MALFORMED"
    );
    let mut typo = key.clone().into_bytes();
    typo[10] = if typo[10] == b'a' { b'b' } else { b'a' };
    assert_eq!(
        verify(
            &app,
            &root,
            json!({ "key": String::from_utf8(typo).unwrap() })
        )
        .await["code"],
        "MALFORMED"
    );
    let unknown = fluxgate_core::apikey::generate("fg", fluxgate_core::apikey::Environment::Live);
    let not_found = verify(&app, &root, json!({ "key": unknown.expose_secret() })).await;
    assert_eq!(not_found["code"], "NOT_FOUND");
    assert!(not_found["org"].is_null());

    // expiry is checked on every call, not by the cache's age
    let (short_id, short) =
        issue_key(&app, &owner, &org, json!({ "name": "short", "scopes": [] })).await;
    assert_eq!(
        verify(&app, &root, json!({ "key": short })).await["code"],
        "VALID"
    );
    let soon = time::OffsetDateTime::now_utc() + time::Duration::seconds(2);
    let soon = soon
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    send(
        &app,
        Method::PATCH,
        &format!("/orgs/{org}/keys/{short_id}"),
        &owner,
        Some(json!({ "expires_at": soon })),
    )
    .await;
    assert_eq!(
        verify(&app, &root, json!({ "key": short })).await["code"],
        "VALID"
    );
    assert!(
        eventually(Duration::from_secs(5), || async {
            verify(&app, &root, json!({ "key": short })).await["code"] == "EXPIRED"
        })
        .await
    );

    // revocation takes effect on the very next verify
    let (other_id, other) =
        issue_key(&app, &owner, &org, json!({ "name": "other", "scopes": [] })).await;
    assert_eq!(
        verify(&app, &root, json!({ "key": other })).await["code"],
        "VALID"
    );
    send(
        &app,
        Method::DELETE,
        &format!("/orgs/{org}/keys/{other_id}"),
        &owner,
        None,
    )
    .await;
    let revoked = verify(&app, &root, json!({ "key": other })).await;
    assert_eq!(revoked["code"], "REVOKED");
    assert_eq!(revoked["key_id"], other_id.as_str());

    // the plan's monthly requests quota
    send(
        &app,
        Method::PUT,
        &format!("/admin/orgs/{org}/plan"),
        &ops,
        Some(json!({ "plan": "tiny" })),
    )
    .await;
    let (_, metered) = issue_key(
        &app,
        &owner,
        &org,
        json!({ "name": "metered", "scopes": [] }),
    )
    .await;
    let mut codes = Vec::new();
    for _ in 0..3 {
        codes.push(
            verify(&app, &root, json!({ "key": metered })).await["code"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    // the org made three valid calls this month already: the quota of 3 is spent
    assert_eq!(codes, ["QUOTA_EXCEEDED"; 3]);

    // a deleted org's keys
    let (bob, bob_org) = app.owner("bob@example.com", "Beta").await;
    let (_, bobs) = issue_key(&app, &bob, &bob_org, json!({ "name": "b", "scopes": [] })).await;
    assert_eq!(
        verify(&app, &root, json!({ "key": bobs })).await["code"],
        "VALID"
    );
    send(
        &app,
        Method::DELETE,
        &format!("/orgs/{bob_org}"),
        &bob,
        None,
    )
    .await;
    assert_eq!(
        verify(&app, &root, json!({ "key": bobs })).await["code"],
        "ORG_DISABLED"
    );

    // only keys:verify may verify: a customer's key or user is refused
    let (_, customer_key) = issue_key(
        &app,
        &owner,
        &org,
        json!({ "name": "c", "scopes": ["keys:read"] }),
    )
    .await;
    let refused = with_key(
        &app,
        Method::POST,
        "/keys/verify",
        &customer_key,
        Some(json!({ "key": key })),
    )
    .await;
    let error = expect_error(refused, 403, "INSUFFICIENT_SCOPE").await;
    assert_eq!(error["required_scope"], "keys:verify");
    let refused = send(
        &app,
        Method::POST,
        "/keys/verify",
        &owner,
        Some(json!({ "key": key })),
    )
    .await;
    expect_error(refused, 403, "FORBIDDEN").await;
    // and bad input is still a 4xx naming the field
    let bad = with_key(
        &app,
        Method::POST,
        "/keys/verify",
        &root,
        Some(json!({ "key": key, "cost": 1000000 })),
    )
    .await;
    let error = expect_error(bad, 422, "VALIDATION_FAILED").await;
    assert!(error["fields"]["cost"].is_string());
    app.stop().await;
}

async fn rotation_keeps_the_old_secret_for_its_grace_period(backend: Backend) {
    let app = spawn(backend).await;
    let (_, root) = operator_with_verifier(&app).await;
    let (owner, org) = app.owner("ada@example.com", "Acme").await;
    let (id, old) = issue_key(&app, &owner, &org, json!({ "name": "k", "scopes": [] })).await;
    assert_eq!(
        verify(&app, &root, json!({ "key": old })).await["code"],
        "VALID"
    );
    let rotated = body_of(
        send(
            &app,
            Method::POST,
            &format!("/orgs/{org}/keys/{id}/rotate"),
            &owner,
            Some(json!({ "grace_period_seconds": 2 })),
        )
        .await,
    )
    .await;
    let new = rotated["key"].as_str().unwrap().to_owned();
    assert_eq!(
        verify(&app, &root, json!({ "key": new })).await["code"],
        "VALID"
    );
    assert_eq!(
        verify(&app, &root, json!({ "key": old })).await["code"],
        "VALID",
        "within the grace period"
    );
    assert!(
        eventually(Duration::from_secs(5), || async {
            verify(&app, &root, json!({ "key": old })).await["code"] == "EXPIRED"
        })
        .await
    );
    assert_eq!(
        verify(&app, &root, json!({ "key": new })).await["code"],
        "VALID"
    );

    // grace 0: the old secret stops at once
    let again = body_of(
        send(
            &app,
            Method::POST,
            &format!("/orgs/{org}/keys/{id}/rotate"),
            &owner,
            Some(json!({ "grace_period_seconds": 0 })),
        )
        .await,
    )
    .await;
    assert_eq!(
        verify(&app, &root, json!({ "key": new })).await["code"],
        "EXPIRED"
    );
    assert_eq!(
        verify(&app, &root, json!({ "key": again["key"] })).await["code"],
        "VALID"
    );
    let too_long = send(
        &app,
        Method::POST,
        &format!("/orgs/{org}/keys/{id}/rotate"),
        &owner,
        Some(json!({ "grace_period_seconds": 99999999 })),
    )
    .await;
    expect_error(too_long, 422, "VALIDATION_FAILED").await;
    app.stop().await;
}

async fn during_a_rotation_the_owner_sees_whether_the_old_secret_is_still_called(backend: Backend) {
    let app = spawn(backend).await;
    let (_, root) = operator_with_verifier(&app).await;
    let (owner, org) = app.owner("ada@example.com", "Acme").await;
    let (id, old) = issue_key(&app, &owner, &org, json!({ "name": "k", "scopes": [] })).await;
    let secrets_path = format!("/orgs/{org}/keys/{id}/secrets");
    let secrets = body_of(send(&app, Method::GET, &secrets_path, &owner, None).await).await;
    assert_eq!(secrets.as_array().unwrap().len(), 1);
    assert_eq!(secrets[0]["status"], "current");
    assert!(secrets[0]["retires_at"].is_null());

    let rotated = body_of(
        send(
            &app,
            Method::POST,
            &format!("/orgs/{org}/keys/{id}/rotate"),
            &owner,
            Some(json!({ "grace_period_seconds": 3600 })),
        )
        .await,
    )
    .await;
    let new = rotated["key"].as_str().unwrap().to_owned();
    let secrets = body_of(send(&app, Method::GET, &secrets_path, &owner, None).await).await;
    assert_eq!(secrets.as_array().unwrap().len(), 2);
    assert_eq!(secrets[0]["status"], "current");
    assert_eq!(secrets[0]["start"], rotated["start"]);
    assert_eq!(secrets[1]["status"], "retiring");
    assert_eq!(secrets[1]["start"].as_str().unwrap(), &old[..12]);
    assert_eq!(
        secrets[1]["retires_at"],
        rotated["previous_secret_expires_at"]
    );
    let text = secrets.to_string();
    assert!(!text.contains(&old) && !text.contains(&new) && !text.contains("hash"));

    // calls with the new secret only: the key is used, the old secret is not
    verify(&app, &root, json!({ "key": new })).await;
    let key_path = format!("/orgs/{org}/keys/{id}");
    assert!(
        eventually(Duration::from_secs(5), || async {
            !body_of(send(&app, Method::GET, &key_path, &owner, None).await).await["last_used_at"]
                .is_null()
        })
        .await
    );
    let secrets = body_of(send(&app, Method::GET, &secrets_path, &owner, None).await).await;
    assert!(secrets[1]["last_used_at"].is_null(), "{secrets}");

    // a client still on the old secret shows up
    verify(&app, &root, json!({ "key": old })).await;
    assert!(
        eventually(Duration::from_secs(5), || async {
            body_of(send(&app, Method::GET, &secrets_path, &owner, None).await).await[1]
                ["last_used_at"]
                .is_string()
        })
        .await
    );

    // another org's key is not found, and neither is the key for someone outside its org
    let (other, other_org) = app.owner("bob@example.com", "Other").await;
    expect_error(
        send(
            &app,
            Method::GET,
            &format!("/orgs/{other_org}/keys/{id}/secrets"),
            &other,
            None,
        )
        .await,
        404,
        "NOT_FOUND",
    )
    .await;
    expect_error(
        send(&app, Method::GET, &secrets_path, &other, None).await,
        404,
        "NOT_FOUND",
    )
    .await;
    app.stop().await;
}

async fn keys_are_never_more_powerful_than_their_maker(backend: Backend) {
    let app = spawn(backend).await;
    let (owner, org) = app.owner("owner@example.com", "Acme").await;
    let developer = app
        .member(&owner, &org, "dev@example.com", "developer")
        .await;
    let viewer = app
        .member(&owner, &org, "viewer@example.com", "viewer")
        .await;
    let keys = format!("/orgs/{org}/keys");

    // a developer may issue keys with what it holds (keys, usage, product scopes), nothing more
    issue_key(
        &app,
        &developer,
        &org,
        json!({ "name": "ok", "scopes": ["keys:read", "accounts:read", "admin"] }),
    )
    .await;
    // refused, naming what is missing: beyond the maker's own permissions, operator-only scopes
    // (not even for the customer's owner), and any key at all from a viewer
    for (maker, scopes, required) in [
        (&developer, json!(["audit:read"]), "audit:read"),
        (&developer, json!(["keys:*"]), "keys:*"),
        (&owner, json!(["keys:verify"]), "keys:verify"),
        (&viewer, json!([]), "keys:write"),
    ] {
        let body = json!({ "name": "x", "scopes": scopes });
        let response = send(&app, Method::POST, &keys, maker, Some(body)).await;
        let error = expect_error(response, 403, "FORBIDDEN").await;
        assert_eq!(error["required_permission"], required, "{scopes}");
    }

    // a more powerful key cannot be widened, rotated (its new secret is its power) or edited by a developer
    let (strong, _) = issue_key(
        &app,
        &owner,
        &org,
        json!({ "name": "strong", "scopes": ["audit:read"] }),
    )
    .await;
    expect_error(
        send(
            &app,
            Method::POST,
            &format!("{keys}/{strong}/rotate"),
            &developer,
            None,
        )
        .await,
        403,
        "FORBIDDEN",
    )
    .await;
    expect_error(
        send(
            &app,
            Method::PATCH,
            &format!("{keys}/{strong}"),
            &developer,
            Some(json!({ "name": "mine" })),
        )
        .await,
        403,
        "FORBIDDEN",
    )
    .await;
    let (weak, _) = issue_key(
        &app,
        &developer,
        &org,
        json!({ "name": "weak", "scopes": ["keys:read"] }),
    )
    .await;
    expect_error(
        send(
            &app,
            Method::PATCH,
            &format!("{keys}/{weak}"),
            &developer,
            Some(json!({ "scopes": ["members:write"] })),
        )
        .await,
        403,
        "FORBIDDEN",
    )
    .await;

    // a key making keys: bound by its own scopes, refused with INSUFFICIENT_SCOPE
    let (_, maker) = issue_key(
        &app,
        &owner,
        &org,
        json!({ "name": "maker", "scopes": ["keys:read", "keys:write"] }),
    )
    .await;
    let made = with_key(
        &app,
        Method::POST,
        &keys,
        &maker,
        Some(json!({ "name": "child", "scopes": ["keys:read"] })),
    )
    .await;
    assert_eq!(made.status(), 201);
    assert_eq!(
        body_of(made).await["created_by"].as_str().unwrap().get(..4),
        Some("key_")
    );
    let error = expect_error(
        with_key(
            &app,
            Method::POST,
            &keys,
            &maker,
            Some(json!({ "name": "child", "scopes": ["members:read"] })),
        )
        .await,
        403,
        "INSUFFICIENT_SCOPE",
    )
    .await;
    assert_eq!(error["required_scope"], "members:read");
    app.stop().await;
}

async fn api_keys_authenticate_the_management_api(backend: Backend) {
    let app = spawn(backend).await;
    let (owner, org) = app.owner("ada@example.com", "Acme").await;
    let (_, other_org) = app.owner("bob@example.com", "Beta").await;
    let (id, key) = issue_key(
        &app,
        &owner,
        &org,
        json!({ "name": "ci", "scopes": ["keys:read", "org:read"],
        "rate_limit": { "limit": 4, "window_seconds": 3600 } }),
    )
    .await;

    // X-API-Key, or a bearer value that parses as a key
    let listed = with_key(&app, Method::GET, &format!("/orgs/{org}/keys"), &key, None).await;
    assert_eq!(listed.status(), 200);
    assert_eq!(listed.headers()["x-ratelimit-limit"], "4");
    assert_eq!(listed.headers()["x-ratelimit-remaining"], "3");
    let bearer = send(&app, Method::GET, &format!("/orgs/{org}"), &key, None).await;
    assert_eq!(bearer.status(), 200);
    // lacking a scope
    let error = expect_error(
        with_key(
            &app,
            Method::GET,
            &format!("/orgs/{org}/members"),
            &key,
            None,
        )
        .await,
        403,
        "INSUFFICIENT_SCOPE",
    )
    .await;
    assert_eq!(error["required_scope"], "members:read");
    // another org's routes: 404, as for anyone outside it
    expect_error(
        with_key(&app, Method::GET, &format!("/orgs/{other_org}"), &key, None).await,
        404,
        "NOT_FOUND",
    )
    .await;
    // per-key rate limit: 4 per hour, 4 spent
    let limited = with_key(&app, Method::GET, &format!("/orgs/{org}"), &key, None).await;
    assert_eq!(limited.headers()["x-ratelimit-remaining"], "0");
    expect_error(limited, 429, "RATE_LIMITED").await;
    // user routes are for users
    expect_error(
        with_key(&app, Method::GET, "/auth/me", &key, None).await,
        401,
        "UNAUTHORIZED",
    )
    .await;

    // revoked, mistyped and unknown keys are 401, one message for all
    let (rid, rkey) = issue_key(
        &app,
        &owner,
        &org,
        json!({ "name": "r", "scopes": ["org:read"] }),
    )
    .await;
    assert_eq!(
        with_key(&app, Method::GET, &format!("/orgs/{org}"), &rkey, None)
            .await
            .status(),
        200
    );
    send(
        &app,
        Method::DELETE,
        &format!("/orgs/{org}/keys/{rid}"),
        &owner,
        None,
    )
    .await;
    expect_error(
        with_key(&app, Method::GET, &format!("/orgs/{org}"), &rkey, None).await,
        401,
        "UNAUTHORIZED",
    )
    .await;
    expect_error(
        with_key(
            &app,
            Method::GET,
            &format!("/orgs/{org}"),
            "fg_live_nonsense",
            None,
        )
        .await,
        401,
        "UNAUTHORIZED",
    )
    .await;

    // what a key does is audited with the key as actor
    let (_, writer) = issue_key(
        &app,
        &owner,
        &org,
        json!({ "name": "w", "scopes": ["keys:write"] }),
    )
    .await;
    with_key(
        &app,
        Method::DELETE,
        &format!("/orgs/{org}/keys/{id}"),
        &writer,
        None,
    )
    .await;
    let log = body(
        send(
            &app,
            Method::GET,
            &format!("/orgs/{org}/audit-log?action=key.revoked"),
            &owner,
            None,
        )
        .await,
    )
    .await;
    let by_key = log["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["target"]["id"] == id.as_str())
        .expect("audited");
    assert_eq!(by_key["actor"]["type"], "key");
    app.stop().await;
}

async fn plans_change_limits_quotas_and_entitlements_at_once(backend: Backend) {
    let app = spawn(backend).await;
    let (ops, root) = operator_with_verifier(&app).await;
    let (owner, org) = app.owner("ada@example.com", "Acme").await;
    let (_, key) = issue_key(&app, &owner, &org, json!({ "name": "k", "scopes": [] })).await;
    let before = verify(&app, &root, json!({ "key": key })).await;
    assert_eq!(
        (before["plan"].clone(), before["ratelimit"]["limit"].clone()),
        (json!("free"), json!(100))
    );
    let ent = body_of(
        send(
            &app,
            Method::GET,
            &format!("/orgs/{org}/entitlements"),
            &owner,
            None,
        )
        .await,
    )
    .await;
    assert_eq!(ent["plan"], "free");
    assert_eq!(ent["quotas"]["requests"]["limit"], 1000);

    expect_error(
        send(
            &app,
            Method::PUT,
            &format!("/admin/orgs/{org}/plan"),
            &owner,
            Some(json!({ "plan": "pro" })),
        )
        .await,
        403,
        "FORBIDDEN",
    )
    .await;
    let unknown = expect_error(
        send(
            &app,
            Method::PUT,
            &format!("/admin/orgs/{org}/plan"),
            &ops,
            Some(json!({ "plan": "platinum" })),
        )
        .await,
        422,
        "VALIDATION_FAILED",
    )
    .await;
    assert!(unknown["fields"]["plan"].as_str().unwrap().contains("pro"));
    let assigned = send(
        &app,
        Method::PUT,
        &format!("/admin/orgs/{org}/plan"),
        &ops,
        Some(json!({ "plan": "pro" })),
    )
    .await;
    assert_eq!(assigned.status(), 200);
    assert_eq!(body_of(assigned).await["plan"], "pro");

    // the warm key's context follows at once
    let after = verify(&app, &root, json!({ "key": key })).await;
    assert_eq!(after["plan"], "pro");
    assert_eq!(after["entitlements"], json!(["bulk_export", "sso"]));
    assert_eq!(after["ratelimit"]["limit"], 5000);
    let ent = body_of(
        send(
            &app,
            Method::GET,
            &format!("/orgs/{org}/entitlements"),
            &owner,
            None,
        )
        .await,
    )
    .await;
    assert_eq!(ent["entitlements"], json!(["bulk_export", "sso"]));
    assert_eq!(
        ent["rate_limit"],
        json!({ "limit": 5000, "window_seconds": 60 })
    );
    assert!(ent["quotas"]["requests"]["used"].as_i64().unwrap() >= 2);
    let log = body(
        send(
            &app,
            Method::GET,
            &format!("/orgs/{org}/audit-log?action=org.plan_changed"),
            &owner,
            None,
        )
        .await,
    )
    .await;
    assert_eq!(
        log["data"][0]["data"],
        json!({ "from": "free", "to": "pro" })
    );
    app.stop().await;
}

async fn usage_and_last_use_are_written_in_batches_and_at_shutdown(backend: Backend) {
    let app = spawn(backend).await;
    let (_, root) = operator_with_verifier(&app).await;
    let (owner, org) = app.owner("ada@example.com", "Acme").await;
    let (id, key) = issue_key(&app, &owner, &org, json!({ "name": "k", "scopes": [] })).await;
    for _ in 0..5 {
        verify(&app, &root, json!({ "key": key, "cost": 2 })).await;
    }
    // last use shows up after the next batch (about a second)
    assert!(
        eventually(Duration::from_secs(5), || async {
            !body_of(
                send(
                    &app,
                    Method::GET,
                    &format!("/orgs/{org}/keys/{id}"),
                    &owner,
                    None,
                )
                .await,
            )
            .await["last_used_at"]
                .is_null()
        })
        .await
    );
    for _ in 0..3 {
        verify(&app, &root, json!({ "key": key })).await;
    }
    let state = app.state().clone();
    let month = fluxgate_server::usage_recorder::month_of(fluxgate_server::clock::now());
    let _data = app.stop_keeping_data().await; // a graceful stop writes what is pending
    let total = {
        // the store is closed with the app: reopen it to read what was written
        let store = fluxgate_server::server::open_store(&state.config)
            .await
            .unwrap();
        let total = store
            .usage_total(&org.parse().unwrap(), "requests", &month)
            .await
            .unwrap();
        store.close().await;
        total
    };
    assert_eq!(total, 13, "5 verifies of cost 2 and 3 of cost 1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warm_keys_verify_while_the_database_is_down() {
    let app = spawn(Backend::Postgres).await;
    let (_, root) = operator_with_verifier(&app).await;
    let (owner, org) = app.owner("ada@example.com", "Acme").await;
    let (_, key) = issue_key(&app, &owner, &org, json!({ "name": "k", "scopes": [] })).await;
    assert_eq!(
        verify(&app, &root, json!({ "key": key })).await["code"],
        "VALID"
    );

    let admin_url = std::env::var("FLUXGATE_TEST_POSTGRES_URL").unwrap();
    let database = app.database_url.rsplit('/').next().unwrap().to_string();
    let mut admin = <sqlx::PgConnection as sqlx::Connection>::connect(&admin_url)
        .await
        .unwrap();
    sqlx::query(&format!(
        "ALTER DATABASE {database} ALLOW_CONNECTIONS false"
    ))
    .execute(&mut admin)
    .await
    .unwrap();
    sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1")
        .bind(&database)
        .execute(&mut admin)
        .await
        .unwrap();
    expect_error(
        app.call(Method::GET, "/readyz", None, None).await,
        503,
        "UNAVAILABLE",
    )
    .await;

    // the warm key and a flood of invented keys are answered from memory
    for _ in 0..20 {
        assert_eq!(
            verify(&app, &root, json!({ "key": key })).await["code"],
            "VALID"
        );
    }
    for _ in 0..200 {
        let invented =
            fluxgate_core::apikey::generate("fg", fluxgate_core::apikey::Environment::Live);
        let response = with_key(
            &app,
            Method::POST,
            "/keys/verify",
            &root,
            Some(json!({ "key": invented.expose_secret() })),
        )
        .await;
        assert_eq!(
            response.status(),
            200,
            "an unknown key must not need the database"
        );
        assert_eq!(body_of(response).await["code"], "NOT_FOUND");
    }

    sqlx::query(&format!("ALTER DATABASE {database} ALLOW_CONNECTIONS true"))
        .execute(&mut admin)
        .await
        .unwrap();
    assert!(
        eventually(Duration::from_secs(10), || async {
            app.call(Method::GET, "/readyz", None, None).await.status() == 200
        })
        .await
    );
    // the counts of the verifies made during the outage were kept and written once it ended
    let usage = format!("/api/v1/usage?org_id={org}&granularity=day");
    let counted = eventually(Duration::from_secs(15), || async {
        body(app.call(Method::GET, &usage, Some(&owner), None).await).await["data"]["total"]
            ["count"]
            == 21
    })
    .await;
    assert!(counted, "1 verify before and 20 during the outage");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_redis_postgres_notifications_reach_the_other_node() {
    let secret = "b".repeat(64);
    let a = TestApp::spawn_with(Backend::Postgres, |t| {
        t.insert("secret_key".into(), secret.clone().into());
    })
    .await;
    let shared = a.database_url.clone();
    let b = TestApp::spawn_with(Backend::Postgres, |t| {
        t.insert("secret_key".into(), secret.clone().into());
        t.insert("database_url".into(), shared.clone().into());
    })
    .await;
    let (_, root) = operator_with_verifier(&a).await;
    let (owner, org) = a.owner("ada@example.com", "Acme").await;
    let (id, key) = issue_key(&a, &owner, &org, json!({ "name": "k", "scopes": [] })).await;
    assert!(
        eventually(Duration::from_secs(2), || async {
            verify(&b, &root, json!({ "key": key })).await["code"] == "VALID"
        })
        .await
    );
    // revoked through A: B's warm entry is dropped by the NOTIFY within a second
    send(
        &a,
        Method::DELETE,
        &format!("/orgs/{org}/keys/{id}"),
        &owner,
        None,
    )
    .await;
    let revoked = std::time::Instant::now();
    assert!(
        eventually(Duration::from_secs(1), || async {
            verify(&b, &root, json!({ "key": key })).await["code"] == "REVOKED"
        })
        .await
    );
    assert!(revoked.elapsed() < Duration::from_secs(1));
    b.stop().await;
    a.stop().await;
}

async fn a_full_key_cache_drops_the_least_recently_used_contexts_and_still_answers_right(
    backend: Backend,
) {
    let app = TestApp::spawn_with(backend, |t| {
        let product: toml::Table = PRODUCT.parse().unwrap();
        for (k, v) in product {
            t.insert(k, v);
        }
        let mut keys = toml::Table::new();
        keys.insert("cache_capacity".into(), 100.into());
        t.insert("keys".into(), keys.into());
    })
    .await;
    let (_, root) = operator_with_verifier(&app).await;
    let (owner, org) = app.owner("ada@example.com", "Acme").await;
    let mut issued = Vec::new();
    for i in 0..100 {
        issued.push(
            issue_key(
                &app,
                &owner,
                &org,
                json!({ "name": format!("k{i}"), "scopes": [] }),
            )
            .await,
        );
    }
    // the first sixty are loaded; then the first one is used again, the rest are not — when
    // forty more push the cache past its capacity, the least recently used of those sixty
    // leave, and the one used again stays
    let is_loaded = |key: &str| {
        app.state()
            .keys
            .warm(&fluxgate_server::keycache::KeyHash::of(key))
            .is_some()
    };
    for (_, key) in &issued[..60] {
        assert_eq!(
            verify(&app, &root, json!({ "key": key })).await["code"],
            "VALID"
        );
    }
    tokio::time::sleep(Duration::from_millis(250)).await;
    let hot = &issued[0].1;
    assert_eq!(
        verify(&app, &root, json!({ "key": hot })).await["code"],
        "VALID"
    );
    tokio::time::sleep(Duration::from_millis(250)).await;
    for (_, key) in &issued[60..100] {
        assert_eq!(
            verify(&app, &root, json!({ "key": key })).await["code"],
            "VALID"
        );
    }
    assert!(is_loaded(hot), "the recently used key was dropped");
    let dropped = issued[1..60].iter().filter(|(_, k)| !is_loaded(k)).count();
    assert!(
        dropped >= 20,
        "only {dropped} of the keys unused since were dropped"
    );
    assert!(
        issued[60..100].iter().all(|(_, k)| is_loaded(k)),
        "a key used after the one used again was dropped"
    );
    let loaded = app.state().keys.loaded();
    assert!(
        loaded <= 100,
        "{loaded} contexts loaded past a capacity of 100"
    );
    // the first keys were dropped from memory: they still verify (reread), and a revocation of
    // one of them is answered at once
    let (first_id, first) = &issued[0];
    assert_eq!(
        verify(&app, &root, json!({ "key": first })).await["code"],
        "VALID"
    );
    let revoked = send(
        &app,
        Method::DELETE,
        &format!("/orgs/{org}/keys/{first_id}"),
        &owner,
        None,
    )
    .await;
    assert_eq!(revoked.status(), 204);
    assert_eq!(
        verify(&app, &root, json!({ "key": first })).await["code"],
        "REVOKED"
    );
    let (second_id, second) = &issued[1];
    let revoked = send(
        &app,
        Method::DELETE,
        &format!("/orgs/{org}/keys/{second_id}"),
        &owner,
        None,
    )
    .await;
    assert_eq!(revoked.status(), 204);
    assert_eq!(
        verify(&app, &root, json!({ "key": second })).await["code"],
        "REVOKED"
    );
    app.stop().await;
}

/// A node serves before it has read every live secret (a million take seconds): until then a
/// hash it does not hold is asked of the database whatever the unknown-hash budget, so a real
/// key is never refused; once read, the budget protects the database again.
async fn a_node_answers_before_it_has_read_every_secret(backend: Backend) {
    use fluxgate_server::keycache::KeyCache;
    let app = TestApp::spawn(backend).await;
    let (owner, org) = app.owner("ada@example.com", "Acme").await;
    let (_, first) = issue_key(&app, &owner, &org, json!({ "name": "a", "scopes": [] })).await;

    // a node just started: nothing read yet
    let cache = KeyCache::new(Duration::from_secs(60), 1_000);
    assert!(!cache.is_synced());
    assert!(
        found_after_a_flood(&app, &cache, &first).await,
        "a real key was refused before the first read"
    );

    cache.sync_known(app.state().store.as_ref()).await.unwrap();
    assert!(cache.is_synced());
    // a key this node never heard of (its announcement went elsewhere), asked for right after
    // a flood of invented ones: the budget is spent, so it is not looked up
    let (_, unheard) = issue_key(&app, &owner, &org, json!({ "name": "b", "scopes": [] })).await;
    assert!(
        !found_after_a_flood(&app, &cache, &unheard).await,
        "the unknown-hash budget did not hold after the first read"
    );
    app.stop().await;
}

/// Asks `cache` about 200 invented keys (none may be found), then about `key`: whether it was
/// found.
async fn found_after_a_flood(
    app: &TestApp,
    cache: &fluxgate_server::keycache::KeyCache,
    key: &str,
) -> bool {
    use fluxgate_server::keycache::{KeyHash, Lookup};
    let store = app.state().store.as_ref();
    for _ in 0..200 {
        let invented =
            fluxgate_core::apikey::generate("fg", fluxgate_core::apikey::Environment::Live);
        let lookup = cache
            .get(&KeyHash::of(invented.expose_secret()), store, &app.config)
            .await
            .unwrap();
        assert!(
            !matches!(lookup, Lookup::Found(_)),
            "an invented key was found"
        );
    }
    let lookup = cache
        .get(&KeyHash::of(key), store, &app.config)
        .await
        .unwrap();
    matches!(lookup, Lookup::Found(_))
}

/// Verifies `key` with `verifier` `times` times, eight at a time (so both worker threads serve
/// the verifier and recall it), and returns the statuses.
async fn verify_burst(app: &TestApp, verifier: &str, key: &str, times: usize) -> Vec<u16> {
    let mut statuses = Vec::with_capacity(times);
    for _ in 0..times.div_ceil(8) {
        let calls = (0..8).map(|_| {
            with_key(
                app,
                Method::POST,
                "/keys/verify",
                verifier,
                Some(json!({ "key": key })),
            )
        });
        for response in futures_util::future::join_all(calls).await {
            statuses.push(response.status().as_u16());
        }
    }
    statuses
}

/// A verifier key used on every request is recalled by the thread that served it without being
/// hashed again — and loses its right the moment it is revoked, its scope is taken away or it
/// expires, whichever thread serves the next call.
async fn a_verifier_recalled_by_its_thread_loses_its_right_at_once(backend: Backend) {
    let app = spawn(backend).await;
    let (ops, _) = operator_with_verifier(&app).await;
    let me = body(send(&app, Method::GET, "/auth/me", &ops, None).await).await;
    let ops_org = me["data"]["active_org"]["id"].as_str().unwrap().to_owned();
    let (owner, org) = app.owner("ada@example.com", "Acme").await;
    let (_, key) = issue_key(&app, &owner, &org, json!({ "name": "k", "scopes": [] })).await;
    let (id, verifier) = issue_key(
        &app,
        &ops,
        &ops_org,
        json!({ "name": "verifier", "scopes": ["keys:verify"] }),
    )
    .await;

    // revoked: the next call is refused, on either thread
    assert!(verify_burst(&app, &verifier, &key, 32)
        .await
        .iter()
        .all(|s| *s == 200));
    let revoked = send(
        &app,
        Method::DELETE,
        &format!("/orgs/{ops_org}/keys/{id}"),
        &ops,
        None,
    )
    .await;
    assert_eq!(revoked.status(), 204);
    assert!(verify_burst(&app, &verifier, &key, 16)
        .await
        .iter()
        .all(|s| *s == 401));

    // its scope taken away: 403 at once
    let (scoped_id, scoped) = issue_key(
        &app,
        &ops,
        &ops_org,
        json!({ "name": "scoped", "scopes": ["keys:verify", "keys:read"] }),
    )
    .await;
    assert!(verify_burst(&app, &scoped, &key, 32)
        .await
        .iter()
        .all(|s| *s == 200));
    let patched = send(
        &app,
        Method::PATCH,
        &format!("/orgs/{ops_org}/keys/{scoped_id}"),
        &ops,
        Some(json!({ "scopes": ["keys:read"] })),
    )
    .await;
    assert_eq!(patched.status(), 200);
    let refused = with_key(
        &app,
        Method::POST,
        "/keys/verify",
        &scoped,
        Some(json!({ "key": key })),
    )
    .await;
    expect_error(refused, 403, "INSUFFICIENT_SCOPE").await;
    assert!(verify_burst(&app, &scoped, &key, 16)
        .await
        .iter()
        .all(|s| *s == 403));

    // expired, with nothing announced: refused once its time has come
    let expires = time::OffsetDateTime::now_utc() + time::Duration::seconds(4);
    let (_, brief) = issue_key(
        &app,
        &ops,
        &ops_org,
        json!({ "name": "brief", "scopes": ["keys:verify"],
                "expires_at": expires.format(&time::format_description::well_known::Rfc3339).unwrap() }),
    )
    .await;
    assert!(verify_burst(&app, &brief, &key, 32)
        .await
        .iter()
        .all(|s| *s == 200));
    let left = (expires - time::OffsetDateTime::now_utc()).unsigned_abs();
    tokio::time::sleep(left + Duration::from_millis(1_100)).await;
    assert!(verify_burst(&app, &brief, &key, 16)
        .await
        .iter()
        .all(|s| *s == 401));
    app.stop().await;
}
