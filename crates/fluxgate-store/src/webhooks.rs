//! Webhooks: the [`WebhookStore`] trait (endpoints, the event outbox, deliveries and their
//! log) and its one SQL implementation, expanded for each backend like [`KeyStore`](crate::KeyStore)'s.
//! Events enter the outbox with the audit entry of their change ([`outbox_event`]), so a change
//! and its event are written together or not at all.

use crate::records::*;
use crate::StoreResult;
use crate::{DeliveryId, OrgId, WebhookId};
use async_trait::async_trait;
use serde_json::{json, Value};

/// The event an audited action is announced as, if any.
pub fn event_type(action: &str) -> Option<&'static str> {
    Some(match action {
        "key.created" => "key.created",
        "key.rotated" => "key.rotated",
        "key.revoked" => "key.revoked",
        "key.leaked" => "key.leaked",
        "member.joined" => "member.added",
        "member.removed" | "member.left" => "member.removed",
        _ => return None,
    })
}

/// Every event type an endpoint may subscribe to.
pub const EVENT_TYPES: &[&str] = &[
    "key.created",
    "key.rotated",
    "key.revoked",
    "key.leaked",
    "key.expiring",
    "key.expired",
    "quota.threshold",
    "credits.exhausted",
    "member.added",
    "member.removed",
];

/// The outbox row of an audited change, when it is an event of an org: `(type, payload)`.
pub(crate) fn outbox_event(audit: &AuditRecord) -> Option<(&'static str, String)> {
    let kind = event_type(&audit.action)?;
    let org = audit.org_id.as_ref()?;
    let data: Value = serde_json::from_str(&audit.data).unwrap_or(Value::Null);
    let payload = json!({
        "id": audit.id,
        "type": kind,
        "created": audit.created_at,
        "org_id": org,
        "object": audit.target_type.as_ref().map(|t| json!({ "type": t, "id": audit.target_id })),
        "data": data,
    });
    Some((kind, payload.to_string()))
}

/// Storage of webhooks. Deliveries are claimed for a while (a lease) so that nodes never send
/// one twice at once, and only the oldest pending delivery of an endpoint is ever claimable, so
/// each endpoint gets its events in order.
#[async_trait]
pub trait WebhookStore: Send + Sync {
    /// Stores a new endpoint.
    async fn create_webhook(
        &self,
        endpoint: &WebhookEndpointRecord,
        audit: &AuditRecord,
    ) -> StoreResult<()>;
    /// An org's endpoints (not deleted), oldest first.
    async fn webhooks(&self, org_id: &OrgId) -> StoreResult<Vec<WebhookEndpointRecord>>;
    /// One endpoint of an org (not deleted).
    async fn webhook(
        &self,
        org_id: &OrgId,
        id: &WebhookId,
    ) -> StoreResult<Option<WebhookEndpointRecord>>;
    /// Writes an endpoint's url, events, description and whether it is enabled.
    async fn update_webhook(
        &self,
        endpoint: &WebhookEndpointRecord,
        audit: &AuditRecord,
    ) -> StoreResult<bool>;
    /// Deletes an endpoint (its pending deliveries are dropped).
    async fn delete_webhook(
        &self,
        org_id: &OrgId,
        id: &WebhookId,
        now: i64,
        audit: &AuditRecord,
    ) -> StoreResult<bool>;
    /// Turns up to `limit` outbox events into deliveries, one per enabled endpoint of the
    /// event's org subscribed to its type (each event once, whichever node gets it); how many
    /// events were taken.
    async fn dispatch_webhook_events(&self, now: i64, limit: i64) -> StoreResult<usize>;
    /// Claims up to `limit` due deliveries until `now + lease`, the oldest pending one of each
    /// endpoint only.
    async fn claim_webhook_deliveries(
        &self,
        now: i64,
        lease: i64,
        limit: i64,
    ) -> StoreResult<Vec<DueDelivery>>;
    /// Records how an attempt ended (and frees its claim).
    async fn finish_webhook_attempt(
        &self,
        id: &DeliveryId,
        outcome: &AttemptOutcome,
    ) -> StoreResult<()>;
    /// An endpoint's deliveries, newest first, after the cursor.
    async fn webhook_deliveries(
        &self,
        endpoint_id: &WebhookId,
        before: Option<&str>,
        limit: i64,
    ) -> StoreResult<Vec<DeliveryRecord>>;
    /// Queues an event no change's audit entry carries (an expiry coming, a threshold
    /// crossed) under an id that names the occasion, so it is queued once whichever node sees
    /// it first — and only for an org with an endpoint. Whether it was new.
    async fn enqueue_webhook_event(
        &self,
        id: &str,
        org_id: &OrgId,
        event_type: &str,
        payload: &str,
        now: i64,
    ) -> StoreResult<bool>;
    /// Live keys of orgs with an endpoint that expire after `from` and no later than `until`:
    /// (key, org, name, expires_at), soonest first.
    async fn keys_expiring_for_webhooks(
        &self,
        from: i64,
        until: i64,
        limit: i64,
    ) -> StoreResult<Vec<(crate::KeyId, OrgId, String, i64)>>;
    /// Orgs with an enabled endpoint, with their plan.
    async fn orgs_with_webhooks(&self) -> StoreResult<Vec<(OrgId, String)>>;
    /// Queues the event of one of an endpoint's deliveries again, as a new delivery; None when
    /// the endpoint has no such delivery.
    async fn redeliver_webhook(
        &self,
        endpoint_id: &WebhookId,
        delivery_id: &DeliveryId,
        now: i64,
    ) -> StoreResult<Option<DeliveryId>>;
}

/// Expands `impl WebhookStore for $store` next to [`impl_store`](crate::shared::impl_store),
/// whose helper functions it uses.
macro_rules! impl_webhook_store {
    ($store:ident, $db:ty) => {
        const WEBHOOK_COLUMNS: &str = "id, org_id, url, events, description, secret_sealed, \
             enabled, created_at, updated_at, deleted_at, all_orgs";
        const DELIVERY_COLUMNS: &str = "d.id, d.endpoint_id, d.event_id, e.event_type, d.status, \
             d.attempts, d.next_attempt_at, d.last_status, d.last_error, d.created_at, d.delivered_at";

        #[async_trait::async_trait]
        impl $crate::WebhookStore for $store {
            async fn create_webhook(
                &self,
                w: &$crate::WebhookEndpointRecord,
                audit: &$crate::AuditRecord,
            ) -> $crate::StoreResult<()> {
                let mut tx = self.pool.begin().await?;
                sqlx::query(
                    "INSERT INTO webhook_endpoints (id, org_id, url, events, description, \
                     secret_sealed, enabled, created_at, updated_at, all_orgs) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
                )
                .bind(&w.id)
                .bind(&w.org_id)
                .bind(&w.url)
                .bind(&w.events)
                .bind(&w.description)
                .bind(&w.secret_sealed)
                .bind(w.enabled)
                .bind(w.created_at)
                .bind(w.updated_at)
                .bind(w.all_orgs)
                .execute(&mut *tx)
                .await?;
                insert_audit(&mut tx, audit).await?;
                tx.commit().await?;
                Ok(())
            }

            async fn webhooks(&self, org_id: &$crate::OrgId) -> $crate::StoreResult<Vec<$crate::WebhookEndpointRecord>> {
                let sql = format!(
                    "SELECT {WEBHOOK_COLUMNS} FROM webhook_endpoints WHERE org_id = $1 \
                     AND deleted_at IS NULL ORDER BY id"
                );
                Ok(sqlx::query_as(&sql).bind(org_id).fetch_all(&self.pool).await?)
            }

            async fn webhook(
                &self,
                org_id: &$crate::OrgId,
                id: &$crate::WebhookId,
            ) -> $crate::StoreResult<Option<$crate::WebhookEndpointRecord>> {
                let sql = format!(
                    "SELECT {WEBHOOK_COLUMNS} FROM webhook_endpoints WHERE org_id = $1 AND id = $2 \
                     AND deleted_at IS NULL"
                );
                Ok(sqlx::query_as(&sql).bind(org_id).bind(id).fetch_optional(&self.pool).await?)
            }

            async fn update_webhook(
                &self,
                w: &$crate::WebhookEndpointRecord,
                audit: &$crate::AuditRecord,
            ) -> $crate::StoreResult<bool> {
                let mut tx = self.pool.begin().await?;
                let updated = sqlx::query(
                    "UPDATE webhook_endpoints SET url = $1, events = $2, description = $3, \
                     enabled = $4, updated_at = $5 WHERE org_id = $6 AND id = $7 AND deleted_at IS NULL",
                )
                .bind(&w.url)
                .bind(&w.events)
                .bind(&w.description)
                .bind(w.enabled)
                .bind(w.updated_at)
                .bind(&w.org_id)
                .bind(&w.id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if updated == 0 {
                    return Ok(false);
                }
                insert_audit(&mut tx, audit).await?;
                tx.commit().await?;
                Ok(true)
            }

            async fn delete_webhook(
                &self,
                org_id: &$crate::OrgId,
                id: &$crate::WebhookId,
                now: i64,
                audit: &$crate::AuditRecord,
            ) -> $crate::StoreResult<bool> {
                let mut tx = self.pool.begin().await?;
                let deleted = sqlx::query(
                    "UPDATE webhook_endpoints SET deleted_at = $1, updated_at = $1 \
                     WHERE org_id = $2 AND id = $3 AND deleted_at IS NULL",
                )
                .bind(now)
                .bind(org_id)
                .bind(id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if deleted == 0 {
                    return Ok(false);
                }
                sqlx::query(
                    "UPDATE webhook_deliveries SET status = 'failed', last_error = 'endpoint deleted' \
                     WHERE endpoint_id = $1 AND status = 'pending'",
                )
                .bind(id)
                .execute(&mut *tx)
                .await?;
                insert_audit(&mut tx, audit).await?;
                tx.commit().await?;
                Ok(true)
            }

            async fn dispatch_webhook_events(&self, now: i64, limit: i64) -> $crate::StoreResult<usize> {
                let mut tx = self.pool.begin().await?;
                let events: Vec<(String, String, String)> = sqlx::query_as(
                    "SELECT id, org_id, event_type FROM webhook_events WHERE dispatched = FALSE \
                     ORDER BY seq LIMIT $1",
                )
                .bind(limit)
                .fetch_all(&mut *tx)
                .await?;
                let mut taken = 0;
                for (event_id, org_id, event_type) in events {
                    // taken once, whichever node gets here first (the row is locked till commit)
                    let took = sqlx::query(
                        "UPDATE webhook_events SET dispatched = TRUE WHERE id = $1 AND dispatched = FALSE",
                    )
                    .bind(&event_id)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                    if took == 0 {
                        continue;
                    }
                    taken += 1;
                    let endpoints: Vec<(String, String)> = sqlx::query_as(
                        "SELECT id, events FROM webhook_endpoints WHERE (org_id = $1 OR all_orgs) \
                         AND deleted_at IS NULL AND enabled ORDER BY id",
                    )
                    .bind(&org_id)
                    .fetch_all(&mut *tx)
                    .await?;
                    for (endpoint_id, subscribed) in endpoints {
                        let types: Vec<String> = serde_json::from_str(&subscribed).unwrap_or_default();
                        if !types.iter().any(|t| t == "*" || *t == event_type) {
                            continue;
                        }
                        sqlx::query(
                            "INSERT INTO webhook_deliveries (id, endpoint_id, event_id, status, \
                             next_attempt_at, created_at) VALUES ($1, $2, $3, 'pending', $4, $4)",
                        )
                        .bind($crate::DeliveryId::generate())
                        .bind(&endpoint_id)
                        .bind(&event_id)
                        .bind(now)
                        .execute(&mut *tx)
                        .await?;
                    }
                }
                tx.commit().await?;
                Ok(taken)
            }

            async fn claim_webhook_deliveries(
                &self,
                now: i64,
                lease: i64,
                limit: i64,
            ) -> $crate::StoreResult<Vec<$crate::DueDelivery>> {
                let candidates: Vec<String> = sqlx::query_scalar(
                    "SELECT d.id FROM webhook_deliveries d WHERE d.status = 'pending' \
                     AND d.next_attempt_at <= $1 AND d.claimed_until <= $1 \
                     AND NOT EXISTS (SELECT 1 FROM webhook_deliveries o WHERE o.endpoint_id = d.endpoint_id \
                       AND o.status = 'pending' AND o.seq < d.seq) \
                     ORDER BY d.seq LIMIT $2",
                )
                .bind(now)
                .bind(limit)
                .fetch_all(&self.pool)
                .await?;
                let mut claimed = Vec::with_capacity(candidates.len());
                for id in candidates {
                    let took = sqlx::query(
                        "UPDATE webhook_deliveries SET claimed_until = $1 WHERE id = $2 \
                         AND status = 'pending' AND claimed_until <= $3",
                    )
                    .bind(now.saturating_add(lease))
                    .bind(&id)
                    .bind(now)
                    .execute(&self.pool)
                    .await?
                    .rows_affected();
                    if took == 0 {
                        continue;
                    }
                    let due: Option<$crate::DueDelivery> = sqlx::query_as(
                        "SELECT d.id, d.endpoint_id, w.url, w.secret_sealed, d.event_id, e.event_type, \
                         e.payload, d.attempts, d.created_at FROM webhook_deliveries d \
                         JOIN webhook_endpoints w ON w.id = d.endpoint_id \
                         JOIN webhook_events e ON e.id = d.event_id WHERE d.id = $1",
                    )
                    .bind(&id)
                    .fetch_optional(&self.pool)
                    .await?;
                    claimed.extend(due);
                }
                Ok(claimed)
            }

            async fn finish_webhook_attempt(
                &self,
                id: &$crate::DeliveryId,
                outcome: &$crate::AttemptOutcome,
            ) -> $crate::StoreResult<()> {
                let query = match outcome {
                    $crate::AttemptOutcome::Delivered { status, at } => sqlx::query(
                        "UPDATE webhook_deliveries SET status = 'delivered', attempts = attempts + 1, \
                         last_status = $1, last_error = NULL, delivered_at = $2, claimed_until = 0 \
                         WHERE id = $3",
                    )
                    .bind(*status)
                    .bind(*at)
                    .bind(id),
                    $crate::AttemptOutcome::Failed { status, error, retry_at } => sqlx::query(
                        "UPDATE webhook_deliveries SET status = $1, attempts = attempts + 1, \
                         last_status = $2, last_error = $3, next_attempt_at = $4, claimed_until = 0 \
                         WHERE id = $5",
                    )
                    .bind(if retry_at.is_some() { "pending" } else { "failed" })
                    .bind(*status)
                    .bind(error.clone())
                    .bind(retry_at.unwrap_or(0))
                    .bind(id),
                };
                query.execute(&self.pool).await?;
                Ok(())
            }

            async fn webhook_deliveries(
                &self,
                endpoint_id: &$crate::WebhookId,
                before: Option<&str>,
                limit: i64,
            ) -> $crate::StoreResult<Vec<$crate::DeliveryRecord>> {
                let sql = format!(
                    "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries d \
                     JOIN webhook_events e ON e.id = d.event_id \
                     WHERE d.endpoint_id = $1 AND ($2 = '' OR d.seq < (SELECT c.seq FROM webhook_deliveries c \
                       WHERE c.id = $2)) ORDER BY d.seq DESC LIMIT $3"
                );
                Ok(sqlx::query_as(&sql)
                    .bind(endpoint_id)
                    .bind(before.unwrap_or(""))
                    .bind(limit)
                    .fetch_all(&self.pool)
                    .await?)
            }

            async fn enqueue_webhook_event(
                &self,
                id: &str,
                org_id: &$crate::OrgId,
                event_type: &str,
                payload: &str,
                now: i64,
            ) -> $crate::StoreResult<bool> {
                let added = sqlx::query(
                    "INSERT INTO webhook_events (id, org_id, event_type, payload, created_at) \
                     SELECT $1, $2, $3, $4, $5 WHERE EXISTS (SELECT 1 FROM webhook_endpoints \
                     WHERE (org_id = $2 OR all_orgs) AND deleted_at IS NULL) ON CONFLICT (id) DO NOTHING",
                )
                .bind(id)
                .bind(org_id)
                .bind(event_type)
                .bind(payload)
                .bind(now)
                .execute(&self.pool)
                .await?
                .rows_affected();
                Ok(added == 1)
            }

            async fn keys_expiring_for_webhooks(
                &self,
                from: i64,
                until: i64,
                limit: i64,
            ) -> $crate::StoreResult<Vec<($crate::KeyId, $crate::OrgId, String, i64)>> {
                Ok(sqlx::query_as(
                    "SELECT k.id, k.org_id, k.name, k.expires_at FROM api_keys k \
                     WHERE k.revoked_at IS NULL AND k.expires_at > $1 AND k.expires_at <= $2 \
                     AND EXISTS (SELECT 1 FROM webhook_endpoints w WHERE (w.org_id = k.org_id OR w.all_orgs) \
                       AND w.deleted_at IS NULL AND w.enabled) \
                     ORDER BY k.expires_at, k.id LIMIT $3",
                )
                .bind(from)
                .bind(until)
                .bind(limit)
                .fetch_all(&self.pool)
                .await?)
            }

            async fn orgs_with_webhooks(&self) -> $crate::StoreResult<Vec<($crate::OrgId, String)>> {
                Ok(sqlx::query_as(
                    "SELECT o.id, o.plan FROM orgs o WHERE o.deleted_at IS NULL AND EXISTS \
                     (SELECT 1 FROM webhook_endpoints w WHERE (w.org_id = o.id OR w.all_orgs) \
                       AND w.deleted_at IS NULL AND w.enabled) ORDER BY o.id",
                )
                .fetch_all(&self.pool)
                .await?)
            }

            async fn redeliver_webhook(
                &self,
                endpoint_id: &$crate::WebhookId,
                delivery_id: &$crate::DeliveryId,
                now: i64,
            ) -> $crate::StoreResult<Option<$crate::DeliveryId>> {
                let event: Option<String> = sqlx::query_scalar(
                    "SELECT event_id FROM webhook_deliveries WHERE id = $1 AND endpoint_id = $2",
                )
                .bind(delivery_id)
                .bind(endpoint_id)
                .fetch_optional(&self.pool)
                .await?;
                let Some(event) = event else {
                    return Ok(None);
                };
                let id = $crate::DeliveryId::generate();
                sqlx::query(
                    "INSERT INTO webhook_deliveries (id, endpoint_id, event_id, status, \
                     next_attempt_at, created_at) VALUES ($1, $2, $3, 'pending', $4, $4)",
                )
                .bind(&id)
                .bind(endpoint_id)
                .bind(&event)
                .bind(now)
                .execute(&self.pool)
                .await?;
                Ok(Some(id))
            }
        }
    };
}

pub(crate) use impl_webhook_store;
