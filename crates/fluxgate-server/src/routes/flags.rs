//! Feature flags and entitlement overrides: `/admin/flags…` (operators, `admin:flags`) and
//! `/admin/orgs/{org_id}/entitlements/{name}` (operators, `admin:plans`). An org's effective
//! entitlements are answered by `GET /orgs/{org_id}/entitlements` ([`plans`](super::plans)).

use crate::access::{AdminFlags, AdminPlans, OperatorAccess};
use crate::clock;
use crate::error::ApiResult;
use crate::extract::{ApiJson, ClientInfo, IdPath};
use crate::routes::no_content;
use crate::services::entitlements::{self, flag_view, override_view};
use crate::state::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use fluxgate_proto::{
    Data, EntitlementOverride, ErrorEnvelope, Flag, FlagChanges, FlagDefinition, NewOverride,
};
use fluxgate_store::OrgId;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// The routes of this module.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_flags))
        .routes(routes!(get_flag, define_flag, change_flag, delete_flag))
        .routes(routes!(set_override, remove_override))
}

/// Every feature flag, by name.
#[utoipa::path(get, path = "/admin/flags", tag = "admin",
    security(("bearer" = ["admin:flags"])),
    responses((status = 200, description = "the flags", body = Data<Vec<Flag>>)))]
async fn list_flags(
    State(state): State<AppState>,
    _operator: OperatorAccess<AdminFlags>,
) -> ApiResult<Json<Data<Vec<Flag>>>> {
    let flags = entitlements::flags(&state).await?;
    Ok(Json(Data {
        data: flags.iter().map(flag_view).collect(),
    }))
}

/// One feature flag.
#[utoipa::path(get, path = "/admin/flags/{name}", tag = "admin",
    params(("name" = String, Path, description = "the flag's name")),
    security(("bearer" = ["admin:flags"])),
    responses((status = 200, description = "the flag", body = Data<Flag>),
              (status = 404, description = "no such flag", body = ErrorEnvelope)))]
async fn get_flag(
    State(state): State<AppState>,
    _operator: OperatorAccess<AdminFlags>,
    IdPath(name): IdPath<String>,
) -> ApiResult<Json<Data<Flag>>> {
    let flag = entitlements::flag(&state, &name).await?;
    Ok(Json(Data {
        data: flag_view(&flag),
    }))
}

/// Creates a feature flag or replaces its definition: targeting (org list, plans, a stable
/// percentage rollout), variants, and whether it is enabled. On every node within a second.
#[utoipa::path(put, path = "/admin/flags/{name}", tag = "admin", request_body = FlagDefinition,
    params(("name" = String, Path, description = "the flag's name: a-z, 0-9, `_.-`")),
    security(("bearer" = ["admin:flags"])),
    responses((status = 201, description = "created", body = Data<Flag>),
              (status = 200, description = "replaced", body = Data<Flag>),
              (status = 422, description = "invalid fields", body = ErrorEnvelope)))]
async fn define_flag(
    State(state): State<AppState>,
    operator: OperatorAccess<AdminFlags>,
    client: ClientInfo,
    IdPath(name): IdPath<String>,
    ApiJson(body): ApiJson<FlagDefinition>,
) -> ApiResult<Response> {
    let (flag, created) =
        entitlements::define_flag(&state, &operator, &client, &name, &body, clock::now()).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        Json(Data {
            data: flag_view(&flag),
        }),
    )
        .into_response())
}

/// Changes what is given of a flag; `{"enabled": false}` is the kill switch (off for every org,
/// its entitlement taken from plans that include it), on every node within a second.
#[utoipa::path(patch, path = "/admin/flags/{name}", tag = "admin", request_body = FlagChanges,
    params(("name" = String, Path, description = "the flag's name")),
    security(("bearer" = ["admin:flags"])),
    responses((status = 200, description = "the changed flag", body = Data<Flag>),
              (status = 404, description = "no such flag", body = ErrorEnvelope),
              (status = 422, description = "invalid fields", body = ErrorEnvelope)))]
async fn change_flag(
    State(state): State<AppState>,
    operator: OperatorAccess<AdminFlags>,
    client: ClientInfo,
    IdPath(name): IdPath<String>,
    ApiJson(body): ApiJson<FlagChanges>,
) -> ApiResult<Json<Data<Flag>>> {
    let flag =
        entitlements::change_flag(&state, &operator, &client, &name, &body, clock::now()).await?;
    Ok(Json(Data {
        data: flag_view(&flag),
    }))
}

/// Deletes a feature flag.
#[utoipa::path(delete, path = "/admin/flags/{name}", tag = "admin",
    params(("name" = String, Path, description = "the flag's name")),
    security(("bearer" = ["admin:flags"])),
    responses((status = 204, description = "deleted"),
              (status = 404, description = "no such flag", body = ErrorEnvelope)))]
async fn delete_flag(
    State(state): State<AppState>,
    operator: OperatorAccess<AdminFlags>,
    client: ClientInfo,
    IdPath(name): IdPath<String>,
) -> ApiResult<Response> {
    entitlements::delete_flag(&state, &operator, &client, &name, clock::now()).await?;
    Ok(no_content())
}

/// Grants or denies one org an entitlement, until `expires_at` if given (a trial that ends by
/// itself), replacing any override of it; on every node within a second.
#[utoipa::path(put, path = "/admin/orgs/{org_id}/entitlements/{name}", tag = "admin",
    request_body = NewOverride,
    params(("org_id" = String, Path, description = "org_…"), ("name" = String, Path, description = "the entitlement")),
    security(("bearer" = ["admin:plans"])),
    responses((status = 200, description = "the override", body = Data<EntitlementOverride>),
              (status = 404, description = "no such org", body = ErrorEnvelope),
              (status = 422, description = "invalid fields", body = ErrorEnvelope)))]
async fn set_override(
    State(state): State<AppState>,
    operator: OperatorAccess<AdminPlans>,
    client: ClientInfo,
    IdPath((org_id, name)): IdPath<(OrgId, String)>,
    ApiJson(body): ApiJson<NewOverride>,
) -> ApiResult<Json<Data<EntitlementOverride>>> {
    let now = clock::now();
    let record =
        entitlements::set_override(&state, &operator, &client, &org_id, &name, &body, now).await?;
    Ok(Json(Data {
        data: override_view(&record, now),
    }))
}

/// Removes an org's override of an entitlement: its plan and the flags decide it again.
#[utoipa::path(delete, path = "/admin/orgs/{org_id}/entitlements/{name}", tag = "admin",
    params(("org_id" = String, Path, description = "org_…"), ("name" = String, Path, description = "the entitlement")),
    security(("bearer" = ["admin:plans"])),
    responses((status = 204, description = "removed"),
              (status = 404, description = "no such override", body = ErrorEnvelope)))]
async fn remove_override(
    State(state): State<AppState>,
    operator: OperatorAccess<AdminPlans>,
    client: ClientInfo,
    IdPath((org_id, name)): IdPath<(OrgId, String)>,
) -> ApiResult<Response> {
    entitlements::remove_override(&state, &operator, &client, &org_id, &name, clock::now()).await?;
    Ok(no_content())
}
