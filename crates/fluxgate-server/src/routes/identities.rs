//! `/auth/oidc/providers` and `/auth/identities`: the HTTP face of
//! [`services::oidc`](crate::services::oidc) — which providers sign in, and the account's linked
//! identities (unlinking one), and starting an app's sign-in. Signing in and linking are
//! browser flows, back at `/auth/oidc/{id}/callback` (in the portal's pages).

use crate::clock::{self, rfc3339};
use crate::error::ApiResult;
use crate::extract::{ApiQuery, ClientInfo, IdPath};
use crate::request_limits::IpLimit;
use crate::services::oidc::{self, EndsIn};
use crate::state::AppState;
use crate::user_auth::AuthUser;
use axum::extract::State;
use axum::response::Response;
use axum::Json;
use fluxgate_proto::{Data, ErrorEnvelope, Identity, OidcProvider};
use fluxgate_store::{IdentityId, IdentityRecord};
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// The routes of this module.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(oidc_providers))
        .routes(routes!(start_oidc_sign_in))
        .routes(routes!(list_identities))
        .routes(routes!(unlink_identity))
}

/// The OpenID providers configured for signing in (`[auth.oidc.<id>]`).
#[utoipa::path(get, path = "/auth/oidc/providers", tag = "auth",
    responses((status = 200, description = "the providers", body = Data<Vec<OidcProvider>>)))]
async fn oidc_providers(State(state): State<AppState>) -> Json<Data<Vec<OidcProvider>>> {
    Json(Data {
        data: state
            .oidc
            .list()
            .iter()
            .map(|p| OidcProvider {
                id: p.id.clone(),
                name: p.name.clone(),
                sign_in_path: format!("/login/oidc/{}", p.id),
            })
            .collect(),
    })
}

/// Where an app's sign-in returns.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct StartQuery {
    /// A local path of this origin to return to (default `/`).
    next: Option<String>,
}

/// Starts a sign-in with a provider for an app on this origin: open it in the browser (a
/// navigation, not a fetch). The provider's callback returns the browser to `next` with the
/// API's `access_token` and `refresh_token` cookies; or with `?mfa_required=<methods>` and the
/// challenge in an `HttpOnly` `mfa_token` cookie, which `POST /auth/mfa/verify` (and
/// `/auth/mfa/passkey`) take in place of a body's `mfa_token`; or with `?oidc_error=<code>`
/// (`state`, `token`, `unverified_email`, `account_unverified`, `linked_elsewhere`, `gone`).
#[utoipa::path(get, path = "/auth/oidc/{provider}/start", tag = "auth", params(("provider" = String, Path, description = "the provider's id"), StartQuery),
    responses((status = 303, description = "to the provider's authorisation page, the flow's `state` kept in a cookie"),
              (status = 404, description = "no such provider", body = ErrorEnvelope),
              (status = 503, description = "the provider cannot be reached", body = ErrorEnvelope)))]
async fn start_oidc_sign_in(
    State(state): State<AppState>,
    _limit: IpLimit,
    axum::extract::Path(provider): axum::extract::Path<String>,
    ApiQuery(query): ApiQuery<StartQuery>,
) -> ApiResult<Response> {
    let next = crate::portal::local_path(query.next.as_deref());
    let now = clock::now();
    let authorisation = oidc::begin(&state, &provider, None, next, EndsIn::Api, now).await?;
    Ok(crate::portal::to_oidc_provider(&state, &authorisation))
}

/// The account's linked identities, oldest first.
#[utoipa::path(get, path = "/auth/identities", tag = "auth", security(("bearer" = [])),
    responses((status = 200, description = "the identities", body = Data<Vec<Identity>>)))]
async fn list_identities(
    State(state): State<AppState>,
    user: AuthUser,
) -> ApiResult<Json<Data<Vec<Identity>>>> {
    let identities = oidc::identities(&state, &user).await?;
    Ok(Json(Data {
        data: identities.iter().map(identity_json).collect(),
    }))
}

/// An identity as the API shows it.
pub fn identity_json(identity: &IdentityRecord) -> Identity {
    Identity {
        id: identity.id.to_string(),
        provider: identity.provider.clone(),
        email: identity.email.clone(),
        created_at: rfc3339(identity.created_at),
        last_used_at: identity.last_used_at.map(rfc3339),
    }
}

/// Unlinks an identity — refused (409) when it is the account's only way in (no password, no
/// passkey, no other identity).
#[utoipa::path(delete, path = "/auth/identities/{identity_id}", tag = "auth", security(("bearer" = [])),
    params(("identity_id" = String, Path, description = "idn_…")),
    responses((status = 204, description = "unlinked"),
              (status = 404, description = "no such identity of yours", body = ErrorEnvelope),
              (status = 409, description = "the account's only way in", body = ErrorEnvelope)))]
async fn unlink_identity(
    State(state): State<AppState>,
    user: AuthUser,
    client: ClientInfo,
    IdPath(id): IdPath<IdentityId>,
) -> ApiResult<Response> {
    oidc::unlink(&state, &user, &client, &id, clock::now()).await?;
    Ok(super::no_content())
}
