//! `/orgs/{org_id}/roles`: the built-in roles and the org's custom roles. Nobody can create or
//! change a role so that it grants more than they hold themselves.

use crate::access::{parse_permission_list, permissions_json, OrgAccess, RolesRead, RolesWrite};
use crate::auth::{rfc3339, unix_now};
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, ClientInfo};
use crate::routes::no_content;
use crate::state::AppState;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use fluxgate_core::ids::RoleId;
use fluxgate_core::permission::{BuiltinRole, PermissionPattern};
use fluxgate_core::validation::{single_line, slug, FieldErrors};
use fluxgate_store::{RoleDeletion, RoleRecord, StoreError};
use serde::Deserialize;
use serde_json::{json, Value};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// The routes of this module.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_roles, create_role))
        .routes(routes!(update_role, delete_role))
}

fn role_json(role: &RoleRecord) -> Value {
    json!({
        "id": role.id,
        "name": role.name,
        "description": role.description,
        "permissions": role.permission_list(),
        "builtin": false,
        "created_at": rfc3339(role.created_at),
        "updated_at": rfc3339(role.updated_at),
    })
}

/// The built-in roles, then the org's custom roles by name.
#[utoipa::path(get, path = "/orgs/{org_id}/roles", tag = "orgs",
    params(("org_id" = String, Path, description = "org_…")),
    security(("bearer" = ["roles:read"])),
    responses((status = 200, description = "roles with their permissions")))]
async fn list_roles(
    State(state): State<AppState>,
    access: OrgAccess<RolesRead>,
) -> ApiResult<Json<Value>> {
    let mut data: Vec<Value> = BuiltinRole::ALL
        .iter()
        .map(|role| {
            let patterns = role.patterns(&state.config.catalog);
            json!({
                "id": null,
                "name": role.name(),
                "description": null,
                "permissions": patterns.iter().map(PermissionPattern::as_str).collect::<Vec<_>>(),
                "builtin": true,
            })
        })
        .collect();
    data.extend(
        state
            .store
            .roles(&access.org.id)
            .await?
            .iter()
            .map(role_json),
    );
    Ok(Json(json!({ "data": data, "next_cursor": null })))
}

/// `POST /orgs/{org_id}/roles`
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateRoleBody {
    /// `a-z 0-9 _ -`, unique in the org, not a built-in role's name.
    name: String,
    description: Option<String>,
    /// Permissions or patterns (`keys:*`) the role grants; each must name known permissions.
    permissions: Vec<String>,
}

/// `PATCH /orgs/{org_id}/roles/{role_id}`: absent fields stay as they are.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateRoleBody {
    name: Option<String>,
    description: Option<String>,
    permissions: Option<Vec<String>>,
}

/// Validates a role's name, description and permissions.
fn validate_role(
    state: &AppState,
    name: &str,
    description: Option<&str>,
    permissions: &[String],
) -> ApiResult<(String, Option<String>, Vec<PermissionPattern>)> {
    let mut errors = FieldErrors::new();
    let name = errors.check("name", slug(name));
    if name.as_deref().and_then(BuiltinRole::from_name).is_some() {
        errors.add("name", "is the name of a built-in role");
    }
    let description = description.and_then(|d| errors.check("description", single_line(d, 500)));
    let patterns = parse_permission_list(state, &mut errors, "permissions", permissions, 200);
    errors.into_result()?;
    Ok((name.unwrap_or_default(), description, patterns))
}

fn name_conflict(error: StoreError) -> ApiError {
    match error {
        StoreError::Conflict(_) => {
            ApiError::Conflict("the organization has a role of this name".into())
        }
        other => other.into(),
    }
}

/// Creates a custom role.
#[utoipa::path(post, path = "/orgs/{org_id}/roles", tag = "orgs", request_body = CreateRoleBody,
    params(("org_id" = String, Path, description = "org_…")),
    security(("bearer" = ["roles:write"])),
    responses((status = 201, description = "created"), (status = 403, description = "grants more than the caller holds"),
              (status = 409, description = "name taken")))]
async fn create_role(
    State(state): State<AppState>,
    access: OrgAccess<RolesWrite>,
    client: ClientInfo,
    ApiJson(body): ApiJson<CreateRoleBody>,
) -> ApiResult<Response> {
    let (name, description, patterns) = validate_role(
        &state,
        &body.name,
        body.description.as_deref(),
        &body.permissions,
    )?;
    access.require_all(&state, &patterns)?;
    let now = unix_now();
    let role = RoleRecord {
        id: RoleId::generate().to_string(),
        org_id: access.org.id.clone(),
        name,
        description,
        permissions: permissions_json(&patterns),
        created_at: now,
        updated_at: now,
    };
    let audit = access
        .audit("role.created", &client)
        .target("role", &role.id)
        .data(json!({ "name": role.name, "permissions": role.permission_list() }))
        .build();
    state
        .store
        .create_role(&role, &audit)
        .await
        .map_err(name_conflict)?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "data": role_json(&role) })),
    )
        .into_response())
}

async fn existing_role(
    state: &AppState,
    access: &OrgAccess<RolesWrite>,
    role_id: &str,
) -> ApiResult<RoleRecord> {
    let role_id: RoleId = role_id.parse().map_err(|_| ApiError::NotFound)?;
    let role = state
        .store
        .role(&access.org.id, role_id.as_str())
        .await?
        .ok_or(ApiError::NotFound)?;
    let current: Vec<PermissionPattern> = role
        .permission_list()
        .iter()
        .filter_map(|p| PermissionPattern::parse(p).ok())
        .collect();
    access.require_all(state, &current)?;
    Ok(role)
}

/// Changes a custom role; its members' permissions change with it. The caller must hold
/// everything the role grants, before and after.
#[utoipa::path(patch, path = "/orgs/{org_id}/roles/{role_id}", tag = "orgs", request_body = UpdateRoleBody,
    params(("org_id" = String, Path, description = "org_…"), ("role_id" = String, Path, description = "rol_…")),
    security(("bearer" = ["roles:write"])),
    responses((status = 200, description = "updated"), (status = 404, description = "no such role")))]
async fn update_role(
    State(state): State<AppState>,
    access: OrgAccess<RolesWrite>,
    client: ClientInfo,
    Path(ids): Path<(String, String)>,
    ApiJson(body): ApiJson<UpdateRoleBody>,
) -> ApiResult<Json<Value>> {
    let role_id = ids.1;
    let role = existing_role(&state, &access, &role_id).await?;
    let (name, description, patterns) = validate_role(
        &state,
        body.name.as_deref().unwrap_or(&role.name),
        body.description.as_deref().or(role.description.as_deref()),
        &body.permissions.unwrap_or_else(|| role.permission_list()),
    )?;
    access.require_all(&state, &patterns)?;
    let changed = RoleRecord {
        name,
        description,
        permissions: permissions_json(&patterns),
        updated_at: unix_now(),
        ..role.clone()
    };
    let audit = access
        .audit("role.updated", &client)
        .target("role", &role.id)
        .data(json!({
            "name": changed.name,
            "previous_name": role.name,
            "permissions": changed.permission_list(),
            "previous_permissions": role.permission_list(),
        }))
        .build();
    let updated = state
        .store
        .update_role(&changed, &audit)
        .await
        .map_err(name_conflict)?
        .ok_or(ApiError::NotFound)?;
    Ok(Json(json!({ "data": role_json(&updated) })))
}

/// Deletes a custom role that no member or open invitation holds.
#[utoipa::path(delete, path = "/orgs/{org_id}/roles/{role_id}", tag = "orgs",
    params(("org_id" = String, Path, description = "org_…"), ("role_id" = String, Path, description = "rol_…")),
    security(("bearer" = ["roles:write"])),
    responses((status = 204, description = "deleted"), (status = 409, description = "still held")))]
async fn delete_role(
    State(state): State<AppState>,
    access: OrgAccess<RolesWrite>,
    client: ClientInfo,
    Path(ids): Path<(String, String)>,
) -> ApiResult<Response> {
    let role_id = ids.1;
    let role = existing_role(&state, &access, &role_id).await?;
    let audit = access
        .audit("role.deleted", &client)
        .target("role", &role.id)
        .data(json!({ "name": role.name }))
        .build();
    match state
        .store
        .delete_role(&access.org.id, &role.id, &audit)
        .await?
    {
        RoleDeletion::Deleted => Ok(no_content()),
        RoleDeletion::NotFound => Err(ApiError::NotFound),
        RoleDeletion::InUse => Err(ApiError::Conflict(
            "members or open invitations hold this role; give them another role first".into(),
        )),
    }
}
