//! `/auth/*`: signup, email verification, login, refresh, logout, password reset, the current
//! user, sessions and switching the active org.

use crate::clock::{self, rfc3339};
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, ClientInfo, IdPath, MaybeJson};
use crate::request_limits::IpLimit;
use crate::services::accounts::{PasswordChange, ProfileChange, Signup, WhoAmI};
use crate::services::sessions::{LoginName, SignIn};
use crate::services::{accounts, sessions};
use crate::state::AppState;
use crate::user_auth::{
    check_same_origin, clear_cookies, cookie_value, token_pair_response, AuthUser, REFRESH_COOKIE,
};
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use fluxgate_core::secret::{ExposeSecret, SecretString};
use fluxgate_proto::{
    Accepted, Data, EmailVerified, EndedSessions, ErrorEnvelope, LoginAnswer, Me, Membership,
    MfaChallenge, OrgSummary, Page, PasswordReset, SecondFactors, Session, SignedUp, Tokens, User,
};
use fluxgate_store::{SessionId, SessionRecord, UserRecord};
use serde::Deserialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// The routes of this module.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(signup))
        .routes(routes!(verify_email))
        .routes(routes!(resend_verification))
        .routes(routes!(login))
        .routes(routes!(refresh))
        .routes(routes!(logout))
        .routes(routes!(forgot_password))
        .routes(routes!(reset_password))
        .routes(routes!(change_password))
        .routes(routes!(me, update_me))
        .routes(routes!(list_sessions, end_other_sessions))
        .routes(routes!(revoke_session))
        .routes(routes!(switch_org))
}

/// Creates an account (and an org owned by it when `organization_name` is given) and mails a
/// verification link.
#[utoipa::path(post, path = "/auth/signup", tag = "auth", request_body = Signup,
    responses((status = 201, description = "user created", body = Data<SignedUp>), (status = 409, description = "email already registered"),
              (status = 422, description = "invalid fields")))]
async fn signup(
    State(state): State<AppState>,
    _limit: IpLimit,
    client: ClientInfo,
    ApiJson(body): ApiJson<Signup>,
) -> ApiResult<Response> {
    let (user, org) = accounts::signup(&state, &client, body, clock::now()).await?;
    let data = SignedUp {
        user: user_json(&user),
        organization: org.map(|o| OrgSummary {
            id: o.id.into(),
            name: o.name,
            plan: Some(o.plan),
            role: Some("owner".to_owned()),
            operator: None,
        }),
    };
    Ok((StatusCode::CREATED, Json(Data { data })).into_response())
}

fn user_json(user: &UserRecord) -> User {
    User {
        id: user.id.to_string(),
        email: user.email.clone(),
        username: user.username.clone(),
        document: user.document.clone(),
        name: user.name.clone(),
        email_verified: user.email_verified_at.is_some(),
        created_at: rfc3339(user.created_at),
    }
}

/// A single-use token from a mailed link.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenBody {
    #[schema(value_type = String)]
    token: SecretString,
}

/// Marks the email of the token's user verified (token single-use, 24 h).
#[utoipa::path(post, path = "/auth/verify-email", tag = "auth", request_body = TokenBody,
    responses((status = 200, description = "verified", body = Data<EmailVerified>), (status = 422, description = "unknown, used or expired token")))]
async fn verify_email(
    State(state): State<AppState>,
    _limit: IpLimit,
    client: ClientInfo,
    ApiJson(body): ApiJson<TokenBody>,
) -> ApiResult<Json<Data<EmailVerified>>> {
    accounts::verify_email(&state, &client, &body.token, clock::now()).await?;
    Ok(Json(Data {
        data: EmailVerified {
            email_verified: true,
        },
    }))
}

/// An email address.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EmailBody {
    email: String,
}

/// Sends a new verification link if the account exists and is unverified. Always 202, with
/// the work done in the background so the answer's timing says nothing.
#[utoipa::path(post, path = "/auth/resend-verification", tag = "auth", request_body = EmailBody,
    responses((status = 202, description = "accepted", body = Data<Accepted>)))]
async fn resend_verification(
    State(state): State<AppState>,
    _limit: IpLimit,
    ApiJson(body): ApiJson<EmailBody>,
) -> ApiResult<Response> {
    accounts::resend_verification(&state, &body.email)?;
    Ok(accepted())
}

fn accepted() -> Response {
    (
        StatusCode::ACCEPTED,
        Json(Data {
            data: Accepted { accepted: true },
        }),
    )
        .into_response()
}

/// Email and password.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginBody {
    /// The account's email address — or, on instances that use them, exactly one of
    /// `username` and `document` in its place.
    email: Option<String>,
    /// The account's username (`auth.username`).
    username: Option<String>,
    /// The account's document number (`[auth.document]`), with or without separators.
    document: Option<String>,
    #[schema(value_type = String, format = Password)]
    password: SecretString,
}

impl LoginBody {
    /// The one identifier the body names.
    fn name(&self) -> ApiResult<LoginName> {
        match (&self.email, &self.username, &self.document) {
            (Some(email), None, None) => Ok(LoginName::Email(email.clone())),
            (None, Some(username), None) => Ok(LoginName::Username(username.clone())),
            (None, None, Some(document)) => Ok(LoginName::Document(document.clone())),
            _ => Err(ApiError::field(
                "email",
                "give exactly one of email, username and document",
            )),
        }
    }
}

/// Logs in: a token pair in the body and in HttpOnly cookies — or, when the account has a
/// second factor, a challenge (`mfa_required: true`, no cookies) to complete at
/// `POST /auth/mfa/verify` from the same client.
#[utoipa::path(post, path = "/auth/login", tag = "auth", request_body = LoginBody,
    responses((status = 200, description = "access and refresh tokens, or a second-factor challenge", body = Data<LoginAnswer>), (status = 401, description = "INVALID_CREDENTIALS"),
              (status = 403, description = "EMAIL_NOT_VERIFIED"), (status = 429, description = "account locked")))]
async fn login(
    State(state): State<AppState>,
    _limit: IpLimit,
    client: ClientInfo,
    ApiJson(body): ApiJson<LoginBody>,
) -> ApiResult<Response> {
    let name = body.name()?;
    match sessions::login(&state, &client, &name, body.password, clock::now()).await? {
        SignIn::Tokens(pair) => Ok(token_pair_response(&state, pair)),
        SignIn::Challenge(challenge) => Ok(Json(Data {
            data: MfaChallenge {
                mfa_required: true,
                mfa_token: challenge.token.expose_secret().to_owned(),
                methods: challenge.methods.iter().map(|m| (*m).to_owned()).collect(),
                expires_at: rfc3339(challenge.expires_at),
            },
        })
        .into_response()),
    }
}

/// A refresh token in the body (or none, to use the cookie).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefreshBody {
    #[schema(value_type = String)]
    refresh_token: SecretString,
}

/// Exchanges a refresh token for a new pair; the old token is spent. A spent token presented
/// again revokes the whole session, except within the reuse interval, where it gets the same
/// new pair (two tabs refreshing at once).
#[utoipa::path(post, path = "/auth/refresh", tag = "auth", request_body(content = Option<RefreshBody>, description = "or the refresh_token cookie"),
    responses((status = 200, description = "new access and refresh tokens", body = Data<Tokens>), (status = 401, description = "invalid, expired or reused token")))]
async fn refresh(
    State(state): State<AppState>,
    _limit: IpLimit,
    client: ClientInfo,
    method: Method,
    headers: HeaderMap,
    MaybeJson(body): MaybeJson<RefreshBody>,
) -> ApiResult<Response> {
    let token = if let Some(body) = body {
        body.refresh_token
    } else {
        let token = cookie_value(&headers, REFRESH_COOKIE).ok_or(ApiError::Unauthorized)?;
        check_same_origin(&method, &headers, &state.config.public_url)?;
        SecretString::from(token)
    };
    let pair = sessions::refresh(&state, &client, token, clock::now()).await?;
    Ok(token_pair_response(&state, pair))
}

/// Ends the current session and clears both cookies.
#[utoipa::path(post, path = "/auth/logout", tag = "auth", responses((status = 204, description = "logged out")))]
async fn logout(
    State(state): State<AppState>,
    user: AuthUser,
    client: ClientInfo,
) -> ApiResult<Response> {
    sessions::logout(&state, &user, &client, clock::now()).await?;
    let mut response = StatusCode::NO_CONTENT.into_response();
    clear_cookies(&state, &mut response);
    Ok(response)
}

/// Mails a single-use reset link (1 h) if the account exists. Always 202.
#[utoipa::path(post, path = "/auth/password/forgot", tag = "auth", request_body = EmailBody,
    responses((status = 202, description = "accepted", body = Data<Accepted>)))]
async fn forgot_password(
    State(state): State<AppState>,
    _limit: IpLimit,
    ApiJson(body): ApiJson<EmailBody>,
) -> ApiResult<Response> {
    accounts::forgot_password(&state, &body.email)?;
    Ok(accepted())
}

/// A reset token and the new password.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResetBody {
    #[schema(value_type = String)]
    token: SecretString,
    #[schema(value_type = String, format = Password)]
    password: SecretString,
}

/// Sets a new password and revokes every session of the user.
#[utoipa::path(post, path = "/auth/password/reset", tag = "auth", request_body = ResetBody,
    responses((status = 200, description = "password changed", body = Data<PasswordReset>), (status = 422, description = "bad token or password")))]
async fn reset_password(
    State(state): State<AppState>,
    _limit: IpLimit,
    client: ClientInfo,
    ApiJson(body): ApiJson<ResetBody>,
) -> ApiResult<Json<Data<PasswordReset>>> {
    accounts::reset_password(&state, &client, &body.token, &body.password, clock::now()).await?;
    Ok(Json(Data {
        data: PasswordReset {
            password_reset: true,
        },
    }))
}

/// The current user, their memberships, and their effective permissions in the active org.
#[utoipa::path(get, path = "/auth/me", tag = "auth", security(("bearer" = [])), responses((status = 200, description = "the current user", body = Data<Me>)))]
async fn me(State(state): State<AppState>, user: AuthUser) -> ApiResult<Json<Data<Me>>> {
    me_answer(&state, &user).await
}

/// Changes the current user's profile (their display name); answers as `GET /auth/me`.
#[utoipa::path(patch, path = "/auth/me", tag = "auth", security(("bearer" = [])), request_body = ProfileChange,
    responses((status = 200, description = "the current user, changed", body = Data<Me>),
              (status = 422, description = "the name is refused", body = ErrorEnvelope)))]
async fn update_me(
    State(state): State<AppState>,
    user: AuthUser,
    client: ClientInfo,
    ApiJson(body): ApiJson<ProfileChange>,
) -> ApiResult<Json<Data<Me>>> {
    accounts::rename(&state, &user, &client, body.name.as_deref(), clock::now()).await?;
    me_answer(&state, &user).await
}

/// What `GET /auth/me` answers.
async fn me_answer(state: &AppState, user: &AuthUser) -> ApiResult<Json<Data<Me>>> {
    let who = accounts::who_am_i(state, user).await?;
    let WhoAmI {
        user: record,
        memberships,
        active,
        permissions,
        session_amr,
        totp,
        passkeys,
        identities,
        recovery_codes_left,
    } = who.as_ref();
    let active = active.as_ref();
    Ok(Json(Data {
        data: Me {
            user: user_json(record),
            memberships: memberships
                .iter()
                .map(|m| Membership {
                    org: OrgSummary {
                        id: m.org_id.to_string(),
                        name: m.org_name.clone(),
                        plan: None,
                        role: None,
                        operator: Some(m.is_operator),
                    },
                    role: m.role.clone(),
                    joined_at: rfc3339(m.created_at),
                })
                .collect(),
            active_org: active.map(|m| OrgSummary {
                id: m.org_id.to_string(),
                name: m.org_name.clone(),
                plan: None,
                role: Some(m.role.clone()),
                operator: None,
            }),
            permissions: permissions.clone(),
            session_id: user.session_id().to_string(),
            session_amr: session_amr.clone(),
            second_factors: SecondFactors {
                totp: *totp,
                passkeys: passkeys.iter().map(super::passkeys::passkey_json).collect(),
                recovery_codes_left: u32::try_from(*recovery_codes_left).unwrap_or(0),
            },
            identities: identities
                .iter()
                .map(super::identities::identity_json)
                .collect(),
        },
    }))
}

/// The user's live sessions.
#[utoipa::path(get, path = "/auth/sessions", tag = "auth", security(("bearer" = [])), responses((status = 200, description = "sessions, newest first", body = Page<Session>)))]
async fn list_sessions(
    State(state): State<AppState>,
    user: AuthUser,
) -> ApiResult<Json<Page<Session>>> {
    let sessions = sessions::list(&state, &user, clock::now()).await?;
    let data = sessions.iter().map(|s| session_view(s, &user)).collect();
    Ok(Json(Page {
        data,
        next_cursor: None,
    }))
}

/// A session as the API (and the portal's account page) shows it.
pub fn session_view(session: &SessionRecord, user: &AuthUser) -> Session {
    Session {
        id: session.id.to_string(),
        device: session.user_agent.clone(),
        ip: session.ip.clone(),
        created_at: rfc3339(session.created_at),
        last_used_at: rfc3339(session.last_used_at),
        expires_at: rfc3339(session.expires_at),
        current: &session.id == user.session_id(),
    }
}

/// Ends every session of the user but the current one ("log out everywhere else").
#[utoipa::path(delete, path = "/auth/sessions", tag = "auth", security(("bearer" = [])),
    responses((status = 200, description = "how many sessions ended", body = Data<EndedSessions>)))]
async fn end_other_sessions(
    State(state): State<AppState>,
    user: AuthUser,
    client: ClientInfo,
) -> ApiResult<Json<Data<EndedSessions>>> {
    let ended = sessions::end_others(&state, &user, &client, clock::now()).await?;
    Ok(Json(Data {
        data: EndedSessions { ended },
    }))
}

/// Revokes one of the user's sessions (another user's answers 404).
#[utoipa::path(delete, path = "/auth/sessions/{session_id}", tag = "auth", security(("bearer" = [])),
    params(("session_id" = String, Path, description = "ses_…")),
    responses((status = 204, description = "revoked"), (status = 404, description = "no such session of yours")))]
async fn revoke_session(
    State(state): State<AppState>,
    user: AuthUser,
    client: ClientInfo,
    IdPath(session_id): IdPath<SessionId>,
) -> ApiResult<Response> {
    sessions::end(&state, &user, &client, &session_id, clock::now()).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// The org to switch to.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SwitchOrgBody {
    org_id: String,
}

/// Makes another of the user's orgs active and returns a new token pair for it.
#[utoipa::path(post, path = "/auth/switch-org", tag = "auth", security(("bearer" = [])), request_body = SwitchOrgBody,
    responses((status = 200, description = "new tokens acting in that org", body = Data<Tokens>), (status = 404, description = "not a member")))]
async fn switch_org(
    State(state): State<AppState>,
    user: AuthUser,
    ApiJson(body): ApiJson<SwitchOrgBody>,
) -> ApiResult<Response> {
    let pair = sessions::switch_org(&state, &user, &body.org_id, clock::now()).await?;
    Ok(token_pair_response(&state, pair))
}

/// Changes the password after checking the current one (a wrong one counts against the login
/// lockout); every other session of the user ends.
#[utoipa::path(post, path = "/auth/password/change", tag = "auth", security(("bearer" = [])),
    request_body = PasswordChange,
    responses((status = 200, description = "changed; how many other sessions ended", body = Data<EndedSessions>),
              (status = 401, description = "the current password is wrong", body = ErrorEnvelope),
              (status = 422, description = "the new password is refused", body = ErrorEnvelope)))]
async fn change_password(
    State(state): State<AppState>,
    user: AuthUser,
    client: ClientInfo,
    ApiJson(body): ApiJson<PasswordChange>,
) -> ApiResult<Json<Data<EndedSessions>>> {
    let ended = accounts::change_password(&state, &user, &client, body, clock::now()).await?;
    Ok(Json(Data {
        data: EndedSessions { ended },
    }))
}
