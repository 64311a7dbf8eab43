//! Authorization: the permission each management route requires, declared in its handler's
//! signature as `OrgAccess<P>` or `OperatorAccess<P>` (so a handler cannot run unchecked), and
//! what a role grants. `docs/permissions.md` lists route → permission; a test keeps it true.

use crate::audit::AuditEvent;
use crate::auth::AuthUser;
use crate::error::{ApiError, ApiResult};
use crate::extract::ClientInfo;
use crate::state::AppState;
use axum::extract::{FromRequestParts, RawPathParams};
use axum::http::request::Parts;
use fluxgate_core::ids::OrgId;
use fluxgate_core::permission::{BuiltinRole, Grants, PermissionPattern};
use fluxgate_store::{MembershipRecord, OrgRecord};
use std::marker::PhantomData;

/// A permission a route requires, as a type; `None` means "any member of the org".
pub trait Required: Send + Sync + 'static {
    /// The permission, or `None` for membership alone.
    const PERMISSION: Option<&'static str>;
}

macro_rules! permissions {
    ($($(#[$doc:meta])* $name:ident = $permission:literal),* $(,)?) => {
        $( $(#[$doc])* pub struct $name;
           impl Required for $name { const PERMISSION: Option<&'static str> = Some($permission); } )*
    };
}

permissions! {
    /// `org:read`
    OrgRead = "org:read",
    /// `org:write`
    OrgWrite = "org:write",
    /// `org:delete`
    OrgDelete = "org:delete",
    /// `members:read`
    MembersRead = "members:read",
    /// `members:write`
    MembersWrite = "members:write",
    /// `roles:read`
    RolesRead = "roles:read",
    /// `roles:write`
    RolesWrite = "roles:write",
    /// `audit:read`
    AuditRead = "audit:read",
    /// `admin:orgs` (operator only)
    AdminOrgs = "admin:orgs",
    /// `admin:users` (operator only)
    AdminUsers = "admin:users",
}

/// Membership alone, for what every member may do (leave, read their own standing).
pub struct AnyMember;

impl Required for AnyMember {
    const PERMISSION: Option<&'static str> = None;
}

/// The caller's standing in the org named by the route's `{org_id}`, checked to hold `P`.
/// Someone who is not a member gets 404 (the org's existence is not revealed); a member lacking
/// `P` gets 403 naming it. Operators holding `admin:orgs` act in any customer org with every
/// org permission (never the operator-only ones).
pub struct OrgAccess<P: Required> {
    /// The org (not deleted).
    pub org: OrgRecord,
    /// The acting user.
    pub user_id: String,
    /// The caller's role in the org; `None` for an operator acting from outside.
    pub role: Option<String>,
    /// What the caller holds in the org.
    pub grants: Grants,
    required: PhantomData<P>,
}

impl<P: Required> OrgAccess<P> {
    /// Does the caller hold every one of `patterns` (the rule against escalation)?
    pub fn covers(&self, state: &AppState, patterns: &[PermissionPattern]) -> bool {
        self.grants.covers_all(patterns, &state.config.catalog)
    }

    /// Does the caller hold this concrete permission?
    pub fn allows(&self, state: &AppState, permission: &str) -> bool {
        self.grants.allows(permission, &state.config.catalog)
    }

    /// An audit entry for an action of the caller in this org.
    pub fn audit(&self, action: &str, client: &ClientInfo) -> AuditEvent {
        AuditEvent::new(action, Some(&self.user_id), client).org(Some(&self.org.id))
    }
}

impl<P: Required> FromRequestParts<AppState> for OrgAccess<P> {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let user = AuthUser::from_request_parts(parts, state).await?;
        let params = RawPathParams::from_request_parts(parts, state)
            .await
            .map_err(|_| ApiError::NotFound)?;
        let org_id = params
            .iter()
            .find(|(name, _)| *name == "org_id")
            .map(|(_, value)| value.to_owned())
            .ok_or(ApiError::NotFound)?;
        let org_id: OrgId = org_id.parse().map_err(|_| ApiError::NotFound)?;
        let org = state
            .store
            .org(org_id.as_str())
            .await?
            .ok_or(ApiError::NotFound)?;
        let (role, grants) = match state.store.membership(&org.id, user.user_id()).await? {
            Some(membership) => (
                Some(membership.role.clone()),
                grants_of(state, &membership).await?,
            ),
            None if !org.is_operator
                && operator_allows(state, user.user_id(), "admin:orgs").await? =>
            {
                (None, Grants::everything(false))
            }
            None => return Err(ApiError::NotFound),
        };
        if let Some(permission) = P::PERMISSION {
            if !grants.allows(permission, &state.config.catalog) {
                return Err(ApiError::Forbidden(permission.into()));
            }
        }
        Ok(Self {
            org,
            user_id: user.user_id().to_owned(),
            role,
            grants,
            required: PhantomData,
        })
    }
}

/// A member of the operator org holding the instance-wide permission `P`; anyone else gets
/// 403 naming it.
pub struct OperatorAccess<P: Required> {
    /// The acting user.
    pub user_id: String,
    required: PhantomData<P>,
}

impl<P: Required> OperatorAccess<P> {
    /// An audit entry for an operator action (on `org_id`, when it concerns one org).
    pub fn audit(&self, action: &str, org_id: Option<&str>, client: &ClientInfo) -> AuditEvent {
        AuditEvent::new(action, Some(&self.user_id), client).org(org_id)
    }
}

impl<P: Required> FromRequestParts<AppState> for OperatorAccess<P> {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let user = AuthUser::from_request_parts(parts, state).await?;
        let permission = P::PERMISSION.unwrap_or("admin:orgs");
        if !operator_allows(state, user.user_id(), permission).await? {
            return Err(ApiError::Forbidden(permission.into()));
        }
        Ok(Self {
            user_id: user.user_id().to_owned(),
            required: PhantomData,
        })
    }
}

/// Does the user's role in the operator org grant `permission`?
pub async fn operator_allows(state: &AppState, user_id: &str, permission: &str) -> ApiResult<bool> {
    let Some(operator_org) = state.store.operator_org_id().await? else {
        return Ok(false);
    };
    let Some(membership) = state.store.membership(&operator_org, user_id).await? else {
        return Ok(false);
    };
    Ok(grants_of(state, &membership)
        .await?
        .allows(permission, &state.config.catalog))
}

/// The patterns of a role of an org: a built-in role's, or a custom role's from the database
/// (an unknown name grants nothing).
pub async fn role_patterns(
    state: &AppState,
    org_id: &str,
    role: &str,
) -> ApiResult<Vec<PermissionPattern>> {
    Ok(match BuiltinRole::from_name(role) {
        Some(builtin) => builtin.patterns(&state.config.catalog),
        None => state
            .store
            .custom_role_permissions(org_id, role)
            .await?
            .unwrap_or_default()
            .iter()
            .filter_map(|p| PermissionPattern::parse(p).ok())
            .collect(),
    })
}

/// What a membership grants, from its built-in or custom role.
pub async fn grants_of(state: &AppState, membership: &MembershipRecord) -> ApiResult<Grants> {
    let patterns = role_patterns(state, &membership.org_id, &membership.role).await?;
    Ok(Grants::new(patterns, membership.is_operator))
}
