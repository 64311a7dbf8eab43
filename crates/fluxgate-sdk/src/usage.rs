//! Metered usage: `flux.usage().track(…)` and its batch form.

use crate::client::{Error, Flux};
use fluxgate_proto::TrackBatchResult;
pub use fluxgate_proto::{TrackEvent, TrackOutcome};
use reqwest::Method;
use serde_json::json;

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
        let answer: TrackBatchResult = self
            .flux
            .call(Method::POST, "/sdk/track", Some(&body))
            .await?;
        Ok(answer.results)
    }
}
