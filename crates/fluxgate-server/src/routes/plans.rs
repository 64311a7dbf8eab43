//! Plans and entitlements: `PUT /admin/orgs/{org_id}/plan` (operators, `admin:plans`) and
//! `GET /orgs/{org_id}/entitlements`. Plans themselves are declared in the configuration.

use crate::access::{AdminPlans, OperatorAccess, OrgAccess, OrgRead};
use crate::clock;
use crate::error::ApiResult;
use crate::extract::{ApiJson, ClientInfo, IdPath};
use crate::routes::orgs::org_json;
use crate::services;
use crate::state::AppState;
use axum::extract::State;
use axum::Json;
use fluxgate_proto::{Data, Entitlements, ErrorEnvelope, Org};
use fluxgate_store::OrgId;
use serde::Deserialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// The routes of this module.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(assign_plan))
        .routes(routes!(entitlements))
}

/// `PUT /admin/orgs/{org_id}/plan`
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PlanBody {
    /// A plan name from the configuration.
    plan: String,
}

/// Puts an org on a plan; its keys' limits, quotas and entitlements change on their next verify.
#[utoipa::path(put, path = "/admin/orgs/{org_id}/plan", tag = "admin", request_body = PlanBody,
    params(("org_id" = String, Path, description = "org_…")),
    security(("bearer" = ["admin:plans"])),
    responses((status = 200, description = "the org on its new plan", body = Data<Org>), (status = 422, description = "unknown plan", body = ErrorEnvelope)))]
async fn assign_plan(
    State(state): State<AppState>,
    operator: OperatorAccess<AdminPlans>,
    client: ClientInfo,
    IdPath(org_id): IdPath<OrgId>,
    ApiJson(body): ApiJson<PlanBody>,
) -> ApiResult<Json<Data<Org>>> {
    let org = services::orgs::assign_plan(
        &state,
        &operator,
        &client,
        &org_id,
        &body.plan,
        clock::now(),
    )
    .await?;
    Ok(Json(Data {
        data: org_json(&org, None),
    }))
}

/// The org's plan: its entitlements, rate limit and this month's quotas with what is used.
#[utoipa::path(get, path = "/orgs/{org_id}/entitlements", tag = "orgs",
    params(("org_id" = String, Path, description = "org_…")),
    security(("bearer" = ["org:read"])),
    responses((status = 200, description = "plan, entitlements, rate limit, quotas", body = Data<Entitlements>)))]
async fn entitlements(
    State(state): State<AppState>,
    access: OrgAccess<OrgRead>,
) -> ApiResult<Json<Data<Entitlements>>> {
    let data = services::entitlements::of_org(&state, &access.org, clock::now()).await?;
    Ok(Json(Data { data }))
}
