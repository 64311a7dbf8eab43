//! The same hostile input against SQLite and PostgreSQL, answered the same way: NUL and control
//! characters refused at the door naming their field (PostgreSQL cannot store NUL, and a bad row
//! once poisoned every later usage batch), invisible and direction-changing characters refused in
//! addresses and names, body-limit and content-type refusals in the envelope, operator-only
//! permissions out of reach by wildcard, and `Connection: close` when a refusal leaves a body
//! unread.

use fluxgate_testkit::{
    body, eventually, expect_error, issue_key, operator_with_verifier, send, with_key, Backend,
    TestApp, PASSWORD,
};
use reqwest::Method;
use serde_json::{json, Value};
use std::time::Duration;

both_backends!(
    control_characters_are_refused_naming_the_field_and_usage_keeps_flowing,
    invisible_characters_are_refused_in_addresses_and_names,
    oversized_and_mistyped_bodies_are_refused_in_the_envelope,
    wildcards_never_reach_operator_permissions_outside_the_operator_org,
    a_refusal_that_leaves_the_body_unread_says_connection_close,
    slow_and_idle_connections_are_closed_after_the_header_timeout,
    a_request_being_served_outlasts_the_header_timeout,
);

async fn field_refused(response: reqwest::Response, field: &str) {
    let error = expect_error(response, 422, "VALIDATION_FAILED").await;
    assert!(error["fields"][field].is_string(), "{field}: {error}");
}

async fn control_characters_are_refused_naming_the_field_and_usage_keeps_flowing(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (_, root) = operator_with_verifier(&app).await;
    let (owner, org) = app.owner("ada@example.com", "Acme").await;

    let signup = app
        .post(
            "/api/v1/auth/signup",
            json!({ "email": "n@example.com", "password": PASSWORD, "name": "N\u{0}" }),
        )
        .await;
    field_refused(signup, "name").await;
    let bell = app
        .post("/api/v1/orgs", json!({ "name": "Acme\u{7}" }))
        .await;
    assert!(bell.status().is_client_error());

    let (_, writer) = issue_key(
        &app,
        &owner,
        &org,
        json!({ "name": "w", "scopes": ["usage:write", "usage:read"] }),
    )
    .await;
    let track = |body: Value| with_key(&app, Method::POST, "/sdk/track", &writer, Some(body));
    field_refused(
        track(json!({ "meter": "m", "org_id": org, "quantity": 1, "idempotency_key": "k\u{0}" }))
            .await,
        "idempotency_key",
    )
    .await;
    let batch = track(json!({ "events": [
        { "meter": "m", "org_id": org, "quantity": 1 },
        { "meter": "m\u{0}", "org_id": org, "quantity": 1 }
    ] }))
    .await;
    field_refused(batch, "events[1].meter").await;

    let dev = app
        .member(&owner, &org, "dev@example.com", "developer")
        .await;
    let dev = body(app.get_auth("/api/v1/auth/me", &dev).await).await["data"]["user"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let role = send(
        &app,
        Method::PATCH,
        &format!("/orgs/{org}/members/{dev}"),
        &owner,
        Some(json!({ "role": "admin\u{0}" })),
    )
    .await;
    field_refused(role, "role").await;
    let search = send(
        &app,
        Method::GET,
        &format!("/orgs/{org}/keys?search=a%00b"),
        &owner,
        None,
    )
    .await;
    field_refused(search, "search").await;

    // a NUL in a verify's endpoint is refused, and does not poison the usage batches after it
    let (key_id, key) = issue_key(&app, &owner, &org, json!({ "name": "k", "scopes": [] })).await;
    let verify = |endpoint: &str| {
        with_key(
            &app,
            Method::POST,
            "/keys/verify",
            &root,
            Some(json!({ "key": key, "endpoint": endpoint })),
        )
    };
    field_refused(verify("/e\u{0}x").await, "endpoint").await;
    let cached = with_key(
        &app,
        Method::POST,
        "/keys/verify",
        &root,
        Some(json!({ "key": key, "cached_calls": { "/a\u{0}": 1 }, "cost": 2 })),
    )
    .await;
    field_refused(cached, "cached_calls").await;
    for _ in 0..3 {
        let answer = body(verify("/ok").await).await;
        assert_eq!(answer["data"]["code"], "VALID");
    }
    assert!(
        eventually(Duration::from_secs(8), || async {
            let usage = send(
                &app,
                Method::GET,
                &format!("/usage?org_id={org}&key_id={key_id}&granularity=minute"),
                &owner,
                None,
            )
            .await;
            body(usage).await["data"]["total"]["count"].as_i64() == Some(3)
        })
        .await,
        "the valid calls were written"
    );
    // tabs and line breaks are text, though
    let metadata = issue_key(
        &app,
        &owner,
        &org,
        json!({ "name": "m", "scopes": [], "metadata": { "note": "line\n\tnext" } }),
    )
    .await;
    assert!(metadata.1.starts_with("fg_"));
    app.stop().await;
}

async fn invisible_characters_are_refused_in_addresses_and_names(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (owner, org) = app.owner("ada@example.com", "Acme").await;
    for email in ["a\u{200b}da@example.com", "\u{202e}ada@example.com"] {
        let signup = app
            .post(
                "/api/v1/auth/signup",
                json!({ "email": email, "password": PASSWORD }),
            )
            .await;
        field_refused(signup, "email").await;
        let invite = send(
            &app,
            Method::POST,
            &format!("/orgs/{org}/invitations"),
            &owner,
            Some(json!({ "email": email, "role": "viewer" })),
        )
        .await;
        field_refused(invite, "email").await;
    }
    for name in ["Ac\u{202e}me", "Ac\u{200b}me", "\u{2066}Acme"] {
        let create = send(
            &app,
            Method::POST,
            "/orgs",
            &owner,
            Some(json!({ "name": name })),
        )
        .await;
        field_refused(create, "name").await;
        let rename = send(
            &app,
            Method::PATCH,
            "/auth/me",
            &owner,
            Some(json!({ "name": name })),
        )
        .await;
        field_refused(rename, "name").await;
    }
    // letters of any script are names
    let created = send(
        &app,
        Method::POST,
        "/orgs",
        &owner,
        Some(json!({ "name": "Ünïcødé 株式会社" })),
    )
    .await;
    assert_eq!(created.status(), 201);
    app.stop().await;
}

async fn oversized_and_mistyped_bodies_are_refused_in_the_envelope(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (owner, org) = app.owner("ada@example.com", "Acme").await;
    let (id, _) = issue_key(&app, &owner, &org, json!({ "name": "k", "scopes": [] })).await;
    let big = format!("{{\"pad\": \"{}\"}}", "x".repeat(70 * 1024));
    let events: Vec<Value> = (0..1001)
        .map(|i| json!({ "meter": "m", "org_id": org, "quantity": 1, "idempotency_key": format!("{i:0>60}") }))
        .collect();
    let batch = serde_json::to_string(&json!({ "events": events })).unwrap();
    let rotate = format!("/api/v1/orgs/{org}/keys/{id}/rotate");
    for (path, payload) in [
        ("/api/v1/auth/refresh", big.clone()),
        (rotate.as_str(), big.clone()),
        ("/api/v1/sdk/track", big),
        ("/api/v1/sdk/track", batch),
    ] {
        let response = app
            .client
            .post(app.url(path))
            .bearer_auth(&owner)
            .header("content-type", "application/json")
            .body(payload)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 413, "{path}");
        assert!(response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json"));
        let error = body(response).await;
        assert_eq!(error["error"]["code"], "PAYLOAD_TOO_LARGE", "{path}");
    }
    for (path, content_type) in [
        ("/api/v1/sdk/track", Some("text/plain")),
        ("/api/v1/sdk/track", None),
        (rotate.as_str(), Some("text/plain")),
        (rotate.as_str(), None),
    ] {
        let mut request = app
            .client
            .post(app.url(path))
            .bearer_auth(&owner)
            .body(r#"{"meter": "m", "quantity": 1, "grace_period_seconds": 0}"#);
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        let response = request.send().await.unwrap();
        let error = expect_error(response, 400, "BAD_REQUEST").await;
        assert!(
            error["message"].as_str().unwrap().contains("Content-Type"),
            "{error}"
        );
    }
    // an empty body still rotates with the default grace period
    let rotated = app
        .client
        .post(app.url(&rotate))
        .bearer_auth(&owner)
        .send()
        .await
        .unwrap();
    assert_eq!(rotated.status(), 200);
    app.stop().await;
}

async fn wildcards_never_reach_operator_permissions_outside_the_operator_org(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (owner, org) = app.owner("ada@example.com", "Acme").await;
    for scope in ["admin:*", "admin:orgs", "keys:verify"] {
        let key = send(
            &app,
            Method::POST,
            &format!("/orgs/{org}/keys"),
            &owner,
            Some(json!({ "name": "k", "scopes": [scope] })),
        )
        .await;
        let error = expect_error(key, 403, "FORBIDDEN").await;
        assert_eq!(error["required_permission"], scope, "{error}");
        let role = send(
            &app,
            Method::POST,
            &format!("/orgs/{org}/roles"),
            &owner,
            Some(json!({ "name": "sneaky", "permissions": [scope] })),
        )
        .await;
        let error = expect_error(role, 403, "FORBIDDEN").await;
        assert_eq!(error["required_permission"], scope, "{error}");
    }
    // what an owner holds in a customer org is still theirs to give
    let (_, _) = issue_key(
        &app,
        &owner,
        &org,
        json!({ "name": "k", "scopes": ["keys:*", "*"] }),
    )
    .await;
    // and the operator org may grant its own permissions by wildcard
    let (ops, _) = operator_with_verifier(&app).await;
    let me = body(app.get_auth("/api/v1/auth/me", &ops).await).await;
    let operator_org = me["data"]["active_org"]["id"].as_str().unwrap().to_owned();
    let role = send(
        &app,
        Method::POST,
        &format!("/orgs/{operator_org}/roles"),
        &ops,
        Some(json!({ "name": "support", "permissions": ["admin:*"] })),
    )
    .await;
    assert_eq!(role.status(), 201);
    app.stop().await;
}

async fn a_refusal_that_leaves_the_body_unread_says_connection_close(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (owner, org) = app.owner("ada@example.com", "Acme").await;
    let refused = app
        .client
        .post(app.url(&format!("/api/v1/orgs/{org}/keys")))
        .header("content-type", "application/json")
        .body(r#"{"name": "k", "scopes": []}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    assert_eq!(refused.headers()["connection"], "close");
    // an answer without a body to read keeps the connection
    let fine = app.get_auth("/api/v1/auth/me", &owner).await;
    assert_eq!(fine.status(), 200);
    assert!(fine.headers().get("connection").is_none());
    // and the client's next request goes through
    let next = send(
        &app,
        Method::GET,
        &format!("/orgs/{org}/keys"),
        &owner,
        None,
    )
    .await;
    assert_eq!(next.status(), 200);
    app.stop().await;
}

async fn slow_and_idle_connections_are_closed_after_the_header_timeout(backend: Backend) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = TestApp::spawn_with(backend, |t| {
        t.insert("header_read_timeout".into(), "1s".into());
    })
    .await;
    let addr = app.base.trim_start_matches("http://").to_owned();
    // a request that never finishes its headers
    let mut slow = tokio::net::TcpStream::connect(&addr).await.unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let mut buffer = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), slow.read_to_end(&mut buffer)).await;
    assert!(closed.is_ok(), "a slow client is cut off");
    // a kept-alive connection left idle after its answer
    let mut idle = tokio::net::TcpStream::connect(&addr).await.unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut answer = [0u8; 12];
    idle.read_exact(&mut answer).await.unwrap();
    assert_eq!(&answer, b"HTTP/1.1 200");
    let started = std::time::Instant::now();
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), idle.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "an idle connection is closed");
    assert!(
        started.elapsed() >= Duration::from_millis(500),
        "not before the timeout"
    );
    app.stop().await;
}

async fn a_request_being_served_outlasts_the_header_timeout(backend: Backend) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = TestApp::spawn_with(backend, |t| {
        t.insert("header_read_timeout".into(), "1s".into());
    })
    .await;
    let addr = app.base.trim_start_matches("http://").to_owned();
    // the headers arrive at once; the body trickles in over three timeouts
    let body = br#"{"email":"nobody@example.com","password":"not the password"}"#;
    let mut slow = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "POST /api/v1/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n",
        body.len()
    );
    slow.write_all(head.as_bytes()).await.unwrap();
    for chunk in body.chunks(body.len().div_ceil(6)) {
        tokio::time::sleep(Duration::from_millis(500)).await;
        slow.write_all(chunk).await.unwrap();
    }
    let mut answer = [0u8; 12];
    tokio::time::timeout(Duration::from_secs(5), slow.read_exact(&mut answer))
        .await
        .expect("answered in time")
        .expect("answered, not cut off");
    assert_eq!(
        &answer, b"HTTP/1.1 401",
        "the login is refused on its merits"
    );
    app.stop().await;
}
