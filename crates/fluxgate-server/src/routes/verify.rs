//! `POST /keys/verify`: the HTTP face of [`services::verify`](crate::services::verify). Always
//! 200, with `valid`, a `code` and the key's whole context; the caller needs `keys:verify`.

use crate::access::{presented_key, verified_key_then, Caller};
use crate::error::{ApiError, ApiResult};
use crate::extract;
use crate::services::verify;
use crate::state::AppState;
use crate::user_auth::AuthUser;
use axum::body::Body;
use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use fluxgate_proto::{Data, ErrorEnvelope, Verdict, VerifyRequest};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// The answer's content type, made once.
const JSON: HeaderValue = HeaderValue::from_static("application/json");

/// The routes of this module.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(verify_handler))
}

/// A caller allowed to verify keys: an operator key with `keys:verify`, or a user whose
/// operator-org role grants it. Not charged against its own rate limit — the verified key is.
pub struct Verifier;

impl Verifier {
    /// The caller, checked at `now`.
    async fn at(parts: &mut Parts, state: &AppState, now: i64) -> ApiResult<Self> {
        let caller = match presented_key(parts) {
            // a key's right is decided without holding on to its context
            Some(text) => {
                return match verified_key_then(state, parts, text, now, |key| key.may_verify_keys)
                    .await?
                {
                    Some(true) => Ok(Self),
                    Some(false) => Err(ApiError::InsufficientScope("keys:verify".into())),
                    None => Err(ApiError::Unauthorized),
                };
            }
            None => Caller::User(Box::new(AuthUser::from_request_parts(parts, state).await?)),
        };
        crate::access::require_second_factor(state, &caller)?;
        if caller.operator_allows(state, "keys:verify").await? {
            Ok(Self)
        } else {
            Err(caller.lacks("keys:verify"))
        }
    }
}

/// Verifies a key: `VALID`, or why not (`MALFORMED`, `NOT_FOUND`, `REVOKED`, `EXPIRED`,
/// `ORG_DISABLED`, `INSUFFICIENT_SCOPE`, `QUOTA_EXCEEDED`, `RATE_LIMITED`), with the org, plan,
/// scopes, entitlements, rate-limit state, expiry and metadata. A valid call takes `cost` from
/// the key's rate limit and its org's monthly `requests` quota.
#[utoipa::path(post, path = "/keys/verify", tag = "keys", request_body = VerifyRequest,
    security(("bearer" = ["keys:verify"])),
    responses((status = 200, description = "the verdict (always 200; see `valid` and `code`)", body = Data<Verdict>),
              (status = 403, description = "the caller lacks keys:verify", body = ErrorEnvelope),
              (status = 422, description = "invalid fields", body = ErrorEnvelope)))]
pub async fn verify_handler(State(state): State<AppState>, request: Request) -> Response {
    answer(&state, request).await
}

/// The whole of `POST /keys/verify` as a function of the request — the caller checked
/// ([`Verifier`]), then the body (as [`ApiJson`](crate::extract::ApiJson) would), then the
/// verdict — so the listener's fast lane ([`routes::Service`](crate::routes::Service)) calls it
/// straight, with no extractor machinery, and the router's route is the same code.
pub async fn answer(state: &AppState, request: Request) -> Response {
    match verified(state, request).await {
        Ok(response) => response,
        Err(error) => error.into_response(),
    }
}

async fn verified(state: &AppState, request: Request) -> ApiResult<Response> {
    let now = crate::clock::now();
    let (mut parts, body) = request.into_parts();
    Verifier::at(&mut parts, state, now).await?;
    let request = Request::from_parts(parts, body);
    let body = extract::json_within(request, state.config.max_body_bytes).await?;
    let answer = verify::verify(state, body, now).await?.into_body()?;
    let mut response = Response::new(Body::from(answer));
    response.headers_mut().insert(header::CONTENT_TYPE, JSON);
    Ok(response)
}
