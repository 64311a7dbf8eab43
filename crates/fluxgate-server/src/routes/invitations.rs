//! Invitations: `/orgs/{org_id}/invitations` to invite by email (the mail carries a single-use
//! token), list and cancel; `/invitations/{token}/accept` to join as the invited address.

use crate::access::{MembersRead, MembersWrite, OrgAccess};
use crate::auth::{rfc3339, unix_now, AuthUser};
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, ApiQuery, ClientInfo};
use crate::mail::Mail;
use crate::routes::no_content;
use crate::routes::orgs::{org_json, PageQuery};
use crate::services::orgs::grantable_role;
use crate::state::AppState;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use fluxgate_core::email::Email;
use fluxgate_core::ids::InvitationId;
use fluxgate_core::secret::{random_token, sha256_hex, Secret};
use fluxgate_core::units::format_duration;
use fluxgate_core::validation::FieldErrors;
use fluxgate_store::{Acceptance, InvitationRecord, StoreError};
use serde::Deserialize;
use serde_json::{json, Value};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// The routes of this module.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_invitations, invite))
        .routes(routes!(cancel_invitation))
        .routes(routes!(accept_invitation))
}

fn invitation_json(inv: &InvitationRecord) -> Value {
    json!({
        "id": inv.id,
        "email": inv.email,
        "role": inv.role,
        "invited_by": inv.invited_by,
        "created_at": rfc3339(inv.created_at),
        "expires_at": rfc3339(inv.expires_at),
    })
}

/// `POST /orgs/{org_id}/invitations`
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InviteBody {
    email: String,
    /// The role the invitee gets; the inviter must hold everything it grants.
    role: String,
}

/// Invites an address to the org with a role; the mail carries a single-use token.
#[utoipa::path(post, path = "/orgs/{org_id}/invitations", tag = "orgs", request_body = InviteBody,
    params(("org_id" = String, Path, description = "org_…")),
    security(("bearer" = ["members:write"])),
    responses((status = 201, description = "invitation sent"), (status = 403, description = "role above the inviter's"),
              (status = 409, description = "already a member, or already invited")))]
async fn invite(
    State(state): State<AppState>,
    access: OrgAccess<MembersWrite>,
    client: ClientInfo,
    ApiJson(body): ApiJson<InviteBody>,
) -> ApiResult<Response> {
    let mut errors = FieldErrors::new();
    let email = errors.check("email", Email::parse(&body.email));
    errors.into_result()?;
    let Some(email) = email else {
        return Err(ApiError::field("email", "invalid"));
    };
    grantable_role(&state, &access, &body.role).await?;
    if let Some(user) = state.store.user_by_email(email.as_str()).await? {
        if state
            .store
            .membership(&access.org.id, &user.id)
            .await?
            .is_some()
        {
            return Err(ApiError::Conflict(
                "this address belongs to a member already".into(),
            ));
        }
    }
    let token = random_token();
    let now = unix_now();
    let ttl = state.config.auth.invitation_ttl;
    let invitation = InvitationRecord {
        id: InvitationId::generate().to_string(),
        org_id: access.org.id.clone(),
        email: email.as_str().to_owned(),
        role: body.role.clone(),
        token_hash: sha256_hex(token.expose()),
        invited_by: access.user_id().map(str::to_owned),
        created_at: now,
        expires_at: now + ttl.as_secs() as i64,
        accepted_at: None,
        accepted_by: None,
        canceled_at: None,
    };
    let audit = access
        .audit("member.invited", &client)
        .target("invitation", &invitation.id)
        .data(json!({ "email": invitation.email, "role": invitation.role }))
        .build();
    match state.store.create_invitation(&invitation, &audit).await {
        Ok(()) => {}
        Err(StoreError::Conflict(_)) => {
            return Err(ApiError::Conflict(
                "this address has an open invitation; cancel it to invite again".into(),
            ))
        }
        Err(e) => return Err(e.into()),
    }
    send_invitation(&state, &access.org.name, &invitation, &token, ttl);
    Ok((
        StatusCode::CREATED,
        Json(json!({ "data": invitation_json(&invitation) })),
    )
        .into_response())
}

fn send_invitation(
    state: &AppState,
    org_name: &str,
    invitation: &InvitationRecord,
    token: &Secret<String>,
    ttl: std::time::Duration,
) {
    let link = format!(
        "{}/invitations/accept?token={}",
        state.config.public_url,
        token.expose()
    );
    state.mailer.send(Mail {
        to: invitation.email.clone(),
        subject: format!("You are invited to join {org_name}"),
        body: format!(
            "You have been invited to join {org_name} as {role}.\r\n\r\n\
             Log in (or sign up with this address) and open this link to accept:\r\n{link}\r\n\r\n\
             Or send the token to POST /api/v1/invitations/{{token}}/accept:\r\ntoken={token}\r\n\r\n\
             The invitation expires in {ttl}.\r\n",
            role = invitation.role,
            token = token.expose(),
            ttl = format_duration(ttl),
        ),
    });
}

/// The org's open invitations.
#[utoipa::path(get, path = "/orgs/{org_id}/invitations", tag = "orgs",
    params(("org_id" = String, Path, description = "org_…"), PageQuery),
    security(("bearer" = ["members:read"])),
    responses((status = 200, description = "open, unexpired invitations")))]
async fn list_invitations(
    State(state): State<AppState>,
    access: OrgAccess<MembersRead>,
    ApiQuery(query): ApiQuery<PageQuery>,
) -> ApiResult<Json<Value>> {
    let page = query.page()?;
    let invitations = state
        .store
        .open_invitations(
            &access.org.id,
            unix_now(),
            page.cursor.as_deref(),
            page.fetch(),
        )
        .await?;
    Ok(Json(page.body(
        invitations,
        |i| i.id.clone(),
        invitation_json,
    )))
}

/// Cancels an open invitation; its token stops working.
#[utoipa::path(delete, path = "/orgs/{org_id}/invitations/{invitation_id}", tag = "orgs",
    params(("org_id" = String, Path, description = "org_…"), ("invitation_id" = String, Path, description = "inv_…")),
    security(("bearer" = ["members:write"])),
    responses((status = 204, description = "cancelled"), (status = 404, description = "no such open invitation")))]
async fn cancel_invitation(
    State(state): State<AppState>,
    access: OrgAccess<MembersWrite>,
    client: ClientInfo,
    Path(ids): Path<(String, String)>,
) -> ApiResult<Response> {
    let invitation_id = ids.1;
    let invitation_id: InvitationId = invitation_id.parse().map_err(|_| ApiError::NotFound)?;
    let audit = access
        .audit("invitation.canceled", &client)
        .target("invitation", invitation_id.as_str())
        .build();
    if state
        .store
        .cancel_invitation(&access.org.id, invitation_id.as_str(), unix_now(), &audit)
        .await?
    {
        Ok(no_content())
    } else {
        Err(ApiError::NotFound)
    }
}

fn invitation_gone() -> ApiError {
    ApiError::NotFound
}

/// Joins the org of an invitation. The caller must be logged in with the invited address; the
/// token works once, until it expires or is cancelled.
#[utoipa::path(post, path = "/invitations/{token}/accept", tag = "orgs",
    params(("token" = String, Path, description = "the token from the invitation mail")),
    security(("bearer" = [])),
    responses((status = 200, description = "joined: the org and the role"), (status = 403, description = "invitation for another address"),
              (status = 404, description = "unknown, used, cancelled or expired"), (status = 409, description = "already a member")))]
async fn accept_invitation(
    State(state): State<AppState>,
    user: AuthUser,
    client: ClientInfo,
    Path(token): Path<String>,
) -> ApiResult<Json<Value>> {
    let token = Secret::new(token);
    let now = unix_now();
    let invitation = state
        .store
        .invitation_by_token(&sha256_hex(token.expose()))
        .await?
        .filter(|i| i.accepted_at.is_none() && i.canceled_at.is_none() && i.expires_at > now)
        .ok_or_else(invitation_gone)?;
    let account = state
        .store
        .user_by_id(user.user_id())
        .await?
        .ok_or(ApiError::Unauthorized)?;
    if account.email != invitation.email {
        return Err(ApiError::Refused(
            "this invitation was sent to another email address; log in with that address to accept it".into(),
        ));
    }
    let audit = crate::audit::AuditEvent::new("member.joined", Some(user.user_id()), &client)
        .org(Some(&invitation.org_id))
        .target("invitation", &invitation.id)
        .data(json!({ "role": invitation.role }))
        .build();
    match state
        .store
        .accept_invitation(&invitation.id, user.user_id(), now, &audit)
        .await?
    {
        Acceptance::Joined => {}
        Acceptance::Gone => return Err(invitation_gone()),
        Acceptance::AlreadyMember => {
            return Err(ApiError::Conflict(
                "you are a member of this organization already".into(),
            ))
        }
    }
    let org = state
        .store
        .org(&invitation.org_id)
        .await?
        .ok_or(ApiError::NotFound)?;
    Ok(Json(
        json!({ "data": org_json(&org, Some(&invitation.role)) }),
    ))
}
