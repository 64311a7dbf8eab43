//! The embeddable usage widget: `POST /widget/token` mints a short-lived token that can only read
//! one org's usage; `GET /widget/usage` answers it (CORS-enabled for `usage.widget_origins`);
//! `GET /widget` is a self-contained HTML page drawing that usage, for an iframe.

use crate::clock::rfc3339;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, ApiQuery};
use crate::services::usage::{self, SeriesQuery};
use crate::state::AppState;
use crate::user_auth::bearer_token;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, Method};
use axum::response::{Html, IntoResponse, Response};
use axum::Json;
use fluxgate_core::ids::OrgId;
use fluxgate_core::secret::ExposeSecret;
use fluxgate_proto::{Data, ErrorEnvelope, UsageSeries, WidgetToken};
use serde::Deserialize;
use tower_http::cors::{AllowOrigin, CorsLayer};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// The API routes of this module (the page is in [`page_router`]).
pub fn router(state: &AppState) -> OpenApiRouter<AppState> {
    let origins = &state.config.usage.widget_origins;
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
    };
    let cors = CorsLayer::new()
        .allow_origin(allow)
        .allow_methods([Method::GET])
        .allow_headers([header::AUTHORIZATION]);
    OpenApiRouter::new().routes(routes!(widget_token)).merge(
        OpenApiRouter::new()
            .routes(routes!(widget_usage))
            // preflight requests must reach the CORS layer, which answers them
            .route(
                "/widget/usage",
                axum::routing::options(|| async { axum::http::StatusCode::NO_CONTENT }),
            )
            .layer(cors),
    )
}

/// `GET /widget`, outside the API.
pub fn page_router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(widget_page))
}

/// `POST /widget/token`
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WidgetTokenBody {
    /// The org (or `customer_external_id`).
    org_id: Option<String>,
    /// The org by your own customer id.
    customer_external_id: Option<String>,
}

/// Mints a token that can only read this org's usage, for `usage.widget_token_ttl` (15 min).
#[utoipa::path(post, path = "/widget/token", tag = "usage", request_body = WidgetTokenBody,
    security(("bearer" = ["usage:write"])),
    responses((status = 200, description = "the token and when it expires", body = Data<WidgetToken>)))]
async fn widget_token(
    State(state): State<AppState>,
    caller: crate::routes::track::Tracker,
    ApiJson(body): ApiJson<WidgetTokenBody>,
) -> ApiResult<Response> {
    let (org, token, expires_at) = usage::widget_token(
        &state,
        &caller.0,
        body.org_id.as_deref(),
        body.customer_external_id.as_deref(),
        crate::clock::now(),
    )
    .await?;
    let data = WidgetToken {
        token: token.expose_secret().to_owned(),
        widget_url: format!(
            "{}/widget#token={}",
            state.config.public_url,
            token.expose_secret()
        ),
        org_id: org,
        expires_at: rfc3339(expires_at),
    };
    let mut response = Json(Data { data }).into_response();
    crate::user_auth::no_store(&mut response);
    Ok(response)
}

/// The org a widget token grants (from `Authorization: Bearer wgt_…`); 401 otherwise.
pub struct WidgetReader(OrgId);

impl FromRequestParts<AppState> for WidgetReader {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let token = bearer_token(&parts.headers).ok_or(ApiError::Unauthorized)?;
        let org_id = state
            .widget_tokens
            .check(&token, crate::clock::now())
            .ok_or(ApiError::Unauthorized)?;
        Ok(Self(org_id))
    }
}

/// `GET /widget/usage` filters.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct WidgetQuery {
    /// A meter instead of calls.
    meter: Option<String>,
    /// RFC 3339.
    from: Option<String>,
    /// RFC 3339.
    to: Option<String>,
    /// `minute`, `hour` (default) or `day`.
    granularity: Option<String>,
}

/// The token's org's usage, as `GET /usage` answers it.
#[utoipa::path(get, path = "/widget/usage", tag = "usage", params(WidgetQuery),
    security(("widget" = [])),
    responses((status = 200, description = "series and total", body = Data<UsageSeries>), (status = 401, description = "no valid widget token", body = ErrorEnvelope)))]
async fn widget_usage(
    State(state): State<AppState>,
    WidgetReader(org_id): WidgetReader,
    ApiQuery(query): ApiQuery<WidgetQuery>,
) -> ApiResult<Json<Data<UsageSeries>>> {
    let filters = SeriesQuery {
        meter: query.meter,
        from: query.from,
        to: query.to,
        granularity: query.granularity,
        ..SeriesQuery::default()
    };
    let data = usage::series(&state, Some(org_id), filters, crate::clock::now()).await?;
    Ok(Json(Data { data }))
}

/// A self-contained page (no external assets) that reads a widget token from its URL fragment
/// (`/widget#token=wgt_…&granularity=day`) and draws the org's usage as a bar chart.
#[utoipa::path(get, path = "/widget", tag = "usage",
    responses((status = 200, description = "the widget page (HTML)", content_type = "text/html", body = String)))]
async fn widget_page() -> Response {
    let mut response = Html(WIDGET_HTML).into_response();
    response.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'"),
    );
    response
}

const WIDGET_HTML: &str = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Usage</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
 body { font: 14px system-ui, sans-serif; margin: 12px; color: #1f2933; }
 h1 { font-size: 15px; margin: 0 0 8px; } #total { color: #52606d; margin-bottom: 8px; }
 svg { width: 100%; height: 160px; } rect { fill: #3e7bfa; } rect:hover { fill: #1d4ed8; }
 #error { color: #b42318; }
</style></head>
<body>
<h1 id="title">Usage</h1><div id="total"></div><svg id="chart" role="img" aria-label="usage chart"></svg><div id="error"></div>
<script>
(async function () {
  const params = new URLSearchParams(location.hash.slice(1));
  const token = params.get("token");
  const query = new URLSearchParams();
  for (const name of ["granularity", "meter", "from", "to"]) {
    if (params.get(name)) query.set(name, params.get(name));
  }
  const fail = (text) => { document.getElementById("error").textContent = text; };
  if (!token) { fail("No widget token in the URL."); return; }
  let answer;
  try {
    const response = await fetch("/api/v1/widget/usage?" + query, { headers: { authorization: "Bearer " + token } });
    answer = await response.json();
    if (!response.ok) { fail(answer.error ? answer.error.message : "Usage unavailable."); return; }
  } catch (e) { fail("Usage unavailable."); return; }
  const data = answer.data;
  const measure = data.meter ? "quantity" : "count";
  document.getElementById("title").textContent = (data.meter || "API calls") + " by " + data.granularity;
  document.getElementById("total").textContent = "Total: " + data.total[measure];
  const svg = document.getElementById("chart");
  const points = data.series;
  const max = Math.max(1, ...points.map((p) => p[measure]));
  const width = 1000, height = 160, bar = width / Math.max(1, points.length);
  svg.setAttribute("viewBox", "0 0 " + width + " " + height);
  svg.setAttribute("preserveAspectRatio", "none");
  points.forEach((p, i) => {
    const h = (p[measure] / max) * (height - 4);
    const rect = document.createElementNS("http://www.w3.org/2000/svg", "rect");
    rect.setAttribute("x", i * bar); rect.setAttribute("y", height - h);
    rect.setAttribute("width", Math.max(1, bar - 1)); rect.setAttribute("height", h);
    const title = document.createElementNS("http://www.w3.org/2000/svg", "title");
    title.textContent = p.start + ": " + p[measure];
    rect.appendChild(title); svg.appendChild(rect);
  });
})();
</script>
</body></html>
"#;
