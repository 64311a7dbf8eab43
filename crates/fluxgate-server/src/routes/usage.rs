//! `GET /usage`: calls attributed to API keys (management calls and verifies) as a time series
//! by minute, hour or day, with the total — for one org (its members or keys holding
//! `usage:read`), or for the whole instance (operators holding `admin:orgs`).

use crate::access::{authenticate, standing};
use crate::error::{ApiError, ApiResult};
use crate::extract::ApiQuery;
use crate::services::usage::{self, SeriesQuery};
use crate::state::AppState;
use axum::extract::State;
use axum::http::request::Parts;
use axum::Json;
use fluxgate_core::ids::OrgId;
use fluxgate_proto::{Data, ErrorEnvelope, UsageSeries};
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// The routes of this module.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(usage))
}

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
    responses((status = 200, description = "series and total", body = Data<UsageSeries>), (status = 422, description = "bad filters", body = ErrorEnvelope)))]
async fn usage(
    State(state): State<AppState>,
    access: UsageReader,
    ApiQuery(query): ApiQuery<UsageQuery>,
) -> ApiResult<Json<Data<UsageSeries>>> {
    // the org was resolved (and the caller's standing in it checked) by `UsageReader`
    let _resolved_by_the_reader = query.org_id;
    let filters = SeriesQuery {
        key_id: query.key_id,
        endpoint: query.endpoint,
        meter: query.meter,
        from: query.from,
        to: query.to,
        granularity: query.granularity,
    };
    let data = usage::series(&state, access.org_id, filters, crate::clock::now()).await?;
    Ok(Json(Data { data }))
}

/// Whose usage the caller may read: the org in `?org_id=` when it holds `usage:read` there
/// (404 when it has no standing in it), or every org for operators holding `admin:orgs`.
pub struct UsageReader {
    /// The org to read; `None` for all (operators).
    org_id: Option<OrgId>,
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
                let org = state.store.org(&id).await?.ok_or(ApiError::NotFound)?;
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
