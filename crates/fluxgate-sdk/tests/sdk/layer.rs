//! The tower layer in front of a real axum API served over loopback: who gets in, what the
//! handler sees, the refusals in Fluxgate's envelope, revocation within a second, rate limits
//! that count every request, and Fluxgate being down.

use crate::{customer_key, world};
use axum::{routing::get, Extension, Json, Router};
use fluxgate_core::secret::ExposeSecret;
use fluxgate_sdk::{Flux, KeyAuthLayer, KeyContext};
use fluxgate_testkit::{self, Backend};
use reqwest::header::HeaderMap;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

fluxgate_testkit::both_backends!(
    valid_keys_reach_the_handler_with_their_context_and_others_are_refused,
    a_revoked_key_is_refused_within_a_second,
    rate_limits_count_every_request_through_the_layer,
    every_call_through_the_layer_is_attributed_to_its_endpoint,
    a_key_with_credits_is_spent_exactly_through_the_layer,
    named_limits_are_spent_through_the_layer_and_the_client,
    a_key_with_an_ip_allowlist_passes_only_from_its_addresses,
    a_layer_requiring_an_entitlement_admits_orgs_that_have_it,
);

/// Serves a small API (`GET /v1/whoami`, protected by `layer`) on a random port; its base URL.
async fn protected_api(layer: KeyAuthLayer) -> String {
    async fn whoami(Extension(key): Extension<KeyContext>) -> Json<Value> {
        Json(json!({ "org": key.org.id, "key": key.key_id, "scopes": key.scopes }))
    }
    let app = Router::new().route("/v1/whoami", get(whoami)).layer(layer);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}/v1/whoami")
}

/// GET with `header: value` (if any); (status, headers, JSON body).
async fn get_with(url: &str, header: Option<(&str, &str)>) -> (u16, HeaderMap, Value) {
    let mut request = reqwest::Client::new().get(url);
    if let Some((name, value)) = header {
        request = request.header(name, value);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    (
        status,
        headers,
        response.json().await.unwrap_or(Value::Null),
    )
}

fn number(headers: &HeaderMap, name: &str) -> u64 {
    headers[name].to_str().unwrap().parse().unwrap()
}

async fn valid_keys_reach_the_handler_with_their_context_and_others_are_refused(backend: Backend) {
    let world = world(backend).await;
    let api =
        protected_api(KeyAuthLayer::new(world.flux.clone()).require_scopes(["usage:read"])).await;
    let (key_id, key) = customer_key(&world, &["usage:read"], None).await;
    let (_, narrow) = customer_key(&world, &["keys:read"], None).await;

    let (status, headers, body) = get_with(&api, Some(("x-api-key", &key))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["org"], world.org.as_str());
    assert_eq!(body["key"], key_id.as_str());
    let limit = number(&headers, "x-ratelimit-limit");
    assert_eq!(number(&headers, "x-ratelimit-remaining"), limit - 1);
    assert!(number(&headers, "x-ratelimit-reset") > 1_700_000_000);
    let bearer = format!("Bearer {key}");
    let (status, _, _) = get_with(&api, Some(("authorization", &bearer))).await;
    assert_eq!(status, 200);

    // one answer for every kind of bad credential, in the envelope
    let unknown = fluxgate_core::apikey::generate("fg", fluxgate_core::apikey::Environment::Live);
    let ops_bearer = format!("Bearer {}", world.ops);
    for header in [
        None,
        Some(("x-api-key", "fg_live_not-a-key")),
        Some(("x-api-key", unknown.expose_secret())),
        Some(("authorization", ops_bearer.as_str())), // a user's JWT is not an API key
    ] {
        let (status, headers, body) = get_with(&api, header).await;
        assert_eq!(status, 401, "{header:?}");
        assert_eq!(body["error"]["code"], "UNAUTHORIZED");
        assert_eq!(body["error"]["message"], "missing or invalid API key");
        assert_eq!(headers["www-authenticate"], "Bearer");
    }

    let (status, _, body) = get_with(&api, Some(("x-api-key", &narrow))).await;
    assert_eq!(status, 403);
    assert_eq!(body["error"]["code"], "INSUFFICIENT_SCOPE");
    assert_eq!(body["error"]["required_scope"], "usage:read");
    world.app.stop().await;
}

async fn a_revoked_key_is_refused_within_a_second(backend: Backend) {
    let world = world(backend).await;
    let api = protected_api(KeyAuthLayer::new(world.flux.clone())).await;
    let (key_id, key) = customer_key(&world, &[], None).await;
    assert_eq!(get_with(&api, Some(("x-api-key", &key))).await.0, 200);
    let cached_at = Instant::now();

    world.flux.keys().revoke(&world.org, &key_id).await.unwrap();
    let revoked_at = Instant::now();
    let mut served_after_revocation = 0;
    loop {
        let sent_at = Instant::now();
        let (status, _, body) = get_with(&api, Some(("x-api-key", &key))).await;
        if status == 401 {
            assert_eq!(body["error"]["code"], "UNAUTHORIZED");
            break;
        }
        assert_eq!(status, 200);
        served_after_revocation += 1;
        // admitted, so decided before its cached verdict (asked before the revocation) aged 1 s
        let sent_after = sent_at.duration_since(revoked_at);
        assert!(
            sent_after < Duration::from_secs(1),
            "admitted {sent_after:?} after revocation"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // the cache did serve for a while (this is not a layer that asks every time) …
    if revoked_at.duration_since(cached_at) < Duration::from_millis(500) {
        assert!(served_after_revocation > 0);
    }
    // … and a layer without a cache refuses at once
    let uncached =
        protected_api(KeyAuthLayer::new(world.flux.clone()).cache_for(Duration::ZERO)).await;
    assert_eq!(get_with(&uncached, Some(("x-api-key", &key))).await.0, 401);
    world.app.stop().await;
}

async fn rate_limits_count_every_request_through_the_layer(backend: Backend) {
    let world = world(backend).await;
    let api = protected_api(KeyAuthLayer::new(world.flux.clone())).await;

    // five a minute: five pass with a falling Remaining, the sixth is refused with Retry-After
    let (_, key) = customer_key(&world, &[], Some(5)).await;
    for expected_remaining in (0..5).rev() {
        let (status, headers, _) = get_with(&api, Some(("x-api-key", &key))).await;
        assert_eq!(status, 200);
        assert_eq!(
            number(&headers, "x-ratelimit-remaining"),
            expected_remaining
        );
    }
    let (status, headers, body) = get_with(&api, Some(("x-api-key", &key))).await;
    assert_eq!(status, 429);
    assert_eq!(body["error"]["code"], "RATE_LIMITED");
    assert!(body["error"]["retry_after"].as_u64().unwrap() >= 1);
    assert!(number(&headers, "retry-after") >= 1);
    assert_eq!(number(&headers, "x-ratelimit-remaining"), 0);
    // Fluxgate itself counted the calls the layer served from its cache
    match world.flux.keys().verify(&key).await {
        Err(fluxgate_sdk::Error::InvalidKey { code, .. }) => assert_eq!(code, "RATE_LIMITED"),
        other => panic!("{other:?}"),
    }

    // calls served from the cache are charged even when the key then goes quiet
    let (_, quiet) = customer_key(&world, &[], Some(10)).await;
    for _ in 0..3 {
        assert_eq!(get_with(&api, Some(("x-api-key", &quiet))).await.0, 200);
    }
    // stale after 1 s, settled by the sweeper within the next second; a refill takes 6 s
    tokio::time::sleep(Duration::from_millis(3000)).await;
    let context = world.flux.keys().verify(&quiet).await.unwrap();
    // 3 through the layer + this verify
    assert_eq!(context.ratelimit.remaining, 10 - 4);
    world.app.stop().await;
}

async fn every_call_through_the_layer_is_attributed_to_its_endpoint(backend: Backend) {
    let world = world(backend).await;
    let layer = KeyAuthLayer::new(world.flux.clone()).endpoint(|request| {
        let route = request.extensions.get::<axum::extract::MatchedPath>()?;
        Some(format!("{} {}", request.method, route.as_str()))
    });
    let api = protected_api(layer).await;
    let (key_id, key) = customer_key(&world, &[], None).await;
    // one verify, then four calls served from the cache and settled later
    for _ in 0..5 {
        assert_eq!(get_with(&api, Some(("x-api-key", &key))).await.0, 200);
    }
    let query = format!(
        "/usage?org_id={}&key_id={key_id}&endpoint=GET%20%2Fv1%2Fwhoami",
        world.org
    );
    let counted = || async {
        let response =
            fluxgate_testkit::send(&world.app, reqwest::Method::GET, &query, &world.ops, None)
                .await;
        fluxgate_testkit::body(response).await["data"]["total"]["count"].as_i64()
    };
    assert!(
        fluxgate_testkit::eventually(Duration::from_secs(15), || async {
            counted().await == Some(5)
        })
        .await,
        "{:?}",
        counted().await
    );
    world.app.stop().await;
}

#[tokio::test]
async fn when_fluxgate_is_down_the_layer_answers_503_within_the_timeout() {
    let flux: Flux = Flux::builder("fg_live_whatever")
        .base_url(format!(
            "http://127.0.0.1:{}",
            fluxgate_testkit::free_port()
        ))
        .timeout(Duration::from_millis(300))
        .retries(1)
        .build();
    let api = protected_api(KeyAuthLayer::new(flux)).await;
    let key = fluxgate_core::apikey::generate("fg", fluxgate_core::apikey::Environment::Live);
    let started = Instant::now();
    let (status, headers, body) = get_with(&api, Some(("x-api-key", key.expose_secret()))).await;
    assert_eq!(status, 503);
    assert_eq!(body["error"]["code"], "UNAVAILABLE");
    assert_eq!(headers["retry-after"], "1");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

/// Credits are spent exactly through the layer, its verdict cache notwithstanding: a key with
/// three credits gets three requests through, then `429 USAGE_EXCEEDED`; topped up through the
/// SDK, it gets in again.
async fn a_key_with_credits_is_spent_exactly_through_the_layer(backend: Backend) {
    let world = world(backend).await;
    let api = protected_api(KeyAuthLayer::new(world.flux.clone())).await;
    let issued = world
        .flux
        .keys()
        .create()
        .for_org(&world.org)
        .credits(3, None)
        .issue()
        .await
        .unwrap();
    let key = issued.key.clone();
    for _ in 0..3 {
        assert_eq!(get_with(&api, Some(("x-api-key", &key))).await.0, 200);
    }
    let (status, _, body) = get_with(&api, Some(("x-api-key", &key))).await;
    assert_eq!(status, 429);
    assert_eq!(body["error"]["code"], "USAGE_EXCEEDED");

    let topped_up = fluxgate_sdk::CreditsChange {
        add: Some(1),
        ..Default::default()
    };
    let info = world
        .flux
        .keys()
        .change_credits(&world.org, &issued.info.id, topped_up)
        .await
        .unwrap();
    assert_eq!(info.credits.map(|c| c.remaining), Some(1));
    assert_eq!(get_with(&api, Some(("x-api-key", &key))).await.0, 200);
    let context = world.flux.keys().verify(&key).await;
    match context {
        Err(fluxgate_sdk::Error::InvalidKey { code, .. }) => assert_eq!(code, "USAGE_EXCEEDED"),
        other => panic!("{other:?}"),
    }
    world.app.stop().await;
}

/// A layer spending a named limit on every request: a key with two `exports` an hour gets two
/// requests through, then `429 RATE_LIMITED` naming the limit, with `Retry-After`; the client's
/// `verify_spending` reports what is left.
async fn named_limits_are_spent_through_the_layer_and_the_client(backend: Backend) {
    let world = world(backend).await;
    let api =
        protected_api(KeyAuthLayer::new(world.flux.clone()).spend_limits([("exports", 1)])).await;
    let issued = world
        .flux
        .keys()
        .create()
        .for_org(&world.org)
        .named_limit("exports", 2, 3600)
        .named_limit("tokens", 5000, 3600)
        .issue()
        .await
        .unwrap();
    let key = issued.key;
    for _ in 0..2 {
        assert_eq!(get_with(&api, Some(("x-api-key", &key))).await.0, 200);
    }
    let (status, headers, body) = get_with(&api, Some(("x-api-key", &key))).await;
    assert_eq!(status, 429);
    assert_eq!(body["error"]["code"], "RATE_LIMITED");
    assert_eq!(body["error"]["limit"], "exports");
    assert!(number(&headers, "retry-after") >= 1);

    let context = world
        .flux
        .keys()
        .verify_spending(&key, &[], &[("tokens", 1200)])
        .await
        .unwrap();
    assert_eq!(context.ratelimits[0].remaining, Some(3800));
    assert_eq!(context.ratelimits[0].scope.as_deref(), Some("key"));
    world.app.stop().await;
}

/// A key with an IP allowlist through the layer: admitted from an address inside it, refused
/// `403 FORBIDDEN_IP` from outside it — also when the layer reuses a cached verdict — and
/// refused by a layer that cannot tell addresses (fail closed), which still admits other keys.
async fn a_key_with_an_ip_allowlist_passes_only_from_its_addresses(backend: Backend) {
    let world = world(backend).await;
    let from_header = |request: &http::request::Parts| {
        request
            .headers
            .get("x-client-ip")?
            .to_str()
            .ok()?
            .parse()
            .ok()
    };
    let api = protected_api(KeyAuthLayer::new(world.flux.clone()).client_ip(from_header)).await;
    let blind = protected_api(KeyAuthLayer::new(world.flux.clone())).await;
    let fenced = world
        .flux
        .keys()
        .create()
        .for_org(&world.org)
        .ip_allowlist(["203.0.113.0/24"])
        .issue()
        .await
        .unwrap()
        .key;
    let (_, open) = customer_key(&world, &[], None).await;

    let request = |ip: &'static str| {
        let (api, fenced) = (api.clone(), fenced.clone());
        async move {
            reqwest::Client::new()
                .get(&api)
                .header("x-api-key", fenced)
                .header("x-client-ip", ip)
                .send()
                .await
                .unwrap()
        }
    };
    assert_eq!(request("203.0.113.9").await.status(), 200);
    // within the cached verdict's second: decided by the layer from the key's list
    let outside = request("198.51.100.1").await;
    assert_eq!(outside.status(), 403);
    let body: Value = outside.json().await.unwrap();
    assert_eq!(body["error"]["code"], "FORBIDDEN_IP");

    assert_eq!(get_with(&blind, Some(("x-api-key", &fenced))).await.0, 403);
    assert_eq!(get_with(&blind, Some(("x-api-key", &open))).await.0, 200);
    world.app.stop().await;
}

/// A route that requires `bulk_export`: refused `403 FORBIDDEN` naming it until the operator
/// grants the org the entitlement, then admitted; the client reads flag variants from the
/// context.
async fn a_layer_requiring_an_entitlement_admits_orgs_that_have_it(backend: Backend) {
    let world = world(backend).await;
    let api = protected_api(
        KeyAuthLayer::new(world.flux.clone())
            .require_entitlement("bulk_export")
            .cache_for(Duration::ZERO),
    )
    .await;
    let (_, key) = customer_key(&world, &[], None).await;
    let (status, _, body) = get_with(&api, Some(("x-api-key", &key))).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"]["code"], "FORBIDDEN");
    assert_eq!(body["error"]["required_entitlement"], "bulk_export");

    let grant = fluxgate_testkit::send(
        &world.app,
        reqwest::Method::PUT,
        &format!("/admin/orgs/{}/entitlements/bulk_export", world.org),
        &world.ops,
        Some(json!({ "effect": "grant", "note": "early access" })),
    )
    .await;
    assert_eq!(grant.status(), 200);
    let flag = fluxgate_testkit::send(
        &world.app,
        reqwest::Method::PUT,
        "/admin/flags/new_billing",
        &world.ops,
        Some(json!({ "orgs": [world.org], "variant": "v2", "default_variant": "v1" })),
    )
    .await;
    assert_eq!(flag.status(), 201);
    let (status, _, body) = get_with(&api, Some(("x-api-key", &key))).await;
    assert_eq!(status, 200, "{body}");

    let context = world.flux.keys().verify(&key).await.unwrap();
    assert!(world
        .flux
        .entitlements()
        .check_for_key(&context, "bulk_export"));
    assert!(world
        .flux
        .entitlements()
        .check_for_key(&context, "new_billing"));
    assert_eq!(
        world.flux.flags().variant_for_key(&context, "new_billing"),
        Some("v2")
    );
    assert_eq!(world.flux.flags().variant_for_key(&context, "other"), None);
    world.app.stop().await;
}
