//! `/orgs/{org_id}/keys`: the HTTP face of [`services::keys`](crate::services::keys) —
//! extract, call the service, serialise.

use crate::access::{KeysRead, KeysWrite, OrgAccess};
use crate::clock::{self, rfc3339};
use crate::error::ApiResult;
use crate::extract::{ApiJson, ApiQuery, ClientInfo, IdPath, MaybeJson, Paging};
use crate::routes::no_content;
use crate::services::keys::{self, KeyWithSecret};
use crate::state::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use fluxgate_core::secret::ExposeSecret;
use fluxgate_proto::{
    Data, ErrorEnvelope, IssuedKey, Key, KeyChanges, KeySecret, NewKey, Page, RateLimit, RotateKey,
};
use fluxgate_store::{ApiKeyRecord, KeyId, KeySecretRecord, OrgId};
use serde::Deserialize;

use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// The routes of this module.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_keys, create_key))
        .routes(routes!(get_key, update_key, revoke_key))
        .routes(routes!(rotate_key))
        .routes(routes!(key_secrets))
}

/// A secret of a key as the API shows it (its start, never the secret or its hash).
pub fn secret_view(secret: &KeySecretRecord, now: i64) -> KeySecret {
    let status = match secret.retires_at {
        None => "current",
        Some(at) if at > now => "retiring",
        Some(_) => "retired",
    };
    KeySecret {
        start: secret.start.clone(),
        status: status.to_owned(),
        created_at: rfc3339(secret.created_at),
        retires_at: secret.retires_at.map(rfc3339),
        last_used_at: secret.last_used_at.map(rfc3339),
    }
}

/// A key as the API shows it (never its secret).
pub fn key_view(key: &ApiKeyRecord, now: i64) -> Key {
    Key {
        id: key.id.to_string(),
        org_id: key.org_id.to_string(),
        name: key.name.clone(),
        start: key.start.clone(),
        environment: key.environment.as_str().to_owned(),
        scopes: key.scope_list(),
        metadata: key.metadata_json(),
        rate_limit: match (key.rate_limit, key.rate_window_seconds) {
            (Some(limit), Some(window)) => Some(RateLimit {
                limit: u64::try_from(limit).unwrap_or(0),
                window_seconds: u64::try_from(window).unwrap_or(0),
                exact: key.rate_exact,
            }),
            _ => None,
        },
        credits: crate::services::credits::view(key, now),
        ratelimits: serde_json::from_str(&key.named_limits).unwrap_or_default(),
        ip_allowlist: serde_json::from_str(&key.ip_allowlist).unwrap_or_default(),
        leaked_at: key.leaked_at.map(rfc3339),
        status: key.status(now).to_owned(),
        created_by: key.created_by.clone(),
        created_at: rfc3339(key.created_at),
        updated_at: rfc3339(key.updated_at),
        expires_at: key.expires_at.map(rfc3339),
        revoked_at: key.revoked_at.map(rfc3339),
        last_used_at: key.last_used_at.map(rfc3339),
    }
}

/// A key with its one-time secret, answered `no-store`.
fn with_secret(issued: &KeyWithSecret, status: StatusCode, now: i64) -> Response {
    let data = IssuedKey {
        info: key_view(&issued.key, now),
        key: issued.secret.expose_secret().to_owned(),
        previous_secret_expires_at: issued.previous_secret_expires_at.map(rfc3339),
    };
    let mut response = (status, Json(Data { data })).into_response();
    crate::user_auth::no_store(&mut response);
    response
}

/// Issues a key; the secret is in the answer once and never again.
#[utoipa::path(post, path = "/orgs/{org_id}/keys", tag = "keys", request_body = NewKey,
    params(("org_id" = String, Path, description = "org_…")),
    security(("bearer" = ["keys:write"])),
    responses((status = 201, description = "the key, with its secret in `key` (shown once)", body = Data<IssuedKey>),
              (status = 403, description = "a scope the caller does not hold"), (status = 422, description = "invalid fields")))]
async fn create_key(
    State(state): State<AppState>,
    access: OrgAccess<KeysWrite>,
    client: ClientInfo,
    ApiJson(body): ApiJson<NewKey>,
) -> ApiResult<Response> {
    let now = clock::now();
    let issued = keys::issue(&state, &access, &client, body, now).await?;
    Ok(with_secret(&issued, StatusCode::CREATED, now))
}

/// `?status=&limit=&cursor=`
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct KeyListQuery {
    /// `active`, `revoked` or `expired`.
    status: Option<String>,
    /// Only keys whose name or start contains this (case-insensitive).
    search: Option<String>,
    /// 1–200, default 50.
    limit: Option<u32>,
    /// The previous page's `next_cursor`.
    cursor: Option<String>,
}

/// The org's keys, by id.
#[utoipa::path(get, path = "/orgs/{org_id}/keys", tag = "keys",
    params(("org_id" = String, Path, description = "org_…"), KeyListQuery),
    security(("bearer" = ["keys:read"])),
    responses((status = 200, description = "keys (never their secrets)", body = Page<Key>)))]
async fn list_keys(
    State(state): State<AppState>,
    access: OrgAccess<KeysRead>,
    ApiQuery(query): ApiQuery<KeyListQuery>,
) -> ApiResult<Json<Page<Key>>> {
    let status = keys::parse_status(query.status.as_deref())?;
    let page = Paging::new(query.limit, query.cursor)?;
    let now = clock::now();
    let search = query
        .search
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty());
    let found = keys::list(&state, &access, status, search, &page, now).await?;
    Ok(Json(page.body(
        found,
        |k| k.id.to_string(),
        |k| key_view(k, now),
    )))
}

/// One key.
#[utoipa::path(get, path = "/orgs/{org_id}/keys/{key_id}", tag = "keys",
    params(("org_id" = String, Path, description = "org_…"), ("key_id" = String, Path, description = "key_…")),
    security(("bearer" = ["keys:read"])),
    responses((status = 200, description = "the key", body = Data<Key>), (status = 404, description = "no such key in this org", body = ErrorEnvelope)))]
async fn get_key(
    State(state): State<AppState>,
    access: OrgAccess<KeysRead>,
    IdPath(ids): IdPath<(OrgId, KeyId)>,
) -> ApiResult<Json<Data<Key>>> {
    let key = keys::get(&state, &access, &ids.1).await?;
    Ok(Json(Data {
        data: key_view(&key, clock::now()),
    }))
}

/// A key's secrets, the current one first: after a rotation, whether the old secret is still being called
/// before it stops working.
#[utoipa::path(get, path = "/orgs/{org_id}/keys/{key_id}/secrets", tag = "keys",
    params(("org_id" = String, Path, description = "org_…"), ("key_id" = String, Path, description = "key_…")),
    security(("bearer" = ["keys:read"])),
    responses((status = 200, description = "the key's secrets (starts only): the current one, then those rotated out, newest first", body = Data<Vec<KeySecret>>),
              (status = 404, description = "no such key in this org", body = ErrorEnvelope)))]
async fn key_secrets(
    State(state): State<AppState>,
    access: OrgAccess<KeysRead>,
    IdPath(ids): IdPath<(OrgId, KeyId)>,
) -> ApiResult<Json<Data<Vec<KeySecret>>>> {
    let now = clock::now();
    let found = keys::secrets(&state, &access, &ids.1).await?;
    Ok(Json(Data {
        data: found.iter().map(|s| secret_view(s, now)).collect(),
    }))
}

/// Changes a key's name, scopes, rate limit, metadata or expiry; takes effect on the next
/// verify on every node. The caller must hold the key's scopes, before and after.
#[utoipa::path(patch, path = "/orgs/{org_id}/keys/{key_id}", tag = "keys", request_body = KeyChanges,
    params(("org_id" = String, Path, description = "org_…"), ("key_id" = String, Path, description = "key_…")),
    security(("bearer" = ["keys:write"])),
    responses((status = 200, description = "the changed key", body = Data<Key>), (status = 404, description = "no such live key", body = ErrorEnvelope)))]
async fn update_key(
    State(state): State<AppState>,
    access: OrgAccess<KeysWrite>,
    client: ClientInfo,
    IdPath(ids): IdPath<(OrgId, KeyId)>,
    ApiJson(body): ApiJson<KeyChanges>,
) -> ApiResult<Json<Data<Key>>> {
    let now = clock::now();
    let stored = keys::update(&state, &access, &client, &ids.1, body, now).await?;
    Ok(Json(Data {
        data: key_view(&stored, now),
    }))
}

/// Gives a key a new secret (shown once); the old one keeps working for the grace period.
#[utoipa::path(post, path = "/orgs/{org_id}/keys/{key_id}/rotate", tag = "keys", request_body(content = Option<RotateKey>),
    params(("org_id" = String, Path, description = "org_…"), ("key_id" = String, Path, description = "key_…")),
    security(("bearer" = ["keys:write"])),
    responses((status = 200, description = "the key with its new secret in `key`", body = Data<IssuedKey>), (status = 404, description = "no such live key", body = ErrorEnvelope)))]
async fn rotate_key(
    State(state): State<AppState>,
    access: OrgAccess<KeysWrite>,
    client: ClientInfo,
    IdPath(ids): IdPath<(OrgId, KeyId)>,
    MaybeJson(body): MaybeJson<RotateKey>,
) -> ApiResult<Response> {
    let body = body.unwrap_or_default();
    let now = clock::now();
    let rotated = keys::rotate(
        &state,
        &access,
        &client,
        &ids.1,
        body.grace_period_seconds,
        now,
    )
    .await?;
    Ok(with_secret(&rotated, StatusCode::OK, now))
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
    IdPath(ids): IdPath<(OrgId, KeyId)>,
) -> ApiResult<Response> {
    keys::revoke(&state, &access, &client, &ids.1, clock::now()).await?;
    Ok(no_content())
}
