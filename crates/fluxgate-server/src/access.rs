//! Authorization: the permission each management route requires, declared in its handler's
//! signature as `OrgAccess<P>` or `OperatorAccess<P>` (so a handler cannot run unchecked), and
//! what a role grants. `docs/permissions.md` lists route → permission; a test keeps it true.

use crate::audit::{Actor, AuditEvent};
use crate::error::{ApiError, ApiResult};
use crate::extract::ClientInfo;
use crate::keycache::{CachedKey, KeyHash};
use crate::state::AppState;
use crate::user_auth::AuthUser;
use axum::extract::{FromRequestParts, RawPathParams};
use axum::http::request::Parts;
use axum::http::{header, HeaderName};
use fluxgate_core::apikey;
use fluxgate_core::ids::{OrgId, UserId};
use fluxgate_core::permission::{BuiltinRole, Grants, PermissionPattern};
use fluxgate_core::stored::ActorKind;
use fluxgate_core::validation::FieldErrors;
use fluxgate_store::{MembershipRecord, OrgRecord};
use std::marker::PhantomData;
use std::sync::Arc;

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
    /// `admin:plans` (operator only)
    AdminPlans = "admin:plans",
    /// `admin:flags` (operator only)
    AdminFlags = "admin:flags",
    /// `webhooks:read`
    WebhooksRead = "webhooks:read",
    /// `webhooks:write`
    WebhooksWrite = "webhooks:write",
    /// `keys:read`
    KeysRead = "keys:read",
    /// `keys:write`
    KeysWrite = "keys:write",
    /// `keys:verify` (operator only)
    KeysVerify = "keys:verify",
    /// `usage:read`
    UsageRead = "usage:read",
}

/// Membership alone, for what every member may do (leave, read their own standing).
pub struct AnyMember;

impl Required for AnyMember {
    const PERMISSION: Option<&'static str> = None;
}

/// Who is calling: a user (access token) or an API key.
pub enum Caller {
    /// Authenticated by an access token.
    User(Box<AuthUser>),
    /// Authenticated by an API key (`X-API-Key`, or a bearer value that parses as a key).
    Key(Arc<CachedKey>),
}

impl Caller {
    /// The caller as an audit actor.
    pub fn actor(&self) -> Actor {
        match self {
            Self::User(user) => Actor {
                kind: ActorKind::User,
                id: user.user_id().to_string(),
            },
            Self::Key(key) => Actor {
                kind: ActorKind::Key,
                id: key.key_id.to_string(),
            },
        }
    }

    /// The refusal for a missing permission: `FORBIDDEN` for users, `INSUFFICIENT_SCOPE` for keys.
    pub fn lacks(&self, permission: &str) -> ApiError {
        match self {
            Self::User(_) => ApiError::Forbidden(permission.to_owned()),
            Self::Key(_) => ApiError::InsufficientScope(permission.to_owned()),
        }
    }

    /// Does the caller hold an instance-wide (operator) permission?
    pub async fn operator_allows(&self, state: &AppState, permission: &str) -> ApiResult<bool> {
        match self {
            Self::User(user) => operator_allows(state, user.user_id(), permission).await,
            Self::Key(key) => Ok(key.operator_allows(permission, &state.config.catalog)),
        }
    }
}

/// The header an API key may come in instead of `Authorization` (a constant: a name given as
/// text is parsed on every lookup).
const X_API_KEY: HeaderName = HeaderName::from_static("x-api-key");

/// The API key a request presents, if any: `X-API-Key`, or an `Authorization: Bearer` value
/// that parses as a key (anything else there is an access token).
pub fn presented_key(parts: &Parts) -> Option<&str> {
    let value_of = |name| {
        parts
            .headers
            .get(name)
            .map(|value| value.to_str().unwrap_or(""))
    };
    apikey::presented_key(value_of(&X_API_KEY), value_of(&header::AUTHORIZATION))
}

/// Authenticates the caller (key or user) and charges its rate limit.
pub async fn authenticate(parts: &mut Parts, state: &AppState) -> ApiResult<Caller> {
    match presented_key(parts) {
        Some(text) => {
            let now = crate::clock::now();
            let key = verified_key_then(state, parts, text, now, Arc::clone)
                .await?
                .ok_or(ApiError::Unauthorized)?;
            if let Some(slot) = parts.extensions.get::<crate::request_limits::LimitSlot>() {
                slot.set_key(&key.org_id, &key.key_id); // attributed once answered
            }
            let (rate_key, quota, sharing) = (&key.rate_key, key.quota, key.sharing);
            crate::request_limits::enforce(state, parts, rate_key, quota, sharing, 1).await?;
            if key.use_due(now) {
                state.usage.touch_key(&key.key_id, now);
            }
            Ok(Caller::Key(key))
        }
        None => {
            let user = AuthUser::from_request_parts(parts, state).await?;
            Ok(Caller::User(Box::new(user)))
        }
    }
}

/// `decide` on the context of a presented key that verifies at `now` (well-formed, known, not
/// revoked, expired, rotated out or of a deleted org), or None; 403 `FORBIDDEN_IP` when the key
/// has an IP allowlist and the request comes from outside it. A key this worker thread
/// authenticated a moment ago is recalled by comparing what was presented
/// ([`KeyCache::recall`](crate::keycache::KeyCache::recall)) — a caller sending the same key on
/// every request is not hashed and looked up each time — and still checked for expiry and its IP
/// allowlist on every request.
pub async fn verified_key_then<R>(
    state: &AppState,
    parts: &Parts,
    text: &str,
    now: i64,
    decide: impl Fn(&Arc<CachedKey>) -> R,
) -> ApiResult<Option<R>> {
    let standing = |key: &Arc<CachedKey>| {
        if key.refusal(now).is_some() {
            return Ok(None);
        }
        let allowlist = &key.ip_allowlist;
        if !allowlist.is_open() && !allowlist.admits(crate::extract::caller_ip(parts, state)) {
            return Err(ApiError::ForbiddenIp);
        }
        Ok(Some(decide(key)))
    };
    if let Some(recalled) = state.keys.recall(text, standing) {
        return recalled;
    }
    let hash = KeyHash::of(text);
    match crate::services::verify::presented_hashed(state, text, &hash, now).await? {
        crate::services::verify::Presented::Known(key) => {
            state.keys.remember(text, &hash, &key);
            standing(&key)
        }
        _ => Ok(None),
    }
}

/// The caller's standing in the org named by the route's `{org_id}`, checked to hold `P`.
/// Someone who is not a member gets 404 (the org's existence is not revealed); a member lacking
/// `P` gets 403 naming it (`INSUFFICIENT_SCOPE` for a key). A key acts only in its own org.
/// Operators holding `admin:orgs` (users, or operator keys with that scope) act in any customer
/// org with every org permission (never the operator-only ones).
pub struct OrgAccess<P: Required> {
    /// The org (not deleted).
    pub org: OrgRecord,
    /// Who is calling.
    pub caller: Caller,
    /// The caller's role in the org; `None` for keys and for operators acting from outside.
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

    /// The refusal naming the first of `patterns` the caller does not hold, if any.
    pub fn require_all(&self, state: &AppState, patterns: &[PermissionPattern]) -> ApiResult<()> {
        match patterns
            .iter()
            .find(|p| !self.covers(state, std::slice::from_ref(p)))
        {
            Some(missing) => Err(self.caller.lacks(missing.as_str())),
            None => Ok(()),
        }
    }

    /// The acting user, when a user acts.
    pub fn user_id(&self) -> Option<&UserId> {
        match &self.caller {
            Caller::User(user) => Some(user.user_id()),
            Caller::Key(_) => None,
        }
    }

    /// An audit entry for an action of the caller in this org.
    pub fn audit(&self, action: &str, client: &ClientInfo) -> AuditEvent {
        AuditEvent::by(action, &self.caller.actor(), client).org(Some(&self.org.id))
    }
}

impl<P: Required> FromRequestParts<AppState> for OrgAccess<P> {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let caller = authenticate(parts, state).await?;
        let params = RawPathParams::from_request_parts(parts, state)
            .await
            .map_err(|_| ApiError::NotFound)?;
        let org_id = params
            .iter()
            .find(|(name, _)| *name == "org_id")
            .map(|(_, value)| value.to_owned())
            .ok_or(ApiError::NotFound)?;
        let org_id: OrgId = org_id.parse().map_err(|_| ApiError::NotFound)?;
        Self::check(state, caller, &org_id).await
    }
}

impl<P: Required> OrgAccess<P> {
    /// The caller's standing in `org_id`, checked to hold `P`: what the extractor does with the
    /// path's org, for callers (the portal) that name the org themselves.
    pub async fn check(state: &AppState, caller: Caller, org_id: &OrgId) -> ApiResult<Self> {
        let org = state.store.org(org_id).await?.ok_or(ApiError::NotFound)?;
        let (role, grants) = standing(state, &caller, &org).await?;
        if let Some(permission) = P::PERMISSION {
            if !grants.allows(permission, &state.config.catalog) {
                return Err(caller.lacks(permission));
            }
        }
        Ok(Self {
            org,
            caller,
            role,
            grants,
            required: PhantomData,
        })
    }
}

/// The caller's role and grants in `org`: a member's role; a key's scopes in its own org; every
/// org permission for operators holding `admin:orgs` in a customer org. Anyone else: 404.
pub async fn standing(
    state: &AppState,
    caller: &Caller,
    org: &OrgRecord,
) -> ApiResult<(Option<String>, Grants)> {
    if org.require_mfa {
        second_factor_used(
            caller,
            "this organization requires two-step sign-in (its `require_mfa` setting)",
        )?;
    }
    require_second_factor(state, caller)?;
    Ok(match caller {
        Caller::User(user) => match state.store.membership(&org.id, user.user_id()).await? {
            Some(membership) => (
                Some(membership.role.clone()),
                grants_of(state, &membership).await?,
            ),
            None if !org.is_operator && caller.operator_allows(state, "admin:orgs").await? => {
                (None, Grants::everything(false))
            }
            None => return Err(ApiError::NotFound),
        },
        Caller::Key(key) if key.org_id == org.id => (None, key.grants.clone()),
        Caller::Key(_)
            if !org.is_operator && caller.operator_allows(state, "admin:orgs").await? =>
        {
            (None, Grants::everything(false))
        }
        Caller::Key(_) => return Err(ApiError::NotFound),
    })
}

/// Refuses a user whose session did not sign in with a second factor when the instance
/// requires one (`auth.require_mfa`); keys are unaffected.
pub fn require_second_factor(state: &AppState, caller: &Caller) -> ApiResult<()> {
    if state.config.auth.require_mfa {
        second_factor_used(
            caller,
            "this instance requires two-step sign-in (`auth.require_mfa`)",
        )?;
    }
    Ok(())
}

/// 403 `MFA_REQUIRED` (saying which `setting` asks for it) unless the caller is a key or a user
/// whose session signed in with a second factor.
fn second_factor_used(caller: &Caller, setting: &str) -> ApiResult<()> {
    match caller {
        Caller::User(user) if !user.claims.used_second_factor() => {
            Err(ApiError::SecondFactorRequired(format!(
                "{setting}: set up a second factor on your account and sign in with it"
            )))
        }
        _ => Ok(()),
    }
}

/// A caller holding the instance-wide permission `P` (a member of the operator org, or a key
/// of it); anyone else gets 403 naming it.
pub struct OperatorAccess<P: Required> {
    /// Who is calling.
    pub caller: Caller,
    required: PhantomData<P>,
}

impl<P: Required> OperatorAccess<P> {
    /// An audit entry for an operator action (on `org_id`, when it concerns one org).
    pub fn audit(&self, action: &str, org_id: Option<&OrgId>, client: &ClientInfo) -> AuditEvent {
        AuditEvent::by(action, &self.caller.actor(), client).org(org_id)
    }
}

impl<P: Required> FromRequestParts<AppState> for OperatorAccess<P> {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let caller = authenticate(parts, state).await?;
        Self::check(state, caller).await
    }
}

impl<P: Required> OperatorAccess<P> {
    /// The caller, checked to hold `P` in the operator org: what the extractor does, for
    /// callers (the portal) that authenticate themselves.
    pub async fn check(state: &AppState, caller: Caller) -> ApiResult<Self> {
        require_second_factor(state, &caller)?;
        let permission = P::PERMISSION.unwrap_or("admin:orgs");
        if !caller.operator_allows(state, permission).await? {
            return Err(caller.lacks(permission));
        }
        Ok(Self {
            caller,
            required: PhantomData,
        })
    }
}

/// Does the user's role in the operator org grant `permission`?
pub async fn operator_allows(
    state: &AppState,
    user_id: &UserId,
    permission: &str,
) -> ApiResult<bool> {
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
    org_id: &OrgId,
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

/// Parses permissions or patterns from input (a role's permissions, a key's scopes): each must
/// parse and name known permissions, else an error under `{field}[i]`; at most `max` entries.
/// Sorted and without duplicates.
pub fn parse_permission_list(
    state: &AppState,
    errors: &mut FieldErrors,
    field: &str,
    list: &[String],
    max: usize,
) -> Vec<PermissionPattern> {
    if list.len() > max {
        errors.add(field, format!("at most {max} entries"));
    }
    let mut patterns = Vec::new();
    for (i, text) in list.iter().enumerate() {
        let entry = format!("{field}[{i}]");
        match PermissionPattern::parse(text) {
            Ok(p) => match state.config.catalog.check_known(&p) {
                Ok(()) => patterns.push(p),
                Err(reason) => errors.add(entry, reason),
            },
            Err(e) => errors.add(entry, e.to_string()),
        }
    }
    patterns.sort();
    patterns.dedup();
    patterns
}

/// Patterns as stored: a JSON array of strings.
pub fn permissions_json(patterns: &[PermissionPattern]) -> String {
    let texts: Vec<&str> = patterns.iter().map(PermissionPattern::as_str).collect();
    serde_json::to_string(&texts).unwrap_or_else(|_| "[]".into())
}
