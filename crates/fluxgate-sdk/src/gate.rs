//! The layer's decision on one presented key: verify through Fluxgate, with a cache of verdicts
//! that lives at most a second (so it never outlives a revocation by more) and spends the key's
//! remaining allowance locally, charging what it spent on the next verify.

use crate::client::{Error, Flux};
use crate::keys::{KeyContext, RateLimitState};
use fluxgate_core::apikey;
use fluxgate_core::permission::PermissionPattern;
use fluxgate_core::secret::Secret;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

/// The longest a verdict may be reused: a revoked key is refused within this.
pub(crate) const MAX_CACHE_TTL: Duration = Duration::from_secs(1);
const SHARDS: usize = 16;
/// Verdicts kept per shard; beyond this, new keys are verified without being cached.
const ENTRIES_PER_SHARD: usize = 4096;
/// Calls one verdict admits before Fluxgate is asked again, so what is owed always fits in one
/// verify's `cost` (Fluxgate accepts up to 10,000).
const MAX_UNBILLED: u64 = 5_000;

/// What the gate is configured with.
#[derive(Clone)]
pub(crate) struct GateSettings {
    pub(crate) flux: Flux,
    pub(crate) scopes: Vec<String>,
    pub(crate) cache_ttl: Duration,
}

/// Why a request is turned away.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Refusal {
    /// No key, or one that is malformed, unknown, revoked, expired or of a disabled org.
    Unauthorized,
    /// The key lacks `required` (one of the layer's scopes).
    InsufficientScope { required: String },
    /// The key's rate limit is spent.
    RateLimited(RateLimitState),
    /// The org's monthly `requests` quota is used up.
    QuotaExceeded,
    /// Fluxgate could not be asked.
    Unavailable,
}

/// Admit (with the key's context) or refuse.
pub(crate) type Admission = Result<KeyContext, Refusal>;

enum Verdict {
    Valid {
        context: Box<KeyContext>,
        /// Kept to charge `unbilled` when the entry goes stale without another request.
        key: Secret<String>,
        /// Calls admitted from the cache that Fluxgate has not been charged for yet; the entry
        /// admits while this is below the allowance the verify reported (and `MAX_UNBILLED`).
        unbilled: u64,
    },
    Refused(Refusal),
}

struct Entry {
    /// When the verify that produced it was *sent*, so its age bounds staleness.
    asked_at: Instant,
    verdict: Verdict,
}

/// Verifies keys for a layer; shared by every service the layer makes.
pub(crate) struct Gate {
    pub(crate) settings: GateSettings,
    shards: Vec<Mutex<HashMap<[u8; 32], Entry>>>,
    sweeper_started: AtomicBool,
}

impl Gate {
    pub(crate) fn new(settings: GateSettings) -> Self {
        Self {
            settings,
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            sweeper_started: AtomicBool::new(false),
        }
    }

    fn shard(&self, hash: &[u8; 32]) -> MutexGuard<'_, HashMap<[u8; 32], Entry>> {
        let shard = &self.shards[usize::from(hash[0]) % SHARDS];
        shard
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Decides on the key a request presented.
    pub(crate) async fn admit(self: &Arc<Self>, presented: Option<&str>) -> Admission {
        let Some(key) = presented.filter(|key| apikey::parse(key).is_ok()) else {
            return Err(Refusal::Unauthorized); // decided here: no call for a malformed key
        };
        let caching = !self.settings.cache_ttl.is_zero();
        let hash: [u8; 32] = Sha256::digest(key.as_bytes()).into();
        let mut carried = 0;
        if caching {
            self.start_sweeper();
            let mut shard = self.shard(&hash);
            if let Some(entry) = shard.get_mut(&hash) {
                let fresh = entry.asked_at.elapsed() < self.settings.cache_ttl;
                match &mut entry.verdict {
                    Verdict::Refused(refusal) if fresh => return Err(refusal.clone()),
                    Verdict::Valid {
                        context, unbilled, ..
                    } => {
                        let allowance = context.ratelimit.remaining.min(MAX_UNBILLED);
                        if fresh && *unbilled < allowance {
                            *unbilled += 1;
                            let mut context = KeyContext::clone(context);
                            context.ratelimit.remaining -= *unbilled;
                            return Ok(context);
                        }
                        carried = std::mem::take(unbilled);
                    }
                    Verdict::Refused(_) => {}
                }
            }
        }
        let asked_at = Instant::now();
        let answer = self.verify(key, carried + 1).await;
        let (admission, verdict) = match answer {
            Ok(context) => {
                let verdict = Verdict::Valid {
                    context: Box::new(context.clone()),
                    key: Secret::new(key.to_owned()),
                    unbilled: 0,
                };
                (Ok(context), Some(verdict))
            }
            Err(Error::InvalidKey { code, details }) => {
                let mut refusal = refusal_for(&code, &details, &self.settings.scopes);
                if code == "RATE_LIMITED" && carried > 0 {
                    // the cached calls were served: charge them even though this one is refused,
                    // and report the allowance as it is after that
                    match self.verify(key, carried).await {
                        Ok(context) => refusal = Refusal::RateLimited(context.ratelimit),
                        Err(Error::InvalidKey { code, details }) if code == "RATE_LIMITED" => {
                            refusal = refusal_for(&code, &details, &self.settings.scopes);
                        }
                        Err(_) => {}
                    }
                }
                let lasting = !matches!(refusal, Refusal::RateLimited(_) | Refusal::QuotaExceeded);
                (
                    Err(refusal.clone()),
                    lasting.then_some(Verdict::Refused(refusal)),
                )
            }
            Err(_) => {
                if carried > 0 {
                    self.return_unbilled(&hash, carried);
                }
                return Err(Refusal::Unavailable);
            }
        };
        if caching {
            let mut shard = self.shard(&hash);
            match verdict {
                Some(verdict) => {
                    if shard.len() >= ENTRIES_PER_SHARD {
                        let ttl = self.settings.cache_ttl;
                        shard.retain(|_, entry| entry.asked_at.elapsed() < ttl);
                    }
                    if shard.len() < ENTRIES_PER_SHARD {
                        shard.insert(hash, Entry { asked_at, verdict });
                    }
                }
                None => {
                    shard.remove(&hash);
                }
            }
        }
        admission
    }

    async fn verify(&self, key: &str, cost: u64) -> Result<KeyContext, Error> {
        self.settings
            .flux
            .keys()
            .verify_charging(key, &self.settings.scopes, cost)
            .await
    }

    /// Puts back calls that could not be charged because Fluxgate was unreachable.
    fn return_unbilled(&self, hash: &[u8; 32], calls: u64) {
        if let Some(Entry {
            verdict: Verdict::Valid { unbilled, .. },
            ..
        }) = self.shard(hash).get_mut(hash)
        {
            *unbilled += calls;
        }
    }

    /// Starts, once, the task that drops stale verdicts and charges what they admitted.
    fn start_sweeper(self: &Arc<Self>) {
        if self.sweeper_started.swap(true, Ordering::Relaxed) {
            return;
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(sweep(Arc::downgrade(self), self.settings.cache_ttl));
        }
    }

    /// Removes stale entries; returns the keys whose cached calls are still to be charged.
    fn take_stale(&self) -> Vec<(Secret<String>, u64)> {
        let ttl = self.settings.cache_ttl;
        let mut unbilled_calls = Vec::new();
        for shard in &self.shards {
            let mut shard = shard
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            shard.retain(|_, entry| {
                if entry.asked_at.elapsed() < ttl {
                    return true;
                }
                if let Verdict::Valid { key, unbilled, .. } = &entry.verdict {
                    if *unbilled > 0 {
                        unbilled_calls.push((Secret::new(key.expose().clone()), *unbilled));
                    }
                }
                false
            });
        }
        unbilled_calls
    }
}

/// Every `ttl`, charges the calls stale verdicts admitted and forgets them; ends with the gate.
async fn sweep(gate: Weak<Gate>, ttl: Duration) {
    let period = ttl.max(Duration::from_millis(100));
    loop {
        tokio::time::sleep(period).await;
        let Some(gate) = gate.upgrade() else { return };
        for (key, calls) in gate.take_stale() {
            let _ = gate.verify(key.expose(), calls).await;
        }
    }
}

/// The refusal a verify code means for the caller.
fn refusal_for(code: &str, details: &serde_json::Value, required: &[String]) -> Refusal {
    match code {
        "RATE_LIMITED" => serde_json::from_value(details["ratelimit"].clone())
            .map(Refusal::RateLimited)
            .unwrap_or(Refusal::RateLimited(RateLimitState {
                limit: 0,
                remaining: 0,
                reset: 0,
            })),
        "QUOTA_EXCEEDED" => Refusal::QuotaExceeded,
        "INSUFFICIENT_SCOPE" => Refusal::InsufficientScope {
            required: missing_scope(details, required),
        },
        _ => Refusal::Unauthorized,
    }
}

/// The first required scope none of the key's scope patterns names (implications aside).
fn missing_scope(details: &serde_json::Value, required: &[String]) -> String {
    let held: Vec<PermissionPattern> = details["scopes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|scope| PermissionPattern::parse(scope.as_str()?).ok())
        .collect();
    required
        .iter()
        .find(|scope| !held.iter().any(|pattern| pattern.matches(scope)))
        .or(required.first())
        .cloned()
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn verify_codes_become_the_callers_refusals() {
        let scopes = vec!["events:read".to_owned(), "events:write".to_owned()];
        for code in [
            "NOT_FOUND",
            "REVOKED",
            "EXPIRED",
            "ORG_DISABLED",
            "MALFORMED",
        ] {
            assert_eq!(
                refusal_for(code, &json!({}), &scopes),
                Refusal::Unauthorized
            );
        }
        assert_eq!(
            refusal_for(
                "INSUFFICIENT_SCOPE",
                &json!({ "scopes": ["events:read"] }),
                &scopes
            ),
            Refusal::InsufficientScope {
                required: "events:write".into()
            }
        );
        assert_eq!(
            refusal_for(
                "RATE_LIMITED",
                &json!({ "ratelimit": { "limit": 5, "remaining": 0, "reset": 99 } }),
                &scopes
            ),
            Refusal::RateLimited(RateLimitState {
                limit: 5,
                remaining: 0,
                reset: 99
            })
        );
        assert_eq!(
            refusal_for("QUOTA_EXCEEDED", &json!({}), &scopes),
            Refusal::QuotaExceeded
        );
    }
}
