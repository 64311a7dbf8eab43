//! Named limits over real HTTP, on SQLite and PostgreSQL: a key's own (`tokens` by the
//! thousand), its plan's shared by every key of the org, a key's own of a name taking the
//! plan's place, names no limit has, the refusal naming the limit that refused, and input
//! checked naming the field.

use fluxgate_testkit::{
    body, expect_error, issue_key, operator_with_verifier, send, set_config, with_key, Backend,
    TestApp,
};
use reqwest::Method;
use serde_json::{json, Value};

both_backends!(
    a_keys_named_limits_are_spent_by_name_and_cost,
    a_plans_named_limit_is_shared_by_the_orgs_keys,
    named_limits_are_checked_and_replaced,
);

async fn spawn(backend: Backend) -> TestApp {
    TestApp::spawn_with(backend, |config| {
        let plans: toml::Table = r#"
[[plans]]
name = "free"
rate_limit = "1000/min"
entitlements = []
quotas = {}

[[plans]]
name = "metered"
rate_limit = "1000/min"
entitlements = []
quotas = {}
ratelimits = { exports = "3/hour" }
"#
        .parse()
        .unwrap();
        for (k, v) in plans {
            config.insert(k, v);
        }
        set_config(config, "rate_limits.api_key", "1000/min");
    })
    .await
}

async fn verify(app: &TestApp, verifier: &str, key: &str, spends: Value) -> Value {
    let response = with_key(
        app,
        Method::POST,
        "/keys/verify",
        verifier,
        Some(json!({ "key": key, "ratelimits": spends })),
    )
    .await;
    assert_eq!(response.status(), 200);
    body(response).await["data"].clone()
}

async fn a_keys_named_limits_are_spent_by_name_and_cost(backend: Backend) {
    let app = spawn(backend).await;
    let (_, verifier) = operator_with_verifier(&app).await;
    let (token, org) = app.owner("nl@example.com", "Tokens Co").await;
    let (_, key) = issue_key(
        &app,
        &token,
        &org,
        json!({ "name": "llm", "scopes": [], "ratelimits": [
            { "name": "tokens", "limit": 5000, "window_seconds": 3600 },
            { "name": "images", "limit": 1, "window_seconds": 3600 } ] }),
    )
    .await;

    let first = verify(
        &app,
        &verifier,
        &key,
        json!([{ "name": "tokens", "cost": 1200 }]),
    )
    .await;
    assert_eq!(first["code"], "VALID");
    let tokens = &first["ratelimits"][0];
    assert_eq!(
        (
            &tokens["name"],
            &tokens["scope"],
            &tokens["limit"],
            &tokens["remaining"]
        ),
        (&json!("tokens"), &json!("key"), &json!(5000), &json!(3800))
    );
    assert!(tokens["reset"].as_u64().unwrap() > 1_700_000_000);
    for left in [2600, 1400, 200] {
        let answer = verify(
            &app,
            &verifier,
            &key,
            json!([{ "name": "tokens", "cost": 1200 }]),
        )
        .await;
        assert_eq!(answer["ratelimits"][0]["remaining"], left);
    }
    let refused = verify(
        &app,
        &verifier,
        &key,
        json!([{ "name": "tokens", "cost": 1200 }]),
    )
    .await;
    assert_eq!(refused["code"], "RATE_LIMITED");
    assert_eq!(refused["valid"], false);
    assert_eq!(refused["rate_limited_by"], "tokens");
    assert_eq!(refused["ratelimits"][0]["remaining"], 200, "nothing taken");
    // what is left still passes; a name no limit has does not limit, and says so
    let small = verify(
        &app,
        &verifier,
        &key,
        json!([{ "name": "tokens", "cost": 200 }, { "name": "audio", "cost": 9999 }]),
    )
    .await;
    assert_eq!(small["code"], "VALID");
    assert_eq!(
        small["ratelimits"][1],
        json!({ "name": "audio", "scope": null, "limit": null, "remaining": null, "reset": null })
    );
    // the first limit that refuses is named; the ones before it were spent
    let second = verify(
        &app,
        &verifier,
        &key,
        json!([{ "name": "images" }, { "name": "tokens", "cost": 1 }]),
    )
    .await;
    assert_eq!(second["rate_limited_by"], "tokens");
    assert_eq!(second["ratelimits"][0]["remaining"], 0);
    let images = verify(&app, &verifier, &key, json!([{ "name": "images" }])).await;
    assert_eq!(images["rate_limited_by"], "images");

    // without named limits in the request the answer is as it always was
    let plain = verify(&app, &verifier, &key, json!([])).await;
    assert_eq!(plain["code"], "VALID");
    assert!(plain.get("ratelimits").is_none() && plain.get("rate_limited_by").is_none());
}

async fn a_plans_named_limit_is_shared_by_the_orgs_keys(backend: Backend) {
    let app = spawn(backend).await;
    let (ops, verifier) = operator_with_verifier(&app).await;
    let (token, org) = app.owner("shared@example.com", "Shared Co").await;
    let moved = send(
        &app,
        Method::PUT,
        &format!("/admin/orgs/{org}/plan"),
        &ops,
        Some(json!({ "plan": "metered" })),
    )
    .await;
    assert_eq!(moved.status(), 200);
    let (_, a) = issue_key(&app, &token, &org, json!({ "name": "a", "scopes": [] })).await;
    let (_, b) = issue_key(&app, &token, &org, json!({ "name": "b", "scopes": [] })).await;
    let (_, own) = issue_key(
        &app,
        &token,
        &org,
        json!({ "name": "own", "scopes": [], "ratelimits": [
            { "name": "exports", "limit": 10, "window_seconds": 3600 } ] }),
    )
    .await;
    let export = json!([{ "name": "exports" }]);
    let mut codes = Vec::new();
    for key in [&a, &b, &a, &b] {
        let answer = verify(&app, &verifier, key, export.clone()).await;
        assert_eq!(answer["ratelimits"][0]["scope"], "org");
        codes.push(answer["code"].as_str().unwrap().to_owned());
    }
    assert_eq!(
        codes,
        ["VALID", "VALID", "VALID", "RATE_LIMITED"],
        "three an hour, for the org"
    );
    // a key's own limit of that name takes the plan's place
    let answer = verify(&app, &verifier, &own, export.clone()).await;
    assert_eq!(answer["code"], "VALID");
    assert_eq!(answer["ratelimits"][0]["scope"], "key");
    assert_eq!(answer["ratelimits"][0]["remaining"], 9);
}

async fn named_limits_are_checked_and_replaced(backend: Backend) {
    let app = spawn(backend).await;
    let (_, verifier) = operator_with_verifier(&app).await;
    let (token, org) = app.owner("check@example.com", "Check Co").await;
    let create = |limits: Value| {
        let (app, token, org) = (&app, &token, &org);
        async move {
            send(
                app,
                Method::POST,
                &format!("/orgs/{org}/keys"),
                token,
                Some(json!({ "name": "k", "scopes": [], "ratelimits": limits })),
            )
            .await
        }
    };
    for (limits, field) in [
        (
            json!([{ "name": "Tokens", "limit": 1, "window_seconds": 60 }]),
            "ratelimits[0].name",
        ),
        (
            json!([{ "name": "t", "limit": 0, "window_seconds": 60 }]),
            "ratelimits[0].limit",
        ),
        (
            json!([{ "name": "t", "limit": 1, "window_seconds": 0 }]),
            "ratelimits[0].window_seconds",
        ),
        (
            json!([{ "name": "t", "limit": 1, "window_seconds": 60 }, { "name": "t", "limit": 2, "window_seconds": 60 }]),
            "ratelimits[1].name",
        ),
    ] {
        let refused = expect_error(create(limits.clone()).await, 422, "VALIDATION_FAILED").await;
        assert!(
            refused["fields"].get(field).is_some(),
            "{limits}: {refused}"
        );
    }
    let eleven: Vec<Value> = (0..11)
        .map(|i| json!({ "name": format!("l{i}"), "limit": 1, "window_seconds": 60 }))
        .collect();
    let refused = expect_error(create(json!(eleven)).await, 422, "VALIDATION_FAILED").await;
    assert!(refused["fields"].get("ratelimits").is_some());

    let (key_id, key) = issue_key(
        &app,
        &token,
        &org,
        json!({ "name": "k", "scopes": [], "ratelimits": [{ "name": "t", "limit": 1, "window_seconds": 60 }] }),
    )
    .await;
    // verify's own input is checked too
    for (spends, field) in [
        (json!([{ "name": "no spaces" }]), "ratelimits[0].name"),
        (
            json!([{ "name": "t", "cost": 10_001 }]),
            "ratelimits[0].cost",
        ),
    ] {
        let response = with_key(
            &app,
            Method::POST,
            "/keys/verify",
            &verifier,
            Some(json!({ "key": key, "ratelimits": spends })),
        )
        .await;
        let refused = expect_error(response, 422, "VALIDATION_FAILED").await;
        assert!(refused["fields"].get(field).is_some(), "{refused}");
    }

    // replaced as a whole by PATCH, on the next verify
    let path = format!("/orgs/{org}/keys/{key_id}");
    let replaced = send(
        &app,
        Method::PATCH,
        &path,
        &token,
        Some(json!({ "ratelimits": [{ "name": "t", "limit": 100, "window_seconds": 60 }] })),
    )
    .await;
    assert_eq!(body(replaced).await["data"]["ratelimits"][0]["limit"], 100);
    let answer = verify(&app, &verifier, &key, json!([{ "name": "t", "cost": 50 }])).await;
    assert_eq!(answer["ratelimits"][0]["remaining"], 50);
    let removed = send(
        &app,
        Method::PATCH,
        &path,
        &token,
        Some(json!({ "ratelimits": [] })),
    )
    .await;
    assert_eq!(body(removed).await["data"]["ratelimits"], json!([]));
    let answer = verify(
        &app,
        &verifier,
        &key,
        json!([{ "name": "t", "cost": 9999 }]),
    )
    .await;
    assert_eq!(answer["code"], "VALID");
    assert_eq!(answer["ratelimits"][0]["scope"], Value::Null);
}
