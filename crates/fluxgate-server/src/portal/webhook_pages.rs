//! An org's webhooks in the browser: its endpoints, adding one (its signing secret shown
//! exactly once), an endpoint's delivery log with a redeliver button, turning it off or on, and
//! deleting it — each through the same service as the JSON API.

use crate::access::{WebhooksRead, WebhooksWrite};
use crate::error::ApiError;
use crate::extract::{ClientInfo, IdPath, Paging};
use crate::portal::{
    render, render_no_store, render_status, see_other, Chrome, CsrfToken, FormErrors, OrgPage,
    Portal, PortalForm, PortalResult,
};
use crate::services::webhooks::{self, delivery_view, view};
use crate::state::AppState;
use askama::Template;
use axum::extract::State;
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use fluxgate_proto::{Delivery, NewWebhook, Webhook, WebhookChanges};
use fluxgate_store::{DeliveryId, OrgId, WebhookId, EVENT_TYPES};

/// The routes of these pages.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/orgs/{org_id}/webhooks", get(list).post(create))
        .route("/orgs/{org_id}/webhooks/{webhook_id}", get(detail))
        .route(
            "/orgs/{org_id}/webhooks/{webhook_id}/enabled",
            post(set_enabled),
        )
        .route("/orgs/{org_id}/webhooks/{webhook_id}/delete", post(delete))
        .route(
            "/orgs/{org_id}/webhooks/{webhook_id}/deliveries/{delivery_id}/redeliver",
            post(redeliver),
        )
}

/// An event type offered on the form.
struct EventChoice {
    name: &'static str,
    checked: bool,
}

#[derive(Template)]
#[template(path = "webhooks.html")]
struct WebhooksPage {
    chrome: Chrome,
    org_id: String,
    endpoints: Vec<Webhook>,
    can_write: bool,
    errors: FormErrors,
    url: String,
    description: String,
    events: Vec<EventChoice>,
    /// A just-made endpoint and its secret, shown once.
    created: Option<Webhook>,
}

async fn list_page(
    state: &AppState,
    page: &OrgPage<impl crate::access::Required>,
    csrf: &CsrfToken,
) -> PortalResult<WebhooksPage> {
    let OrgPage { user, access } = page;
    let endpoints = webhooks::list(state, access).await?;
    Ok(WebhooksPage {
        chrome: Chrome::new(state, csrf, Some(user), Some(&access.org), "webhooks").await?,
        org_id: access.org.id.to_string(),
        endpoints: endpoints.iter().map(|e| view(e, None)).collect(),
        can_write: access.allows(state, "webhooks:write"),
        errors: FormErrors::none(),
        url: String::new(),
        description: String::new(),
        events: event_choices(&[]),
        created: None,
    })
}

fn event_choices(chosen: &[String]) -> Vec<EventChoice> {
    std::iter::once("*")
        .chain(EVENT_TYPES.iter().copied())
        .map(|name| EventChoice {
            name,
            checked: chosen.iter().any(|c| c == name),
        })
        .collect()
}

/// The org's endpoints, and the form to add one.
async fn list(
    State(state): State<AppState>,
    page: OrgPage<WebhooksRead>,
    csrf: CsrfToken,
) -> PortalResult<Response> {
    Ok(render(&list_page(&state, &page, &csrf).await?))
}

/// Adds an endpoint through the same service as `POST …/webhooks`; its secret is shown once,
/// on the answer (never stored by the browser).
async fn create(
    State(state): State<AppState>,
    page: OrgPage<WebhooksWrite>,
    Portal(client): Portal<ClientInfo>,
    csrf: CsrfToken,
    form: PortalForm,
) -> PortalResult<Response> {
    let events = form.all("events");
    let input = NewWebhook {
        url: form.raw("url").to_owned(),
        events: events.clone(),
        description: form.get("description").map(str::to_owned),
        all_orgs: false,
    };
    let now = crate::clock::now();
    match webhooks::create(&state, &page.access, &client, input, now).await {
        Ok(created) => {
            let mut listing = list_page(&state, &page, &csrf).await?;
            listing.created = Some(created);
            Ok(render_no_store(&listing))
        }
        Err(refusal) => {
            let (status, _) = refusal.status_and_message();
            let mut listing = list_page(&state, &page, &csrf).await?;
            listing.errors = FormErrors::from_refusal(refusal, &["url", "events", "description"])?;
            listing.url = form.raw("url").to_owned();
            listing.description = form.raw("description").to_owned();
            listing.events = event_choices(&events);
            Ok(render_status(status, &listing))
        }
    }
}

#[derive(Template)]
#[template(path = "webhook_detail.html")]
struct WebhookPage {
    chrome: Chrome,
    org_id: String,
    endpoint: Webhook,
    deliveries: Vec<Delivery>,
    next: Option<String>,
    can_write: bool,
}

#[derive(serde::Deserialize)]
struct LogQuery {
    cursor: Option<String>,
}

/// An endpoint and its delivery log (newest first, 50 a page), with redeliver buttons.
async fn detail(
    State(state): State<AppState>,
    page: OrgPage<WebhooksRead>,
    csrf: CsrfToken,
    Portal(IdPath((_, id))): Portal<IdPath<(OrgId, WebhookId)>>,
    Portal(crate::extract::ApiQuery(query)): Portal<crate::extract::ApiQuery<LogQuery>>,
) -> PortalResult<Response> {
    let endpoint = webhooks::get(&state, &page.access, &id).await?;
    let paging = Paging::new(None, query.cursor)?;
    let found = webhooks::deliveries(&state, &page.access, &id, &paging).await?;
    let body = paging.body(found, |d| d.id.to_string(), delivery_view);
    let org_id = page.org_id().to_string();
    let next = body
        .next_cursor
        .map(|cursor| format!("/orgs/{org_id}/webhooks/{id}?cursor={cursor}"));
    let OrgPage { user, access } = &page;
    Ok(render(&WebhookPage {
        chrome: Chrome::new(&state, &csrf, Some(user), Some(&access.org), "webhooks").await?,
        can_write: access.allows(&state, "webhooks:write"),
        endpoint: view(&endpoint, None),
        deliveries: body.data,
        next,
        org_id,
    }))
}

/// Turns the endpoint off or on (as `PATCH …` `{enabled}`).
async fn set_enabled(
    State(state): State<AppState>,
    page: OrgPage<WebhooksWrite>,
    Portal(client): Portal<ClientInfo>,
    Portal(IdPath((_, id))): Portal<IdPath<(OrgId, WebhookId)>>,
    form: PortalForm,
) -> PortalResult<Response> {
    let changes = WebhookChanges {
        enabled: Some(form.get("enabled") == Some("on")),
        ..WebhookChanges::default()
    };
    webhooks::update(
        &state,
        &page.access,
        &client,
        &id,
        changes,
        crate::clock::now(),
    )
    .await?;
    Ok(see_other(&format!("/orgs/{}/webhooks/{id}", page.org_id())))
}

/// Deletes the endpoint (as `DELETE …`).
async fn delete(
    State(state): State<AppState>,
    page: OrgPage<WebhooksWrite>,
    Portal(client): Portal<ClientInfo>,
    Portal(IdPath((_, id))): Portal<IdPath<(OrgId, WebhookId)>>,
    _form: PortalForm,
) -> PortalResult<Response> {
    match webhooks::delete(&state, &page.access, &client, &id, crate::clock::now()).await {
        Ok(()) | Err(ApiError::NotFound) => {}
        Err(other) => return Err(other.into()),
    }
    Ok(see_other(&format!("/orgs/{}/webhooks", page.org_id())))
}

/// Sends a delivery's event again (as `POST …/redeliver`).
async fn redeliver(
    State(state): State<AppState>,
    page: OrgPage<WebhooksWrite>,
    Portal(IdPath((_, id, delivery))): Portal<IdPath<(OrgId, WebhookId, DeliveryId)>>,
    _form: PortalForm,
) -> PortalResult<Response> {
    webhooks::redeliver(&state, &page.access, &id, &delivery, crate::clock::now()).await?;
    Ok(see_other(&format!("/orgs/{}/webhooks/{id}", page.org_id())))
}
