//! Usage: the [`UsageStore`] trait (monthly quota counters and per-minute call counters written in
//! batches, metered events with idempotency keys, time series of both) and its one SQL
//! implementation, expanded for each backend.

use crate::records::*;
use crate::OrgId;
use crate::StoreResult;
use async_trait::async_trait;

/// Storage of usage counters.
#[async_trait]
pub trait UsageStore: Send + Sync {
    /// Adds to monthly usage counters; the new totals, in order.
    async fn add_usage(&self, increments: &[UsageIncrement]) -> StoreResult<Vec<i64>>;
    /// An org's total for a meter in a month.
    async fn usage_total(&self, org_id: &OrgId, meter: &str, month: &str) -> StoreResult<i64>;
    /// Adds a batch of call counts (one transaction; upserts).
    async fn add_call_counts(&self, counts: &[CallCount]) -> StoreResult<()>;
    /// Sums of calls matching `filter`, per bucket start (Unix seconds), oldest first.
    async fn call_series(&self, filter: &CallFilter) -> StoreResult<Vec<(i64, i64)>>;
    /// The calls of `filter`'s span summed by endpoint and outcome (its `bucket` picks the
    /// roll-up to read, as for [`call_series`](Self::call_series)), largest first.
    async fn call_breakdown(&self, filter: &CallFilter) -> StoreResult<Vec<(String, String, i64)>>;
    /// Recomputes the hourly roll-up of every hour in `[from, to)` from the minute rows, and the
    /// daily roll-up of every day in `[day_from, day_to)` from the hourly rows (idempotent: rows
    /// are replaced, so late minute batches are picked up by the next run), then deletes minute,
    /// hourly and daily rows older than the given cutoffs (None keeps them). Once per cluster:
    /// it first claims the one `usage_rollup_runs` row (a row lock on PostgreSQL, the write lock
    /// on SQLite), and skips when another node ran within `plan.unless_ran_within`.
    async fn roll_up_calls(&self, plan: &RollUp) -> StoreResult<RolledUp>;
    /// Records metered events in one transaction; per event, true when recorded and false when
    /// its idempotency key was seen before (the unique index decides, so concurrent duplicates
    /// count once).
    async fn insert_usage_events(&self, events: &[UsageEvent]) -> StoreResult<Vec<bool>>;
    /// Sums of a meter's quantities per bucket start (Unix seconds), oldest first; the filter's
    /// key and endpoint do not apply to meters.
    async fn meter_series(&self, meter: &str, filter: &CallFilter) -> StoreResult<Vec<(i64, f64)>>;
}

/// Attributed-call rows written per `INSERT` statement.
pub const CALL_ROWS_PER_STATEMENT: usize = 500;

/// Expands `impl UsageStore for $store`.
macro_rules! impl_usage_store {
    ($store:ident, $db:ty) => {
        #[async_trait::async_trait]
        impl $crate::UsageStore for $store {
            async fn add_usage(&self, increments: &[$crate::UsageIncrement]) -> $crate::StoreResult<Vec<i64>> {
                let mut totals = Vec::with_capacity(increments.len());
                if increments.is_empty() {
                    return Ok(totals);
                }
                let mut tx = self.pool.begin().await?;
                for inc in increments {
                    let total: i64 = sqlx::query_scalar(
                        "INSERT INTO usage_monthly (org_id, meter, month, quantity) VALUES ($1, $2, $3, $4) \
                         ON CONFLICT (org_id, meter, month) DO UPDATE SET quantity = usage_monthly.quantity + $4 \
                         RETURNING quantity",
                    )
                    .bind(&inc.org_id)
                    .bind(&inc.meter)
                    .bind(&inc.month)
                    .bind(inc.quantity)
                    .fetch_one(&mut *tx)
                    .await?;
                    totals.push(total);
                }
                tx.commit().await?;
                Ok(totals)
            }

            async fn usage_total(&self, org_id: &$crate::OrgId, meter: &str, month: &str) -> $crate::StoreResult<i64> {
                let total: Option<i64> = sqlx::query_scalar(
                    "SELECT quantity FROM usage_monthly WHERE org_id = $1 AND meter = $2 AND month = $3",
                )
                .bind(org_id)
                .bind(meter)
                .bind(month)
                .fetch_optional(&self.pool)
                .await?;
                Ok(total.unwrap_or(0))
            }

            async fn add_call_counts(&self, counts: &[$crate::CallCount]) -> $crate::StoreResult<()> {
                if counts.is_empty() {
                    return Ok(());
                }
                // rows in one order on every node, so two nodes' batches take their row locks
                // in the same order and cannot deadlock
                let mut rows: Vec<&$crate::CallCount> = counts.iter().collect();
                rows.sort_by(|a, b| {
                    (&a.org_id, a.minute, &a.key_id, &a.endpoint, &a.outcome)
                        .cmp(&(&b.org_id, b.minute, &b.key_id, &b.endpoint, &b.outcome))
                });
                let mut tx = self.pool.begin().await?;
                // a few hundred rows a statement (six parameters each: far below either
                // database's limit), not a round trip per row
                for chunk in rows.chunks($crate::usage::CALL_ROWS_PER_STATEMENT) {
                    let mut insert = sqlx::QueryBuilder::new(
                        "INSERT INTO usage_calls (org_id, key_id, endpoint, outcome, minute, count) ",
                    );
                    insert.push_values(chunk, |mut row, c| {
                        row.push_bind(&c.org_id)
                            .push_bind(&c.key_id)
                            .push_bind(&c.endpoint)
                            .push_bind(&c.outcome)
                            .push_bind(c.minute)
                            .push_bind(c.count);
                    });
                    insert.push(
                        " ON CONFLICT (org_id, minute, key_id, endpoint, outcome) \
                         DO UPDATE SET count = usage_calls.count + excluded.count",
                    );
                    insert.build().execute(&mut *tx).await?;
                }
                tx.commit().await?;
                Ok(())
            }

            async fn call_breakdown(&self, f: &$crate::CallFilter) -> $crate::StoreResult<Vec<(String, String, i64)>> {
                let (table, column) = match f.bucket {
                    86_400 => ("usage_calls_daily", "bucket"),
                    3_600 => ("usage_calls_hourly", "bucket"),
                    _ => ("usage_calls", "minute"),
                };
                let sql = format!(
                    "SELECT endpoint, outcome, CAST(SUM(total) AS BIGINT) AS total FROM ( \
                       SELECT endpoint, outcome, count AS total FROM {table} \
                       WHERE ($1 IS NULL OR org_id = $1) AND ($2 IS NULL OR key_id = $2) \
                       AND ($3 IS NULL OR endpoint = $3) AND {column} >= $4 AND {column} < $6 \
                       UNION ALL \
                       SELECT endpoint, outcome, count AS total FROM usage_calls \
                       WHERE ($1 IS NULL OR org_id = $1) AND ($2 IS NULL OR key_id = $2) \
                       AND ($3 IS NULL OR endpoint = $3) AND minute >= $6 AND minute >= $4 AND minute < $5 \
                     ) AS parts GROUP BY endpoint, outcome ORDER BY total DESC, endpoint, outcome LIMIT 100"
                );
                let rolled_until = if table == "usage_calls" { f.from } else { f.rolled_until.clamp(f.from, f.to) };
                Ok(sqlx::query_as(&sql)
                    .bind(&f.org_id)
                    .bind(&f.key_id)
                    .bind(&f.endpoint)
                    .bind(f.from)
                    .bind(f.to)
                    .bind(rolled_until)
                    .fetch_all(&self.pool)
                    .await?)
            }

            async fn call_series(&self, f: &$crate::CallFilter) -> $crate::StoreResult<Vec<(i64, i64)>> {
                // whole hours and days come from their roll-ups where those exist (`rolled_until`),
                // the rest from the minute rows
                let (table, column) = match f.bucket {
                    86_400 => ("usage_calls_daily", "bucket"),
                    3_600 => ("usage_calls_hourly", "bucket"),
                    _ => ("usage_calls", "minute"),
                };
                let sql = format!(
                    "SELECT bucket, CAST(SUM(total) AS BIGINT) AS total FROM ( \
                       SELECT ({column} / $1) * $1 AS bucket, count AS total FROM {table} \
                       WHERE ($2 IS NULL OR org_id = $2) AND ($3 IS NULL OR key_id = $3) \
                       AND ($4 IS NULL OR endpoint = $4) AND {column} >= $5 AND {column} < $7 \
                       UNION ALL \
                       SELECT (minute / $1) * $1 AS bucket, count AS total FROM usage_calls \
                       WHERE ($2 IS NULL OR org_id = $2) AND ($3 IS NULL OR key_id = $3) \
                       AND ($4 IS NULL OR endpoint = $4) AND minute >= $7 AND minute >= $5 AND minute < $6 \
                     ) AS parts GROUP BY bucket ORDER BY bucket"
                );
                let rolled_until = if table == "usage_calls" { f.from } else { f.rolled_until.clamp(f.from, f.to) };
                Ok(sqlx::query_as(&sql)
                .bind(f.bucket)
                .bind(&f.org_id)
                .bind(&f.key_id)
                .bind(&f.endpoint)
                .bind(f.from)
                .bind(f.to)
                .bind(rolled_until)
                .fetch_all(&self.pool)
                .await?)
            }

            async fn roll_up_calls(&self, plan: &$crate::RollUp) -> $crate::StoreResult<$crate::RolledUp> {
                let mut tx = self.pool.begin().await?;
                // the claim: blocks while another node's roll-up holds the row, then sees its ran_at;
                // ran_at never moves back, so a forced run with an earlier `now` cannot reopen a
                // period another node has claimed
                let claimed = sqlx::query(
                    "UPDATE usage_rollup_runs SET ran_at = CASE WHEN ran_at > $1 THEN ran_at ELSE $1 END \
                     WHERE id = 1 AND ($2 < 0 OR ran_at <= $1 - $2)",
                )
                .bind(plan.now)
                .bind(plan.unless_ran_within.unwrap_or(-1))
                .execute(&mut *tx)
                .await?
                .rows_affected()
                    == 1;
                if !claimed {
                    let (hours_to, days_to): (i64, i64) = sqlx::query_as(
                        "SELECT hours_to, days_to FROM usage_rollup_runs WHERE id = 1",
                    )
                    .fetch_one(&mut *tx)
                    .await?;
                    tx.commit().await?;
                    return Ok($crate::RolledUp { ran: false, hours_to, days_to });
                }
                for (target, source, column, size, from, to) in [
                    ("usage_calls_hourly", "usage_calls", "minute", 3_600i64, plan.hours_from, plan.hours_to),
                    ("usage_calls_daily", "usage_calls_hourly", "bucket", 86_400i64, plan.days_from, plan.days_to),
                ] {
                    sqlx::query(&format!("DELETE FROM {target} WHERE bucket >= $1 AND bucket < $2"))
                        .bind(from)
                        .bind(to)
                        .execute(&mut *tx)
                        .await?;
                    sqlx::query(&format!(
                        "INSERT INTO {target} (org_id, key_id, endpoint, outcome, bucket, count) \
                         SELECT org_id, key_id, endpoint, outcome, ({column} / {size}) * {size}, CAST(SUM(count) AS BIGINT) \
                         FROM {source} WHERE {column} >= $1 AND {column} < $2 \
                         GROUP BY org_id, key_id, endpoint, outcome, ({column} / {size}) * {size}"
                    ))
                    .bind(from)
                    .bind(to)
                    .execute(&mut *tx)
                    .await?;
                }
                for (table, column, cutoff) in [
                    ("usage_calls", "minute", plan.keep_minutes_after),
                    ("usage_calls_hourly", "bucket", plan.keep_hours_after),
                    ("usage_calls_daily", "bucket", plan.keep_days_after),
                ] {
                    if let Some(cutoff) = cutoff {
                        sqlx::query(&format!("DELETE FROM {table} WHERE {column} < $1"))
                            .bind(cutoff)
                            .execute(&mut *tx)
                            .await?;
                    }
                }
                sqlx::query("UPDATE usage_rollup_runs SET hours_to = $1, days_to = $2 WHERE id = 1")
                    .bind(plan.hours_to)
                    .bind(plan.days_to)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok($crate::RolledUp { ran: true, hours_to: plan.hours_to, days_to: plan.days_to })
            }

            async fn insert_usage_events(&self, events: &[$crate::UsageEvent]) -> $crate::StoreResult<Vec<bool>> {
                let mut recorded = Vec::with_capacity(events.len());
                if events.is_empty() {
                    return Ok(recorded);
                }
                let mut tx = self.pool.begin().await?;
                for e in events {
                    let done = sqlx::query(
                        "INSERT INTO usage_events (id, org_id, meter, quantity, occurred_at, idempotency_key, created_at) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7) \
                         ON CONFLICT (org_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING",
                    )
                    .bind(&e.id)
                    .bind(&e.org_id)
                    .bind(&e.meter)
                    .bind(e.quantity)
                    .bind(e.occurred_at)
                    .bind(&e.idempotency_key)
                    .bind(e.created_at)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                    recorded.push(done == 1);
                }
                tx.commit().await?;
                Ok(recorded)
            }

            async fn meter_series(&self, meter: &str, f: &$crate::CallFilter) -> $crate::StoreResult<Vec<(i64, f64)>> {
                Ok(sqlx::query_as(
                    "SELECT (occurred_at / $1) * $1 AS bucket, CAST(SUM(quantity) AS DOUBLE PRECISION) AS total \
                     FROM usage_events WHERE meter = $2 AND ($3 IS NULL OR org_id = $3) \
                     AND occurred_at >= $4 AND occurred_at < $5 \
                     GROUP BY (occurred_at / $1) * $1 ORDER BY bucket",
                )
                .bind(f.bucket)
                .bind(meter)
                .bind(&f.org_id)
                .bind(f.from)
                .bind(f.to)
                .fetch_all(&self.pool)
                .await?)
            }
        }
    };
}

pub(crate) use impl_usage_store;
