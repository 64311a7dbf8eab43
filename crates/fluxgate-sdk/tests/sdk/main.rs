//! The SDK against a real Fluxgate — the server's router on a random port, on SQLite and on
//! PostgreSQL, through the shared test kit (`fluxgate-testkit`): the async client, the blocking client, the
//! tower layer in front of a real axum API, and offline access-token verification.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

mod blocking;
mod client;
mod layer;
mod tokens;

use fluxgate_sdk::Flux;
use fluxgate_testkit::{issue_key, send, Backend, TestApp, PUBLIC_URL};
use reqwest::Method;
use serde_json::json;

/// A running Fluxgate with its operator signed in, an SDK client holding an operator key that
/// may verify, issue, revoke and report usage, and one customer org.
pub struct World {
    pub app: TestApp,
    /// The operator's access token.
    pub ops: String,
    pub flux: Flux,
    /// The operator key `flux` holds.
    pub sdk_key: String,
    /// The customer org.
    pub org: String,
}

pub async fn world(backend: Backend) -> World {
    let app = TestApp::spawn(backend).await;
    let (ops, _) = fluxgate_testkit::operator_with_verifier(&app).await;
    let me = fluxgate_testkit::body(send(&app, Method::GET, "/auth/me", &ops, None).await).await;
    let ops_org = me["data"]["active_org"]["id"].as_str().unwrap().to_owned();
    let scopes = [
        "keys:verify",
        "keys:read",
        "keys:write",
        "admin:orgs",
        "usage:write",
    ];
    let (_, sdk_key) = issue_key(
        &app,
        &ops,
        &ops_org,
        json!({ "name": "backend", "scopes": scopes }),
    )
    .await;
    let created = send(
        &app,
        Method::POST,
        "/orgs",
        &ops,
        Some(json!({ "name": "Customer" })),
    )
    .await;
    let org = fluxgate_testkit::body(created).await["data"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let flux = client_for(&app, &sdk_key).build();
    World {
        app,
        ops,
        flux,
        sdk_key,
        org,
    }
}

/// SDK settings for talking to `app` with `key`.
pub fn client_for(app: &TestApp, key: &str) -> fluxgate_sdk::FluxBuilder {
    Flux::builder(key)
        .base_url(&app.base)
        .token_issuer(PUBLIC_URL)
}

/// A customer key issued through the SDK with `scopes` and, optionally, its own rate limit.
pub async fn customer_key(world: &World, scopes: &[&str], limit: Option<u64>) -> (String, String) {
    let mut create = world
        .flux
        .keys()
        .create()
        .for_org(&world.org)
        .with_scopes(scopes);
    if let Some(limit) = limit {
        create = create.rate_limit(limit, 60);
    }
    let issued = create.issue().await.unwrap();
    (issued.info.id, issued.key)
}
