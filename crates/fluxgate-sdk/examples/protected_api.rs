//! A small product API protected by Fluxgate API keys, to run beside a local `fluxgate serve`.
//!
//! ```text
//! FLUXGATE_URL=http://127.0.0.1:8080 FLUXGATE_API_KEY=fg_live_…(keys:verify)… \
//!     cargo run -p fluxgate-sdk --example protected_api
//! curl -H "X-API-Key: fg_live_…a customer's key…" http://127.0.0.1:3000/v1/whoami
//! ```
//!
//! - `GET /v1/whoami` — any valid key: who the caller is, from the key's context.
//! - `GET /v1/usage-report` — keys holding `usage:read` only (403 `INSUFFICIENT_SCOPE` otherwise).
//! - `POST /v1/exports` — any valid key whose plan includes the `bulk_export` entitlement.
//!
//! Every answer carries `X-RateLimit-*`; refusals come in Fluxgate's error envelope.

use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use fluxgate_sdk::{Flux, KeyAuthLayer, KeyContext};
use serde_json::{json, Value};

async fn whoami(Extension(key): Extension<KeyContext>) -> Json<Value> {
    Json(json!({
        "key_id": key.key_id,
        "org": key.org.name,
        "plan": key.plan,
        "scopes": key.scopes,
        "requests_left": key.ratelimit.remaining,
    }))
}

async fn usage_report(Extension(key): Extension<KeyContext>) -> Json<Value> {
    Json(json!({ "report_for": key.org.id }))
}

async fn export(
    Extension(flux): Extension<Flux>,
    Extension(key): Extension<KeyContext>,
) -> (StatusCode, Json<Value>) {
    if flux.entitlements().check_for_key(&key, "bulk_export") {
        (StatusCode::ACCEPTED, Json(json!({ "export": "started" })))
    } else {
        let error = json!({ "error": { "code": "FORBIDDEN",
            "message": "bulk export is not part of your plan" } });
        (StatusCode::FORBIDDEN, Json(error))
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let api_key = std::env::var("FLUXGATE_API_KEY")
        .map_err(|_| "set FLUXGATE_API_KEY to a Fluxgate key with the keys:verify scope")?;
    let flux = Flux::init(api_key); // FLUXGATE_URL, else http://127.0.0.1:8080
    let listen = std::env::var("LISTEN").unwrap_or_else(|_| "127.0.0.1:3000".into());

    let reports = Router::new()
        .route("/v1/usage-report", get(usage_report))
        .layer(KeyAuthLayer::new(flux.clone()).require_scopes(["usage:read"]));
    let app = Router::new()
        .route("/v1/whoami", get(whoami))
        .route("/v1/exports", post(export))
        .layer(KeyAuthLayer::new(flux.clone()))
        .merge(reports)
        .layer(Extension(flux));

    let listener = tokio::net::TcpListener::bind(&listen).await?;
    println!("protected API on http://{listen}");
    axum::serve(listener, app).await?;
    Ok(())
}
