//! Operational endpoints: health, readiness, Prometheus metrics, the JWKS and the OpenAPI document.

use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use std::sync::OnceLock;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

static OPENAPI: OnceLock<String> = OnceLock::new();

/// Routes under `/api/v1`.
pub fn api_router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(openapi_document))
}

/// Routes at the root.
pub fn root_router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(metrics))
        .routes(routes!(jwks))
}

/// Keeps the generated document for `openapi_document`.
pub fn publish_openapi(doc: utoipa::openapi::OpenApi) {
    if let Ok(text) = doc.to_json() {
        let _ = OPENAPI.set(text);
    }
}

/// The process is up.
#[utoipa::path(get, path = "/healthz", tag = "system", responses((status = 200, description = "alive")))]
async fn healthz() -> Json<Value> {
    Json(json!({ "data": { "status": "ok" } }))
}

/// The process can serve: the database answers.
#[utoipa::path(get, path = "/readyz", tag = "system",
    responses((status = 200, description = "ready"), (status = 503, description = "database unreachable")))]
async fn readyz(State(state): State<AppState>) -> ApiResult<Json<Value>> {
    state
        .store
        .ping()
        .await
        .map_err(|_| ApiError::Unavailable)?;
    Ok(Json(
        json!({ "data": { "status": "ready", "database": state.store.backend() } }),
    ))
}

/// Prometheus text exposition.
#[utoipa::path(get, path = "/metrics", tag = "system", responses((status = 200, description = "metrics", content_type = "text/plain")))]
async fn metrics(State(state): State<AppState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render(),
    )
        .into_response()
}

/// The public keys that verify access tokens.
#[utoipa::path(get, path = "/.well-known/jwks.json", tag = "system", responses((status = 200, description = "JWK set")))]
async fn jwks(State(state): State<AppState>) -> Response {
    (
        [(header::CACHE_CONTROL, "public, max-age=60")],
        Json(state.keyring.jwks()),
    )
        .into_response()
}

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "system", responses((status = 200, description = "OpenAPI 3.1 document")))]
async fn openapi_document() -> Response {
    match OPENAPI.get() {
        Some(text) => ([(header::CONTENT_TYPE, "application/json")], text.clone()).into_response(),
        None => ApiError::Internal(anyhow::anyhow!("OpenAPI document not built")).into_response(),
    }
}
