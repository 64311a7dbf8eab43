//! `/auth/oidc/providers` and `/auth/identities`: the HTTP face of
//! [`services::oidc`](crate::services::oidc) — which providers sign in, and the account's linked
//! identities (unlinking one). Signing in and linking are browser flows: the portal's
//! `/login/oidc/{id}` and `/account/identities/{id}/link`, back at `/auth/oidc/{id}/callback`.

use crate::clock::{self, rfc3339};
use crate::error::ApiResult;
use crate::extract::{ClientInfo, IdPath};
use crate::services::oidc;
use crate::state::AppState;
use crate::user_auth::AuthUser;
use axum::extract::State;
use axum::response::Response;
use axum::Json;
use fluxgate_proto::{Data, ErrorEnvelope, Identity, OidcProvider};
use fluxgate_store::{IdentityId, IdentityRecord};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// The routes of this module.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(providers))
        .routes(routes!(list))
        .routes(routes!(unlink))
}

/// The OpenID providers configured for signing in (`[auth.oidc.<id>]`).
#[utoipa::path(get, path = "/auth/oidc/providers", tag = "auth",
    responses((status = 200, description = "the providers", body = Data<Vec<OidcProvider>>)))]
async fn providers(State(state): State<AppState>) -> Json<Data<Vec<OidcProvider>>> {
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

/// The account's linked identities, oldest first.
#[utoipa::path(get, path = "/auth/identities", tag = "auth", security(("bearer" = [])),
    responses((status = 200, description = "the identities", body = Data<Vec<Identity>>)))]
async fn list(
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
async fn unlink(
    State(state): State<AppState>,
    user: AuthUser,
    client: ClientInfo,
    IdPath(id): IdPath<IdentityId>,
) -> ApiResult<Response> {
    oidc::unlink(&state, &user, &client, &id, clock::now()).await?;
    Ok(super::no_content())
}
