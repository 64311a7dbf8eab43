//! Operational endpoints: health, readiness, Prometheus metrics, the JWKS and the OpenAPI document.

use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use fluxgate_proto::{Data, ErrorEnvelope, Health};
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
#[utoipa::path(get, path = "/healthz", tag = "system", responses((status = 200, description = "alive", body = Data<Health>)))]
async fn healthz() -> Json<Data<Health>> {
    Json(Data {
        data: Health {
            status: "ok".to_owned(),
            database: None,
        },
    })
}

/// The process can serve: the database answers.
#[utoipa::path(get, path = "/readyz", tag = "system",
    responses((status = 200, description = "ready", body = Data<Health>), (status = 503, description = "database unreachable", body = ErrorEnvelope)))]
async fn readyz(State(state): State<AppState>) -> ApiResult<Json<Data<Health>>> {
    state
        .store
        .ping()
        .await
        .map_err(|_| ApiError::Unavailable)?;
    Ok(Json(Data {
        data: Health {
            status: "ready".to_owned(),
            database: Some(state.store.backend().to_owned()),
        },
    }))
}

/// Prometheus text exposition.
#[utoipa::path(get, path = "/metrics", tag = "system", responses((status = 200, description = "metrics (OpenMetrics text)", content_type = "application/openmetrics-text", body = String)))]
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
#[utoipa::path(get, path = "/.well-known/jwks.json", tag = "system", responses((status = 200, description = "JWK set (Ed25519 public keys, `kid`, `alg: EdDSA`)", body = serde_json::Value)))]
async fn jwks(State(state): State<AppState>) -> Response {
    (
        [(header::CACHE_CONTROL, "public, max-age=60")],
        Json(state.keyring.jwks()),
    )
        .into_response()
}

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "system", responses((status = 200, description = "OpenAPI 3.1 document", body = serde_json::Value)))]
async fn openapi_document() -> Response {
    match OPENAPI.get() {
        Some(text) => ([(header::CONTENT_TYPE, "application/json")], text.clone()).into_response(),
        None => ApiError::Internal(anyhow::anyhow!("OpenAPI document not built")).into_response(),
    }
}
