//! `POST /keys/verify`: the question a product backend asks per inbound request, and the
//! verdict with the key's whole context.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

/// `POST /keys/verify`
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct VerifyRequest {
    /// The key your caller presented.
    pub key: String,
    /// Scopes the key must hold (implications honoured).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scopes: Vec<String>,
    /// The endpoint being called, for usage attribution.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Units of rate limit and quota this call takes (default 1, 0–10000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost: Option<u64>,
    /// Calls a client admitted from its cached verdict of this key since its previous verify,
    /// by endpoint (at most 100 endpoints, each count below 10000). When the verify is `VALID`
    /// they are attributed to the key as `VALID` calls; they must be paid for in `cost` (their
    /// sum + 1 ≤ `cost`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub cached_calls: BTreeMap<String, u64>,
    /// Named limits this call spends, in order (at most 10): the key's limit of that name, else
    /// its org's (from the plan, shared by all the org's keys); a name neither has does not limit.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ratelimits: Vec<LimitSpend>,
    /// The address your caller connected from; a key with an IP allowlist answers
    /// `FORBIDDEN_IP` when it is outside the list, or missing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
}

/// A named limit a verify spends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct LimitSpend {
    /// The limit's name.
    pub name: String,
    /// Units this call takes (default 1, 0–10000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost: Option<u64>,
}

/// A named limit's state after a verify.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NamedLimitState {
    /// The limit's name.
    pub name: String,
    /// Whose limit it is: `key`, `org` (shared by the org's keys), or `null` when neither the
    /// key nor its org has a limit of that name (the call is not limited by it).
    pub scope: Option<String>,
    /// Units per window.
    pub limit: Option<u64>,
    /// Units left now.
    pub remaining: Option<u64>,
    /// When the allowance is full again (Unix seconds).
    pub reset: Option<u64>,
}

/// The org a key belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct OrgRef {
    /// `org_…`
    pub id: String,
    /// Its name.
    pub name: String,
    /// Your own id for this customer, if set.
    pub external_id: Option<String>,
}

/// Rate-limit state after a verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RateLimitState {
    /// Calls per window.
    pub limit: u64,
    /// Calls left now.
    pub remaining: u64,
    /// When the allowance is full again (Unix seconds).
    pub reset: u64,
}

/// The verdict (always `200`): `valid`, why (`code`), and as much of the key's context as it
/// has — everything for a known key, nothing for `MALFORMED` and `NOT_FOUND`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Verdict {
    /// True only for `VALID`.
    pub valid: bool,
    /// `VALID`, `MALFORMED`, `NOT_FOUND`, `REVOKED`, `EXPIRED`, `ORG_DISABLED`,
    /// `FORBIDDEN_IP`, `INSUFFICIENT_SCOPE`, `QUOTA_EXCEEDED`, `RATE_LIMITED` or
    /// `USAGE_EXCEEDED` (no credits left).
    pub code: String,
    /// `key_…`
    pub key_id: Option<String>,
    /// The key's org.
    pub org: Option<OrgRef>,
    /// The org's plan.
    pub plan: Option<String>,
    /// The key's scopes.
    pub scopes: Option<Vec<String>>,
    /// What the org may do: its plan's entitlements, with the operator's overrides for it and
    /// the feature flags that are on for it (deny override > grant override > flag > plan).
    pub entitlements: Option<Vec<String>>,
    /// Feature-flag variants for the org: each flag that is on for it (`on` for a boolean
    /// flag, else its variant) and the default variant of those that are not and have one;
    /// absent when there are none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flags: Option<std::collections::BTreeMap<String, String>>,
    /// Rate-limit state after this call (when the limiter was asked).
    pub ratelimit: Option<RateLimitState>,
    /// When the key expires (RFC 3339).
    pub expires_at: Option<String>,
    /// The metadata stored with the key.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub metadata: Option<Value>,
    /// `live` or `test`.
    pub environment: Option<String>,
    /// The key's credits after this call, when it has credits and the call came to them
    /// (`VALID` or `USAGE_EXCEEDED`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credits: Option<crate::Credits>,
    /// The named limits the request spent, in its order, after this call (up to the one that
    /// refused).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ratelimits: Option<Vec<NamedLimitState>>,
    /// With `RATE_LIMITED` from a named limit: its name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limited_by: Option<String>,
    /// The CIDR ranges the key may be used from, when it has an IP allowlist (so a client that
    /// reuses this verdict can check the next caller's address itself).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_allowlist: Option<Vec<String>>,
}
