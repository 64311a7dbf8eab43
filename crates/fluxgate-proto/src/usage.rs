//! Metered usage on the wire: `POST /sdk/track` with one event or a batch, and what became of
//! each event.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One metered event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct TrackEvent {
    /// `a-z 0-9 _ . : -`, 1–64 characters, e.g. `tokens`.
    pub meter: String,
    /// The org (or give `customer_external_id`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub org_id: Option<String>,
    /// The org by your own customer id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer_external_id: Option<String>,
    /// How much: a positive number up to 1e15 (integer or decimal).
    pub quantity: f64,
    /// RFC 3339; not in the future, not older than `usage.track_max_age`. Default: now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<String>,
    /// Counted once, ever, per org.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
}

impl TrackEvent {
    /// `quantity` of `meter` for `org_id`, now.
    ///
    /// ```
    /// let event = fluxgate_proto::TrackEvent::new("tokens", "org_01…", 1.5).idempotency_key("job-7");
    /// assert_eq!(event.meter, "tokens");
    /// ```
    pub fn new(meter: &str, org_id: &str, quantity: f64) -> Self {
        Self {
            meter: meter.to_owned(),
            org_id: Some(org_id.to_owned()),
            customer_external_id: None,
            quantity,
            timestamp: None,
            idempotency_key: None,
        }
    }

    /// Counted once per org for this key, however often it is sent.
    pub fn idempotency_key(mut self, key: &str) -> Self {
        self.idempotency_key = Some(key.to_owned());
        self
    }
}

/// What became of a tracked event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TrackOutcome {
    /// The event's position in a batch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<usize>,
    /// `recorded`, `duplicate` or `error`.
    pub status: String,
    /// The event's id when recorded.
    #[serde(default)]
    pub id: Option<String>,
    /// Why, for `error` (batch form): the error body the single form would have answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub error: Option<Value>,
}

/// How many events of a batch ended each way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TrackSummary {
    /// Counted.
    pub recorded: usize,
    /// Seen before (same idempotency key), not counted again.
    pub duplicate: usize,
    /// Refused.
    pub error: usize,
}

/// The answer to a batch: one outcome per event, in order, and the totals.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TrackBatchResult {
    /// One per event.
    pub results: Vec<TrackOutcome>,
    /// The totals.
    pub summary: TrackSummary,
}

/// An amount of usage: calls are counted (`count`), metered quantities summed (`quantity`).
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Amount {
    /// Calls (when no `meter` was asked for).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
    /// The meter's summed quantity (when a `meter` was asked for).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantity: Option<f64>,
}

/// One bucket of a usage series.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UsagePoint {
    /// The bucket's start (RFC 3339).
    pub start: String,
    /// What was used in it.
    #[serde(flatten)]
    pub amount: Amount,
}

/// Usage as a time series (every bucket, zeros included) with its total and the filters that
/// produced it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UsageSeries {
    /// The org (`null`: every org).
    pub org_id: Option<String>,
    /// Only this key's calls.
    pub key_id: Option<String>,
    /// Only this endpoint's calls.
    pub endpoint: Option<String>,
    /// The meter, for metered usage.
    pub meter: Option<String>,
    /// `minute`, `hour` or `day`.
    pub granularity: String,
    /// The first bucket's start (RFC 3339).
    pub from: String,
    /// The end of the last bucket (RFC 3339).
    pub to: String,
    /// One point per bucket.
    pub series: Vec<UsagePoint>,
    /// The sum of the series.
    pub total: Amount,
}

/// A usage-widget token: reads one org's usage, nothing else, until it expires.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WidgetToken {
    /// `wgt_…`: send as `Authorization: Bearer` to `GET /widget/usage`.
    pub token: String,
    /// The org it reads.
    pub org_id: String,
    /// RFC 3339.
    pub expires_at: String,
    /// The ready-made widget page for it.
    pub widget_url: String,
}
