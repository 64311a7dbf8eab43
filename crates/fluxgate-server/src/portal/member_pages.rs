//! An org's people in the browser: members with their roles, invitations (send, resend,
//! cancel), changing a role, removing or leaving — and the page an invitation's link opens.

use crate::access::{AnyMember, MembersRead, MembersWrite, OrgAccess, RolesRead};
use crate::clock::rfc3339;
use crate::error::ApiError;
use crate::extract::{ApiQuery, ClientInfo, IdPath, Paging};
use crate::portal::account_pages::password_confirmation;
use crate::portal::{
    caller, render, render_status, see_other, Chrome, CsrfToken, FormErrors, MaybeSignedIn,
    OrgPage, Portal, PortalForm, PortalResult, SignedIn,
};
use crate::services::{invitations, orgs, roles};
use crate::state::AppState;
use crate::user_auth::AuthUser;
use askama::Template;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use fluxgate_core::permission::BuiltinRole;
use fluxgate_core::secret::SecretString;
use fluxgate_store::{InvitationId, OrgId, UserId};
use serde::Deserialize;

/// The routes of these pages.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/orgs/{org_id}/members", get(members))
        .route("/orgs/{org_id}/members/{user_id}/role", post(change_role))
        .route("/orgs/{org_id}/members/{user_id}/remove", post(remove))
        .route("/orgs/{org_id}/invitations", post(invite))
        .route(
            "/orgs/{org_id}/invitations/{invitation_id}/resend",
            post(resend),
        )
        .route(
            "/orgs/{org_id}/invitations/{invitation_id}/cancel",
            post(cancel),
        )
        .route("/invitations/accept", get(accept_page).post(accept))
}

/// A member as the page lists them.
struct MemberRow {
    user_id: String,
    email: String,
    name: String,
    role: String,
    joined: String,
    is_me: bool,
    second_factor: bool,
}

/// An open invitation as the page lists it.
struct InvitationRow {
    id: String,
    email: String,
    role: String,
    expires: String,
}

#[derive(Template)]
#[template(path = "members.html")]
struct MembersPage {
    chrome: Chrome,
    org_id: String,
    members: Vec<MemberRow>,
    invitations: Vec<InvitationRow>,
    roles: Vec<String>,
    can_write: bool,
    errors: FormErrors,
    invite_email: String,
    invite_role: String,
    notice: Option<String>,
}

/// The roles of the org: built-in ones, then custom ones when the caller may read them.
async fn role_names(
    state: &AppState,
    user: &AuthUser,
    org_id: &OrgId,
) -> PortalResult<Vec<String>> {
    let mut names: Vec<String> = BuiltinRole::ALL
        .iter()
        .map(|r| r.name().to_owned())
        .collect();
    match OrgAccess::<RolesRead>::check(state, caller(user), org_id).await {
        Ok(access) => names.extend(
            roles::list(state, &access)
                .await?
                .into_iter()
                .map(|r| r.name),
        ),
        Err(ApiError::Forbidden(_)) => {}
        Err(other) => return Err(other.into()),
    }
    Ok(names)
}

/// What the members page shows after an action: a notice, or a form's errors (with what was
/// typed into the invitation form) and the status that goes with them.
struct Outcome {
    errors: FormErrors,
    invite: (String, String),
    notice: Option<String>,
    status: StatusCode,
}

impl Outcome {
    fn plain() -> Self {
        Self {
            errors: FormErrors::none(),
            invite: (String::new(), "developer".to_owned()),
            notice: None,
            status: StatusCode::OK,
        }
    }

    fn notice(text: String) -> Self {
        Self {
            notice: Some(text),
            ..Self::plain()
        }
    }

    fn refused(errors: FormErrors, status: StatusCode) -> Self {
        Self {
            errors,
            status,
            ..Self::plain()
        }
    }
}

/// Renders the members page after `outcome`.
async fn members_page(
    state: &AppState,
    csrf: &CsrfToken,
    user: &AuthUser,
    org_id: &OrgId,
    outcome: Outcome,
) -> PortalResult<Response> {
    let Outcome {
        errors,
        invite,
        notice,
        status,
    } = outcome;
    let access = OrgAccess::<MembersRead>::check(state, caller(user), org_id).await?;
    let page = Paging::new(Some(200), None)?;
    let now = crate::clock::now();
    let members = orgs::members(state, &access, &page)
        .await?
        .into_iter()
        .map(|m| MemberRow {
            is_me: &m.user_id == user.user_id(),
            user_id: m.user_id.to_string(),
            email: m.email,
            name: m.name.unwrap_or_default(),
            role: m.role,
            joined: rfc3339(m.created_at),
            second_factor: m.second_factor,
        })
        .collect();
    let invitations = invitations::list_open(state, &access, &page, now)
        .await?
        .into_iter()
        .map(|i| InvitationRow {
            id: i.id.to_string(),
            email: i.email,
            role: i.role,
            expires: rfc3339(i.expires_at),
        })
        .collect();
    Ok(render_status(
        status,
        &MembersPage {
            roles: role_names(state, user, org_id).await?,
            can_write: access.allows(state, "members:write"),
            chrome: Chrome::new(state, csrf, Some(user), Some(&access.org), "members").await?,
            org_id: org_id.to_string(),
            members,
            invitations,
            errors,
            invite_email: invite.0,
            invite_role: invite.1,
            notice,
        },
    ))
}

async fn members(
    State(state): State<AppState>,
    SignedIn(user): SignedIn,
    csrf: CsrfToken,
    Portal(IdPath(org_id)): Portal<IdPath<OrgId>>,
) -> PortalResult<Response> {
    members_page(&state, &csrf, &user, &org_id, Outcome::plain()).await
}

/// Invites through the same service as `POST /orgs/{org_id}/invitations`.
async fn invite(
    State(state): State<AppState>,
    page: OrgPage<MembersWrite>,
    Portal(client): Portal<ClientInfo>,
    csrf: CsrfToken,
    form: PortalForm,
) -> PortalResult<Response> {
    let OrgPage { user, access } = page;
    let org_id = access.org.id.clone();
    let back = format!("/orgs/{org_id}/members");
    if let Some(confirm) = password_confirmation(&state, &csrf, &user, &back).await? {
        return Ok(confirm);
    }
    let email = form.get("email").unwrap_or_default().to_owned();
    let role = form.get("role").unwrap_or_default().to_owned();
    let input = invitations::NewInvitation {
        email: email.clone(),
        role: role.clone(),
    };
    match invitations::invite(&state, &access, &client, input, crate::clock::now()).await {
        Ok(invitation) => {
            let notice = format!(
                "{} is invited as {}; the link in the mail works until {}.",
                invitation.email,
                invitation.role,
                rfc3339(invitation.expires_at)
            );
            members_page(&state, &csrf, &user, &org_id, Outcome::notice(notice)).await
        }
        Err(refusal) => {
            let (status, _) = refusal.status_and_message();
            let errors = FormErrors::from_refusal(refusal, &["email", "role"])?;
            let outcome = Outcome {
                invite: (email, role),
                ..Outcome::refused(errors, status)
            };
            members_page(&state, &csrf, &user, &org_id, outcome).await
        }
    }
}

/// Changes a member's role through the same service as `PUT …/members/{user_id}`.
async fn change_role(
    State(state): State<AppState>,
    page: OrgPage<MembersWrite>,
    Portal(client): Portal<ClientInfo>,
    csrf: CsrfToken,
    Portal(IdPath((_, member))): Portal<IdPath<(OrgId, UserId)>>,
    form: PortalForm,
) -> PortalResult<Response> {
    let OrgPage { user, access } = page;
    let org_id = access.org.id.clone();
    let back = format!("/orgs/{org_id}/members");
    if let Some(confirm) = password_confirmation(&state, &csrf, &user, &back).await? {
        return Ok(confirm);
    }
    let role = form.get("role").unwrap_or_default();
    match orgs::change_member_role(&state, &access, &client, &member, role, crate::clock::now())
        .await
    {
        Ok(_) => Ok(see_other(&format!("/orgs/{org_id}/members"))),
        Err(refusal) => {
            let (status, _) = refusal.status_and_message();
            let errors = FormErrors::from_refusal(refusal, &["role"])?;
            let errors = match errors.get("role") {
                Some(message) => FormErrors::general(message.to_owned()),
                None => errors,
            };
            members_page(
                &state,
                &csrf,
                &user,
                &org_id,
                Outcome::refused(errors, status),
            )
            .await
        }
    }
}

/// Removes a member, or leaves (the same service as `DELETE …/members/{user_id}`).
async fn remove(
    State(state): State<AppState>,
    page: OrgPage<AnyMember>,
    Portal(client): Portal<ClientInfo>,
    csrf: CsrfToken,
    Portal(IdPath((_, member))): Portal<IdPath<(OrgId, UserId)>>,
    _form: PortalForm,
) -> PortalResult<Response> {
    let OrgPage { user, access } = page;
    let org_id = access.org.id.clone();
    let leaving = &member == user.user_id();
    if !leaving {
        let back = format!("/orgs/{org_id}/members");
        if let Some(confirm) = password_confirmation(&state, &csrf, &user, &back).await? {
            return Ok(confirm);
        }
    }
    match orgs::remove_member(&state, &access, &client, &member, crate::clock::now()).await {
        Ok(()) if leaving => Ok(see_other("/")),
        Ok(()) => Ok(see_other(&format!("/orgs/{org_id}/members"))),
        Err(refusal @ ApiError::Conflict(_)) => {
            let errors = FormErrors::from_refusal(refusal, &[])?;
            let outcome = Outcome::refused(errors, StatusCode::CONFLICT);
            members_page(&state, &csrf, &user, &org_id, outcome).await
        }
        Err(other) => Err(other.into()),
    }
}

/// Mails an invitation again (the same service as `POST …/invitations/{id}/resend`).
async fn resend(
    State(state): State<AppState>,
    page: OrgPage<MembersWrite>,
    Portal(client): Portal<ClientInfo>,
    csrf: CsrfToken,
    Portal(IdPath((_, invitation_id))): Portal<IdPath<(OrgId, InvitationId)>>,
    _form: PortalForm,
) -> PortalResult<Response> {
    let OrgPage { user, access } = page;
    let org_id = access.org.id.clone();
    let invitation = invitations::resend(
        &state,
        &access,
        &client,
        &invitation_id,
        crate::clock::now(),
    )
    .await?;
    let notice = format!(
        "A new link was mailed to {}; the previous one no longer works.",
        invitation.email
    );
    members_page(&state, &csrf, &user, &org_id, Outcome::notice(notice)).await
}

/// Cancels an invitation (the same service as `DELETE …/invitations/{id}`).
async fn cancel(
    State(state): State<AppState>,
    page: OrgPage<MembersWrite>,
    Portal(client): Portal<ClientInfo>,
    Portal(IdPath((_, invitation_id))): Portal<IdPath<(OrgId, InvitationId)>>,
    _form: PortalForm,
) -> PortalResult<Response> {
    let OrgPage { user: _, access } = page;
    let org_id = access.org.id.clone();
    invitations::cancel(
        &state,
        &access,
        &client,
        &invitation_id,
        crate::clock::now(),
    )
    .await?;
    Ok(see_other(&format!("/orgs/{org_id}/members")))
}

#[derive(Template)]
#[template(path = "accept.html")]
struct AcceptPage {
    chrome: Chrome,
    token: String,
    next: String,
    org_name: String,
    role: String,
    email: String,
    signed_in_as: Option<String>,
    errors: FormErrors,
}

#[derive(Deserialize)]
struct TokenQuery {
    token: Option<String>,
}

/// The invitation link: what it offers, then log in or sign up, then join.
async fn accept_page(
    State(state): State<AppState>,
    csrf: CsrfToken,
    MaybeSignedIn(user): MaybeSignedIn,
    Portal(ApiQuery(query)): Portal<ApiQuery<TokenQuery>>,
) -> PortalResult<Response> {
    let token = query.token.unwrap_or_default();
    let (invitation, org) = invitations::preview(
        &state,
        &SecretString::from(token.clone()),
        crate::clock::now(),
    )
    .await?;
    let chrome = Chrome::new(&state, &csrf, user.as_ref(), None, "").await?;
    let signed_in_as = chrome.user.as_ref().map(|u| u.email.clone());
    let next: String =
        form_urlencoded::byte_serialize(format!("/invitations/accept?token={token}").as_bytes())
            .collect();
    let mut response = render(&AcceptPage {
        chrome,
        token,
        next,
        org_name: org.name,
        role: invitation.role,
        email: invitation.email,
        signed_in_as,
        errors: FormErrors::none(),
    });
    crate::user_auth::no_store(&mut response);
    Ok(response)
}

/// Joins through the same service as `POST /invitations/{token}/accept`.
async fn accept(
    State(state): State<AppState>,
    SignedIn(user): SignedIn,
    Portal(client): Portal<ClientInfo>,
    csrf: CsrfToken,
    form: PortalForm,
) -> PortalResult<Response> {
    let token = SecretString::from(form.raw("token").to_owned());
    let now = crate::clock::now();
    match invitations::accept(&state, &user, &client, &token, now).await {
        Ok((org, _)) => Ok(see_other(&format!("/orgs/{}", org.id))),
        Err(refusal @ (ApiError::Refused(_) | ApiError::Conflict(_))) => {
            let (invitation, org) = invitations::preview(&state, &token, now).await?;
            let (status, _) = refusal.status_and_message();
            let chrome = Chrome::new(&state, &csrf, Some(&user), None, "").await?;
            let signed_in_as = chrome.user.as_ref().map(|u| u.email.clone());
            Ok(render_status(
                status,
                &AcceptPage {
                    chrome,
                    token: form.raw("token").to_owned(),
                    next: String::new(),
                    org_name: org.name,
                    role: invitation.role,
                    email: invitation.email,
                    signed_in_as,
                    errors: FormErrors::from_refusal(refusal, &[])?,
                },
            ))
        }
        Err(other) => Err(other.into()),
    }
}
