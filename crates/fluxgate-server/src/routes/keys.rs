//! `/orgs/{org_id}/keys`: creating, listing, reading, changing, rotating and revoking API keys.
//! A key is never more powerful than its maker: its scopes must come from the catalog and be
//! held by whoever creates, changes or rotates it.

use crate::access::{parse_permission_list, permissions_json, KeysRead, KeysWrite, OrgAccess};
use crate::auth::{parse_rfc3339, rfc3339, unix_now, RFC3339_HINT};
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, ApiQuery, ClientInfo, Page};
use crate::invalidation::Change;
use crate::routes::no_content;
use crate::state::AppState;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use fluxgate_core::apikey::{self, Environment};
use fluxgate_core::ids::KeyId;
use fluxgate_core::permission::PermissionPattern;
use fluxgate_core::validation::{single_line, FieldErrors};
use fluxgate_store::{ApiKeyRecord, KeyStatus, Rotation};
use serde::Deserialize;
use serde_json::{json, Value};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// The routes of this module.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_keys, create_key))
        .routes(routes!(get_key, update_key, revoke_key))
        .routes(routes!(rotate_key))
}

/// Default grace period of a rotation: the old secret keeps working for a day.
const DEFAULT_GRACE_SECONDS: u64 = 86_400;
/// Longest grace period and longest expiry.
const MAX_GRACE_SECONDS: u64 = 30 * 86_400;
const MAX_EXPIRY_DAYS: u32 = 3650;
/// Largest metadata object, serialized.
const MAX_METADATA_BYTES: usize = 4096;

/// A key as the API shows it (never its secret).
pub fn key_json(key: &ApiKeyRecord, now: i64) -> Value {
    json!({
        "id": key.id,
        "org_id": key.org_id,
        "name": key.name,
        "start": key.start,
        "environment": key.environment,
        "scopes": key.scope_list(),
        "metadata": key.metadata_json(),
        "rate_limit": match (key.rate_limit, key.rate_window_seconds) {
            (Some(limit), Some(window)) => json!({ "limit": limit, "window_seconds": window }),
            _ => Value::Null,
        },
        "status": key.status(now),
        "created_by": key.created_by,
        "created_at": rfc3339(key.created_at),
        "updated_at": rfc3339(key.updated_at),
        "expires_at": key.expires_at.map(rfc3339),
        "revoked_at": key.revoked_at.map(rfc3339),
        "last_used_at": key.last_used_at.map(rfc3339),
    })
}

/// A key's own rate limit.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RateLimitBody {
    /// Calls per window (1–1,000,000,000).
    limit: u64,
    /// The window in seconds (1–2,678,400).
    window_seconds: u64,
}

/// `POST /orgs/{org_id}/keys`
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKeyBody {
    name: String,
    /// Permissions from the catalog (patterns allowed), each held by the creator.
    scopes: Vec<String>,
    /// `live` (default) or `test`.
    environment: Option<String>,
    /// RFC 3339, in the future; or use `expires_in_days`.
    expires_at: Option<String>,
    /// 1–3650.
    expires_in_days: Option<u32>,
    /// The key's own limit; without it the org's plan decides.
    rate_limit: Option<RateLimitBody>,
    /// A JSON object of your own (at most 4 KiB), returned by verify.
    #[schema(value_type = Option<Object>)]
    metadata: Option<Value>,
}

/// `PATCH /orgs/{org_id}/keys/{key_id}`: absent fields stay; `null` clears the nullable ones.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateKeyBody {
    name: Option<String>,
    scopes: Option<Vec<String>>,
    #[serde(default, deserialize_with = "crate::extract::present")]
    #[schema(value_type = Option<RateLimitBody>)]
    rate_limit: Option<Option<RateLimitBody>>,
    #[schema(value_type = Option<Object>)]
    metadata: Option<Value>,
    #[serde(default, deserialize_with = "crate::extract::present")]
    #[schema(value_type = Option<String>)]
    expires_at: Option<Option<String>>,
}

fn check_rate_limit(errors: &mut FieldErrors, rate: &RateLimitBody) {
    if !(1..=1_000_000_000).contains(&rate.limit) {
        errors.add("rate_limit.limit", "must be between 1 and 1000000000");
    }
    if !(1..=31 * 86_400).contains(&rate.window_seconds) {
        errors.add("rate_limit.window_seconds", "must be between 1 and 2678400");
    }
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

fn future_time(errors: &mut FieldErrors, field: &str, text: &str, now: i64) -> Option<i64> {
    match parse_rfc3339(text) {
        Some(t) if t > now => Some(t),
        Some(_) => {
            errors.add(field, "must be in the future");
            None
        }
        None => {
            errors.add(field, RFC3339_HINT);
            None
        }
    }
}

/// Issues a key; the secret is in the answer once and never again.
#[utoipa::path(post, path = "/orgs/{org_id}/keys", tag = "keys", request_body = CreateKeyBody,
    params(("org_id" = String, Path, description = "org_…")),
    security(("bearer" = ["keys:write"])),
    responses((status = 201, description = "the key, with its secret in `key` (shown once)"),
              (status = 403, description = "a scope the caller does not hold"), (status = 422, description = "invalid fields")))]
async fn create_key(
    State(state): State<AppState>,
    access: OrgAccess<KeysWrite>,
    client: ClientInfo,
    ApiJson(body): ApiJson<CreateKeyBody>,
) -> ApiResult<Response> {
    let now = unix_now();
    let mut errors = FieldErrors::new();
    let name = errors.check("name", single_line(&body.name, 200));
    let patterns = parse_permission_list(&state, &mut errors, "scopes", &body.scopes, 100);
    let environment = match body.environment.as_deref() {
        None => Some(Environment::Live),
        Some(text) => {
            let env = Environment::parse(text);
            if env.is_none() {
                errors.add("environment", "must be `live` or `test`");
            }
            env
        }
    };
    let expires_at = match (&body.expires_at, body.expires_in_days) {
        (Some(_), Some(_)) => {
            errors.add("expires_at", "give expires_at or expires_in_days, not both");
            None
        }
        (Some(text), None) => future_time(&mut errors, "expires_at", text, now),
        (None, Some(days)) if (1..=MAX_EXPIRY_DAYS).contains(&days) => {
            Some(now + i64::from(days) * 86_400)
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
    if let Some(rate) = &body.rate_limit {
        check_rate_limit(&mut errors, rate);
    }
    let metadata = check_metadata(&mut errors, body.metadata.as_ref().unwrap_or(&json!({})));
    errors.into_result()?;
    let (Some(name), Some(environment)) = (name, environment) else {
        return Err(ApiError::field("name", "invalid"));
    };
    access.require_all(&state, &patterns)?;

    let secret = apikey::generate(&state.config.key_prefix, environment);
    let parsed = apikey::parse(secret.expose())
        .map_err(|e| ApiError::Internal(anyhow::anyhow!("generated key does not parse: {e}")))?;
    let hash = parsed.hash();
    let key = ApiKeyRecord {
        id: KeyId::generate().to_string(),
        org_id: access.org.id.clone(),
        name,
        environment: environment.as_str().into(),
        start: parsed.start().to_owned(),
        scopes: permissions_json(&patterns),
        metadata,
        rate_limit: body.rate_limit.as_ref().map(|r| r.limit as i64),
        rate_window_seconds: body.rate_limit.as_ref().map(|r| r.window_seconds as i64),
        created_by: Some(access.caller.actor().id),
        created_at: now,
        updated_at: now,
        expires_at,
        revoked_at: None,
        last_used_at: None,
    };
    let audit = access
        .audit("key.created", &client)
        .target("key", &key.id)
        .data(
            json!({ "name": key.name, "scopes": key.scope_list(), "environment": key.environment }),
        )
        .build();
    state.store.create_key(&key, &hash, &audit).await?;
    state.invalidation.publish(Change::Secret(hash)).await;
    let mut data = key_json(&key, now);
    data["key"] = Value::from(secret.expose().as_str());
    let mut response = (StatusCode::CREATED, Json(json!({ "data": data }))).into_response();
    crate::auth::no_store(&mut response);
    Ok(response)
}

/// `?status=&limit=&cursor=`
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct KeyListQuery {
    /// `active`, `revoked` or `expired`.
    status: Option<String>,
    /// 1–200, default 50.
    limit: Option<u32>,
    /// The previous page's `next_cursor`.
    cursor: Option<String>,
}

/// The org's keys, by id.
#[utoipa::path(get, path = "/orgs/{org_id}/keys", tag = "keys",
    params(("org_id" = String, Path, description = "org_…"), KeyListQuery),
    security(("bearer" = ["keys:read"])),
    responses((status = 200, description = "keys (never their secrets)")))]
async fn list_keys(
    State(state): State<AppState>,
    access: OrgAccess<KeysRead>,
    ApiQuery(query): ApiQuery<KeyListQuery>,
) -> ApiResult<Json<Value>> {
    let status = match query.status.as_deref() {
        None | Some("") => None,
        Some("active") => Some(KeyStatus::Active),
        Some("revoked") => Some(KeyStatus::Revoked),
        Some("expired") => Some(KeyStatus::Expired),
        Some(_) => {
            return Err(ApiError::field(
                "status",
                "must be active, revoked or expired",
            ))
        }
    };
    let page = Page::new(query.limit, query.cursor)?;
    let now = unix_now();
    let keys = state
        .store
        .keys(
            &access.org.id,
            status,
            now,
            page.cursor.as_deref(),
            page.fetch(),
        )
        .await?;
    Ok(Json(page.body(
        keys,
        |k| k.id.clone(),
        |k| key_json(k, now),
    )))
}

async fn existing_key<P: crate::access::Required>(
    state: &AppState,
    access: &OrgAccess<P>,
    key_id: &str,
) -> ApiResult<ApiKeyRecord> {
    let key_id: KeyId = key_id.parse().map_err(|_| ApiError::NotFound)?;
    state
        .store
        .key(&access.org.id, key_id.as_str())
        .await?
        .ok_or(ApiError::NotFound)
}

fn patterns_of(key: &ApiKeyRecord) -> Vec<PermissionPattern> {
    key.scope_list()
        .iter()
        .filter_map(|s| PermissionPattern::parse(s).ok())
        .collect()
}

/// One key.
#[utoipa::path(get, path = "/orgs/{org_id}/keys/{key_id}", tag = "keys",
    params(("org_id" = String, Path, description = "org_…"), ("key_id" = String, Path, description = "key_…")),
    security(("bearer" = ["keys:read"])),
    responses((status = 200, description = "the key"), (status = 404, description = "no such key in this org")))]
async fn get_key(
    State(state): State<AppState>,
    access: OrgAccess<KeysRead>,
    Path(ids): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    let key = existing_key(&state, &access, &ids.1).await?;
    Ok(Json(json!({ "data": key_json(&key, unix_now()) })))
}

/// Changes a key's name, scopes, rate limit, metadata or expiry; takes effect on the next
/// verify on every node. The caller must hold the key's scopes, before and after.
#[utoipa::path(patch, path = "/orgs/{org_id}/keys/{key_id}", tag = "keys", request_body = UpdateKeyBody,
    params(("org_id" = String, Path, description = "org_…"), ("key_id" = String, Path, description = "key_…")),
    security(("bearer" = ["keys:write"])),
    responses((status = 200, description = "the changed key"), (status = 404, description = "no such live key")))]
async fn update_key(
    State(state): State<AppState>,
    access: OrgAccess<KeysWrite>,
    client: ClientInfo,
    Path(ids): Path<(String, String)>,
    ApiJson(body): ApiJson<UpdateKeyBody>,
) -> ApiResult<Json<Value>> {
    let key = existing_key(&state, &access, &ids.1).await?;
    if key.revoked_at.is_some() {
        return Err(ApiError::Conflict("a revoked key cannot be changed".into()));
    }
    access.require_all(&state, &patterns_of(&key))?;
    let now = unix_now();
    let mut errors = FieldErrors::new();
    let mut changed = key.clone();
    if let Some(name) = &body.name {
        if let Some(name) = errors.check("name", single_line(name, 200)) {
            changed.name = name;
        }
    }
    let new_patterns = body
        .scopes
        .as_ref()
        .map(|scopes| parse_permission_list(&state, &mut errors, "scopes", scopes, 100));
    match &body.rate_limit {
        Some(Some(rate)) => {
            check_rate_limit(&mut errors, rate);
            changed.rate_limit = Some(rate.limit as i64);
            changed.rate_window_seconds = Some(rate.window_seconds as i64);
        }
        Some(None) => {
            changed.rate_limit = None;
            changed.rate_window_seconds = None;
        }
        None => {}
    }
    if let Some(metadata) = &body.metadata {
        changed.metadata = check_metadata(&mut errors, metadata);
    }
    match &body.expires_at {
        Some(Some(text)) => changed.expires_at = future_time(&mut errors, "expires_at", text, now),
        Some(None) => changed.expires_at = None,
        None => {}
    }
    errors.into_result()?;
    if let Some(patterns) = &new_patterns {
        access.require_all(&state, patterns)?;
        changed.scopes = permissions_json(patterns);
    }
    changed.updated_at = now;
    let audit = access
        .audit("key.updated", &client)
        .target("key", &key.id)
        .data(json!({
            "name": changed.name,
            "scopes": changed.scope_list(),
            "previous_scopes": key.scope_list(),
            "expires_at": changed.expires_at.map(rfc3339),
            "rate_limit": changed.rate_limit,
            "rate_window_seconds": changed.rate_window_seconds,
        }))
        .build();
    let stored = state
        .store
        .update_key(&changed, &audit)
        .await?
        .ok_or(ApiError::NotFound)?;
    state
        .invalidation
        .publish(Change::Key(key.id.clone()))
        .await;
    Ok(Json(json!({ "data": key_json(&stored, now) })))
}

/// `POST /orgs/{org_id}/keys/{key_id}/rotate`
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateBody {
    /// How long the old secret keeps working (default 86400; 0 = at once; at most 30 days).
    grace_period_seconds: Option<u64>,
}

/// Gives a key a new secret (shown once); the old one keeps working for the grace period.
#[utoipa::path(post, path = "/orgs/{org_id}/keys/{key_id}/rotate", tag = "keys", request_body(content = Option<RotateBody>),
    params(("org_id" = String, Path, description = "org_…"), ("key_id" = String, Path, description = "key_…")),
    security(("bearer" = ["keys:write"])),
    responses((status = 200, description = "the key with its new secret in `key`"), (status = 404, description = "no such live key")))]
async fn rotate_key(
    State(state): State<AppState>,
    access: OrgAccess<KeysWrite>,
    client: ClientInfo,
    Path(ids): Path<(String, String)>,
    body: Bytes,
) -> ApiResult<Response> {
    let body: RotateBody = if body.is_empty() {
        RotateBody::default()
    } else {
        crate::extract::parse_json(&body)?
    };
    let grace = body.grace_period_seconds.unwrap_or(DEFAULT_GRACE_SECONDS);
    if grace > MAX_GRACE_SECONDS {
        return Err(ApiError::field(
            "grace_period_seconds",
            format!("must be at most {MAX_GRACE_SECONDS}"),
        ));
    }
    let key = existing_key(&state, &access, &ids.1).await?;
    // the new secret carries the key's power: only someone holding it may mint it
    access.require_all(&state, &patterns_of(&key))?;
    let environment = Environment::parse(&key.environment).unwrap_or(Environment::Live);
    let secret = apikey::generate(&state.config.key_prefix, environment);
    let parsed = apikey::parse(secret.expose())
        .map_err(|e| ApiError::Internal(anyhow::anyhow!("generated key does not parse: {e}")))?;
    let hash = parsed.hash();
    let now = unix_now();
    let audit = access
        .audit("key.rotated", &client)
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
                start: parsed.start().to_owned(),
                retire_at: now + grace as i64,
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
    let mut data = key_json(&rotated, now);
    data["key"] = Value::from(secret.expose().as_str());
    data["previous_secret_expires_at"] = Value::from(rfc3339(now + grace as i64));
    let mut response = Json(json!({ "data": data })).into_response();
    crate::auth::no_store(&mut response);
    Ok(response)
}

/// Revokes a key at once, on every node; it stays listed as revoked.
#[utoipa::path(delete, path = "/orgs/{org_id}/keys/{key_id}", tag = "keys",
    params(("org_id" = String, Path, description = "org_…"), ("key_id" = String, Path, description = "key_…")),
    security(("bearer" = ["keys:write"])),
    responses((status = 204, description = "revoked"), (status = 404, description = "no such live key")))]
async fn revoke_key(
    State(state): State<AppState>,
    access: OrgAccess<KeysWrite>,
    client: ClientInfo,
    Path(ids): Path<(String, String)>,
) -> ApiResult<Response> {
    let key = existing_key(&state, &access, &ids.1).await?;
    let audit = access
        .audit("key.revoked", &client)
        .target("key", &key.id)
        .build();
    if !state
        .store
        .revoke_key(&access.org.id, &key.id, unix_now(), &audit)
        .await?
    {
        return Err(ApiError::NotFound);
    }
    state.invalidation.publish(Change::Key(key.id)).await;
    Ok(no_content())
}
