//! Keys written straight into a database, as the API would store them, for benchmarks that
//! need more keys than issuing them one request at a time allows.

use fluxgate_core::apikey::{self, Environment};
use fluxgate_core::ids::{EventId, KeyId, OrgId};
use fluxgate_core::secret::ExposeSecret;
use fluxgate_core::stored::ActorKind;
use fluxgate_store::{ApiKeyRecord, AuditRecord, Store};

/// Stores `count` live keys without scopes in `org`; their secrets, in order.
pub async fn insert_keys(
    store: &dyn Store,
    org: &OrgId,
    count: usize,
    now: i64,
) -> anyhow::Result<Vec<String>> {
    let mut secrets = Vec::with_capacity(count);
    for i in 0..count {
        let secret = apikey::generate("fg", Environment::Live);
        let parsed = apikey::parse(secret.expose_secret()).map_err(|e| anyhow::anyhow!("{e}"))?;
        let record = ApiKeyRecord {
            id: KeyId::generate(),
            org_id: org.clone(),
            name: format!("bench {i}"),
            environment: Environment::Live,
            start: parsed.start().to_owned(),
            scopes: "[]".into(),
            metadata: "{}".into(),
            rate_limit: None,
            rate_window_seconds: None,
            created_by: None,
            created_at: now,
            updated_at: now,
            expires_at: None,
            revoked_at: None,
            last_used_at: None,
        };
        let audit = AuditRecord {
            id: EventId::generate(),
            org_id: Some(org.clone()),
            actor_type: ActorKind::System,
            actor_id: None,
            action: "key.created".into(),
            target_type: Some("key".into()),
            target_id: Some(record.id.to_string()),
            ip: None,
            user_agent: None,
            data: "{}".into(),
            created_at: now,
        };
        store.create_key(&record, &parsed.hash(), &audit).await?;
        secrets.push(secret.expose_secret().to_owned());
    }
    Ok(secrets)
}

/// Puts an org on `plan` (one the server's config declares), as an operator would.
pub async fn set_plan(store: &dyn Store, org: &OrgId, plan: &str, now: i64) -> anyhow::Result<()> {
    let audit = AuditRecord {
        id: EventId::generate(),
        org_id: Some(org.clone()),
        actor_type: ActorKind::System,
        actor_id: None,
        action: "org.plan_changed".into(),
        target_type: None,
        target_id: None,
        ip: None,
        user_agent: None,
        data: "{}".into(),
        created_at: now,
    };
    store.set_org_plan(org, plan, now, &audit).await?;
    Ok(())
}
