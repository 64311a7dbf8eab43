//! Organizations on the wire: orgs, members, invitations, roles and audit-log entries.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// An organization; `role` is the caller's, when a member.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Org {
    /// `org_…`
    pub id: String,
    /// Its name.
    pub name: String,
    /// The product's own id for this customer.
    pub external_id: Option<String>,
    /// Its plan.
    pub plan: String,
    /// Whether it is the operator org.
    pub operator: bool,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub updated_at: String,
    /// The caller's role in it, when a member.
    pub role: Option<String>,
    /// Since when an operator has it disabled (its keys answer `ORG_DISABLED`); absent when
    /// enabled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled_at: Option<String>,
    /// Whether members must have signed in with a second factor to act in it.
    #[serde(default)]
    pub require_mfa: bool,
    /// What a secret scanner's report of one of its keys does: `revoke` or `flag`.
    #[serde(default)]
    pub leaked_key_action: String,
}

/// A member of an org.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Member {
    /// `usr_…`
    pub user_id: String,
    /// Their email address.
    pub email: String,
    /// Their display name.
    pub name: Option<String>,
    /// Their role.
    pub role: String,
    /// When they joined (RFC 3339).
    pub joined_at: String,
    /// Whether they have a second factor (so an owner sees who `require_mfa` would refuse).
    #[serde(default)]
    pub second_factor: bool,
}

/// A member's role after a change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MemberRole {
    /// `usr_…`
    pub user_id: String,
    /// The new role.
    pub role: String,
    /// When they joined (RFC 3339).
    pub joined_at: String,
}

/// An open invitation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Invitation {
    /// `inv_…`
    pub id: String,
    /// The invited address.
    pub email: String,
    /// The role they get.
    pub role: String,
    /// Who invited (`usr_…`).
    pub invited_by: Option<String>,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub expires_at: String,
}

/// A role: built in (no id) or the org's own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Role {
    /// `rol_…` for custom roles; `null` for built-in ones.
    pub id: Option<String>,
    /// Its name.
    pub name: String,
    /// What it is for.
    pub description: Option<String>,
    /// The permissions or patterns it grants.
    pub permissions: Vec<String>,
    /// Whether it is built in.
    pub builtin: bool,
    /// RFC 3339 (custom roles).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
    /// RFC 3339 (custom roles).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<String>,
}

/// Who or what an audit entry is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Party {
    /// `user`, `key`, `anonymous`, `org`, `session`, …
    #[serde(rename = "type")]
    pub kind: String,
    /// Its id.
    pub id: Option<String>,
}

/// One audit-log entry. Never holds a secret.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AuditEntry {
    /// `evt_…`
    pub id: String,
    /// The org it belongs to.
    pub org_id: Option<String>,
    /// E.g. `key.created`.
    pub action: String,
    /// Who did it.
    pub actor: Party,
    /// What it was done to.
    pub target: Option<Party>,
    /// From where.
    pub ip: Option<String>,
    /// With what.
    pub user_agent: Option<String>,
    /// Details of the action.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub data: Value,
    /// RFC 3339.
    pub created_at: String,
}
