//! An org's usage in the browser: calls (or a meter's quantities) by minute, hour or day,
//! filtered by key and endpoint, drawn as a chart with its table, and downloadable as CSV —
//! the same series as `GET /usage`.

use crate::access::UsageRead;
use crate::error::ApiError;
use crate::extract::ApiQuery;
use crate::portal::charts::{bar_chart, BarChart};
use crate::portal::{
    render, render_status, Chrome, CsrfToken, FormErrors, OrgPage, Portal, PortalResult,
};
use crate::services::usage::{self, SeriesQuery};
use crate::state::AppState;
use askama::Template;
use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde::Deserialize;

/// The routes of these pages.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/orgs/{org_id}/usage", get(usage_page))
        .route("/orgs/{org_id}/usage.csv", get(usage_csv))
}

/// The page's filters, as typed.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Filters {
    granularity: Option<String>,
    key_id: Option<String>,
    endpoint: Option<String>,
    meter: Option<String>,
}

impl Filters {
    fn text(value: &Option<String>) -> String {
        value.clone().unwrap_or_default()
    }

    fn query(&self) -> SeriesQuery {
        let present = |v: &Option<String>| v.clone().filter(|v| !v.trim().is_empty());
        SeriesQuery {
            granularity: present(&self.granularity),
            key_id: present(&self.key_id),
            endpoint: present(&self.endpoint),
            meter: present(&self.meter),
            ..SeriesQuery::default()
        }
    }

    /// The same filters as a query string (for the CSV link).
    fn encoded(&self) -> String {
        let mut query = form_urlencoded::Serializer::new(String::new());
        for (name, value) in [
            ("granularity", &self.granularity),
            ("key_id", &self.key_id),
            ("endpoint", &self.endpoint),
            ("meter", &self.meter),
        ] {
            if let Some(value) = value.as_deref().filter(|v| !v.is_empty()) {
                query.append_pair(name, value);
            }
        }
        query.finish()
    }
}

#[derive(Template)]
#[template(path = "usage.html")]
struct UsagePage {
    chrome: Chrome,
    org_id: String,
    chart: Option<BarChart>,
    errors: FormErrors,
    granularity: String,
    key_id: String,
    endpoint: String,
    meter: String,
    csv: String,
}

async fn usage_page(
    State(state): State<AppState>,
    page: OrgPage<UsageRead>,
    csrf: CsrfToken,
    Portal(ApiQuery(filters)): Portal<ApiQuery<Filters>>,
) -> PortalResult<Response> {
    let mut view = UsagePage {
        chrome: Chrome::new(
            &state,
            &csrf,
            Some(&page.user),
            Some(&page.access.org),
            "usage",
        )
        .await?,
        org_id: page.org_id().to_string(),
        chart: None,
        errors: FormErrors::none(),
        granularity: Filters::text(&filters.granularity),
        key_id: Filters::text(&filters.key_id),
        endpoint: Filters::text(&filters.endpoint),
        meter: Filters::text(&filters.meter),
        csv: format!("/orgs/{}/usage.csv?{}", page.org_id(), filters.encoded()),
    };
    let series = usage::series(
        &state,
        Some(page.org_id().clone()),
        filters.query(),
        crate::clock::now(),
    )
    .await;
    match series {
        Ok(series) => {
            let title = match &series.meter {
                Some(meter) => format!("{meter} per {}", series.granularity),
                None => format!("Calls per {}", series.granularity),
            };
            view.chart = Some(bar_chart("usage", title, &series));
            Ok(render(&view))
        }
        Err(refusal @ ApiError::Validation(_)) => {
            view.errors = FormErrors::from_refusal(
                refusal,
                &["granularity", "key_id", "endpoint", "meter", "from"],
            )?;
            Ok(render_status(StatusCode::UNPROCESSABLE_ENTITY, &view))
        }
        Err(other) => Err(other.into()),
    }
}

/// The series as CSV: `start,amount` per bucket.
async fn usage_csv(
    State(state): State<AppState>,
    page: OrgPage<UsageRead>,
    Portal(ApiQuery(filters)): Portal<ApiQuery<Filters>>,
) -> PortalResult<Response> {
    let series = usage::series(
        &state,
        Some(page.org_id().clone()),
        filters.query(),
        crate::clock::now(),
    )
    .await?;
    let column = series.meter.clone().unwrap_or_else(|| "calls".to_owned());
    let mut csv = format!("start,{}\n", column.replace([',', '"', '\n', '\r'], "_"));
    for point in &series.series {
        let amount = match (point.amount.count, point.amount.quantity) {
            (Some(count), _) => count.to_string(),
            (None, Some(quantity)) => quantity.to_string(),
            (None, None) => "0".to_owned(),
        };
        csv.push_str(&format!("{},{amount}\n", point.start));
    }
    let mut response = csv.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/csv; charset=utf-8"),
    );
    headers.insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_static("attachment; filename=\"usage.csv\""),
    );
    Ok(response)
}
