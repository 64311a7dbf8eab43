//! Metered usage: `flux.usage().track(…)` and its batch form.

use crate::client::{Error, Flux};
use reqwest::Method;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// One metered event.
///
/// ```
/// let event = fluxgate_sdk::TrackEvent::new("tokens", "org_01…", 1.5).idempotency_key("job-7");
/// assert_eq!(event.meter, "tokens");
/// ```
#[derive(Debug, Clone, Serialize)]
pub struct TrackEvent {
    /// The meter, e.g. `tokens`.
    pub meter: String,
    /// The org (or set `customer_external_id`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub org_id: Option<String>,
    /// The org by your own customer id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub customer_external_id: Option<String>,
    /// How much (positive).
    pub quantity: f64,
    /// When it happened (RFC 3339; default now).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<String>,
    /// Counted once, ever, per org.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
}

impl TrackEvent {
    /// `quantity` of `meter` for `org_id`, now.
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
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct TrackOutcome {
    /// `recorded`, `duplicate` or `error`.
    pub status: String,
    /// The event's id when recorded.
    pub id: Option<String>,
    /// Why, for `error` (batch form).
    pub error: Option<Value>,
}

/// `flux.usage()`
pub struct Usage<'a> {
    pub(crate) flux: &'a Flux,
}

impl Usage<'_> {
    /// Records one event.
    ///
    /// ```no_run
    /// # async fn f(flux: fluxgate_sdk::Flux) -> Result<(), fluxgate_sdk::Error> {
    /// use fluxgate_sdk::TrackEvent;
    /// flux.usage().track(TrackEvent::new("tokens", "org_01…", 1.5).idempotency_key("job-7")).await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn track(&self, event: TrackEvent) -> Result<TrackOutcome, Error> {
        let body = serde_json::to_value(event)
            .map_err(|e| Error::Unreachable(format!("event not serialisable: {e}")))?;
        self.flux
            .call(Method::POST, "/sdk/track", Some(&body))
            .await
    }

    /// Records up to 1,000 events in one request; one outcome per event, in order.
    ///
    /// ```no_run
    /// # async fn f(flux: fluxgate_sdk::Flux) -> Result<(), fluxgate_sdk::Error> {
    /// use fluxgate_sdk::TrackEvent;
    /// let outcomes = flux.usage().track_batch(vec![
    ///     TrackEvent::new("tokens", "org_01…", 120.0).idempotency_key("req-1"),
    ///     TrackEvent::new("tokens", "org_01…", 80.0).idempotency_key("req-2"),
    /// ]).await?;
    /// assert_eq!(outcomes.len(), 2);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn track_batch(&self, events: Vec<TrackEvent>) -> Result<Vec<TrackOutcome>, Error> {
        let body = json!({ "events": events });
        let answer: Value = self
            .flux
            .call(Method::POST, "/sdk/track", Some(&body))
            .await?;
        serde_json::from_value(answer["results"].clone())
            .map_err(|e| Error::Unreachable(format!("unexpected track answer: {e}")))
    }
}
