//! Numbers from requests are range-checked before any arithmetic: arbitrary `cost`,
//! `cached_calls` and rate-limit values sent to the real server never answer 500, never wrap,
//! and never buy a `VALID` that was not paid for — on SQLite and PostgreSQL.

use fluxgate_testkit::{body, issue_key, operator_with_verifier, send, with_key, Backend, TestApp};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config as ProptestConfig, TestRunner};
use reqwest::Method;
use serde_json::{json, Value};

both_backends!(
    overflowing_cached_calls_are_refused_by_name,
    arbitrary_costs_and_limits_never_wrap_or_go_unpaid,
);

async fn verify(app: &TestApp, root: &str, body: Value) -> (u16, Value) {
    let response = with_key(app, Method::POST, "/keys/verify", root, Some(body)).await;
    let status = response.status().as_u16();
    (status, fluxgate_testkit::body(response).await)
}

/// The report's case: a sum that wraps in a release build answered `VALID` before.
async fn overflowing_cached_calls_are_refused_by_name(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (_, root) = operator_with_verifier(&app).await;
    let (owner, org) = app.owner("ada@example.com", "Acme").await;
    let (_, key) = issue_key(&app, &owner, &org, json!({ "name": "k", "scopes": [] })).await;
    let (status, answer) = verify(
        &app,
        &root,
        json!({ "key": key, "cost": 1,
                "cached_calls": { "/a": u64::MAX, "/b": 1 } }),
    )
    .await;
    assert_eq!(status, 422, "{answer}");
    assert_eq!(answer["error"]["code"], "VALIDATION_FAILED");
    assert!(
        answer["error"]["fields"]["cached_calls"].is_string(),
        "{answer}"
    );
    let (status, answer) = verify(&app, &root, json!({ "key": key, "cost": u64::MAX })).await;
    assert_eq!(status, 422, "{answer}");
    assert!(answer["error"]["fields"]["cost"].is_string());
    app.stop().await;
}

#[derive(Debug, Clone)]
struct Case {
    cost: Option<u64>,
    cached: Vec<u64>,
    limit: u64,
    window: u64,
}

fn number() -> impl Strategy<Value = u64> {
    prop_oneof![
        any::<u64>(),
        0u64..20_000,
        Just(u64::MAX),
        Just(u64::MAX / 2 + 1),
        Just(i64::MAX as u64),
        Just(i64::MAX as u64 + 1),
    ]
}

fn case() -> impl Strategy<Value = Case> {
    (
        prop::option::of(number()),
        prop::collection::vec(number(), 0..4),
        number(),
        number(),
    )
        .prop_map(|(cost, cached, limit, window)| Case {
            cost,
            cached,
            limit,
            window,
        })
}

/// Each case makes a key with an arbitrary rate limit (accepted or refused by field, never a
/// 500), then verifies with an arbitrary cost and cached calls: a `VALID` answer means the
/// call and every cached call fit in `cost`, all within bounds.
async fn arbitrary_costs_and_limits_never_wrap_or_go_unpaid(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (_, root) = operator_with_verifier(&app).await;
    let (owner, org) = app.owner("ada@example.com", "Acme").await;
    let mut runner = TestRunner::new(ProptestConfig {
        cases: 40,
        ..ProptestConfig::default()
    });
    let mut cases = Vec::new();
    for _ in 0..40 {
        cases.push(case().new_tree(&mut runner).unwrap().current());
    }
    for (i, c) in cases.into_iter().enumerate() {
        let created = send(
            &app,
            Method::POST,
            &format!("/orgs/{org}/keys"),
            &owner,
            Some(json!({ "name": format!("k{i}"), "scopes": [],
                         "rate_limit": { "limit": c.limit, "window_seconds": c.window } })),
        )
        .await;
        let status = created.status().as_u16();
        let created = body(created).await;
        let limit_ok =
            (1..=1_000_000_000).contains(&c.limit) && (1..=2_678_400).contains(&c.window);
        let key = if limit_ok {
            assert_eq!(status, 201, "{c:?}: {created}");
            created["data"]["key"].as_str().unwrap().to_owned()
        } else {
            assert_eq!(status, 422, "{c:?}: {created}");
            let fields = &created["error"]["fields"];
            assert!(
                fields["rate_limit.limit"].is_string()
                    || fields["rate_limit.window_seconds"].is_string(),
                "{c:?}: {created}"
            );
            issue_key(
                &app,
                &owner,
                &org,
                json!({ "name": format!("k{i}"), "scopes": [] }),
            )
            .await
            .1
        };
        let cached: serde_json::Map<String, Value> = c
            .cached
            .iter()
            .enumerate()
            .map(|(j, n)| (format!("/e{j}"), json!(n)))
            .collect();
        let mut request = json!({ "key": key, "cached_calls": cached });
        if let Some(cost) = c.cost {
            request["cost"] = json!(cost);
        }
        let (status, answer) = verify(&app, &root, request).await;
        assert!(status == 200 || status == 422, "{c:?}: {status} {answer}");
        if status == 422 {
            let fields = answer["error"]["fields"].as_object().unwrap();
            assert!(
                fields.contains_key("cost") || fields.contains_key("cached_calls"),
                "{c:?}: {answer}"
            );
            continue;
        }
        let data = &answer["data"];
        if data["valid"] == true {
            let cost = u128::from(c.cost.unwrap_or(1));
            let owed: u128 = c.cached.iter().map(|&n| u128::from(n)).sum();
            assert!(cost <= 10_000, "{c:?}: {answer}");
            assert!(owed == 0 || owed < cost, "unpaid VALID: {c:?}: {answer}");
            let limit = data["ratelimit"]["limit"].as_u64().unwrap();
            let remaining = data["ratelimit"]["remaining"].as_u64().unwrap();
            assert!(remaining <= limit, "{c:?}: {answer}");
        }
    }
    app.stop().await;
}
