//! Rate-limit stores running the domain crate's GCRA: sharded in memory for one node, and in
//! Redis — one atomic Lua round trip on Redis' own clock — for several. With Redis, a key's
//! calls are either decided exactly (a round trip each) or spent from a **lease**: the node
//! takes a slice of the key's shared allowance from Redis in one round trip and spends it
//! locally until it runs out or its lifetime ends. When Redis cannot answer, the configured
//! policy decides: `fail_open` (default) falls back to the memory store, `fail_closed`
//! answers 503.
//!
//! The lease bound: a unit is charged in Redis before any node spends it, and is spent within
//! one lease lifetime of its charge or never. So over any span, all nodes together admit at
//! most what the exact limit admits over that span stretched by one lease lifetime — at most
//! `ceil(lease × limit / window)` calls more, whatever the number of nodes. A lease's unspent
//! units lapse rather than go back (giving them back safely would need the key's history), so
//! the error the other way is bounded by the lease sizes: a lease starts at one call, doubles
//! while the node spends it within its lifetime, halves when units lapse, and never exceeds a
//! tenth of the limit.

use crate::config::RedisFailure;
use crate::error::ApiError;
use crate::redisconn::RedisConnection;
use fluxgate_core::ratelimit::{decide, Decision, Nanos, Quota};
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

const SHARDS: usize = 64;

/// One shard's map.
type KeyMap<V> = hashbrown::HashMap<Box<str>, V>;

/// Key → `V` in `SHARDS` independently locked maps, so concurrent decisions on different keys
/// rarely contend: hashbrown with foldhash (seeded per process), looked up once per decision
/// — SipHash and a second lookup showed in verify profiles.
struct Shards<V> {
    maps: Box<[Mutex<KeyMap<V>>]>,
    hasher: hashbrown::DefaultHashBuilder,
    per_shard: usize,
}

impl<V> Shards<V> {
    /// Room for about `max_keys` keys.
    fn new(max_keys: usize) -> Self {
        Self {
            maps: (0..SHARDS).map(|_| Mutex::default()).collect(),
            hasher: hashbrown::DefaultHashBuilder::default(),
            per_shard: (max_keys / SHARDS).max(16),
        }
    }

    /// The locked shard holding `key` (a poisoned lock is taken over: the maps hold no
    /// invariant a panic could break).
    fn lock(&self, key: &str) -> std::sync::MutexGuard<'_, KeyMap<V>> {
        let index = (self.hasher.hash_one(key) as usize) % SHARDS;
        match self.maps[index].lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Keeps the entries `keep` says to, in every shard; returns how many remain.
    fn retain(&self, mut keep: impl FnMut(&V) -> bool) -> usize {
        self.maps
            .iter()
            .map(|shard| match shard.lock() {
                Ok(mut map) => {
                    map.retain(|_, value| keep(value));
                    map.len()
                }
                Err(_) => 0,
            })
            .sum()
    }

    /// Entries held.
    fn len(&self) -> usize {
        self.maps
            .iter()
            .map(|s| s.lock().map(|m| m.len()).unwrap_or(0))
            .sum()
    }
}

/// Nanoseconds since `epoch`.
fn nanos_since(epoch: Instant) -> Nanos {
    u64::try_from(epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// The in-memory store: key → theoretical arrival time. Idle keys (TAT in the past) carry no
/// information and are dropped by a periodic sweep, or at once when a shard is full.
pub struct MemoryLimiter {
    tats: Shards<Nanos>,
    epoch: Instant,
}

impl MemoryLimiter {
    /// A store holding at most about `max_keys` keys.
    pub fn new(max_keys: usize) -> Self {
        Self {
            tats: Shards::new(max_keys),
            epoch: Instant::now(),
        }
    }

    fn now(&self) -> Nanos {
        nanos_since(self.epoch)
    }

    /// Decides (and, with `commit`, records) a call of `cost` on `key`.
    pub fn decide(&self, key: &str, quota: Quota, cost: u64, commit: bool) -> Decision {
        let now = self.now();
        let mut shard = self.tats.lock(key);
        if let Some(slot) = shard.get_mut(key) {
            let (decision, tat) = decide(quota, Some(*slot), now, cost);
            if commit && decision.allowed {
                *slot = tat;
            }
            return decision;
        }
        let (decision, tat) = decide(quota, None, now, cost);
        if commit && decision.allowed {
            if shard.len() >= self.tats.per_shard {
                make_room(&mut shard, now, self.tats.per_shard);
            }
            shard.insert(key.into(), tat);
        }
        decision
    }

    /// Forgets a key.
    pub fn reset(&self, key: &str) {
        self.tats.lock(key).remove(key);
    }

    /// Drops every idle key; returns how many keys remain.
    pub fn sweep(&self) -> usize {
        let now = self.now();
        self.tats.retain(|tat| *tat > now)
    }

    /// Keys currently held.
    pub fn len(&self) -> usize {
        self.tats.len()
    }

    /// True when no key is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Frees space in a full shard: idle keys first; if none is idle, the key nearest to idle (the
/// least restricted, so evicting it forgives the least).
fn make_room(shard: &mut KeyMap<Nanos>, now: Nanos, bound: usize) {
    shard.retain(|_, tat| *tat > now);
    if shard.len() >= bound {
        if let Some(nearest) = shard
            .iter()
            .min_by_key(|(_, tat)| **tat)
            .map(|(k, _)| k.clone())
        {
            shard.remove(&nearest);
        }
    }
}

/// How a key's calls are decided when the limit is shared through Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sharing {
    /// One Redis round trip per call: the limit holds to the call, at a round trip's price.
    Exact,
    /// Spent from this node's lease on the key's allowance (see the module's bound).
    Leased,
}

/// A node's slice of one key's shared allowance.
#[derive(Debug, Clone, Copy)]
struct Lease {
    /// The quota the units were charged under (a changed limit starts afresh).
    quota: Quota,
    /// Units left to spend here.
    units: u64,
    /// When the unspent units lapse (node clock).
    lapses_at: Nanos,
    /// How many units to ask for next time.
    size: u64,
    /// When the last units were granted (node clock).
    granted_at: Nanos,
    /// The shared allowance left in Redis after the grant.
    shared_remaining: u64,
    /// Until the shared allowance was fully restored, as of the grant.
    shared_reset_after: Nanos,
    /// After Redis refused a call: until when (node clock) calls of at least `refused_cost`
    /// are refused here without asking — Redis said none could fit before then.
    refused_until: Nanos,
    /// The cost of the refused call.
    refused_cost: u64,
    /// While a call is asking Redis for a lease (node clock, at most a lifetime): the calls
    /// that find the lease empty meanwhile ask only for their cost — a burst must not ask for
    /// a lease each and drain the shared allowance into this node.
    asking_until: Nanos,
}

impl Lease {
    /// Nothing worth keeping: it lapsed more than a lifetime ago (its sizing is stale by then)
    /// and no refusal is being remembered.
    fn is_stale(&self, now: Nanos, lifetime: Nanos) -> bool {
        self.lapses_at.saturating_add(lifetime) <= now && self.refused_until <= now
    }

    /// Takes `extra` units granted beyond the call that asked for them, and sizes the next
    /// lease: double when the last one was spent within its lifetime, half when units lapsed;
    /// never above `most`.
    fn grant(&mut self, extra: u64, granted: &Decision, now: Nanos, most: u64, lifetime: Nanos) {
        let live = self.lapses_at > now;
        if live && self.units > 0 {
            // another call's grant landed first: both fit, lapsing with the earlier
            self.units = self.units.saturating_add(extra);
        } else {
            let ran_out_recently = self.units == 0
                && self.lapses_at > 0
                && now < self.lapses_at.saturating_add(lifetime);
            if !live && self.units > 0 {
                self.size = (self.size / 2).max(1);
            } else if ran_out_recently {
                self.size = self.size.saturating_mul(2);
            }
            self.units = extra;
            self.lapses_at = now.saturating_add(lifetime);
        }
        self.size = self.size.min(most);
        self.granted_at = now;
        self.shared_remaining = granted.remaining;
        self.shared_reset_after = granted.reset_after;
    }
}

/// What taking from a lease found.
enum Take {
    /// Decided locally: spent from the lease, or refused as Redis refused a moment ago.
    Decided(Decision),
    /// Not enough here, and a lease is being asked for already: ask Redis for the call's cost.
    Ask(u64),
    /// Not enough here: ask Redis for a lease of this many units (at least the call's cost).
    Lease(u64),
}

/// The leases this node holds, by key.
struct LeaseBook {
    leases: Shards<Lease>,
    lifetime: Nanos,
    epoch: Instant,
}

impl LeaseBook {
    fn new(max_keys: usize, lifetime: Duration) -> Self {
        Self {
            leases: Shards::new(max_keys),
            lifetime: u64::try_from(lifetime.as_nanos()).unwrap_or(u64::MAX),
            epoch: Instant::now(),
        }
    }

    /// Spends `cost` from `key`'s live lease, or says how much to ask Redis for.
    fn take(&self, key: &str, quota: Quota, cost: u64) -> Take {
        let now = nanos_since(self.epoch);
        let mut shard = self.leases.lock(key);
        let Some(lease) = shard.get_mut(key).filter(|lease| lease.quota == quota) else {
            return Take::Ask(cost);
        };
        if now < lease.refused_until && cost >= lease.refused_cost {
            return Take::Decided(Decision {
                allowed: false,
                limit: quota.limit,
                remaining: 0,
                reset_after: lease.shared_reset_after,
                retry_after: lease.refused_until - now,
            });
        }
        if lease.lapses_at <= now || lease.units < cost {
            if lease.asking_until > now {
                return Take::Ask(cost);
            }
            lease.asking_until = now.saturating_add(self.lifetime);
            return Take::Lease(lease.size.max(cost));
        }
        lease.units -= cost;
        let since_grant = now.saturating_sub(lease.granted_at);
        Take::Decided(Decision {
            allowed: true,
            limit: quota.limit,
            remaining: lease
                .shared_remaining
                .saturating_add(lease.units)
                .min(quota.limit),
            reset_after: lease.shared_reset_after.saturating_sub(since_grant),
            retry_after: 0,
        })
    }

    /// Keeps `extra` units granted beyond the call that asked for them, and sizes the next
    /// lease: double when the last one was spent within its lifetime, half when units lapsed.
    fn keep(&self, key: &str, quota: Quota, extra: u64, granted: &Decision, leasing: bool) {
        let now = nanos_since(self.epoch);
        let most = (quota.limit / 10).max(1);
        self.with_lease(key, quota, now, |lease| {
            lease.refused_until = 0;
            if leasing {
                lease.asking_until = 0;
            }
            lease.grant(extra, granted, now, most, self.lifetime);
        });
    }

    /// Remembers that Redis refused a call of `cost` until `refused.retry_after` from now.
    fn refused(&self, key: &str, quota: Quota, cost: u64, refused: &Decision) {
        let now = nanos_since(self.epoch);
        self.with_lease(key, quota, now, |lease| {
            lease.refused_until = now.saturating_add(refused.retry_after);
            lease.refused_cost = cost;
            lease.asking_until = 0;
            lease.shared_reset_after = refused.reset_after;
        });
    }

    /// Runs `change` on `key`'s lease under `quota` (a fresh one when there is none, or its
    /// quota changed); does nothing when the shard is full of live leases.
    fn with_lease(&self, key: &str, quota: Quota, now: Nanos, change: impl FnOnce(&mut Lease)) {
        let mut shard = self.leases.lock(key);
        if !shard.contains_key(key) && shard.len() >= self.leases.per_shard {
            // a full shard drops its stale leases; evicting one only under-admits
            let lifetime = self.lifetime;
            shard.retain(|_, lease| !lease.is_stale(now, lifetime));
            if shard.len() >= self.leases.per_shard {
                return;
            }
        }
        let fresh = Lease {
            quota,
            units: 0,
            lapses_at: 0,
            size: 1,
            granted_at: now,
            shared_remaining: 0,
            shared_reset_after: 0,
            refused_until: 0,
            refused_cost: 0,
            asking_until: 0,
        };
        let lease = shard.entry_ref(key).or_insert(fresh);
        if lease.quota != quota {
            *lease = fresh;
        }
        change(lease);
    }

    /// Forgets `key`'s lease.
    fn drop_lease(&self, key: &str) {
        self.leases.lock(key).remove(key);
    }

    /// Drops the stale leases.
    fn sweep(&self) {
        let (now, lifetime) = (nanos_since(self.epoch), self.lifetime);
        self.leases.retain(|lease| !lease.is_stale(now, lifetime));
    }
}

/// GCRA in Lua, on Redis' clock (microseconds), one round trip: KEYS[1] the key; ARGV the
/// interval (µs), the limit, the cost, 1 to record or 0 to only look, and how many units to
/// take when the call fits (the cost for an exact decision, more for a lease; fewer are
/// granted when fewer are left). Returns allowed, remaining, reset-after (µs), retry-after
/// (µs) and the units granted. Idle keys expire by themselves.
const GCRA_LUA: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local want = math.max(cost, tonumber(ARGV[5]))
local window = interval * limit
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local fits = math.max(0, math.floor((window - (tat - now)) / interval))
if cost <= fits then
  local grant = math.min(want, fits)
  local new_tat = tat + grant * interval
  if ARGV[4] == '1' then
    redis.call('SET', KEYS[1], new_tat, 'PX', math.max(1, math.ceil((new_tat - now) / 1000)))
  end
  return {1, fits - grant, new_tat - now, 0, grant}
end
local retry = tat + cost * interval - window - now
if cost > limit then retry = window end
return {0, fits, tat - now, retry, 0}
";

/// The Redis store: one connection manager (multiplexed, reconnecting), established in the
/// background so that a Redis that is down at start does not stop the node.
pub struct RedisLimiter {
    connection: RedisConnection,
    script: redis::Script,
    timeout: Duration,
}

impl RedisLimiter {
    /// Starts connecting to `url` (retrying every second until it answers).
    pub fn connect(
        url: &str,
        timeout: Duration,
        cancel: CancellationToken,
    ) -> anyhow::Result<Self> {
        let client = redis::Client::open(url)?;
        Ok(Self {
            connection: RedisConnection::connect(
                client,
                "rate limits",
                Duration::from_secs(1),
                cancel,
            ),
            script: redis::Script::new(GCRA_LUA),
            timeout,
        })
    }

    /// Decides a call of `cost` (recording it with `commit`), taking `want` units when it
    /// fits; the decision and the units granted.
    async fn decide(
        &self,
        key: &str,
        quota: Quota,
        cost: u64,
        commit: bool,
        want: u64,
    ) -> Option<(Decision, u64)> {
        let mut connection = self.connection.get()?;
        let interval_us = (quota.interval() / 1000).max(1);
        let mut invocation = self.script.prepare_invoke();
        invocation
            .key(format!("fg:rl:{key}"))
            .arg(interval_us)
            .arg(quota.limit)
            .arg(cost)
            .arg(if commit { "1" } else { "0" })
            .arg(want);
        let call = invocation.invoke_async::<(i64, i64, i64, i64, i64)>(&mut connection);
        match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok((allowed, remaining, reset_us, retry_us, granted))) => {
                let count = |n: i64| u64::try_from(n.max(0)).unwrap_or(0);
                let ns = |us: i64| count(us).saturating_mul(1000);
                let decision = Decision {
                    allowed: allowed == 1,
                    limit: quota.limit,
                    remaining: count(remaining),
                    reset_after: ns(reset_us),
                    retry_after: ns(retry_us),
                };
                Some((decision, count(granted)))
            }
            Ok(Err(error)) => {
                tracing::debug!(%error, "rate limits: Redis call failed");
                None
            }
            Err(_) => None,
        }
    }

    async fn reset(&self, key: &str) -> bool {
        let Some(mut connection) = self.connection.get() else {
            return false;
        };
        let mut command = redis::cmd("DEL");
        command.arg(format!("fg:rl:{key}"));
        let call = command.query_async::<i64>(&mut connection);
        matches!(tokio::time::timeout(self.timeout, call).await, Ok(Ok(_)))
    }
}

/// The limiter the server uses: Redis when configured (with its failure policy and, for keys
/// that allow it, leases), memory otherwise or as the fallback.
pub struct Limiter {
    memory: MemoryLimiter,
    redis: Option<RedisLimiter>,
    /// This node's leases, when Redis is configured with a lease lifetime.
    leases: Option<LeaseBook>,
    policy: RedisFailure,
    /// Until when (ms since the memory limiter's epoch) Redis is skipped after a failure.
    redis_down_until: AtomicU64,
    last_failure_log: AtomicU64,
    fallbacks: prometheus_client::metrics::counter::Counter,
    round_trips: prometheus_client::metrics::counter::Counter,
}

impl Limiter {
    /// A memory-only limiter.
    pub fn in_memory(max_keys: usize) -> Self {
        Self {
            memory: MemoryLimiter::new(max_keys),
            redis: None,
            leases: None,
            policy: RedisFailure::FailOpen,
            redis_down_until: AtomicU64::new(0),
            last_failure_log: AtomicU64::new(0),
            fallbacks: Default::default(),
            round_trips: Default::default(),
        }
    }

    /// Shares counters through Redis, deciding by `policy` when it cannot answer; leased
    /// decisions take leases living `lease` (zero: every decision is exact).
    pub fn with_redis(
        mut self,
        redis: RedisLimiter,
        policy: RedisFailure,
        lease: Duration,
    ) -> Self {
        self.redis = Some(redis);
        self.policy = policy;
        self.leases =
            (!lease.is_zero()).then(|| LeaseBook::new(self.memory.tats.per_shard * SHARDS, lease));
        self
    }

    /// The counter of decisions taken without Redis although it is configured.
    pub fn fallback_counter(&self) -> prometheus_client::metrics::counter::Counter {
        self.fallbacks.clone()
    }

    /// The counter of round trips to Redis (exact decisions and leases).
    pub fn round_trip_counter(&self) -> prometheus_client::metrics::counter::Counter {
        self.round_trips.clone()
    }

    /// True once Redis is configured and connected (the connection then heals by itself).
    pub fn redis_connected(&self) -> bool {
        self.redis
            .as_ref()
            .is_some_and(|r| r.connection.get().is_some())
    }

    /// The memory store (for sweeping and tests).
    pub fn memory(&self) -> &MemoryLimiter {
        &self.memory
    }

    /// Decides and records a call of `cost` on `key`, exactly.
    pub async fn check(&self, key: &str, quota: Quota, cost: u64) -> Result<Decision, ApiError> {
        self.decide(key, quota, cost, true).await
    }

    /// Decides and records a call of `cost` on `key`, from this node's lease when `sharing`
    /// allows it and Redis holds the counters.
    pub async fn spend(
        &self,
        key: &str,
        quota: Quota,
        cost: u64,
        sharing: Sharing,
    ) -> Result<Decision, ApiError> {
        let Some(leases) = self.leases.as_ref().filter(|_| sharing == Sharing::Leased) else {
            return self.check(key, quota, cost).await;
        };
        let want = match leases.take(key, quota, cost) {
            Take::Decided(decision) => return Ok(decision),
            Take::Ask(cost) => (cost, false),
            Take::Lease(want) => (want, true),
        };
        let (want, leasing) = want;
        let (mut decision, granted) = self.decide_with_grant(key, quota, cost, true, want).await?;
        if !decision.allowed {
            leases.refused(key, quota, cost, &decision);
        } else {
            // kept even when nothing is left over: the lease's size grows from its record
            let extra = granted.saturating_sub(cost);
            leases.keep(key, quota, extra, &decision, leasing);
            decision.remaining = decision.remaining.saturating_add(extra).min(quota.limit);
        }
        Ok(decision)
    }

    /// Whether a call of `cost` would pass now, recording nothing.
    pub async fn peek(&self, key: &str, quota: Quota, cost: u64) -> Result<Decision, ApiError> {
        self.decide(key, quota, cost, false).await
    }

    /// Forgets a key everywhere (this node's lease included).
    pub async fn reset(&self, key: &str) {
        self.memory.reset(key);
        if let Some(leases) = &self.leases {
            leases.drop_lease(key);
        }
        if let Some(redis) = &self.redis {
            redis.reset(key).await;
        }
    }

    /// An exact decision: the call's cost and nothing more taken.
    async fn decide(
        &self,
        key: &str,
        quota: Quota,
        cost: u64,
        commit: bool,
    ) -> Result<Decision, ApiError> {
        let (decision, _) = self
            .decide_with_grant(key, quota, cost, commit, cost)
            .await?;
        Ok(decision)
    }

    /// The decision, and the units granted (`want` or fewer when the call fits; the memory
    /// store grants only the cost).
    async fn decide_with_grant(
        &self,
        key: &str,
        quota: Quota,
        cost: u64,
        commit: bool,
        want: u64,
    ) -> Result<(Decision, u64), ApiError> {
        let in_memory = |limiter: &Self| {
            let decision = limiter.memory.decide(key, quota, cost, commit);
            (decision, if decision.allowed { cost } else { 0 })
        };
        let Some(redis) = &self.redis else {
            return Ok(in_memory(self));
        };
        let now_ms = self.memory.epoch.elapsed().as_millis() as u64;
        if now_ms >= self.redis_down_until.load(Ordering::Relaxed) {
            self.round_trips.inc();
            if let Some(answer) = redis.decide(key, quota, cost, commit, want).await {
                return Ok(answer);
            }
            // skip Redis for a second rather than paying its timeout on every request
            self.redis_down_until
                .store(now_ms + 1000, Ordering::Relaxed);
        }
        self.fallbacks.inc();
        let last = self.last_failure_log.load(Ordering::Relaxed);
        if (last == 0 || now_ms.saturating_sub(last) >= 60_000)
            && self
                .last_failure_log
                .compare_exchange(last, now_ms.max(1), Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(policy = ?self.policy, "rate limits: Redis unavailable; deciding by the failure policy (logged once a minute)");
        }
        match self.policy {
            RedisFailure::FailOpen => Ok(in_memory(self)),
            RedisFailure::FailClosed => Err(ApiError::Unavailable),
        }
    }

    /// Sweeps idle memory keys and stale leases every 30 s until cancelled.
    pub fn spawn_sweeper(self: &Arc<Self>, cancel: CancellationToken) {
        let limiter = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(30)) => {}
                }
                match limiter.upgrade() {
                    Some(limiter) => {
                        limiter.memory.sweep();
                        if let Some(leases) = &limiter.leases {
                            leases.sweep();
                        }
                    }
                    None => return,
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_shards_evict_instead_of_growing() {
        let limiter = MemoryLimiter::new(SHARDS * 16);
        let quota = Quota {
            limit: 1,
            window: 3_600_000_000_000,
        };
        for i in 0..100_000 {
            limiter.decide(&format!("k{i}"), quota, 1, true);
        }
        assert!(limiter.len() <= SHARDS * 17, "{} keys held", limiter.len());
    }

    const HOUR: Nanos = 3_600_000_000_000;

    fn per_hour(limit: u64) -> Quota {
        Quota {
            limit,
            window: HOUR,
        }
    }

    /// What Redis answers a lease under `quota` with plenty left.
    fn plenty_left(quota: Quota) -> Decision {
        Decision {
            allowed: true,
            limit: quota.limit,
            remaining: quota.limit / 2,
            reset_after: HOUR / 2,
            retry_after: 0,
        }
    }

    /// Spends one call from `book`, granting what it asks for as Redis would with plenty
    /// left; the units asked for (0 when spent locally).
    fn spend_one(book: &LeaseBook, quota: Quota) -> u64 {
        match book.take("k", quota, 1) {
            Take::Decided(decision) => {
                assert!(decision.allowed);
                0
            }
            Take::Ask(want) => {
                book.keep("k", quota, want - 1, &plenty_left(quota), false);
                want
            }
            Take::Lease(want) => {
                book.keep("k", quota, want - 1, &plenty_left(quota), true);
                want
            }
        }
    }

    #[test]
    fn a_burst_asks_for_one_lease_at_a_time() {
        let book = LeaseBook::new(1000, Duration::from_secs(3600));
        let quota = per_hour(1000);
        let size = loop {
            let want = spend_one(&book, quota);
            if want >= 8 {
                break want;
            }
        };
        for _ in 1..size {
            assert_eq!(spend_one(&book, quota), 0);
        }
        // the lease is empty: the first call asks for a lease, those arriving before it is
        // granted ask only for their own cost
        let Take::Lease(lease) = book.take("k", quota, 1) else {
            panic!("an empty lease was spent");
        };
        assert!(lease >= 16, "{lease}");
        for _ in 0..50 {
            assert!(matches!(book.take("k", quota, 1), Take::Ask(1)));
        }
        book.keep("k", quota, lease - 1, &plenty_left(quota), true);
        assert!(matches!(book.take("k", quota, 1), Take::Decided(_)));
    }

    #[test]
    fn a_lease_grows_while_it_is_spent_and_never_past_a_tenth_of_the_limit() {
        let book = LeaseBook::new(1000, Duration::from_secs(3600));
        let quota = per_hour(1000);
        let asks: Vec<u64> = (0..400)
            .map(|_| spend_one(&book, quota))
            .filter(|want| *want > 0)
            .collect();
        assert_eq!(&asks[..6], &[1, 1, 2, 4, 8, 16], "{asks:?}");
        assert!(asks.iter().all(|want| *want <= 100), "{asks:?}");
        assert_eq!(*asks.last().unwrap(), 100);
        // 400 calls cost far fewer asks
        assert!(asks.len() < 15, "{} asks", asks.len());
    }

    #[test]
    fn a_lease_whose_units_lapse_shrinks() {
        let book = LeaseBook::new(1000, Duration::from_millis(50));
        let quota = per_hour(1000);
        let granted = plenty_left(quota);
        // grow to an ask of at least 8 (all within one lifetime)
        let size = loop {
            let want = spend_one(&book, quota);
            if want >= 8 {
                break want;
            }
        };
        // the lease of `size` is taken; spending it all in time doubled the next size
        for _ in 1..size {
            assert_eq!(spend_one(&book, quota), 0);
        }
        let Take::Lease(next) = book.take("k", quota, 1) else {
            panic!("an empty lease was spent");
        };
        assert_eq!(next, size * 2);
        book.keep("k", quota, next - 1, &granted, true);
        // this one lapses unspent: the size after it is half
        std::thread::sleep(Duration::from_millis(60));
        let Take::Lease(after_lapse) = book.take("k", quota, 1) else {
            panic!("a lapsed lease was spent");
        };
        assert_eq!(after_lapse, next * 2);
        book.keep("k", quota, 0, &granted, true);
        let Take::Lease(shrunk) = book.take("k", quota, 1) else {
            panic!("an empty lease was spent");
        };
        assert_eq!(shrunk, next);
    }

    #[test]
    fn a_refusal_is_remembered_until_its_retry_and_only_for_as_costly_calls() {
        let book = LeaseBook::new(1000, Duration::from_secs(1));
        let quota = per_hour(10);
        let refused = Decision {
            allowed: false,
            limit: 10,
            remaining: 1,
            reset_after: HOUR,
            retry_after: 30_000_000, // 30 ms
        };
        book.refused("k", quota, 2, &refused);
        match book.take("k", quota, 2) {
            Take::Decided(decision) => {
                assert!(!decision.allowed);
                assert!(decision.retry_after > 0 && decision.retry_after <= 30_000_000);
            }
            Take::Ask(_) | Take::Lease(_) => panic!("asked Redis again within the retry"),
        }
        assert!(matches!(book.take("k", quota, 1), Take::Lease(1)));
        // another quota is another lease
        let other = Quota { limit: 20, ..quota };
        assert!(matches!(book.take("k", other, 2), Take::Ask(2)));
        std::thread::sleep(Duration::from_millis(35));
        assert!(matches!(book.take("k", quota, 2), Take::Ask(2)));
    }

    #[test]
    fn sweeping_drops_only_idle_keys() {
        let limiter = MemoryLimiter::new(1000);
        let long = per_hour(10);
        let short = Quota {
            limit: 1000,
            window: 1_000,
        };
        limiter.decide("busy", long, 1, true);
        limiter.decide("idle", short, 1, true);
        std::thread::sleep(Duration::from_millis(2));
        assert_eq!(limiter.sweep(), 1);
        assert!(!limiter.is_empty());
    }
}
