//! API keys, their secrets and the plans of orgs: the [`KeyStore`] trait
//! and its one SQL implementation, expanded for each backend like [`Store`](crate::Store)'s.

use crate::records::*;
use crate::StoreResult;
use crate::{KeyId, OrgId};
use async_trait::async_trait;

/// Storage of API keys. Changing methods are one transaction each, with their audit entry.
#[async_trait]
pub trait KeyStore: Send + Sync {
    /// Stores a new key with its first secret (by hash).
    async fn create_key(
        &self,
        key: &ApiKeyRecord,
        secret_hash: &str,
        audit: &AuditRecord,
    ) -> StoreResult<()>;
    /// An org's keys by id after the cursor, filtered as `query` says.
    async fn keys(&self, org_id: &OrgId, query: &KeyQuery<'_>) -> StoreResult<Vec<ApiKeyRecord>>;
    /// An org's live keys that expire after `now` and no later than `until`, soonest first.
    async fn expiring_keys(
        &self,
        org_id: &OrgId,
        now: i64,
        until: i64,
        limit: i64,
    ) -> StoreResult<Vec<ApiKeyRecord>>;
    /// One key of an org.
    async fn key(&self, org_id: &OrgId, key_id: &KeyId) -> StoreResult<Option<ApiKeyRecord>>;
    /// Writes a key's editable fields (name, scopes, metadata, rate limit, expiry, credits'
    /// refill) and changes its credits as `credits` says, unless it is revoked; the stored key,
    /// or None.
    async fn update_key(
        &self,
        key: &ApiKeyRecord,
        credits: CreditsUpdate,
        audit: &AuditRecord,
    ) -> StoreResult<Option<ApiKeyRecord>>;
    /// Spends credits, in order, in one transaction: each key's `cost` if it has that many,
    /// refilled first when a refill period began since its last one — each one conditional
    /// statement, so two nodes never both spend the last credit. The outcomes, in order.
    async fn spend_credits(&self, spends: &[CreditSpendRequest]) -> StoreResult<Vec<CreditSpend>>;
    /// A key's credit count as stored (no refill applied), or None if it has no credits.
    async fn credit_count(&self, key_id: &KeyId) -> StoreResult<Option<CreditCount>>;
    /// Writes counts kept in Redis, in one transaction: each only over an older one (by `seq`)
    /// and only where the key still has credits.
    async fn save_credit_counts(&self, counts: &[(KeyId, CreditCount)]) -> StoreResult<()>;
    /// Gives a live key a new secret; its other secrets stop working at `rotation.retire_at`.
    async fn rotate_key(
        &self,
        org_id: &OrgId,
        key_id: &KeyId,
        rotation: &Rotation,
        audit: &AuditRecord,
    ) -> StoreResult<Option<ApiKeyRecord>>;
    /// Revokes a key at once; false if there is no such unrevoked key.
    async fn revoke_key(
        &self,
        org_id: &OrgId,
        key_id: &KeyId,
        now: i64,
        audit: &AuditRecord,
    ) -> StoreResult<bool>;
    /// Flags a live key as found in public (verify then answers `LEAKED`); false if it is
    /// revoked or flagged already.
    async fn flag_key_leaked(
        &self,
        key_id: &KeyId,
        now: i64,
        audit: &AuditRecord,
    ) -> StoreResult<bool>;
    /// The key holding a secret of this hash, with its org.
    async fn key_by_hash(&self, hash: &str) -> StoreResult<Option<KeyLookup>>;
    /// Hashes of secrets that may still verify (of keys not revoked) created at or after
    /// `created_since` (0 for all), in order, the first `limit` after `after` (`""` to start):
    /// read page by page, so a million keys never sit in one result.
    async fn live_secret_hashes(
        &self,
        created_since: i64,
        after: &str,
        limit: i64,
    ) -> StoreResult<Vec<String>>;
    /// A key's secrets: the current one, then those rotated out, newest first.
    async fn key_secrets(
        &self,
        org_id: &OrgId,
        key_id: &KeyId,
    ) -> StoreResult<Vec<KeySecretRecord>>;
    /// Records when keys, and secrets by hash, were last used (the later time wins), in one
    /// transaction.
    async fn record_key_use(
        &self,
        keys: &[(KeyId, i64)],
        secrets: &[(String, i64)],
    ) -> StoreResult<()>;
    /// Puts an org on a plan; the updated org, or None.
    async fn set_org_plan(
        &self,
        org_id: &OrgId,
        plan: &str,
        now: i64,
        audit: &AuditRecord,
    ) -> StoreResult<Option<OrgRecord>>;
}

/// A `LIKE` pattern matching `text` anywhere, lower-cased, with `%`, `_` and the escape taken literally.
pub(crate) fn like_pattern(text: &str) -> String {
    let mut pattern = String::with_capacity(text.len() + 2);
    pattern.push('%');
    for c in text.to_lowercase().chars() {
        if matches!(c, '%' | '_' | '\\') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('%');
    pattern
}

/// Expands `impl KeyStore for $store` next to [`impl_store`](crate::shared::impl_store), whose
/// helper functions it uses.
macro_rules! impl_key_store {
    ($store:ident, $db:ty) => {
        const KEY_COLUMNS: &str = "k.id, k.org_id, k.name, k.environment, k.start, k.scopes, \
             k.metadata, k.rate_limit, k.rate_window_seconds, k.rate_exact, k.created_by, k.created_at, \
             k.updated_at, k.expires_at, k.revoked_at, k.last_used_at, k.credits_remaining, \
             k.credits_refill_amount, k.credits_refill_interval, k.credits_refill_day, k.credits_refilled_at, \
             k.named_limits, k.ip_allowlist, k.leaked_at";

        /// The credits as of `$p`: a refill due since the last one counts as done.
        const CREDITS_AT_P: &str = "(CASE WHEN credits_refill_amount IS NOT NULL \
             AND credits_refilled_at < $p THEN credits_refill_amount ELSE credits_remaining END)";
        /// When the credits as of `$p` were refilled.
        const REFILLED_AT_P: &str = "(CASE WHEN credits_refill_amount IS NOT NULL \
             AND credits_refilled_at < $p THEN $p ELSE credits_refilled_at END)";

        async fn key_in_tx(
            conn: &mut <$db as sqlx::Database>::Connection,
            org_id: &$crate::OrgId,
            key_id: &$crate::KeyId,
        ) -> Result<Option<$crate::ApiKeyRecord>, sqlx::Error> {
            let sql = format!("SELECT {KEY_COLUMNS} FROM api_keys k WHERE k.org_id = $1 AND k.id = $2");
            sqlx::query_as(&sql).bind(org_id).bind(key_id).fetch_optional(&mut *conn).await
        }

        #[async_trait::async_trait]
        impl $crate::KeyStore for $store {
            async fn create_key(
                &self,
                key: &$crate::ApiKeyRecord,
                secret_hash: &str,
                audit: &$crate::AuditRecord,
            ) -> $crate::StoreResult<()> {
                let mut tx = self.pool.begin().await?;
                sqlx::query(
                    "INSERT INTO api_keys (id, org_id, name, environment, start, scopes, metadata, \
                     rate_limit, rate_window_seconds, rate_exact, created_by, created_at, updated_at, \
                     expires_at, credits_remaining, credits_refill_amount, credits_refill_interval, \
                     credits_refill_day, credits_refilled_at, named_limits, ip_allowlist) VALUES ($1, $2, \
                     $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21)",
                )
                .bind(&key.id)
                .bind(&key.org_id)
                .bind(&key.name)
                .bind(&key.environment)
                .bind(&key.start)
                .bind(&key.scopes)
                .bind(&key.metadata)
                .bind(key.rate_limit)
                .bind(key.rate_window_seconds)
                .bind(key.rate_exact)
                .bind(&key.created_by)
                .bind(key.created_at)
                .bind(key.updated_at)
                .bind(key.expires_at)
                .bind(key.credits_remaining)
                .bind(key.credits_refill_amount)
                .bind(&key.credits_refill_interval)
                .bind(key.credits_refill_day)
                .bind(key.credits_refilled_at)
                .bind(&key.named_limits)
                .bind(&key.ip_allowlist)
                .execute(&mut *tx)
                .await?;
                sqlx::query("INSERT INTO api_key_secrets (hash, key_id, start, created_at) VALUES ($1, $2, $3, $4)")
                    .bind(secret_hash)
                    .bind(&key.id)
                    .bind(&key.start)
                    .bind(key.created_at)
                    .execute(&mut *tx)
                    .await?;
                insert_audit(&mut tx, audit).await?;
                tx.commit().await?;
                Ok(())
            }

            async fn keys(
                &self,
                org_id: &$crate::OrgId,
                query: &$crate::KeyQuery<'_>,
            ) -> $crate::StoreResult<Vec<$crate::ApiKeyRecord>> {
                let condition = match query.status {
                    None => "$4 = $4",
                    Some($crate::KeyStatus::Active) => {
                        "k.revoked_at IS NULL AND (k.expires_at IS NULL OR k.expires_at > $4)"
                    }
                    Some($crate::KeyStatus::Revoked) => "k.revoked_at IS NOT NULL AND $4 = $4",
                    Some($crate::KeyStatus::Expired) => {
                        "k.revoked_at IS NULL AND k.expires_at <= $4"
                    }
                };
                let search = match query.search {
                    Some(_) => {
                        use $crate::Dialect;
                        format!("({} OR {})", <$db>::contains("k.name", "$5"), <$db>::contains("k.start", "$5"))
                    }
                    None => "$5 = $5".to_owned(),
                };
                let sql = format!(
                    "SELECT {KEY_COLUMNS} FROM api_keys k WHERE k.org_id = $1 AND k.id > $2 AND {condition} \
                     AND {search} ORDER BY k.id LIMIT $3"
                );
                Ok(sqlx::query_as(&sql)
                    .bind(org_id)
                    .bind(query.after.unwrap_or(""))
                    .bind(query.limit)
                    .bind(query.now)
                    .bind(query.search.map($crate::keys::like_pattern).unwrap_or_default())
                    .persistent(query.search.is_none())
                    .fetch_all(&self.pool)
                    .await?)
            }

            async fn expiring_keys(
                &self,
                org_id: &$crate::OrgId,
                now: i64,
                until: i64,
                limit: i64,
            ) -> $crate::StoreResult<Vec<$crate::ApiKeyRecord>> {
                let sql = format!(
                    "SELECT {KEY_COLUMNS} FROM api_keys k WHERE k.org_id = $1 AND k.revoked_at IS NULL \
                     AND k.expires_at > $2 AND k.expires_at <= $3 ORDER BY k.expires_at, k.id LIMIT $4"
                );
                Ok(sqlx::query_as(&sql)
                    .bind(org_id)
                    .bind(now)
                    .bind(until)
                    .bind(limit)
                    .fetch_all(&self.pool)
                    .await?)
            }

            async fn key(&self, org_id: &$crate::OrgId, key_id: &$crate::KeyId) -> $crate::StoreResult<Option<$crate::ApiKeyRecord>> {
                let mut conn = self.pool.acquire().await?;
                Ok(key_in_tx(&mut conn, org_id, key_id).await?)
            }

            async fn update_key(
                &self,
                key: &$crate::ApiKeyRecord,
                credits: $crate::CreditsUpdate,
                audit: &$crate::AuditRecord,
            ) -> $crate::StoreResult<Option<$crate::ApiKeyRecord>> {
                use $crate::CreditsUpdate;
                let (mode, count, period_start, seq) = match credits {
                    CreditsUpdate::Keep => ("keep", 0, 0, 0),
                    CreditsUpdate::Set { remaining, period_start } => ("set", remaining, period_start, 0),
                    CreditsUpdate::Add { credits, period_start } => ("add", credits, period_start, 0),
                    CreditsUpdate::Clear => ("clear", 0, 0, 0),
                    CreditsUpdate::Mirror(c) => ("mirror", c.remaining, c.refilled_at, c.seq),
                };
                let sql = format!(
                    "UPDATE api_keys SET name = $1, scopes = $2, metadata = $3, rate_limit = $4, \
                     rate_window_seconds = $5, rate_exact = $6, expires_at = $7, updated_at = $8, \
                     credits_remaining = CASE WHEN $11 = 'set' OR ($11 = 'mirror' AND credits_seq < $19) \
                       THEN $12 WHEN $11 = 'add' THEN {at} + $12 \
                       WHEN $11 = 'clear' THEN NULL ELSE credits_remaining END, \
                     credits_refilled_at = CASE WHEN $11 = 'set' OR ($11 = 'mirror' AND credits_seq < $19) \
                       THEN $p WHEN $11 = 'add' THEN {refilled} \
                       WHEN $11 = 'clear' THEN NULL ELSE credits_refilled_at END, \
                     credits_seq = CASE WHEN $11 = 'mirror' AND credits_seq < $19 THEN $19 ELSE credits_seq END, \
                     credits_refill_amount = $14, credits_refill_interval = $15, credits_refill_day = $16, \
                     named_limits = $17, ip_allowlist = $18 \
                     WHERE org_id = $9 AND id = $10 AND revoked_at IS NULL",
                    at = CREDITS_AT_P,
                    refilled = REFILLED_AT_P,
                )
                .replace("$p", "$13");
                let mut tx = self.pool.begin().await?;
                let updated = sqlx::query(&sql)
                .bind(&key.name)
                .bind(&key.scopes)
                .bind(&key.metadata)
                .bind(key.rate_limit)
                .bind(key.rate_window_seconds)
                .bind(key.rate_exact)
                .bind(key.expires_at)
                .bind(key.updated_at)
                .bind(&key.org_id)
                .bind(&key.id)
                .bind(mode)
                .bind(count)
                .bind(period_start)
                .bind(key.credits_refill_amount)
                .bind(&key.credits_refill_interval)
                .bind(key.credits_refill_day)
                .bind(&key.named_limits)
                .bind(&key.ip_allowlist)
                .bind(seq)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if updated == 0 {
                    return Ok(None);
                }
                insert_audit(&mut tx, audit).await?;
                let stored = key_in_tx(&mut tx, &key.org_id, &key.id).await?;
                tx.commit().await?;
                Ok(stored)
            }

            async fn spend_credits(
                &self,
                spends: &[$crate::CreditSpendRequest],
            ) -> $crate::StoreResult<Vec<$crate::CreditSpend>> {
                let spend = format!(
                    "UPDATE api_keys SET credits_remaining = {at} - $2, credits_refilled_at = {refilled} \
                     WHERE id = $1 AND {at} >= $2 RETURNING credits_remaining",
                    at = CREDITS_AT_P,
                    refilled = REFILLED_AT_P,
                )
                .replace("$p", "$3");
                let read = format!("SELECT {CREDITS_AT_P} FROM api_keys WHERE id = $1").replace("$p", "$2");
                let mut outcomes = Vec::with_capacity(spends.len());
                let mut tx = self.pool.begin().await?;
                for request in spends {
                    let left: Option<i64> = sqlx::query_scalar(&spend)
                        .bind(&request.key_id)
                        .bind(request.cost)
                        .bind(request.period_start)
                        .fetch_optional(&mut *tx)
                        .await?;
                    if let Some(left) = left {
                        outcomes.push($crate::CreditSpend::Spent(left));
                        continue;
                    }
                    let left: Option<Option<i64>> = sqlx::query_scalar(&read)
                        .bind(&request.key_id)
                        .bind(request.period_start)
                        .fetch_optional(&mut *tx)
                        .await?;
                    outcomes.push(match left.flatten() {
                        Some(left) => $crate::CreditSpend::Short(left),
                        None => $crate::CreditSpend::Unlimited,
                    });
                }
                tx.commit().await?;
                Ok(outcomes)
            }

            async fn credit_count(
                &self,
                key_id: &$crate::KeyId,
            ) -> $crate::StoreResult<Option<$crate::CreditCount>> {
                let row: Option<(Option<i64>, Option<i64>, i64)> = sqlx::query_as(
                    "SELECT credits_remaining, credits_refilled_at, credits_seq FROM api_keys WHERE id = $1",
                )
                .bind(key_id)
                .fetch_optional(&self.pool)
                .await?;
                Ok(row.and_then(|(remaining, refilled_at, seq)| {
                    Some($crate::CreditCount {
                        remaining: remaining?,
                        refilled_at: refilled_at.unwrap_or(0),
                        seq,
                    })
                }))
            }

            async fn save_credit_counts(
                &self,
                counts: &[($crate::KeyId, $crate::CreditCount)],
            ) -> $crate::StoreResult<()> {
                let mut tx = self.pool.begin().await?;
                for (key_id, count) in counts {
                    sqlx::query(
                        "UPDATE api_keys SET credits_remaining = $2, credits_refilled_at = $3, credits_seq = $4 \
                         WHERE id = $1 AND credits_seq < $4 AND credits_remaining IS NOT NULL",
                    )
                    .bind(key_id)
                    .bind(count.remaining)
                    .bind(count.refilled_at)
                    .bind(count.seq)
                    .execute(&mut *tx)
                    .await?;
                }
                tx.commit().await?;
                Ok(())
            }

            async fn rotate_key(
                &self,
                org_id: &$crate::OrgId,
                key_id: &$crate::KeyId,
                rotation: &$crate::Rotation,
                audit: &$crate::AuditRecord,
            ) -> $crate::StoreResult<Option<$crate::ApiKeyRecord>> {
                let $crate::Rotation { secret_hash, start, retire_at, now } = rotation;
                let (retire_at, now) = (*retire_at, *now);
                let mut tx = self.pool.begin().await?;
                let live = sqlx::query(
                    "UPDATE api_keys SET start = $1, updated_at = $2 WHERE org_id = $3 AND id = $4 \
                     AND revoked_at IS NULL",
                )
                .bind(start)
                .bind(now)
                .bind(org_id)
                .bind(key_id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if live == 0 {
                    return Ok(None);
                }
                sqlx::query(
                    "UPDATE api_key_secrets SET retires_at = $1 WHERE key_id = $2 \
                     AND (retires_at IS NULL OR retires_at > $1)",
                )
                .bind(retire_at)
                .bind(key_id)
                .execute(&mut *tx)
                .await?;
                sqlx::query("INSERT INTO api_key_secrets (hash, key_id, start, created_at) VALUES ($1, $2, $3, $4)")
                    .bind(secret_hash)
                    .bind(key_id)
                    .bind(start)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                insert_audit(&mut tx, audit).await?;
                let stored = key_in_tx(&mut tx, org_id, key_id).await?;
                tx.commit().await?;
                Ok(stored)
            }

            async fn revoke_key(&self, org_id: &$crate::OrgId, key_id: &$crate::KeyId, now: i64, audit: &$crate::AuditRecord) -> $crate::StoreResult<bool> {
                let mut tx = self.pool.begin().await?;
                let revoked = sqlx::query(
                    "UPDATE api_keys SET revoked_at = $1, updated_at = $1 WHERE org_id = $2 AND id = $3 AND revoked_at IS NULL",
                )
                .bind(now)
                .bind(org_id)
                .bind(key_id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if revoked == 0 {
                    return Ok(false);
                }
                insert_audit(&mut tx, audit).await?;
                tx.commit().await?;
                Ok(true)
            }

            async fn flag_key_leaked(&self, key_id: &$crate::KeyId, now: i64, audit: &$crate::AuditRecord) -> $crate::StoreResult<bool> {
                let mut tx = self.pool.begin().await?;
                let flagged = sqlx::query(
                    "UPDATE api_keys SET leaked_at = $1, updated_at = $1 WHERE id = $2 \
                     AND leaked_at IS NULL AND revoked_at IS NULL",
                )
                .bind(now)
                .bind(key_id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if flagged == 0 {
                    return Ok(false);
                }
                insert_audit(&mut tx, audit).await?;
                tx.commit().await?;
                Ok(true)
            }

            async fn key_by_hash(&self, hash: &str) -> $crate::StoreResult<Option<$crate::KeyLookup>> {
                let sql = format!(
                    "SELECT {KEY_COLUMNS}, o.name AS org_name, o.external_id AS org_external_id, \
                     o.plan AS org_plan, o.is_operator AS org_is_operator, o.deleted_at AS org_deleted_at, o.disabled_at AS org_disabled_at, \
                     s.retires_at AS secret_retires_at, o.leaked_key_action AS org_leaked_key_action, \
                     EXISTS (SELECT 1 FROM entitlement_overrides eo WHERE eo.org_id = o.id) AS org_has_overrides \
                     FROM api_key_secrets s JOIN api_keys k ON k.id = s.key_id JOIN orgs o ON o.id = k.org_id \
                     WHERE s.hash = $1"
                );
                Ok(sqlx::query_as(&sql).bind(hash).fetch_optional(&self.pool).await?)
            }

            async fn live_secret_hashes(
                &self,
                created_since: i64,
                after: &str,
                limit: i64,
            ) -> $crate::StoreResult<Vec<String>> {
                Ok(sqlx::query_scalar(
                    "SELECT s.hash FROM api_key_secrets s JOIN api_keys k ON k.id = s.key_id \
                     WHERE k.revoked_at IS NULL AND s.created_at >= $1 AND s.hash > $2 \
                     ORDER BY s.hash LIMIT $3",
                )
                .bind(created_since)
                .bind(after)
                .bind(limit)
                .fetch_all(&self.pool)
                .await?)
            }

            async fn key_secrets(
                &self,
                org_id: &$crate::OrgId,
                key_id: &$crate::KeyId,
            ) -> $crate::StoreResult<Vec<$crate::KeySecretRecord>> {
                Ok(sqlx::query_as(
                    "SELECT s.start, s.created_at, s.retires_at, s.last_used_at \
                     FROM api_key_secrets s JOIN api_keys k ON k.id = s.key_id \
                     WHERE s.key_id = $1 AND k.org_id = $2 \
                     ORDER BY CASE WHEN s.retires_at IS NULL THEN 0 ELSE 1 END, s.created_at DESC, s.retires_at DESC",
                )
                .bind(key_id)
                .bind(org_id)
                .fetch_all(&self.pool)
                .await?)
            }

            async fn record_key_use(
                &self,
                keys: &[($crate::KeyId, i64)],
                secrets: &[(String, i64)],
            ) -> $crate::StoreResult<()> {
                if keys.is_empty() && secrets.is_empty() {
                    return Ok(());
                }
                let mut tx = self.pool.begin().await?;
                for (hash, at) in secrets {
                    sqlx::query(
                        "UPDATE api_key_secrets SET last_used_at = $1 WHERE hash = $2 \
                         AND (last_used_at IS NULL OR last_used_at < $1)",
                    )
                    .bind(at)
                    .bind(hash)
                    .execute(&mut *tx)
                    .await?;
                }
                for (key_id, at) in keys {
                    sqlx::query(
                        "UPDATE api_keys SET last_used_at = $1 WHERE id = $2 \
                         AND (last_used_at IS NULL OR last_used_at < $1)",
                    )
                    .bind(at)
                    .bind(key_id)
                    .execute(&mut *tx)
                    .await?;
                }
                tx.commit().await?;
                Ok(())
            }

            async fn set_org_plan(
                &self,
                org_id: &$crate::OrgId,
                plan: &str,
                now: i64,
                audit: &$crate::AuditRecord,
            ) -> $crate::StoreResult<Option<$crate::OrgRecord>> {
                let mut tx = self.pool.begin().await?;
                let sql = format!(
                    "UPDATE orgs SET plan = $1, updated_at = $2 WHERE id = $3 AND deleted_at IS NULL RETURNING {ORG_COLUMNS}"
                );
                let org: Option<$crate::OrgRecord> = sqlx::query_as(&sql)
                    .bind(plan)
                    .bind(now)
                    .bind(org_id)
                    .fetch_optional(&mut *tx)
                    .await?;
                if org.is_some() {
                    insert_audit(&mut tx, audit).await?;
                }
                tx.commit().await?;
                Ok(org)
            }
        }
    };
}

pub(crate) use impl_key_store;
