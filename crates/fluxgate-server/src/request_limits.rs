//! Where rate limits apply — per client IP on the unauthenticated auth endpoints ([`IpLimit`]),
//! per user on JWT-authenticated calls ([`enforce`] from the `AuthUser` extractor) — and the
//! `X-RateLimit-*` headers every limited response carries ([`LimitSlot`]).

use crate::error::{ApiError, ApiResult};
use crate::extract::ClientInfo;
use crate::limiter::Sharing;
use crate::state::AppState;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::HeaderValue;
use axum::response::Response;
use fluxgate_core::ratelimit::{Decision, Quota};
use fluxgate_store::{KeyId, OrgId};
use std::sync::{Arc, Mutex};

/// What the request context needs back from a request once it is answered: the rate-limit
/// decision (for the response headers) and the API key that authenticated it (to attribute the
/// call). The request context middleware puts one in every request.
#[derive(Clone, Default)]
pub struct LimitSlot(Arc<Mutex<SlotState>>);

#[derive(Default)]
struct SlotState {
    decision: Option<Decision>,
    key: Option<(OrgId, KeyId)>,
}

impl LimitSlot {
    fn get(&self) -> Option<Decision> {
        self.0.lock().ok().and_then(|s| s.decision)
    }

    fn set(&self, decision: Decision) {
        if let Ok(mut slot) = self.0.lock() {
            slot.decision = Some(decision);
        }
    }

    /// Notes the (org, key) that authenticated the request.
    pub fn set_key(&self, org_id: &OrgId, key_id: &KeyId) {
        if let Ok(mut slot) = self.0.lock() {
            slot.key = Some((org_id.clone(), key_id.clone()));
        }
    }

    /// The (org, key) that authenticated the request, if a key did.
    pub fn key(&self) -> Option<(OrgId, KeyId)> {
        self.0.lock().ok().and_then(|s| s.key.clone())
    }

    /// Writes `X-RateLimit-Limit`, `-Remaining` and `-Reset` (Unix seconds) from the decision.
    pub fn write_headers(&self, response: &mut Response) {
        let Some(decision) = self.get() else { return };
        let reset = crate::clock::now() as u64 + decision.reset_after_secs();
        let headers = response.headers_mut();
        for (name, value) in [
            ("x-ratelimit-limit", decision.limit),
            ("x-ratelimit-remaining", decision.remaining),
            ("x-ratelimit-reset", reset),
        ] {
            if let Ok(value) = HeaderValue::from_str(&value.to_string()) {
                headers.insert(name, value);
            }
        }
    }
}

/// Takes `cost` from `key`'s allowance under `quota` (shared as `sharing` says), once per
/// request (a second limiter on the same request is not charged again): 429 `RATE_LIMITED`
/// when it is spent.
pub async fn enforce(
    state: &AppState,
    parts: &Parts,
    key: &str,
    quota: Quota,
    sharing: Sharing,
    cost: u64,
) -> ApiResult<Decision> {
    let slot = parts.extensions.get::<LimitSlot>();
    if let Some(decision) = slot.and_then(LimitSlot::get) {
        return Ok(decision);
    }
    let decision = state.limiter.spend(key, quota, cost, sharing).await?;
    if let Some(slot) = slot {
        slot.set(decision);
    }
    if decision.allowed {
        Ok(decision)
    } else {
        Err(ApiError::RateLimited {
            retry_after: decision.retry_after_secs(),
        })
    }
}

/// The per-IP limit of the unauthenticated auth endpoints (`rate_limits.ip`), keyed by the
/// client IP as [`ClientInfo`] determines it (the socket peer, or `X-Forwarded-For` from a
/// trusted proxy).
pub struct IpLimit;

impl FromRequestParts<AppState> for IpLimit {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let client = ClientInfo::from_request_parts(parts, state).await?;
        let ip = client.ip.as_deref().unwrap_or("unknown");
        let quota = Quota::from_rate(state.config.rate_limits.ip);
        let key = format!("ip:{ip}");
        enforce(state, parts, &key, quota, Sharing::Exact, 1).await?;
        Ok(Self)
    }
}
