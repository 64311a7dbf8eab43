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
use crate::limiter::Sharing;
use fluxgate_core::permission::{Catalog, Grants, PermissionPattern};
use fluxgate_core::ratelimit::Quota;
use fluxgate_core::units::Rate;
use fluxgate_store::{KeyId, KeyLookup, OrgId, Store};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

mod recall;

const SHARDS: usize = 16;
/// Live secrets read per query when the cache syncs with the database.
const SYNC_PAGE: i64 = 10_000;
/// Database lookups per second allowed for hashes this node has never heard of.
const UNKNOWN_LOOKUPS_PER_SECOND: u64 = 50;
/// Unknown hashes remembered (cleared when full).
const MAX_NEGATIVE: usize = 100_000;

/// A presented key's SHA-256: the hex form is the database's key, the first 16 bytes the cache's.
#[derive(Debug, Clone)]
pub struct KeyHash {
    digest: [u8; 32],
    short: u128,
}

impl KeyHash {
    /// Hashes a presented key.
    pub fn of(key: &str) -> Self {
        Self::from_digest(Sha256::digest(key.as_bytes()).into())
    }

    fn from_digest(digest: [u8; 32]) -> Self {
        let mut short = [0u8; 16];
        short.copy_from_slice(&digest[..16]);
        Self {
            digest,
            short: u128::from_be_bytes(short),
        }
    }

    /// From the stored hex form.
    pub fn from_hex(hex_text: &str) -> Option<Self> {
        let mut digest = [0u8; 32];
        for (i, byte) in digest.iter_mut().enumerate() {
            *byte = u8::from_str_radix(hex_text.get(i * 2..i * 2 + 2)?, 16).ok()?;
        }
        (hex_text.len() == 64).then(|| Self::from_digest(digest))
    }

    /// Lowercase hex of the digest (the database's form), made when needed — not on the warm
    /// path.
    pub fn hex(&self) -> String {
        fluxgate_core::secret::hex_lower(&self.digest)
    }
}

/// Everything a verify answers with, for one key secret.
#[derive(Debug)]
pub struct CachedKey {
    /// `key_…`
    pub key_id: KeyId,
    /// `org_…`
    pub org_id: OrgId,
    /// The org's name.
    pub org_name: String,
    /// The org's external id.
    pub org_external_id: Option<String>,
    /// Whether the key belongs to the operator org.
    pub org_is_operator: bool,
    /// Whether the org was deleted, or an operator disabled it.
    pub org_disabled: bool,
    /// The org's plan.
    pub plan: String,
    /// The plan's entitlements.
    pub plan_entitlements: Vec<String>,
    /// The org's entitlement overrides, ended ones too (they end while the key is cached).
    pub overrides: Vec<fluxgate_core::entitlements::Override>,
    /// What the org may do with the flags as last derived ([`FlagBook::entitlements_of`]).
    ///
    /// [`FlagBook::entitlements_of`]: crate::flagbook::FlagBook::entitlements_of
    pub entitlements: arc_swap::ArcSwapOption<crate::flagbook::KeyEntitlements>,
    /// The plan's monthly `requests` quota.
    pub requests_quota: Option<u64>,
    /// The key's scopes as stored.
    pub scopes: Vec<String>,
    /// The scopes as a permission set.
    pub grants: Grants,
    /// The key's rate: its own, else its plan's, else the default.
    pub quota: Quota,
    /// Exact for a key whose own limit asks for it; else leased.
    pub sharing: Sharing,
    /// The key's rate-limit key (`key:{id}`), made once.
    pub rate_key: String,
    /// When the key expires.
    pub expires_at: Option<i64>,
    /// When the key was revoked.
    pub revoked_at: Option<i64>,
    /// When it was flagged as found in public.
    pub leaked_at: Option<i64>,
    /// When this secret stops working (rotated out).
    pub secret_retires_at: Option<i64>,
    /// The owner's metadata.
    pub metadata: Value,
    /// `live` or `test`.
    pub environment: String,
    /// Whether it may call verify (an operator key granted `keys:verify`), decided once.
    pub may_verify_keys: bool,
    /// Where it may be used from (open: anywhere).
    pub ip_allowlist: fluxgate_core::ip_allowlist::IpAllowlist,
    /// Its named limits, then its plan's (shared by the org's keys).
    pub named_limits: Vec<NamedQuota>,
    /// Its usage credits' refill, when it has credits (the count itself is in the database).
    pub credits: Option<crate::services::credits::CreditPolicy>,
    /// When a call last noted its use for the usage recorder (see [`CachedKey::use_due`]).
    pub use_noted_at: std::sync::atomic::AtomicI64,
}

/// A named limit as the limiter spends it.
#[derive(Debug, Clone)]
pub struct NamedQuota {
    /// Its name.
    pub name: String,
    /// `key` (the key's own) or `org` (the plan's, shared by the org's keys).
    pub scope: &'static str,
    /// Its rate.
    pub quota: Quota,
    /// The limiter's key of its bucket.
    pub bucket: String,
}

impl CachedKey {
    /// The limit a verify spends by `name`: the key's own of that name, else its plan's.
    pub fn named_limit(&self, name: &str) -> Option<&NamedQuota> {
        self.named_limits.iter().find(|n| n.name == name)
    }

    fn from_lookup(
        lookup: KeyLookup,
        overrides: &[fluxgate_store::OverrideRecord],
        config: &Config,
    ) -> Self {
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
        let own_named: Vec<fluxgate_proto::NamedLimit> =
            serde_json::from_str(&key.named_limits).unwrap_or_default();
        let mut named_limits: Vec<NamedQuota> = own_named
            .into_iter()
            .filter(|l| l.limit > 0 && l.window_seconds > 0)
            .map(|l| NamedQuota {
                bucket: format!("keylimit:{}:{}", key.id, l.name),
                quota: Quota::from_rate(Rate {
                    limit: l.limit,
                    window: Duration::from_secs(l.window_seconds),
                }),
                scope: "key",
                name: l.name,
            })
            .collect();
        // the plan's come after the key's, so a key's own limit of a name takes its place
        for (name, rate) in plan.map(|p| &p.named_limits).into_iter().flatten() {
            named_limits.push(NamedQuota {
                name: name.clone(),
                scope: "org",
                quota: Quota::from_rate(*rate),
                bucket: format!("orglimit:{}:{name}", key.org_id),
            });
        }
        let allowed: Vec<String> = serde_json::from_str(&key.ip_allowlist).unwrap_or_default();
        let mut cached = Self {
            ip_allowlist: fluxgate_core::ip_allowlist::IpAllowlist::stored(&allowed),
            named_limits,
            may_verify_keys: false, // decided below, by the one rule
            overrides: overrides.iter().map(override_of).collect(),
            entitlements: arc_swap::ArcSwapOption::empty(),
            metadata: key.metadata_json(),
            credits: crate::services::credits::CreditPolicy::of(&key),
            rate_key: format!("key:{}", key.id),
            key_id: key.id,
            org_id: key.org_id,
            org_name: lookup.org_name,
            org_external_id: lookup.org_external_id,
            org_is_operator: lookup.org_is_operator,
            org_disabled: lookup.org_deleted_at.is_some() || lookup.org_disabled_at.is_some(),
            plan: lookup.org_plan,
            plan_entitlements: plan.map(|p| p.entitlements.clone()).unwrap_or_default(),
            requests_quota: plan.and_then(|p| p.quotas.get("requests").copied()),
            grants: Grants::new(patterns, lookup.org_is_operator),
            scopes,
            quota: Quota::from_rate(rate),
            sharing: if own_rate.is_some() && key.rate_exact {
                Sharing::Exact
            } else {
                Sharing::Leased
            },
            expires_at: key.expires_at,
            revoked_at: key.revoked_at,
            leaked_at: key.leaked_at,
            secret_retires_at: lookup.secret_retires_at,
            environment: key.environment.as_str().to_owned(),
            use_noted_at: i64::MIN.into(),
        };
        cached.may_verify_keys = cached.operator_allows("keys:verify", &config.catalog);
        cached
    }

    /// Whether a call at `now` (a verify of the key, or the key authenticating a request) should
    /// note the key's use: not if one did within
    /// [`LAST_USED_PRECISION`](crate::usage_recorder::LAST_USED_PRECISION) (the recorder writes
    /// a key's last use that often at most), so most verifies only read this.
    pub fn use_due(&self, now: i64) -> bool {
        use std::sync::atomic::Ordering::Relaxed;
        let noted = self.use_noted_at.load(Relaxed);
        let due = now.saturating_sub(noted) >= crate::usage_recorder::LAST_USED_PRECISION;
        if due {
            self.use_noted_at.store(now, Relaxed);
        }
        due
    }

    /// Does this key hold an instance-wide (operator) permission? It must belong to the
    /// operator org and its scopes must grant it.
    pub fn operator_allows(&self, permission: &str, catalog: &Catalog) -> bool {
        self.org_is_operator && self.grants.allows(permission, catalog)
    }

    /// Why this secret does not verify at `now`, if it does not: `ORG_DISABLED` (its org was
    /// disabled by an operator, or deleted — which also revokes it), `REVOKED`, `LEAKED` (a
    /// secret scanner found it in public and its org flags such keys), or `EXPIRED` (the key, or
    /// a rotated-out secret past its grace period).
    pub fn refusal(&self, now: i64) -> Option<&'static str> {
        if self.org_disabled {
            Some("ORG_DISABLED")
        } else if self.revoked_at.is_some() {
            Some("REVOKED")
        } else if self.leaked_at.is_some() {
            Some("LEAKED")
        } else if self.expires_at.is_some_and(|e| e <= now)
            || self.secret_retires_at.is_some_and(|r| r <= now)
        {
            Some("EXPIRED")
        } else {
            None
        }
    }
}

/// An override as evaluation needs it, from its stored form.
pub fn override_of(
    record: &fluxgate_store::OverrideRecord,
) -> fluxgate_core::entitlements::Override {
    fluxgate_core::entitlements::Override {
        entitlement: record.entitlement.clone(),
        grant: record.effect == "grant",
        until: record.expires_at,
        note: record.note.clone(),
    }
}

fn shard_of(short: u128) -> usize {
    (short % SHARDS as u128) as usize
}

/// One shard's secrets by the first 16 bytes of their hash (already uniform: foldhash is plenty).
type Secrets = hashbrown::HashMap<u128, Slot>;

/// What the cache holds for one secret: 16 bytes (32 with its hash) for each of the many
/// secrets only known, the loaded context behind a pointer for the few in use.
enum Slot {
    /// A live secret not loaded yet (or invalidated): load on next use. `since` is the change
    /// number when it was learned, so a resync that began earlier does not drop it.
    Known { since: u64 },
    /// Loaded.
    Loaded(Box<Loaded>),
}

/// A loaded context.
struct Loaded {
    key: Arc<CachedKey>,
    /// When it was read (reread once older than the cache's maximum age).
    at: Instant,
    /// The change number when it was read.
    since: u64,
    /// Tenths of a second since the cache's epoch at its last use (least recently used leave
    /// first).
    used: std::sync::atomic::AtomicU64,
}

/// Whole tenths of a second in `elapsed`.
fn tenths(elapsed: Duration) -> u64 {
    u64::try_from(elapsed.as_millis() / 100).unwrap_or(u64::MAX)
}

impl Slot {
    /// Forgets a loaded context (the secret stays known, and is reloaded on next use).
    fn unload(&mut self) {
        if let Self::Loaded(loaded) = self {
            *self = Self::Known {
                since: loaded.since,
            };
        }
    }
}

/// What the cache knows of a hash.
pub enum Lookup {
    /// The key's context.
    Found(Arc<CachedKey>),
    /// No key has this secret.
    Unknown,
}

/// How long an invalidation is remembered for fills that began before it. A fill that takes
/// longer than this is answered but not cached.
const REMEMBER_CHANGES_FOR: Duration = Duration::from_secs(30);

/// Every change to the cache gets a number; a fill caches what it read only if no change that
/// concerns its key arrived after the fill began.
struct Changes {
    /// The number of the latest change.
    latest: u64,
    /// The latest `invalidate_all`.
    everything: u64,
    /// Key and org ids invalidated lately (their prefixes keep the two kinds apart), with the
    /// change number and when.
    ids: HashMap<String, (u64, Instant)>,
    /// When `ids` was last pruned.
    pruned: Instant,
}

impl Changes {
    fn next(&mut self) -> u64 {
        self.latest = self.latest.saturating_add(1);
        self.latest
    }

    fn record(&mut self, id: &str) {
        let number = self.next();
        let now = Instant::now();
        if now.duration_since(self.pruned) >= Duration::from_secs(1) {
            self.ids
                .retain(|_, (_, at)| now.duration_since(*at) < REMEMBER_CHANGES_FOR);
            self.pruned = now;
        }
        self.ids.insert(id.to_owned(), (number, now));
    }

    /// Whether a fill of `key` that began at change `began` (at `started`) is still current.
    fn still_current(&self, key: &CachedKey, began: u64, started: Instant) -> bool {
        let changed_after = |id: &str| self.ids.get(id).is_some_and(|(n, _)| *n > began);
        self.everything <= began
            && started.elapsed() < REMEMBER_CHANGES_FOR
            && !changed_after(key.key_id.as_str())
            && !changed_after(key.org_id.as_str())
    }
}

/// Which loaded secrets belong to which key, and which keys to which org, so invalidating one
/// key or org touches only its own entries.
#[derive(Default)]
struct Index {
    secrets_of_key: HashMap<KeyId, Vec<u128>>,
    keys_of_org: HashMap<OrgId, HashSet<KeyId>>,
}

impl Index {
    /// Forgets one loaded secret of a key (and the key, once it has none loaded).
    fn remove(&mut self, key: &CachedKey, short: u128) {
        if let Some(secrets) = self.secrets_of_key.get_mut(&key.key_id) {
            secrets.retain(|s| *s != short);
            if secrets.is_empty() {
                self.secrets_of_key.remove(&key.key_id);
                if let Some(keys) = self.keys_of_org.get_mut(&key.org_id) {
                    keys.remove(&key.key_id);
                    if keys.is_empty() {
                        self.keys_of_org.remove(&key.org_id);
                    }
                }
            }
        }
    }

    fn add(&mut self, key: &CachedKey, short: u128) {
        let secrets = self.secrets_of_key.entry(key.key_id.clone()).or_default();
        if !secrets.contains(&short) {
            secrets.push(short);
        }
        self.keys_of_org
            .entry(key.org_id.clone())
            .or_default()
            .insert(key.key_id.clone());
    }
}

/// Lets a test hold a fill between its database read and its caching, to force the race of a
/// fill with a concurrent change. Unset in production.
pub struct FillPause {
    /// Signalled when a fill has read the database and waits.
    pub reached: tokio::sync::Notify,
    /// The fill goes on once a permit is added.
    pub resume: tokio::sync::Semaphore,
}

impl Default for FillPause {
    fn default() -> Self {
        Self {
            reached: tokio::sync::Notify::new(),
            resume: tokio::sync::Semaphore::new(0),
        }
    }
}

/// The cache. Cheap reads (one shard read lock); writes only on load and invalidation.
pub struct KeyCache {
    shards: Box<[RwLock<Secrets>]>,
    max_age: Duration,
    /// Most loaded contexts kept (see [`KeyCache::trim`]).
    capacity: usize,
    /// Fills since the last trim.
    fills: std::sync::atomic::AtomicUsize,
    changes: Mutex<Changes>,
    index: Mutex<Index>,
    negative: Mutex<HashMap<u128, ()>>,
    unknown_budget: Mutex<(Instant, u64)>,
    fill_pause: Mutex<Option<Arc<FillPause>>>,
    /// What `Loaded::used` counts tenths of a second from.
    epoch: Instant,
    /// Whether the live secrets were read once: until then a hash not in the cache may be a
    /// real key and is looked up whatever the unknown budget (the node serves at once, before
    /// reading a million hashes).
    synced: std::sync::atomic::AtomicBool,
    /// This cache among the process's (a thread's recalled callers name the cache they came
    /// from: tests run many servers in one process).
    id: u64,
    /// Moves after every write to any shard: what a thread recalled at one generation is still
    /// the cache's answer while it has not moved (see [`recall`]).
    generation: Generation,
}

/// [`KeyCache::generation`], alone on its cache line: read by every recall on every core,
/// written only when the cache changes.
type Generation = crossbeam_utils::CachePadded<std::sync::atomic::AtomicU64>;

/// A shard held for writing; the cache's generation moves when it is let go (while the lock is
/// still held, so no reader sees the change without the move).
struct ShardWrite<'a> {
    secrets: std::sync::RwLockWriteGuard<'a, Secrets>,
    generation: &'a Generation,
}

impl std::ops::Deref for ShardWrite<'_> {
    type Target = Secrets;

    fn deref(&self) -> &Secrets {
        &self.secrets
    }
}

impl std::ops::DerefMut for ShardWrite<'_> {
    fn deref_mut(&mut self) -> &mut Secrets {
        &mut self.secrets
    }
}

impl Drop for ShardWrite<'_> {
    fn drop(&mut self) {
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::Release);
    }
}

/// Numbers the caches of this process.
static NEXT_CACHE_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

impl KeyCache {
    /// An empty cache whose entries are reread once older than `max_age`, keeping at most about
    /// `capacity` contexts loaded.
    pub fn new(max_age: Duration, capacity: usize) -> Self {
        let now = Instant::now();
        Self {
            shards: (0..SHARDS)
                .map(|_| RwLock::new(Secrets::default()))
                .collect(),
            max_age,
            capacity: capacity.max(1),
            fills: std::sync::atomic::AtomicUsize::new(0),
            changes: Mutex::new(Changes {
                latest: 0,
                everything: 0,
                ids: HashMap::new(),
                pruned: now,
            }),
            index: Mutex::new(Index::default()),
            negative: Mutex::new(HashMap::new()),
            unknown_budget: Mutex::new((now, 0)),
            fill_pause: Mutex::new(None),
            epoch: now,
            synced: std::sync::atomic::AtomicBool::new(false),
            id: NEXT_CACHE_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            generation: Generation::default(),
        }
    }

    fn shard(&self, short: u128) -> &RwLock<Secrets> {
        &self.shards[shard_of(short)]
    }

    /// Holds `shard` for writing (None if a panic poisoned it); the generation moves after.
    fn write<'a>(&'a self, shard: &'a RwLock<Secrets>) -> Option<ShardWrite<'a>> {
        Some(ShardWrite {
            secrets: shard.write().ok()?,
            generation: &self.generation,
        })
    }

    fn change_number(&self) -> u64 {
        self.changes.lock().map(|c| c.latest).unwrap_or(u64::MAX)
    }

    /// Reads the live secrets created at or after `created_since` (0: all), page by page,
    /// sorted by shard: 16 bytes a secret while the read is compared with the cache.
    async fn read_live(
        store: &dyn Store,
        created_since: i64,
    ) -> ApiResult<(Vec<Vec<u128>>, usize)> {
        let mut live_by_shard: Vec<Vec<u128>> = vec![Vec::new(); SHARDS];
        let mut after = String::new();
        let mut live = 0usize;
        loop {
            let page = store
                .live_secret_hashes(created_since, &after, SYNC_PAGE)
                .await?;
            for hash in page.iter().filter_map(|hex| KeyHash::from_hex(hex)) {
                live_by_shard[shard_of(hash.short)].push(hash.short);
                live += 1;
            }
            match page.last() {
                Some(last) if page.len() as i64 == SYNC_PAGE => after.clone_from(last),
                _ => break,
            }
        }
        for shard in &mut live_by_shard {
            shard.sort_unstable();
        }
        Ok((live_by_shard, live))
    }

    /// Learns the live secrets created at or after `created_since` (those whose announcement
    /// this node may have missed), without reading the others. Returns how many it read.
    pub async fn learn_created_since(
        &self,
        store: &dyn Store,
        created_since: i64,
    ) -> ApiResult<usize> {
        let began = self.change_number();
        let (live_by_shard, live) = Self::read_live(store, created_since).await?;
        for (shard, live_here) in self.shards.iter().zip(live_by_shard) {
            if live_here.is_empty() {
                continue;
            }
            if let Some(mut shard) = self.write(shard) {
                for short in live_here {
                    shard.entry(short).or_insert(Slot::Known { since: began });
                }
            }
        }
        Ok(live)
    }

    /// Makes the live secrets exactly the database's (at start, and every
    /// `keys.full_resync_every`): learns the new ones and drops those no longer live — unless
    /// this node learned of them after the read began. Returns how many are live.
    pub async fn sync_known(&self, store: &dyn Store) -> ApiResult<usize> {
        let began = self.change_number();
        let (live_by_shard, live) = Self::read_live(store, 0).await?;
        let mut dropped = 0usize;
        for (shard, live_here) in self.shards.iter().zip(live_by_shard) {
            if let Some(mut shard) = self.write(shard) {
                shard.retain(|short, slot| {
                    let keep = live_here.binary_search(short).is_ok()
                        || match slot {
                            Slot::Known { since } => *since > began,
                            // a loaded key that knows it is revoked answers REVOKED: keep it
                            Slot::Loaded(loaded) => {
                                loaded.since > began || loaded.key.revoked_at.is_some()
                            }
                        };
                    dropped += usize::from(!keep);
                    keep
                });
                for short in live_here {
                    shard.entry(short).or_insert(Slot::Known { since: began });
                }
            }
        }
        if dropped > 0 {
            tracing::debug!(dropped, "key cache: secrets no longer live");
        }
        self.synced
            .store(true, std::sync::atomic::Ordering::Release);
        Ok(live)
    }

    /// A new secret exists (created or rotated in): remember it, unloaded.
    pub fn learn(&self, hash: &KeyHash) {
        let since = match self.changes.lock() {
            Ok(mut changes) => changes.next(),
            Err(_) => u64::MAX,
        };
        if let Ok(mut negative) = self.negative.lock() {
            negative.remove(&hash.short);
        }
        if let Some(mut shard) = self.write(self.shard(hash.short)) {
            shard.entry(hash.short).or_insert(Slot::Known { since });
        }
    }

    /// Unloads these secrets (reloaded on next use).
    fn unload(&self, shorts: &[u128]) {
        for short in shorts {
            if let Some(mut shard) = self.write(self.shard(*short)) {
                if let Some(slot) = shard.get_mut(short) {
                    slot.unload();
                }
            }
        }
    }

    /// A key changed (patched, rotated, revoked): its secrets are reread on next use, and a
    /// fill that read the key before this will not be cached.
    pub fn invalidate_key(&self, key_id: &KeyId) {
        if let Ok(mut changes) = self.changes.lock() {
            changes.record(key_id.as_str());
        }
        let shorts = self
            .index
            .lock()
            .ok()
            .and_then(|mut index| index.secrets_of_key.remove(key_id))
            .unwrap_or_default();
        self.unload(&shorts);
    }

    /// An org changed (name, external id, plan, deletion): every key of it is reread.
    pub fn invalidate_org(&self, org_id: &OrgId) {
        if let Ok(mut changes) = self.changes.lock() {
            changes.record(org_id.as_str());
        }
        let shorts: Vec<u128> = self
            .index
            .lock()
            .ok()
            .map(|mut index| {
                let keys = index.keys_of_org.remove(org_id).unwrap_or_default();
                keys.iter()
                    .filter_map(|key| index.secrets_of_key.remove(key))
                    .flatten()
                    .collect()
            })
            .unwrap_or_default();
        self.unload(&shorts);
    }

    /// Everything may have changed (the bus lost messages).
    pub fn invalidate_all(&self) {
        if let Ok(mut changes) = self.changes.lock() {
            changes.everything = changes.next();
        }
        if let Ok(mut index) = self.index.lock() {
            *index = Index::default();
        }
        for shard in self.shards.iter() {
            if let Some(mut shard) = self.write(shard) {
                shard.values_mut().for_each(Slot::unload);
            }
        }
        if let Ok(mut negative) = self.negative.lock() {
            negative.clear();
        }
    }

    /// Holds every fill after its database read until the test lets it go (see [`FillPause`]).
    pub fn pause_fills(&self, pause: Option<Arc<FillPause>>) {
        if let Ok(mut slot) = self.fill_pause.lock() {
            *slot = pause;
        }
    }

    /// The context of a presented secret if it is loaded and younger than the maximum age — the
    /// warm path, with no I/O and nothing to wait for.
    pub fn warm(&self, hash: &KeyHash) -> Option<Arc<CachedKey>> {
        let shard = self.shard(hash.short).read().ok()?;
        let Slot::Loaded(loaded) = shard.get(&hash.short)? else {
            return None;
        };
        let now = Instant::now();
        if now.saturating_duration_since(loaded.at) >= self.max_age {
            return None;
        }
        let tick = tenths(now.saturating_duration_since(self.epoch));
        // a relaxed read first: the tick changes ten times a second, so a hot key's line is
        // rarely written
        if loaded.used.load(std::sync::atomic::Ordering::Relaxed) != tick {
            loaded
                .used
                .store(tick, std::sync::atomic::Ordering::Relaxed);
        }
        Some(loaded.key.clone())
    }

    /// The context of a presented secret: from memory when warm and younger than the maximum
    /// age; from the database when known but not loaded (or too old), or unknown within the
    /// per-second budget — or, before the live secrets were first read, whenever it is not
    /// remembered as unknown.
    pub async fn get(
        &self,
        hash: &KeyHash,
        store: &dyn Store,
        config: &Config,
    ) -> ApiResult<Lookup> {
        if let Some(key) = self.warm(hash) {
            return Ok(Lookup::Found(key));
        }
        let known = self
            .shard(hash.short)
            .read()
            .is_ok_and(|s| s.contains_key(&hash.short));
        let synced = self.is_synced();
        if !known {
            let negative = self
                .negative
                .lock()
                .map(|n| n.contains_key(&hash.short))
                .unwrap_or(false);
            // before the first sync any hash may be a real key: only the database can say
            if negative || (synced && !self.spend_unknown_budget()) {
                return Ok(Lookup::Unknown);
            }
        }
        // A change may land while the database is read; then read once more, and cache only
        // a read that no change overtook.
        let mut attempt = 0;
        loop {
            attempt += 1;
            let began = self.change_number();
            let started = Instant::now();
            let found = match store.key_by_hash(&hash.hex()).await {
                Ok(found) => found,
                // a hash no node announced is almost surely invented: without a database to
                // ask, it is unknown rather than a 503
                Err(error) if !known && synced => {
                    tracing::debug!(%error, "unknown key hash not checked: database unavailable");
                    return Ok(Lookup::Unknown);
                }
                Err(error) => return Err(error.into()),
            };
            self.wait_if_paused().await;
            let Some(lookup) = found else {
                self.forget(hash);
                return Ok(Lookup::Unknown);
            };
            // most orgs have none: then a cold key costs one query
            let overrides = if lookup.org_has_overrides {
                store.entitlement_overrides(&lookup.key.org_id).await?
            } else {
                Vec::new()
            };
            let key = Arc::new(CachedKey::from_lookup(lookup, &overrides, config));
            if self.cache_if_current(hash, &key, began, started) || attempt >= 2 {
                return Ok(Lookup::Found(key));
            }
        }
    }

    /// Stores a filled entry unless a change concerning it arrived since the fill began.
    /// Holding the change log while storing orders this against any invalidation.
    fn cache_if_current(
        &self,
        hash: &KeyHash,
        key: &Arc<CachedKey>,
        began: u64,
        started: Instant,
    ) -> bool {
        let Ok(changes) = self.changes.lock() else {
            return false;
        };
        if !changes.still_current(key, began, started) {
            return false;
        }
        if let Ok(mut index) = self.index.lock() {
            index.add(key, hash.short);
        }
        if let Some(mut shard) = self.write(self.shard(hash.short)) {
            let at = Instant::now();
            shard.insert(
                hash.short,
                Slot::Loaded(Box::new(Loaded {
                    key: key.clone(),
                    at,
                    since: changes.latest,
                    used: tenths(at.saturating_duration_since(self.epoch)).into(),
                })),
            );
        }
        drop(changes);
        // every quarter capacity of fills, look whether there are too many
        let fills = self
            .fills
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if fills.saturating_add(1) >= self.capacity.div_ceil(4) {
            self.fills.store(0, std::sync::atomic::Ordering::Relaxed);
            self.trim();
        }
        true
    }

    /// Keeps at most `capacity` contexts loaded: unloads the least recently used down to three
    /// quarters of it (they stay known, and are reread on their next verify) and drops them from
    /// the index. Runs every quarter capacity of fills — so the count never passes capacity —
    /// and its scan is paid a little per fill.
    pub fn trim(&self) -> usize {
        let mut loaded: Vec<(u64, u128)> = Vec::new();
        for shard in self.shards.iter() {
            if let Ok(shard) = shard.read() {
                loaded.extend(shard.iter().filter_map(|(short, slot)| match slot {
                    Slot::Loaded(loaded) => Some((
                        loaded.used.load(std::sync::atomic::Ordering::Relaxed),
                        *short,
                    )),
                    Slot::Known { .. } => None,
                }));
            }
        }
        // down to three quarters, checked every quarter of fills: never above capacity
        let keep = self.capacity * 3 / 4;
        if loaded.len() <= keep {
            return 0;
        }
        let excess = loaded.len() - keep;
        loaded.select_nth_unstable(excess - 1);
        let mut unloaded = 0;
        for (_, short) in &loaded[..excess] {
            let Some(mut shard) = self.write(self.shard(*short)) else {
                continue;
            };
            let Some(slot) = shard.get_mut(short) else {
                continue;
            };
            if let Slot::Loaded(loaded) = &*slot {
                if let Ok(mut index) = self.index.lock() {
                    index.remove(&loaded.key, *short);
                }
                slot.unload();
                unloaded += 1;
            }
        }
        tracing::debug!(unloaded, "key cache: trimmed to capacity");
        unloaded
    }

    /// Contexts loaded now.
    pub fn loaded(&self) -> usize {
        self.shards
            .iter()
            .map(|s| {
                s.read()
                    .map(|m| {
                        m.values()
                            .filter(|slot| matches!(slot, Slot::Loaded(_)))
                            .count()
                    })
                    .unwrap_or(0)
            })
            .sum()
    }

    /// No key has this secret: drop it and remember so (bounded).
    fn forget(&self, hash: &KeyHash) {
        if let Some(mut shard) = self.write(self.shard(hash.short)) {
            shard.remove(&hash.short);
        }
        if let Ok(mut negative) = self.negative.lock() {
            if negative.len() >= MAX_NEGATIVE {
                negative.clear();
            }
            negative.insert(hash.short, ());
        }
    }

    async fn wait_if_paused(&self) {
        let pause = self.fill_pause.lock().ok().and_then(|p| p.clone());
        if let Some(pause) = pause {
            pause.reached.notify_one();
            if let Ok(permit) = pause.resume.acquire().await {
                permit.forget();
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

    /// Whether the live secrets were read at least once (see [`KeyCache::sync_known`]).
    pub fn is_synced(&self) -> bool {
        self.synced.load(std::sync::atomic::Ordering::Acquire)
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
            hash.hex(),
            fluxgate_core::secret::sha256_hex("fg_live_example")
        );
        let back = KeyHash::from_hex(&hash.hex()).map(|h| h.short);
        assert_eq!(back, Some(hash.short));
        assert!(KeyHash::from_hex("zz").is_none());
    }

    #[test]
    fn the_unknown_budget_refills_each_second() {
        let cache = KeyCache::new(Duration::from_secs(60), 1_000);
        let spent = (0..200).filter(|_| cache.spend_unknown_budget()).count();
        assert_eq!(spent as u64, UNKNOWN_LOOKUPS_PER_SECOND);
    }
}
