//! `POST /keys/verify`: the one call a product backend makes per inbound request. Always 200,
//! with `valid`, a `code` and the key's whole context. A warm key is answered from memory: the
//! key cache, the rate limiter and the usage recorder — no database round trip.

use crate::access::{presented_key, verified_key, Caller};
use crate::clock::rfc3339;
use crate::error::{ApiError, ApiResult};
use crate::extract::ApiJson;
use crate::keycache::{CachedKey, KeyHash, Lookup};
use crate::state::AppState;
use crate::usage_recorder::Attribution;
use crate::user_auth::AuthUser;
use axum::extract::{FromRequestParts, State};
use axum::http::header;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use fluxgate_core::ratelimit::Decision;
use fluxgate_core::{apikey, cost};
use fluxgate_proto::{Data, ErrorEnvelope, OrgRef, RateLimitState, Verdict, VerifyRequest};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// The routes of this module.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(verify))
}

/// The verdict on a known key: its whole context, with `code`.
fn verdict_of(key: &CachedKey, code: &'static str) -> Verdict {
    Verdict {
        valid: code == "VALID",
        code: code.to_owned(),
        key_id: Some(key.key_id.clone()),
        org: Some(OrgRef {
            id: key.org_id.clone(),
            name: key.org_name.clone(),
            external_id: key.org_external_id.clone(),
        }),
        plan: Some(key.plan.clone()),
        scopes: Some(key.scopes.clone()),
        entitlements: Some(key.entitlements.clone()),
        ratelimit: None,
        expires_at: key.expires_at.map(rfc3339),
        metadata: Some(key.metadata.clone()),
        environment: Some(key.environment.clone()),
    }
}

/// The verdict on a key that is not known (or not even well-formed): the code alone.
fn refused(code: &'static str) -> Verdict {
    Verdict {
        code: code.to_owned(),
        ..Verdict::default()
    }
}

/// A caller allowed to verify keys: an operator key with `keys:verify`, or a user whose
/// operator-org role grants it. Not charged against its own rate limit — the verified key is.
pub struct Verifier;

impl FromRequestParts<AppState> for Verifier {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let caller = match presented_key(parts) {
            Some(text) => Caller::Key(
                verified_key(state, &text)
                    .await?
                    .ok_or(ApiError::Unauthorized)?,
            ),
            None => Caller::User(Box::new(AuthUser::from_request_parts(parts, state).await?)),
        };
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
async fn verify(
    State(state): State<AppState>,
    _verifier: Verifier,
    ApiJson(body): ApiJson<VerifyRequest>,
) -> ApiResult<Response> {
    let cost = cost::verify_cost(body.cost, &body.cached_calls)?;
    if body
        .endpoint
        .as_ref()
        .is_some_and(|e| e.len() > cost::MAX_ENDPOINT_LEN)
    {
        return Err(ApiError::field(
            "endpoint",
            "must be at most 200 characters",
        ));
    }
    if apikey::parse(&body.key).is_err() {
        return respond(refused("MALFORMED"));
    }
    let hash = KeyHash::of(&body.key);
    let key = match state
        .keys
        .get(&hash, state.store.as_ref(), &state.config)
        .await?
    {
        Lookup::Found(key) => key,
        Lookup::Unknown => return respond(refused("NOT_FOUND")),
    };
    let now = crate::clock::now();
    let (code, decision) = judge(&state, &key, &body.scopes, cost, now).await?;
    let attribute = |endpoint: &str, outcome: &str, calls: u64| {
        let call = Attribution {
            org_id: &key.org_id,
            key_id: &key.key_id,
            endpoint,
            outcome,
        };
        state.usage.count_calls(call, calls, now);
    };
    attribute(body.endpoint.as_deref().unwrap_or(""), code, 1);
    if code == "VALID" {
        for (endpoint, &calls) in &body.cached_calls {
            attribute(endpoint, "VALID", calls);
        }
    }
    let mut verdict = verdict_of(&key, code);
    if let Some(decision) = decision {
        verdict.ratelimit = Some(RateLimitState {
            limit: decision.limit,
            remaining: decision.remaining,
            reset: now.max(0) as u64 + decision.reset_after_secs(),
        });
        if decision.allowed {
            state.usage.record_call(
                &key.org_id,
                &key.key_id,
                "requests",
                i64::try_from(cost).unwrap_or(i64::MAX),
                now,
            );
        }
    }
    respond(verdict)
}

/// The verdict on a known key, in order: its standing, the required scopes, the org's monthly
/// quota, then the rate limit (the only step that takes anything, and only when all else passed).
async fn judge(
    state: &AppState,
    key: &CachedKey,
    scopes: &[String],
    cost: u64,
    now: i64,
) -> ApiResult<(&'static str, Option<Decision>)> {
    if let Some(code) = key.refusal(now) {
        return Ok((code, None));
    }
    let catalog = &state.config.catalog;
    if !scopes.iter().all(|s| key.grants.allows(s, catalog)) {
        return Ok(("INSUFFICIENT_SCOPE", None));
    }
    if let Some(quota) = key.requests_quota {
        let used = match state.usage.used(&key.org_id, "requests", now) {
            Some(used) => used,
            None => state.usage.load(&key.org_id, "requests", now).await?,
        };
        if u64::try_from(used).unwrap_or(0).saturating_add(cost) > quota {
            return Ok(("QUOTA_EXCEEDED", None));
        }
    }
    let decision = state.limiter.check(&key.rate_key, key.quota, cost).await?;
    let code = if decision.allowed {
        "VALID"
    } else {
        "RATE_LIMITED"
    };
    Ok((code, Some(decision)))
}

/// Serializes straight to the body (no intermediate JSON tree).
fn respond(verdict: Verdict) -> ApiResult<Response> {
    let body =
        serde_json::to_vec(&Data { data: verdict }).map_err(|e| ApiError::Internal(e.into()))?;
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}
