//! `POST /keys/leaked`: the HTTP face of [`services::leaked`](crate::services::leaked) — a
//! secret scanner's signed report of tokens found in public, answered with each one's label.

use crate::error::ApiResult;
use crate::extract::ClientInfo;
use crate::services::leaked::{self, Signed, TokenLabel};
use crate::state::AppState;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::Json;
use fluxgate_proto::ErrorEnvelope;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// The routes of this module.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(report_leaked_keys))
}

/// A secret scanner reports tokens found in public (GitHub's secret-scanning partner format: a
/// JSON list of `{token, type, url, source}`, signed with ECDSA P-256 — headers
/// `Github-Public-Key-Identifier` and `Github-Public-Key-Signature`, checked against
/// `[leaked_keys.public_keys]`). Each token that is one of our keys is revoked, or flagged
/// `LEAKED`, as its org chose. The answer is the scanner's format: a JSON list of
/// `{token_hash, token_type, label}`.
#[utoipa::path(post, path = "/keys/leaked", tag = "keys",
    request_body = Vec<leaked::FoundToken>,
    responses((status = 200, description = "each token's label, in order", body = Vec<TokenLabel>),
              (status = 401, description = "the signature does not verify against a configured scanner key", body = ErrorEnvelope),
              (status = 422, description = "not a list of tokens, or more than 1000", body = ErrorEnvelope)))]
pub async fn report_leaked_keys(
    State(state): State<AppState>,
    client: ClientInfo,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Json<Vec<TokenLabel>>> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let signed = Signed {
        key_id: header("github-public-key-identifier"),
        signature: header("github-public-key-signature"),
    };
    let labels = leaked::report(&state, &signed, &body, &client, crate::clock::now()).await?;
    Ok(Json(labels))
}
