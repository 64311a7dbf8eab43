//! The one implementation of [`Store`](crate::Store), written once and expanded for each
//! backend's pool type: both dialects accept the same SQL (`$n` parameters, `RETURNING`,
//! `ON CONFLICT`, partial indexes), so only connection set-up and migrations differ.

/// Expands `impl Store for $store`, where `$store` has a `pool: sqlx::Pool<$db>` field and a
/// `MIGRATOR` constant.
macro_rules! impl_store {
    ($store:ident, $db:ty, $name:literal) => {
        async fn insert_audit(
            conn: &mut <$db as sqlx::Database>::Connection,
            a: &$crate::AuditRecord,
        ) -> Result<(), sqlx::Error> {
            sqlx::query(
                "INSERT INTO audit_log (id, org_id, actor_type, actor_id, action, target_type, \
                 target_id, ip, user_agent, data, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
            )
            .bind(&a.id)
            .bind(&a.org_id)
            .bind(&a.actor_type)
            .bind(&a.actor_id)
            .bind(&a.action)
            .bind(&a.target_type)
            .bind(&a.target_id)
            .bind(&a.ip)
            .bind(&a.user_agent)
            .bind(&a.data)
            .bind(a.created_at)
            .execute(&mut *conn)
            .await?;
            // the change's webhook event, in the same transaction (only when an endpoint could
            // want it: the org's, or an operator's for every org)
            if let Some((kind, payload)) = $crate::webhooks::outbox_event(a) {
                sqlx::query(
                    "INSERT INTO webhook_events (id, org_id, event_type, payload, created_at) \
                     SELECT $1, $2, $3, $4, $5 WHERE EXISTS (SELECT 1 FROM webhook_endpoints \
                     WHERE (org_id = $2 OR all_orgs) AND deleted_at IS NULL)",
                )
                .bind(&a.id)
                .bind(&a.org_id)
                .bind(kind)
                .bind(payload)
                .bind(a.created_at)
                .execute(&mut *conn)
                .await?;
            }
            Ok(())
        }

        async fn insert_org(
            conn: &mut <$db as sqlx::Database>::Connection,
            org: &$crate::OrgRecord,
            owner: &$crate::UserId,
        ) -> Result<(), sqlx::Error> {
            sqlx::query(
                "INSERT INTO orgs (id, name, external_id, plan, is_operator, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(&org.id)
            .bind(&org.name)
            .bind(&org.external_id)
            .bind(&org.plan)
            .bind(org.is_operator)
            .bind(org.created_at)
            .bind(org.updated_at)
            .execute(&mut *conn)
            .await?;
            sqlx::query(
                "INSERT INTO memberships (org_id, user_id, role, created_at) VALUES ($1, $2, 'owner', $3)",
            )
            .bind(&org.id)
            .bind(owner)
            .bind(org.created_at)
            .execute(&mut *conn)
            .await?;
            Ok(())
        }

        async fn insert_user(
            conn: &mut <$db as sqlx::Database>::Connection,
            u: &$crate::UserRecord,
        ) -> Result<(), sqlx::Error> {
            sqlx::query(
                "INSERT INTO users (id, email, name, password_hash, email_verified_at, created_at, updated_at, \
                 username, document) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            )
            .bind(&u.id)
            .bind(&u.email)
            .bind(&u.name)
            .bind(&u.password_hash)
            .bind(u.email_verified_at)
            .bind(u.created_at)
            .bind(u.updated_at)
            .bind(&u.username)
            .bind(&u.document)
            .execute(&mut *conn)
            .await?;
            Ok(())
        }

        /// A new session with its first refresh token and the audit entry of its login.
        async fn insert_session(
            conn: &mut <$db as sqlx::Database>::Connection,
            s: &$crate::SessionRecord,
            refresh: &$crate::RefreshTokenRecord,
            audit: &$crate::AuditRecord,
        ) -> Result<(), sqlx::Error> {
            sqlx::query(
                "INSERT INTO sessions (id, user_id, active_org_id, user_agent, ip, created_at, last_used_at, \
                 expires_at, authenticated_at, amr) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
            )
            .bind(&s.id)
            .bind(&s.user_id)
            .bind(&s.active_org_id)
            .bind(&s.user_agent)
            .bind(&s.ip)
            .bind(s.created_at)
            .bind(s.last_used_at)
            .bind(s.expires_at)
            .bind(s.authenticated_at)
            .bind(&s.amr)
            .execute(&mut *conn)
            .await?;
            insert_refresh_token(&mut *conn, refresh).await?;
            insert_audit(&mut *conn, audit).await?;
            Ok(())
        }

        async fn insert_refresh_token(
            conn: &mut <$db as sqlx::Database>::Connection,
            r: &$crate::RefreshTokenRecord,
        ) -> Result<(), sqlx::Error> {
            sqlx::query(
                "INSERT INTO refresh_tokens (token_hash, session_id, generation, issued_at, expires_at) \
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(&r.token_hash)
            .bind(&r.session_id)
            .bind(r.generation)
            .bind(r.issued_at)
            .bind(r.expires_at)
            .execute(&mut *conn)
            .await?;
            Ok(())
        }

        /// Spends a one-time token of `purpose`; its user's id if it was live.
        async fn spend_one_time_token(
            conn: &mut <$db as sqlx::Database>::Connection,
            token_hash: &str,
            purpose: &str,
            now: i64,
        ) -> Result<Option<$crate::UserId>, sqlx::Error> {
            sqlx::query_scalar(
                "UPDATE one_time_tokens SET used_at = $1 \
                 WHERE token_hash = $2 AND purpose = $3 AND used_at IS NULL AND expires_at > $1 \
                 RETURNING user_id",
            )
            .bind(now)
            .bind(token_hash)
            .bind(purpose)
            .fetch_optional(&mut *conn)
            .await
        }

        fn user_event(
            user_id: &$crate::UserId,
            action: &str,
            now: i64,
            meta: &$crate::AuditMeta,
        ) -> $crate::AuditRecord {
            $crate::AuditRecord {
                id: $crate::EventId::generate(),
                org_id: None,
                actor_type: fluxgate_core::stored::ActorKind::User,
                actor_id: Some(user_id.to_string()),
                action: action.into(),
                target_type: Some("user".into()),
                target_id: Some(user_id.to_string()),
                ip: meta.ip.clone(),
                user_agent: meta.user_agent.clone(),
                data: "{}".into(),
                created_at: now,
            }
        }

        const USER_COLUMNS: &str =
            "id, email, name, password_hash, email_verified_at, created_at, updated_at, username, document";
        const SESSION_COLUMNS: &str = "id, user_id, active_org_id, user_agent, ip, created_at, \
             last_used_at, expires_at, revoked_at, revoked_reason, authenticated_at, amr";
        const MEMBERSHIP_SELECT: &str = "SELECT m.org_id, o.name AS org_name, o.is_operator, \
             m.user_id, m.role, m.created_at FROM memberships m JOIN orgs o ON o.id = m.org_id \
             WHERE o.deleted_at IS NULL";

        #[async_trait::async_trait]
        impl $crate::Store for $store {
            fn backend(&self) -> &'static str {
                $name
            }

            async fn migrate(&self) -> $crate::StoreResult<()> {
                MIGRATOR.run(&self.pool).await?;
                Ok(())
            }

            async fn ping(&self) -> $crate::StoreResult<()> {
                sqlx::query("SELECT 1").execute(&self.pool).await?;
                Ok(())
            }

            async fn close(&self) {
                self.pool.close().await;
            }

            async fn create_user(
                &self,
                user: &$crate::UserRecord,
                org: Option<&$crate::OrgRecord>,
                audit: &[$crate::AuditRecord],
            ) -> $crate::StoreResult<()> {
                let mut tx = self.pool.begin().await?;
                insert_user(&mut tx, user).await?;
                if let Some(org) = org {
                    insert_org(&mut tx, org, &user.id).await?;
                }
                for entry in audit {
                    insert_audit(&mut tx, entry).await?;
                }
                tx.commit().await?;
                Ok(())
            }

            async fn bootstrap_operator(
                &self,
                user: &$crate::UserRecord,
                org: &$crate::OrgRecord,
                audit: &$crate::AuditRecord,
            ) -> $crate::StoreResult<()> {
                let mut tx = self.pool.begin().await?;
                insert_user(&mut tx, user).await?;
                insert_org(&mut tx, org, &user.id).await?;
                insert_audit(&mut tx, audit).await?;
                tx.commit().await?;
                Ok(())
            }

            async fn operator_org_id(&self) -> $crate::StoreResult<Option<$crate::OrgId>> {
                Ok(sqlx::query_scalar("SELECT id FROM orgs WHERE is_operator")
                    .fetch_optional(&self.pool)
                    .await?)
            }

            async fn user_by_login(
                &self,
                kind: $crate::LoginKind,
                value: &str,
            ) -> $crate::StoreResult<Option<$crate::UserRecord>> {
                let column = match kind {
                    $crate::LoginKind::Email => "email",
                    $crate::LoginKind::Username => "username",
                    $crate::LoginKind::Document => "document",
                };
                let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE {column} = $1");
                Ok(sqlx::query_as(&sql).bind(value).fetch_optional(&self.pool).await?)
            }

            async fn user_by_id(&self, id: &$crate::UserId) -> $crate::StoreResult<Option<$crate::UserRecord>> {
                let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1");
                Ok(sqlx::query_as(&sql).bind(id).fetch_optional(&self.pool).await?)
            }

            async fn memberships_of_user(&self, user_id: &$crate::UserId) -> $crate::StoreResult<Vec<$crate::MembershipRecord>> {
                let sql = format!("{MEMBERSHIP_SELECT} AND m.user_id = $1 ORDER BY m.created_at, m.org_id");
                Ok(sqlx::query_as(&sql).bind(user_id).fetch_all(&self.pool).await?)
            }

            async fn membership(&self, org_id: &$crate::OrgId, user_id: &$crate::UserId) -> $crate::StoreResult<Option<$crate::MembershipRecord>> {
                let sql = format!("{MEMBERSHIP_SELECT} AND m.org_id = $1 AND m.user_id = $2");
                Ok(sqlx::query_as(&sql).bind(org_id).bind(user_id).fetch_optional(&self.pool).await?)
            }

            async fn custom_role_permissions(&self, org_id: &$crate::OrgId, role: &str) -> $crate::StoreResult<Option<Vec<String>>> {
                let text: Option<String> =
                    sqlx::query_scalar("SELECT permissions FROM roles WHERE org_id = $1 AND name = $2")
                        .bind(org_id)
                        .bind(role)
                        .fetch_optional(&self.pool)
                        .await?;
                Ok(text.map(|t| serde_json::from_str(&t).unwrap_or_default()))
            }

            async fn insert_one_time_token(&self, t: &$crate::OneTimeTokenRecord) -> $crate::StoreResult<()> {
                sqlx::query(
                    "INSERT INTO one_time_tokens (token_hash, purpose, user_id, created_at, expires_at) \
                     VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(&t.token_hash)
                .bind(&t.purpose)
                .bind(&t.user_id)
                .bind(t.created_at)
                .bind(t.expires_at)
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn verify_email(&self, token_hash: &str, now: i64, meta: $crate::AuditMeta) -> $crate::StoreResult<Option<$crate::UserId>> {
                let mut tx = self.pool.begin().await?;
                let Some(user_id) = spend_one_time_token(&mut tx, token_hash, $crate::PURPOSE_VERIFY_EMAIL, now).await? else {
                    return Ok(None);
                };
                sqlx::query("UPDATE users SET email_verified_at = COALESCE(email_verified_at, $1), updated_at = $1 WHERE id = $2")
                    .bind(now)
                    .bind(&user_id)
                    .execute(&mut *tx)
                    .await?;
                insert_audit(&mut tx, &user_event(&user_id, "user.email_verified", now, &meta)).await?;
                tx.commit().await?;
                Ok(Some(user_id))
            }

            async fn rename_user(
                &self,
                user_id: &$crate::UserId,
                name: Option<&str>,
                now: i64,
                audit: &$crate::AuditRecord,
            ) -> $crate::StoreResult<()> {
                let mut tx = self.pool.begin().await?;
                sqlx::query("UPDATE users SET name = $1, updated_at = $2 WHERE id = $3")
                    .bind(name)
                    .bind(now)
                    .bind(user_id)
                    .execute(&mut *tx)
                    .await?;
                insert_audit(&mut tx, audit).await?;
                tx.commit().await?;
                Ok(())
            }

            async fn change_password(
                &self,
                user_id: &$crate::UserId,
                password_hash: &str,
                keep: &$crate::SessionId,
                now: i64,
                audit: &$crate::AuditRecord,
            ) -> $crate::StoreResult<u64> {
                let mut tx = self.pool.begin().await?;
                sqlx::query("UPDATE users SET password_hash = $1, updated_at = $2 WHERE id = $3")
                    .bind(password_hash)
                    .bind(now)
                    .bind(user_id)
                    .execute(&mut *tx)
                    .await?;
                let ended = sqlx::query(
                    "UPDATE sessions SET revoked_at = $1, revoked_reason = $2 \
                     WHERE user_id = $3 AND id <> $4 AND revoked_at IS NULL",
                )
                .bind(now)
                .bind(fluxgate_core::stored::EndReason::PasswordChanged)
                .bind(user_id)
                .bind(keep)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                insert_audit(&mut tx, audit).await?;
                tx.commit().await?;
                Ok(ended)
            }

            async fn reset_password(
                &self,
                token_hash: &str,
                password_hash: &str,
                now: i64,
                meta: $crate::AuditMeta,
            ) -> $crate::StoreResult<Option<$crate::UserId>> {
                let mut tx = self.pool.begin().await?;
                let Some(user_id) = spend_one_time_token(&mut tx, token_hash, $crate::PURPOSE_RESET_PASSWORD, now).await? else {
                    return Ok(None);
                };
                sqlx::query(
                    "UPDATE users SET password_hash = $1, email_verified_at = COALESCE(email_verified_at, $2), \
                     updated_at = $2 WHERE id = $3",
                )
                .bind(password_hash)
                .bind(now)
                .bind(&user_id)
                .execute(&mut *tx)
                .await?;
                sqlx::query(
                    "UPDATE sessions SET revoked_at = $1, revoked_reason = $2 \
                     WHERE user_id = $3 AND revoked_at IS NULL",
                )
                .bind(now)
                .bind(fluxgate_core::stored::EndReason::PasswordReset)
                .bind(&user_id)
                .execute(&mut *tx)
                .await?;
                insert_audit(&mut tx, &user_event(&user_id, "user.password_reset", now, &meta)).await?;
                tx.commit().await?;
                Ok(Some(user_id))
            }

            async fn create_session(
                &self,
                s: &$crate::SessionRecord,
                refresh: &$crate::RefreshTokenRecord,
                audit: &$crate::AuditRecord,
            ) -> $crate::StoreResult<()> {
                let mut tx = self.pool.begin().await?;
                insert_session(&mut tx, s, refresh, audit).await?;
                tx.commit().await?;
                Ok(())
            }

            async fn confirm_session(
                &self,
                session_id: &$crate::SessionId,
                now: i64,
                audit: &$crate::AuditRecord,
            ) -> $crate::StoreResult<bool> {
                let mut tx = self.pool.begin().await?;
                let touched = sqlx::query(
                    "UPDATE sessions SET authenticated_at = $1 WHERE id = $2 AND revoked_at IS NULL",
                )
                .bind(now)
                .bind(session_id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if touched == 0 {
                    return Ok(false);
                }
                insert_audit(&mut tx, audit).await?;
                tx.commit().await?;
                Ok(true)
            }

            async fn session(&self, id: &$crate::SessionId) -> $crate::StoreResult<Option<$crate::SessionRecord>> {
                let sql = format!("SELECT {SESSION_COLUMNS} FROM sessions WHERE id = $1");
                Ok(sqlx::query_as(&sql).bind(id).fetch_optional(&self.pool).await?)
            }

            async fn active_sessions(&self, user_id: &$crate::UserId, now: i64) -> $crate::StoreResult<Vec<$crate::SessionRecord>> {
                let sql = format!(
                    "SELECT {SESSION_COLUMNS} FROM sessions WHERE user_id = $1 AND revoked_at IS NULL \
                     AND expires_at > $2 ORDER BY created_at DESC, id DESC"
                );
                Ok(sqlx::query_as(&sql).bind(user_id).bind(now).fetch_all(&self.pool).await?)
            }

            async fn revoke_session(
                &self,
                user_id: &$crate::UserId,
                session_id: &$crate::SessionId,
                reason: fluxgate_core::stored::EndReason,
                now: i64,
                audit: &$crate::AuditRecord,
            ) -> $crate::StoreResult<bool> {
                let mut tx = self.pool.begin().await?;
                let done = sqlx::query(
                    "UPDATE sessions SET revoked_at = $1, revoked_reason = $2 \
                     WHERE id = $3 AND user_id = $4 AND revoked_at IS NULL",
                )
                .bind(now)
                .bind(reason)
                .bind(session_id)
                .bind(user_id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if done == 0 {
                    return Ok(false);
                }
                insert_audit(&mut tx, audit).await?;
                tx.commit().await?;
                Ok(true)
            }

            async fn revoked_sessions_since(&self, since: i64) -> $crate::StoreResult<Vec<($crate::SessionId, i64)>> {
                Ok(sqlx::query_as("SELECT id, revoked_at FROM sessions WHERE revoked_at >= $1")
                    .bind(since)
                    .fetch_all(&self.pool)
                    .await?)
            }

            async fn refresh_token(&self, token_hash: &str) -> $crate::StoreResult<Option<$crate::RefreshTokenRecord>> {
                Ok(sqlx::query_as(
                    "SELECT token_hash, session_id, generation, issued_at, expires_at, spent_at, spent_reason \
                     FROM refresh_tokens WHERE token_hash = $1",
                )
                .bind(token_hash)
                .fetch_optional(&self.pool)
                .await?)
            }

            async fn rotate_refresh_token(
                &self,
                old_hash: &str,
                next: &$crate::RefreshTokenRecord,
                now: i64,
            ) -> $crate::StoreResult<bool> {
                let mut tx = self.pool.begin().await?;
                let spent = sqlx::query(
                    "UPDATE refresh_tokens SET spent_at = $1, spent_reason = $2 \
                     WHERE token_hash = $3 AND spent_at IS NULL",
                )
                .bind(now)
                .bind(fluxgate_core::refresh::SpentReason::Rotated)
                .bind(old_hash)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if spent == 0 {
                    return Ok(false);
                }
                insert_refresh_token(&mut tx, next).await?;
                sqlx::query("UPDATE sessions SET last_used_at = $1, expires_at = $2 WHERE id = $3")
                    .bind(now)
                    .bind(next.expires_at)
                    .bind(&next.session_id)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(true)
            }

            async fn switch_session_org(
                &self,
                session_id: &$crate::SessionId,
                org_id: &$crate::OrgId,
                next: &$crate::RefreshTokenRecord,
                now: i64,
            ) -> $crate::StoreResult<()> {
                let mut tx = self.pool.begin().await?;
                sqlx::query(
                    "UPDATE refresh_tokens SET spent_at = $1, spent_reason = $2 \
                     WHERE session_id = $3 AND spent_at IS NULL",
                )
                .bind(now)
                .bind(fluxgate_core::refresh::SpentReason::Superseded)
                .bind(session_id)
                .execute(&mut *tx)
                .await?;
                insert_refresh_token(&mut tx, next).await?;
                sqlx::query("UPDATE sessions SET active_org_id = $1, last_used_at = $2, expires_at = $3 WHERE id = $4")
                    .bind(org_id)
                    .bind(now)
                    .bind(next.expires_at)
                    .bind(session_id)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(())
            }

            async fn signing_keys(&self) -> $crate::StoreResult<Vec<$crate::SigningKeyRecord>> {
                Ok(sqlx::query_as(
                    "SELECT kid, algorithm, public_key, private_key_encrypted, created_at, retired_at \
                     FROM signing_keys ORDER BY created_at DESC, kid DESC",
                )
                .fetch_all(&self.pool)
                .await?)
            }

            async fn add_signing_key(&self, key: &$crate::SigningKeyRecord, audit: &$crate::AuditRecord) -> $crate::StoreResult<()> {
                let mut tx = self.pool.begin().await?;
                sqlx::query("UPDATE signing_keys SET retired_at = $1 WHERE retired_at IS NULL")
                    .bind(key.created_at)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query(
                    "INSERT INTO signing_keys (kid, algorithm, public_key, private_key_encrypted, created_at) \
                     VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(&key.kid)
                .bind(&key.algorithm)
                .bind(&key.public_key)
                .bind(&key.private_key_encrypted)
                .bind(key.created_at)
                .execute(&mut *tx)
                .await?;
                insert_audit(&mut tx, audit).await?;
                tx.commit().await?;
                Ok(())
            }

            async fn append_audit(&self, entries: &[$crate::AuditRecord]) -> $crate::StoreResult<()> {
                let mut tx = self.pool.begin().await?;
                for entry in entries {
                    insert_audit(&mut tx, entry).await?;
                }
                tx.commit().await?;
                Ok(())
            }

            async fn audit_entries(&self, f: &$crate::AuditFilter) -> $crate::StoreResult<Vec<$crate::AuditRecord>> {
                Ok(sqlx::query_as(
                    "SELECT id, org_id, actor_type, actor_id, action, target_type, target_id, ip, \
                     user_agent, data, created_at FROM audit_log \
                     WHERE ($1 IS NULL OR org_id = $1) AND ($2 IS NULL OR actor_id = $2) \
                     AND ($3 IS NULL OR action = $3) AND ($4 IS NULL OR created_at >= $4) \
                     AND ($5 IS NULL OR created_at < $5) AND ($6 IS NULL OR id < $6) \
                     ORDER BY id DESC LIMIT $7",
                )
                .bind(&f.org_id)
                .bind(&f.actor_id)
                .bind(&f.action)
                .bind(f.from)
                .bind(f.to)
                .bind(&f.before_id)
                .bind(f.limit)
                .fetch_all(&self.pool)
                .await?)
            }
        }
    };
}

pub(crate) use impl_store;
