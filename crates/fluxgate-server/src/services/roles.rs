//! Custom roles of an org: create, change, delete. Nobody can create or change a role so that
//! it grants more than they hold themselves; a role still held cannot be deleted.

use crate::access::{parse_permission_list, permissions_json, OrgAccess, RolesRead, RolesWrite};
use crate::error::{ApiError, ApiResult};
use crate::extract::ClientInfo;
use crate::invalidation::Change;
use crate::state::AppState;
use fluxgate_core::ids::RoleId;
use fluxgate_core::permission::{BuiltinRole, PermissionPattern};
use fluxgate_core::validation::{single_line, slug, FieldErrors};
use fluxgate_store::{RoleDeletion, RoleRecord, StoreError};
use serde::Deserialize;
use serde_json::json;
use utoipa::ToSchema;

/// A new custom role (`POST /orgs/{org_id}/roles`).
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewRole {
    /// `a-z 0-9 _ -`, unique in the org, not a built-in role's name.
    pub name: String,
    /// What the role is for.
    pub description: Option<String>,
    /// Permissions or patterns (`keys:*`) the role grants; each must name known permissions.
    pub permissions: Vec<String>,
}

/// Changes to a role (`PATCH /orgs/{org_id}/roles/{role_id}`): absent fields stay.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RoleChanges {
    /// A new name.
    pub name: Option<String>,
    /// A new description.
    pub description: Option<String>,
    /// New permissions.
    pub permissions: Option<Vec<String>>,
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

/// The org's custom roles, by name.
pub async fn list(state: &AppState, access: &OrgAccess<RolesRead>) -> ApiResult<Vec<RoleRecord>> {
    Ok(state.store.roles(&access.org.id).await?)
}

/// Creates a custom role granting no more than the caller holds.
pub async fn create(
    state: &AppState,
    access: &OrgAccess<RolesWrite>,
    client: &ClientInfo,
    input: NewRole,
    now: i64,
) -> ApiResult<RoleRecord> {
    let (name, description, patterns) = validate_role(
        state,
        &input.name,
        input.description.as_deref(),
        &input.permissions,
    )?;
    access.require_all(state, &patterns)?;
    let role = RoleRecord {
        id: RoleId::generate(),
        org_id: access.org.id.clone(),
        name,
        description,
        permissions: permissions_json(&patterns),
        created_at: now,
        updated_at: now,
    };
    let audit = access
        .audit("role.created", client)
        .at(now)
        .target("role", &role.id)
        .data(json!({ "name": role.name, "permissions": role.permission_list() }))
        .build();
    state
        .store
        .create_role(&role, &audit)
        .await
        .map_err(name_conflict)?;
    let change = Change::Org(access.org.id.clone());
    state.invalidation.publish(change).await;
    Ok(role)
}

/// A custom role of the org whose every permission the caller holds.
/// A custom role of the org that the caller may change: one granting nothing they lack (404 for
/// another org's or an unknown role, 403 naming what they lack).
pub async fn editable(
    state: &AppState,
    access: &OrgAccess<RolesWrite>,
    role_id: &RoleId,
) -> ApiResult<RoleRecord> {
    let role = state
        .store
        .role(&access.org.id, role_id)
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
pub async fn update(
    state: &AppState,
    access: &OrgAccess<RolesWrite>,
    client: &ClientInfo,
    role_id: &RoleId,
    changes: RoleChanges,
    now: i64,
) -> ApiResult<RoleRecord> {
    let role = editable(state, access, role_id).await?;
    let (name, description, patterns) = validate_role(
        state,
        changes.name.as_deref().unwrap_or(&role.name),
        changes
            .description
            .as_deref()
            .or(role.description.as_deref()),
        &changes
            .permissions
            .unwrap_or_else(|| role.permission_list()),
    )?;
    access.require_all(state, &patterns)?;
    let changed = RoleRecord {
        name,
        description,
        permissions: permissions_json(&patterns),
        updated_at: now,
        ..role.clone()
    };
    let audit = access
        .audit("role.updated", client)
        .at(now)
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
    // its members' permissions changed with it
    let change = Change::Org(access.org.id.clone());
    state.invalidation.publish(change).await;
    Ok(updated)
}

/// Deletes a custom role that no member or open invitation holds (else 409).
pub async fn delete(
    state: &AppState,
    access: &OrgAccess<RolesWrite>,
    client: &ClientInfo,
    role_id: &RoleId,
    now: i64,
) -> ApiResult<()> {
    let role = editable(state, access, role_id).await?;
    let audit = access
        .audit("role.deleted", client)
        .at(now)
        .target("role", &role.id)
        .data(json!({ "name": role.name }))
        .build();
    match state
        .store
        .delete_role(&access.org.id, &role.id, &audit)
        .await?
    {
        RoleDeletion::Deleted => {
            let change = Change::Org(access.org.id.clone());
            state.invalidation.publish(change).await;
            Ok(())
        }
        RoleDeletion::NotFound => Err(ApiError::NotFound),
        RoleDeletion::InUse => Err(ApiError::Conflict(
            "members or open invitations hold this role; give them another role first".into(),
        )),
    }
}
