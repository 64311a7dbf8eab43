//! API keys on the wire: what a new key is made of, changes to one, rotation, and a key as the
//! API shows it (never its secret, except once in [`IssuedKey`]).

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A key's own rate limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    /// Calls per window (1–1,000,000,000).
    pub limit: u64,
    /// The window in seconds (1–2,678,400).
    pub window_seconds: u64,
    /// With several nodes, decide every call in Redis (a round trip each) instead of spending
    /// from the node's lease — for keys whose limit must hold to the call.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub exact: bool,
}

/// A named limit (`tokens`, `exports`): calls — or units of any cost — per window, spent by a
/// verify that names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct NamedLimit {
    /// 1–64 of `a-z`, `0-9`, `_`, `-`, `.`, `:`.
    pub name: String,
    /// Units per window (1–1,000,000,000).
    pub limit: u64,
    /// The window in seconds (1–2,678,400).
    pub window_seconds: u64,
}

/// When a key's credits are refilled, and to how many.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreditRefill {
    /// The credits after a refill (the count is set to it, not added to).
    pub amount: u64,
    /// `daily` (00:00 UTC) or `monthly`.
    pub interval: String,
    /// For `monthly`: the day (1–31, default 1; the month's last day when it is shorter).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub day_of_month: Option<u32>,
}

/// A new key's usage credits: each verify spends its `cost`; at zero verify answers
/// `USAGE_EXCEEDED`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct NewCredits {
    /// Credits to start with (0–1,000,000,000,000).
    pub remaining: u64,
    /// An automatic refill, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refill: Option<CreditRefill>,
}

/// Changes to a key's credits: set them or top them up, and change or drop the refill.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreditsChange {
    /// Set the credits to this (a key without credits starts counting).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remaining: Option<u64>,
    /// Add this many to what is left (after any refill that is due).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub add: Option<u64>,
    /// A new refill, or `null` for none.
    #[serde(
        default,
        deserialize_with = "crate::present",
        skip_serializing_if = "Option::is_none"
    )]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<CreditRefill>))]
    pub refill: Option<Option<CreditRefill>>,
}

/// A key's usage credits now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Credits {
    /// Credits left (after any refill that is due).
    pub remaining: u64,
    /// The automatic refill, if any.
    pub refill: Option<CreditRefill>,
    /// When the next refill happens (RFC 3339).
    pub refills_at: Option<String>,
}

/// What a new key is made of (`POST /orgs/{org_id}/keys`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct NewKey {
    /// A name for people.
    pub name: String,
    /// Permissions from the catalog (patterns allowed), each held by the creator.
    pub scopes: Vec<String>,
    /// `live` (default) or `test`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
    /// RFC 3339, in the future; or use `expires_in_days`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    /// 1–3650.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_in_days: Option<u32>,
    /// The key's own limit; without it the org's plan decides.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimit>,
    /// A JSON object of your own (at most 4 KiB), returned by verify.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub metadata: Option<Value>,
    /// Usage credits; without them the key is not limited by credits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credits: Option<NewCredits>,
    /// Named limits of this key (at most 10), spent by verifies that name them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ratelimits: Vec<NamedLimit>,
    /// IP addresses and CIDR ranges (v4 and v6, at most 100) the key may be used from; empty
    /// allows any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ip_allowlist: Vec<String>,
}

/// Changes to a key (`PATCH /orgs/{org_id}/keys/{key_id}`): absent fields stay; `null` clears
/// the nullable ones.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct KeyChanges {
    /// A new name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// New scopes (the caller must hold the old and the new).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scopes: Option<Vec<String>>,
    /// A new own rate limit, or `null` for the plan's.
    #[serde(
        default,
        deserialize_with = "crate::present",
        skip_serializing_if = "Option::is_none"
    )]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<RateLimit>))]
    pub rate_limit: Option<Option<RateLimit>>,
    /// New metadata.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub metadata: Option<Value>,
    /// A new expiry (RFC 3339, in the future), or `null` for none.
    #[serde(
        default,
        deserialize_with = "crate::present",
        skip_serializing_if = "Option::is_none"
    )]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub expires_at: Option<Option<String>>,
    /// Set, top up or re-plan the credits, or `null` to drop them (no limit by credits).
    #[serde(
        default,
        deserialize_with = "crate::present",
        skip_serializing_if = "Option::is_none"
    )]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<CreditsChange>))]
    pub credits: Option<Option<CreditsChange>>,
    /// The key's named limits, all of them (`[]` removes them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ratelimits: Option<Vec<NamedLimit>>,
    /// The key's IP allowlist, all of it (`[]`: any address).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_allowlist: Option<Vec<String>>,
}

/// `POST /orgs/{org_id}/keys/{key_id}/rotate` (the body may be empty).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RotateKey {
    /// How long the old secret keeps working (default 86400; 0 = at once; at most 30 days).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grace_period_seconds: Option<u64>,
}

/// A key as the API shows it (never its secret).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Key {
    /// `key_…`
    pub id: String,
    /// `org_…`
    pub org_id: String,
    /// Its name.
    pub name: String,
    /// The displayable beginning, e.g. `fg_live_3xKq`.
    pub start: String,
    /// `live` or `test`.
    pub environment: String,
    /// Its scopes.
    pub scopes: Vec<String>,
    /// The metadata stored with it.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub metadata: Value,
    /// Its own rate limit (`null`: the plan's).
    pub rate_limit: Option<RateLimit>,
    /// Its usage credits (`null`: not limited by credits).
    #[serde(default)]
    pub credits: Option<Credits>,
    /// Its named limits.
    #[serde(default)]
    pub ratelimits: Vec<NamedLimit>,
    /// The CIDR ranges it may be used from (empty: any).
    #[serde(default)]
    pub ip_allowlist: Vec<String>,
    /// When a secret scanner reported it found in public and its org flags such keys (verify
    /// answers `LEAKED`); RFC 3339.
    #[serde(default)]
    pub leaked_at: Option<String>,
    /// `active`, `revoked` or `expired`.
    pub status: String,
    /// Who made it (`usr_…` or `key_…`).
    pub created_by: Option<String>,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub updated_at: String,
    /// When it expires (RFC 3339).
    pub expires_at: Option<String>,
    /// When it was revoked (RFC 3339).
    pub revoked_at: Option<String>,
    /// When it was last used, to the minute (RFC 3339).
    pub last_used_at: Option<String>,
}

/// One secret of a key (never the secret itself): the current one, or one being rotated out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct KeySecret {
    /// Its displayable beginning.
    pub start: String,
    /// `current`, `retiring` (rotated out, still working until `retires_at`) or `retired`.
    pub status: String,
    /// When it was issued (RFC 3339).
    pub created_at: String,
    /// When it stops (or stopped) working (RFC 3339); `null` for the current secret.
    pub retires_at: Option<String>,
    /// When it was last presented, to the minute (RFC 3339) — recorded for secrets being rotated
    /// out, so an owner sees whether the old secret is still called before it stops working.
    pub last_used_at: Option<String>,
}

/// A key just issued or rotated: its secret is here, once (answered `no-store`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct IssuedKey {
    /// The key's description.
    #[serde(flatten)]
    pub info: Key,
    /// The secret to hand to your customer.
    pub key: String,
    /// After a rotation: when the previous secret stops working (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_secret_expires_at: Option<String>,
}

/// This month's use of one of the plan's quotas.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct QuotaUse {
    /// The plan's monthly limit.
    pub limit: u64,
    /// Used so far this month.
    pub used: i64,
    /// The month, `YYYY-MM` (UTC).
    pub period: String,
}

/// What an org may do: its plan, its effective entitlements with where each comes from, the
/// operator's overrides, its flag variants, rate limit and this month's quotas with what is used.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Entitlements {
    /// The plan's name.
    pub plan: String,
    /// What the org may do now, e.g. `sso` — as verify answers it.
    pub entitlements: Vec<String>,
    /// Each of those, with its source and end.
    #[serde(default)]
    pub sources: Vec<crate::EntitlementSource>,
    /// What the plan includes.
    #[serde(default)]
    pub plan_entitlements: Vec<String>,
    /// The operator's overrides for the org (ended ones too, marked inactive).
    #[serde(default)]
    pub overrides: Vec<crate::EntitlementOverride>,
    /// The variant of each feature flag for the org.
    #[serde(default)]
    pub flags: std::collections::BTreeMap<String, String>,
    /// The plan's rate limit for its keys.
    pub rate_limit: Option<RateLimit>,
    /// Quotas by meter.
    pub quotas: std::collections::BTreeMap<String, QuotaUse>,
}
