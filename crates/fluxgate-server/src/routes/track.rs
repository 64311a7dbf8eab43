//! `POST /sdk/track`: the HTTP face of [`services::usage`](crate::services::usage) — one event,
//! or a batch of up to 1,000 answered per event.

use crate::access::{authenticate, Caller};
use crate::error::{ApiError, ApiResult};
use crate::extract::ApiJson;
use crate::services::usage;
use crate::state::AppState;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::Json;
use fluxgate_proto::{Data, ErrorEnvelope, TrackEvent, TrackOutcome};
use serde::Deserialize;
use serde_json::Value;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// The routes of this module.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(track))
}

/// `{"events": [...]}`
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TrackBatch {
    events: Vec<Value>,
}

/// Any authenticated caller; `usage:write` is checked per event, in the event's org.
pub struct Tracker(pub Caller);

impl FromRequestParts<AppState> for Tracker {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        authenticate(parts, state).await.map(Self)
    }
}

/// Records metered usage: one event (answered with `recorded` or `duplicate`), or
/// `{"events": [...]}` (up to 1,000, answered per event, invalid ones named without failing the
/// others).
#[utoipa::path(post, path = "/sdk/track", tag = "usage", request_body = TrackEvent,
    security(("bearer" = ["usage:write"])),
    responses((status = 200, description = "one event: its outcome; a batch: one outcome per event and the totals (`TrackBatchResult`)", body = Data<TrackOutcome>), (status = 422, description = "invalid event", body = ErrorEnvelope)))]
async fn track(
    State(state): State<AppState>,
    Tracker(caller): Tracker,
    ApiJson(value): ApiJson<Value>,
) -> ApiResult<Json<Value>> {
    let now = crate::clock::now();
    let answer = if value.get("events").is_some() {
        let batch: TrackBatch =
            serde_json::from_value(value).map_err(|e| ApiError::field("events", e.to_string()))?;
        let result = usage::track_batch(&state, &caller, batch.events, now).await?;
        serde_json::to_value(Data { data: result })
    } else {
        let result = usage::track_one(&state, &caller, value, now).await?;
        serde_json::to_value(Data { data: result })
    };
    Ok(Json(answer.map_err(|e| ApiError::Internal(e.into()))?))
}
