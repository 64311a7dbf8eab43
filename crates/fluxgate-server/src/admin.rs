//! The `admin` commands: bootstrap the operator, rotate the JWT signing key.

use crate::clock::now;
use crate::config::Config;
use crate::secrets::InstanceSecret;
use crate::server::open_store;
use crate::tokens::Keyring;
use anyhow::Context;
use fluxgate_core::email::Email;
use fluxgate_core::ids::{EventId, OrgId, UserId};
use fluxgate_core::password::Password;
use fluxgate_store::{AuditRecord, OrgRecord, StoreError, UserRecord};
use serde_json::json;

/// Creates the operator org and its verified owner.
pub async fn bootstrap(config: &Config, email: &str, password: &str) -> anyhow::Result<()> {
    let email = Email::parse(email).map_err(|e| anyhow::anyhow!("--email {e}"))?;
    let password = Password::parse(password).map_err(|e| anyhow::anyhow!("--password {e}"))?;
    let store = open_store(config).await?;
    if store.operator_org_id().await?.is_some() {
        anyhow::bail!("this instance is bootstrapped already (an operator org exists)");
    }
    let hasher = crate::passwords::PasswordHasher::new(1)?;
    let now = now();
    let user = UserRecord {
        id: UserId::generate(),
        email: email.as_str().to_owned(),
        username: None,
        document: None,
        name: Some("Operator".into()),
        password_hash: hasher.hash(&password).await?,
        email_verified_at: Some(now),
        created_at: now,
        updated_at: now,
    };
    let org = OrgRecord {
        id: OrgId::generate(),
        name: "Operator".into(),
        external_id: None,
        plan: config.default_plan().to_owned(),
        is_operator: true,
        created_at: now,
        updated_at: now,
        deleted_at: None,
        disabled_at: None,
        require_mfa: false,
        leaked_key_action: "revoke".into(),
    };
    let audit = AuditRecord {
        id: EventId::generate(),
        org_id: Some(org.id.clone()),
        actor_type: fluxgate_core::stored::ActorKind::System,
        actor_id: None,
        action: "operator.bootstrapped".into(),
        target_type: Some("user".into()),
        target_id: Some(user.id.to_string()),
        ip: None,
        user_agent: None,
        data: json!({ "email": user.email }).to_string(),
        created_at: now,
    };
    match store.bootstrap_operator(&user, &org, &audit).await {
        Ok(()) => {}
        Err(StoreError::Conflict(_)) => anyhow::bail!(
            "a user with email {} exists already, or the instance is bootstrapped",
            email
        ),
        Err(e) => return Err(e.into()),
    }
    store.close().await;
    println!(
        "operator org {} created; owner {} <{}> can log in now",
        org.id, user.id, user.email
    );
    Ok(())
}

/// Makes a new signing key current; old keys stay in the JWKS until their tokens expire.
pub async fn rotate_signing_key(config: &Config) -> anyhow::Result<()> {
    let store = open_store(config).await?;
    let secret = InstanceSecret::load_or_create(config.secret_key.as_ref(), &config.data_dir)?;
    let keyring = Keyring::new(
        store.clone(),
        secret.derive("signing-key-encryption"),
        config.public_url.clone(),
        config.auth.audience.clone(),
        config.auth.access_token_ttl,
    );
    let audit = AuditRecord {
        id: EventId::generate(),
        org_id: None,
        actor_type: fluxgate_core::stored::ActorKind::System,
        actor_id: None,
        action: "signing_key.rotated".into(),
        target_type: None,
        target_id: None,
        ip: None,
        user_agent: None,
        data: "{}".into(),
        created_at: now(),
    };
    let kid = keyring
        .rotate(audit)
        .await
        .context("rotating the signing key")?;
    store.close().await;
    println!("new signing key {kid} is current; running nodes pick it up within 30 s");
    Ok(())
}
