//! Feature flags and entitlement overrides on the wire: a flag to define or change, a flag as
//! the API shows it, an operator's override of one org's entitlement, and where each of an
//! org's entitlements comes from.

use serde::{Deserialize, Serialize};

/// A flag's definition (`PUT /admin/flags/{name}`, creating or replacing it).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct FlagDefinition {
    /// A note for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// False turns it off for every org at once (the kill switch); default true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// The variant the orgs it is on for get (absent: a boolean flag, `on` when on).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    /// The variant the other orgs get (only with `variant`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_variant: Option<String>,
    /// Org ids it is on for, whatever the rollout.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub orgs: Vec<String>,
    /// Plans the rollout is among (empty: every plan).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub plans: Vec<String>,
    /// The share of those plans' orgs it is on for, 0–100 (default 0), chosen by a stable hash
    /// of flag and org: the same orgs on every node, and a larger share keeps them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout_percent: Option<u8>,
}

/// Changes to a flag (`PATCH /admin/flags/{name}`): what is given is replaced.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct FlagChanges {
    /// A new note.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// False: the kill switch; true: on again as targeted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// The org list.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub orgs: Option<Vec<String>>,
    /// The plans.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plans: Option<Vec<String>>,
    /// The rollout share, 0–100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout_percent: Option<u8>,
}

/// A flag as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Flag {
    /// Its name; an org it is on for is also entitled to this name.
    pub name: String,
    /// A note for people.
    pub description: String,
    /// False: killed, off for every org.
    pub enabled: bool,
    /// The variant targeted orgs get (absent: boolean).
    pub variant: Option<String>,
    /// The variant the others get.
    pub default_variant: Option<String>,
    /// Org ids it is on for.
    pub orgs: Vec<String>,
    /// Plans the rollout is among (empty: all).
    pub plans: Vec<String>,
    /// The rollout share, 0–100.
    pub rollout_percent: u8,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub updated_at: String,
}

/// An override of one entitlement for one org (`PUT /admin/orgs/{org_id}/entitlements/{name}`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct NewOverride {
    /// `grant` or `deny`.
    pub effect: String,
    /// When it ends by itself (RFC 3339, in the future): a trial.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    /// Why (up to 500 characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// An operator's override of one entitlement for an org.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EntitlementOverride {
    /// The entitlement.
    pub entitlement: String,
    /// `grant` or `deny`.
    pub effect: String,
    /// When it ends (RFC 3339), if it does.
    pub expires_at: Option<String>,
    /// Whether it still applies (it has not ended).
    pub active: bool,
    /// Why.
    pub note: String,
    /// Who set it.
    pub created_by: Option<String>,
    /// RFC 3339.
    pub created_at: String,
}

/// One entitlement an org has, and where it comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EntitlementSource {
    /// The entitlement.
    pub name: String,
    /// `plan`, `override` or `flag`.
    pub source: String,
    /// When it ends by itself (RFC 3339: a grant override's end).
    pub until: Option<String>,
}
