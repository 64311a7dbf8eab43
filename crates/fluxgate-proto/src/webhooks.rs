//! Webhooks on the wire: an endpoint to register or change, an endpoint as the API shows it
//! (its signing secret only once, at creation), and its deliveries.

use serde::{Deserialize, Serialize};

/// A new endpoint (`POST /orgs/{org_id}/webhooks`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct NewWebhook {
    /// Where events are posted (`https://…`; `http://` too).
    pub url: String,
    /// Event types to receive (`key.created`, `key.rotated`, `key.revoked`, `key.leaked`,
    /// `member.added`, `member.removed`), or `["*"]` for all.
    pub events: Vec<String>,
    /// A note for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Every org's events, not only this org's: operators only (an endpoint of the operator org,
    /// made by a caller holding `admin:orgs`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub all_orgs: bool,
}

/// Changes to an endpoint (`PATCH /orgs/{org_id}/webhooks/{webhook_id}`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct WebhookChanges {
    /// A new URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// New event types.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events: Option<Vec<String>>,
    /// A new note.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Whether events are sent to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
}

/// An endpoint as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Webhook {
    /// `whk_…`
    pub id: String,
    /// `org_…`
    pub org_id: String,
    /// Where events are posted.
    pub url: String,
    /// The event types it receives.
    pub events: Vec<String>,
    /// A note for people.
    pub description: String,
    /// Whether events are sent to it.
    pub enabled: bool,
    /// Whether it receives every org's events (an operator's endpoint).
    #[serde(default)]
    pub all_orgs: bool,
    /// RFC 3339.
    pub created_at: String,
    /// The signing secret (`whsec_…`): only in the answer that created the endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

/// One delivery of an event to an endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Delivery {
    /// `whd_…`
    pub id: String,
    /// The event's id (`evt_…`), also in the `Fluxgate-Event-Id` header.
    pub event_id: String,
    /// The event's type.
    pub event_type: String,
    /// `pending`, `delivered` or `failed` (gave up after a day, or the endpoint was deleted).
    pub status: String,
    /// Attempts made.
    pub attempts: i64,
    /// The HTTP status of the last attempt, when it got one.
    pub last_status: Option<i64>,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
    /// When the next attempt is due (pending only; RFC 3339).
    pub next_attempt_at: Option<String>,
    /// RFC 3339.
    pub created_at: String,
    /// When the endpoint accepted it (RFC 3339).
    pub delivered_at: Option<String>,
}
