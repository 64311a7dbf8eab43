//! Verifying a presented API key: the one call a product backend makes per inbound request.
//! A warm key is answered from memory — the key cache, the rate limiter and the usage recorder —
//! with no database round trip and no waiting for usage writes.

use crate::clock::rfc3339;
use crate::error::{ApiError, ApiResult};
use crate::flagbook::KeyEntitlements;
use crate::keycache::{CachedKey, KeyHash, Lookup};
use crate::limiter::Sharing;
use crate::state::AppState;
use crate::usage_recorder::Attribution;
use fluxgate_core::named_limit;
use fluxgate_core::ratelimit::Decision;
use fluxgate_core::validation::FieldErrors;
use fluxgate_core::{apikey, cost};
use fluxgate_proto::{
    Data, LimitSpend, NamedLimitState, OrgRef, RateLimitState, Verdict, VerifyRequest,
};
use fluxgate_store::CreditSpend;
use std::net::IpAddr;
use std::sync::Arc;

/// A verdict as the API sends it (`{"data": …}`).
pub enum Answer {
    /// Any verdict, to be serialised.
    Verdict(Box<Verdict>),
    /// A `VALID` verdict already serialised: the key's context prepared once per cached key
    /// ([`PreparedValid`]) with this call's rate-limit state put in.
    Prepared(Vec<u8>),
}

impl Answer {
    /// The JSON body.
    pub fn into_body(self) -> ApiResult<Vec<u8>> {
        match self {
            Self::Prepared(body) => Ok(body),
            Self::Verdict(verdict) => serde_json::to_vec(&Data { data: *verdict })
                .map_err(|e| ApiError::Internal(e.into())),
        }
    }
}

/// A cached key's `VALID` answer serialised once — the same bytes serialising its verdict gives, split
/// where the per-call `ratelimit` value goes — so a warm verify neither clones the context
/// (scopes, entitlements, metadata) nor serialises it again.
#[derive(Debug)]
pub struct PreparedValid {
    /// The answer with `"ratelimit":` followed directly by the rest.
    bytes: Box<[u8]>,
    /// Where the rate-limit state goes.
    at: usize,
}

impl PreparedValid {
    /// Serialises `key`'s `VALID` answer (with what its org may do) without its rate-limit
    /// state. None if it cannot.
    fn of(key: &CachedKey, entitled: &KeyEntitlements) -> Option<Self> {
        const FIELD: &[u8] = b"\"ratelimit\":null";
        let mut bytes = serde_json::to_vec(&Data {
            data: verdict_of(key, entitled, "VALID"),
        })
        .ok()?;
        // the first match is the field: inside a JSON string a quote is always escaped
        let start = bytes.windows(FIELD.len()).position(|w| w == FIELD)?;
        let at = start + FIELD.len() - "null".len();
        bytes.drain(at..start + FIELD.len());
        Some(Self {
            bytes: bytes.into_boxed_slice(),
            at,
        })
    }

    /// The answer with `ratelimit` filled in: three integers written straight in, as serde
    /// writes that struct (the test below holds the two to the same bytes).
    fn with(&self, ratelimit: &RateLimitState) -> Vec<u8> {
        let RateLimitState {
            limit,
            remaining,
            reset,
        } = *ratelimit;
        let mut digits = itoa::Buffer::new();
        let mut body = Vec::with_capacity(self.bytes.len() + 96);
        body.extend_from_slice(&self.bytes[..self.at]);
        body.extend_from_slice(b"{\"limit\":");
        body.extend_from_slice(digits.format(limit).as_bytes());
        body.extend_from_slice(b",\"remaining\":");
        body.extend_from_slice(digits.format(remaining).as_bytes());
        body.extend_from_slice(b",\"reset\":");
        body.extend_from_slice(digits.format(reset).as_bytes());
        body.push(b'}');
        body.extend_from_slice(&self.bytes[self.at..]);
        body
    }
}

/// What a presented key string turned out to be.
pub enum Presented {
    /// The secret of a key: its context (which may still refuse it: revoked, expired, …).
    Known(Arc<CachedKey>),
    /// Well-formed, but no key has this secret.
    Unknown,
    /// Not a key at all.
    Malformed,
}

/// The verdict on a presented key: `VALID`, or why not (`MALFORMED`, `NOT_FOUND`, `REVOKED`,
/// `EXPIRED`, `ORG_DISABLED`, `FORBIDDEN_IP`, `INSUFFICIENT_SCOPE`, `QUOTA_EXCEEDED`, `RATE_LIMITED`,
/// `USAGE_EXCEEDED`), with the key's context. A valid call takes its checked `cost` from the
/// key's rate limit, its credits and its org's monthly `requests` quota; the call and any
/// cached calls it settles are attributed.
pub async fn verify(state: &AppState, request: VerifyRequest, now: i64) -> ApiResult<Answer> {
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
    let spends = named_spends(&request.ratelimits)?;
    let caller_ip = match request.ip.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(text) => Some(
            text.parse::<IpAddr>()
                .map_err(|_| ApiError::field("ip", "must be an IPv4 or IPv6 address"))?,
        ),
    };
    let key = match presented(state, &request.key, now).await? {
        Presented::Known(key) => key,
        Presented::Unknown => return Ok(Answer::Verdict(Box::new(refused("NOT_FOUND")))),
        Presented::Malformed => return Ok(Answer::Verdict(Box::new(refused("MALFORMED")))),
    };
    let Judged {
        code,
        decision,
        credits,
        named,
        limited_by,
    } = judge(state, &key, &request.scopes, cost, &spends, caller_ip, now).await?;
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
    let ratelimit = decision.map(|decision| RateLimitState {
        limit: decision.limit,
        remaining: decision.remaining,
        reset: reset_at(now, &decision),
    });
    if code == "VALID" {
        state.usage.add(
            &key.org_id,
            "requests",
            i64::try_from(cost).unwrap_or(i64::MAX),
            now,
        );
        if key.use_due(now) {
            state.usage.touch_key(&key.key_id, now);
        }
    }
    let entitled = state.flags.entitlements_of(&key, now);
    if let (true, Some(ratelimit), None, None) = (code == "VALID", &ratelimit, &credits, &named) {
        let prepared = entitled
            .valid_answer
            .get_or_init(|| PreparedValid::of(&key, &entitled));
        if let Some(prepared) = prepared {
            return Ok(Answer::Prepared(prepared.with(ratelimit)));
        }
    }
    let mut verdict = verdict_of(&key, &entitled, code);
    verdict.ratelimit = ratelimit;
    verdict.credits = credits;
    verdict.ratelimits = named;
    verdict.rate_limited_by = limited_by;
    Ok(Answer::Verdict(Box::new(verdict)))
}

/// What a presented key string is: a warm key straight from memory (its secret matched by
/// hash, so it is well-formed), else parsed — malformed text never reaches the cache — and
/// looked up. A secret being rotated out has its use noted, so its owner sees whether it is
/// still called.
pub async fn presented(state: &AppState, text: &str, now: i64) -> ApiResult<Presented> {
    presented_hashed(state, text, &KeyHash::of(text), now).await
}

/// [`presented`], for a caller that has hashed the text already.
pub async fn presented_hashed(
    state: &AppState,
    text: &str,
    hash: &KeyHash,
    now: i64,
) -> ApiResult<Presented> {
    let key = match state.keys.warm(hash) {
        Some(key) => key,
        None => {
            if apikey::parse(text).is_err() {
                return Ok(Presented::Malformed);
            }
            match state
                .keys
                .get(hash, state.store.as_ref(), &state.config)
                .await?
            {
                Lookup::Found(key) => key,
                Lookup::Unknown => return Ok(Presented::Unknown),
            }
        }
    };
    if key.secret_retires_at.is_some() {
        state.usage.touch_retiring_secret(&hash.hex(), now);
    }
    Ok(Presented::Known(key))
}

/// The named limits a verify spends, checked: at most ten, well-formed names, costs in range;
/// errors name the field.
fn named_spends(spends: &[LimitSpend]) -> ApiResult<Vec<(&str, u64)>> {
    let mut errors = FieldErrors::new();
    if spends.len() > named_limit::MAX_NAMED_LIMITS {
        errors.add(
            "ratelimits",
            format!("at most {}", named_limit::MAX_NAMED_LIMITS),
        );
    }
    let mut checked = Vec::with_capacity(spends.len());
    for (i, spend) in spends.iter().enumerate() {
        if !named_limit::is_name(&spend.name) {
            errors.add(
                format!("ratelimits[{i}].name"),
                "must be 1–64 of a-z, 0-9, _, -, . and :",
            );
        }
        let cost = spend.cost.unwrap_or(1);
        if cost > cost::MAX_COST {
            errors.add(
                format!("ratelimits[{i}].cost"),
                format!("must be between 0 and {}", cost::MAX_COST),
            );
        }
        checked.push((spend.name.as_str(), cost));
    }
    errors.into_result()?;
    Ok(checked)
}

/// A known key's verdict: its code, the limiter's decision when it was asked, the credits
/// when they were spent or found short, and the named limits spent.
struct Judged {
    code: &'static str,
    decision: Option<Decision>,
    credits: Option<fluxgate_proto::Credits>,
    named: Option<Vec<NamedLimitState>>,
    limited_by: Option<String>,
}

impl Judged {
    fn refused(code: &'static str) -> Self {
        Self {
            code,
            decision: None,
            credits: None,
            named: None,
            limited_by: None,
        }
    }
}

/// The verdict on a known key, in order: its standing, the caller's address (a key with an IP
/// allowlist), the required scopes, the org's monthly
/// quota, the key's rate limit, the named limits the call spends, then its credits (the last
/// three take something, each only when all before passed; what an earlier one took stays taken
/// when a later one refuses).
async fn judge(
    state: &AppState,
    key: &CachedKey,
    scopes: &[String],
    cost: u64,
    spends: &[(&str, u64)],
    caller_ip: Option<IpAddr>,
    now: i64,
) -> ApiResult<Judged> {
    if let Some(code) = key.refusal(now) {
        return Ok(Judged::refused(code));
    }
    // a key with an allowlist is refused when the caller's address is outside it, or unknown
    if !key.ip_allowlist.admits(caller_ip) {
        return Ok(Judged::refused("FORBIDDEN_IP"));
    }
    let catalog = &state.config.catalog;
    if !scopes.iter().all(|s| key.grants.allows(s, catalog)) {
        return Ok(Judged::refused("INSUFFICIENT_SCOPE"));
    }
    if let Some(quota) = key.requests_quota {
        let used = match state.usage.used(&key.org_id, "requests", now) {
            Some(used) => used,
            None => state.usage.load(&key.org_id, "requests", now).await?,
        };
        if u64::try_from(used).unwrap_or(0).saturating_add(cost) > quota {
            return Ok(Judged::refused("QUOTA_EXCEEDED"));
        }
    }
    let decision = state
        .limiter
        .spend(&key.rate_key, key.quota, cost, key.sharing)
        .await?;
    let mut judged = Judged {
        code: "RATE_LIMITED",
        decision: Some(decision),
        credits: None,
        named: None,
        limited_by: None,
    };
    if !decision.allowed {
        return Ok(judged);
    }
    if !spends.is_empty() {
        let mut states = Vec::with_capacity(spends.len());
        for &(name, spend) in spends {
            let Some(limit) = key.named_limit(name) else {
                states.push(NamedLimitState {
                    name: name.to_owned(),
                    scope: None,
                    limit: None,
                    remaining: None,
                    reset: None,
                });
                continue;
            };
            let decided = state
                .limiter
                .spend(&limit.bucket, limit.quota, spend, Sharing::Leased)
                .await?;
            states.push(NamedLimitState {
                name: name.to_owned(),
                scope: Some(limit.scope.to_owned()),
                limit: Some(decided.limit),
                remaining: Some(decided.remaining),
                reset: Some(reset_at(now, &decided)),
            });
            if !decided.allowed {
                judged.named = Some(states);
                judged.limited_by = Some(name.to_owned());
                return Ok(judged);
            }
        }
        judged.named = Some(states);
    }
    judged.code = "VALID";
    if let Some(policy) = &key.credits {
        let spent = state.credits.spend(&key.key_id, policy, cost, now).await?;
        let exhausted = match spent {
            CreditSpend::Spent(left) => {
                judged.credits = Some(policy.view(left, now));
                left == 0
            }
            CreditSpend::Short(left) => {
                judged.code = "USAGE_EXCEEDED";
                judged.credits = Some(policy.view(left, now));
                true
            }
            CreditSpend::Unlimited => false,
        };
        if exhausted {
            // once per refill period (per day for a key without refill)
            let period = match policy.refill {
                Some(_) => policy.period_start(now),
                None => now - now.rem_euclid(86_400),
            };
            crate::services::webhooks::credits_exhausted(
                state,
                &key.key_id,
                &key.org_id,
                period,
                now,
            );
        }
    }
    Ok(judged)
}

/// When a limit's allowance is full again, in Unix seconds.
fn reset_at(now: i64, decision: &Decision) -> u64 {
    u64::try_from(now)
        .unwrap_or(0)
        .saturating_add(decision.reset_after_secs())
}

/// The verdict on a known key: its whole context, with `code`.
fn verdict_of(key: &CachedKey, entitled: &KeyEntitlements, code: &'static str) -> Verdict {
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
        entitlements: Some(entitled.entitlements.clone()),
        flags: (!entitled.flags.is_empty()).then(|| entitled.flags.clone()),
        ratelimit: None,
        expires_at: key.expires_at.map(rfc3339),
        metadata: Some(key.metadata.clone()),
        environment: Some(key.environment.clone()),
        credits: None,
        ratelimits: None,
        rate_limited_by: None,
        ip_allowlist: (!key.ip_allowlist.is_open()).then(|| key.ip_allowlist.entries()),
    }
}

/// The verdict on a key that is not known (or not even well-formed): the code alone.
fn refused(code: &'static str) -> Verdict {
    Verdict {
        code: code.to_owned(),
        ..Verdict::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fluxgate_core::permission::Grants;
    use fluxgate_core::ratelimit::Quota;
    use fluxgate_core::units::Rate;
    use fluxgate_store::{KeyId, OrgId};
    use std::time::Duration;

    /// A key whose context holds text that looks like the field the prepared answer splits at.
    fn tricky_key() -> CachedKey {
        CachedKey {
            key_id: KeyId::generate(),
            org_id: OrgId::generate(),
            org_name: "Acme \"ratelimit\":null".into(),
            org_external_id: Some("\"ratelimit\":null".into()),
            org_is_operator: false,
            org_disabled: false,
            plan: "pro".into(),
            plan_entitlements: vec!["sso".into()],
            overrides: Vec::new(),
            entitlements: arc_swap::ArcSwapOption::empty(),
            requests_quota: None,
            scopes: vec!["read:things".into()],
            grants: Grants::new(Vec::new(), false),
            quota: Quota::from_rate(Rate {
                limit: 10,
                window: Duration::from_secs(60),
            }),
            rate_key: "key:x".into(),
            sharing: crate::limiter::Sharing::Leased,
            expires_at: Some(2_000_000_000),
            revoked_at: None,
            leaked_at: None,
            secret_retires_at: None,
            metadata: serde_json::json!({ "ratelimit": null, "note": "\"ratelimit\":null" }),
            environment: "live".into(),
            may_verify_keys: false,
            credits: None,
            named_limits: Vec::new(),
            ip_allowlist: Default::default(),
            use_noted_at: i64::MIN.into(),
        }
    }

    #[test]
    fn a_keys_use_is_due_once_per_precision() {
        let key = tricky_key();
        assert!(key.use_due(1_000), "the first use is noted");
        assert!(!key.use_due(1_001));
        assert!(!key.use_due(1_059));
        assert!(key.use_due(1_060), "a minute later, again");
        assert!(!key.use_due(1_061));
    }

    #[test]
    fn a_prepared_answer_is_the_verdict_with_its_rate_limit_state() {
        let key = tricky_key();
        let flags = crate::flagbook::FlagBook::new();
        let entitled = flags.entitlements_of(&key, 0);
        let prepared = PreparedValid::of(&key, &entitled).expect("prepares");
        for (limit, remaining, reset) in
            [(10, 7, 1_900_000_000), (0, 0, 0), (u64::MAX, 1, u64::MAX)]
        {
            let ratelimit = RateLimitState {
                limit,
                remaining,
                reset,
            };
            let body = prepared.with(&ratelimit);
            let mut verdict = verdict_of(&key, &entitled, "VALID");
            verdict.ratelimit = Some(ratelimit);
            let expected = serde_json::to_vec(&Data { data: verdict }).unwrap();
            assert_eq!(
                String::from_utf8(body).unwrap(),
                String::from_utf8(expected).unwrap()
            );
        }
    }
}
