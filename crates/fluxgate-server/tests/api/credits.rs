//! Usage credits over real HTTP, on SQLite and PostgreSQL: each verify spends its cost, at zero
//! verify answers `USAGE_EXCEEDED` with the credits in its context; refills are computed on read
//! (no timer); `PATCH` sets, tops up, re-plans or drops them; input is checked naming the field;
//! and two nodes hammering one key never spend more credits than it had — counted in the
//! database, or in Redis when it is configured (and then written back to the database).

use fluxgate_testkit::redis::RedisServer;
use fluxgate_testkit::{
    body, expect_error, issue_key, operator_with_verifier, send, with_key, Backend, TestApp,
};
use reqwest::Method;
use serde_json::{json, Value};

both_backends!(
    each_verify_spends_its_cost_until_usage_is_exceeded,
    credits_are_refilled_on_time_without_a_timer,
    credits_are_set_topped_up_and_dropped_and_checked,
    two_nodes_never_spend_more_credits_than_a_key_has,
    with_redis_credits_are_counted_there_exactly_and_reach_the_database,
);

/// A user with an org, and the operator's verifier key; (user token, org id, verifier).
async fn owner_and_verifier(app: &TestApp) -> (String, String, String) {
    let (token, org) = app.owner("cy@example.com", "Credits Co").await;
    let (_, verifier) = operator_with_verifier(app).await;
    (token, org, verifier)
}

/// The key as `GET /orgs/{org}/keys/{key_id}` shows it.
async fn key_shown(app: &TestApp, token: &str, org: &str, key_id: &str) -> Value {
    let path = format!("/orgs/{org}/keys/{key_id}");
    body(send(app, Method::GET, &path, token, None).await).await
}

async fn verify(app: &TestApp, verifier: &str, key: &str, cost: u64) -> Value {
    let response = with_key(
        app,
        Method::POST,
        "/keys/verify",
        verifier,
        Some(json!({ "key": key, "cost": cost })),
    )
    .await;
    assert_eq!(response.status(), 200);
    body(response).await["data"].clone()
}

async fn each_verify_spends_its_cost_until_usage_is_exceeded(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (token, org, verifier) = owner_and_verifier(&app).await;
    let (key_id, key) = issue_key(
        &app,
        &token,
        &org,
        json!({ "name": "metered", "scopes": [], "credits": { "remaining": 5 } }),
    )
    .await;

    let first = verify(&app, &verifier, &key, 1).await;
    assert_eq!(first["code"], "VALID");
    assert_eq!(
        first["credits"],
        json!({ "remaining": 4, "refill": null, "refills_at": null })
    );
    assert_eq!(
        verify(&app, &verifier, &key, 3).await["credits"]["remaining"],
        1
    );
    // a call costing more than is left spends nothing
    let short = verify(&app, &verifier, &key, 2).await;
    assert_eq!(short["code"], "USAGE_EXCEEDED");
    assert_eq!(short["valid"], false);
    assert_eq!(short["credits"]["remaining"], 1);
    assert_eq!(
        short["key_id"],
        key_id.as_str(),
        "the context is still there"
    );
    assert_eq!(
        verify(&app, &verifier, &key, 1).await["credits"]["remaining"],
        0
    );
    let out = verify(&app, &verifier, &key, 1).await;
    assert_eq!(out["code"], "USAGE_EXCEEDED");
    assert_eq!(out["credits"]["remaining"], 0);

    // the key's page shows the same
    let shown = key_shown(&app, &token, &org, &key_id).await;
    assert_eq!(shown["data"]["credits"]["remaining"], 0);

    // a key without credits says nothing of them
    let (_, free) = issue_key(&app, &token, &org, json!({ "name": "free", "scopes": [] })).await;
    let answer = verify(&app, &verifier, &free, 1).await;
    assert_eq!(answer["code"], "VALID");
    assert!(answer.get("credits").is_none(), "{answer}");
}

async fn credits_are_refilled_on_time_without_a_timer(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (token, org, verifier) = owner_and_verifier(&app).await;
    let (key_id, key) = issue_key(
        &app,
        &token,
        &org,
        json!({ "name": "daily", "scopes": [], "credits": {
            "remaining": 1, "refill": { "amount": 10, "interval": "daily" } } }),
    )
    .await;
    let spent = verify(&app, &verifier, &key, 1).await;
    assert_eq!(spent["credits"]["remaining"], 0);
    assert_eq!(
        spent["credits"]["refill"],
        json!({ "amount": 10, "interval": "daily" })
    );
    let refills_at = spent["credits"]["refills_at"].as_str().unwrap().to_owned();
    assert!(refills_at.ends_with("T00:00:00Z"), "{refills_at}");
    assert_eq!(
        verify(&app, &verifier, &key, 1).await["code"],
        "USAGE_EXCEEDED"
    );

    // a day goes by (the count's period moved back a day): the next read is a full refill
    app.sql(&format!(
        "UPDATE api_keys SET credits_refilled_at = credits_refilled_at - 86400 WHERE id = '{key_id}'"
    ))
    .await;
    let path = format!("/orgs/{org}/keys/{key_id}");
    let shown = body(send(&app, Method::GET, &path, &token, None).await).await;
    assert_eq!(
        shown["data"]["credits"]["remaining"], 10,
        "refilled on read"
    );
    let after = verify(&app, &verifier, &key, 3).await;
    assert_eq!(after["code"], "VALID");
    assert_eq!(
        after["credits"]["remaining"], 7,
        "refilled to 10, then 3 spent"
    );
    // and only once per period
    assert_eq!(
        verify(&app, &verifier, &key, 1).await["credits"]["remaining"],
        6
    );

    // monthly on a day of the month
    let (_, monthly) = issue_key(
        &app,
        &token,
        &org,
        json!({ "name": "monthly", "scopes": [], "credits": {
            "remaining": 100, "refill": { "amount": 100, "interval": "monthly", "day_of_month": 31 } } }),
    )
    .await;
    let answer = verify(&app, &verifier, &monthly, 1).await;
    assert_eq!(answer["credits"]["refill"]["day_of_month"], 31);
    assert!(answer["credits"]["refills_at"]
        .as_str()
        .unwrap()
        .ends_with("T00:00:00Z"));
}

async fn credits_are_set_topped_up_and_dropped_and_checked(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (token, org, verifier) = owner_and_verifier(&app).await;
    let (key_id, key) =
        issue_key(&app, &token, &org, json!({ "name": "plain", "scopes": [] })).await;
    let path = format!("/orgs/{org}/keys/{key_id}");
    let patch = |body: Value| {
        let (app, token, path) = (&app, &token, &path);
        async move { send(app, Method::PATCH, path, token, Some(body)).await }
    };

    // a key without credits must be given a count to start with
    expect_error(
        patch(json!({ "credits": { "add": 5 } })).await,
        422,
        "VALIDATION_FAILED",
    )
    .await;
    let started = body(patch(json!({ "credits": { "remaining": 2 } })).await).await;
    assert_eq!(started["data"]["credits"]["remaining"], 2);
    assert_eq!(
        verify(&app, &verifier, &key, 2).await["credits"]["remaining"],
        0
    );
    assert_eq!(
        verify(&app, &verifier, &key, 1).await["code"],
        "USAGE_EXCEEDED"
    );

    // topped up: takes effect on the next verify, on every node
    let topped = body(patch(json!({ "credits": { "add": 5 } })).await).await;
    assert_eq!(topped["data"]["credits"]["remaining"], 5);
    assert_eq!(
        verify(&app, &verifier, &key, 1).await["credits"]["remaining"],
        4
    );
    let set = body(patch(json!({ "credits": { "remaining": 1, "refill": { "amount": 3, "interval": "monthly" } } })).await).await;
    assert_eq!(set["data"]["credits"]["remaining"], 1);
    assert_eq!(
        set["data"]["credits"]["refill"],
        json!({ "amount": 3, "interval": "monthly", "day_of_month": 1 })
    );

    // wrong input names its field and changes nothing
    for (bad, field) in [
        (
            json!({ "credits": { "remaining": 1, "add": 1 } }),
            "credits.add",
        ),
        (
            json!({ "credits": { "refill": { "amount": 3, "interval": "weekly" } } }),
            "credits.refill.interval",
        ),
        (
            json!({ "credits": { "refill": { "amount": 3, "interval": "monthly", "day_of_month": 32 } } }),
            "credits.refill.day_of_month",
        ),
        (
            json!({ "credits": { "remaining": 1_000_000_000_001u64 } }),
            "credits.remaining",
        ),
        (
            json!({ "credits": { "add": 1_000_000_000_001u64 } }),
            "credits.add",
        ),
    ] {
        let refused = expect_error(patch(bad.clone()).await, 422, "VALIDATION_FAILED").await;
        assert!(refused["fields"].get(field).is_some(), "{bad}: {refused}");
    }
    let negative = patch(json!({ "credits": { "remaining": -1 } })).await;
    assert_eq!(
        negative.status(),
        422,
        "a negative count is not a number of credits"
    );
    let unchanged = body(send(&app, Method::GET, &path, &token, None).await).await;
    assert_eq!(unchanged["data"]["credits"]["remaining"], 1);

    // dropped: the key is no longer limited by credits
    let dropped = body(patch(json!({ "credits": null })).await).await;
    assert_eq!(dropped["data"]["credits"], Value::Null);
    for _ in 0..3 {
        let answer = verify(&app, &verifier, &key, 1).await;
        assert_eq!(answer["code"], "VALID");
        assert!(answer.get("credits").is_none());
    }

    // creation checks them too
    let refused = send(
        &app,
        Method::POST,
        &format!("/orgs/{org}/keys"),
        &token,
        Some(json!({ "name": "bad", "scopes": [], "credits": { "remaining": 1, "refill": { "amount": 1, "interval": "hourly" } } })),
    )
    .await;
    let refused = expect_error(refused, 422, "VALIDATION_FAILED").await;
    assert!(
        refused["fields"].get("credits.refill.interval").is_some(),
        "{refused}"
    );

    // the changes are audited with what moved
    let audit = body(
        send(
            &app,
            Method::GET,
            &format!("/orgs/{org}/audit-log?action=key.updated"),
            &token,
            None,
        )
        .await,
    )
    .await;
    let moves: Vec<String> = audit["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["data"]["credits"].to_string())
        .collect();
    for needle in [r#"{"set":2}"#, r#"{"added":5}"#, r#""removed""#] {
        assert!(moves.iter().any(|m| m == needle), "{needle} in {moves:?}");
    }
}

/// 1,000 verifies at once on a 100-credit key, spread over two nodes of one instance: exactly
/// 100 are `VALID`.
async fn two_nodes_never_spend_more_credits_than_a_key_has(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (token, org, verifier) = owner_and_verifier(&app).await;
    let key_id = hammer_a_hundred_credit_key(&app, &token, &org, &verifier).await;
    let shown = key_shown(&app, &token, &org, &key_id).await;
    assert_eq!(shown["data"]["credits"]["remaining"], 0);
}

/// Issues a 100-credit key and verifies it 1,000 times at once over two nodes: exactly 100
/// `VALID`, 900 `USAGE_EXCEEDED`. The key's id.
async fn hammer_a_hundred_credit_key(
    app: &TestApp,
    token: &str,
    org: &str,
    verifier: &str,
) -> String {
    let (key_id, key) = issue_key(
        app,
        token,
        org,
        json!({ "name": "hot", "scopes": [], "credits": { "remaining": 100 },
                "rate_limit": { "limit": 1000000, "window_seconds": 60 } }),
    )
    .await;
    let node_b = app.second_node().await;
    let bases = [app.url(""), format!("http://{}", node_b.addr)];
    let client = reqwest::Client::new();
    let calls = (0..1000).map(|i| {
        let (client, base, key) = (&client, &bases[i % 2], &key);
        async move {
            let verdict = fluxgate_testkit::verify_at(client, base, verifier, key).await;
            verdict["code"].as_str().unwrap().to_owned()
        }
    });
    let codes = futures_util::future::join_all(calls).await;
    let valid = codes.iter().filter(|c| *c == "VALID").count();
    let exceeded = codes.iter().filter(|c| *c == "USAGE_EXCEEDED").count();
    assert_eq!((valid, exceeded), (100, 900), "{codes:?}");
    node_b.stop().await.unwrap();
    key_id
}

/// With Redis configured, credits are spent there: exact over two nodes, shown live, topped up
/// and set there; Redis restarted empty loses nothing written back to the database (within a
/// second); Redis down refuses credit keys with 503 (never an unchecked spend) and not others.
async fn with_redis_credits_are_counted_there_exactly_and_reach_the_database(backend: Backend) {
    let mut redis = RedisServer::start().await;
    let redis_url = redis.url();
    let app = TestApp::spawn_with(backend, |t| {
        t.insert("redis_url".into(), redis_url.into());
    })
    .await;
    let (token, org, verifier) = owner_and_verifier(&app).await;
    let key_id = hammer_a_hundred_credit_key(&app, &token, &org, &verifier).await;
    let shown = key_shown(&app, &token, &org, &key_id).await;
    assert_eq!(shown["data"]["credits"]["remaining"], 0);

    let (other_id, key) = issue_key(
        &app,
        &token,
        &org,
        json!({ "name": "metered", "scopes": [], "credits": { "remaining": 10 } }),
    )
    .await;
    let path = format!("/orgs/{org}/keys/{other_id}");
    let change = |credits: Value| json!({ "credits": credits });
    assert_eq!(
        verify(&app, &verifier, &key, 4).await["credits"]["remaining"],
        6
    );
    let added = send(
        &app,
        Method::PATCH,
        &path,
        &token,
        Some(change(json!({ "add": 5 }))),
    )
    .await;
    assert_eq!(added.status(), 200);
    assert_eq!(body(added).await["data"]["credits"]["remaining"], 11);
    assert_eq!(verify(&app, &verifier, &key, 11).await["code"], "VALID");
    assert_eq!(
        verify(&app, &verifier, &key, 1).await["code"],
        "USAGE_EXCEEDED"
    );
    let set = send(
        &app,
        Method::PATCH,
        &path,
        &token,
        Some(change(json!({ "remaining": 9 }))),
    )
    .await;
    assert_eq!(body(set).await["data"]["credits"]["remaining"], 9);
    assert_eq!(
        verify(&app, &verifier, &key, 2).await["credits"]["remaining"],
        7
    );

    // the counts reach the database within a second: Redis restarted empty goes on from them
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    redis.stop();
    let refused = with_key(
        &app,
        Method::POST,
        "/keys/verify",
        &verifier,
        Some(json!({ "key": key })),
    )
    .await;
    expect_error(refused, 503, "UNAVAILABLE").await;
    redis.restart().await;
    let mut answered = Value::Null;
    for _ in 0..40 {
        let response = with_key(
            &app,
            Method::POST,
            "/keys/verify",
            &verifier,
            Some(json!({ "key": key, "cost": 7 })),
        )
        .await;
        if response.status() == 200 {
            answered = body(response).await["data"].clone();
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    assert_eq!(answered["code"], "VALID", "{answered}");
    assert_eq!(answered["credits"]["remaining"], 0);
    assert_eq!(
        verify(&app, &verifier, &key, 1).await["code"],
        "USAGE_EXCEEDED"
    );
    let shown = key_shown(&app, &token, &org, &key_id).await;
    assert_eq!(
        shown["data"]["credits"]["remaining"], 0,
        "the hot key's count survived"
    );

    // credits removed: the key verifies without them, on a count Redis no longer holds
    let dropped = send(
        &app,
        Method::PATCH,
        &path,
        &token,
        Some(json!({ "credits": null })),
    )
    .await;
    assert_eq!(dropped.status(), 200);
    let free = verify(&app, &verifier, &key, 1).await;
    assert_eq!(free["code"], "VALID");
    assert!(free["credits"].is_null(), "{free}");
}
