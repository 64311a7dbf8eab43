//! Invitations: `/orgs/{org_id}/invitations` to invite by email (the mail carries a single-use
//! token), list and cancel; `/invitations/{token}/accept` to join as the invited address.

use crate::access::{MembersRead, MembersWrite, OrgAccess};
use crate::clock::{self, rfc3339};
use crate::error::ApiResult;
use crate::extract::{ApiJson, ApiQuery, ClientInfo, IdPath};
use crate::routes::no_content;
use crate::routes::orgs::{org_json, PageQuery};
use crate::services::invitations::{self, NewInvitation};
use crate::state::AppState;
use crate::user_auth::AuthUser;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use fluxgate_core::secret::SecretString;
use fluxgate_proto::{Data, ErrorEnvelope, Invitation, Org, Page};
use fluxgate_store::{InvitationId, InvitationRecord, OrgId, UserId};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// The routes of this module.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_invitations, invite))
        .routes(routes!(cancel_invitation))
        .routes(routes!(resend_invitation))
        .routes(routes!(accept_invitation))
}

pub fn invitation_json(inv: &InvitationRecord) -> Invitation {
    Invitation {
        id: inv.id.to_string(),
        email: inv.email.clone(),
        role: inv.role.clone(),
        invited_by: inv.invited_by.as_ref().map(UserId::to_string),
        created_at: rfc3339(inv.created_at),
        expires_at: rfc3339(inv.expires_at),
    }
}

/// Invites an address to the org with a role; the mail carries a single-use token.
#[utoipa::path(post, path = "/orgs/{org_id}/invitations", tag = "orgs", request_body = NewInvitation,
    params(("org_id" = String, Path, description = "org_…")),
    security(("bearer" = ["members:write"])),
    responses((status = 201, description = "invitation sent", body = Data<Invitation>), (status = 403, description = "role above the inviter's"),
              (status = 409, description = "already a member, or already invited")))]
async fn invite(
    State(state): State<AppState>,
    access: OrgAccess<MembersWrite>,
    client: ClientInfo,
    ApiJson(body): ApiJson<NewInvitation>,
) -> ApiResult<Response> {
    let invitation = invitations::invite(&state, &access, &client, body, clock::now()).await?;
    Ok((
        StatusCode::CREATED,
        Json(Data {
            data: invitation_json(&invitation),
        }),
    )
        .into_response())
}

/// The org's open invitations.
#[utoipa::path(get, path = "/orgs/{org_id}/invitations", tag = "orgs",
    params(("org_id" = String, Path, description = "org_…"), PageQuery),
    security(("bearer" = ["members:read"])),
    responses((status = 200, description = "open, unexpired invitations", body = Page<Invitation>)))]
async fn list_invitations(
    State(state): State<AppState>,
    access: OrgAccess<MembersRead>,
    ApiQuery(query): ApiQuery<PageQuery>,
) -> ApiResult<Json<Page<Invitation>>> {
    let page = query.page()?;
    let invitations = invitations::list_open(&state, &access, &page, clock::now()).await?;
    Ok(Json(page.body(
        invitations,
        |i| i.id.to_string(),
        invitation_json,
    )))
}

/// Cancels an open invitation; its token stops working.
/// Mails an open invitation again with a new token; the old link stops working.
#[utoipa::path(post, path = "/orgs/{org_id}/invitations/{invitation_id}/resend", tag = "orgs",
    params(("org_id" = String, Path, description = "org_…"), ("invitation_id" = String, Path, description = "inv_…")),
    security(("bearer" = ["members:write"])),
    responses((status = 200, description = "the invitation, with its new expiry", body = Data<Invitation>), (status = 404, description = "no such open invitation", body = ErrorEnvelope)))]
async fn resend_invitation(
    State(state): State<AppState>,
    access: OrgAccess<MembersWrite>,
    client: ClientInfo,
    IdPath(ids): IdPath<(OrgId, InvitationId)>,
) -> ApiResult<Json<Data<Invitation>>> {
    let invitation = invitations::resend(&state, &access, &client, &ids.1, clock::now()).await?;
    Ok(Json(Data {
        data: invitation_json(&invitation),
    }))
}

#[utoipa::path(delete, path = "/orgs/{org_id}/invitations/{invitation_id}", tag = "orgs",
    params(("org_id" = String, Path, description = "org_…"), ("invitation_id" = String, Path, description = "inv_…")),
    security(("bearer" = ["members:write"])),
    responses((status = 204, description = "cancelled"), (status = 404, description = "no such open invitation")))]
async fn cancel_invitation(
    State(state): State<AppState>,
    access: OrgAccess<MembersWrite>,
    client: ClientInfo,
    IdPath(ids): IdPath<(OrgId, InvitationId)>,
) -> ApiResult<Response> {
    invitations::cancel(&state, &access, &client, &ids.1, clock::now()).await?;
    Ok(no_content())
}

/// Joins the org of an invitation. The caller must be logged in with the invited address; the
/// token works once, until it expires or is cancelled.
#[utoipa::path(post, path = "/invitations/{token}/accept", tag = "orgs",
    params(("token" = String, Path, description = "the token from the invitation mail")),
    security(("bearer" = [])),
    responses((status = 200, description = "joined: the org and the role", body = Data<Org>), (status = 403, description = "invitation for another address"),
              (status = 404, description = "unknown, used, cancelled or expired"), (status = 409, description = "already a member")))]
async fn accept_invitation(
    State(state): State<AppState>,
    user: AuthUser,
    client: ClientInfo,
    Path(token): Path<String>,
) -> ApiResult<Json<Data<Org>>> {
    let (org, role) = invitations::accept(
        &state,
        &user,
        &client,
        &SecretString::from(token),
        clock::now(),
    )
    .await?;
    Ok(Json(Data {
        data: org_json(&org, Some(&role)),
    }))
}
