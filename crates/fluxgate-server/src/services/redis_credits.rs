//! Usage credits counted in Redis when it is configured: each spend, top-up or set is one Lua
//! script on the key's count (exact across nodes, no database write on the verify path), loaded
//! from the database the first time Redis does not hold it; every node writes the counts it
//! changed back to the database within a second, each only over an older one.

use crate::error::{ApiError, ApiResult};
use crate::redisconn::RedisConnection;
use fluxgate_store::{CreditCount, CreditSpend, KeyId, Store};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How often a node writes the counts it changed to the database.
const WRITE_EVERY: Duration = Duration::from_secs(1);

/// How long a change waits for Redis' answer before the call is refused with 503 (a spend
/// that was made but not answered in time is lost to the key, never given twice).
const ANSWER_WITHIN: Duration = Duration::from_secs(5);

/// How long a call waits for a node's first connection to Redis.
const FIRST_CONNECT: Duration = Duration::from_secs(1);

/// How long Redis keeps a count nobody touches (it is loaded again from the database after).
const IDLE_SECONDS: u64 = 7 * 24 * 3600;

/// One change to a key's count. KEYS[1]: the count (a hash of `r` left, `p` refill period
/// start, `s` changes made). ARGV: the operation (`spend`, `add`, `set`), its amount, the current
/// period's start, the refill amount (-1 for none), the idle expiry, then — when Redis may not
/// hold the count — the stored remaining, period start and changes to load first. Answers
/// `{-1}` when the count is absent and nothing to load was given, else `{done, r, p, s}`.
const CHANGE_LUA: &str = r"
local op, amount = ARGV[1], tonumber(ARGV[2])
local start, refill = tonumber(ARGV[3]), tonumber(ARGV[4])
local h = redis.call('HMGET', KEYS[1], 'r', 'p', 's')
local r, p, s = tonumber(h[1]), tonumber(h[2]), tonumber(h[3])
local loaded = false
if not r then
  if not ARGV[6] then return {-1} end
  r, p, s = tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])
  loaded = true
end
local before = s
if op ~= 'set' and refill >= 0 and p < start then
  r = refill
  p = start
  s = s + 1
end
local done = 1
if op == 'spend' then
  if r >= amount then r = r - amount; s = s + 1 else done = 0 end
elseif op == 'add' then
  r = r + amount; s = s + 1
else
  r = amount; p = start; s = s + 1
end
if loaded or s ~= before then
  redis.call('HSET', KEYS[1], 'r', string.format('%d', r), 'p', string.format('%d', p),
    's', string.format('%d', s))
end
redis.call('EXPIRE', KEYS[1], ARGV[5])
return {done, r, p, s}
";

/// A change to make to a key's count.
#[derive(Debug, Clone, Copy)]
pub enum CountChange {
    /// Take this many if there are as many.
    Spend(i64),
    /// Add this many.
    Add(i64),
    /// Set to this many, for the period starting at `period_start`.
    Set(i64),
}

impl CountChange {
    fn op(self) -> (&'static str, i64) {
        match self {
            Self::Spend(n) => ("spend", n),
            Self::Add(n) => ("add", n),
            Self::Set(n) => ("set", n),
        }
    }
}

/// The credit counts in Redis, and the changes this node made to them that the database has
/// not been given yet.
pub struct RedisCredits {
    connection: RedisConnection,
    script: redis::Script,
    store: Arc<dyn Store>,
    unsaved: Mutex<HashMap<KeyId, CreditCount>>,
    /// Database reads of counts under way: the calls that find a count absent together share
    /// one read (a burst on a new key would otherwise take every database connection).
    loading: Mutex<HashMap<KeyId, Arc<Loading>>>,
}

/// One database read of a key's count, shared.
type Loading = tokio::sync::OnceCell<Option<CreditCount>>;

fn redis_key(key_id: &KeyId) -> String {
    format!("fg:credits:{key_id}")
}

impl RedisCredits {
    /// Starts connecting to `url` (retrying every second until it answers) and writing counts
    /// to `store` every second until `cancel`.
    pub fn connect(
        url: &str,
        store: Arc<dyn Store>,
        cancel: CancellationToken,
    ) -> anyhow::Result<Arc<Self>> {
        let client = redis::Client::open(url)?;
        let credits = Arc::new(Self {
            connection: RedisConnection::connect(client, "credits", ANSWER_WITHIN, cancel.clone()),
            script: redis::Script::new(CHANGE_LUA),
            store,
            unsaved: Mutex::new(HashMap::new()),
            loading: Mutex::new(HashMap::new()),
        });
        let writer = Arc::downgrade(&credits);
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = cancel.cancelled() => return,
                    () = tokio::time::sleep(WRITE_EVERY) => {}
                }
                let Some(writer) = writer.upgrade() else {
                    return;
                };
                if let Err(error) = writer.save().await {
                    tracing::warn!(%error, "writing credit counts failed; retrying in a second");
                }
            }
        });
        Ok(credits)
    }

    /// Changes a key's count, at the current period's start `period_start` with the refill
    /// `refill` (amount); whether it was done and the count after. `None` when the key has no
    /// credits; 503 when Redis or (to load the count) the database cannot answer.
    pub async fn change(
        &self,
        key_id: &KeyId,
        change: CountChange,
        period_start: i64,
        refill: Option<i64>,
    ) -> ApiResult<Option<(bool, CreditCount)>> {
        if let Some(answer) = self.run(key_id, change, period_start, refill, None).await? {
            return Ok(Some(answer));
        }
        let stored = self.stored_count(key_id).await?;
        let load = match (stored, change) {
            (Some(count), _) => count,
            // a set starts counting on a key that had none
            (None, CountChange::Set(_)) => CreditCount {
                remaining: 0,
                refilled_at: period_start,
                seq: 0,
            },
            (None, _) => return Ok(None),
        };
        self.run(key_id, change, period_start, refill, Some(load))
            .await
    }

    /// A key's count as the database holds it, read once for all who ask meanwhile.
    async fn stored_count(&self, key_id: &KeyId) -> ApiResult<Option<CreditCount>> {
        let loading = locked(&self.loading)
            .entry(key_id.clone())
            .or_default()
            .clone();
        let read = loading
            .get_or_try_init(|| self.store.credit_count(key_id))
            .await
            .copied();
        let mut under_way = locked(&self.loading);
        if under_way
            .get(key_id)
            .is_some_and(|l| Arc::ptr_eq(l, &loading))
        {
            under_way.remove(key_id);
        }
        Ok(read?)
    }

    /// Spends `cost` credits of a key, as the database spender answers.
    pub async fn spend(
        &self,
        key_id: &KeyId,
        cost: i64,
        period_start: i64,
        refill: Option<i64>,
    ) -> ApiResult<CreditSpend> {
        let changed = self
            .change(key_id, CountChange::Spend(cost), period_start, refill)
            .await?;
        Ok(match changed {
            Some((true, count)) => CreditSpend::Spent(count.remaining),
            Some((false, count)) => CreditSpend::Short(count.remaining),
            None => CreditSpend::Unlimited,
        })
    }

    /// The count Redis holds for a key, if any (without applying a refill that is due).
    pub async fn current(&self, key_id: &KeyId) -> ApiResult<Option<CreditCount>> {
        let mut connection = self
            .connection
            .within(FIRST_CONNECT)
            .await
            .ok_or(ApiError::Unavailable)?;
        let mut command = redis::cmd("HMGET");
        command.arg(redis_key(key_id)).arg("r").arg("p").arg("s");
        let (r, p, s) = command
            .query_async::<(Option<i64>, Option<i64>, Option<i64>)>(&mut connection)
            .await
            .map_err(unavailable)?;
        Ok(match (r, p, s) {
            (Some(remaining), Some(refilled_at), Some(seq)) => Some(CreditCount {
                remaining,
                refilled_at,
                seq,
            }),
            _ => None,
        })
    }

    /// Drops a key's count (its credits were removed); the database already has none.
    pub async fn forget(&self, key_id: &KeyId) {
        locked(&self.unsaved).remove(key_id);
        let Some(mut connection) = self.connection.get() else {
            return;
        };
        let mut command = redis::cmd("DEL");
        command.arg(redis_key(key_id));
        if let Err(error) = command.query_async::<i64>(&mut connection).await {
            // what is left expires when idle; the database refuses it over no credits
            tracing::warn!(%error, "a removed credit count stays in Redis until it expires");
        }
    }

    async fn run(
        &self,
        key_id: &KeyId,
        change: CountChange,
        period_start: i64,
        refill: Option<i64>,
        load: Option<CreditCount>,
    ) -> ApiResult<Option<(bool, CreditCount)>> {
        let mut connection = self
            .connection
            .within(FIRST_CONNECT)
            .await
            .ok_or(ApiError::Unavailable)?;
        let (op, amount) = change.op();
        let mut invocation = self.script.prepare_invoke();
        invocation
            .key(redis_key(key_id))
            .arg(op)
            .arg(amount)
            .arg(period_start)
            .arg(refill.unwrap_or(-1))
            .arg(IDLE_SECONDS);
        if let Some(load) = load {
            invocation
                .arg(load.remaining)
                .arg(load.refilled_at)
                .arg(load.seq);
        }
        let answer = invocation
            .invoke_async::<Vec<i64>>(&mut connection)
            .await
            .map_err(unavailable)?;
        let [done, remaining, refilled_at, seq] = answer[..] else {
            return Ok(None);
        };
        let count = CreditCount {
            remaining,
            refilled_at,
            seq,
        };
        self.note(key_id, count);
        Ok(Some((done == 1, count)))
    }

    /// Remembers a count to write, unless a later one is waiting already.
    fn note(&self, key_id: &KeyId, count: CreditCount) {
        let mut unsaved = locked(&self.unsaved);
        let waiting = unsaved.entry(key_id.clone()).or_insert(count);
        if waiting.seq < count.seq {
            *waiting = count;
        }
    }

    /// Writes the counts this node changed to the database (kept for the next try on failure).
    pub async fn save(&self) -> ApiResult<()> {
        let counts: Vec<(KeyId, CreditCount)> = locked(&self.unsaved).drain().collect();
        if counts.is_empty() {
            return Ok(());
        }
        if let Err(error) = self.store.save_credit_counts(&counts).await {
            for (key_id, count) in &counts {
                self.note(key_id, *count);
            }
            return Err(error.into());
        }
        Ok(())
    }
}

/// A map's lock, even after a panic elsewhere held it (its entries stay usable).
fn locked<T>(map: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    map.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn unavailable(error: redis::RedisError) -> ApiError {
    tracing::warn!(%error, "credits: Redis did not answer");
    ApiError::Unavailable
}
