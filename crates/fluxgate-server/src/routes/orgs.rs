//! `/orgs` and `/orgs/{org_id}/members`: creating, reading, renaming and deleting
//! organizations, their members and roles of members; `/admin/orgs` for operators.

use crate::access::{
    role_patterns, AdminOrgs, AnyMember, MembersRead, MembersWrite, OperatorAccess, OrgAccess,
    OrgDelete, OrgRead, OrgWrite,
};
use crate::auth::{rfc3339, unix_now, AuthUser};
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, ApiQuery, ClientInfo, Page};
use crate::routes::no_content;
use crate::state::AppState;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use fluxgate_core::ids::{OrgId, UserId};
use fluxgate_core::permission::BuiltinRole;
use fluxgate_core::validation::{single_line, FieldErrors};
use fluxgate_store::{MemberChange, MemberRecord, OrgChanges, OrgRecord, StoreError};
use serde::Deserialize;
use serde_json::{json, Value};
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
}

/// An org as the API shows it; `role` is the caller's, when a member.
pub fn org_json(org: &OrgRecord, role: Option<&str>) -> Value {
    json!({
        "id": org.id,
        "name": org.name,
        "external_id": org.external_id,
        "plan": org.plan,
        "operator": org.is_operator,
        "created_at": rfc3339(org.created_at),
        "updated_at": rfc3339(org.updated_at),
        "role": role,
    })
}

fn member_json(member: &MemberRecord) -> Value {
    json!({
        "user_id": member.user_id,
        "email": member.email,
        "name": member.name,
        "role": member.role,
        "joined_at": rfc3339(member.created_at),
    })
}

/// `?limit=&cursor=`
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct PageQuery {
    /// 1–200, default 50.
    limit: Option<u32>,
    /// The previous page's `next_cursor`.
    cursor: Option<String>,
}

impl PageQuery {
    /// The validated page.
    pub fn page(self) -> ApiResult<Page> {
        Page::new(self.limit, self.cursor)
    }
}

/// The orgs the caller belongs to.
#[utoipa::path(get, path = "/orgs", tag = "orgs", params(PageQuery),
    security(("bearer" = [])),
    responses((status = 200, description = "the caller's orgs, by id")))]
async fn list_my_orgs(
    State(state): State<AppState>,
    user: AuthUser,
    ApiQuery(query): ApiQuery<PageQuery>,
) -> ApiResult<Json<Value>> {
    let page = query.page()?;
    let mut memberships = state.store.memberships_of_user(user.user_id()).await?;
    memberships.sort_by(|a, b| a.org_id.cmp(&b.org_id));
    let mut orgs = Vec::new();
    for m in memberships
        .iter()
        .filter(|m| page.cursor.as_deref().is_none_or(|c| m.org_id.as_str() > c))
        .take(page.fetch() as usize)
    {
        if let Some(org) = state.store.org(&m.org_id).await? {
            orgs.push((org, m.role.clone()));
        }
    }
    Ok(Json(page.body(
        orgs,
        |(org, _)| org.id.clone(),
        |(org, role)| org_json(org, Some(role)),
    )))
}

/// `POST /orgs`
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateOrgBody {
    name: String,
    /// Operators only (`admin:orgs`).
    external_id: Option<String>,
}

/// Creates an org owned by the caller.
#[utoipa::path(post, path = "/orgs", tag = "orgs", request_body = CreateOrgBody,
    security(("bearer" = [])),
    responses((status = 201, description = "created; the caller is its owner"),
              (status = 409, description = "external id taken"), (status = 422, description = "invalid fields")))]
async fn create_org(
    State(state): State<AppState>,
    user: AuthUser,
    client: ClientInfo,
    ApiJson(body): ApiJson<CreateOrgBody>,
) -> ApiResult<Response> {
    let mut errors = FieldErrors::new();
    let name = errors.check("name", single_line(&body.name, 200));
    let external_id = body
        .external_id
        .as_deref()
        .and_then(|e| errors.check("external_id", single_line(e, 200)));
    errors.into_result()?;
    let Some(name) = name else {
        return Err(ApiError::field("name", "must not be empty"));
    };
    if external_id.is_some()
        && !crate::access::operator_allows(&state, user.user_id(), "admin:orgs").await?
    {
        return Err(ApiError::Forbidden("admin:orgs".into()));
    }
    let now = unix_now();
    let org = OrgRecord {
        id: OrgId::generate().to_string(),
        name,
        external_id,
        plan: state.config.default_plan().to_owned(),
        is_operator: false,
        created_at: now,
        updated_at: now,
        deleted_at: None,
    };
    let audit = crate::audit::AuditEvent::new("org.created", Some(user.user_id()), &client)
        .org(Some(&org.id))
        .target("org", &org.id)
        .data(json!({ "name": org.name, "external_id": org.external_id }))
        .build();
    state
        .store
        .create_org(&org, user.user_id(), &audit)
        .await
        .map_err(external_id_conflict)?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "data": org_json(&org, Some(BuiltinRole::Owner.name())) })),
    )
        .into_response())
}

fn external_id_conflict(error: StoreError) -> ApiError {
    match error {
        StoreError::Conflict(_) => {
            ApiError::Conflict("another organization has this external_id".into())
        }
        other => other.into(),
    }
}

/// One org.
#[utoipa::path(get, path = "/orgs/{org_id}", tag = "orgs",
    params(("org_id" = String, Path, description = "org_…")),
    security(("bearer" = ["org:read"])),
    responses((status = 200, description = "the org"), (status = 404, description = "no such org of yours")))]
async fn get_org(access: OrgAccess<OrgRead>) -> Json<Value> {
    Json(json!({ "data": org_json(&access.org, access.role.as_deref()) }))
}

/// `PATCH /orgs/{org_id}`
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateOrgBody {
    name: Option<String>,
    /// The product's own id for this customer; `null` clears it. Operators only (`admin:orgs`).
    #[serde(default, deserialize_with = "crate::extract::present")]
    #[schema(value_type = Option<String>)]
    external_id: Option<Option<String>>,
}

/// Renames an org or sets its external id.
#[utoipa::path(patch, path = "/orgs/{org_id}", tag = "orgs", request_body = UpdateOrgBody,
    params(("org_id" = String, Path, description = "org_…")),
    security(("bearer" = ["org:write"])),
    responses((status = 200, description = "the updated org"), (status = 409, description = "external id taken")))]
async fn update_org(
    State(state): State<AppState>,
    access: OrgAccess<OrgWrite>,
    client: ClientInfo,
    ApiJson(body): ApiJson<UpdateOrgBody>,
) -> ApiResult<Json<Value>> {
    let mut errors = FieldErrors::new();
    let name = body
        .name
        .as_deref()
        .and_then(|n| errors.check("name", single_line(n, 200)));
    let external_id = match &body.external_id {
        Some(Some(id)) => errors.check("external_id", single_line(id, 200)).map(Some),
        Some(None) => Some(None),
        None => None,
    };
    errors.into_result()?;
    if external_id.is_some() && !access.caller.operator_allows(&state, "admin:orgs").await? {
        return Err(access.caller.lacks("admin:orgs"));
    }
    let changes = OrgChanges { name, external_id };
    let audit = access
        .audit("org.updated", &client)
        .target("org", &access.org.id)
        .data(json!({ "name": changes.name, "external_id": changes.external_id }))
        .build();
    let org = state
        .store
        .update_org(&access.org.id, &changes, unix_now(), &audit)
        .await
        .map_err(external_id_conflict)?
        .ok_or(ApiError::NotFound)?;
    state
        .invalidation
        .publish(crate::invalidation::Change::Org(org.id.clone()))
        .await;
    Ok(Json(
        json!({ "data": org_json(&org, access.role.as_deref()) }),
    ))
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
    if access.org.is_operator {
        return Err(ApiError::Conflict(
            "the operator organization cannot be deleted".into(),
        ));
    }
    let audit = access
        .audit("org.deleted", &client)
        .target("org", &access.org.id)
        .build();
    if !state
        .store
        .delete_org(&access.org.id, unix_now(), &audit)
        .await?
    {
        return Err(ApiError::NotFound);
    }
    state
        .invalidation
        .publish(crate::invalidation::Change::Org(access.org.id.clone()))
        .await;
    Ok(no_content())
}

/// The org's members, by user id.
#[utoipa::path(get, path = "/orgs/{org_id}/members", tag = "orgs", params(("org_id" = String, Path, description = "org_…"), PageQuery),
    security(("bearer" = ["members:read"])),
    responses((status = 200, description = "members with their roles")))]
async fn list_members(
    State(state): State<AppState>,
    access: OrgAccess<MembersRead>,
    ApiQuery(query): ApiQuery<PageQuery>,
) -> ApiResult<Json<Value>> {
    let page = query.page()?;
    let members = state
        .store
        .members(&access.org.id, page.cursor.as_deref(), page.fetch())
        .await?;
    Ok(Json(page.body(members, |m| m.user_id.clone(), member_json)))
}

/// `PATCH /orgs/{org_id}/members/{user_id}`
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangeRoleBody {
    /// A built-in role (`owner`, `admin`, `developer`, `viewer`) or a custom role's name.
    role: String,
}

/// Checks that `role` exists in the org and that the caller holds everything it grants.
pub async fn grantable_role<P: crate::access::Required>(
    state: &AppState,
    access: &OrgAccess<P>,
    role: &str,
) -> ApiResult<()> {
    let exists = BuiltinRole::from_name(role).is_some()
        || state
            .store
            .custom_role_permissions(&access.org.id, role)
            .await?
            .is_some();
    if !exists {
        return Err(ApiError::field(
            "role",
            format!("no role `{role}` in this organization"),
        ));
    }
    let patterns = role_patterns(state, &access.org.id, role).await?;
    if let Some(missing) = patterns
        .iter()
        .find(|p| !access.covers(state, std::slice::from_ref(p)))
    {
        return Err(ApiError::Forbidden(missing.as_str().to_owned()));
    }
    Ok(())
}

/// The member's current role, after checking the caller outranks it (holds all it grants).
async fn outranked_member<P: crate::access::Required>(
    state: &AppState,
    access: &OrgAccess<P>,
    user_id: &str,
) -> ApiResult<String> {
    let user_id: UserId = user_id.parse().map_err(|_| ApiError::NotFound)?;
    let membership = state
        .store
        .membership(&access.org.id, user_id.as_str())
        .await?
        .ok_or(ApiError::NotFound)?;
    let patterns = role_patterns(state, &access.org.id, &membership.role).await?;
    if let Some(missing) = patterns
        .iter()
        .find(|p| !access.covers(state, std::slice::from_ref(p)))
    {
        return Err(ApiError::Forbidden(missing.as_str().to_owned()));
    }
    Ok(membership.role)
}

fn last_owner() -> ApiError {
    ApiError::Conflict(
        "the organization's last owner can neither leave nor be demoted; make someone else owner first".into(),
    )
}

/// Gives a member another role. Nobody can grant a role holding more than they do, or change
/// the role of a member who holds more than they do.
#[utoipa::path(patch, path = "/orgs/{org_id}/members/{user_id}", tag = "orgs", request_body = ChangeRoleBody,
    params(("org_id" = String, Path, description = "org_…"), ("user_id" = String, Path, description = "usr_…")),
    security(("bearer" = ["members:write"])),
    responses((status = 200, description = "the member with the new role"), (status = 403, description = "escalation"),
              (status = 409, description = "last owner")))]
async fn change_member_role(
    State(state): State<AppState>,
    access: OrgAccess<MembersWrite>,
    client: ClientInfo,
    Path(ids): Path<(String, String)>,
    ApiJson(body): ApiJson<ChangeRoleBody>,
) -> ApiResult<Json<Value>> {
    let user_id = ids.1;
    let from = outranked_member(&state, &access, &user_id).await?;
    grantable_role(&state, &access, &body.role).await?;
    let audit = access
        .audit("member.role_changed", &client)
        .target("user", &user_id)
        .data(json!({ "from": from, "to": body.role }))
        .build();
    match state
        .store
        .change_member_role(&access.org.id, &user_id, &body.role, &audit)
        .await?
    {
        MemberChange::Done => {}
        MemberChange::NotFound => return Err(ApiError::NotFound),
        MemberChange::LastOwner => return Err(last_owner()),
    }
    let member = state
        .store
        .membership(&access.org.id, &user_id)
        .await?
        .ok_or(ApiError::NotFound)?;
    Ok(Json(json!({ "data": {
        "user_id": member.user_id,
        "role": member.role,
        "joined_at": rfc3339(member.created_at),
    }})))
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
    Path(ids): Path<(String, String)>,
) -> ApiResult<Response> {
    let user_id = ids.1;
    let leaving = access.user_id() == Some(user_id.as_str()) && access.role.is_some();
    if !leaving {
        if !access.allows(&state, "members:write") {
            return Err(access.caller.lacks("members:write"));
        }
        outranked_member(&state, &access, &user_id).await?;
    }
    let action = if leaving {
        "member.left"
    } else {
        "member.removed"
    };
    let audit = access
        .audit(action, &client)
        .target("user", &user_id)
        .build();
    match state
        .store
        .remove_member(&access.org.id, &user_id, &audit)
        .await?
    {
        MemberChange::Done => Ok(no_content()),
        MemberChange::NotFound => Err(ApiError::NotFound),
        MemberChange::LastOwner => Err(last_owner()),
    }
}

/// Every org of the instance (operators).
#[utoipa::path(get, path = "/admin/orgs", tag = "admin", params(PageQuery),
    security(("bearer" = ["admin:orgs"])),
    responses((status = 200, description = "all orgs, by id")))]
async fn list_all_orgs(
    State(state): State<AppState>,
    _operator: OperatorAccess<AdminOrgs>,
    ApiQuery(query): ApiQuery<PageQuery>,
) -> ApiResult<Json<Value>> {
    let page = query.page()?;
    let orgs = state
        .store
        .orgs(page.cursor.as_deref(), page.fetch())
        .await?;
    Ok(Json(page.body(
        orgs,
        |o| o.id.clone(),
        |o| org_json(o, None),
    )))
}
