//! Usage attribution over real HTTP, on SQLite and PostgreSQL: every verify and every
//! key-authenticated call is counted exactly, per org, key, endpoint and outcome; `GET /usage`
//! answers series by minute, hour and day within the caller's permissions; a graceful stop right
//! after a burst loses nothing.

use fluxgate_testkit::{
    body, eventually, expect_error, issue_key, operator_with_verifier, send, with_key, Backend,
    TestApp,
};
use reqwest::Method;
use serde_json::{json, Value};
use std::time::Duration;

both_backends!(
    verifies_and_key_calls_are_attributed_exactly,
    usage_is_read_within_the_callers_permissions,
    a_graceful_stop_right_after_a_burst_loses_nothing,
    metered_events_count_once_per_idempotency_key,
    widget_tokens_read_one_orgs_usage_and_nothing_else,
    minutes_roll_up_into_hours_and_days_and_expire,
);

async fn total(app: &TestApp, token: &str, query: &str) -> i64 {
    let response = send(app, Method::GET, &format!("/usage?{query}"), token, None).await;
    assert_eq!(response.status(), 200);
    body(response).await["data"]["total"]["count"]
        .as_i64()
        .unwrap()
}

async fn verifies_and_key_calls_are_attributed_exactly(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (_, root) = operator_with_verifier(&app).await;
    let (owner, org) = app.owner("ada@example.com", "Acme").await;
    let (key_id, key) = issue_key(
        &app,
        &owner,
        &org,
        json!({ "name": "k", "scopes": ["keys:read"] }),
    )
    .await;
    for _ in 0..7 {
        with_key(
            &app,
            Method::POST,
            "/keys/verify",
            &root,
            Some(json!({ "key": key, "endpoint": "/v1/accounts" })),
        )
        .await;
    }
    for _ in 0..2 {
        with_key(
            &app,
            Method::POST,
            "/keys/verify",
            &root,
            Some(json!({ "key": key, "endpoint": "/v1/admin", "scopes": ["keys:write"] })),
        )
        .await;
    }
    for _ in 0..3 {
        assert_eq!(
            with_key(&app, Method::GET, &format!("/orgs/{org}/keys"), &key, None)
                .await
                .status(),
            200
        );
    }
    // an SDK settling the calls it served from its cache: attributed when the verify is VALID,
    // and only when paid for in cost
    let verify = |body: Value| with_key(&app, Method::POST, "/keys/verify", &root, Some(body));
    let settled = verify(json!({ "key": key, "endpoint": "/v1/accounts", "cost": 4,
        "cached_calls": { "/v1/accounts": 1, "/v1/export": 2 } }))
    .await;
    assert_eq!(body(settled).await["data"]["code"], "VALID");
    let refused = verify(
        json!({ "key": key, "endpoint": "/v1/admin", "scopes": ["keys:write"],
        "cost": 6, "cached_calls": { "/v1/export": 5 } }),
    )
    .await;
    assert_eq!(body(refused).await["data"]["code"], "INSUFFICIENT_SCOPE");
    let unpaid =
        verify(json!({ "key": key, "cost": 2, "cached_calls": { "/v1/export": 2 } })).await;
    let error = expect_error(unpaid, 422, "VALIDATION_FAILED").await;
    assert!(error["fields"]["cached_calls"].is_string(), "{error}");

    // written in batches (attributed calls every five seconds): soon, exactly 12 + 4 + 1
    let q = format!("org_id={org}");
    assert!(
        eventually(Duration::from_secs(12), || async {
            total(&app, &owner, &q).await == 17
        })
        .await,
        "{}",
        total(&app, &owner, &q).await
    );
    assert_eq!(
        total(&app, &owner, &format!("org_id={org}&endpoint=/v1/accounts")).await,
        9
    );
    assert_eq!(
        total(&app, &owner, &format!("org_id={org}&endpoint=/v1/admin")).await,
        3
    );
    assert_eq!(
        total(&app, &owner, &format!("org_id={org}&endpoint=/v1/export")).await,
        2
    );
    let path = "GET /api/v1/orgs/{org_id}/keys";
    let encoded: String = form_urlencoded::byte_serialize(path.as_bytes()).collect();
    assert_eq!(
        total(&app, &owner, &format!("org_id={org}&endpoint={encoded}")).await,
        3
    );
    assert_eq!(
        total(&app, &owner, &format!("org_id={org}&key_id={key_id}")).await,
        17
    );
    // the series: dense buckets, the counts in the current one
    let minute = body(
        send(
            &app,
            Method::GET,
            &format!("/usage?org_id={org}&granularity=minute"),
            &owner,
            None,
        )
        .await,
    )
    .await;
    let series = minute["data"]["series"].as_array().unwrap();
    // a day of minutes, plus the current one unless `now` falls on a minute's first second
    assert!(
        [24 * 60, 24 * 60 + 1].contains(&series.len()),
        "{}",
        series.len()
    );
    assert_eq!(
        series
            .iter()
            .map(|p| p["count"].as_i64().unwrap())
            .sum::<i64>(),
        17
    );
    let day = body(
        send(
            &app,
            Method::GET,
            &format!("/usage?org_id={org}&granularity=day"),
            &owner,
            None,
        )
        .await,
    )
    .await;
    assert_eq!(day["data"]["total"]["count"], 17);
    // bad filters name the field
    for (query, field) in [
        ("granularity=week", "granularity"),
        ("from=yesterday", "from"),
        ("from=2030-01-02T00:00:00Z&to=2030-01-01T00:00:00Z", "from"),
        ("key_id=not-a-key", "key_id"),
    ] {
        let error = expect_error(
            send(
                &app,
                Method::GET,
                &format!("/usage?org_id={org}&{query}"),
                &owner,
                None,
            )
            .await,
            422,
            "VALIDATION_FAILED",
        )
        .await;
        assert!(error["fields"][field].is_string(), "{query}: {error}");
    }
    app.stop().await;
}

async fn usage_is_read_within_the_callers_permissions(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (ops, _) = operator_with_verifier(&app).await;
    let (owner, org) = app.owner("ada@example.com", "Acme").await;
    let (_, other_org) = app.owner("bob@example.com", "Beta").await;
    let viewer = app
        .member(&owner, &org, "viewer@example.com", "viewer")
        .await;
    assert_eq!(
        send(
            &app,
            Method::GET,
            &format!("/usage?org_id={org}"),
            &viewer,
            None
        )
        .await
        .status(),
        200
    );
    // another org: 404, as for anything of another org
    expect_error(
        send(
            &app,
            Method::GET,
            &format!("/usage?org_id={other_org}"),
            &owner,
            None,
        )
        .await,
        404,
        "NOT_FOUND",
    )
    .await;
    // a key without usage:read
    let (_, key) = issue_key(
        &app,
        &owner,
        &org,
        json!({ "name": "k", "scopes": ["keys:read"] }),
    )
    .await;
    let error = expect_error(
        with_key(
            &app,
            Method::GET,
            &format!("/usage?org_id={org}"),
            &key,
            None,
        )
        .await,
        403,
        "INSUFFICIENT_SCOPE",
    )
    .await;
    assert_eq!(error["required_scope"], "usage:read");
    let (_, reader) = issue_key(
        &app,
        &owner,
        &org,
        json!({ "name": "k", "scopes": ["usage:read"] }),
    )
    .await;
    assert_eq!(
        with_key(
            &app,
            Method::GET,
            &format!("/usage?org_id={org}"),
            &reader,
            None
        )
        .await
        .status(),
        200
    );
    // every org at once is for operators
    expect_error(
        send(&app, Method::GET, "/usage", &owner, None).await,
        422,
        "VALIDATION_FAILED",
    )
    .await;
    assert_eq!(
        send(&app, Method::GET, "/usage", &ops, None).await.status(),
        200
    );
    assert_eq!(
        send(
            &app,
            Method::GET,
            &format!("/usage?org_id={other_org}"),
            &ops,
            None
        )
        .await
        .status(),
        200
    );
    app.stop().await;
}

async fn a_graceful_stop_right_after_a_burst_loses_nothing(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (_, root) = operator_with_verifier(&app).await;
    let (owner, org) = app.owner("ada@example.com", "Acme").await;
    let (_, key) = issue_key(&app, &owner, &org, json!({ "name": "k", "scopes": [] })).await;
    let burst: Vec<_> = (0..50)
        .map(|_| {
            with_key(
                &app,
                Method::POST,
                "/keys/verify",
                &root,
                Some(json!({ "key": key, "endpoint": "/burst" })),
            )
        })
        .collect();
    for response in futures_util::future::join_all(burst).await {
        assert_eq!(response.status(), 200);
    }
    let config = app.config.clone();
    let _data = app.stop_keeping_data().await; // at once: the last batch is written by the stop
    let store = fluxgate_server::server::open_store(&config).await.unwrap();
    let now = fluxgate_server::clock::now();
    let series = store
        .call_series(&fluxgate_store::CallFilter {
            org_id: Some(org.parse().unwrap()),
            key_id: None,
            endpoint: Some("/burst".into()),
            from: now - 3600,
            to: now + 3600,
            bucket: 3600,
            rolled_until: 0,
        })
        .await
        .unwrap();
    store.close().await;
    assert_eq!(series.iter().map(|(_, c)| c).sum::<i64>(), 50);
}

async fn metered_events_count_once_per_idempotency_key(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (ops, _) = operator_with_verifier(&app).await;
    let (owner, org) = app.owner("ada@example.com", "Acme").await;
    let (_, other_org) = app.owner("bob@example.com", "Beta").await;
    send(
        &app,
        Method::PATCH,
        &format!("/orgs/{org}"),
        &ops,
        Some(json!({ "external_id": "cus_7" })),
    )
    .await;
    let (_, writer) = issue_key(
        &app,
        &owner,
        &org,
        json!({ "name": "k", "scopes": ["usage:write", "usage:read"] }),
    )
    .await;
    let track = |body: Value| with_key(&app, Method::POST, "/sdk/track", &writer, Some(body));

    let first = body(track(json!({ "meter": "tokens", "org_id": org, "quantity": 2.5, "idempotency_key": "job-1" })).await).await;
    assert_eq!(first["data"]["status"], "recorded");
    let again = body(track(json!({ "meter": "tokens", "org_id": org, "quantity": 2.5, "idempotency_key": "job-1" })).await).await;
    assert_eq!(again["data"]["status"], "duplicate");
    // ten concurrent duplicates of a new key: exactly one counts
    let racing: Vec<_> = (0..10)
        .map(|_| track(json!({ "meter": "tokens", "customer_external_id": "cus_7", "quantity": 1, "idempotency_key": "job-2" })))
        .collect();
    let mut statuses = Vec::new();
    for response in futures_util::future::join_all(racing).await {
        statuses.push(
            body(response).await["data"]["status"]
                .as_str()
                .unwrap_or("")
                .to_owned(),
        );
    }
    assert_eq!(
        statuses.iter().filter(|s| *s == "recorded").count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| *s == "duplicate").count(),
        9,
        "{statuses:?}"
    );

    // a batch answers per event
    let batch = body(
        track(json!({ "events": [
            { "meter": "tokens", "org_id": org, "quantity": 4 },
            { "meter": "tokens", "org_id": org, "quantity": "5" },
            { "meter": "tokens", "org_id": org, "quantity": 1, "idempotency_key": "job-1" },
            { "meter": "tokens", "org_id": other_org, "quantity": 1 },
        ]}))
        .await,
    )
    .await;
    let results = batch["data"]["results"].as_array().unwrap();
    assert_eq!(results[0]["status"], "recorded");
    assert_eq!(results[1]["status"], "error");
    assert!(
        results[1]["error"]["fields"]["quantity"].is_string(),
        "{batch}"
    );
    assert_eq!(results[2]["status"], "duplicate");
    assert_eq!(
        results[3]["error"]["code"], "NOT_FOUND",
        "another org's usage cannot be written"
    );
    assert_eq!(
        batch["data"]["summary"],
        json!({ "recorded": 1, "duplicate": 1, "error": 2 })
    );

    // bad input names the field
    let future = (time::OffsetDateTime::now_utc() + time::Duration::hours(1))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    for (event, field) in [
        (
            json!({ "meter": "tokens", "org_id": org, "quantity": 0 }),
            "quantity",
        ),
        (
            json!({ "meter": "tokens", "org_id": org, "quantity": -1.5 }),
            "quantity",
        ),
        (
            json!({ "meter": "Tokens!", "org_id": org, "quantity": 1 }),
            "meter",
        ),
        (
            json!({ "meter": "tokens", "org_id": org, "quantity": 1, "timestamp": future }),
            "timestamp",
        ),
        (
            json!({ "meter": "tokens", "org_id": org, "quantity": 1, "timestamp": "2001-01-01T00:00:00Z" }),
            "timestamp",
        ),
        (json!({ "meter": "tokens", "quantity": 1 }), "org_id"),
    ] {
        let error = expect_error(track(event.clone()).await, 422, "VALIDATION_FAILED").await;
        assert!(error["fields"][field].is_string(), "{event}: {error}");
    }
    // a key without usage:write
    let (_, reader) = issue_key(
        &app,
        &owner,
        &org,
        json!({ "name": "k", "scopes": ["usage:read"] }),
    )
    .await;
    let refused = with_key(
        &app,
        Method::POST,
        "/sdk/track",
        &reader,
        Some(json!({ "meter": "tokens", "org_id": org, "quantity": 1 })),
    )
    .await;
    assert_eq!(
        expect_error(refused, 403, "INSUFFICIENT_SCOPE").await["required_scope"],
        "usage:write"
    );

    // the meter's series: 2.5 + 1 + 4
    let usage = body(
        with_key(
            &app,
            Method::GET,
            &format!("/usage?org_id={org}&meter=tokens&granularity=day"),
            &writer,
            None,
        )
        .await,
    )
    .await;
    assert_eq!(usage["data"]["total"]["quantity"], 7.5, "{usage}");
    app.stop().await;
}

async fn widget_tokens_read_one_orgs_usage_and_nothing_else(backend: Backend) {
    let app = TestApp::spawn_with(backend, |t| {
        let mut usage = toml::Table::new();
        usage.insert(
            "widget_origins".into(),
            toml::Value::Array(vec!["https://app.example.com".into()]),
        );
        t.insert("usage".into(), toml::Value::Table(usage));
    })
    .await;
    let (owner, org) = app.owner("ada@example.com", "Acme").await;
    let (_, other_org) = app.owner("bob@example.com", "Beta").await;
    let minted = send(
        &app,
        Method::POST,
        "/widget/token",
        &owner,
        Some(json!({ "org_id": org })),
    )
    .await;
    assert_eq!(minted.status(), 200);
    assert_eq!(minted.headers()["cache-control"], "no-store");
    let minted = body(minted).await["data"].clone();
    let token = minted["token"].as_str().unwrap().to_owned();
    assert!(token.starts_with("wgt_"));
    assert!(minted["widget_url"]
        .as_str()
        .unwrap()
        .ends_with(&format!("/widget#token={token}")));

    // it reads its org's usage, from an allowed origin (CORS)
    let read = app
        .client
        .get(app.url("/api/v1/widget/usage?granularity=day"))
        .bearer_auth(&token)
        .header("origin", "https://app.example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(read.status(), 200);
    assert_eq!(
        read.headers()["access-control-allow-origin"],
        "https://app.example.com"
    );
    assert_eq!(body(read).await["data"]["org_id"], org.as_str());
    let preflight = app
        .client
        .request(Method::OPTIONS, app.url("/api/v1/widget/usage"))
        .header("origin", "https://app.example.com")
        .header("access-control-request-method", "GET")
        .header("access-control-request-headers", "authorization")
        .send()
        .await
        .unwrap();
    assert!(preflight.status().is_success(), "{}", preflight.status());
    assert!(preflight.headers()["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .contains("authorization"));
    // a foreign origin gets no CORS grant
    let foreign = app
        .client
        .get(app.url("/api/v1/widget/usage"))
        .bearer_auth(&token)
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert!(foreign
        .headers()
        .get("access-control-allow-origin")
        .is_none());

    // nothing else: not another org, not keys, not the management API; tampered tokens are nothing
    expect_error(
        app.client
            .get(app.url(&format!("/api/v1/widget/usage?org_id={other_org}")))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap(),
        422,
        "VALIDATION_FAILED",
    )
    .await;
    expect_error(
        send(
            &app,
            Method::GET,
            &format!("/orgs/{org}/keys"),
            &token,
            None,
        )
        .await,
        401,
        "UNAUTHORIZED",
    )
    .await;
    expect_error(
        send(
            &app,
            Method::GET,
            &format!("/usage?org_id={org}"),
            &token,
            None,
        )
        .await,
        401,
        "UNAUTHORIZED",
    )
    .await;
    let tampered = tamper(&token);
    expect_error(
        app.client
            .get(app.url("/api/v1/widget/usage"))
            .bearer_auth(&tampered)
            .send()
            .await
            .unwrap(),
        401,
        "UNAUTHORIZED",
    )
    .await;
    expect_error(
        app.client
            .get(app.url("/api/v1/widget/usage"))
            .send()
            .await
            .unwrap(),
        401,
        "UNAUTHORIZED",
    )
    .await;

    // minting needs usage:write in that org
    let (_, reader) = issue_key(
        &app,
        &owner,
        &org,
        json!({ "name": "k", "scopes": ["usage:read"] }),
    )
    .await;
    let refused = with_key(
        &app,
        Method::POST,
        "/widget/token",
        &reader,
        Some(json!({ "org_id": org })),
    )
    .await;
    expect_error(refused, 403, "INSUFFICIENT_SCOPE").await;
    expect_error(
        send(
            &app,
            Method::POST,
            "/widget/token",
            &owner,
            Some(json!({ "org_id": other_org })),
        )
        .await,
        404,
        "NOT_FOUND",
    )
    .await;

    // the page itself
    let page = app.client.get(app.url("/widget")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    assert!(page.text().await.unwrap().contains("/api/v1/widget/usage"));
    app.stop().await;
}

async fn minutes_roll_up_into_hours_and_days_and_expire(backend: Backend) {
    let app = TestApp::spawn_with(backend, |t| {
        let mut usage = toml::Table::new();
        usage.insert("minute_retention".into(), "1d".into());
        t.insert("usage".into(), toml::Value::Table(usage));
    })
    .await;
    let (owner, org) = app.owner("ada@example.com", "Acme").await;
    let state = app.state().clone();
    let now = fluxgate_server::clock::now();
    let day = now - now.rem_euclid(86_400);
    // counts written three days ago (two minutes of one hour) and two hours ago
    let at = |minute: i64, count: i64| fluxgate_store::CallCount {
        org_id: org.parse().unwrap(),
        key_id: "key_01ARZ3NDEKTSV4RRFFQ69G5FAV".parse().unwrap(),
        endpoint: "/v1/x".into(),
        outcome: "VALID".into(),
        minute,
        count,
    };
    let old_hour = day - 3 * 86_400 + 5 * 3_600;
    let recent = now - now.rem_euclid(3_600) - 2 * 3_600;
    state
        .store
        .add_call_counts(&[at(old_hour, 4), at(old_hour + 60, 6), at(recent, 5)])
        .await
        .unwrap();

    // before any roll-up of those hours (the first ran at start, before they were written)
    let config = app.config.usage.clone();
    state.usage.roll_up(&config, now).await.unwrap();
    let query = |granularity: &str, from: i64| {
        let from = time::OffsetDateTime::from_unix_timestamp(from)
            .unwrap()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap();
        format!("/usage?org_id={org}&granularity={granularity}&from={from}")
    };
    let hours = body(
        send(
            &app,
            Method::GET,
            &query("hour", day - 4 * 86_400),
            &owner,
            None,
        )
        .await,
    )
    .await;
    assert_eq!(
        hours["data"]["total"]["count"], 5,
        "three-day-old minutes are past the 1-day retention; the recent hour is rolled up: {hours}"
    );
    let days = body(
        send(
            &app,
            Method::GET,
            &query("day", day - 4 * 86_400),
            &owner,
            None,
        )
        .await,
    )
    .await;
    assert_eq!(days["data"]["total"]["count"], 5);

    // roll-ups made while the minutes existed survive the minutes' retention
    state
        .store
        .add_call_counts(&[at(old_hour, 4), at(old_hour + 60, 6)])
        .await
        .unwrap();
    let earlier = day - 3 * 86_400 + 6 * 3_600; // "now" three days ago, after that hour
    state.usage.roll_up(&config, earlier).await.unwrap(); // rolls the old hour up (and keeps minutes after earlier - 1d)
    state.usage.roll_up(&config, now).await.unwrap(); // deletes the old minutes, keeps the hour
    let hours = body(
        send(
            &app,
            Method::GET,
            &query("hour", day - 4 * 86_400),
            &owner,
            None,
        )
        .await,
    )
    .await;
    let series = hours["data"]["series"].as_array().unwrap();
    let bucket = time::OffsetDateTime::from_unix_timestamp(old_hour)
        .unwrap()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let point = series
        .iter()
        .find(|p| p["start"] == bucket.as_str())
        .unwrap();
    assert_eq!(point["count"], 10, "{point}");
    let minutes = body(
        send(
            &app,
            Method::GET,
            &format!("/usage?org_id={org}&granularity=minute"),
            &owner,
            None,
        )
        .await,
    )
    .await;
    assert_eq!(
        minutes["data"]["total"]["count"], 5,
        "the last day holds only the recent minute"
    );
    app.stop().await;
}

/// The token with one character of its signature changed.
fn tamper(token: &str) -> String {
    let mut chars: Vec<char> = token.chars().collect();
    let i = chars.len() - 10;
    chars[i] = if chars[i] == 'A' { 'B' } else { 'A' };
    chars.into_iter().collect()
}

/// Two nodes on one PostgreSQL database: the periodic roll-up runs on one of them per period, and
/// two nodes rolling up at the same moment neither conflict nor both do the work.
#[tokio::test]
async fn two_nodes_roll_up_once_per_period() {
    let app = TestApp::spawn(Backend::Postgres).await;
    let node_b = app.second_node().await;
    let retention = app.config.usage.clone();
    let later = fluxgate_server::clock::now() + 3_600; // past the start-up roll-ups' period
    for round in 0..3 {
        let now = later + round * 120;
        let (a, b) = tokio::join!(
            app.state().usage.roll_up_once_per_cluster(&retention, now),
            node_b.state.usage.roll_up_once_per_cluster(&retention, now),
        );
        let (a, b) = (a.unwrap(), b.unwrap());
        assert!(
            a.ran ^ b.ran,
            "round {round}: exactly one node rolls up ({a:?}, {b:?})"
        );
        assert_eq!((a.hours_to, a.days_to), (b.hours_to, b.days_to));
        // and within the period, nobody again
        let again = app
            .state()
            .usage
            .roll_up_once_per_cluster(&retention, now + 30)
            .await
            .unwrap();
        assert!(!again.ran);
    }
    node_b.stop().await.unwrap();
    app.stop().await;
}
