//! Passkeys: the [`PasskeyStore`] trait (users' WebAuthn credentials and the state of ceremonies
//! in progress) and its one SQL implementation, expanded for each backend like
//! [`FactorStore`](crate::FactorStore)'s.

use crate::records::*;
use crate::StoreResult;
use crate::{PasskeyId, SessionId, UserId};
use async_trait::async_trait;

/// Storage of passkeys. Changing methods are one transaction each, with their audit entry; a
/// ceremony is taken once, decided by the database, so it holds across nodes.
#[async_trait]
pub trait PasskeyStore: Send + Sync {
    /// The user's passkeys, oldest first.
    async fn passkeys(&self, user_id: &UserId) -> StoreResult<Vec<PasskeyRecord>>;
    /// The passkey with this credential id, whoever's it is.
    async fn passkey_by_credential(
        &self,
        credential_id: &str,
    ) -> StoreResult<Option<PasskeyRecord>>;
    /// Adds a passkey; when `code_hashes` is not empty (the account's first second factor),
    /// replaces the user's recovery codes by them; records `amr` as how the registering session
    /// (which just used the passkey) signed in. False (and nothing written) when the credential
    /// is registered already.
    async fn add_passkey(
        &self,
        passkey: &PasskeyRecord,
        code_hashes: &[String],
        session_id: &SessionId,
        amr: &str,
        audit: &AuditRecord,
    ) -> StoreResult<bool>;
    /// Renames the user's passkey; false when they have none with this id.
    async fn rename_passkey(
        &self,
        user_id: &UserId,
        id: &PasskeyId,
        name: &str,
        audit: &AuditRecord,
    ) -> StoreResult<bool>;
    /// Removes the user's passkey (and the recovery codes, when it was their last second
    /// factor); false when they have none with this id.
    async fn remove_passkey(
        &self,
        user_id: &UserId,
        id: &PasskeyId,
        audit: &AuditRecord,
    ) -> StoreResult<bool>;
    /// Records a sign-in with the passkey: its updated credential (counter) and the time.
    async fn passkey_used(&self, id: &PasskeyId, credential: &str, now: i64) -> StoreResult<()>;
    /// Stores a ceremony's state, in place of one under the same token (and drops ceremonies
    /// expired before `ceremony.created_at`).
    async fn put_webauthn_ceremony(&self, ceremony: &WebauthnCeremonyRecord) -> StoreResult<()>;
    /// Takes (deletes and returns) the live ceremony with this hash and purpose; None when it
    /// is unknown, taken or expired.
    async fn take_webauthn_ceremony(
        &self,
        token_hash: &str,
        purpose: &str,
        now: i64,
    ) -> StoreResult<Option<WebauthnCeremonyRecord>>;
}

/// Expands `impl PasskeyStore for $store` next to
/// [`impl_factor_store`](crate::factors::impl_factor_store), whose helper functions it uses.
macro_rules! impl_passkey_store {
    ($store:ident, $db:ty) => {
        const PASSKEY_COLUMNS: &str =
            "id, user_id, credential_id, name, credential, created_at, last_used_at";

        #[async_trait::async_trait]
        impl $crate::PasskeyStore for $store {
            async fn passkeys(
                &self,
                user_id: &$crate::UserId,
            ) -> $crate::StoreResult<Vec<$crate::PasskeyRecord>> {
                let sql = format!(
                    "SELECT {PASSKEY_COLUMNS} FROM passkeys WHERE user_id = $1 \
                     ORDER BY created_at, id"
                );
                Ok(sqlx::query_as(&sql)
                    .bind(user_id)
                    .fetch_all(&self.pool)
                    .await?)
            }

            async fn passkey_by_credential(
                &self,
                credential_id: &str,
            ) -> $crate::StoreResult<Option<$crate::PasskeyRecord>> {
                let sql = format!("SELECT {PASSKEY_COLUMNS} FROM passkeys WHERE credential_id = $1");
                Ok(sqlx::query_as(&sql)
                    .bind(credential_id)
                    .fetch_optional(&self.pool)
                    .await?)
            }

            async fn add_passkey(
                &self,
                p: &$crate::PasskeyRecord,
                code_hashes: &[String],
                session_id: &$crate::SessionId,
                amr: &str,
                audit: &$crate::AuditRecord,
            ) -> $crate::StoreResult<bool> {
                let mut tx = self.pool.begin().await?;
                let added = sqlx::query(
                    "INSERT INTO passkeys (id, user_id, credential_id, name, credential, created_at) \
                     VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (credential_id) DO NOTHING",
                )
                .bind(&p.id)
                .bind(&p.user_id)
                .bind(&p.credential_id)
                .bind(&p.name)
                .bind(&p.credential)
                .bind(p.created_at)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if added == 0 {
                    return Ok(false);
                }
                if !code_hashes.is_empty() {
                    replace_recovery_codes_in(&mut tx, &p.user_id, code_hashes, p.created_at)
                        .await?;
                }
                sqlx::query(
                    "UPDATE sessions SET amr = $1 WHERE id = $2 AND user_id = $3 AND revoked_at IS NULL",
                )
                .bind(amr)
                .bind(session_id)
                .bind(&p.user_id)
                .execute(&mut *tx)
                .await?;
                insert_audit(&mut tx, audit).await?;
                tx.commit().await?;
                Ok(true)
            }

            async fn rename_passkey(
                &self,
                user_id: &$crate::UserId,
                id: &$crate::PasskeyId,
                name: &str,
                audit: &$crate::AuditRecord,
            ) -> $crate::StoreResult<bool> {
                let mut tx = self.pool.begin().await?;
                let renamed = sqlx::query("UPDATE passkeys SET name = $1 WHERE id = $2 AND user_id = $3")
                    .bind(name)
                    .bind(id)
                    .bind(user_id)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                if renamed == 0 {
                    return Ok(false);
                }
                insert_audit(&mut tx, audit).await?;
                tx.commit().await?;
                Ok(true)
            }

            async fn remove_passkey(
                &self,
                user_id: &$crate::UserId,
                id: &$crate::PasskeyId,
                audit: &$crate::AuditRecord,
            ) -> $crate::StoreResult<bool> {
                let mut tx = self.pool.begin().await?;
                let removed = sqlx::query("DELETE FROM passkeys WHERE id = $1 AND user_id = $2")
                    .bind(id)
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

            async fn passkey_used(
                &self,
                id: &$crate::PasskeyId,
                credential: &str,
                now: i64,
            ) -> $crate::StoreResult<()> {
                sqlx::query("UPDATE passkeys SET credential = $1, last_used_at = $2 WHERE id = $3")
                    .bind(credential)
                    .bind(now)
                    .bind(id)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn put_webauthn_ceremony(
                &self,
                c: &$crate::WebauthnCeremonyRecord,
            ) -> $crate::StoreResult<()> {
                let mut tx = self.pool.begin().await?;
                sqlx::query("DELETE FROM webauthn_ceremonies WHERE expires_at < $1")
                    .bind(c.created_at)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query(
                    "INSERT INTO webauthn_ceremonies \
                     (token_hash, purpose, user_id, client_hash, state, created_at, expires_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7) \
                     ON CONFLICT (token_hash) DO UPDATE SET purpose = excluded.purpose, \
                     user_id = excluded.user_id, client_hash = excluded.client_hash, \
                     state = excluded.state, created_at = excluded.created_at, \
                     expires_at = excluded.expires_at",
                )
                .bind(&c.token_hash)
                .bind(&c.purpose)
                .bind(&c.user_id)
                .bind(&c.client_hash)
                .bind(&c.state)
                .bind(c.created_at)
                .bind(c.expires_at)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(())
            }

            async fn take_webauthn_ceremony(
                &self,
                token_hash: &str,
                purpose: &str,
                now: i64,
            ) -> $crate::StoreResult<Option<$crate::WebauthnCeremonyRecord>> {
                Ok(sqlx::query_as(
                    "DELETE FROM webauthn_ceremonies \
                     WHERE token_hash = $1 AND purpose = $2 AND expires_at > $3 \
                     RETURNING token_hash, purpose, user_id, client_hash, state, created_at, expires_at",
                )
                .bind(token_hash)
                .bind(purpose)
                .bind(now)
                .fetch_optional(&self.pool)
                .await?)
            }
        }
    };
}

pub(crate) use impl_passkey_store;
