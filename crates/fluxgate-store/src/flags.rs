//! Feature flags and per-org entitlement overrides: the [`FlagStore`] trait and its one SQL
//! implementation, expanded for each backend like [`KeyStore`](crate::KeyStore)'s.

use crate::records::*;
use crate::OrgId;
use crate::StoreResult;
use async_trait::async_trait;

/// Storage of feature flags and entitlement overrides. Changing methods are one transaction
/// each, with their audit entry.
#[async_trait]
pub trait FlagStore: Send + Sync {
    /// Every feature flag, by name.
    async fn flags(&self) -> StoreResult<Vec<FlagRecord>>;
    /// The flag of this name, if there is one.
    async fn flag(&self, name: &str) -> StoreResult<Option<FlagRecord>>;
    /// Creates a flag, or replaces the one of its name (keeping when it was created).
    async fn put_flag(&self, flag: &FlagRecord, audit: &AuditRecord) -> StoreResult<()>;
    /// Deletes a flag; false if there is none of that name.
    async fn delete_flag(&self, name: &str, audit: &AuditRecord) -> StoreResult<bool>;
    /// An org's entitlement overrides (ended ones too), by entitlement.
    async fn entitlement_overrides(&self, org_id: &OrgId) -> StoreResult<Vec<OverrideRecord>>;
    /// Sets an org's override of one entitlement (replacing any).
    async fn put_entitlement_override(
        &self,
        record: &OverrideRecord,
        audit: &AuditRecord,
    ) -> StoreResult<()>;
    /// Removes an org's override of one entitlement; false if there is none.
    async fn delete_entitlement_override(
        &self,
        org_id: &OrgId,
        entitlement: &str,
        audit: &AuditRecord,
    ) -> StoreResult<bool>;
}

/// Expands `impl FlagStore for $store` next to [`impl_store`](crate::shared::impl_store), whose
/// helper functions it uses.
macro_rules! impl_flag_store {
    ($store:ident, $db:ty) => {
        const FLAG_COLUMNS: &str = "name, description, enabled, variant, default_variant, orgs, \
             plans, rollout_percent, created_at, updated_at";
        const OVERRIDE_COLUMNS: &str =
            "org_id, entitlement, effect, expires_at, note, created_by, created_at";

        #[async_trait::async_trait]
        impl $crate::FlagStore for $store {
            async fn flags(&self) -> $crate::StoreResult<Vec<$crate::FlagRecord>> {
                let sql = format!("SELECT {FLAG_COLUMNS} FROM feature_flags ORDER BY name");
                Ok(sqlx::query_as(&sql).fetch_all(&self.pool).await?)
            }

            async fn flag(&self, name: &str) -> $crate::StoreResult<Option<$crate::FlagRecord>> {
                let sql = format!("SELECT {FLAG_COLUMNS} FROM feature_flags WHERE name = $1");
                Ok(sqlx::query_as(&sql).bind(name).fetch_optional(&self.pool).await?)
            }

            async fn put_flag(
                &self,
                f: &$crate::FlagRecord,
                audit: &$crate::AuditRecord,
            ) -> $crate::StoreResult<()> {
                let mut tx = self.pool.begin().await?;
                sqlx::query(
                    "INSERT INTO feature_flags (name, description, enabled, variant, default_variant, \
                     orgs, plans, rollout_percent, created_at, updated_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
                     ON CONFLICT (name) DO UPDATE SET description = excluded.description, \
                     enabled = excluded.enabled, variant = excluded.variant, \
                     default_variant = excluded.default_variant, orgs = excluded.orgs, \
                     plans = excluded.plans, rollout_percent = excluded.rollout_percent, \
                     updated_at = excluded.updated_at",
                )
                .bind(&f.name)
                .bind(&f.description)
                .bind(f.enabled)
                .bind(&f.variant)
                .bind(&f.default_variant)
                .bind(&f.orgs)
                .bind(&f.plans)
                .bind(f.rollout_percent)
                .bind(f.created_at)
                .bind(f.updated_at)
                .execute(&mut *tx)
                .await?;
                insert_audit(&mut tx, audit).await?;
                tx.commit().await?;
                Ok(())
            }

            async fn delete_flag(
                &self,
                name: &str,
                audit: &$crate::AuditRecord,
            ) -> $crate::StoreResult<bool> {
                let mut tx = self.pool.begin().await?;
                let deleted = sqlx::query("DELETE FROM feature_flags WHERE name = $1")
                    .bind(name)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                if deleted == 0 {
                    return Ok(false);
                }
                insert_audit(&mut tx, audit).await?;
                tx.commit().await?;
                Ok(true)
            }

            async fn entitlement_overrides(
                &self,
                org_id: &$crate::OrgId,
            ) -> $crate::StoreResult<Vec<$crate::OverrideRecord>> {
                let sql = format!(
                    "SELECT {OVERRIDE_COLUMNS} FROM entitlement_overrides WHERE org_id = $1 \
                     ORDER BY entitlement"
                );
                Ok(sqlx::query_as(&sql).bind(org_id).fetch_all(&self.pool).await?)
            }

            async fn put_entitlement_override(
                &self,
                o: &$crate::OverrideRecord,
                audit: &$crate::AuditRecord,
            ) -> $crate::StoreResult<()> {
                let mut tx = self.pool.begin().await?;
                sqlx::query(
                    "INSERT INTO entitlement_overrides (org_id, entitlement, effect, expires_at, \
                     note, created_by, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7) \
                     ON CONFLICT (org_id, entitlement) DO UPDATE SET effect = excluded.effect, \
                     expires_at = excluded.expires_at, note = excluded.note, \
                     created_by = excluded.created_by, created_at = excluded.created_at",
                )
                .bind(&o.org_id)
                .bind(&o.entitlement)
                .bind(&o.effect)
                .bind(o.expires_at)
                .bind(&o.note)
                .bind(&o.created_by)
                .bind(o.created_at)
                .execute(&mut *tx)
                .await?;
                insert_audit(&mut tx, audit).await?;
                tx.commit().await?;
                Ok(())
            }

            async fn delete_entitlement_override(
                &self,
                org_id: &$crate::OrgId,
                entitlement: &str,
                audit: &$crate::AuditRecord,
            ) -> $crate::StoreResult<bool> {
                let mut tx = self.pool.begin().await?;
                let deleted = sqlx::query(
                    "DELETE FROM entitlement_overrides WHERE org_id = $1 AND entitlement = $2",
                )
                .bind(org_id)
                .bind(entitlement)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if deleted == 0 {
                    return Ok(false);
                }
                insert_audit(&mut tx, audit).await?;
                tx.commit().await?;
                Ok(true)
            }
        }
    };
}

pub(crate) use impl_flag_store;
