//! `/orgs/{org_id}/roles`: the built-in roles and the org's custom roles. Nobody can create or
//! change a role so that it grants more than they hold themselves.

use crate::access::{OrgAccess, RolesRead, RolesWrite};
use crate::clock::{self, rfc3339};
use crate::error::ApiResult;
use crate::extract::{ApiJson, ClientInfo, IdPath};
use crate::routes::no_content;
use crate::services::roles::{self, NewRole, RoleChanges};
use crate::state::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use fluxgate_core::permission::BuiltinRole;
use fluxgate_proto::{Data, Page, Role};
use fluxgate_store::{OrgId, RoleId, RoleRecord};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// The routes of this module.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_roles, create_role))
        .routes(routes!(update_role, delete_role))
}

fn role_json(role: &RoleRecord) -> Role {
    Role {
        id: Some(role.id.to_string()),
        name: role.name.clone(),
        description: role.description.clone(),
        permissions: role.permission_list(),
        builtin: false,
        created_at: Some(rfc3339(role.created_at)),
        updated_at: Some(rfc3339(role.updated_at)),
    }
}

/// The built-in roles, then the org's custom roles by name.
#[utoipa::path(get, path = "/orgs/{org_id}/roles", tag = "orgs",
    params(("org_id" = String, Path, description = "org_…")),
    security(("bearer" = ["roles:read"])),
    responses((status = 200, description = "roles with their permissions", body = Page<Role>)))]
async fn list_roles(
    State(state): State<AppState>,
    access: OrgAccess<RolesRead>,
) -> ApiResult<Json<Page<Role>>> {
    let mut data: Vec<Role> = BuiltinRole::ALL
        .iter()
        .map(|role| Role {
            id: None,
            name: role.name().to_owned(),
            description: None,
            permissions: role
                .patterns(&state.config.catalog)
                .iter()
                .map(|p| p.as_str().to_owned())
                .collect(),
            builtin: true,
            created_at: None,
            updated_at: None,
        })
        .collect();
    data.extend(roles::list(&state, &access).await?.iter().map(role_json));
    Ok(Json(Page {
        data,
        next_cursor: None,
    }))
}

/// Creates a custom role.
#[utoipa::path(post, path = "/orgs/{org_id}/roles", tag = "orgs", request_body = NewRole,
    params(("org_id" = String, Path, description = "org_…")),
    security(("bearer" = ["roles:write"])),
    responses((status = 201, description = "created", body = Data<Role>), (status = 403, description = "grants more than the caller holds"),
              (status = 409, description = "name taken")))]
async fn create_role(
    State(state): State<AppState>,
    access: OrgAccess<RolesWrite>,
    client: ClientInfo,
    ApiJson(body): ApiJson<NewRole>,
) -> ApiResult<Response> {
    let role = roles::create(&state, &access, &client, body, clock::now()).await?;
    Ok((
        StatusCode::CREATED,
        Json(Data {
            data: role_json(&role),
        }),
    )
        .into_response())
}

/// Changes a custom role; its members' permissions change with it. The caller must hold
/// everything the role grants, before and after.
#[utoipa::path(patch, path = "/orgs/{org_id}/roles/{role_id}", tag = "orgs", request_body = RoleChanges,
    params(("org_id" = String, Path, description = "org_…"), ("role_id" = String, Path, description = "rol_…")),
    security(("bearer" = ["roles:write"])),
    responses((status = 200, description = "updated", body = Data<Role>), (status = 404, description = "no such role")))]
async fn update_role(
    State(state): State<AppState>,
    access: OrgAccess<RolesWrite>,
    client: ClientInfo,
    IdPath(ids): IdPath<(OrgId, RoleId)>,
    ApiJson(body): ApiJson<RoleChanges>,
) -> ApiResult<Json<Data<Role>>> {
    let updated = roles::update(&state, &access, &client, &ids.1, body, clock::now()).await?;
    Ok(Json(Data {
        data: role_json(&updated),
    }))
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
    IdPath(ids): IdPath<(OrgId, RoleId)>,
) -> ApiResult<Response> {
    roles::delete(&state, &access, &client, &ids.1, clock::now()).await?;
    Ok(no_content())
}
