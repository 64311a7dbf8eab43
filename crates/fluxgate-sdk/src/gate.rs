//! The layer's decision on one presented key: verify through Fluxgate, with a cache of verdicts
//! that lives at most a second (so it never outlives a revocation by more) and spends the key's
//! remaining allowance locally, charging what it spent on the next verify.

use crate::client::{Error, Flux};
use crate::keys::{KeyContext, RateLimitState};
use fluxgate_core::apikey;
use fluxgate_core::ip_allowlist::IpAllowlist;
use fluxgate_core::permission::PermissionPattern;
use fluxgate_core::secret::{ExposeSecret, SecretString};
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
const MAX_OWED: u64 = 5_000;
/// Endpoints one verify may settle cached calls for (Fluxgate's limit).
const MAX_OWED_ENDPOINTS: usize = 100;
/// The longest endpoint name Fluxgate takes.
const MAX_ENDPOINT_LEN: usize = 200;

/// What the gate is configured with.
#[derive(Clone)]
pub(crate) struct GateSettings {
    pub(crate) flux: Flux,
    pub(crate) scopes: Vec<String>,
    pub(crate) cache_ttl: Duration,
    /// Names a request's endpoint for usage attribution (none: calls are attributed unnamed).
    pub(crate) endpoint_of: Option<EndpointOf>,
    /// Named limits every request spends.
    pub(crate) limits: Vec<fluxgate_proto::LimitSpend>,
    /// Tells a request's client address (none: keys with an IP allowlist are refused).
    pub(crate) client_ip_of: Option<ClientIpOf>,
    /// Entitlements every key's org must have.
    pub(crate) entitlements: Vec<String>,
}

/// How a layer tells the address a request came from.
pub(crate) type ClientIpOf =
    Arc<dyn Fn(&http::request::Parts) -> Option<std::net::IpAddr> + Send + Sync>;

/// How a layer names the endpoint of a request.
pub(crate) type EndpointOf = Arc<dyn Fn(&http::request::Parts) -> Option<String> + Send + Sync>;

/// Calls admitted from a cached verdict and not settled with Fluxgate yet, by endpoint.
#[derive(Debug, Default)]
pub(crate) struct Owed {
    total: u64,
    by_endpoint: Vec<(String, u64)>,
}

impl Owed {
    fn add(&mut self, endpoint: &str, calls: u64) {
        self.total += calls;
        match self.by_endpoint.iter_mut().find(|(e, _)| e == endpoint) {
            Some((_, count)) => *count += calls,
            None => self.by_endpoint.push((endpoint.to_owned(), calls)),
        }
    }

    /// Whether one more call to `endpoint` can still be settled by a single verify.
    fn has_room_for(&self, endpoint: &str) -> bool {
        self.by_endpoint.len() < MAX_OWED_ENDPOINTS
            || self.by_endpoint.iter().any(|(e, _)| e == endpoint)
    }

    fn merge(&mut self, other: Owed) {
        for (endpoint, calls) in other.by_endpoint {
            self.add(&endpoint, calls);
        }
    }

    /// One owed call to stand as the verify's own call, and the rest as its `cached_calls`.
    fn split_one(mut self) -> Option<(String, Owed)> {
        let (endpoint, count) = self.by_endpoint.last_mut()?;
        let endpoint = endpoint.clone();
        *count -= 1;
        if *count == 0 {
            self.by_endpoint.pop();
        }
        self.total -= 1;
        Some((endpoint, self))
    }

    /// The calls by endpoint, as verify's `cached_calls` takes them.
    pub(crate) fn by_endpoint(&self) -> &[(String, u64)] {
        &self.by_endpoint
    }

    /// How many calls are owed in all.
    pub(crate) fn total(&self) -> u64 {
        self.total
    }
}

/// Why a request is turned away.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Refusal {
    /// No key, or one that is malformed, unknown, revoked, expired or of a disabled org.
    Unauthorized,
    /// The key lacks `required` (one of the layer's scopes).
    InsufficientScope { required: String },
    /// The key's org lacks `required` (one of the layer's entitlements).
    MissingEntitlement { required: String },
    /// The key's rate limit is spent.
    RateLimited(RateLimitState),
    /// A named limit is spent: its name, and when its allowance is full again (Unix seconds).
    NamedLimited { name: String, reset: u64 },
    /// The org's monthly `requests` quota is used up.
    QuotaExceeded,
    /// The key's usage credits are spent.
    UsageExceeded,
    /// The key has an IP allowlist and the request came from outside it (or from an address
    /// the layer could not tell).
    ForbiddenIp,
    /// Fluxgate could not be asked.
    Unavailable,
}

/// Admit (with the key's context) or refuse.
pub(crate) type Admission = Result<KeyContext, Refusal>;

enum Verdict {
    Valid {
        context: Box<KeyContext>,
        /// Kept to settle `owed` when the entry goes stale without another request.
        key: SecretString,
        /// Calls admitted from the cache that Fluxgate has not been charged for yet; the entry
        /// admits while they are fewer than the allowance the verify reported (and `MAX_OWED`).
        owed: Owed,
        /// The address of the last request admitted, for settling `owed` (a key with an IP
        /// allowlist is verified from it).
        ip: Option<std::net::IpAddr>,
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
        locked(&self.shards[usize::from(hash[0]) % SHARDS])
    }

    /// Decides on the key a request to `endpoint` ("" when unnamed) presented.
    pub(crate) async fn admit(
        self: &Arc<Self>,
        presented: Option<&str>,
        endpoint: &str,
        ip: Option<std::net::IpAddr>,
    ) -> Admission {
        let Some(key) = presented.filter(|key| apikey::parse(key).is_ok()) else {
            return Err(Refusal::Unauthorized); // decided here: no call for a malformed key
        };
        let endpoint = truncated(endpoint, MAX_ENDPOINT_LEN);
        let caching = !self.settings.cache_ttl.is_zero();
        let hash: [u8; 32] = Sha256::digest(key.as_bytes()).into();
        let mut carried = Owed::default();
        if caching {
            self.start_sweeper();
            let mut shard = self.shard(&hash);
            if let Some(entry) = shard.get_mut(&hash) {
                let fresh = entry.asked_at.elapsed() < self.settings.cache_ttl;
                match &mut entry.verdict {
                    Verdict::Refused(refusal) if fresh => return Err(refusal.clone()),
                    Verdict::Valid { context, .. }
                        if fresh && !IpAllowlist::stored(&context.ip_allowlist).admits(ip) =>
                    {
                        // the key's list, from its verdict, decides the next caller here too
                        return Err(Refusal::ForbiddenIp);
                    }
                    Verdict::Valid {
                        context,
                        owed,
                        ip: last_ip,
                        ..
                    } => {
                        // a key with credits, or a layer spending named limits, asks every
                        // time: what they spend is exact
                        let exact = context.credits.is_some() || !self.settings.limits.is_empty();
                        let allowance = match exact {
                            true => 0,
                            false => context.ratelimit.remaining.min(MAX_OWED),
                        };
                        if fresh && owed.total < allowance && owed.has_room_for(endpoint) {
                            owed.add(endpoint, 1);
                            *last_ip = ip.or(*last_ip);
                            let mut context = KeyContext::clone(context);
                            context.ratelimit.remaining -= owed.total;
                            return Ok(context);
                        }
                        carried = std::mem::take(owed);
                    }
                    Verdict::Refused(_) => {}
                }
            }
        }
        let asked_at = Instant::now();
        let answer = self.verify(key, endpoint, &carried, ip).await;
        let (admission, verdict) = match answer {
            Ok(context) => {
                let verdict = Verdict::Valid {
                    context: Box::new(context.clone()),
                    key: SecretString::from(key.to_owned()),
                    owed: Owed::default(),
                    ip,
                };
                (Ok(context), Some(verdict))
            }
            Err(Error::InvalidKey { code, details }) => {
                let mut refusal = refusal_for(&code, &details, &self.settings.scopes);
                if code == "RATE_LIMITED" {
                    // the cached calls were served: settle them even though this one is refused,
                    // and report the allowance as it is after that
                    match self.settle(key, carried, ip).await {
                        Some(Ok(context)) => refusal = Refusal::RateLimited(context.ratelimit),
                        Some(Err(Error::InvalidKey { code, details }))
                            if code == "RATE_LIMITED" =>
                        {
                            refusal = refusal_for(&code, &details, &self.settings.scopes);
                        }
                        _ => {}
                    }
                }
                let lasting = !matches!(
                    refusal,
                    Refusal::RateLimited(_)
                        | Refusal::NamedLimited { .. }
                        | Refusal::QuotaExceeded
                        | Refusal::UsageExceeded
                        | Refusal::ForbiddenIp
                );
                (
                    Err(refusal.clone()),
                    lasting.then_some(Verdict::Refused(refusal)),
                )
            }
            Err(_) => {
                self.return_owed(&hash, carried);
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

    /// Verifies `key` for a call to `endpoint`, settling the `owed` calls: they are attributed
    /// with it and paid for in its cost.
    async fn verify(
        &self,
        key: &str,
        endpoint: &str,
        owed: &Owed,
        ip: Option<std::net::IpAddr>,
    ) -> Result<KeyContext, Error> {
        self.settings
            .flux
            .keys()
            .verify_settling(
                key,
                &self.settings.scopes,
                endpoint,
                owed,
                &self.settings.limits,
                ip,
            )
            .await
    }

    /// Settles owed calls on their own: one of them stands as the verify's call. `None` when
    /// nothing is owed.
    async fn settle(
        &self,
        key: &str,
        owed: Owed,
        ip: Option<std::net::IpAddr>,
    ) -> Option<Result<KeyContext, Error>> {
        let (endpoint, rest) = owed.split_one()?;
        Some(self.verify(key, &endpoint, &rest, ip).await)
    }

    /// Puts back calls that could not be settled because Fluxgate was unreachable.
    fn return_owed(&self, hash: &[u8; 32], calls: Owed) {
        if calls.total == 0 {
            return;
        }
        if let Some(Entry {
            verdict: Verdict::Valid { owed, .. },
            ..
        }) = self.shard(hash).get_mut(hash)
        {
            owed.merge(calls);
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

    /// Removes stale entries; returns the keys whose cached calls are still to be settled.
    fn take_stale(&self) -> Vec<(SecretString, Owed, Option<std::net::IpAddr>)> {
        let ttl = self.settings.cache_ttl;
        let mut unsettled = Vec::new();
        for shard in &self.shards {
            locked(shard).retain(|_, entry| {
                if entry.asked_at.elapsed() < ttl {
                    return true;
                }
                if let Verdict::Valid { key, owed, ip, .. } = &mut entry.verdict {
                    if owed.total > 0 {
                        unsettled.push((
                            SecretString::from(key.expose_secret().to_owned()),
                            std::mem::take(owed),
                            *ip,
                        ));
                    }
                }
                false
            });
        }
        unsettled
    }
}

/// Every `ttl`, settles the calls stale verdicts admitted and forgets them; ends with the gate.
async fn sweep(gate: Weak<Gate>, ttl: Duration) {
    let period = ttl.max(Duration::from_millis(100));
    loop {
        tokio::time::sleep(period).await;
        let Some(gate) = gate.upgrade() else { return };
        for (key, owed, ip) in gate.take_stale() {
            let _ = gate.settle(key.expose_secret(), owed, ip).await;
        }
    }
}

/// A shard's map; a panic elsewhere while it was held leaves verdicts that are still usable.
fn locked(shard: &Mutex<HashMap<[u8; 32], Entry>>) -> MutexGuard<'_, HashMap<[u8; 32], Entry>> {
    shard
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// At most `max` bytes of `text`, cut at a character boundary.
fn truncated(text: &str, max: usize) -> &str {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// The refusal a verify code means for the caller.
fn refusal_for(code: &str, details: &serde_json::Value, required: &[String]) -> Refusal {
    if let (true, Some(name)) = (code == "RATE_LIMITED", details["rate_limited_by"].as_str()) {
        let reset = details["ratelimits"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|limit| limit["name"] == name)
            .and_then(|limit| limit["reset"].as_u64())
            .unwrap_or(0);
        return Refusal::NamedLimited {
            name: name.to_owned(),
            reset,
        };
    }
    match code {
        "RATE_LIMITED" => serde_json::from_value(details["ratelimit"].clone())
            .map(Refusal::RateLimited)
            .unwrap_or(Refusal::RateLimited(RateLimitState {
                limit: 0,
                remaining: 0,
                reset: 0,
            })),
        "QUOTA_EXCEEDED" => Refusal::QuotaExceeded,
        "USAGE_EXCEEDED" => Refusal::UsageExceeded,
        "FORBIDDEN_IP" => Refusal::ForbiddenIp,
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
#[allow(clippy::unwrap_used)] // tests fail loudly by design
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn owed_calls_split_into_one_call_and_the_rest_by_endpoint() {
        let mut owed = Owed::default();
        owed.add("GET /a", 1);
        owed.add("GET /b", 1);
        owed.add("GET /a", 1);
        assert_eq!(owed.total, 3);
        assert_eq!(
            owed.by_endpoint(),
            [("GET /a".to_owned(), 2), ("GET /b".to_owned(), 1)]
        );
        let (one, rest) = owed.split_one().unwrap();
        assert_eq!(one, "GET /b");
        assert_eq!(
            (rest.total, rest.by_endpoint()),
            (2, &[("GET /a".to_owned(), 2)][..])
        );
        assert!(Owed::default().split_one().is_none());
    }

    #[test]
    fn one_verify_settles_at_most_a_hundred_endpoints_of_at_most_200_bytes() {
        let mut owed = Owed::default();
        for i in 0..MAX_OWED_ENDPOINTS {
            owed.add(&format!("GET /{i}"), 1);
        }
        assert!(owed.has_room_for("GET /7"));
        assert!(!owed.has_room_for("GET /new"));
        let long = "é".repeat(150); // 300 bytes
        assert_eq!(truncated(&long, 200).len(), 200);
        assert_eq!(truncated(&format!("x{long}"), 200).len(), 199);
        assert_eq!(truncated("GET /a", 200), "GET /a");
    }

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
        assert_eq!(
            refusal_for("USAGE_EXCEEDED", &json!({}), &scopes),
            Refusal::UsageExceeded
        );
        assert_eq!(
            refusal_for(
                "RATE_LIMITED",
                &json!({ "rate_limited_by": "tokens",
                         "ratelimits": [{ "name": "tokens", "reset": 77 }] }),
                &scopes
            ),
            Refusal::NamedLimited {
                name: "tokens".into(),
                reset: 77
            }
        );
    }
}
