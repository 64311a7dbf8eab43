//! IP allowlists over real HTTP, on SQLite and PostgreSQL: verify answers `FORBIDDEN_IP` for a
//! caller outside a key's list (v4 and v6, ranges and single addresses, a missing address
//! refused), management calls made with such a key are refused from other addresses — with
//! `X-Forwarded-For` believed only from trusted proxies — and the list is checked and replaced.

use fluxgate_testkit::{
    body, expect_error, issue_key, operator_with_verifier, send, set_config, with_key, Backend,
    TestApp,
};
use reqwest::Method;
use serde_json::{json, Value};

both_backends!(
    verify_refuses_callers_outside_a_keys_allowlist,
    a_key_with_an_allowlist_manages_only_from_its_addresses,
    allowlists_are_checked_and_replaced,
);

async fn verify(app: &TestApp, verifier: &str, body_json: Value) -> reqwest::Response {
    with_key(app, Method::POST, "/keys/verify", verifier, Some(body_json)).await
}

async fn verify_refuses_callers_outside_a_keys_allowlist(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (_, verifier) = operator_with_verifier(&app).await;
    let (token, org) = app.owner("ip@example.com", "Fenced Co").await;
    let (_, key) = issue_key(
        &app,
        &token,
        &org,
        json!({ "name": "fenced", "scopes": [], "ip_allowlist": ["203.0.113.0/24", "2001:db8::/32", "198.51.100.7"] }),
    )
    .await;
    for (ip, code) in [
        (Some("203.0.113.9"), "VALID"),
        (Some("2001:db8:0:1::5"), "VALID"),
        (Some("198.51.100.7"), "VALID"),
        (Some("::ffff:203.0.113.10"), "VALID"),
        (Some("198.51.100.8"), "FORBIDDEN_IP"),
        (Some("2001:db9::1"), "FORBIDDEN_IP"),
        (Some("127.0.0.1"), "FORBIDDEN_IP"),
        (None, "FORBIDDEN_IP"),
    ] {
        let answer = body(verify(&app, &verifier, json!({ "key": key, "ip": ip })).await).await;
        assert_eq!(answer["data"]["code"], code, "{ip:?}");
        assert_eq!(answer["data"]["valid"], code == "VALID");
        assert_eq!(
            answer["data"]["ip_allowlist"],
            json!(["203.0.113.0/24", "2001:db8::/32", "198.51.100.7/32"]),
            "the context carries the list"
        );
    }
    let bad = verify(
        &app,
        &verifier,
        json!({ "key": key, "ip": "not-an-address" }),
    )
    .await;
    let refused = expect_error(bad, 422, "VALIDATION_FAILED").await;
    assert!(refused["fields"].get("ip").is_some());

    // a key without a list: any caller, no address needed, nothing added to the answer
    let (_, open) = issue_key(&app, &token, &org, json!({ "name": "open", "scopes": [] })).await;
    let answer = body(verify(&app, &verifier, json!({ "key": open })).await).await;
    assert_eq!(answer["data"]["code"], "VALID");
    assert!(answer["data"].get("ip_allowlist").is_none());
}

async fn a_key_with_an_allowlist_manages_only_from_its_addresses(backend: Backend) {
    // the test's requests come from 127.0.0.1, which is a trusted proxy here
    let app = TestApp::spawn_with(backend, |config| {
        set_config(
            config,
            "trusted_proxies",
            toml::Value::Array(vec!["127.0.0.1/32".into()]),
        );
    })
    .await;
    let (token, org) = app.owner("mgmt@example.com", "Fenced Co").await;
    let (_, fenced) = issue_key(
        &app,
        &token,
        &org,
        json!({ "name": "fenced", "scopes": ["keys:read"], "ip_allowlist": ["203.0.113.0/24"] }),
    )
    .await;
    let list = format!("{}/api/v1/orgs/{org}/keys", app.url(""));
    let call = |forwarded: Option<&'static str>| {
        let mut request = app.client.get(&list).header("x-api-key", &fenced);
        if let Some(from) = forwarded {
            request = request.header("x-forwarded-for", from);
        }
        request.send()
    };
    // straight from loopback: outside the list
    let refused = expect_error(call(None).await.unwrap(), 403, "FORBIDDEN_IP").await;
    assert!(refused["message"].as_str().unwrap().contains("allowlist"));
    // through the trusted proxy, for a client inside the list: allowed
    assert_eq!(call(Some("203.0.113.40")).await.unwrap().status(), 200);
    assert_eq!(
        call(Some("198.51.100.1")).await.unwrap().status(),
        403,
        "a client outside the list, through the proxy"
    );

    // without trusted proxies the header is not believed
    let strict = TestApp::spawn(backend).await;
    let (token, org) = strict.owner("strict@example.com", "Strict Co").await;
    let (_, fenced) = issue_key(
        &strict,
        &token,
        &org,
        json!({ "name": "fenced", "scopes": ["keys:read"], "ip_allowlist": ["203.0.113.0/24"] }),
    )
    .await;
    let spoofed = strict
        .client
        .get(strict.url(&format!("/api/v1/orgs/{org}/keys")))
        .header("x-api-key", &fenced)
        .header("x-forwarded-for", "203.0.113.40")
        .send()
        .await
        .unwrap();
    expect_error(spoofed, 403, "FORBIDDEN_IP").await;
    // a list naming loopback lets the same key in
    let (_, local) = issue_key(
        &strict,
        &token,
        &org,
        json!({ "name": "local", "scopes": ["keys:read"], "ip_allowlist": ["127.0.0.0/8", "::1"] }),
    )
    .await;
    let allowed = with_key(
        &strict,
        Method::GET,
        &format!("/orgs/{org}/keys"),
        &local,
        None,
    )
    .await;
    assert_eq!(allowed.status(), 200);
}

async fn allowlists_are_checked_and_replaced(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (_, verifier) = operator_with_verifier(&app).await;
    let (token, org) = app.owner("check@example.com", "Check Co").await;
    let refused = send(
        &app,
        Method::POST,
        &format!("/orgs/{org}/keys"),
        &token,
        Some(json!({ "name": "k", "scopes": [], "ip_allowlist": ["10.0.0.1", "10.0.0.0/33", "example.com"] })),
    )
    .await;
    let refused = expect_error(refused, 422, "VALIDATION_FAILED").await;
    for field in ["ip_allowlist[1]", "ip_allowlist[2]"] {
        assert!(refused["fields"].get(field).is_some(), "{field}: {refused}");
    }
    assert!(refused["fields"].get("ip_allowlist[0]").is_none());

    let (key_id, key) = issue_key(
        &app,
        &token,
        &org,
        json!({ "name": "k", "scopes": [], "ip_allowlist": ["10.1.2.3/8"] }),
    )
    .await;
    let path = format!("/orgs/{org}/keys/{key_id}");
    let shown = body(send(&app, Method::GET, &path, &token, None).await).await;
    assert_eq!(
        shown["data"]["ip_allowlist"],
        json!(["10.0.0.0/8"]),
        "host bits dropped"
    );
    let from = |ip: &'static str| json!({ "key": key, "ip": ip });
    assert_eq!(
        body(verify(&app, &verifier, from("10.9.9.9")).await).await["data"]["code"],
        "VALID"
    );
    // replaced: takes effect on the next verify
    let patched = send(
        &app,
        Method::PATCH,
        &path,
        &token,
        Some(json!({ "ip_allowlist": ["192.0.2.1"] })),
    )
    .await;
    assert_eq!(
        body(patched).await["data"]["ip_allowlist"],
        json!(["192.0.2.1/32"])
    );
    assert_eq!(
        body(verify(&app, &verifier, from("10.9.9.9")).await).await["data"]["code"],
        "FORBIDDEN_IP"
    );
    // emptied: any address again
    send(
        &app,
        Method::PATCH,
        &path,
        &token,
        Some(json!({ "ip_allowlist": [] })),
    )
    .await;
    assert_eq!(
        body(verify(&app, &verifier, json!({ "key": key })).await).await["data"]["code"],
        "VALID"
    );
}
