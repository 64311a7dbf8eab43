//! Flag-aware entitlements over real HTTP, on SQLite and PostgreSQL: the operator's per-org
//! overrides (a trial that ends while the key is warm, a deny over the plan), feature flags
//! with targeting (a 30 % rollout over 1,000 orgs that two nodes agree on, variants, the kill
//! switch reaching both nodes within a second), `GET /orgs/{id}/entitlements` with sources,
//! and who may change any of it.

use fluxgate_testkit::{
    body, expect_error, free_and_pro_plans, issue_key, operator_with_verifier, send, verify_at,
    with_key, Backend, TestApp,
};
use reqwest::Method;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

both_backends!(
    a_trial_override_ends_while_the_key_is_warm_and_a_deny_beats_the_plan,
    a_rollout_lands_on_its_share_of_orgs_and_two_nodes_agree,
    the_kill_switch_reaches_both_nodes_within_a_second,
    only_operators_with_the_permission_change_flags_and_overrides,
);

/// The operator puts `org` on the `pro` plan (entitlement `sso`).
async fn put_on_pro(app: &TestApp, ops: &str, org: &str) {
    let path = format!("/admin/orgs/{org}/plan");
    let moved = send(app, Method::PUT, &path, ops, Some(json!({ "plan": "pro" }))).await;
    assert_eq!(moved.status(), 200);
}

fn names(verdict: &Value) -> Vec<String> {
    verdict["entitlements"]
        .as_array()
        .unwrap_or(&Vec::new())
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect()
}

/// An RFC 3339 time `seconds` from now.
fn in_seconds(seconds: u64) -> String {
    let at = std::time::SystemTime::now() + Duration::from_secs(seconds);
    let secs = at.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    time::OffsetDateTime::from_unix_timestamp(secs as i64)
        .unwrap()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

async fn a_trial_override_ends_while_the_key_is_warm_and_a_deny_beats_the_plan(backend: Backend) {
    let app = TestApp::spawn_with(backend, free_and_pro_plans).await;
    let (owner, org) = app.owner("tia@example.com", "Trial Co").await;
    let (ops, verifier) = operator_with_verifier(&app).await;
    let (_, key) = issue_key(&app, &owner, &org, json!({ "name": "k", "scopes": [] })).await;
    let client = reqwest::Client::new();
    let base = app.url("");
    assert_eq!(
        names(&verify_at(&client, &base, &verifier, &key).await),
        Vec::<String>::new()
    );

    // a three-second trial of bulk_export
    let trial = send(
        &app,
        Method::PUT,
        &format!("/admin/orgs/{org}/entitlements/bulk_export"),
        &ops,
        Some(json!({ "effect": "grant", "expires_at": in_seconds(3), "note": "trial for Q1" })),
    )
    .await;
    assert_eq!(trial.status(), 200);
    let trial = body(trial).await["data"].clone();
    assert_eq!(
        (trial["effect"].as_str(), trial["active"].as_bool()),
        (Some("grant"), Some(true))
    );
    let during = verify_at(&client, &base, &verifier, &key).await;
    assert_eq!(names(&during), ["bulk_export"]);
    let shown = body(
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
    assert_eq!(shown["data"]["entitlements"], json!(["bulk_export"]));
    assert_eq!(shown["data"]["sources"][0]["source"], "override");
    assert_eq!(shown["data"]["sources"][0]["until"], trial["expires_at"]);
    assert_eq!(shown["data"]["overrides"][0]["note"], "trial for Q1");

    // the key stays warm; the trial ends by itself
    let deadline = Instant::now() + Duration::from_secs(6);
    loop {
        let now = verify_at(&client, &base, &verifier, &key).await;
        if names(&now).is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "the trial never ended: {now}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let shown = body(
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
    assert_eq!(shown["data"]["entitlements"], json!([]));
    assert_eq!(shown["data"]["overrides"][0]["active"], false);

    // a deny takes a plan's entitlement away; removing it gives it back
    put_on_pro(&app, &ops, &org).await;
    assert_eq!(
        names(&verify_at(&client, &base, &verifier, &key).await),
        ["sso"]
    );
    let deny = format!("/admin/orgs/{org}/entitlements/sso");
    let denied = send(
        &app,
        Method::PUT,
        &deny,
        &ops,
        Some(json!({ "effect": "deny" })),
    )
    .await;
    assert_eq!(denied.status(), 200);
    assert_eq!(
        names(&verify_at(&client, &base, &verifier, &key).await),
        Vec::<String>::new()
    );
    assert_eq!(
        send(&app, Method::DELETE, &deny, &ops, None).await.status(),
        204
    );
    assert_eq!(
        names(&verify_at(&client, &base, &verifier, &key).await),
        ["sso"]
    );
    expect_error(
        send(&app, Method::DELETE, &deny, &ops, None).await,
        404,
        "NOT_FOUND",
    )
    .await;

    // audited, with what was decided
    let log = body(
        send(
            &app,
            Method::GET,
            &format!("/orgs/{org}/audit-log"),
            &owner,
            None,
        )
        .await,
    )
    .await;
    let actions: Vec<&str> = log["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["action"].as_str())
        .collect();
    for action in [
        "org.entitlement_overridden",
        "org.entitlement_override_removed",
    ] {
        assert!(actions.contains(&action), "{action} in {actions:?}");
    }

    // checked input, naming the field
    for (input, field) in [
        (json!({ "effect": "maybe" }), "effect"),
        (
            json!({ "effect": "grant", "expires_at": "2001-01-01T00:00:00Z" }),
            "expires_at",
        ),
        (json!({ "effect": "grant", "note": "two\nlines" }), "note"),
    ] {
        let refused = send(&app, Method::PUT, &deny, &ops, Some(input)).await;
        let error = expect_error(refused, 422, "VALIDATION_FAILED").await;
        assert!(error.to_string().contains(field), "{field}: {error}");
    }
    let bad_name = format!("/admin/orgs/{org}/entitlements/Not%20A%20Name");
    let refused = send(
        &app,
        Method::PUT,
        &bad_name,
        &ops,
        Some(json!({ "effect": "grant" })),
    )
    .await;
    expect_error(refused, 422, "VALIDATION_FAILED").await;
}

async fn a_rollout_lands_on_its_share_of_orgs_and_two_nodes_agree(backend: Backend) {
    let app = TestApp::spawn_with(backend, free_and_pro_plans).await;
    let (owner, _) = app.owner("roll@example.com", "Roll 0").await;
    let (ops, verifier) = operator_with_verifier(&app).await;
    let client = reqwest::Client::new();
    // 1,000 orgs (the owner's first, then 999 more)
    let me = body(send(&app, Method::GET, "/orgs", &owner, None).await).await;
    let mut orgs: Vec<String> = vec![me["data"][0]["id"].as_str().unwrap().to_owned()];
    // twenty at a time: a thousand writes at once would only measure the pool's wait
    let numbers: Vec<usize> = (1..1000).collect();
    for chunk in numbers.chunks(20) {
        let created = futures_util::future::join_all(chunk.iter().map(|i| {
            let (app, owner) = (&app, &owner);
            async move {
                let name = format!("Roll {i}");
                let response = send(
                    app,
                    Method::POST,
                    "/orgs",
                    owner,
                    Some(json!({ "name": name })),
                )
                .await;
                assert_eq!(response.status(), 201);
                body(response).await["data"]["id"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            }
        }))
        .await;
        orgs.extend(created);
    }

    let defined = send(
        &app,
        Method::PUT,
        "/admin/flags/new_billing",
        &ops,
        Some(
            json!({ "rollout_percent": 30, "variant": "v2", "default_variant": "v1",
                     "description": "the new billing page" }),
        ),
    )
    .await;
    assert_eq!(defined.status(), 201);
    let node_b = app.second_node().await;
    let bases = [app.url(""), format!("http://{}", node_b.addr)];
    let variants = |base: String| {
        let (client, owner, orgs) = (&client, &owner, &orgs);
        async move {
            let mut on = Vec::new();
            for chunk in orgs.chunks(20) {
                let answers = futures_util::future::join_all(chunk.iter().map(|org| {
                    let base = &base;
                    async move {
                        let response = client
                            .get(format!("{base}/api/v1/orgs/{org}/entitlements"))
                            .bearer_auth(owner)
                            .send()
                            .await
                            .unwrap();
                        assert_eq!(response.status(), 200);
                        let data = body(response).await["data"].clone();
                        let variant = data["flags"]["new_billing"].as_str().unwrap().to_owned();
                        let entitled = names(&data).contains(&"new_billing".to_owned());
                        assert_eq!(entitled, variant == "v2", "{data}");
                        variant == "v2"
                    }
                }))
                .await;
                on.extend(answers);
            }
            on
        }
    };
    let on_a = variants(bases[0].clone()).await;
    let on_b = variants(bases[1].clone()).await;
    let share = on_a.iter().filter(|on| **on).count();
    assert!((250..=350).contains(&share), "{share} of 1,000 orgs");
    assert_eq!(on_a, on_b, "both nodes put each org on the same side");

    // verify on both nodes carries the variant of a key's org
    let mut checked = 0;
    for (org, on) in orgs.iter().zip(&on_a).take(20) {
        let (_, key) = issue_key(&app, &owner, org, json!({ "name": "k", "scopes": [] })).await;
        for base in &bases {
            let verdict = verify_at(&client, base, &verifier, &key).await;
            let expected = if *on { "v2" } else { "v1" };
            assert_eq!(verdict["flags"]["new_billing"], expected, "{verdict}");
            checked += 1;
        }
    }
    assert_eq!(checked, 40);
    node_b.stop().await.unwrap();
}

async fn the_kill_switch_reaches_both_nodes_within_a_second(backend: Backend) {
    let app = TestApp::spawn_with(backend, free_and_pro_plans).await;
    let (owner, org) = app.owner("kill@example.com", "Kill Co").await;
    let (ops, verifier) = operator_with_verifier(&app).await;
    put_on_pro(&app, &ops, &org).await;
    let (_, key) = issue_key(&app, &owner, &org, json!({ "name": "k", "scopes": [] })).await;
    let on = send(
        &app,
        Method::PUT,
        "/admin/flags/ai_search",
        &ops,
        Some(json!({ "rollout_percent": 100 })),
    )
    .await;
    assert_eq!(on.status(), 201);
    // a flag over an entitlement the plan gives: killing it takes that away too
    let sso = send(
        &app,
        Method::PUT,
        "/admin/flags/sso",
        &ops,
        Some(json!({ "plans": ["pro"], "rollout_percent": 100 })),
    )
    .await;
    assert_eq!(sso.status(), 201);
    let node_b = app.second_node().await;
    let bases = [app.url(""), format!("http://{}", node_b.addr)];
    let client = reqwest::Client::new();
    for base in &bases {
        let deadline = Instant::now() + Duration::from_secs(3);
        loop {
            let verdict = verify_at(&client, base, &verifier, &key).await;
            if names(&verdict) == ["ai_search", "sso"] {
                assert_eq!(verdict["flags"], json!({ "ai_search": "on", "sso": "on" }));
                break;
            }
            assert!(Instant::now() < deadline, "{verdict}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    for flag in ["ai_search", "sso"] {
        let killed = send(
            &app,
            Method::PATCH,
            &format!("/admin/flags/{flag}"),
            &ops,
            Some(json!({ "enabled": false })),
        )
        .await;
        assert_eq!(killed.status(), 200);
        assert_eq!(body(killed).await["data"]["enabled"], false);
    }
    let killed_at = Instant::now();
    let mut reached = Vec::new();
    for base in &bases {
        loop {
            let verdict = verify_at(&client, base, &verifier, &key).await;
            if names(&verdict).is_empty() {
                assert!(
                    verdict["flags"].is_null(),
                    "flags that are off are absent: {verdict}"
                );
                reached.push(killed_at.elapsed());
                break;
            }
            assert!(
                killed_at.elapsed() < Duration::from_secs(1),
                "not within a second: {verdict}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    assert!(
        reached.iter().all(|d| *d < Duration::from_secs(1)),
        "{reached:?}"
    );

    // on again; deleting a flag leaves the plan to decide
    let back = send(
        &app,
        Method::PATCH,
        "/admin/flags/sso",
        &ops,
        Some(json!({ "enabled": true })),
    )
    .await;
    assert_eq!(back.status(), 200);
    assert_eq!(
        send(&app, Method::DELETE, "/admin/flags/sso", &ops, None)
            .await
            .status(),
        204
    );
    let verdict = verify_at(&client, &bases[0], &verifier, &key).await;
    assert_eq!(names(&verdict), ["sso"]);
    assert!(verdict["flags"].is_null(), "{verdict}");
    let listed = body(send(&app, Method::GET, "/admin/flags", &ops, None).await).await;
    assert_eq!(listed["data"].as_array().unwrap().len(), 1);
    assert_eq!(listed["data"][0]["name"], "ai_search");
    node_b.stop().await.unwrap();
}

async fn only_operators_with_the_permission_change_flags_and_overrides(backend: Backend) {
    let app = TestApp::spawn_with(backend, free_and_pro_plans).await;
    let (owner, org) = app.owner("own@example.com", "Own Co").await;
    let (ops, _) = operator_with_verifier(&app).await;
    let flag = Some(json!({ "rollout_percent": 100 }));
    // a customer org's owner, even with a key of every customer permission, cannot
    let refused = send(&app, Method::PUT, "/admin/flags/x", &owner, flag.clone()).await;
    let error = expect_error(refused, 403, "FORBIDDEN").await;
    assert_eq!(error["required_permission"], "admin:flags", "{error}");
    let grant = Some(json!({ "effect": "grant" }));
    let path = format!("/admin/orgs/{org}/entitlements/bulk_export");
    let refused = send(&app, Method::PUT, &path, &owner, grant.clone()).await;
    expect_error(refused, 403, "FORBIDDEN").await;
    let (_, all_key) = issue_key(
        &app,
        &owner,
        &org,
        json!({ "name": "all", "scopes": ["*"] }),
    )
    .await;
    let refused = with_key(&app, Method::PUT, "/admin/flags/x", &all_key, flag.clone()).await;
    assert_eq!(refused.status(), 403);
    // an operator key without admin:flags is refused naming it; with it, allowed
    let me = body(send(&app, Method::GET, "/auth/me", &ops, None).await).await;
    let ops_org = me["data"]["active_org"]["id"].as_str().unwrap().to_owned();
    let (_, plans_key) = issue_key(
        &app,
        &ops,
        &ops_org,
        json!({ "name": "p", "scopes": ["admin:plans"] }),
    )
    .await;
    let refused = with_key(
        &app,
        Method::PUT,
        "/admin/flags/x",
        &plans_key,
        flag.clone(),
    )
    .await;
    let error = expect_error(refused, 403, "INSUFFICIENT_SCOPE").await;
    assert!(error.to_string().contains("admin:flags"), "{error}");
    let allowed = with_key(&app, Method::PUT, &path, &plans_key, grant.clone()).await;
    assert_eq!(allowed.status(), 200);
    let (_, flags_key) = issue_key(
        &app,
        &ops,
        &ops_org,
        json!({ "name": "f", "scopes": ["admin:flags"] }),
    )
    .await;
    let created = with_key(
        &app,
        Method::PUT,
        "/admin/flags/x",
        &flags_key,
        flag.clone(),
    )
    .await;
    assert_eq!(created.status(), 201);
    // no such org, a malformed org id: 404
    for org_id in ["org_01ARZ3NDEKTSV4RRFFQ69G5FAV", "nonsense"] {
        let path = format!("/admin/orgs/{org_id}/entitlements/bulk_export");
        let missing = send(&app, Method::PUT, &path, &ops, grant.clone()).await;
        expect_error(missing, 404, "NOT_FOUND").await;
    }
    // flags are checked, naming the field
    for (input, field) in [
        (json!({ "rollout_percent": 101 }), "rollout_percent"),
        (json!({ "plans": ["platinum"] }), "plans[0]"),
        (json!({ "orgs": ["acme"] }), "orgs[0]"),
        (json!({ "default_variant": "v1" }), "default_variant"),
        (json!({ "variant": "Bad Variant" }), "variant"),
    ] {
        let refused = send(&app, Method::PUT, "/admin/flags/y", &ops, Some(input)).await;
        let error = expect_error(refused, 422, "VALIDATION_FAILED").await;
        assert!(error.to_string().contains(field), "{field}: {error}");
    }
    let refused = send(
        &app,
        Method::PUT,
        "/admin/flags/Bad%20Name",
        &ops,
        flag.clone(),
    )
    .await;
    expect_error(refused, 422, "VALIDATION_FAILED").await;
    let missing = send(
        &app,
        Method::PATCH,
        "/admin/flags/nope",
        &ops,
        Some(json!({ "enabled": false })),
    )
    .await;
    expect_error(missing, 404, "NOT_FOUND").await;
    // every change audited in the instance log
    let log = body(send(&app, Method::GET, "/admin/audit-log", &ops, None).await).await;
    assert!(log.to_string().contains("flag.created"), "{log}");
}
