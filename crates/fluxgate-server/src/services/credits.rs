//! A key's usage credits: checking them at creation and change (`NewCredits`,
//! `CreditsChange`), showing them as they stand (a refill that is due counts as done), and
//! spending them on verify through the [`CreditLedger`] — in Redis when it is configured
//! ([`RedisCredits`]), else a conditional `UPDATE` each in the database, so nodes never both
//! spend the last credit; the spends that arrive together are written in one transaction by the
//! [`CreditSpender`].

use crate::clock::rfc3339;
use crate::error::{ApiError, ApiResult};
use crate::services::redis_credits::{CountChange, RedisCredits};
use fluxgate_core::credits::{self, Interval, Refill};
use fluxgate_core::validation::FieldErrors;
use fluxgate_proto::{CreditRefill, Credits, CreditsChange, NewCredits};
use fluxgate_store::{ApiKeyRecord, CreditSpend, CreditSpendRequest, CreditsUpdate, KeyId, Store};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

/// A key's stored credits and refill, as the store's columns hold them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CreditPolicy {
    /// The automatic refill, if any.
    pub refill: Option<Refill>,
}

impl CreditPolicy {
    /// The key's policy, if it has credits.
    pub fn of(key: &ApiKeyRecord) -> Option<Self> {
        key.credits_remaining?;
        Some(Self {
            refill: stored_refill(key),
        })
    }

    /// Where the count that is valid at `now` began: the latest refill, or `now` without one
    /// (so a stored count is never read as due for a refill).
    pub fn period_start(&self, now: i64) -> i64 {
        self.refill.map_or(now, |r| r.interval.period_start(now))
    }

    /// The refill amount, as the store counts.
    fn refill_amount(&self) -> Option<i64> {
        self.refill
            .map(|r| i64::try_from(r.amount).unwrap_or(i64::MAX))
    }

    /// The credits as the API shows them, with `remaining` left.
    pub fn view(&self, remaining: i64, now: i64) -> Credits {
        Credits {
            remaining: u64::try_from(remaining).unwrap_or(0),
            refill: self.refill.map(|r| CreditRefill {
                amount: r.amount,
                interval: r.interval.word().to_owned(),
                day_of_month: r.interval.day_of_month().map(u32::from),
            }),
            refills_at: self.refill.map(|r| rfc3339(r.interval.next_refill(now))),
        }
    }
}

fn stored_refill(key: &ApiKeyRecord) -> Option<Refill> {
    let amount = u64::try_from(key.credits_refill_amount?).ok()?;
    let day = key.credits_refill_day.and_then(|d| u32::try_from(d).ok());
    let interval = Interval::parse(key.credits_refill_interval.as_deref()?, day).ok()?;
    Some(Refill { amount, interval })
}

/// A key's credits as they stand at `now` (a refill that is due counts as done).
pub fn view(key: &ApiKeyRecord, now: i64) -> Option<Credits> {
    let policy = CreditPolicy::of(key)?;
    let due = policy.refill.filter(|_| {
        key.credits_refilled_at
            .is_some_and(|at| at < policy.period_start(now))
    });
    let remaining = match due {
        Some(refill) => i64::try_from(refill.amount).unwrap_or(i64::MAX),
        None => key.credits_remaining.unwrap_or(0),
    };
    Some(policy.view(remaining, now))
}

fn checked_refill(errors: &mut FieldErrors, refill: &CreditRefill) -> Option<Refill> {
    let amount = errors.absorb(credits::checked("credits.refill.amount", refill.amount));
    let interval = errors.absorb(Interval::parse(&refill.interval, refill.day_of_month));
    Some(Refill {
        amount: amount?,
        interval: interval?,
    })
}

fn count(errors: &mut FieldErrors, field: &str, value: u64) -> Option<i64> {
    errors
        .absorb(credits::checked(field, value))
        .and_then(|v| i64::try_from(v).ok())
}

fn store_refill(key: &mut ApiKeyRecord, refill: Option<Refill>) {
    key.credits_refill_amount = refill.and_then(|r| i64::try_from(r.amount).ok());
    key.credits_refill_interval = refill.map(|r| r.interval.word().to_owned());
    key.credits_refill_day = refill.and_then(|r| r.interval.day_of_month().map(i64::from));
}

/// Puts a new key's checked credits into `key` (errors name the field).
pub fn start(errors: &mut FieldErrors, key: &mut ApiKeyRecord, input: &NewCredits, now: i64) {
    let remaining = count(errors, "credits.remaining", input.remaining);
    let refill = input
        .refill
        .as_ref()
        .and_then(|r| checked_refill(errors, r));
    if input.refill.is_some() && refill.is_none() {
        return;
    }
    store_refill(key, refill);
    key.credits_remaining = remaining;
    key.credits_refilled_at = Some(refill.map_or(now, |r| r.interval.period_start(now)));
}

/// Applies a checked change of credits to `changed` (the refill) and says how the store changes
/// the count; `None` drops the credits. A key without credits must be given `remaining`.
pub fn change(
    errors: &mut FieldErrors,
    changed: &mut ApiKeyRecord,
    input: Option<&CreditsChange>,
    now: i64,
) -> CreditsUpdate {
    let Some(input) = input else {
        store_refill(changed, None);
        return CreditsUpdate::Clear;
    };
    let had_credits = changed.credits_remaining.is_some();
    let refill = match &input.refill {
        Some(Some(refill)) => checked_refill(errors, refill).map(Some),
        Some(None) => Some(None),
        None => Some(stored_refill(changed)),
    };
    let Some(refill) = refill else {
        return CreditsUpdate::Keep;
    };
    store_refill(changed, refill);
    let period_start = refill.map_or(now, |r| r.interval.period_start(now));
    match (input.remaining, input.add) {
        (Some(_), Some(_)) => {
            errors.add("credits.add", "give remaining or add, not both");
            CreditsUpdate::Keep
        }
        (Some(remaining), None) => match count(errors, "credits.remaining", remaining) {
            Some(remaining) => CreditsUpdate::Set {
                remaining,
                period_start,
            },
            None => CreditsUpdate::Keep,
        },
        (None, _) if !had_credits => {
            errors.add(
                "credits.remaining",
                "the key has no credits yet: give remaining to start counting",
            );
            CreditsUpdate::Keep
        }
        (None, Some(add)) => match count(errors, "credits.add", add) {
            Some(credits) => CreditsUpdate::Add {
                credits,
                period_start,
            },
            None => CreditsUpdate::Keep,
        },
        (None, None) => CreditsUpdate::Keep,
    }
}

/// Where credits are counted: Redis when it is configured, the database otherwise.
pub enum CreditLedger {
    /// Each spend a conditional statement in the database, batched per node.
    Database(CreditSpender),
    /// Each spend a script in Redis; the database gets the counts within a second.
    Redis(Arc<RedisCredits>),
}

/// How to take back a change made in Redis whose database write then failed.
#[derive(Debug, Clone, Copy)]
pub struct CreditsUndo {
    change: CountChange,
    period_start: i64,
}

impl CreditLedger {
    /// Spends `cost` of a key's credits: spent (and how many are left), too few left, or no
    /// credits. 503 when the database (or Redis) cannot be written.
    pub async fn spend(
        &self,
        key_id: &KeyId,
        policy: &CreditPolicy,
        cost: u64,
        now: i64,
    ) -> ApiResult<CreditSpend> {
        match self {
            Self::Database(spender) => spender.spend(key_id, policy, cost, now).await,
            Self::Redis(redis) => {
                let cost = i64::try_from(cost).unwrap_or(i64::MAX);
                let refill = policy.refill_amount();
                redis
                    .spend(key_id, cost, policy.period_start(now), refill)
                    .await
            }
        }
    }

    /// Puts the live count into keys read from the database (Redis may be ahead of it).
    pub async fn freshen(&self, keys: &mut [ApiKeyRecord]) -> ApiResult<()> {
        let Self::Redis(redis) = self else {
            return Ok(());
        };
        for key in keys.iter_mut().filter(|k| k.credits_remaining.is_some()) {
            if let Some(count) = redis.current(&key.id).await? {
                key.credits_remaining = Some(count.remaining);
                key.credits_refilled_at = Some(count.refilled_at);
            }
        }
        Ok(())
    }

    /// Makes a change of a key's credits where they are counted: in Redis, it is made there
    /// and the database is given the count it left (with the way to take it back, should the
    /// database write fail); in the database, the update itself is the change. `before` is
    /// the key as stored before the change.
    pub async fn prepare(
        &self,
        before: &ApiKeyRecord,
        update: CreditsUpdate,
    ) -> ApiResult<(CreditsUpdate, Option<CreditsUndo>)> {
        let Self::Redis(redis) = self else {
            return Ok((update, None));
        };
        let (change, undo, period_start) = match update {
            CreditsUpdate::Set {
                remaining,
                period_start,
            } => {
                let previous = redis.current(&before.id).await?;
                let undo = previous.map(|c| CountChange::Set(c.remaining));
                (CountChange::Set(remaining), undo, period_start)
            }
            CreditsUpdate::Add {
                credits,
                period_start,
            } => (
                CountChange::Add(credits),
                Some(CountChange::Add(credits.saturating_neg())),
                period_start,
            ),
            other => return Ok((other, None)),
        };
        let refill = CreditPolicy::of(before).and_then(|p| p.refill_amount());
        match redis
            .change(&before.id, change, period_start, refill)
            .await?
        {
            Some((_, count)) => Ok((
                CreditsUpdate::Mirror(count),
                undo.map(|change| CreditsUndo {
                    change,
                    period_start,
                }),
            )),
            None => Err(ApiError::Conflict(
                "the key's credits changed meanwhile; try again".into(),
            )),
        }
    }

    /// Takes back a change [`prepare`](Self::prepare) made in Redis.
    pub async fn undo(&self, key_id: &KeyId, undo: CreditsUndo) {
        if let Self::Redis(redis) = self {
            if let Err(error) = redis
                .change(key_id, undo.change, undo.period_start, None)
                .await
            {
                tracing::error!(%error, %key_id, "a credit change could not be taken back");
            }
        }
    }

    /// After the database stored `update`: a key whose credits were removed loses its count.
    pub async fn stored(&self, key_id: &KeyId, update: CreditsUpdate) {
        if let (Self::Redis(redis), CreditsUpdate::Clear) = (self, update) {
            redis.forget(key_id).await;
        }
    }

    /// Writes what is not in the database yet (at shutdown).
    pub async fn save(&self) -> ApiResult<()> {
        match self {
            Self::Database(_) => Ok(()),
            Self::Redis(redis) => redis.save().await,
        }
    }
}

/// The most spends written in one transaction.
const MAX_BATCH: usize = 256;

/// A spend waiting for its transaction.
struct Pending {
    request: CreditSpendRequest,
    answer: oneshot::Sender<Option<CreditSpend>>,
}

/// Spends credits for every verify of this node: the spends that arrive while a transaction is
/// being written wait for the next one, and go together (a group commit), so a burst of calls
/// costs a transaction per batch, not per call — each spend still its own conditional statement.
/// SQLite has one writer; PostgreSQL gets a few, each key always on the same one (so a node's
/// own batches never wait on each other's row locks).
pub struct CreditSpender {
    writers: Vec<mpsc::Sender<Pending>>,
}

/// Concurrent writers on PostgreSQL.
const POSTGRES_WRITERS: usize = 4;

impl CreditSpender {
    /// Starts the writers on `store`; they stop with `cancel`.
    pub fn spawn(store: Arc<dyn Store>, cancel: CancellationToken) -> Self {
        let count = if store.backend() == "sqlite" {
            1
        } else {
            POSTGRES_WRITERS
        };
        let writers = (0..count)
            .map(|_| {
                let (queue, pending) = mpsc::channel(MAX_BATCH * 16);
                tokio::spawn(write_spends(store.clone(), pending, cancel.clone()));
                queue
            })
            .collect();
        Self { writers }
    }

    /// The writer of a key's spends.
    fn writer(&self, key_id: &KeyId) -> &mpsc::Sender<Pending> {
        let hash = key_id.as_str().bytes().fold(0usize, |h, b| {
            h.wrapping_mul(31).wrapping_add(usize::from(b))
        });
        &self.writers[hash % self.writers.len()]
    }

    /// Spends `cost` of a key's credits: spent (and how many are left), too few left, or no
    /// credits. 503 when the database cannot be written.
    pub async fn spend(
        &self,
        key_id: &KeyId,
        policy: &CreditPolicy,
        cost: u64,
        now: i64,
    ) -> ApiResult<CreditSpend> {
        let (answer, outcome) = oneshot::channel();
        let request = CreditSpendRequest {
            key_id: key_id.clone(),
            cost: i64::try_from(cost).unwrap_or(i64::MAX),
            period_start: policy.period_start(now),
        };
        self.writer(key_id)
            .send(Pending { request, answer })
            .await
            .map_err(|_| ApiError::Unavailable)?;
        outcome.await.ok().flatten().ok_or(ApiError::Unavailable)
    }
}

async fn write_spends(
    store: Arc<dyn Store>,
    mut pending: mpsc::Receiver<Pending>,
    cancel: CancellationToken,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    loop {
        let received = tokio::select! {
            received = pending.recv_many(&mut batch, MAX_BATCH) => received,
            () = cancel.cancelled() => return,
        };
        if received == 0 {
            return;
        }
        let requests: Vec<CreditSpendRequest> = batch.iter().map(|p| p.request.clone()).collect();
        match store.spend_credits(&requests).await {
            Ok(outcomes) => {
                for (waiting, outcome) in batch.drain(..).zip(outcomes) {
                    let _ = waiting.answer.send(Some(outcome));
                }
            }
            Err(error) => {
                tracing::warn!(%error, spends = requests.len(), "credits could not be spent");
                for waiting in batch.drain(..) {
                    let _ = waiting.answer.send(None);
                }
            }
        }
    }
}
