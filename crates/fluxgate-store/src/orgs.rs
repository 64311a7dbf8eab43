//! Organizations, members, custom roles and invitations: the [`OrgStore`] trait and its one SQL
//! implementation, expanded for each backend like [`Store`](crate::Store)'s.
//!
//! Changes that must respect a rule across rows of one org (the last owner stays, a role in use
//! is not deleted) first touch the org's row: on PostgreSQL that row lock serialises concurrent
//! changes to the same org; SQLite serialises all writers anyway.

use crate::records::*;
use crate::StoreResult;
use crate::{InvitationId, OrgId, RoleId, UserId};
use async_trait::async_trait;

/// Storage of organizations and everything inside them. Each method is one transaction and
/// writes the audit entries it is given in it.
#[async_trait]
pub trait OrgStore: Send + Sync {
    /// Creates an org with `owner` as its owner.
    async fn create_org(
        &self,
        org: &OrgRecord,
        owner: &UserId,
        audit: &AuditRecord,
    ) -> StoreResult<()>;
    /// An org that is not deleted.
    async fn org(&self, org_id: &OrgId) -> StoreResult<Option<OrgRecord>>;
    /// The org (not deleted) with this external id.
    async fn org_by_external_id(&self, external_id: &str) -> StoreResult<Option<OrgRecord>>;
    /// Orgs that are not deleted, by id, after the cursor; with `search`, only those whose name
    /// or external id contains it, or whose id it is.
    async fn orgs(
        &self,
        after: Option<&str>,
        search: Option<&str>,
        limit: i64,
    ) -> StoreResult<Vec<OrgRecord>>;
    /// Disables a customer org (or enables it again); the updated org, or None when there is no
    /// such customer org (the operator org cannot be disabled).
    async fn set_org_disabled(
        &self,
        org_id: &OrgId,
        disabled: bool,
        now: i64,
        audit: &AuditRecord,
    ) -> StoreResult<Option<OrgRecord>>;
    /// Applies `changes`; the updated org, or None if there is no such org. `Conflict` when the
    /// external id is another org's.
    async fn update_org(
        &self,
        org_id: &OrgId,
        changes: &OrgChanges,
        now: i64,
        audit: &AuditRecord,
    ) -> StoreResult<Option<OrgRecord>>;
    /// Soft-deletes an org and cancels its open invitations; false if there is no such org.
    async fn delete_org(&self, org_id: &OrgId, now: i64, audit: &AuditRecord) -> StoreResult<bool>;

    /// Members of an org by user id, after the cursor.
    async fn members(
        &self,
        org_id: &OrgId,
        after: Option<&str>,
        limit: i64,
    ) -> StoreResult<Vec<MemberRecord>>;
    /// Gives a member another role, unless that leaves the org without an owner.
    async fn change_member_role(
        &self,
        org_id: &OrgId,
        user_id: &UserId,
        role: &str,
        audit: &AuditRecord,
    ) -> StoreResult<MemberChange>;
    /// Removes a member, unless that leaves the org without an owner.
    async fn remove_member(
        &self,
        org_id: &OrgId,
        user_id: &UserId,
        audit: &AuditRecord,
    ) -> StoreResult<MemberChange>;

    /// The org's custom roles by name.
    async fn roles(&self, org_id: &OrgId) -> StoreResult<Vec<RoleRecord>>;
    /// One custom role of an org.
    async fn role(&self, org_id: &OrgId, role_id: &RoleId) -> StoreResult<Option<RoleRecord>>;
    /// Creates a custom role; `Conflict` if the org has one of that name.
    async fn create_role(&self, role: &RoleRecord, audit: &AuditRecord) -> StoreResult<()>;
    /// Replaces a custom role's name, description and permissions; a new name carries over to
    /// the members and open invitations holding the role. None if there is no such role.
    async fn update_role(
        &self,
        role: &RoleRecord,
        audit: &AuditRecord,
    ) -> StoreResult<Option<RoleRecord>>;
    /// Deletes a custom role nobody holds.
    async fn delete_role(
        &self,
        org_id: &OrgId,
        role_id: &RoleId,
        audit: &AuditRecord,
    ) -> StoreResult<RoleDeletion>;

    /// Stores an invitation, cancelling an expired open one to the same address first.
    /// `Conflict` if a live one is open.
    async fn create_invitation(
        &self,
        invitation: &InvitationRecord,
        audit: &AuditRecord,
    ) -> StoreResult<()>;
    /// Open, unexpired invitations of an org by id, after the cursor.
    async fn open_invitations(
        &self,
        org_id: &OrgId,
        now: i64,
        after: Option<&str>,
        limit: i64,
    ) -> StoreResult<Vec<InvitationRecord>>;
    /// An invitation by the hash of its token.
    async fn invitation_by_token(&self, token_hash: &str) -> StoreResult<Option<InvitationRecord>>;
    /// Cancels an open invitation of an org; false if there is none.
    async fn cancel_invitation(
        &self,
        org_id: &OrgId,
        invitation_id: &InvitationId,
        now: i64,
        audit: &AuditRecord,
    ) -> StoreResult<bool>;
    /// Gives an open invitation of an org a new token and expiry (the old token stops working);
    /// the updated invitation, or None if there is no such open one.
    async fn reissue_invitation(
        &self,
        org_id: &OrgId,
        invitation_id: &InvitationId,
        token_hash: &str,
        expires_at: i64,
        audit: &AuditRecord,
    ) -> StoreResult<Option<InvitationRecord>>;
    /// Accepts an open, unexpired invitation for `user_id`, adding the membership.
    async fn accept_invitation(
        &self,
        invitation_id: &InvitationId,
        user_id: &UserId,
        now: i64,
        audit: &AuditRecord,
    ) -> StoreResult<Acceptance>;
}

/// Expands `impl OrgStore for $store` next to [`impl_store`](crate::shared::impl_store), whose
/// helper functions it uses.
macro_rules! impl_org_store {
    ($store:ident, $db:ty) => {
        const ORG_COLUMNS: &str =
            "id, name, external_id, plan, is_operator, created_at, updated_at, deleted_at, disabled_at, \
             require_mfa, leaked_key_action";
        const ROLE_COLUMNS: &str =
            "id, org_id, name, description, permissions, created_at, updated_at";
        const INVITATION_COLUMNS: &str = "id, org_id, email, role, token_hash, invited_by, \
             created_at, expires_at, accepted_at, accepted_by, canceled_at";

        /// Locks the org's row for the rest of the transaction; false if it is gone.
        async fn lock_org(
            conn: &mut <$db as sqlx::Database>::Connection,
            org_id: &$crate::OrgId,
        ) -> Result<bool, sqlx::Error> {
            let touched = sqlx::query(
                "UPDATE orgs SET updated_at = updated_at WHERE id = $1 AND deleted_at IS NULL",
            )
            .bind(org_id)
            .execute(&mut *conn)
            .await?
            .rows_affected();
            Ok(touched == 1)
        }

        async fn owner_count(
            conn: &mut <$db as sqlx::Database>::Connection,
            org_id: &$crate::OrgId,
        ) -> Result<i64, sqlx::Error> {
            sqlx::query_scalar(
                "SELECT COUNT(*) FROM memberships WHERE org_id = $1 AND role = 'owner'",
            )
            .bind(org_id)
            .fetch_one(&mut *conn)
            .await
        }

        async fn member_role(
            conn: &mut <$db as sqlx::Database>::Connection,
            org_id: &$crate::OrgId,
            user_id: &$crate::UserId,
        ) -> Result<Option<String>, sqlx::Error> {
            sqlx::query_scalar("SELECT role FROM memberships WHERE org_id = $1 AND user_id = $2")
                .bind(org_id)
                .bind(user_id)
                .fetch_optional(&mut *conn)
                .await
        }

        #[async_trait::async_trait]
        impl $crate::OrgStore for $store {
            async fn create_org(
                &self,
                org: &$crate::OrgRecord,
                owner: &$crate::UserId,
                audit: &$crate::AuditRecord,
            ) -> $crate::StoreResult<()> {
                let mut tx = self.pool.begin().await?;
                insert_org(&mut tx, org, owner).await?;
                insert_audit(&mut tx, audit).await?;
                tx.commit().await?;
                Ok(())
            }

            async fn org(&self, org_id: &$crate::OrgId) -> $crate::StoreResult<Option<$crate::OrgRecord>> {
                let sql = format!("SELECT {ORG_COLUMNS} FROM orgs WHERE id = $1 AND deleted_at IS NULL");
                Ok(sqlx::query_as(&sql).bind(org_id).fetch_optional(&self.pool).await?)
            }

            async fn org_by_external_id(&self, external_id: &str) -> $crate::StoreResult<Option<$crate::OrgRecord>> {
                let sql = format!("SELECT {ORG_COLUMNS} FROM orgs WHERE external_id = $1 AND deleted_at IS NULL");
                Ok(sqlx::query_as(&sql).bind(external_id).fetch_optional(&self.pool).await?)
            }

            async fn orgs(&self, after: Option<&str>, search: Option<&str>, limit: i64) -> $crate::StoreResult<Vec<$crate::OrgRecord>> {
                let filter = match search {
                    Some(_) => {
                        use $crate::Dialect;
                        format!(
                            "({} OR {} OR id = $4)",
                            <$db>::contains("name", "$3"),
                            <$db>::contains("COALESCE(external_id, '')", "$3")
                        )
                    }
                    None => "$3 = $4".to_owned(),
                };
                let sql = format!(
                    "SELECT {ORG_COLUMNS} FROM orgs WHERE deleted_at IS NULL AND id > $1 AND {filter} ORDER BY id LIMIT $2"
                );
                Ok(sqlx::query_as(&sql)
                    .bind(after.unwrap_or(""))
                    .bind(limit)
                    .bind(search.map($crate::keys::like_pattern).unwrap_or_default())
                    .bind(search.map(str::trim).unwrap_or_default())
                    .fetch_all(&self.pool)
                    .await?)
            }

            async fn set_org_disabled(
                &self,
                org_id: &$crate::OrgId,
                disabled: bool,
                now: i64,
                audit: &$crate::AuditRecord,
            ) -> $crate::StoreResult<Option<$crate::OrgRecord>> {
                let mut tx = self.pool.begin().await?;
                let sql = format!(
                    "UPDATE orgs SET disabled_at = $1, updated_at = $2 WHERE id = $3 AND deleted_at IS NULL \
                     AND is_operator = $4 RETURNING {ORG_COLUMNS}"
                );
                let updated: Option<$crate::OrgRecord> = sqlx::query_as(&sql)
                    .bind(disabled.then_some(now))
                    .bind(now)
                    .bind(org_id)
                    .bind(false)
                    .fetch_optional(&mut *tx)
                    .await?;
                if updated.is_some() {
                    insert_audit(&mut tx, audit).await?;
                    tx.commit().await?;
                }
                Ok(updated)
            }

            async fn update_org(
                &self,
                org_id: &$crate::OrgId,
                changes: &$crate::OrgChanges,
                now: i64,
                audit: &$crate::AuditRecord,
            ) -> $crate::StoreResult<Option<$crate::OrgRecord>> {
                let mut tx = self.pool.begin().await?;
                let sql = format!(
                    "UPDATE orgs SET name = COALESCE($1, name), \
                     external_id = CASE WHEN $2 THEN $3 ELSE external_id END, updated_at = $4, \
                     require_mfa = COALESCE($6, require_mfa), \
                     leaked_key_action = COALESCE($7, leaked_key_action) \
                     WHERE id = $5 AND deleted_at IS NULL RETURNING {ORG_COLUMNS}"
                );
                let updated: Option<$crate::OrgRecord> = sqlx::query_as(&sql)
                    .bind(&changes.name)
                    .bind(changes.external_id.is_some())
                    .bind(changes.external_id.clone().flatten())
                    .bind(now)
                    .bind(org_id)
                    .bind(changes.require_mfa)
                    .bind(&changes.leaked_key_action)
                    .fetch_optional(&mut *tx)
                    .await?;
                if updated.is_some() {
                    insert_audit(&mut tx, audit).await?;
                }
                tx.commit().await?;
                Ok(updated)
            }

            async fn delete_org(&self, org_id: &$crate::OrgId, now: i64, audit: &$crate::AuditRecord) -> $crate::StoreResult<bool> {
                let mut tx = self.pool.begin().await?;
                let deleted = sqlx::query(
                    "UPDATE orgs SET deleted_at = $1, updated_at = $1, external_id = NULL \
                     WHERE id = $2 AND deleted_at IS NULL AND NOT is_operator",
                )
                .bind(now)
                .bind(org_id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if deleted == 0 {
                    return Ok(false);
                }
                sqlx::query(
                    "UPDATE invitations SET canceled_at = $1 \
                     WHERE org_id = $2 AND accepted_at IS NULL AND canceled_at IS NULL",
                )
                .bind(now)
                .bind(org_id)
                .execute(&mut *tx)
                .await?;
                sqlx::query("UPDATE api_keys SET revoked_at = $1, updated_at = $1 WHERE org_id = $2 AND revoked_at IS NULL")
                    .bind(now)
                    .bind(org_id)
                    .execute(&mut *tx)
                    .await?;
                insert_audit(&mut tx, audit).await?;
                tx.commit().await?;
                Ok(true)
            }

            async fn members(
                &self,
                org_id: &$crate::OrgId,
                after: Option<&str>,
                limit: i64,
            ) -> $crate::StoreResult<Vec<$crate::MemberRecord>> {
                Ok(sqlx::query_as(
                    "SELECT m.user_id, u.email, u.name, m.role, m.created_at, \
                     (EXISTS (SELECT 1 FROM totp_factors t WHERE t.user_id = m.user_id \
                     AND t.confirmed_at IS NOT NULL) \
                     OR EXISTS (SELECT 1 FROM passkeys p WHERE p.user_id = m.user_id)) AS second_factor \
                     FROM memberships m JOIN users u ON u.id = m.user_id \
                     WHERE m.org_id = $1 AND m.user_id > $2 ORDER BY m.user_id LIMIT $3",
                )
                .bind(org_id)
                .bind(after.unwrap_or(""))
                .bind(limit)
                .fetch_all(&self.pool)
                .await?)
            }

            async fn change_member_role(
                &self,
                org_id: &$crate::OrgId,
                user_id: &$crate::UserId,
                role: &str,
                audit: &$crate::AuditRecord,
            ) -> $crate::StoreResult<$crate::MemberChange> {
                let mut tx = self.pool.begin().await?;
                if !lock_org(&mut tx, org_id).await? {
                    return Ok($crate::MemberChange::NotFound);
                }
                let Some(current) = member_role(&mut tx, org_id, user_id).await? else {
                    return Ok($crate::MemberChange::NotFound);
                };
                if current == "owner" && role != "owner" && owner_count(&mut tx, org_id).await? <= 1 {
                    return Ok($crate::MemberChange::LastOwner);
                }
                sqlx::query("UPDATE memberships SET role = $1 WHERE org_id = $2 AND user_id = $3")
                    .bind(role)
                    .bind(org_id)
                    .bind(user_id)
                    .execute(&mut *tx)
                    .await?;
                insert_audit(&mut tx, audit).await?;
                tx.commit().await?;
                Ok($crate::MemberChange::Done)
            }

            async fn remove_member(
                &self,
                org_id: &$crate::OrgId,
                user_id: &$crate::UserId,
                audit: &$crate::AuditRecord,
            ) -> $crate::StoreResult<$crate::MemberChange> {
                let mut tx = self.pool.begin().await?;
                if !lock_org(&mut tx, org_id).await? {
                    return Ok($crate::MemberChange::NotFound);
                }
                let Some(current) = member_role(&mut tx, org_id, user_id).await? else {
                    return Ok($crate::MemberChange::NotFound);
                };
                if current == "owner" && owner_count(&mut tx, org_id).await? <= 1 {
                    return Ok($crate::MemberChange::LastOwner);
                }
                sqlx::query("DELETE FROM memberships WHERE org_id = $1 AND user_id = $2")
                    .bind(org_id)
                    .bind(user_id)
                    .execute(&mut *tx)
                    .await?;
                // sessions acting in the org fall back to no active org
                sqlx::query(
                    "UPDATE sessions SET active_org_id = NULL WHERE user_id = $1 AND active_org_id = $2",
                )
                .bind(user_id)
                .bind(org_id)
                .execute(&mut *tx)
                .await?;
                insert_audit(&mut tx, audit).await?;
                tx.commit().await?;
                Ok($crate::MemberChange::Done)
            }

            async fn roles(&self, org_id: &$crate::OrgId) -> $crate::StoreResult<Vec<$crate::RoleRecord>> {
                let sql = format!("SELECT {ROLE_COLUMNS} FROM roles WHERE org_id = $1 ORDER BY name");
                Ok(sqlx::query_as(&sql).bind(org_id).fetch_all(&self.pool).await?)
            }

            async fn role(&self, org_id: &$crate::OrgId, role_id: &$crate::RoleId) -> $crate::StoreResult<Option<$crate::RoleRecord>> {
                let sql = format!("SELECT {ROLE_COLUMNS} FROM roles WHERE org_id = $1 AND id = $2");
                Ok(sqlx::query_as(&sql).bind(org_id).bind(role_id).fetch_optional(&self.pool).await?)
            }

            async fn create_role(&self, role: &$crate::RoleRecord, audit: &$crate::AuditRecord) -> $crate::StoreResult<()> {
                let mut tx = self.pool.begin().await?;
                sqlx::query(
                    "INSERT INTO roles (id, org_id, name, description, permissions, created_at, updated_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7)",
                )
                .bind(&role.id)
                .bind(&role.org_id)
                .bind(&role.name)
                .bind(&role.description)
                .bind(&role.permissions)
                .bind(role.created_at)
                .bind(role.updated_at)
                .execute(&mut *tx)
                .await?;
                insert_audit(&mut tx, audit).await?;
                tx.commit().await?;
                Ok(())
            }

            async fn update_role(
                &self,
                role: &$crate::RoleRecord,
                audit: &$crate::AuditRecord,
            ) -> $crate::StoreResult<Option<$crate::RoleRecord>> {
                let mut tx = self.pool.begin().await?;
                if !lock_org(&mut tx, &role.org_id).await? {
                    return Ok(None);
                }
                let old_name: Option<String> =
                    sqlx::query_scalar("SELECT name FROM roles WHERE org_id = $1 AND id = $2")
                        .bind(&role.org_id)
                        .bind(&role.id)
                        .fetch_optional(&mut *tx)
                        .await?;
                let Some(old_name) = old_name else {
                    return Ok(None);
                };
                let sql = format!(
                    "UPDATE roles SET name = $1, description = $2, permissions = $3, updated_at = $4 \
                     WHERE org_id = $5 AND id = $6 RETURNING {ROLE_COLUMNS}"
                );
                let updated: $crate::RoleRecord = sqlx::query_as(&sql)
                    .bind(&role.name)
                    .bind(&role.description)
                    .bind(&role.permissions)
                    .bind(role.updated_at)
                    .bind(&role.org_id)
                    .bind(&role.id)
                    .fetch_one(&mut *tx)
                    .await?;
                if old_name != role.name {
                    for table in ["memberships", "invitations"] {
                        sqlx::query(&format!("UPDATE {table} SET role = $1 WHERE org_id = $2 AND role = $3"))
                            .bind(&role.name)
                            .bind(&role.org_id)
                            .bind(&old_name)
                            .execute(&mut *tx)
                            .await?;
                    }
                }
                insert_audit(&mut tx, audit).await?;
                tx.commit().await?;
                Ok(Some(updated))
            }

            async fn delete_role(
                &self,
                org_id: &$crate::OrgId,
                role_id: &$crate::RoleId,
                audit: &$crate::AuditRecord,
            ) -> $crate::StoreResult<$crate::RoleDeletion> {
                let mut tx = self.pool.begin().await?;
                if !lock_org(&mut tx, org_id).await? {
                    return Ok($crate::RoleDeletion::NotFound);
                }
                let name: Option<String> =
                    sqlx::query_scalar("SELECT name FROM roles WHERE org_id = $1 AND id = $2")
                        .bind(org_id)
                        .bind(role_id)
                        .fetch_optional(&mut *tx)
                        .await?;
                let Some(name) = name else {
                    return Ok($crate::RoleDeletion::NotFound);
                };
                let holders: i64 = sqlx::query_scalar(
                    "SELECT (SELECT COUNT(*) FROM memberships WHERE org_id = $1 AND role = $2) + \
                     (SELECT COUNT(*) FROM invitations WHERE org_id = $1 AND role = $2 \
                      AND accepted_at IS NULL AND canceled_at IS NULL)",
                )
                .bind(org_id)
                .bind(&name)
                .fetch_one(&mut *tx)
                .await?;
                if holders > 0 {
                    return Ok($crate::RoleDeletion::InUse);
                }
                sqlx::query("DELETE FROM roles WHERE org_id = $1 AND id = $2")
                    .bind(org_id)
                    .bind(role_id)
                    .execute(&mut *tx)
                    .await?;
                insert_audit(&mut tx, audit).await?;
                tx.commit().await?;
                Ok($crate::RoleDeletion::Deleted)
            }

            async fn create_invitation(
                &self,
                inv: &$crate::InvitationRecord,
                audit: &$crate::AuditRecord,
            ) -> $crate::StoreResult<()> {
                let mut tx = self.pool.begin().await?;
                sqlx::query(
                    "UPDATE invitations SET canceled_at = $1 WHERE org_id = $2 AND email = $3 \
                     AND accepted_at IS NULL AND canceled_at IS NULL AND expires_at <= $1",
                )
                .bind(inv.created_at)
                .bind(&inv.org_id)
                .bind(&inv.email)
                .execute(&mut *tx)
                .await?;
                sqlx::query(
                    "INSERT INTO invitations (id, org_id, email, role, token_hash, invited_by, created_at, expires_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                )
                .bind(&inv.id)
                .bind(&inv.org_id)
                .bind(&inv.email)
                .bind(&inv.role)
                .bind(&inv.token_hash)
                .bind(&inv.invited_by)
                .bind(inv.created_at)
                .bind(inv.expires_at)
                .execute(&mut *tx)
                .await?;
                insert_audit(&mut tx, audit).await?;
                tx.commit().await?;
                Ok(())
            }

            async fn open_invitations(
                &self,
                org_id: &$crate::OrgId,
                now: i64,
                after: Option<&str>,
                limit: i64,
            ) -> $crate::StoreResult<Vec<$crate::InvitationRecord>> {
                let sql = format!(
                    "SELECT {INVITATION_COLUMNS} FROM invitations WHERE org_id = $1 \
                     AND accepted_at IS NULL AND canceled_at IS NULL AND expires_at > $2 \
                     AND id > $3 ORDER BY id LIMIT $4"
                );
                Ok(sqlx::query_as(&sql)
                    .bind(org_id)
                    .bind(now)
                    .bind(after.unwrap_or(""))
                    .bind(limit)
                    .fetch_all(&self.pool)
                    .await?)
            }

            async fn invitation_by_token(&self, token_hash: &str) -> $crate::StoreResult<Option<$crate::InvitationRecord>> {
                let sql = format!("SELECT {INVITATION_COLUMNS} FROM invitations WHERE token_hash = $1");
                Ok(sqlx::query_as(&sql).bind(token_hash).fetch_optional(&self.pool).await?)
            }

            async fn reissue_invitation(
                &self,
                org_id: &$crate::OrgId,
                invitation_id: &$crate::InvitationId,
                token_hash: &str,
                expires_at: i64,
                audit: &$crate::AuditRecord,
            ) -> $crate::StoreResult<Option<$crate::InvitationRecord>> {
                let mut tx = self.pool.begin().await?;
                let sql = format!(
                    "UPDATE invitations SET token_hash = $1, expires_at = $2 WHERE org_id = $3 \
                     AND id = $4 AND accepted_at IS NULL AND canceled_at IS NULL RETURNING {INVITATION_COLUMNS}"
                );
                let updated: Option<$crate::InvitationRecord> = sqlx::query_as(&sql)
                    .bind(token_hash)
                    .bind(expires_at)
                    .bind(org_id)
                    .bind(invitation_id)
                    .fetch_optional(&mut *tx)
                    .await?;
                if updated.is_some() {
                    insert_audit(&mut tx, audit).await?;
                    tx.commit().await?;
                }
                Ok(updated)
            }

            async fn cancel_invitation(
                &self,
                org_id: &$crate::OrgId,
                invitation_id: &$crate::InvitationId,
                now: i64,
                audit: &$crate::AuditRecord,
            ) -> $crate::StoreResult<bool> {
                let mut tx = self.pool.begin().await?;
                let canceled = sqlx::query(
                    "UPDATE invitations SET canceled_at = $1 WHERE org_id = $2 AND id = $3 \
                     AND accepted_at IS NULL AND canceled_at IS NULL",
                )
                .bind(now)
                .bind(org_id)
                .bind(invitation_id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if canceled == 0 {
                    return Ok(false);
                }
                insert_audit(&mut tx, audit).await?;
                tx.commit().await?;
                Ok(true)
            }

            async fn accept_invitation(
                &self,
                invitation_id: &$crate::InvitationId,
                user_id: &$crate::UserId,
                now: i64,
                audit: &$crate::AuditRecord,
            ) -> $crate::StoreResult<$crate::Acceptance> {
                let mut tx = self.pool.begin().await?;
                let accepted: Option<($crate::OrgId, String)> = sqlx::query_as(
                    "UPDATE invitations SET accepted_at = $1, accepted_by = $2 \
                     WHERE id = $3 AND accepted_at IS NULL AND canceled_at IS NULL AND expires_at > $1 \
                     AND EXISTS (SELECT 1 FROM orgs WHERE orgs.id = invitations.org_id AND orgs.deleted_at IS NULL) \
                     RETURNING org_id, role",
                )
                .bind(now)
                .bind(user_id)
                .bind(invitation_id)
                .fetch_optional(&mut *tx)
                .await?;
                let Some((org_id, role)) = accepted else {
                    return Ok($crate::Acceptance::Gone);
                };
                if member_role(&mut tx, &org_id, user_id).await?.is_some() {
                    return Ok($crate::Acceptance::AlreadyMember);
                }
                sqlx::query("INSERT INTO memberships (org_id, user_id, role, created_at) VALUES ($1, $2, $3, $4)")
                    .bind(&org_id)
                    .bind(user_id)
                    .bind(&role)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                insert_audit(&mut tx, audit).await?;
                tx.commit().await?;
                Ok($crate::Acceptance::Joined)
            }
        }
    };
}

pub(crate) use impl_org_store;
