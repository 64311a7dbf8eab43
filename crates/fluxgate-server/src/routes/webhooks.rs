//! `/orgs/{org_id}/webhooks`: the HTTP face of [`services::webhooks`](crate::services::webhooks)
//! — an org's endpoints, their delivery logs, and redelivering.

use crate::access::{OrgAccess, WebhooksRead, WebhooksWrite};
use crate::clock;
use crate::error::ApiResult;
use crate::extract::{ApiJson, ApiQuery, ClientInfo, IdPath, Paging};
use crate::routes::no_content;
use crate::services::webhooks::{self, delivery_view, view};
use crate::state::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use fluxgate_proto::{Data, Delivery, ErrorEnvelope, NewWebhook, Page, Webhook, WebhookChanges};
use fluxgate_store::{DeliveryId, OrgId, WebhookId};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// The routes of this module.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_webhooks, create_webhook))
        .routes(routes!(get_webhook, update_webhook, delete_webhook))
        .routes(routes!(webhook_deliveries))
        .routes(routes!(redeliver_webhook))
}

/// Registers an endpoint; its signing secret (`whsec_…`) is in this answer only.
#[utoipa::path(post, path = "/orgs/{org_id}/webhooks", tag = "webhooks", request_body = NewWebhook,
    params(("org_id" = String, Path, description = "org_…")),
    security(("bearer" = ["webhooks:write"])),
    responses((status = 201, description = "the endpoint, with its signing secret (shown once)", body = Data<Webhook>),
              (status = 409, description = "the org has 20 endpoints already", body = ErrorEnvelope),
              (status = 422, description = "invalid fields (a private address among them)", body = ErrorEnvelope)))]
async fn create_webhook(
    State(state): State<AppState>,
    access: OrgAccess<WebhooksWrite>,
    client: ClientInfo,
    ApiJson(body): ApiJson<NewWebhook>,
) -> ApiResult<Response> {
    let created = webhooks::create(&state, &access, &client, body, clock::now()).await?;
    let mut response = (StatusCode::CREATED, Json(Data { data: created })).into_response();
    crate::user_auth::no_store(&mut response);
    Ok(response)
}

/// The org's endpoints.
#[utoipa::path(get, path = "/orgs/{org_id}/webhooks", tag = "webhooks",
    params(("org_id" = String, Path, description = "org_…")),
    security(("bearer" = ["webhooks:read"])),
    responses((status = 200, description = "the endpoints (never their secrets)", body = Data<Vec<Webhook>>)))]
async fn list_webhooks(
    State(state): State<AppState>,
    access: OrgAccess<WebhooksRead>,
) -> ApiResult<Json<Data<Vec<Webhook>>>> {
    let endpoints = webhooks::list(&state, &access).await?;
    Ok(Json(Data {
        data: endpoints.iter().map(|e| view(e, None)).collect(),
    }))
}

/// One endpoint.
#[utoipa::path(get, path = "/orgs/{org_id}/webhooks/{webhook_id}", tag = "webhooks",
    params(("org_id" = String, Path, description = "org_…"), ("webhook_id" = String, Path, description = "whk_…")),
    security(("bearer" = ["webhooks:read"])),
    responses((status = 200, description = "the endpoint", body = Data<Webhook>),
              (status = 404, description = "no such endpoint in this org", body = ErrorEnvelope)))]
async fn get_webhook(
    State(state): State<AppState>,
    access: OrgAccess<WebhooksRead>,
    IdPath(ids): IdPath<(OrgId, WebhookId)>,
) -> ApiResult<Json<Data<Webhook>>> {
    let endpoint = webhooks::get(&state, &access, &ids.1).await?;
    Ok(Json(Data {
        data: view(&endpoint, None),
    }))
}

/// Changes an endpoint's URL, events, note, or whether it is enabled.
#[utoipa::path(patch, path = "/orgs/{org_id}/webhooks/{webhook_id}", tag = "webhooks", request_body = WebhookChanges,
    params(("org_id" = String, Path, description = "org_…"), ("webhook_id" = String, Path, description = "whk_…")),
    security(("bearer" = ["webhooks:write"])),
    responses((status = 200, description = "the changed endpoint", body = Data<Webhook>),
              (status = 404, description = "no such endpoint in this org", body = ErrorEnvelope),
              (status = 422, description = "invalid fields", body = ErrorEnvelope)))]
async fn update_webhook(
    State(state): State<AppState>,
    access: OrgAccess<WebhooksWrite>,
    client: ClientInfo,
    IdPath(ids): IdPath<(OrgId, WebhookId)>,
    ApiJson(body): ApiJson<WebhookChanges>,
) -> ApiResult<Json<Data<Webhook>>> {
    let changed = webhooks::update(&state, &access, &client, &ids.1, body, clock::now()).await?;
    Ok(Json(Data {
        data: view(&changed, None),
    }))
}

/// Deletes an endpoint; its pending deliveries are dropped.
#[utoipa::path(delete, path = "/orgs/{org_id}/webhooks/{webhook_id}", tag = "webhooks",
    params(("org_id" = String, Path, description = "org_…"), ("webhook_id" = String, Path, description = "whk_…")),
    security(("bearer" = ["webhooks:write"])),
    responses((status = 204, description = "deleted"),
              (status = 404, description = "no such endpoint in this org", body = ErrorEnvelope)))]
async fn delete_webhook(
    State(state): State<AppState>,
    access: OrgAccess<WebhooksWrite>,
    client: ClientInfo,
    IdPath(ids): IdPath<(OrgId, WebhookId)>,
) -> ApiResult<Response> {
    webhooks::delete(&state, &access, &client, &ids.1, clock::now()).await?;
    Ok(no_content())
}

/// `?limit=&cursor=` of a delivery log.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DeliveryQuery {
    /// 1–200, default 50.
    limit: Option<u32>,
    /// The previous page's `next_cursor`.
    cursor: Option<String>,
}

/// An endpoint's deliveries, newest first: each event's attempts, last status and error.
#[utoipa::path(get, path = "/orgs/{org_id}/webhooks/{webhook_id}/deliveries", tag = "webhooks",
    params(("org_id" = String, Path, description = "org_…"), ("webhook_id" = String, Path, description = "whk_…"), DeliveryQuery),
    security(("bearer" = ["webhooks:read"])),
    responses((status = 200, description = "deliveries, newest first", body = Page<Delivery>),
              (status = 404, description = "no such endpoint in this org", body = ErrorEnvelope)))]
async fn webhook_deliveries(
    State(state): State<AppState>,
    access: OrgAccess<WebhooksRead>,
    IdPath(ids): IdPath<(OrgId, WebhookId)>,
    ApiQuery(query): ApiQuery<DeliveryQuery>,
) -> ApiResult<Json<Page<Delivery>>> {
    let page = Paging::new(query.limit, query.cursor)?;
    let found = webhooks::deliveries(&state, &access, &ids.1, &page).await?;
    Ok(Json(page.body(found, |d| d.id.to_string(), delivery_view)))
}

/// A redelivery queued.
#[derive(Debug, Serialize, ToSchema)]
pub struct Redelivery {
    /// The new delivery (`whd_…`).
    pub delivery_id: String,
}

/// Sends one delivery's event again (as a new delivery, after the endpoint's pending ones).
#[utoipa::path(post, path = "/orgs/{org_id}/webhooks/{webhook_id}/deliveries/{delivery_id}/redeliver", tag = "webhooks",
    params(("org_id" = String, Path, description = "org_…"), ("webhook_id" = String, Path, description = "whk_…"),
           ("delivery_id" = String, Path, description = "whd_…")),
    security(("bearer" = ["webhooks:write"])),
    responses((status = 202, description = "queued", body = Data<Redelivery>),
              (status = 404, description = "no such endpoint or delivery in this org", body = ErrorEnvelope)))]
async fn redeliver_webhook(
    State(state): State<AppState>,
    access: OrgAccess<WebhooksWrite>,
    IdPath(ids): IdPath<(OrgId, WebhookId, DeliveryId)>,
) -> ApiResult<Response> {
    let queued = webhooks::redeliver(&state, &access, &ids.1, &ids.2, clock::now()).await?;
    let data = Redelivery {
        delivery_id: queued.to_string(),
    };
    Ok((StatusCode::ACCEPTED, Json(Data { data })).into_response())
}
