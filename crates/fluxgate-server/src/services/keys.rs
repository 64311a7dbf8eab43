//! API keys: issue, list, read, change, rotate and revoke. A key is never more powerful than its
//! maker: its scopes must come from the catalog and be held by whoever creates, changes or
//! rotates it. Every change is written with its audit entry in one transaction, then announced
//! to every node's key cache.

use crate::access::{
    parse_permission_list, permissions_json, KeysRead, KeysWrite, OrgAccess, Required,
};
use crate::clock::{future_time, rfc3339};
use crate::error::{ApiError, ApiResult};
use crate::extract::{ClientInfo, Paging};
use crate::invalidation::Change;
use crate::services::credits;
use crate::state::AppState;
use fluxgate_core::apikey::{self, Environment};
use fluxgate_core::ids::KeyId;
use fluxgate_core::ip_allowlist::IpAllowlist;
use fluxgate_core::named_limit;
use fluxgate_core::permission::PermissionPattern;
use fluxgate_core::secret::{ExposeSecret, SecretString};
use fluxgate_core::validation::{single_line, FieldErrors};
use fluxgate_proto::{KeyChanges, NamedLimit, NewKey, RateLimit};
use fluxgate_store::{ApiKeyRecord, CreditsUpdate, KeyQuery, KeySecretRecord, KeyStatus, Rotation};
use serde_json::{json, Value};

/// Default grace period of a rotation: the old secret keeps working for a day.
pub const DEFAULT_GRACE_SECONDS: u64 = 86_400;
/// Longest grace period.
pub const MAX_GRACE_SECONDS: u64 = 30 * 86_400;
/// Longest expiry, in days.
pub const MAX_EXPIRY_DAYS: u32 = 3650;
/// Largest metadata object, serialized.
pub const MAX_METADATA_BYTES: usize = 4096;

/// A key with its secret, which exists only in this answer.
pub struct KeyWithSecret {
    /// The key as stored.
    pub key: ApiKeyRecord,
    /// The secret, shown once.
    pub secret: SecretString,
    /// When the previous secret stops working (rotation only).
    pub previous_secret_expires_at: Option<i64>,
}

fn check_rate_limit(errors: &mut FieldErrors, rate: &RateLimit) {
    if !(1..=1_000_000_000).contains(&rate.limit) {
        errors.add("rate_limit.limit", "must be between 1 and 1000000000");
    }
    if !(1..=31 * 86_400).contains(&rate.window_seconds) {
        errors.add("rate_limit.window_seconds", "must be between 1 and 2678400");
    }
}

/// A key's own limit as stored: calls, window seconds, exactness.
type StoredRate = (Option<i64>, Option<i64>, bool);

/// The checked limit as stored (`None` when out of range, with the error recorded); no limit
/// is the plan's, never exact.
fn stored_rate(errors: &mut FieldErrors, rate: Option<&RateLimit>) -> StoredRate {
    let Some(rate) = rate else {
        return (None, None, false);
    };
    check_rate_limit(errors, rate);
    (
        i64::try_from(rate.limit).ok(),
        i64::try_from(rate.window_seconds).ok(),
        rate.exact,
    )
}

/// A key's named limits as stored (JSON), checked: names, sizes, at most 10, each name once.
fn stored_named_limits(errors: &mut FieldErrors, limits: &[NamedLimit]) -> String {
    for (i, limit) in limits.iter().enumerate() {
        named_limit::check(
            errors,
            &format!("ratelimits[{i}]"),
            &limit.name,
            limit.limit,
            limit.window_seconds,
        );
    }
    named_limit::check_list(errors, "ratelimits", limits.iter().map(|l| l.name.as_str()));
    serde_json::to_string(limits).unwrap_or_else(|_| "[]".into())
}

/// A key's IP allowlist as stored (JSON), checked: addresses and CIDR ranges, at most 100.
fn stored_allowlist(errors: &mut FieldErrors, entries: &[String]) -> String {
    let list = IpAllowlist::parse(errors, "ip_allowlist", entries);
    serde_json::to_string(&list.entries()).unwrap_or_else(|_| "[]".into())
}

fn check_metadata(errors: &mut FieldErrors, metadata: &Value) -> String {
    if !metadata.is_object() {
        errors.add("metadata", "must be a JSON object");
    }
    let text = metadata.to_string();
    if text.len() > MAX_METADATA_BYTES {
        errors.add(
            "metadata",
            format!("must be at most {MAX_METADATA_BYTES} bytes"),
        );
    }
    text
}

fn patterns_of(key: &ApiKeyRecord) -> Vec<PermissionPattern> {
    key.scope_list()
        .iter()
        .filter_map(|s| PermissionPattern::parse(s).ok())
        .collect()
}

/// A new secret for a key of this environment, with its hash.
fn new_secret(
    state: &AppState,
    environment: Environment,
) -> ApiResult<(SecretString, String, String)> {
    let secret = apikey::generate(&state.config.key_prefix, environment);
    let parsed = apikey::parse(secret.expose_secret())
        .map_err(|e| ApiError::Internal(anyhow::anyhow!("generated key does not parse: {e}")))?;
    let start = parsed.start().to_owned();
    let hash = parsed.hash();
    Ok((secret, hash, start))
}

/// Issues a key in the caller's org; the secret is in the answer once and never again.
pub async fn issue(
    state: &AppState,
    access: &OrgAccess<KeysWrite>,
    client: &ClientInfo,
    input: NewKey,
    now: i64,
) -> ApiResult<KeyWithSecret> {
    let mut errors = FieldErrors::new();
    let name = errors.check("name", single_line(&input.name, 200));
    let patterns = parse_permission_list(state, &mut errors, "scopes", &input.scopes, 100);
    let environment = match input.environment.as_deref() {
        None => Some(Environment::Live),
        Some(text) => {
            let env = Environment::parse(text);
            if env.is_none() {
                errors.add("environment", "must be `live` or `test`");
            }
            env
        }
    };
    let expires_at = match (&input.expires_at, input.expires_in_days) {
        (Some(_), Some(_)) => {
            errors.add("expires_at", "give expires_at or expires_in_days, not both");
            None
        }
        (Some(text), None) => future_time(&mut errors, "expires_at", text, now),
        (None, Some(days)) if (1..=MAX_EXPIRY_DAYS).contains(&days) => {
            Some(now.saturating_add(i64::from(days) * 86_400))
        }
        (None, Some(_)) => {
            errors.add(
                "expires_in_days",
                format!("must be between 1 and {MAX_EXPIRY_DAYS}"),
            );
            None
        }
        (None, None) => None,
    };
    let (rate_limit, rate_window_seconds, rate_exact) =
        stored_rate(&mut errors, input.rate_limit.as_ref());
    let metadata = check_metadata(&mut errors, input.metadata.as_ref().unwrap_or(&json!({})));
    let (Some(name), Some(environment)) = (name, environment) else {
        errors.into_result()?;
        return Err(ApiError::field("name", "invalid"));
    };
    let (secret, hash, start) = new_secret(state, environment)?;
    let mut key = ApiKeyRecord {
        id: KeyId::generate(),
        org_id: access.org.id.clone(),
        name,
        environment,
        start,
        scopes: permissions_json(&patterns),
        metadata,
        rate_limit,
        rate_window_seconds,
        rate_exact,
        created_by: Some(access.caller.actor().id),
        created_at: now,
        updated_at: now,
        expires_at,
        revoked_at: None,
        last_used_at: None,
        credits_remaining: None,
        credits_refill_amount: None,
        credits_refill_interval: None,
        credits_refill_day: None,
        credits_refilled_at: None,
        named_limits: stored_named_limits(&mut errors, &input.ratelimits),
        ip_allowlist: stored_allowlist(&mut errors, &input.ip_allowlist),
        leaked_at: None,
    };
    if let Some(credits) = &input.credits {
        credits::start(&mut errors, &mut key, credits, now);
    }
    errors.into_result()?;
    access.require_all(state, &patterns)?;
    let audit = access
        .audit("key.created", client)
        .at(now)
        .target("key", &key.id)
        .data(
            json!({ "name": key.name, "scopes": key.scope_list(), "environment": key.environment.as_str(), "credits": key.credits_remaining }),
        )
        .build();
    state.store.create_key(&key, &hash, &audit).await?;
    state.invalidation.publish(Change::Secret(hash)).await;
    Ok(KeyWithSecret {
        key,
        secret,
        previous_secret_expires_at: None,
    })
}

/// A `?status=` filter: `active`, `revoked` or `expired` (empty: all).
pub fn parse_status(text: Option<&str>) -> ApiResult<Option<KeyStatus>> {
    match text {
        None | Some("") => Ok(None),
        Some("active") => Ok(Some(KeyStatus::Active)),
        Some("revoked") => Ok(Some(KeyStatus::Revoked)),
        Some("expired") => Ok(Some(KeyStatus::Expired)),
        Some(_) => Err(ApiError::field(
            "status",
            "must be active, revoked or expired",
        )),
    }
}

/// One page of the org's keys, by id: of one status, and whose name or start contains
/// `search`, when given.
pub async fn list(
    state: &AppState,
    access: &OrgAccess<KeysRead>,
    status: Option<KeyStatus>,
    search: Option<&str>,
    page: &Paging,
    now: i64,
) -> ApiResult<Vec<ApiKeyRecord>> {
    if search.is_some_and(|s| s.chars().count() > 200) {
        return Err(ApiError::field("search", "must be at most 200 characters"));
    }
    let query = KeyQuery {
        status,
        search,
        now,
        after: page.cursor.as_deref(),
        limit: page.fetch(),
    };
    let mut keys = state.store.keys(&access.org.id, &query).await?;
    state.credits.freshen(&mut keys).await?;
    Ok(keys)
}

/// The org's live keys expiring within `within` seconds, soonest first (at most `limit`).
pub async fn expiring(
    state: &AppState,
    access: &OrgAccess<KeysRead>,
    within: i64,
    limit: i64,
    now: i64,
) -> ApiResult<Vec<ApiKeyRecord>> {
    Ok(state
        .store
        .expiring_keys(&access.org.id, now, now.saturating_add(within), limit)
        .await?)
}

/// One key of the caller's org; 404 for a malformed id or another org's key.
pub async fn get<P: Required>(
    state: &AppState,
    access: &OrgAccess<P>,
    key_id: &KeyId,
) -> ApiResult<ApiKeyRecord> {
    let key = state
        .store
        .key(&access.org.id, key_id)
        .await?
        .ok_or(ApiError::NotFound)?;
    let mut keys = [key];
    state.credits.freshen(&mut keys).await?;
    let [key] = keys;
    Ok(key)
}

/// A key's secrets: the current one, then those rotated out (newest first), with when each stops
/// working and (for those being rotated out) when it was last presented. 404 as for [`get`].
pub async fn secrets<P: Required>(
    state: &AppState,
    access: &OrgAccess<P>,
    key_id: &KeyId,
) -> ApiResult<Vec<KeySecretRecord>> {
    let found = state.store.key_secrets(&access.org.id, key_id).await?;
    if found.is_empty() {
        return Err(ApiError::NotFound);
    }
    Ok(found)
}

/// Changes a key's name, scopes, rate limit, metadata, expiry or credits; takes effect on the next verify
/// on every node. The caller must hold the key's scopes, before and after.
pub async fn update(
    state: &AppState,
    access: &OrgAccess<KeysWrite>,
    client: &ClientInfo,
    key_id: &KeyId,
    changes: KeyChanges,
    now: i64,
) -> ApiResult<ApiKeyRecord> {
    let key = get(state, access, key_id).await?;
    if key.revoked_at.is_some() {
        return Err(ApiError::Conflict("a revoked key cannot be changed".into()));
    }
    access.require_all(state, &patterns_of(&key))?;
    let mut errors = FieldErrors::new();
    let mut changed = key.clone();
    if let Some(name) = &changes.name {
        if let Some(name) = errors.check("name", single_line(name, 200)) {
            changed.name = name;
        }
    }
    let new_patterns = changes
        .scopes
        .as_ref()
        .map(|scopes| parse_permission_list(state, &mut errors, "scopes", scopes, 100));
    if let Some(rate) = &changes.rate_limit {
        (
            changed.rate_limit,
            changed.rate_window_seconds,
            changed.rate_exact,
        ) = stored_rate(&mut errors, rate.as_ref());
    }
    if let Some(metadata) = &changes.metadata {
        changed.metadata = check_metadata(&mut errors, metadata);
    }
    match &changes.expires_at {
        Some(Some(text)) => changed.expires_at = future_time(&mut errors, "expires_at", text, now),
        Some(None) => changed.expires_at = None,
        None => {}
    }
    if let Some(limits) = &changes.ratelimits {
        changed.named_limits = stored_named_limits(&mut errors, limits);
    }
    if let Some(entries) = &changes.ip_allowlist {
        changed.ip_allowlist = stored_allowlist(&mut errors, entries);
    }
    let credits = match &changes.credits {
        Some(change) => credits::change(&mut errors, &mut changed, change.as_ref(), now),
        None => CreditsUpdate::Keep,
    };
    errors.into_result()?;
    if let Some(patterns) = &new_patterns {
        access.require_all(state, patterns)?;
        changed.scopes = permissions_json(patterns);
    }
    changed.updated_at = now;
    let audit = access
        .audit("key.updated", client)
        .at(now)
        .target("key", &key.id)
        .data(json!({
            "name": changed.name,
            "scopes": changed.scope_list(),
            "previous_scopes": key.scope_list(),
            "expires_at": changed.expires_at.map(rfc3339),
            "rate_limit": changed.rate_limit,
            "rate_window_seconds": changed.rate_window_seconds,
            "rate_exact": changed.rate_exact,
            "credits": credits_audit(credits),
            "ratelimits": serde_json::from_str::<Value>(&changed.named_limits).unwrap_or(Value::Null),
            "ip_allowlist": serde_json::from_str::<Value>(&changed.ip_allowlist).unwrap_or(Value::Null),
        }))
        .build();
    let (counted, undo) = state.credits.prepare(&key, credits).await?;
    let stored = match state.store.update_key(&changed, counted, &audit).await {
        Ok(Some(stored)) => stored,
        failed => {
            if let Some(undo) = undo {
                state.credits.undo(&key.id, undo).await;
            }
            return Err(failed.err().map_or(ApiError::NotFound, ApiError::from));
        }
    };
    state.credits.stored(&key.id, credits).await;
    state
        .invalidation
        .publish(Change::Key(key.id.clone()))
        .await;
    Ok(stored)
}

/// How a change moved the credits, for the audit log.
fn credits_audit(credits: CreditsUpdate) -> Value {
    match credits {
        CreditsUpdate::Keep => Value::Null,
        CreditsUpdate::Set { remaining, .. } => json!({ "set": remaining }),
        CreditsUpdate::Mirror(count) => json!({ "set": count.remaining }),
        CreditsUpdate::Add { credits, .. } => json!({ "added": credits }),
        CreditsUpdate::Clear => json!("removed"),
    }
}

/// Gives a key a new secret (shown once); the old one keeps working for `grace_period_seconds`
/// (default a day, at most 30 days, 0 = at once).
pub async fn rotate(
    state: &AppState,
    access: &OrgAccess<KeysWrite>,
    client: &ClientInfo,
    key_id: &KeyId,
    grace_period_seconds: Option<u64>,
    now: i64,
) -> ApiResult<KeyWithSecret> {
    let grace = grace_period_seconds.unwrap_or(DEFAULT_GRACE_SECONDS);
    let grace = match i64::try_from(grace) {
        Ok(grace) if grace <= MAX_GRACE_SECONDS as i64 => grace,
        _ => {
            return Err(ApiError::field(
                "grace_period_seconds",
                format!("must be at most {MAX_GRACE_SECONDS}"),
            ))
        }
    };
    let key = get(state, access, key_id).await?;
    // the new secret carries the key's power: only someone holding it may mint it
    access.require_all(state, &patterns_of(&key))?;
    let environment = key.environment;
    let (secret, hash, start) = new_secret(state, environment)?;
    let retire_at = now.saturating_add(grace);
    let audit = access
        .audit("key.rotated", client)
        .at(now)
        .target("key", &key.id)
        .data(json!({ "grace_period_seconds": grace }))
        .build();
    let rotated = state
        .store
        .rotate_key(
            &access.org.id,
            &key.id,
            &Rotation {
                secret_hash: hash.clone(),
                start,
                retire_at,
                now,
            },
            &audit,
        )
        .await?
        .ok_or(ApiError::NotFound)?;
    state.invalidation.publish(Change::Secret(hash)).await;
    state
        .invalidation
        .publish(Change::Key(key.id.clone()))
        .await;
    Ok(KeyWithSecret {
        key: rotated,
        secret,
        previous_secret_expires_at: Some(retire_at),
    })
}

/// Revokes a key at once, on every node; it stays listed as revoked.
pub async fn revoke(
    state: &AppState,
    access: &OrgAccess<KeysWrite>,
    client: &ClientInfo,
    key_id: &KeyId,
    now: i64,
) -> ApiResult<()> {
    let key = get(state, access, key_id).await?;
    let audit = access
        .audit("key.revoked", client)
        .at(now)
        .target("key", &key.id)
        .build();
    if !state
        .store
        .revoke_key(&access.org.id, &key.id, now, &audit)
        .await?
    {
        return Err(ApiError::NotFound);
    }
    state.invalidation.publish(Change::Key(key.id)).await;
    Ok(())
}
