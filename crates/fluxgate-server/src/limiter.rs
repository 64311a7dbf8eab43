//! Rate-limit stores running the domain crate's GCRA: sharded in memory for one node, and in
//! Redis — one atomic Lua round trip per decision on Redis' own clock — for several. When Redis
//! cannot answer, the configured policy decides: `fail_open` (default) falls back to the memory
//! store, `fail_closed` answers 503.

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

/// Key → theoretical arrival time: hashbrown with foldhash (seeded per process), looked up
/// once per decision — SipHash and a second lookup showed in verify profiles.
type Tats = hashbrown::HashMap<Box<str>, Nanos>;

/// One shard.
type Shard = Mutex<Tats>;

/// The in-memory store: `SHARDS` independently locked maps of key → TAT, so concurrent
/// decisions on different keys rarely contend. Idle keys (TAT in the past) carry no
/// information and are dropped by a periodic sweep, or at once when a shard is full.
pub struct MemoryLimiter {
    shards: Box<[Shard]>,
    hasher: hashbrown::DefaultHashBuilder,
    epoch: Instant,
    per_shard: usize,
}

impl MemoryLimiter {
    /// A store holding at most about `max_keys` keys.
    pub fn new(max_keys: usize) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(Tats::default())).collect(),
            hasher: hashbrown::DefaultHashBuilder::default(),
            epoch: Instant::now(),
            per_shard: (max_keys / SHARDS).max(16),
        }
    }

    fn now(&self) -> Nanos {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    fn shard(&self, key: &str) -> &Shard {
        let index = (self.hasher.hash_one(key) as usize) % SHARDS;
        &self.shards[index]
    }

    /// Decides (and, with `commit`, records) a call of `cost` on `key`.
    pub fn decide(&self, key: &str, quota: Quota, cost: u64, commit: bool) -> Decision {
        let now = self.now();
        let mut shard = match self.shard(key).lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Some(slot) = shard.get_mut(key) {
            let (decision, tat) = decide(quota, Some(*slot), now, cost);
            if commit && decision.allowed {
                *slot = tat;
            }
            return decision;
        }
        let (decision, tat) = decide(quota, None, now, cost);
        if commit && decision.allowed {
            if shard.len() >= self.per_shard {
                make_room(&mut shard, now, self.per_shard);
            }
            shard.insert(key.into(), tat);
        }
        decision
    }

    /// Forgets a key.
    pub fn reset(&self, key: &str) {
        if let Ok(mut shard) = self.shard(key).lock() {
            shard.remove(key);
        }
    }

    /// Drops every idle key; returns how many keys remain.
    pub fn sweep(&self) -> usize {
        let now = self.now();
        self.shards
            .iter()
            .map(|shard| match shard.lock() {
                Ok(mut map) => {
                    map.retain(|_, tat| *tat > now);
                    map.len()
                }
                Err(_) => 0,
            })
            .sum()
    }

    /// Keys currently held.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().map(|m| m.len()).unwrap_or(0))
            .sum()
    }

    /// True when no key is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Frees space in a full shard: idle keys first; if none is idle, the key nearest to idle (the
/// least restricted, so evicting it forgives the least).
fn make_room(shard: &mut Tats, now: Nanos, bound: usize) {
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

/// GCRA in Lua, on Redis' clock (microseconds), one round trip: KEYS[1] the key; ARGV the
/// interval (µs), the limit, the cost and 1 to record or 0 to only look. Returns allowed,
/// remaining, reset-after (µs) and retry-after (µs). Idle keys expire by themselves.
const GCRA_LUA: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local window = interval * limit
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local new_tat = tat + cost * interval
local allow_at = new_tat - window
if allow_at <= now then
  if ARGV[4] == '1' then
    redis.call('SET', KEYS[1], new_tat, 'PX', math.max(1, math.ceil((new_tat - now) / 1000)))
  end
  return {1, math.floor((window - (new_tat - now)) / interval), new_tat - now, 0}
end
local retry = allow_at - now
if cost > limit then retry = window end
return {0, math.floor((window - (tat - now)) / interval), tat - now, retry}
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
            connection: RedisConnection::connect(client, "rate limits", cancel),
            script: redis::Script::new(GCRA_LUA),
            timeout,
        })
    }

    async fn decide(&self, key: &str, quota: Quota, cost: u64, commit: bool) -> Option<Decision> {
        let mut connection = self.connection.get()?;
        let interval_us = (quota.interval() / 1000).max(1);
        let mut invocation = self.script.prepare_invoke();
        invocation
            .key(format!("fg:rl:{key}"))
            .arg(interval_us)
            .arg(quota.limit)
            .arg(cost)
            .arg(if commit { "1" } else { "0" });
        let call = invocation.invoke_async::<(i64, i64, i64, i64)>(&mut connection);
        match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok((allowed, remaining, reset_us, retry_us))) => {
                let ns = |us: i64| u64::try_from(us.max(0)).unwrap_or(0).saturating_mul(1000);
                Some(Decision {
                    allowed: allowed == 1,
                    limit: quota.limit,
                    remaining: u64::try_from(remaining.max(0)).unwrap_or(0),
                    reset_after: ns(reset_us),
                    retry_after: ns(retry_us),
                })
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

/// The limiter the server uses: Redis when configured (with its failure policy), memory
/// otherwise or as the fallback.
pub struct Limiter {
    memory: MemoryLimiter,
    redis: Option<RedisLimiter>,
    policy: RedisFailure,
    /// Until when (ms since the memory limiter's epoch) Redis is skipped after a failure.
    redis_down_until: AtomicU64,
    last_failure_log: AtomicU64,
    fallbacks: prometheus_client::metrics::counter::Counter,
}

impl Limiter {
    /// A memory-only limiter.
    pub fn in_memory(max_keys: usize) -> Self {
        Self {
            memory: MemoryLimiter::new(max_keys),
            redis: None,
            policy: RedisFailure::FailOpen,
            redis_down_until: AtomicU64::new(0),
            last_failure_log: AtomicU64::new(0),
            fallbacks: Default::default(),
        }
    }

    /// Shares counters through Redis, deciding by `policy` when it cannot answer.
    pub fn with_redis(mut self, redis: RedisLimiter, policy: RedisFailure) -> Self {
        self.redis = Some(redis);
        self.policy = policy;
        self
    }

    /// The counter of decisions taken without Redis although it is configured.
    pub fn fallback_counter(&self) -> prometheus_client::metrics::counter::Counter {
        self.fallbacks.clone()
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

    /// Decides and records a call of `cost` on `key`.
    pub async fn check(&self, key: &str, quota: Quota, cost: u64) -> Result<Decision, ApiError> {
        self.decide(key, quota, cost, true).await
    }

    /// Whether a call of `cost` would pass now, recording nothing.
    pub async fn peek(&self, key: &str, quota: Quota, cost: u64) -> Result<Decision, ApiError> {
        self.decide(key, quota, cost, false).await
    }

    /// Forgets a key everywhere.
    pub async fn reset(&self, key: &str) {
        self.memory.reset(key);
        if let Some(redis) = &self.redis {
            redis.reset(key).await;
        }
    }

    async fn decide(
        &self,
        key: &str,
        quota: Quota,
        cost: u64,
        commit: bool,
    ) -> Result<Decision, ApiError> {
        let Some(redis) = &self.redis else {
            return Ok(self.memory.decide(key, quota, cost, commit));
        };
        let now_ms = self.memory.epoch.elapsed().as_millis() as u64;
        if now_ms >= self.redis_down_until.load(Ordering::Relaxed) {
            if let Some(decision) = redis.decide(key, quota, cost, commit).await {
                return Ok(decision);
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
            RedisFailure::FailOpen => Ok(self.memory.decide(key, quota, cost, commit)),
            RedisFailure::FailClosed => Err(ApiError::Unavailable),
        }
    }

    /// Sweeps idle memory keys every 30 s until cancelled.
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

    #[test]
    fn sweeping_drops_only_idle_keys() {
        let limiter = MemoryLimiter::new(1000);
        let long = Quota {
            limit: 10,
            window: 3_600_000_000_000,
        };
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
