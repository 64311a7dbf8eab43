//! The verify hot path's memory: every live key secret this node knows of (by hash), and for the
//! ones in use everything a verify answers with — so a warm verify does no database I/O.
//!
//! A hash the node has never heard of is looked up in the database only within a small budget
//! per second (a key created on another node a moment ago), so a flood of invented keys cannot
//! reach the database. Changes to keys and orgs invalidate entries here at once and on other
//! nodes through the [`invalidation`](crate::invalidation) bus; an entry is then reloaded on its
//! next use. Expiry and the end of a rotation's grace period are checked on every call.

use crate::config::Config;
use crate::error::ApiResult;
use fluxgate_core::permission::{Grants, PermissionPattern};
use fluxgate_core::ratelimit::Quota;
use fluxgate_core::units::Rate;
use fluxgate_store::{KeyLookup, Store};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

const SHARDS: usize = 16;
/// Database lookups per second allowed for hashes this node has never heard of.
const UNKNOWN_LOOKUPS_PER_SECOND: u64 = 50;
/// Unknown hashes remembered (cleared when full).
const MAX_NEGATIVE: usize = 100_000;

/// A presented key's SHA-256: the hex form is the database's key, the first 16 bytes the cache's.
#[derive(Debug, Clone)]
pub struct KeyHash {
    /// Lowercase hex of the digest.
    pub hex: String,
    short: u128,
}

impl KeyHash {
    /// Hashes a presented key.
    pub fn of(key: &str) -> Self {
        let digest = Sha256::digest(key.as_bytes());
        let mut short = [0u8; 16];
        short.copy_from_slice(&digest[..16]);
        Self {
            hex: hex(&digest),
            short: u128::from_be_bytes(short),
        }
    }

    /// From the stored hex form.
    pub fn from_hex(hex_text: &str) -> Option<Self> {
        let bytes = (0..32)
            .map(|i| u8::from_str_radix(hex_text.get(i * 2..i * 2 + 2)?, 16).ok())
            .collect::<Option<Vec<u8>>>()?;
        let mut short = [0u8; 16];
        short.copy_from_slice(&bytes[..16]);
        Some(Self {
            hex: hex_text.to_owned(),
            short: u128::from_be_bytes(short),
        })
    }
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 15)]));
    }
    out
}

/// Everything a verify answers with, for one key secret.
#[derive(Debug)]
pub struct CachedKey {
    /// `key_…`
    pub key_id: String,
    /// `org_…`
    pub org_id: String,
    /// The org's name.
    pub org_name: String,
    /// The org's external id.
    pub org_external_id: Option<String>,
    /// Whether the key belongs to the operator org.
    pub org_is_operator: bool,
    /// Whether the org was deleted.
    pub org_disabled: bool,
    /// The org's plan.
    pub plan: String,
    /// The plan's entitlements.
    pub entitlements: Vec<String>,
    /// The plan's monthly `requests` quota.
    pub requests_quota: Option<u64>,
    /// The key's scopes as stored.
    pub scopes: Vec<String>,
    /// The scopes as a permission set.
    pub grants: Grants,
    /// The key's rate: its own, else its plan's, else the default.
    pub quota: Quota,
    /// The key's rate-limit key (`key:{id}`), made once.
    pub rate_key: String,
    /// When the key expires.
    pub expires_at: Option<i64>,
    /// When the key was revoked.
    pub revoked_at: Option<i64>,
    /// When this secret stops working (rotated out).
    pub secret_retires_at: Option<i64>,
    /// The owner's metadata.
    pub metadata: Value,
    /// `live` or `test`.
    pub environment: String,
}

impl CachedKey {
    fn from_lookup(lookup: KeyLookup, config: &Config) -> Self {
        let plan = config.plan(&lookup.org_plan);
        let key = lookup.key;
        let scopes = key.scope_list();
        let patterns = scopes
            .iter()
            .filter_map(|s| PermissionPattern::parse(s).ok())
            .collect();
        let own_rate = match (key.rate_limit, key.rate_window_seconds) {
            (Some(limit), Some(window)) if limit > 0 && window > 0 => Some(Rate {
                limit: limit as u64,
                window: Duration::from_secs(window as u64),
            }),
            _ => None,
        };
        let rate = own_rate
            .or(plan.map(|p| p.rate_limit))
            .unwrap_or(config.rate_limits.api_key);
        Self {
            metadata: key.metadata_json(),
            rate_key: format!("key:{}", key.id),
            key_id: key.id,
            org_id: key.org_id,
            org_name: lookup.org_name,
            org_external_id: lookup.org_external_id,
            org_is_operator: lookup.org_is_operator,
            org_disabled: lookup.org_deleted_at.is_some(),
            plan: lookup.org_plan,
            entitlements: plan.map(|p| p.entitlements.clone()).unwrap_or_default(),
            requests_quota: plan.and_then(|p| p.quotas.get("requests").copied()),
            grants: Grants::new(patterns, lookup.org_is_operator),
            scopes,
            quota: Quota::from_rate(rate),
            expires_at: key.expires_at,
            revoked_at: key.revoked_at,
            secret_retires_at: lookup.secret_retires_at,
            environment: key.environment,
        }
    }

    /// Why this secret does not verify at `now`, if it does not: `ORG_DISABLED` (its org was
    /// deleted, which also revokes it), `REVOKED`, or `EXPIRED` (the key, or a rotated-out
    /// secret past its grace period).
    pub fn refusal(&self, now: i64) -> Option<&'static str> {
        if self.org_disabled {
            Some("ORG_DISABLED")
        } else if self.revoked_at.is_some() {
            Some("REVOKED")
        } else if self.expires_at.is_some_and(|e| e <= now)
            || self.secret_retires_at.is_some_and(|r| r <= now)
        {
            Some("EXPIRED")
        } else {
            None
        }
    }
}

#[derive(Clone)]
enum Slot {
    /// A live secret not loaded yet (or invalidated): load on next use.
    Known,
    /// Loaded.
    Loaded(Arc<CachedKey>),
}

/// What the cache knows of a hash.
pub enum Lookup {
    /// The key's context.
    Found(Arc<CachedKey>),
    /// No key has this secret.
    Unknown,
}

/// The cache. Cheap reads (one shard read lock); writes only on load and invalidation.
pub struct KeyCache {
    shards: Box<[RwLock<HashMap<u128, Slot>>]>,
    negative: Mutex<HashMap<u128, ()>>,
    unknown_budget: Mutex<(Instant, u64)>,
}

impl Default for KeyCache {
    fn default() -> Self {
        Self::new()
    }
}

impl KeyCache {
    /// An empty cache.
    pub fn new() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| RwLock::new(HashMap::new())).collect(),
            negative: Mutex::new(HashMap::new()),
            unknown_budget: Mutex::new((Instant::now(), 0)),
        }
    }

    fn shard(&self, short: u128) -> &RwLock<HashMap<u128, Slot>> {
        &self.shards[(short as usize) % SHARDS]
    }

    /// Learns every live secret from the database (at start, and to heal missed messages).
    pub async fn sync_known(&self, store: &dyn Store) -> ApiResult<usize> {
        let hashes = store.live_secret_hashes().await?;
        let count = hashes.len();
        for hex in hashes {
            if let Some(hash) = KeyHash::from_hex(&hex) {
                self.learn(&hash);
            }
        }
        Ok(count)
    }

    /// A new secret exists (created or rotated in): remember it, unloaded.
    pub fn learn(&self, hash: &KeyHash) {
        if let Ok(mut negative) = self.negative.lock() {
            negative.remove(&hash.short);
        }
        if let Ok(mut shard) = self.shard(hash.short).write() {
            shard.entry(hash.short).or_insert(Slot::Known);
        }
    }

    /// Forgets the loaded context of every entry matching `predicate` (reloaded on next use).
    fn unload_where(&self, predicate: impl Fn(&CachedKey) -> bool) {
        for shard in self.shards.iter() {
            if let Ok(mut shard) = shard.write() {
                for slot in shard.values_mut() {
                    if matches!(slot, Slot::Loaded(k) if predicate(k)) {
                        *slot = Slot::Known;
                    }
                }
            }
        }
    }

    /// A key changed (patched, rotated, revoked).
    pub fn invalidate_key(&self, key_id: &str) {
        self.unload_where(|k| k.key_id == key_id);
    }

    /// An org changed (plan, deletion).
    pub fn invalidate_org(&self, org_id: &str) {
        self.unload_where(|k| k.org_id == org_id);
    }

    /// Everything may have changed (the bus lost messages).
    pub fn invalidate_all(&self) {
        self.unload_where(|_| true);
        if let Ok(mut negative) = self.negative.lock() {
            negative.clear();
        }
    }

    /// The context of a presented secret: from memory when warm; from the database when known
    /// but not loaded, or unknown within the per-second budget.
    pub async fn get(
        &self,
        hash: &KeyHash,
        store: &dyn Store,
        config: &Config,
    ) -> ApiResult<Lookup> {
        let slot = self
            .shard(hash.short)
            .read()
            .ok()
            .and_then(|s| s.get(&hash.short).cloned());
        match slot {
            Some(Slot::Loaded(key)) => return Ok(Lookup::Found(key)),
            Some(Slot::Known) => {}
            None => {
                let negative = self
                    .negative
                    .lock()
                    .map(|n| n.contains_key(&hash.short))
                    .unwrap_or(false);
                if negative || !self.spend_unknown_budget() {
                    return Ok(Lookup::Unknown);
                }
            }
        }
        let found = match store.key_by_hash(&hash.hex).await {
            Ok(found) => found,
            // a hash no node announced is almost surely invented: without a database to ask,
            // it is unknown rather than a 503
            Err(error) if slot.is_none() => {
                tracing::debug!(%error, "unknown key hash not checked: database unavailable");
                return Ok(Lookup::Unknown);
            }
            Err(error) => return Err(error.into()),
        };
        match found {
            Some(lookup) => {
                let key = Arc::new(CachedKey::from_lookup(lookup, config));
                if let Ok(mut shard) = self.shard(hash.short).write() {
                    shard.insert(hash.short, Slot::Loaded(key.clone()));
                }
                Ok(Lookup::Found(key))
            }
            None => {
                if let Ok(mut shard) = self.shard(hash.short).write() {
                    shard.remove(&hash.short);
                }
                if let Ok(mut negative) = self.negative.lock() {
                    if negative.len() >= MAX_NEGATIVE {
                        negative.clear();
                    }
                    negative.insert(hash.short, ());
                }
                Ok(Lookup::Unknown)
            }
        }
    }

    fn spend_unknown_budget(&self) -> bool {
        let Ok(mut budget) = self.unknown_budget.lock() else {
            return false;
        };
        if budget.0.elapsed() >= Duration::from_secs(1) {
            *budget = (Instant::now(), 0);
        }
        budget.1 += 1;
        budget.1 <= UNKNOWN_LOOKUPS_PER_SECOND
    }

    /// Secrets known (loaded or not).
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.read().map(|m| m.len()).unwrap_or(0))
            .sum()
    }

    /// True when no secret is known.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_round_trip_through_hex() {
        let hash = KeyHash::of("fg_live_example");
        assert_eq!(
            hash.hex,
            fluxgate_core::secret::sha256_hex("fg_live_example")
        );
        let back = KeyHash::from_hex(&hash.hex).map(|h| h.short);
        assert_eq!(back, Some(hash.short));
        assert!(KeyHash::from_hex("zz").is_none());
    }

    #[test]
    fn the_unknown_budget_refills_each_second() {
        let cache = KeyCache::new();
        let spent = (0..200).filter(|_| cache.spend_unknown_budget()).count();
        assert_eq!(spent as u64, UNKNOWN_LOOKUPS_PER_SECOND);
    }
}
