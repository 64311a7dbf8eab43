//! `GET /usage`: calls attributed to API keys (management calls and verifies) as a time series
//! by minute, hour or day, with the total — for one org (its members or keys holding
//! `usage:read`), or for the whole instance (operators holding `admin:orgs`).

use crate::access::{authenticate, standing};
use crate::clock::{parse_rfc3339, rfc3339, RFC3339_HINT};
use crate::error::{ApiError, ApiResult};
use crate::extract::ApiQuery;
use crate::state::AppState;
use axum::extract::State;
use axum::http::request::Parts;
use axum::Json;
use fluxgate_core::ids::OrgId;
use fluxgate_core::validation::FieldErrors;
use fluxgate_store::CallFilter;
use serde::Deserialize;
use serde_json::{json, Value};
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// The routes of this module.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(usage))
}

/// Most buckets one query answers.
const MAX_BUCKETS: i64 = 10_000;

/// `GET /usage` filters.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct UsageQuery {
    /// The org (required unless the caller is an operator).
    pub(crate) org_id: Option<String>,
    /// Only this key's calls.
    pub(crate) key_id: Option<String>,
    /// Only this endpoint's (`GET /api/v1/orgs/{org_id}/keys`, or a verify's `endpoint`).
    pub(crate) endpoint: Option<String>,
    /// A meter reported with `POST /sdk/track`: its quantities instead of calls.
    pub(crate) meter: Option<String>,
    /// RFC 3339 (default: 24 hours before `to`; 30 days for `day`).
    pub(crate) from: Option<String>,
    /// RFC 3339 (default: now).
    pub(crate) to: Option<String>,
    /// `minute`, `hour` (default) or `day`.
    pub(crate) granularity: Option<String>,
}

/// Attributed calls as a time series (every bucket, zeros included) and their total.
#[utoipa::path(get, path = "/usage", tag = "usage", params(UsageQuery),
    security(("bearer" = ["usage:read"])),
    responses((status = 200, description = "series and total"), (status = 422, description = "bad filters")))]
async fn usage(
    State(state): State<AppState>,
    access: UsageReader,
    ApiQuery(query): ApiQuery<UsageQuery>,
) -> ApiResult<Json<Value>> {
    answer(&state, access.org_id, query).await
}

/// The series for `org_id` (None: every org) under the query's filters.
pub async fn answer(
    state: &AppState,
    org_id: Option<String>,
    query: UsageQuery,
) -> ApiResult<Json<Value>> {
    let _resolved_by_the_caller = query.org_id;
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
    let now = crate::clock::now();
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
    errors.into_result()?;
    let filter = CallFilter {
        org_id,
        key_id: query.key_id.filter(|k| !k.is_empty()),
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
    let measure = if meter.is_some() { "quantity" } else { "count" };
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
        series.push(json!({ "start": rfc3339(start), measure: number(amount, meter.is_none()) }));
        start += bucket;
    }
    Ok(Json(json!({ "data": {
        "org_id": filter.org_id,
        "key_id": filter.key_id,
        "endpoint": filter.endpoint,
        "meter": meter,
        "granularity": granularity,
        "from": rfc3339(from),
        "to": rfc3339(to),
        "series": series,
        "total": { measure: number(total, meter.is_none()) },
    }})))
}

/// Counts as integers, quantities as they are.
fn number(value: f64, integer: bool) -> Value {
    if integer {
        Value::from(value.round() as i64)
    } else {
        Value::from(value)
    }
}

/// Whose usage the caller may read: the org in `?org_id=` when it holds `usage:read` there
/// (404 when it has no standing in it), or every org for operators holding `admin:orgs`.
pub struct UsageReader {
    /// The org to read; `None` for all (operators).
    org_id: Option<String>,
}

impl axum::extract::FromRequestParts<AppState> for UsageReader {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let caller = authenticate(parts, state).await?;
        let org_id = form_urlencoded::parse(parts.uri.query().unwrap_or("").as_bytes())
            .find(|(name, _)| name == "org_id")
            .map(|(_, value)| value.into_owned())
            .filter(|v| !v.is_empty());
        match org_id {
            Some(org_id) => {
                let id: OrgId = org_id.parse().map_err(|_| ApiError::NotFound)?;
                let org = state
                    .store
                    .org(id.as_str())
                    .await?
                    .ok_or(ApiError::NotFound)?;
                let (_, grants) = standing(state, &caller, &org).await?;
                if !grants.allows("usage:read", &state.config.catalog) {
                    return Err(caller.lacks("usage:read"));
                }
                Ok(Self {
                    org_id: Some(org.id),
                })
            }
            None if caller.operator_allows(state, "admin:orgs").await? => Ok(Self { org_id: None }),
            None => Err(ApiError::field(
                "org_id",
                "is required (only operators read every org)",
            )),
        }
    }
}
