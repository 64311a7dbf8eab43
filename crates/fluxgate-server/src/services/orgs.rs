//! Organizations: creating, renaming, deleting, putting on a plan, and their members' roles.
//! Anything verify answers with (name, external id, plan, deletion) is announced to every
//! node's key cache after it commits.

use crate::access::{
    role_patterns, AdminOrgs, AdminPlans, AnyMember, MembersRead, MembersWrite, OperatorAccess,
    OrgAccess, OrgDelete, OrgWrite, Required,
};
use crate::audit::AuditEvent;
use crate::error::{ApiError, ApiResult};
use crate::extract::ClientInfo;
use crate::invalidation::Change;
use crate::state::AppState;
use crate::user_auth::AuthUser;
use fluxgate_core::ids::{OrgId, UserId};
use fluxgate_core::permission::BuiltinRole;
use fluxgate_core::validation::{single_line, FieldErrors};
use fluxgate_store::{MemberChange, MembershipRecord, OrgChanges, OrgRecord, StoreError};
use serde::Deserialize;
use serde_json::json;
use utoipa::ToSchema;

/// A new org (`POST /orgs`).
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewOrg {
    /// A name for people.
    pub name: String,
    /// Operators only (`admin:orgs`).
    pub external_id: Option<String>,
}

/// Changes to an org (`PATCH /orgs/{org_id}`).
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OrgUpdate {
    /// A new name.
    pub name: Option<String>,
    /// The product's own id for this customer; `null` clears it. Operators only (`admin:orgs`).
    #[serde(default, deserialize_with = "crate::extract::present")]
    #[schema(value_type = Option<String>)]
    pub external_id: Option<Option<String>>,
    /// Whether members must have signed in with a second factor to act in the org (their
    /// API keys are unaffected).
    pub require_mfa: Option<bool>,
    /// What a secret scanner's report of one of the org's keys found in public does: `revoke`
    /// it at once (the default) or `flag` it, so verify answers `LEAKED`.
    pub leaked_key_action: Option<String>,
}

fn external_id_conflict(error: StoreError) -> ApiError {
    match error {
        StoreError::Conflict(_) => {
            ApiError::Conflict("another organization has this external_id".into())
        }
        other => other.into(),
    }
}

/// One page of the orgs `user` belongs to, by id, each with their role in it.
pub async fn list_mine(
    state: &AppState,
    user: &AuthUser,
    page: &crate::extract::Paging,
) -> ApiResult<Vec<(OrgRecord, String)>> {
    let mut memberships = state.store.memberships_of_user(user.user_id()).await?;
    memberships.sort_by(|a, b| a.org_id.cmp(&b.org_id));
    let mut orgs = Vec::new();
    let wanted = usize::try_from(page.fetch()).unwrap_or(usize::MAX);
    for m in memberships
        .iter()
        .filter(|m| page.cursor.as_deref().is_none_or(|c| m.org_id.as_str() > c))
        .take(wanted)
    {
        if let Some(org) = state.store.org(&m.org_id).await? {
            orgs.push((org, m.role.clone()));
        }
    }
    Ok(orgs)
}

/// One page of the org's members, by user id.
pub async fn members(
    state: &AppState,
    access: &OrgAccess<MembersRead>,
    page: &crate::extract::Paging,
) -> ApiResult<Vec<fluxgate_store::MemberRecord>> {
    Ok(state
        .store
        .members(&access.org.id, page.cursor.as_deref(), page.fetch())
        .await?)
}

/// One page of every org of the instance, by id (operators); with `search`, those whose name
/// or external id contains it, or whose id it is.
pub async fn list_all(
    state: &AppState,
    _operator: &OperatorAccess<AdminOrgs>,
    search: Option<&str>,
    page: &crate::extract::Paging,
) -> ApiResult<Vec<OrgRecord>> {
    if search.is_some_and(|s| s.chars().count() > 200) {
        return Err(ApiError::field("search", "must be at most 200 characters"));
    }
    Ok(state
        .store
        .orgs(page.cursor.as_deref(), search, page.fetch())
        .await?)
}

/// Disables a customer org — its keys answer `ORG_DISABLED` on every node within the cache's
/// bound — or enables it again. The operator org cannot be disabled (404, as for no org).
pub async fn set_disabled(
    state: &AppState,
    operator: &OperatorAccess<AdminOrgs>,
    client: &ClientInfo,
    org_id: &OrgId,
    disabled: bool,
    now: i64,
) -> ApiResult<OrgRecord> {
    let action = if disabled {
        "org.disabled"
    } else {
        "org.enabled"
    };
    let audit = operator
        .audit(action, Some(org_id), client)
        .at(now)
        .target("org", org_id)
        .build();
    let org = state
        .store
        .set_org_disabled(org_id, disabled, now, &audit)
        .await?
        .ok_or(ApiError::NotFound)?;
    state
        .invalidation
        .publish(Change::Org(org.id.clone()))
        .await;
    Ok(org)
}

/// Creates an org owned by `user`, on the default plan.
pub async fn create(
    state: &AppState,
    user: &AuthUser,
    client: &ClientInfo,
    input: NewOrg,
    now: i64,
) -> ApiResult<OrgRecord> {
    let mut errors = FieldErrors::new();
    let name = errors.check("name", single_line(&input.name, 200));
    let external_id = input
        .external_id
        .as_deref()
        .and_then(|e| errors.check("external_id", single_line(e, 200)));
    errors.into_result()?;
    let Some(name) = name else {
        return Err(ApiError::field("name", "must not be empty"));
    };
    if external_id.is_some()
        && !crate::access::operator_allows(state, user.user_id(), "admin:orgs").await?
    {
        return Err(ApiError::Forbidden("admin:orgs".into()));
    }
    let org = OrgRecord {
        id: OrgId::generate(),
        name,
        external_id,
        plan: state.config.default_plan().to_owned(),
        is_operator: false,
        created_at: now,
        updated_at: now,
        deleted_at: None,
        disabled_at: None,
        require_mfa: false,
        leaked_key_action: "revoke".into(),
    };
    let audit = AuditEvent::new("org.created", Some(user.user_id()), client)
        .at(now)
        .org(Some(&org.id))
        .target("org", &org.id)
        .data(json!({ "name": org.name, "external_id": org.external_id }))
        .build();
    state
        .store
        .create_org(&org, user.user_id(), &audit)
        .await
        .map_err(external_id_conflict)?;
    let change = Change::User(user.user_id().clone());
    state.invalidation.publish(change).await;
    Ok(org)
}

/// Renames an org, sets its external id (operators only) or whether its members must sign in
/// with a second factor; warm keys answer the new values on their next verify, on every node.
pub async fn update(
    state: &AppState,
    access: &OrgAccess<OrgWrite>,
    client: &ClientInfo,
    input: OrgUpdate,
    now: i64,
) -> ApiResult<OrgRecord> {
    let mut errors = FieldErrors::new();
    let name = input
        .name
        .as_deref()
        .and_then(|n| errors.check("name", single_line(n, 200)));
    let external_id = match &input.external_id {
        Some(Some(id)) => errors.check("external_id", single_line(id, 200)).map(Some),
        Some(None) => Some(None),
        None => None,
    };
    if let Some(action) = &input.leaked_key_action {
        if !["revoke", "flag"].contains(&action.as_str()) {
            errors.add("leaked_key_action", "must be `revoke` or `flag`");
        }
    }
    errors.into_result()?;
    if external_id.is_some() && !access.caller.operator_allows(state, "admin:orgs").await? {
        return Err(access.caller.lacks("admin:orgs"));
    }
    let changes = OrgChanges {
        name,
        external_id,
        require_mfa: input.require_mfa,
        leaked_key_action: input.leaked_key_action.clone(),
    };
    let audit = access
        .audit("org.updated", client)
        .at(now)
        .target("org", &access.org.id)
        .data(
            json!({ "name": changes.name, "external_id": changes.external_id,
                      "require_mfa": changes.require_mfa,
                      "leaked_key_action": changes.leaked_key_action }),
        )
        .build();
    let org = state
        .store
        .update_org(&access.org.id, &changes, now, &audit)
        .await
        .map_err(external_id_conflict)?
        .ok_or(ApiError::NotFound)?;
    state
        .invalidation
        .publish(Change::Org(org.id.clone()))
        .await;
    Ok(org)
}

/// Deletes an org: its keys are revoked and its invitations cancelled, everywhere at once. The
/// operator org cannot be deleted.
pub async fn delete(
    state: &AppState,
    access: &OrgAccess<OrgDelete>,
    client: &ClientInfo,
    now: i64,
) -> ApiResult<()> {
    if access.org.is_operator {
        return Err(ApiError::Conflict(
            "the operator organization cannot be deleted".into(),
        ));
    }
    let audit = access
        .audit("org.deleted", client)
        .at(now)
        .target("org", &access.org.id)
        .build();
    if !state.store.delete_org(&access.org.id, now, &audit).await? {
        return Err(ApiError::NotFound);
    }
    state
        .invalidation
        .publish(Change::Org(access.org.id.clone()))
        .await;
    Ok(())
}

/// Puts an org on a configured plan; its keys' limits, quotas and entitlements change on their
/// next verify, on every node.
pub async fn assign_plan(
    state: &AppState,
    operator: &OperatorAccess<AdminPlans>,
    client: &ClientInfo,
    org_id: &OrgId,
    plan: &str,
    now: i64,
) -> ApiResult<OrgRecord> {
    if state.config.plan(plan).is_none() {
        let names: Vec<&str> = state.config.plans.iter().map(|p| p.name.as_str()).collect();
        return Err(ApiError::field(
            "plan",
            format!("no such plan; configured: {}", names.join(", ")),
        ));
    }
    let previous = state.store.org(org_id).await?.ok_or(ApiError::NotFound)?;
    let audit = operator
        .audit("org.plan_changed", Some(org_id), client)
        .at(now)
        .target("org", org_id)
        .data(json!({ "from": previous.plan, "to": plan }))
        .build();
    let org = state
        .store
        .set_org_plan(org_id, plan, now, &audit)
        .await?
        .ok_or(ApiError::NotFound)?;
    state
        .invalidation
        .publish(Change::Org(org.id.clone()))
        .await;
    Ok(org)
}

/// Checks that `role` exists in the org and that the caller holds everything it grants.
pub async fn grantable_role<P: Required>(
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
async fn outranked_member<P: Required>(
    state: &AppState,
    access: &OrgAccess<P>,
    user_id: &UserId,
) -> ApiResult<String> {
    let membership = state
        .store
        .membership(&access.org.id, user_id)
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

fn member_change(change: MemberChange) -> ApiResult<()> {
    match change {
        MemberChange::Done => Ok(()),
        MemberChange::NotFound => Err(ApiError::NotFound),
        MemberChange::LastOwner => Err(last_owner()),
    }
}

/// Gives a member another role. Nobody can grant a role holding more than they do, or change
/// the role of a member who holds more than they do; the last owner stays an owner.
pub async fn change_member_role(
    state: &AppState,
    access: &OrgAccess<MembersWrite>,
    client: &ClientInfo,
    user_id: &UserId,
    role: &str,
    now: i64,
) -> ApiResult<MembershipRecord> {
    let from = outranked_member(state, access, user_id).await?;
    grantable_role(state, access, role).await?;
    let audit = access
        .audit("member.role_changed", client)
        .at(now)
        .target("user", user_id)
        .data(json!({ "from": from, "to": role }))
        .build();
    member_change(
        state
            .store
            .change_member_role(&access.org.id, user_id, role, &audit)
            .await?,
    )?;
    let change = Change::User(user_id.clone());
    state.invalidation.publish(change).await;
    state
        .store
        .membership(&access.org.id, user_id)
        .await?
        .ok_or(ApiError::NotFound)
}

/// Removes a member (`members:write`, and outranking them), or lets the caller leave when
/// `user_id` is their own (any member). The last owner can do neither.
pub async fn remove_member(
    state: &AppState,
    access: &OrgAccess<AnyMember>,
    client: &ClientInfo,
    user_id: &UserId,
    now: i64,
) -> ApiResult<()> {
    let leaving = access.user_id() == Some(user_id) && access.role.is_some();
    if !leaving {
        if !access.allows(state, "members:write") {
            return Err(access.caller.lacks("members:write"));
        }
        outranked_member(state, access, user_id).await?;
    }
    let action = if leaving {
        "member.left"
    } else {
        "member.removed"
    };
    let audit = access
        .audit(action, client)
        .at(now)
        .target("user", user_id)
        .build();
    member_change(
        state
            .store
            .remove_member(&access.org.id, user_id, &audit)
            .await?,
    )?;
    let change = Change::User(user_id.clone());
    state.invalidation.publish(change).await;
    Ok(())
}
