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
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// The routes of this module.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(verify))
}

/// `POST /keys/verify`
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VerifyBody {
    /// The key your caller presented.
    #[schema(value_type = String)]
    key: String,
    /// Scopes the key must hold (implications honoured).
    #[serde(default)]
    scopes: Vec<String>,
    /// The endpoint being called, for usage attribution.
    endpoint: Option<String>,
    /// Units of rate limit and quota this call takes (default 1, 0–10000).
    cost: Option<u64>,
    /// Calls a client admitted from its cached verdict of this key since its previous verify,
    /// by endpoint (at most 100 endpoints, each count below 10000). When the verify is `VALID`
    /// they are attributed to the key as `VALID` calls; they must be paid for in `cost` (their
    /// sum + 1 ≤ `cost`).
    #[serde(default)]
    cached_calls: BTreeMap<String, u64>,
}

/// The org part of the answer.
#[derive(Serialize)]
struct OrgView<'a> {
    id: &'a str,
    name: &'a str,
    external_id: Option<&'a str>,
}

/// Rate-limit state after this call.
#[derive(Serialize)]
struct RateLimitView {
    limit: u64,
    remaining: u64,
    reset: u64,
}

/// The answer: `valid`, `code`, and as much context as the key has.
#[derive(Serialize, Default)]
struct Verdict<'a> {
    valid: bool,
    code: &'static str,
    key_id: Option<&'a str>,
    org: Option<OrgView<'a>>,
    plan: Option<&'a str>,
    scopes: Option<&'a [String]>,
    entitlements: Option<&'a [String]>,
    ratelimit: Option<RateLimitView>,
    expires_at: Option<String>,
    metadata: Option<&'a Value>,
    environment: Option<&'a str>,
}

impl<'a> Verdict<'a> {
    fn refused(code: &'static str) -> Self {
        Self {
            code,
            ..Self::default()
        }
    }

    fn of(key: &'a CachedKey, code: &'static str) -> Self {
        Self {
            valid: code == "VALID",
            code,
            key_id: Some(&key.key_id),
            org: Some(OrgView {
                id: &key.org_id,
                name: &key.org_name,
                external_id: key.org_external_id.as_deref(),
            }),
            plan: Some(&key.plan),
            scopes: Some(&key.scopes),
            entitlements: Some(&key.entitlements),
            ratelimit: None,
            expires_at: key.expires_at.map(rfc3339),
            metadata: Some(&key.metadata),
            environment: Some(&key.environment),
        }
    }
}

#[derive(Serialize)]
struct Envelope<'a> {
    data: Verdict<'a>,
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
#[utoipa::path(post, path = "/keys/verify", tag = "keys", request_body = VerifyBody,
    security(("bearer" = ["keys:verify"])),
    responses((status = 200, description = "the verdict (always 200; see `valid` and `code`)"),
              (status = 403, description = "the caller lacks keys:verify")))]
async fn verify(
    State(state): State<AppState>,
    _verifier: Verifier,
    ApiJson(body): ApiJson<VerifyBody>,
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
        return respond(Verdict::refused("MALFORMED"));
    }
    let hash = KeyHash::of(&body.key);
    let key = match state
        .keys
        .get(&hash, state.store.as_ref(), &state.config)
        .await?
    {
        Lookup::Found(key) => key,
        Lookup::Unknown => return respond(Verdict::refused("NOT_FOUND")),
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
    let mut verdict = Verdict::of(&key, code);
    if let Some(decision) = decision {
        verdict.ratelimit = Some(RateLimitView {
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
fn respond(verdict: Verdict<'_>) -> ApiResult<Response> {
    let body = serde_json::to_vec(&Envelope { data: verdict })
        .map_err(|e| ApiError::Internal(e.into()))?;
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}
