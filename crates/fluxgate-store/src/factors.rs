//! Second factors: the [`FactorStore`] trait (TOTP factors, recovery codes, sign-in challenges)
//! and its one SQL implementation, expanded for each backend like [`Store`](crate::Store)'s.

use crate::records::*;
use crate::StoreResult;
use crate::{SessionId, UserId};

/// What confirms a pending TOTP factor.
pub struct TotpConfirmation<'a> {
    /// Whose factor.
    pub user_id: &'a UserId,
    /// The pending factor's sealed secret, as read (so a replaced enrolment is not confirmed).
    pub secret_sealed: &'a str,
    /// The step of the first code.
    pub step: i64,
    /// The recovery codes' hashes.
    pub code_hashes: &'a [String],
    /// The session that confirmed it.
    pub session_id: &'a SessionId,
    /// How that session now counts as signed in.
    pub amr: &'a str,
}
use async_trait::async_trait;

/// Storage of second factors. Changing methods are one transaction each, with their audit
/// entry; the single-use rules (a TOTP step, a recovery code, a challenge) are decided by the
/// database, so they hold across nodes.
#[async_trait]
pub trait FactorStore: Send + Sync {
    /// The user's TOTP factor, confirmed or pending.
    async fn totp_factor(&self, user_id: &UserId) -> StoreResult<Option<TotpFactorRecord>>;
    /// Stores a pending factor in place of any pending one; false (and nothing written) when
    /// the user has a confirmed one.
    async fn begin_totp(&self, factor: &TotpFactorRecord, audit: &AuditRecord)
        -> StoreResult<bool>;
    /// Confirms the pending factor sealed as `secret_sealed` (its first code was of `step`),
    /// replaces the user's recovery codes by `code_hashes`, and records `amr` as how the
    /// confirming session (which just used the factor) signed in; false when that pending
    /// factor is no longer there (replaced or confirmed meanwhile).
    async fn confirm_totp(
        &self,
        confirmation: &TotpConfirmation<'_>,
        now: i64,
        audit: &AuditRecord,
    ) -> StoreResult<bool>;
    /// Records `step` as the confirmed factor's last accepted one if it is later than the last;
    /// false when it is not (the code was used already) or there is no confirmed factor.
    async fn spend_totp_step(&self, user_id: &UserId, step: i64) -> StoreResult<bool>;
    /// Removes the user's TOTP factor (and the recovery codes, when it was their last second
    /// factor); false when there was no factor.
    async fn remove_totp(&self, user_id: &UserId, audit: &AuditRecord) -> StoreResult<bool>;
    /// Replaces the user's recovery codes by `code_hashes`.
    async fn replace_recovery_codes(
        &self,
        user_id: &UserId,
        code_hashes: &[String],
        now: i64,
        audit: &AuditRecord,
    ) -> StoreResult<()>;
    /// Spends the user's unused recovery code with this hash; false when there is none.
    async fn spend_recovery_code(
        &self,
        user_id: &UserId,
        code_hash: &str,
        now: i64,
    ) -> StoreResult<bool>;
    /// How many of the user's recovery codes are unused.
    async fn recovery_codes_left(&self, user_id: &UserId) -> StoreResult<i64>;
    /// Stores a sign-in challenge (and drops challenges expired before `challenge.created_at`).
    async fn insert_mfa_challenge(&self, challenge: &MfaChallengeRecord) -> StoreResult<()>;
    /// Counts an attempt on the live challenge with this hash: the challenge as counted, or None
    /// when it is unknown, spent or expired.
    async fn attempt_mfa_challenge(
        &self,
        token_hash: &str,
        now: i64,
    ) -> StoreResult<Option<MfaChallengeRecord>>;
    /// Spends the live challenge and creates the session it signs in, in one transaction; false
    /// (and no session) when the challenge was spent or expired meanwhile.
    async fn complete_mfa_challenge(
        &self,
        token_hash: &str,
        now: i64,
        session: &SessionRecord,
        refresh: &RefreshTokenRecord,
        audit: &AuditRecord,
    ) -> StoreResult<bool>;
}

/// Expands `impl FactorStore for $store` next to [`impl_store`](crate::shared::impl_store),
/// whose helper functions it uses.
macro_rules! impl_factor_store {
    ($store:ident, $db:ty) => {
        const CHALLENGE_COLUMNS: &str =
            "token_hash, user_id, client_hash, created_at, expires_at, attempts, spent_at, first_factor";

        /// Replaces the user's recovery codes by `code_hashes` (none: deletes them).
        async fn replace_recovery_codes_in(
            conn: &mut <$db as sqlx::Database>::Connection,
            user_id: &$crate::UserId,
            code_hashes: &[String],
            now: i64,
        ) -> Result<(), sqlx::Error> {
            sqlx::query("DELETE FROM recovery_codes WHERE user_id = $1")
                .bind(user_id)
                .execute(&mut *conn)
                .await?;
            for hash in code_hashes {
                sqlx::query(
                    "INSERT INTO recovery_codes (user_id, code_hash, created_at) VALUES ($1, $2, $3)",
                )
                .bind(user_id)
                .bind(hash)
                .bind(now)
                .execute(&mut *conn)
                .await?;
            }
            Ok(())
        }

        /// Drops the user's recovery codes when they have no second factor left (no confirmed
        /// TOTP factor, no passkey).
        async fn drop_recovery_codes_without_factor(
            conn: &mut <$db as sqlx::Database>::Connection,
            user_id: &$crate::UserId,
        ) -> Result<(), sqlx::Error> {
            sqlx::query(
                "DELETE FROM recovery_codes WHERE user_id = $1 \
                 AND NOT EXISTS (SELECT 1 FROM passkeys WHERE user_id = $1) \
                 AND NOT EXISTS (SELECT 1 FROM totp_factors WHERE user_id = $1 \
                 AND confirmed_at IS NOT NULL)",
            )
            .bind(user_id)
            .execute(&mut *conn)
            .await?;
            Ok(())
        }

        #[async_trait::async_trait]
        impl $crate::FactorStore for $store {
            async fn totp_factor(
                &self,
                user_id: &$crate::UserId,
            ) -> $crate::StoreResult<Option<$crate::TotpFactorRecord>> {
                Ok(sqlx::query_as(
                    "SELECT user_id, secret_sealed, created_at, confirmed_at, last_step \
                     FROM totp_factors WHERE user_id = $1",
                )
                .bind(user_id)
                .fetch_optional(&self.pool)
                .await?)
            }

            async fn begin_totp(
                &self,
                f: &$crate::TotpFactorRecord,
                audit: &$crate::AuditRecord,
            ) -> $crate::StoreResult<bool> {
                let mut tx = self.pool.begin().await?;
                sqlx::query("DELETE FROM totp_factors WHERE user_id = $1 AND confirmed_at IS NULL")
                    .bind(&f.user_id)
                    .execute(&mut *tx)
                    .await?;
                let stored = sqlx::query(
                    "INSERT INTO totp_factors (user_id, secret_sealed, created_at) VALUES ($1, $2, $3) \
                     ON CONFLICT (user_id) DO NOTHING",
                )
                .bind(&f.user_id)
                .bind(&f.secret_sealed)
                .bind(f.created_at)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if stored == 0 {
                    return Ok(false);
                }
                insert_audit(&mut tx, audit).await?;
                tx.commit().await?;
                Ok(true)
            }

            async fn confirm_totp(
                &self,
                c: &$crate::TotpConfirmation<'_>,
                now: i64,
                audit: &$crate::AuditRecord,
            ) -> $crate::StoreResult<bool> {
                let mut tx = self.pool.begin().await?;
                let confirmed = sqlx::query(
                    "UPDATE totp_factors SET confirmed_at = $1, last_step = $2 \
                     WHERE user_id = $3 AND secret_sealed = $4 AND confirmed_at IS NULL",
                )
                .bind(now)
                .bind(c.step)
                .bind(c.user_id)
                .bind(c.secret_sealed)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if confirmed == 0 {
                    return Ok(false);
                }
                replace_recovery_codes_in(&mut tx, c.user_id, c.code_hashes, now).await?;
                sqlx::query(
                    "UPDATE sessions SET amr = $1 WHERE id = $2 AND user_id = $3 AND revoked_at IS NULL",
                )
                .bind(c.amr)
                .bind(c.session_id)
                .bind(c.user_id)
                .execute(&mut *tx)
                .await?;
                insert_audit(&mut tx, audit).await?;
                tx.commit().await?;
                Ok(true)
            }

            async fn spend_totp_step(
                &self,
                user_id: &$crate::UserId,
                step: i64,
            ) -> $crate::StoreResult<bool> {
                let spent = sqlx::query(
                    "UPDATE totp_factors SET last_step = $1 WHERE user_id = $2 \
                     AND confirmed_at IS NOT NULL AND (last_step IS NULL OR last_step < $1)",
                )
                .bind(step)
                .bind(user_id)
                .execute(&self.pool)
                .await?
                .rows_affected();
                Ok(spent == 1)
            }

            async fn remove_totp(
                &self,
                user_id: &$crate::UserId,
                audit: &$crate::AuditRecord,
            ) -> $crate::StoreResult<bool> {
                let mut tx = self.pool.begin().await?;
                let removed = sqlx::query("DELETE FROM totp_factors WHERE user_id = $1")
                    .bind(user_id)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                if removed == 0 {
                    return Ok(false);
                }
                drop_recovery_codes_without_factor(&mut tx, user_id).await?;
                insert_audit(&mut tx, audit).await?;
                tx.commit().await?;
                Ok(true)
            }

            async fn replace_recovery_codes(
                &self,
                user_id: &$crate::UserId,
                code_hashes: &[String],
                now: i64,
                audit: &$crate::AuditRecord,
            ) -> $crate::StoreResult<()> {
                let mut tx = self.pool.begin().await?;
                replace_recovery_codes_in(&mut tx, user_id, code_hashes, now).await?;
                insert_audit(&mut tx, audit).await?;
                tx.commit().await?;
                Ok(())
            }

            async fn spend_recovery_code(
                &self,
                user_id: &$crate::UserId,
                code_hash: &str,
                now: i64,
            ) -> $crate::StoreResult<bool> {
                let spent = sqlx::query(
                    "UPDATE recovery_codes SET used_at = $1 \
                     WHERE user_id = $2 AND code_hash = $3 AND used_at IS NULL",
                )
                .bind(now)
                .bind(user_id)
                .bind(code_hash)
                .execute(&self.pool)
                .await?
                .rows_affected();
                Ok(spent == 1)
            }

            async fn recovery_codes_left(&self, user_id: &$crate::UserId) -> $crate::StoreResult<i64> {
                Ok(sqlx::query_scalar(
                    "SELECT COUNT(*) FROM recovery_codes WHERE user_id = $1 AND used_at IS NULL",
                )
                .bind(user_id)
                .fetch_one(&self.pool)
                .await?)
            }

            async fn insert_mfa_challenge(
                &self,
                c: &$crate::MfaChallengeRecord,
            ) -> $crate::StoreResult<()> {
                let mut tx = self.pool.begin().await?;
                sqlx::query("DELETE FROM mfa_challenges WHERE expires_at < $1")
                    .bind(c.created_at)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query(
                    "INSERT INTO mfa_challenges (token_hash, user_id, client_hash, created_at, expires_at, \
                     first_factor) VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .bind(&c.token_hash)
                .bind(&c.user_id)
                .bind(&c.client_hash)
                .bind(c.created_at)
                .bind(c.expires_at)
                .bind(&c.first_factor)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(())
            }

            async fn attempt_mfa_challenge(
                &self,
                token_hash: &str,
                now: i64,
            ) -> $crate::StoreResult<Option<$crate::MfaChallengeRecord>> {
                let sql = format!(
                    "UPDATE mfa_challenges SET attempts = attempts + 1 \
                     WHERE token_hash = $1 AND spent_at IS NULL AND expires_at > $2 \
                     RETURNING {CHALLENGE_COLUMNS}"
                );
                Ok(sqlx::query_as(&sql)
                    .bind(token_hash)
                    .bind(now)
                    .fetch_optional(&self.pool)
                    .await?)
            }

            async fn complete_mfa_challenge(
                &self,
                token_hash: &str,
                now: i64,
                session: &$crate::SessionRecord,
                refresh: &$crate::RefreshTokenRecord,
                audit: &$crate::AuditRecord,
            ) -> $crate::StoreResult<bool> {
                let mut tx = self.pool.begin().await?;
                let spent = sqlx::query(
                    "UPDATE mfa_challenges SET spent_at = $1 \
                     WHERE token_hash = $2 AND spent_at IS NULL AND expires_at > $1",
                )
                .bind(now)
                .bind(token_hash)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if spent == 0 {
                    return Ok(false);
                }
                insert_session(&mut tx, session, refresh, audit).await?;
                tx.commit().await?;
                Ok(true)
            }
        }
    };
}

pub(crate) use impl_factor_store;
