//! An org's audit log in the browser: who did what, when and from where, filtered by actor,
//! action and time, newest first, a page at a time — the same query as `GET …/audit-log`.

use crate::access::AuditRead;
use crate::error::ApiError;
use crate::extract::ApiQuery;
use crate::portal::{
    render, render_status, Chrome, CsrfToken, FormErrors, OrgPage, Portal, PortalResult,
};
use crate::routes::audit_log::{entry_json, AuditQuery};
use crate::services::audit_log;
use crate::state::AppState;
use askama::Template;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use fluxgate_proto::AuditEntry;

/// The routes of these pages.
pub fn router() -> Router<AppState> {
    Router::new().route("/orgs/{org_id}/audit", get(audit_log))
}

/// An entry as the page lists it.
struct EntryRow {
    entry: AuditEntry,
    details: String,
}

#[derive(Template)]
#[template(path = "audit.html")]
struct AuditPage {
    chrome: Chrome,
    org_id: String,
    entries: Vec<EntryRow>,
    errors: FormErrors,
    actor: String,
    action: String,
    from: String,
    to: String,
    next: Option<String>,
}

/// The filters as they were typed, kept in the form and in the next page's link.
fn field(fields: &[(String, String)], name: &str) -> String {
    fields
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.clone())
        .unwrap_or_default()
}

async fn audit_log(
    State(state): State<AppState>,
    page: OrgPage<AuditRead>,
    csrf: CsrfToken,
    RawQuery(raw): RawQuery,
    Portal(ApiQuery(query)): Portal<ApiQuery<AuditQuery>>,
) -> PortalResult<Response> {
    let typed: Vec<(String, String)> = form_urlencoded::parse(raw.unwrap_or_default().as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let org_id = page.org_id().to_string();
    let chrome = Chrome::new(
        &state,
        &csrf,
        Some(&page.user),
        Some(&page.access.org),
        "audit",
    )
    .await?;
    let mut view = AuditPage {
        chrome,
        org_id: org_id.clone(),
        entries: Vec::new(),
        errors: FormErrors::none(),
        actor: field(&typed, "actor"),
        action: field(&typed, "action"),
        from: field(&typed, "from"),
        to: field(&typed, "to"),
        next: None,
    };
    let found = match query.filter(Some(page.access.org.id.clone())) {
        Ok((filter, paging)) => audit_log::of_org(&state, &page.access, filter)
            .await
            .map(|entries| (entries, paging)),
        Err(error) => Err(error),
    };
    match found {
        Ok((entries, paging)) => {
            let body = paging.body(entries, |e| e.id.to_string(), entry_json);
            view.next = body.next_cursor.map(|cursor| {
                let mut query = form_urlencoded::Serializer::new(String::new());
                for name in ["actor", "action", "from", "to"] {
                    query.append_pair(name, &field(&typed, name));
                }
                query.append_pair("cursor", &cursor);
                format!("/orgs/{org_id}/audit?{}", query.finish())
            });
            view.entries = body
                .data
                .into_iter()
                .map(|entry| EntryRow {
                    details: match &entry.data {
                        serde_json::Value::Object(map) if map.is_empty() => String::new(),
                        other => other.to_string(),
                    },
                    entry,
                })
                .collect();
            Ok(render(&view))
        }
        Err(refusal @ ApiError::Validation(_)) => {
            view.errors = FormErrors::from_refusal(refusal, &["actor", "action", "from", "to"])?;
            Ok(render_status(StatusCode::UNPROCESSABLE_ENTITY, &view))
        }
        Err(other) => Err(other.into()),
    }
}
