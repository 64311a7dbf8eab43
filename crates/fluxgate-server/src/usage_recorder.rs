//! Usage bookkeeping off the request path: calls attributed per org, key, endpoint, outcome and
//! minute; monthly counters per org and meter (what plan quotas are checked against); keys' last
//! use. Requests only touch memory; a background task writes the batch every second (kept and
//! retried when the database cannot take it), and a graceful shutdown writes the rest — nothing
//! is lost then; a crash (`kill -9`) loses at most what was answered in the last second, plus
//! the time the write in flight takes.
//!
//! Each node knows an org's monthly total as of its last write (the database answers the new
//! total, other nodes' writes included) plus what it has not written yet; across nodes a quota
//! can therefore be overshot by at most about a second of traffic.

use crate::error::ApiResult;
use fluxgate_store::{
    CallCount, KeyId, OrgId, RollUp, RolledUp, Store, StoreError, UsageIncrement,
};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The recorder's maps: hashbrown with its default (foldhash) hasher — several lookups per
/// verify, where SipHash showed in profiles — and lookups by borrowed parts ([`CallRef`]).
type FastMap<K, V> = hashbrown::HashMap<K, V>;

/// One org's counter for one meter and month.
struct Counter {
    meter: String,
    month: String,
    /// The total as the database last answered it, once known.
    stored: Option<i64>,
    /// Added here and not yet written (including a write in flight).
    pending: i64,
}

#[derive(Default)]
struct Book {
    /// Counters by org (a few per org: looked up without allocating on the hot path).
    counters: FastMap<OrgId, Vec<Counter>>,
    /// Keys' last use.
    key_uses: UseLog<KeyId>,
    /// Last use of secrets being rotated out, by hash (the owner watches whether the old secret
    /// is still called during the grace period).
    secret_uses: UseLog<String>,
}

/// Last uses of things (keys, secrets), queued for writing at most once per
/// [`LAST_USED_PRECISION`] each.
struct UseLog<K> {
    /// Not yet written.
    pending: FastMap<K, i64>,
    /// When each was last queued.
    queued: FastMap<K, i64>,
}

impl<K> Default for UseLog<K> {
    fn default() -> Self {
        Self {
            pending: FastMap::default(),
            queued: FastMap::default(),
        }
    }
}

impl<K: std::hash::Hash + Eq + Clone> UseLog<K> {
    /// Notes a use at `now`; queued if the last one queued is a precision old.
    fn note<Q>(&mut self, id: &Q, now: i64)
    where
        K: std::borrow::Borrow<Q>,
        Q: std::hash::Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        let due = self
            .queued
            .get(id)
            .is_none_or(|queued| now.saturating_sub(*queued) >= LAST_USED_PRECISION);
        if due {
            self.queued.insert(id.to_owned(), now);
            self.pending.insert(id.to_owned(), now);
        }
    }

    /// What is to be written.
    fn pending(&self) -> Vec<(K, i64)> {
        self.pending.iter().map(|(k, v)| (k.clone(), *v)).collect()
    }

    /// Forgets when uses were queued once that no longer holds a new one back (a precision
    /// ago): the map then holds only things used in the last minute, not everything ever used.
    fn prune(&mut self, now: i64) {
        self.queued
            .retain(|_, queued| now.saturating_sub(*queued) < LAST_USED_PRECISION);
    }

    /// Forgets what was written, unless a later use was noted meanwhile.
    fn written(&mut self, uses: Vec<(K, i64)>) {
        for (id, at) in uses {
            if self.pending.get(&id) == Some(&at) {
                self.pending.remove(&id);
            }
        }
    }
}

/// What this node counted and has not yet handed to the writer, one stripe per core
/// ([`stripes`](crate::stripes)): a core counting a call never takes a lock, or writes a cache
/// line, another core took a moment before.
#[derive(Default)]
struct Stripe {
    /// Calls per (org, key, endpoint, outcome, minute).
    calls: FastMap<CallKey, i64>,
    /// Quantities per org, meter and month.
    added: FastMap<OrgId, Vec<Added>>,
}

/// A quantity of one meter in one month, counted in a stripe.
struct Added {
    meter: String,
    month: Month,
    quantity: i64,
}

impl Stripe {
    /// What this stripe holds of the org's `meter` in `month`.
    fn added(&self, org_id: &OrgId, meter: &str, month: Month) -> i64 {
        self.added
            .get(org_id)
            .and_then(|added| added.iter().find(|a| a.meter == meter && a.month == month))
            .map_or(0, |a| a.quantity)
    }
}

/// `(org, key, endpoint, outcome, minute)`
type CallKey = (OrgId, KeyId, String, String, i64);

/// A [`CallKey`] made of borrowed parts, hashing as it does: a call already counted this minute
/// is found without allocating.
#[derive(Hash)]
struct CallRef<'a>(&'a OrgId, &'a KeyId, &'a str, &'a str, i64);

impl hashbrown::Equivalent<CallKey> for CallRef<'_> {
    fn equivalent(&self, key: &CallKey) -> bool {
        self.4 == key.4
            && self.1 == &key.1
            && self.2 == key.2
            && self.3 == key.3
            && self.0 == &key.0
    }
}

/// How often each node tries the roll-up (one node of the cluster does it per period).
pub const ROLL_UP_EVERY: Duration = Duration::from_secs(60);

/// Everything counted is written this often: what a crash (`kill -9`) can lose.
pub const WRITE_EVERY: Duration = Duration::from_secs(1);

/// A key's `last_used_at` is written at most this often (seconds): with thousands of busy
/// keys, a write per key per second would be database load for no reader's benefit.
pub const LAST_USED_PRECISION: i64 = 60;

/// What a call is attributed to.
#[derive(Debug, Clone, Copy)]
pub struct Attribution<'a> {
    /// The key's org.
    pub org_id: &'a OrgId,
    /// The key.
    pub key_id: &'a KeyId,
    /// `METHOD /route/template`, or what the verify caller named.
    pub endpoint: &'a str,
    /// The status code, or the verify code.
    pub outcome: &'a str,
}

/// The recorder every request reports to.
pub struct UsageRecorder {
    store: Arc<dyn Store>,
    /// What each thread counted since the last write took it.
    stripes: crate::stripes::Striped<Mutex<Stripe>>,
    /// `usage.attribution`: whether [`UsageRecorder::count_call`] counts.
    attribution: std::sync::atomic::AtomicBool,
    /// Hourly and daily roll-ups are complete before these times (set by the roll-up task).
    hours_rolled_until: AtomicI64,
    days_rolled_until: AtomicI64,
    /// The monthly totals (what the stripes counted is added in when a write takes it, under
    /// this lock, so [`UsageRecorder::used`] never misses an amount on its way) and last uses.
    book: Mutex<Book>,
    /// Serialises writes, so two flushes never write the same amounts; holds the calls taken
    /// from the stripes and not written yet (the database could not take them: retried).
    writing: tokio::sync::Mutex<FastMap<CallKey, i64>>,
}

/// Runs `f` on the org's counter for `meter` in `month`, created empty if new (the org id,
/// meter and month are only copied the first time, so the hot path does not allocate).
fn with_counter<R>(
    book: &mut Book,
    org_id: &OrgId,
    meter: &str,
    month: &str,
    f: impl FnOnce(&mut Counter) -> R,
) -> R {
    if let Some(counters) = book.counters.get_mut(org_id) {
        return f(find_or_push(counters, meter, month));
    }
    let counters = book.counters.entry(org_id.to_owned()).or_default();
    f(find_or_push(counters, meter, month))
}

fn find_or_push<'a>(counters: &'a mut Vec<Counter>, meter: &str, month: &str) -> &'a mut Counter {
    let index = match counters
        .iter()
        .position(|c| c.meter == meter && c.month == month)
    {
        Some(index) => index,
        None => {
            counters.push(Counter {
                meter: meter.to_owned(),
                month: month.to_owned(),
                stored: None,
                pending: 0,
            });
            counters.len() - 1
        }
    };
    &mut counters[index]
}

/// `YYYY-MM` (UTC) of a Unix time — the quota period — on the stack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Month([u8; 7]);

impl Month {
    /// The month `unix` falls in (1970-01 for times `time` cannot represent).
    pub fn of(unix: i64) -> Self {
        let (year, month) = time::OffsetDateTime::from_unix_timestamp(unix)
            .map(|t| (t.year(), u8::from(t.month())))
            .unwrap_or((1970, 1));
        let year = u32::try_from(year).unwrap_or(1970).min(9999);
        let digit = |n: u32| b'0' + (n % 10) as u8;
        Self([
            digit(year / 1000),
            digit(year / 100),
            digit(year / 10),
            digit(year),
            b'-',
            digit(u32::from(month) / 10),
            digit(u32::from(month)),
        ])
    }

    /// `YYYY-MM`.
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).unwrap_or("1970-01")
    }
}

/// `YYYY-MM` (UTC) of a Unix time: the quota period.
pub fn month_of(unix: i64) -> String {
    Month::of(unix).as_str().to_owned()
}

impl UsageRecorder {
    /// A recorder writing to `store`; `attribution` off makes [`UsageRecorder::count_calls`] a
    /// no-op.
    pub fn new(store: Arc<dyn Store>, attribution: bool) -> Self {
        Self {
            store,
            stripes: Default::default(),
            attribution: std::sync::atomic::AtomicBool::new(attribution),
            hours_rolled_until: AtomicI64::new(0),
            days_rolled_until: AtomicI64::new(0),
            book: Mutex::new(Book::default()),
            writing: tokio::sync::Mutex::new(FastMap::default()),
        }
    }

    /// Counts `quantity` of `meter` for `org_id` in the month of `now`, in this thread's stripe
    /// (the org id and meter are only copied the first time, so the hot path does not allocate).
    pub fn add(&self, org_id: &OrgId, meter: &str, quantity: i64, now: i64) {
        let month = Month::of(now);
        let Ok(mut stripe) = self.stripe().lock() else {
            return;
        };
        let added = match stripe.added.get_mut(org_id) {
            Some(added) => added,
            None => stripe.added.entry(org_id.to_owned()).or_default(),
        };
        match added
            .iter_mut()
            .find(|a| a.meter == meter && a.month == month)
        {
            Some(found) => found.quantity = found.quantity.saturating_add(quantity),
            None => added.push(Added {
                meter: meter.to_owned(),
                month,
                quantity,
            }),
        }
    }

    fn stripe(&self) -> &Mutex<Stripe> {
        self.stripes.mine()
    }

    /// Notes that a key was used at `now` (queued for writing at most once a minute per key).
    pub fn touch_key(&self, key_id: &KeyId, now: i64) {
        if let Ok(mut book) = self.book.lock() {
            book.key_uses.note(key_id, now);
        }
    }

    /// Notes that a secret being rotated out (by hash) was presented at `now`.
    pub fn touch_retiring_secret(&self, hash: &str, now: i64) {
        if let Ok(mut book) = self.book.lock() {
            book.secret_uses.note(hash, now);
        }
    }

    /// Turns attribution on or off at run time (the benchmark compares both in one run).
    pub fn set_attribution(&self, on: bool) {
        self.attribution.store(on, Ordering::Relaxed);
    }

    /// Attributes `calls` calls (an API-key-authenticated request, a verify, or the calls an SDK
    /// served from its cache) to their org, key, endpoint and outcome in the minute of `now`.
    pub fn count_calls(&self, call: Attribution<'_>, calls: u64, now: i64) {
        let Attribution {
            org_id,
            key_id,
            endpoint,
            outcome,
        } = call;
        if !self.attribution.load(Ordering::Relaxed) {
            return;
        }
        let calls = i64::try_from(calls).unwrap_or(i64::MAX);
        let minute = now - now.rem_euclid(60);
        let Ok(mut stripe) = self.stripe().lock() else {
            return;
        };
        let counted = CallRef(org_id, key_id, endpoint, outcome, minute);
        if let Some(count) = stripe.calls.get_mut(&counted) {
            *count = count.saturating_add(calls);
        } else {
            let key = (
                org_id.to_owned(),
                key_id.to_owned(),
                endpoint.to_owned(),
                outcome.to_owned(),
                minute,
            );
            stripe.calls.insert(key, calls);
        }
    }

    /// The org's total for `meter` this month as far as this node knows, if it knows it: as
    /// last written, plus what is being written, plus what the stripes hold.
    pub fn used(&self, org_id: &OrgId, meter: &str, now: i64) -> Option<i64> {
        let month = Month::of(now);
        let book = self.book.lock().ok()?;
        let found = book
            .counters
            .get(org_id)?
            .iter()
            .find(|c| c.meter == meter && c.month == month.as_str())?;
        let known = found.stored?.saturating_add(found.pending);
        Some(known.saturating_add(self.in_stripes(org_id, meter, month)))
    }

    /// What the stripes hold of the org's `meter` in `month` (the book's lock held, so a write
    /// cannot move an amount from them to the book meanwhile).
    fn in_stripes(&self, org_id: &OrgId, meter: &str, month: Month) -> i64 {
        self.stripes
            .iter()
            .filter_map(|stripe| stripe.lock().ok().map(|s| s.added(org_id, meter, month)))
            .fold(0, i64::saturating_add)
    }

    /// Reads the org's stored total for `meter` this month (the cold path, before `used`).
    pub async fn load(&self, org_id: &OrgId, meter: &str, now: i64) -> ApiResult<i64> {
        let month = Month::of(now);
        let total = self
            .store
            .usage_total(org_id, meter, month.as_str())
            .await?;
        let mut book = self.lock_book()?;
        let known = with_counter(&mut book, org_id, meter, month.as_str(), |c| {
            c.stored.get_or_insert(total).saturating_add(c.pending)
        });
        Ok(known.saturating_add(self.in_stripes(org_id, meter, month)))
    }

    fn lock_book(&self) -> ApiResult<std::sync::MutexGuard<'_, Book>> {
        self.book
            .lock()
            .map_err(|_| anyhow::anyhow!("usage book poisoned").into())
    }

    /// Writes everything pending; on failure it stays pending for the next attempt.
    pub async fn flush(&self) -> ApiResult<()> {
        self.write().await
    }

    /// Writes the attributed calls taken from the stripes (`unwritten`), forgetting each once
    /// written. A database that cannot serve keeps them for the next attempt; a batch it refuses
    /// for any other reason is written row by row, so one row it will never take (there should
    /// be none: input is checked at the door) costs that row, not the batch and every batch
    /// after it.
    async fn write_calls(&self, unwritten: &mut FastMap<CallKey, i64>) -> ApiResult<()> {
        let calls: Vec<CallCount> = unwritten
            .iter()
            .map(
                |((org_id, key_id, endpoint, outcome, minute), count)| CallCount {
                    org_id: org_id.clone(),
                    key_id: key_id.clone(),
                    endpoint: endpoint.clone(),
                    outcome: outcome.clone(),
                    minute: *minute,
                    count: *count,
                },
            )
            .collect();
        match self.store.add_call_counts(&calls).await {
            Ok(()) => {
                unwritten.clear();
                Ok(())
            }
            Err(StoreError::Unavailable(error)) => Err(StoreError::Unavailable(error).into()),
            Err(error) => {
                tracing::warn!(%error, rows = calls.len(), "a usage batch was refused; writing it row by row");
                for call in calls {
                    match self
                        .store
                        .add_call_counts(std::slice::from_ref(&call))
                        .await
                    {
                        Ok(()) => {}
                        Err(StoreError::Unavailable(error)) => {
                            return Err(StoreError::Unavailable(error).into())
                        }
                        Err(error) => {
                            tracing::error!(%error, endpoint = %call.endpoint, "dropping a usage row the database refuses")
                        }
                    }
                    unwritten.remove(&(
                        call.org_id,
                        call.key_id,
                        call.endpoint,
                        call.outcome,
                        call.minute,
                    ));
                }
                Ok(())
            }
        }
    }

    /// Takes what the stripes counted: calls into `unwritten`, quantities into the book's
    /// pending amounts — under the book's lock, so [`UsageRecorder::used`] sees each amount in
    /// one place or the other.
    fn take_stripes(&self, unwritten: &mut FastMap<CallKey, i64>) -> ApiResult<()> {
        let mut book = self.lock_book()?;
        for stripe in self.stripes.iter() {
            let mut stripe = stripe
                .lock()
                .map_err(|_| anyhow::anyhow!("usage stripe poisoned"))?;
            for (call, count) in stripe.calls.drain() {
                let total = unwritten.entry(call).or_insert(0);
                *total = total.saturating_add(count);
            }
            for (org_id, added) in stripe.added.drain() {
                for Added {
                    meter,
                    month,
                    quantity,
                } in added
                {
                    with_counter(&mut book, &org_id, &meter, month.as_str(), |c| {
                        c.pending = c.pending.saturating_add(quantity)
                    });
                }
            }
        }
        Ok(())
    }

    /// Writes the attributed calls, monthly counters and last uses.
    async fn write(&self) -> ApiResult<()> {
        let mut unwritten = self.writing.lock().await;
        self.take_stripes(&mut unwritten)?;
        let (increments, (key_uses, secret_uses)) = {
            let book = self.lock_book()?;
            let increments: Vec<UsageIncrement> = book
                .counters
                .iter()
                .flat_map(|(org_id, counters)| {
                    counters
                        .iter()
                        .filter(|c| c.pending != 0)
                        .map(|c| UsageIncrement {
                            org_id: org_id.clone(),
                            meter: c.meter.clone(),
                            month: c.month.clone(),
                            quantity: c.pending,
                        })
                })
                .collect();
            (
                increments,
                (book.key_uses.pending(), book.secret_uses.pending()),
            )
        };
        if !unwritten.is_empty() {
            self.write_calls(&mut unwritten).await?;
        }
        if !increments.is_empty() {
            let totals = self.store.add_usage(&increments).await?;
            let current = month_of(crate::clock::now());
            let mut book = self.lock_book()?;
            for (increment, total) in increments.into_iter().zip(totals) {
                with_counter(
                    &mut book,
                    &increment.org_id,
                    &increment.meter,
                    &increment.month,
                    |c| {
                        c.pending -= increment.quantity;
                        c.stored = Some(total);
                    },
                );
            }
            // past months are done once written
            for counters in book.counters.values_mut() {
                counters.retain(|c| c.month == current || c.pending != 0);
            }
            book.counters.retain(|_, counters| !counters.is_empty());
        }
        if !key_uses.is_empty() || !secret_uses.is_empty() {
            self.store.record_key_use(&key_uses, &secret_uses).await?;
            let mut book = self.lock_book()?;
            book.key_uses.written(key_uses);
            book.secret_uses.written(secret_uses);
        }
        let now = crate::clock::now();
        let mut book = self.lock_book()?;
        book.key_uses.prune(now);
        book.secret_uses.prune(now);
        Ok(())
    }

    /// Where roll-ups of `bucket`-second buckets are complete: before it, series read them.
    pub fn rolled_until(&self, bucket: i64) -> i64 {
        match bucket {
            3_600 => self.hours_rolled_until.load(Ordering::Relaxed),
            86_400 => self.days_rolled_until.load(Ordering::Relaxed),
            _ => 0,
        }
    }

    /// Rolls complete hours and days up and applies the retention (recomputing the last two hours
    /// and days, so batches written late are included) now, whatever other nodes did; where the
    /// cluster's roll-ups have got to.
    pub async fn roll_up(
        &self,
        retention: &crate::config::UsageConfig,
        now: i64,
    ) -> ApiResult<RolledUp> {
        self.roll_up_unless_done(retention, now, None).await
    }

    /// The periodic roll-up: skipped when another node of the cluster ran one within the last
    /// [`ROLL_UP_EVERY`] (less a margin), so each period's work is done once, not once per node.
    pub async fn roll_up_once_per_cluster(
        &self,
        retention: &crate::config::UsageConfig,
        now: i64,
    ) -> ApiResult<RolledUp> {
        let within = i64::try_from(ROLL_UP_EVERY.as_secs()).unwrap_or(60) - 10;
        self.roll_up_unless_done(retention, now, Some(within)).await
    }

    async fn roll_up_unless_done(
        &self,
        retention: &crate::config::UsageConfig,
        now: i64,
        unless_ran_within: Option<i64>,
    ) -> ApiResult<RolledUp> {
        let hour = now - now.rem_euclid(3_600);
        let day = now - now.rem_euclid(86_400);
        let keep = |d: Duration| {
            (!d.is_zero())
                .then(|| now.saturating_sub(i64::try_from(d.as_secs()).unwrap_or(i64::MAX)))
        };
        let rolled = self
            .store
            .roll_up_calls(&RollUp {
                hours_from: hour - 2 * 3_600,
                hours_to: hour,
                days_from: day - 2 * 86_400,
                days_to: day,
                keep_minutes_after: keep(retention.minute_retention),
                keep_hours_after: keep(retention.hour_retention),
                keep_days_after: keep(retention.day_retention),
                now,
                unless_ran_within,
            })
            .await?;
        self.hours_rolled_until
            .store(rolled.hours_to, Ordering::Relaxed);
        self.days_rolled_until
            .store(rolled.days_to, Ordering::Relaxed);
        Ok(rolled)
    }

    /// Rolls up at once and then every minute until cancelled.
    pub fn spawn_roller(
        self: &Arc<Self>,
        retention: crate::config::UsageConfig,
        cancel: CancellationToken,
    ) {
        let recorder = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                let Some(strong) = recorder.upgrade() else {
                    return;
                };
                if let Err(error) = strong
                    .roll_up_once_per_cluster(&retention, crate::clock::now())
                    .await
                {
                    tracing::warn!(?error, "rolling usage up failed; retrying in a minute");
                }
                drop(strong);
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(ROLL_UP_EVERY) => {}
                }
            }
        });
    }

    /// Writes every second until cancelled (the final write is the shutdown's).
    pub fn spawn_flusher(self: &Arc<Self>, cancel: CancellationToken) {
        let recorder = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(WRITE_EVERY) => {}
                }
                let Some(recorder) = recorder.upgrade() else {
                    return;
                };
                if let Err(error) = recorder.write().await {
                    tracing::warn!(?error, "writing usage failed; retrying in a second");
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn months_are_utc_calendar_months() {
        assert_eq!(month_of(0), "1970-01");
        assert_eq!(month_of(1_795_000_000), "2026-11");
        assert_eq!(month_of(1_798_761_599), "2026-12"); // 2026-12-31T23:59:59Z
        assert_eq!(month_of(1_798_761_600), "2027-01");
    }

    #[test]
    fn a_use_is_queued_once_a_minute_and_a_later_one_survives_a_write() {
        let mut log = UseLog::<String>::default();
        log.note("s", 100);
        log.note("s", 130); // within the precision: not queued again
        assert_eq!(log.pending(), vec![("s".to_owned(), 100)]);
        let writing = log.pending();
        log.note("s", 160); // a minute later, while the write is in flight
        log.written(writing);
        assert_eq!(log.pending(), vec![("s".to_owned(), 160)]);
        log.written(log.pending());
        assert!(log.pending().is_empty());
        // a minute after its last use, a key is forgotten altogether
        log.prune(219);
        assert_eq!(log.queued.len(), 1);
        log.prune(220);
        assert!(log.queued.is_empty());
    }
}
