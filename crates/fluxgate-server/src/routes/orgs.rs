//! `/orgs` and `/orgs/{org_id}/members`: creating, reading, renaming and deleting
//! organizations, their members and roles of members; `/admin/orgs` for operators.

use crate::access::{
    AdminOrgs, AnyMember, MembersRead, MembersWrite, OperatorAccess, OrgAccess, OrgDelete, OrgRead,
    OrgWrite,
};
use crate::clock::{self, rfc3339};
use crate::error::ApiResult;
use crate::extract::{ApiJson, ApiQuery, ClientInfo, IdPath, Paging};
use crate::routes::no_content;
use crate::services::orgs::{self, NewOrg, OrgUpdate};
use crate::state::AppState;
use crate::user_auth::AuthUser;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use fluxgate_core::permission::BuiltinRole;
use fluxgate_proto::{Data, ErrorEnvelope, Member, MemberRole, Org, Page};
use fluxgate_store::{MemberRecord, OrgId, OrgRecord, UserId};
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// The routes of this module.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_my_orgs, create_org))
        .routes(routes!(get_org, update_org, delete_org))
        .routes(routes!(list_members))
        .routes(routes!(change_member_role, remove_member))
        .routes(routes!(list_all_orgs))
        .routes(routes!(disable_org))
        .routes(routes!(enable_org))
}

/// An org as the API shows it; `role` is the caller's, when a member.
pub fn org_json(org: &OrgRecord, role: Option<&str>) -> Org {
    Org {
        id: org.id.to_string(),
        name: org.name.clone(),
        external_id: org.external_id.clone(),
        plan: org.plan.clone(),
        operator: org.is_operator,
        created_at: rfc3339(org.created_at),
        updated_at: rfc3339(org.updated_at),
        role: role.map(str::to_owned),
        disabled_at: org.disabled_at.map(rfc3339),
        require_mfa: org.require_mfa,
        leaked_key_action: org.leaked_key_action.clone(),
    }
}

fn member_json(member: &MemberRecord) -> Member {
    Member {
        user_id: member.user_id.to_string(),
        email: member.email.clone(),
        name: member.name.clone(),
        role: member.role.clone(),
        joined_at: rfc3339(member.created_at),
        second_factor: member.second_factor,
    }
}

/// `?limit=&cursor=`
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// 1–200, default 50.
    limit: Option<u32>,
    /// The previous page's `next_cursor`.
    cursor: Option<String>,
}

impl PageQuery {
    /// The validated page.
    pub fn page(self) -> ApiResult<Paging> {
        Paging::new(self.limit, self.cursor)
    }
}

/// The orgs the caller belongs to.
#[utoipa::path(get, path = "/orgs", tag = "orgs", params(PageQuery),
    security(("bearer" = [])),
    responses((status = 200, description = "the caller's orgs, by id", body = Page<Org>)))]
async fn list_my_orgs(
    State(state): State<AppState>,
    user: AuthUser,
    ApiQuery(query): ApiQuery<PageQuery>,
) -> ApiResult<Json<Page<Org>>> {
    let page = query.page()?;
    let orgs = orgs::list_mine(&state, &user, &page).await?;
    Ok(Json(page.body(
        orgs,
        |(org, _)| org.id.to_string(),
        |(org, role)| org_json(org, Some(role)),
    )))
}

/// Creates an org owned by the caller.
#[utoipa::path(post, path = "/orgs", tag = "orgs", request_body = NewOrg,
    security(("bearer" = [])),
    responses((status = 201, description = "created; the caller is its owner", body = Data<Org>),
              (status = 409, description = "external id taken"), (status = 422, description = "invalid fields")))]
async fn create_org(
    State(state): State<AppState>,
    user: AuthUser,
    client: ClientInfo,
    ApiJson(body): ApiJson<NewOrg>,
) -> ApiResult<Response> {
    let org = orgs::create(&state, &user, &client, body, clock::now()).await?;
    Ok((
        StatusCode::CREATED,
        Json(Data {
            data: org_json(&org, Some(BuiltinRole::Owner.name())),
        }),
    )
        .into_response())
}

/// One org.
#[utoipa::path(get, path = "/orgs/{org_id}", tag = "orgs",
    params(("org_id" = String, Path, description = "org_…")),
    security(("bearer" = ["org:read"])),
    responses((status = 200, description = "the org", body = Data<Org>), (status = 404, description = "no such org of yours", body = ErrorEnvelope)))]
async fn get_org(access: OrgAccess<OrgRead>) -> Json<Data<Org>> {
    Json(Data {
        data: org_json(&access.org, access.role.as_deref()),
    })
}

/// Renames an org or sets its external id.
#[utoipa::path(patch, path = "/orgs/{org_id}", tag = "orgs", request_body = OrgUpdate,
    params(("org_id" = String, Path, description = "org_…")),
    security(("bearer" = ["org:write"])),
    responses((status = 200, description = "the updated org", body = Data<Org>), (status = 409, description = "external id taken", body = ErrorEnvelope)))]
async fn update_org(
    State(state): State<AppState>,
    access: OrgAccess<OrgWrite>,
    client: ClientInfo,
    ApiJson(body): ApiJson<OrgUpdate>,
) -> ApiResult<Json<Data<Org>>> {
    let org = orgs::update(&state, &access, &client, body, clock::now()).await?;
    Ok(Json(Data {
        data: org_json(&org, access.role.as_deref()),
    }))
}

/// Deletes an org (owners): its keys are revoked and its invitations cancelled. The operator
/// org cannot be deleted.
#[utoipa::path(delete, path = "/orgs/{org_id}", tag = "orgs",
    params(("org_id" = String, Path, description = "org_…")),
    security(("bearer" = ["org:delete"])),
    responses((status = 204, description = "deleted"), (status = 409, description = "the operator org")))]
async fn delete_org(
    State(state): State<AppState>,
    access: OrgAccess<OrgDelete>,
    client: ClientInfo,
) -> ApiResult<Response> {
    orgs::delete(&state, &access, &client, clock::now()).await?;
    Ok(no_content())
}

/// The org's members, by user id.
#[utoipa::path(get, path = "/orgs/{org_id}/members", tag = "orgs", params(("org_id" = String, Path, description = "org_…"), PageQuery),
    security(("bearer" = ["members:read"])),
    responses((status = 200, description = "members with their roles", body = Page<Member>)))]
async fn list_members(
    State(state): State<AppState>,
    access: OrgAccess<MembersRead>,
    ApiQuery(query): ApiQuery<PageQuery>,
) -> ApiResult<Json<Page<Member>>> {
    let page = query.page()?;
    let members = orgs::members(&state, &access, &page).await?;
    Ok(Json(page.body(
        members,
        |m| m.user_id.to_string(),
        member_json,
    )))
}

/// `PATCH /orgs/{org_id}/members/{user_id}`
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangeRoleBody {
    /// A built-in role (`owner`, `admin`, `developer`, `viewer`) or a custom role's name.
    role: String,
}

/// Gives a member another role. Nobody can grant a role holding more than they do, or change
/// the role of a member who holds more than they do.
#[utoipa::path(patch, path = "/orgs/{org_id}/members/{user_id}", tag = "orgs", request_body = ChangeRoleBody,
    params(("org_id" = String, Path, description = "org_…"), ("user_id" = String, Path, description = "usr_…")),
    security(("bearer" = ["members:write"])),
    responses((status = 200, description = "the member with the new role", body = Data<MemberRole>), (status = 403, description = "escalation", body = ErrorEnvelope),
              (status = 409, description = "last owner")))]
async fn change_member_role(
    State(state): State<AppState>,
    access: OrgAccess<MembersWrite>,
    client: ClientInfo,
    IdPath(ids): IdPath<(OrgId, UserId)>,
    ApiJson(body): ApiJson<ChangeRoleBody>,
) -> ApiResult<Json<Data<MemberRole>>> {
    let member =
        orgs::change_member_role(&state, &access, &client, &ids.1, &body.role, clock::now())
            .await?;
    Ok(Json(Data {
        data: MemberRole {
            user_id: member.user_id.into(),
            role: member.role,
            joined_at: rfc3339(member.created_at),
        },
    }))
}

/// Removes a member (`members:write`, and outranking them), or leaves the org when the
/// `user_id` is the caller's own (any member).
#[utoipa::path(delete, path = "/orgs/{org_id}/members/{user_id}", tag = "orgs",
    params(("org_id" = String, Path, description = "org_…"), ("user_id" = String, Path, description = "usr_… (your own to leave)")),
    security(("bearer" = ["members:write"])),
    responses((status = 204, description = "removed"), (status = 409, description = "last owner")))]
async fn remove_member(
    State(state): State<AppState>,
    access: OrgAccess<AnyMember>,
    client: ClientInfo,
    IdPath(ids): IdPath<(OrgId, UserId)>,
) -> ApiResult<Response> {
    orgs::remove_member(&state, &access, &client, &ids.1, clock::now()).await?;
    Ok(no_content())
}

/// `?search=&limit=&cursor=`
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct OrgSearchQuery {
    /// Only orgs whose name or external id contains this (case-insensitive), or whose id it is.
    search: Option<String>,
    /// 1–200, default 50.
    limit: Option<u32>,
    /// The previous page's `next_cursor`.
    cursor: Option<String>,
}

/// Every org of the instance (operators).
#[utoipa::path(get, path = "/admin/orgs", tag = "admin", params(OrgSearchQuery),
    security(("bearer" = ["admin:orgs"])),
    responses((status = 200, description = "all orgs, by id", body = Page<Org>)))]
async fn list_all_orgs(
    State(state): State<AppState>,
    operator: OperatorAccess<AdminOrgs>,
    ApiQuery(query): ApiQuery<OrgSearchQuery>,
) -> ApiResult<Json<Page<Org>>> {
    let page = Paging::new(query.limit, query.cursor)?;
    let search = query
        .search
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty());
    let all = orgs::list_all(&state, &operator, search, &page).await?;
    Ok(Json(page.body(
        all,
        |o| o.id.to_string(),
        |o| org_json(o, None),
    )))
}

/// Disables a customer org: its keys answer `ORG_DISABLED` until it is enabled again.
#[utoipa::path(post, path = "/admin/orgs/{org_id}/disable", tag = "admin",
    params(("org_id" = String, Path, description = "org_…")),
    security(("bearer" = ["admin:orgs"])),
    responses((status = 200, description = "the org, disabled", body = Data<Org>), (status = 404, description = "no such customer org", body = ErrorEnvelope)))]
async fn disable_org(
    State(state): State<AppState>,
    operator: OperatorAccess<AdminOrgs>,
    client: ClientInfo,
    IdPath(org_id): IdPath<OrgId>,
) -> ApiResult<Json<Data<Org>>> {
    let org = orgs::set_disabled(&state, &operator, &client, &org_id, true, clock::now()).await?;
    Ok(Json(Data {
        data: org_json(&org, None),
    }))
}

/// Enables a disabled org again.
#[utoipa::path(post, path = "/admin/orgs/{org_id}/enable", tag = "admin",
    params(("org_id" = String, Path, description = "org_…")),
    security(("bearer" = ["admin:orgs"])),
    responses((status = 200, description = "the org, enabled", body = Data<Org>), (status = 404, description = "no such customer org", body = ErrorEnvelope)))]
async fn enable_org(
    State(state): State<AppState>,
    operator: OperatorAccess<AdminOrgs>,
    client: ClientInfo,
    IdPath(org_id): IdPath<OrgId>,
) -> ApiResult<Json<Data<Org>>> {
    let org = orgs::set_disabled(&state, &operator, &client, &org_id, false, clock::now()).await?;
    Ok(Json(Data {
        data: org_json(&org, None),
    }))
}
