//! Invitations: inviting an address to an org with a role (never above the inviter's), the
//! mailed single-use token, listing, cancelling, and joining as the invited address.

use crate::access::{MembersRead, MembersWrite, OrgAccess};
use crate::audit::AuditEvent;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ClientInfo, Paging};
use crate::invalidation::Change;
use crate::mail::Mail;
use crate::services::orgs::grantable_role;
use crate::state::AppState;
use crate::user_auth::AuthUser;
use fluxgate_core::email::Email;
use fluxgate_core::ids::InvitationId;
use fluxgate_core::secret::{random_token, sha256_hex, ExposeSecret, SecretString};
use fluxgate_core::units::format_duration;
use fluxgate_core::validation::FieldErrors;
use fluxgate_store::{Acceptance, InvitationRecord, OrgRecord, StoreError};
use serde::Deserialize;
use serde_json::json;
use utoipa::ToSchema;

/// An invitation to send (`POST /orgs/{org_id}/invitations`).
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewInvitation {
    /// The address to invite.
    pub email: String,
    /// The role the invitee gets; the inviter must hold everything it grants.
    pub role: String,
}

/// Invites an address to the org with a role; the mail carries a single-use token. A member's
/// address, or one with an open invitation: 409.
pub async fn invite(
    state: &AppState,
    access: &OrgAccess<MembersWrite>,
    client: &ClientInfo,
    input: NewInvitation,
    now: i64,
) -> ApiResult<InvitationRecord> {
    let mut errors = FieldErrors::new();
    let email = errors.check("email", Email::parse(&input.email));
    errors.into_result()?;
    let Some(email) = email else {
        return Err(ApiError::field("email", "invalid"));
    };
    grantable_role(state, access, &input.role).await?;
    if let Some(user) = state
        .store
        .user_by_login(fluxgate_store::LoginKind::Email, email.as_str())
        .await?
    {
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
    let ttl = state.config.auth.invitation_ttl;
    let invitation = InvitationRecord {
        id: InvitationId::generate(),
        org_id: access.org.id.clone(),
        email: email.as_str().to_owned(),
        role: input.role,
        token_hash: sha256_hex(token.expose_secret()),
        invited_by: access.user_id().cloned(),
        created_at: now,
        expires_at: crate::clock::after(now, ttl),
        accepted_at: None,
        accepted_by: None,
        canceled_at: None,
    };
    let audit = access
        .audit("member.invited", client)
        .at(now)
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
    send_invitation(state, &access.org.name, &invitation, &token, ttl);
    Ok(invitation)
}

fn send_invitation(
    state: &AppState,
    org_name: &str,
    invitation: &InvitationRecord,
    token: &SecretString,
    ttl: std::time::Duration,
) {
    let link = format!(
        "{}/invitations/accept?token={}",
        state.config.public_url,
        token.expose_secret()
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
            token = token.expose_secret(),
            ttl = format_duration(ttl),
        ),
    });
}

/// One page of the org's open, unexpired invitations.
pub async fn list_open(
    state: &AppState,
    access: &OrgAccess<MembersRead>,
    page: &Paging,
    now: i64,
) -> ApiResult<Vec<InvitationRecord>> {
    Ok(state
        .store
        .open_invitations(&access.org.id, now, page.cursor.as_deref(), page.fetch())
        .await?)
}

/// Mails an open invitation again with a new token (the old link stops working) and a new
/// expiry. Unknown or closed: 404.
pub async fn resend(
    state: &AppState,
    access: &OrgAccess<MembersWrite>,
    client: &ClientInfo,
    invitation_id: &InvitationId,
    now: i64,
) -> ApiResult<InvitationRecord> {
    let token = random_token();
    let ttl = state.config.auth.invitation_ttl;
    let audit = access
        .audit("invitation.resent", client)
        .at(now)
        .target("invitation", invitation_id)
        .build();
    let invitation = state
        .store
        .reissue_invitation(
            &access.org.id,
            invitation_id,
            &sha256_hex(token.expose_secret()),
            crate::clock::after(now, ttl),
            &audit,
        )
        .await?
        .ok_or(ApiError::NotFound)?;
    send_invitation(state, &access.org.name, &invitation, &token, ttl);
    Ok(invitation)
}

/// Cancels an open invitation; its token stops working. Unknown or closed: 404.
pub async fn cancel(
    state: &AppState,
    access: &OrgAccess<MembersWrite>,
    client: &ClientInfo,
    invitation_id: &InvitationId,
    now: i64,
) -> ApiResult<()> {
    let audit = access
        .audit("invitation.canceled", client)
        .at(now)
        .target("invitation", invitation_id.as_str())
        .build();
    if state
        .store
        .cancel_invitation(&access.org.id, invitation_id, now, &audit)
        .await?
    {
        Ok(())
    } else {
        Err(ApiError::NotFound)
    }
}

/// The open, unexpired invitation a token belongs to (else 404).
async fn open_invitation(
    state: &AppState,
    token: &SecretString,
    now: i64,
) -> ApiResult<InvitationRecord> {
    state
        .store
        .invitation_by_token(&sha256_hex(token.expose_secret()))
        .await?
        .filter(|i| i.accepted_at.is_none() && i.canceled_at.is_none() && i.expires_at > now)
        .ok_or(ApiError::NotFound)
}

/// What an invitation offers, for whoever holds its token: the org, the role and the invited
/// address (the page that accepts it shows them before anyone logs in).
pub async fn preview(
    state: &AppState,
    token: &SecretString,
    now: i64,
) -> ApiResult<(InvitationRecord, OrgRecord)> {
    let invitation = open_invitation(state, token, now).await?;
    let org = state
        .store
        .org(&invitation.org_id)
        .await?
        .ok_or(ApiError::NotFound)?;
    Ok((invitation, org))
}

/// Joins the org of an invitation, as the invited address only; the token works once, until it
/// expires or is cancelled (else 404). Returns the org and the role.
pub async fn accept(
    state: &AppState,
    user: &AuthUser,
    client: &ClientInfo,
    token: &SecretString,
    now: i64,
) -> ApiResult<(OrgRecord, String)> {
    let invitation = open_invitation(state, token, now).await?;
    let account = crate::services::accounts::account_of(state, user).await?;
    if account.email != invitation.email {
        return Err(ApiError::Refused(
            "this invitation was sent to another email address; log in with that address to accept it".into(),
        ));
    }
    let audit = AuditEvent::new("member.joined", Some(user.user_id()), client)
        .at(now)
        .org(Some(&invitation.org_id))
        .target("invitation", &invitation.id)
        .data(json!({ "role": invitation.role }))
        .build();
    match state
        .store
        .accept_invitation(&invitation.id, user.user_id(), now, &audit)
        .await?
    {
        Acceptance::Joined => {
            let change = Change::User(user.user_id().clone());
            state.invalidation.publish(change).await;
        }
        Acceptance::Gone => return Err(ApiError::NotFound),
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
    Ok((org, invitation.role))
}
