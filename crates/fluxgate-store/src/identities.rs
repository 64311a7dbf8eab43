//! Sign-in with OpenID Connect: the [`IdentityStore`] trait (users' identities at providers and
//! the authorisations in progress) and its one SQL implementation, expanded for each backend
//! like [`FactorStore`](crate::FactorStore)'s.

use crate::records::*;
use crate::StoreResult;
use crate::{IdentityId, UserId};
use async_trait::async_trait;

/// Storage of linked identities. Changing methods are one transaction each, with their audit
/// entry; an identity belongs to one account (the database's unique key decides, across
/// nodes), and a flow is taken once.
#[async_trait]
pub trait IdentityStore: Send + Sync {
    /// The user's linked identities, oldest first.
    async fn identities(&self, user_id: &UserId) -> StoreResult<Vec<IdentityRecord>>;
    /// The identity a provider's `sub` is linked as, if any.
    async fn identity_by_subject(
        &self,
        provider: &str,
        subject: &str,
    ) -> StoreResult<Option<IdentityRecord>>;
    /// Links an identity to its user; false (nothing written) when that provider's subject is
    /// linked already.
    async fn link_identity(
        &self,
        identity: &IdentityRecord,
        audit: &AuditRecord,
    ) -> StoreResult<bool>;
    /// Creates a user (email verified, no password) with their first identity, in one
    /// transaction. `Conflict` when the email (or the identity) is taken meanwhile.
    async fn create_user_with_identity(
        &self,
        user: &UserRecord,
        identity: &IdentityRecord,
        audit: &[AuditRecord],
    ) -> StoreResult<()>;
    /// Unlinks the user's identity; false when they have none with this id.
    async fn unlink_identity(
        &self,
        user_id: &UserId,
        id: &IdentityId,
        audit: &AuditRecord,
    ) -> StoreResult<bool>;
    /// Records a sign-in with the identity.
    async fn identity_used(&self, id: &IdentityId, now: i64) -> StoreResult<()>;
    /// Stores an authorisation in progress (and drops those expired before its creation).
    async fn put_oidc_flow(&self, flow: &OidcFlowRecord) -> StoreResult<()>;
    /// Takes (deletes and returns) the live flow with this state hash; None when it is unknown,
    /// taken or expired.
    async fn take_oidc_flow(
        &self,
        state_hash: &str,
        now: i64,
    ) -> StoreResult<Option<OidcFlowRecord>>;
}

/// Expands `impl IdentityStore for $store` next to [`impl_store`](crate::shared::impl_store),
/// whose helper functions it uses.
macro_rules! impl_identity_store {
    ($store:ident, $db:ty) => {
        const IDENTITY_COLUMNS: &str =
            "id, user_id, provider, subject, email, created_at, last_used_at";

        async fn insert_identity(
            conn: &mut <$db as sqlx::Database>::Connection,
            i: &$crate::IdentityRecord,
        ) -> Result<u64, sqlx::Error> {
            Ok(sqlx::query(
                "INSERT INTO user_identities (id, user_id, provider, subject, email, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (provider, subject) DO NOTHING",
            )
            .bind(&i.id)
            .bind(&i.user_id)
            .bind(&i.provider)
            .bind(&i.subject)
            .bind(&i.email)
            .bind(i.created_at)
            .execute(&mut *conn)
            .await?
            .rows_affected())
        }

        #[async_trait::async_trait]
        impl $crate::IdentityStore for $store {
            async fn identities(
                &self,
                user_id: &$crate::UserId,
            ) -> $crate::StoreResult<Vec<$crate::IdentityRecord>> {
                let sql = format!(
                    "SELECT {IDENTITY_COLUMNS} FROM user_identities WHERE user_id = $1 \
                     ORDER BY created_at, id"
                );
                Ok(sqlx::query_as(&sql).bind(user_id).fetch_all(&self.pool).await?)
            }

            async fn identity_by_subject(
                &self,
                provider: &str,
                subject: &str,
            ) -> $crate::StoreResult<Option<$crate::IdentityRecord>> {
                let sql = format!(
                    "SELECT {IDENTITY_COLUMNS} FROM user_identities WHERE provider = $1 AND subject = $2"
                );
                Ok(sqlx::query_as(&sql)
                    .bind(provider)
                    .bind(subject)
                    .fetch_optional(&self.pool)
                    .await?)
            }

            async fn link_identity(
                &self,
                identity: &$crate::IdentityRecord,
                audit: &$crate::AuditRecord,
            ) -> $crate::StoreResult<bool> {
                let mut tx = self.pool.begin().await?;
                if insert_identity(&mut tx, identity).await? == 0 {
                    return Ok(false);
                }
                insert_audit(&mut tx, audit).await?;
                tx.commit().await?;
                Ok(true)
            }

            async fn create_user_with_identity(
                &self,
                user: &$crate::UserRecord,
                identity: &$crate::IdentityRecord,
                audit: &[$crate::AuditRecord],
            ) -> $crate::StoreResult<()> {
                let mut tx = self.pool.begin().await?;
                insert_user(&mut tx, user).await?;
                if insert_identity(&mut tx, identity).await? == 0 {
                    return Err($crate::StoreError::Conflict("user_identities".into()));
                }
                for entry in audit {
                    insert_audit(&mut tx, entry).await?;
                }
                tx.commit().await?;
                Ok(())
            }

            async fn unlink_identity(
                &self,
                user_id: &$crate::UserId,
                id: &$crate::IdentityId,
                audit: &$crate::AuditRecord,
            ) -> $crate::StoreResult<bool> {
                let mut tx = self.pool.begin().await?;
                let removed = sqlx::query("DELETE FROM user_identities WHERE id = $1 AND user_id = $2")
                    .bind(id)
                    .bind(user_id)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                if removed == 0 {
                    return Ok(false);
                }
                insert_audit(&mut tx, audit).await?;
                tx.commit().await?;
                Ok(true)
            }

            async fn identity_used(
                &self,
                id: &$crate::IdentityId,
                now: i64,
            ) -> $crate::StoreResult<()> {
                sqlx::query("UPDATE user_identities SET last_used_at = $1 WHERE id = $2")
                    .bind(now)
                    .bind(id)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn put_oidc_flow(&self, f: &$crate::OidcFlowRecord) -> $crate::StoreResult<()> {
                let mut tx = self.pool.begin().await?;
                sqlx::query("DELETE FROM oidc_flows WHERE expires_at < $1")
                    .bind(f.created_at)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query(
                    "INSERT INTO oidc_flows \
                     (state_hash, provider, user_id, nonce, pkce_verifier, next, ends_in, created_at, \
                     expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                )
                .bind(&f.state_hash)
                .bind(&f.provider)
                .bind(&f.user_id)
                .bind(&f.nonce)
                .bind(&f.pkce_verifier)
                .bind(&f.next)
                .bind(&f.ends_in)
                .bind(f.created_at)
                .bind(f.expires_at)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(())
            }

            async fn take_oidc_flow(
                &self,
                state_hash: &str,
                now: i64,
            ) -> $crate::StoreResult<Option<$crate::OidcFlowRecord>> {
                Ok(sqlx::query_as(
                    "DELETE FROM oidc_flows WHERE state_hash = $1 AND expires_at > $2 \
                     RETURNING state_hash, provider, user_id, nonce, pkce_verifier, next, ends_in, created_at, \
                     expires_at",
                )
                .bind(state_hash)
                .bind(now)
                .fetch_optional(&self.pool)
                .await?)
            }
        }
    };
}

pub(crate) use impl_identity_store;
