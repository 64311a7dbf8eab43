//! Usage: the [`UsageStore`] trait (per-minute call counters written in batches, metered events
//! with idempotency keys, both summed into time series) and its one SQL implementation, expanded
//! for each backend.

use crate::records::*;
use crate::StoreResult;
use async_trait::async_trait;

/// Storage of usage counters.
#[async_trait]
pub trait UsageStore: Send + Sync {
    /// Adds a batch of call counts (one transaction; upserts).
    async fn add_call_counts(&self, counts: &[CallCount]) -> StoreResult<()>;
    /// Sums of calls matching `filter`, per bucket start (Unix seconds), oldest first.
    async fn call_series(&self, filter: &CallFilter) -> StoreResult<Vec<(i64, i64)>>;
    /// Records metered events in one transaction; per event, true when recorded and false when
    /// its idempotency key was seen before (the unique index decides, so concurrent duplicates
    /// count once).
    async fn insert_usage_events(&self, events: &[UsageEvent]) -> StoreResult<Vec<bool>>;
    /// Sums of a meter's quantities per bucket start (Unix seconds), oldest first; the filter's
    /// key and endpoint do not apply to meters.
    async fn meter_series(&self, meter: &str, filter: &CallFilter) -> StoreResult<Vec<(i64, f64)>>;
}

/// Expands `impl UsageStore for $store`.
macro_rules! impl_usage_store {
    ($store:ident, $db:ty) => {
        #[async_trait::async_trait]
        impl $crate::UsageStore for $store {
            async fn add_call_counts(&self, counts: &[$crate::CallCount]) -> $crate::StoreResult<()> {
                if counts.is_empty() {
                    return Ok(());
                }
                let mut tx = self.pool.begin().await?;
                for c in counts {
                    sqlx::query(
                        "INSERT INTO usage_calls (org_id, key_id, endpoint, outcome, minute, count) \
                         VALUES ($1, $2, $3, $4, $5, $6) \
                         ON CONFLICT (org_id, minute, key_id, endpoint, outcome) \
                         DO UPDATE SET count = usage_calls.count + $6",
                    )
                    .bind(&c.org_id)
                    .bind(&c.key_id)
                    .bind(&c.endpoint)
                    .bind(&c.outcome)
                    .bind(c.minute)
                    .bind(c.count)
                    .execute(&mut *tx)
                    .await?;
                }
                tx.commit().await?;
                Ok(())
            }

            async fn call_series(&self, f: &$crate::CallFilter) -> $crate::StoreResult<Vec<(i64, i64)>> {
                Ok(sqlx::query_as(
                    "SELECT (minute / $1) * $1 AS bucket, CAST(SUM(count) AS BIGINT) AS total FROM usage_calls \
                     WHERE ($2 IS NULL OR org_id = $2) AND ($3 IS NULL OR key_id = $3) \
                     AND ($4 IS NULL OR endpoint = $4) AND minute >= $5 AND minute < $6 \
                     GROUP BY (minute / $1) * $1 ORDER BY bucket",
                )
                .bind(f.bucket)
                .bind(&f.org_id)
                .bind(&f.key_id)
                .bind(&f.endpoint)
                .bind(f.from)
                .bind(f.to)
                .fetch_all(&self.pool)
                .await?)
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
