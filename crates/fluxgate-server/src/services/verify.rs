//! Verifying a presented API key: the one call a product backend makes per inbound request.
//! A warm key is answered from memory — the key cache, the rate limiter and the usage recorder —
//! with no database round trip and no waiting for usage writes.

use crate::clock::rfc3339;
use crate::error::{ApiError, ApiResult};
use crate::keycache::{CachedKey, KeyHash, Lookup};
use crate::state::AppState;
use crate::usage_recorder::Attribution;
use fluxgate_core::ratelimit::Decision;
use fluxgate_core::{apikey, cost};
use fluxgate_proto::{OrgRef, RateLimitState, Verdict, VerifyRequest};
use std::sync::Arc;

/// The verdict on a presented key: `VALID`, or why not (`MALFORMED`, `NOT_FOUND`, `REVOKED`,
/// `EXPIRED`, `ORG_DISABLED`, `INSUFFICIENT_SCOPE`, `QUOTA_EXCEEDED`, `RATE_LIMITED`), with the
/// key's context. A valid call takes its checked `cost` from the key's rate limit and its org's
/// monthly `requests` quota; the call and any cached calls it settles are attributed.
pub async fn verify(state: &AppState, request: VerifyRequest, now: i64) -> ApiResult<Verdict> {
    let cost = cost::verify_cost(request.cost, &request.cached_calls)?;
    if request
        .endpoint
        .as_ref()
        .is_some_and(|e| e.len() > cost::MAX_ENDPOINT_LEN)
    {
        return Err(ApiError::field(
            "endpoint",
            "must be at most 200 characters",
        ));
    }
    if apikey::parse(&request.key).is_err() {
        return Ok(refused("MALFORMED"));
    }
    let Some(key) = known_key(state, &request.key, now).await? else {
        return Ok(refused("NOT_FOUND"));
    };
    let (code, decision) = judge(state, &key, &request.scopes, cost, now).await?;
    let attribute = |endpoint: &str, outcome: &str, calls: u64| {
        let call = Attribution {
            org_id: &key.org_id,
            key_id: &key.key_id,
            endpoint,
            outcome,
        };
        state.usage.count_calls(call, calls, now);
    };
    attribute(request.endpoint.as_deref().unwrap_or(""), code, 1);
    if code == "VALID" {
        for (endpoint, &calls) in &request.cached_calls {
            attribute(endpoint, "VALID", calls);
        }
    }
    let mut verdict = verdict_of(&key, code);
    if let Some(decision) = decision {
        verdict.ratelimit = Some(RateLimitState {
            limit: decision.limit,
            remaining: decision.remaining,
            reset: u64::try_from(now)
                .unwrap_or(0)
                .saturating_add(decision.reset_after_secs()),
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
    Ok(verdict)
}

/// The context of a well-formed presented key, or None if no key has that secret. A secret
/// being rotated out has its use noted, so its owner sees whether it is still called.
pub async fn known_key(
    state: &AppState,
    presented: &str,
    now: i64,
) -> ApiResult<Option<Arc<CachedKey>>> {
    let hash = KeyHash::of(presented);
    match state
        .keys
        .get(&hash, state.store.as_ref(), &state.config)
        .await?
    {
        Lookup::Found(key) => {
            if key.secret_retires_at.is_some() {
                state.usage.touch_retiring_secret(&hash.hex, now);
            }
            Ok(Some(key))
        }
        Lookup::Unknown => Ok(None),
    }
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

/// The verdict on a known key: its whole context, with `code`.
fn verdict_of(key: &CachedKey, code: &'static str) -> Verdict {
    Verdict {
        valid: code == "VALID",
        code: code.to_owned(),
        key_id: Some(key.key_id.to_string()),
        org: Some(OrgRef {
            id: key.org_id.to_string(),
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
