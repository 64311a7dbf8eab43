//! Metered usage reported by the product (`POST /sdk/track`): each event validated, checked
//! against the caller's `usage:write` in the event's org, and written; an `idempotency_key`
//! counts once, ever, per org (a unique index decides, so concurrent duplicates count once).

use crate::access::{standing, Caller};
use crate::clock::rfc3339;
use crate::clock::{parse_rfc3339, RFC3339_HINT};
use crate::error::{ApiError, ApiResult};
use crate::extract::parse_json;
use crate::state::AppState;
use fluxgate_core::ids::{EventId, KeyId, OrgId};
use fluxgate_core::validation::FieldErrors;
use fluxgate_proto::{
    Amount, TrackBatchResult, TrackEvent, TrackOutcome, TrackSummary, UsagePoint, UsageSeries,
};
use fluxgate_store::CallFilter;
use fluxgate_store::UsageEvent;
use serde_json::{json, Value};

/// Most buckets one series answers.
const MAX_BUCKETS: i64 = 10_000;

/// The filters of a usage series (all optional).
#[derive(Debug, Clone, Default)]
pub struct SeriesQuery {
    /// Only this key's calls.
    pub key_id: Option<String>,
    /// Only this endpoint's calls.
    pub endpoint: Option<String>,
    /// A meter's quantities instead of calls.
    pub meter: Option<String>,
    /// RFC 3339 (default: 24 hours before `to`; 30 days for `day`).
    pub from: Option<String>,
    /// RFC 3339 (default: now).
    pub to: Option<String>,
    /// `minute`, `hour` (default) or `day`.
    pub granularity: Option<String>,
}

/// A key's calls over the last 24 hours (whole hours) by endpoint and outcome, largest first:
/// what the portal's key page breaks its chart down into.
pub async fn key_breakdown(
    state: &AppState,
    org_id: &OrgId,
    key_id: &KeyId,
    now: i64,
) -> ApiResult<Vec<(String, String, i64)>> {
    let to = now - now.rem_euclid(3_600) + 3_600;
    let filter = CallFilter {
        org_id: Some(org_id.clone()),
        key_id: Some(key_id.clone()),
        endpoint: None,
        from: to - 25 * 3_600,
        to,
        bucket: 3_600,
        rolled_until: state.usage.rolled_until(3_600),
    };
    Ok(state.store.call_breakdown(&filter).await?)
}

/// Most events in one batch.
pub const MAX_BATCH: usize = 1000;
/// Tolerated clock skew for "not in the future" (seconds).
const FUTURE_SKEW: i64 = 60;
/// The largest quantity one event may carry (sums of many stay exact enough and finite).
const MAX_QUANTITY: f64 = 1e15;

/// Records one event: `recorded`, or `duplicate` when its idempotency key was seen; an invalid
/// event or one the caller may not write is refused as an error.
pub async fn track_one(
    state: &AppState,
    caller: &Caller,
    event: Value,
    now: i64,
) -> ApiResult<TrackOutcome> {
    let event = prepare(state, caller, event, now).await?;
    let fresh = state
        .store
        .insert_usage_events(std::slice::from_ref(&event))
        .await?;
    let fresh = fresh.first().copied().unwrap_or(false);
    Ok(TrackOutcome {
        index: None,
        ..if fresh {
            outcome(0, "recorded", Some(event.id.into()))
        } else {
            outcome(0, "duplicate", None)
        }
    })
}

/// Records up to [`MAX_BATCH`] events in one write, answering each: invalid ones are named
/// (with the error the single form would answer) without failing the others.
pub async fn track_batch(
    state: &AppState,
    caller: &Caller,
    events: Vec<Value>,
    now: i64,
) -> ApiResult<TrackBatchResult> {
    if events.len() > MAX_BATCH {
        return Err(ApiError::field(
            "events",
            format!("at most {MAX_BATCH} events"),
        ));
    }
    let mut results: Vec<TrackOutcome> = Vec::with_capacity(events.len());
    let mut accepted = Vec::new();
    for (index, raw) in events.into_iter().enumerate() {
        match prepare(state, caller, raw, now).await {
            Ok(event) => {
                accepted.push((index, event));
                results.push(outcome(index, "error", None));
            }
            Err(error) => results.push(TrackOutcome {
                error: Some(error_json(&error)),
                ..outcome(index, "error", None)
            }),
        }
    }
    let batch: Vec<UsageEvent> = accepted.iter().map(|(_, e)| e.clone()).collect();
    let recorded = state.store.insert_usage_events(&batch).await?;
    for ((index, event), fresh) in accepted.into_iter().zip(recorded) {
        results[index] = if fresh {
            outcome(index, "recorded", Some(event.id.into()))
        } else {
            outcome(index, "duplicate", None)
        };
    }
    let count = |status: &str| results.iter().filter(|r| r.status == status).count();
    let summary = TrackSummary {
        recorded: count("recorded"),
        duplicate: count("duplicate"),
        error: count("error"),
    };
    Ok(TrackBatchResult { results, summary })
}

fn outcome(index: usize, status: &str, id: Option<String>) -> TrackOutcome {
    TrackOutcome {
        index: Some(index),
        status: status.to_owned(),
        id,
        error: None,
    }
}

fn error_json(error: &ApiError) -> Value {
    match error {
        ApiError::Validation(fields) => json!({
            "code": "VALIDATION_FAILED",
            "fields": fields.iter().map(|(k, v)| (k.to_owned(), Value::from(v))).collect::<serde_json::Map<_, _>>(),
        }),
        ApiError::NotFound => json!({ "code": "NOT_FOUND", "message": "no such organization" }),
        ApiError::Forbidden(p) => json!({ "code": "FORBIDDEN", "required_permission": p }),
        ApiError::InsufficientScope(s) => {
            json!({ "code": "INSUFFICIENT_SCOPE", "required_scope": s })
        }
        other => json!({ "code": "BAD_REQUEST", "message": other.to_string() }),
    }
}

/// Validates one event and checks the caller may write usage in its org.
async fn prepare(state: &AppState, caller: &Caller, raw: Value, now: i64) -> ApiResult<UsageEvent> {
    let event: TrackEvent = parse_json(raw.to_string().as_bytes())?;
    let mut errors = FieldErrors::new();
    let meter_ok = (1..=64).contains(&event.meter.len())
        && event
            .meter
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "_.:-".contains(c));
    if !meter_ok {
        errors.add(
            "meter",
            "must be 1-64 characters of a-z, 0-9, `_`, `.`, `:`, `-`",
        );
    }
    let quantity = Some(event.quantity).filter(|q| q.is_finite() && *q > 0.0 && *q <= MAX_QUANTITY);
    if quantity.is_none() {
        errors.add("quantity", "must be a positive number of at most 1e15");
    }
    let oldest = now.saturating_sub(crate::clock::seconds(state.config.usage.track_max_age));
    let occurred_at = match event.timestamp.as_deref() {
        None => Some(now),
        Some(text) => match parse_rfc3339(text) {
            None => {
                errors.add("timestamp", RFC3339_HINT);
                None
            }
            Some(t) if t > now + FUTURE_SKEW => {
                errors.add("timestamp", "must not be in the future");
                None
            }
            Some(t) if t < oldest => {
                errors.add(
                    "timestamp",
                    format!(
                        "must be within the last {}",
                        fluxgate_core::units::format_duration(state.config.usage.track_max_age)
                    ),
                );
                None
            }
            Some(t) => Some(t),
        },
    };
    if event
        .idempotency_key
        .as_ref()
        .is_some_and(|k| k.is_empty() || k.len() > 200)
    {
        errors.add("idempotency_key", "must be 1-200 characters");
    }
    if event.org_id.is_some() == event.customer_external_id.is_some() {
        errors.add(
            "org_id",
            "give exactly one of org_id and customer_external_id",
        );
    }
    errors.into_result()?;
    let org = match (&event.org_id, &event.customer_external_id) {
        (Some(id), _) => {
            let id: OrgId = id.parse().map_err(|_| ApiError::NotFound)?;
            state.store.org(&id).await?
        }
        (None, Some(external)) => state.store.org_by_external_id(external).await?,
        (None, None) => None,
    }
    .ok_or(ApiError::NotFound)?;
    let (_, grants) = standing(state, caller, &org).await?;
    if !grants.allows("usage:write", &state.config.catalog) {
        return Err(caller.lacks("usage:write"));
    }
    Ok(UsageEvent {
        id: EventId::generate(),
        org_id: org.id,
        meter: event.meter,
        quantity: quantity.unwrap_or_default(),
        occurred_at: occurred_at.unwrap_or(now),
        idempotency_key: event.idempotency_key,
        created_at: now,
    })
}

/// Usage for `org_id` (None: every org) as a series of minute, hour or day buckets between
/// `from` and `to` (whole buckets), every bucket present, with the total: calls (optionally one
/// key's or one endpoint's), or a meter's quantities.
pub async fn series(
    state: &AppState,
    org_id: Option<OrgId>,
    query: SeriesQuery,
    now: i64,
) -> ApiResult<UsageSeries> {
    let mut errors = FieldErrors::new();
    let (bucket, granularity) = match query.granularity.as_deref().unwrap_or("hour") {
        "minute" => (60, "minute"),
        "hour" => (3600, "hour"),
        "day" => (86_400, "day"),
        _ => {
            errors.add("granularity", "must be minute, hour or day");
            (3600, "hour")
        }
    };
    let mut time = |field: &str, value: Option<&str>| {
        value.and_then(|v| {
            let parsed = parse_rfc3339(v);
            if parsed.is_none() {
                errors.add(field, RFC3339_HINT);
            }
            parsed
        })
    };
    let to = time("to", query.to.as_deref()).unwrap_or(now);
    let default_span = if bucket == 86_400 {
        30 * 86_400
    } else {
        86_400
    };
    let from = time("from", query.from.as_deref()).unwrap_or(to - default_span);
    // whole buckets: from rounds down, to rounds up
    let (from, to) = (
        from - from.rem_euclid(bucket),
        to + (bucket - to.rem_euclid(bucket)) % bucket,
    );
    if to <= from {
        errors.add("from", "must be before `to`");
    } else if (to - from) / bucket > MAX_BUCKETS {
        errors.add(
            "from",
            format!("at most {MAX_BUCKETS} buckets per query; use a coarser granularity"),
        );
    }
    let key_id = match query
        .key_id
        .filter(|k| !k.is_empty())
        .map(|k| k.parse::<KeyId>())
    {
        Some(Ok(id)) => Some(id),
        Some(Err(error)) => {
            errors.add("key_id", error.to_string());
            None
        }
        None => None,
    };
    errors.into_result()?;
    let filter = CallFilter {
        org_id,
        key_id,
        endpoint: query.endpoint.filter(|e| !e.is_empty()),
        from,
        to,
        bucket,
        rolled_until: state.usage.rolled_until(bucket),
    };
    let meter = query.meter.filter(|m| !m.is_empty());
    if meter.is_some() && (filter.key_id.is_some() || filter.endpoint.is_some()) {
        return Err(ApiError::field(
            "meter",
            "cannot be combined with key_id or endpoint",
        ));
    }
    let rows: Vec<(i64, f64)> = match &meter {
        Some(meter) => state.store.meter_series(meter, &filter).await?,
        None => state
            .store
            .call_series(&filter)
            .await?
            .into_iter()
            .map(|(bucket, count)| (bucket, count as f64))
            .collect(),
    };
    let mut points = rows.into_iter().peekable();
    let mut series = Vec::new();
    let mut total = 0f64;
    let mut start = from;
    while start < to {
        let mut amount = 0f64;
        while let Some((_, value)) = points.next_if(|(b, _)| *b <= start) {
            amount += value;
        }
        total += amount;
        series.push(UsagePoint {
            start: rfc3339(start),
            amount: number(amount, meter.is_none()),
        });
        start += bucket;
    }
    Ok(UsageSeries {
        org_id: filter.org_id.map(String::from),
        key_id: filter.key_id.map(String::from),
        endpoint: filter.endpoint,
        total: number(total, meter.is_none()),
        meter,
        granularity: granularity.to_owned(),
        from: rfc3339(from),
        to: rfc3339(to),
        series,
    })
}

/// Counts as integers, quantities as they are.
fn number(value: f64, integer: bool) -> Amount {
    if integer {
        Amount {
            count: Some(value.round().max(0.0) as u64),
            quantity: None,
        }
    } else {
        Amount {
            count: None,
            quantity: Some(value),
        }
    }
}

/// Mints a token that reads one org's usage and nothing else, until it expires
/// (`usage.widget_token_ttl`); the caller needs `usage:write` in that org, named by id or by its
/// `external_id`. Returns the org's id, the token and its expiry.
pub async fn widget_token(
    state: &AppState,
    caller: &Caller,
    org_id: Option<&str>,
    customer_external_id: Option<&str>,
    now: i64,
) -> ApiResult<(String, fluxgate_core::secret::SecretString, i64)> {
    let org = match (org_id, customer_external_id) {
        (Some(id), None) => {
            let id: OrgId = id.parse().map_err(|_| ApiError::NotFound)?;
            state.store.org(&id).await?
        }
        (None, Some(external)) => state.store.org_by_external_id(external).await?,
        _ => {
            return Err(ApiError::field(
                "org_id",
                "give exactly one of org_id and customer_external_id",
            ))
        }
    }
    .ok_or(ApiError::NotFound)?;
    let (_, grants) = standing(state, caller, &org).await?;
    if !grants.allows("usage:write", &state.config.catalog) {
        return Err(caller.lacks("usage:write"));
    }
    let expires_at = crate::clock::after(now, state.config.usage.widget_token_ttl);
    let token = state
        .widget_tokens
        .issue(&org.id, expires_at)
        .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("widget token signing failed")))?;
    Ok((org.id.into(), token, expires_at))
}
