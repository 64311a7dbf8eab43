//! `/auth/*`: signup, email verification, login, refresh, logout, password reset, the current
//! user, sessions and switching the active org.

use crate::audit::AuditEvent;
use crate::auth::{
    check_same_origin, clear_cookies, cookie_value, rfc3339, sign_access_token,
    token_pair_response, unix_now, AuthUser, TokenPair, REFRESH_COOKIE,
};
use crate::error::{ApiError, ApiResult};
use crate::extract::{parse_json, ApiJson, ClientInfo};
use crate::limits::IpLimit;
use crate::mail::Mail;
use crate::state::AppState;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use fluxgate_core::email::Email;
use fluxgate_core::ids::{OrgId, SessionId, UserId};
use fluxgate_core::password::Password;
use fluxgate_core::ratelimit::Quota;
use fluxgate_core::secret::{random_token, sha256_hex, Secret};
use fluxgate_core::units::Rate;
use fluxgate_core::validation::FieldErrors;
use fluxgate_store::{
    OneTimeTokenRecord, OrgRecord, RefreshTokenRecord, SessionRecord, UserRecord,
    PURPOSE_RESET_PASSWORD, PURPOSE_VERIFY_EMAIL,
};
use serde::Deserialize;
use serde_json::{json, Value};
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
        .routes(routes!(me))
        .routes(routes!(list_sessions))
        .routes(routes!(revoke_session))
        .routes(routes!(switch_org))
}

/// `POST /auth/signup`
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignupBody {
    email: String,
    #[schema(value_type = String, format = Password)]
    password: Secret<String>,
    name: Option<String>,
    organization_name: Option<String>,
}

fn optional_text(
    errors: &mut FieldErrors,
    field: &str,
    value: Option<&str>,
    max: usize,
) -> Option<String> {
    let value = value.map(str::trim).filter(|v| !v.is_empty())?;
    if value.chars().count() > max {
        errors.add(field, format!("must be at most {max} characters"));
        return None;
    }
    Some(value.to_owned())
}

/// Creates an account (and an org owned by it when `organization_name` is given) and mails a
/// verification link.
#[utoipa::path(post, path = "/auth/signup", tag = "auth", request_body = SignupBody,
    responses((status = 201, description = "user created"), (status = 409, description = "email already registered"),
              (status = 422, description = "invalid fields")))]
async fn signup(
    State(state): State<AppState>,
    _limit: IpLimit,
    client: ClientInfo,
    ApiJson(body): ApiJson<SignupBody>,
) -> ApiResult<Response> {
    let mut errors = FieldErrors::new();
    let email = errors.check("email", Email::parse(&body.email));
    let password = errors.check("password", Password::parse(body.password.expose()));
    let name = optional_text(&mut errors, "name", body.name.as_deref(), 200);
    let org_name = optional_text(
        &mut errors,
        "organization_name",
        body.organization_name.as_deref(),
        200,
    );
    errors.into_result()?;
    let (Some(email), Some(password)) = (email, password) else {
        return Err(ApiError::field("body", "invalid"));
    };
    let password_hash = state.passwords.hash(&password).await?;
    let now = unix_now();
    let user = UserRecord {
        id: UserId::generate().to_string(),
        email: email.as_str().to_owned(),
        name,
        password_hash,
        email_verified_at: None,
        created_at: now,
        updated_at: now,
    };
    let org = org_name.map(|name| OrgRecord {
        id: OrgId::generate().to_string(),
        name,
        external_id: None,
        plan: state.config.default_plan().to_owned(),
        is_operator: false,
        created_at: now,
        updated_at: now,
        deleted_at: None,
    });
    let mut audit = vec![AuditEvent::new("user.signup", Some(&user.id), &client)
        .target("user", &user.id)
        .build()];
    if let Some(org) = &org {
        audit.push(
            AuditEvent::new("org.created", Some(&user.id), &client)
                .org(Some(&org.id))
                .target("org", &org.id)
                .data(json!({ "name": org.name }))
                .build(),
        );
    }
    match state.store.create_user(&user, org.as_ref(), &audit).await {
        Ok(()) => {}
        Err(fluxgate_store::StoreError::Conflict(_)) => {
            return Err(ApiError::Conflict(
                "an account with this email already exists".into(),
            ))
        }
        Err(e) => return Err(e.into()),
    }
    send_verification(&state, &user).await?;
    let body = json!({ "data": {
        "user": user_json(&user),
        "organization": org.as_ref().map(|o| json!({ "id": o.id, "name": o.name, "plan": o.plan, "role": "owner" })),
    }});
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

async fn send_verification(state: &AppState, user: &UserRecord) -> ApiResult<()> {
    let token = random_token();
    let now = unix_now();
    state
        .store
        .insert_one_time_token(&OneTimeTokenRecord {
            token_hash: sha256_hex(token.expose()),
            purpose: PURPOSE_VERIFY_EMAIL.into(),
            user_id: user.id.clone(),
            created_at: now,
            expires_at: now + state.config.auth.verification_ttl.as_secs() as i64,
            used_at: None,
        })
        .await?;
    let link = format!(
        "{}/verify-email?token={}",
        state.config.public_url,
        token.expose()
    );
    state.mailer.send(Mail {
        to: user.email.clone(),
        subject: "Verify your email address".into(),
        body: format!(
            "Welcome to Fluxgate.\r\n\r\nConfirm your email address by opening this link:\r\n{link}\r\n\r\n\
             Or send the token to POST /api/v1/auth/verify-email:\r\ntoken={}\r\n\r\nThe link expires in {}.\r\n",
            token.expose(),
            fluxgate_core::units::format_duration(state.config.auth.verification_ttl)
        ),
    });
    Ok(())
}

fn user_json(user: &UserRecord) -> Value {
    json!({
        "id": user.id,
        "email": user.email,
        "name": user.name,
        "email_verified": user.email_verified_at.is_some(),
        "created_at": rfc3339(user.created_at),
    })
}

/// A single-use token from a mailed link.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenBody {
    #[schema(value_type = String)]
    token: Secret<String>,
}

/// Marks the email of the token's user verified (token single-use, 24 h).
#[utoipa::path(post, path = "/auth/verify-email", tag = "auth", request_body = TokenBody,
    responses((status = 200, description = "verified"), (status = 422, description = "unknown, used or expired token")))]
async fn verify_email(
    State(state): State<AppState>,
    _limit: IpLimit,
    client: ClientInfo,
    ApiJson(body): ApiJson<TokenBody>,
) -> ApiResult<Json<Value>> {
    let hash = sha256_hex(body.token.expose());
    match state
        .store
        .verify_email(&hash, unix_now(), client.audit_meta())
        .await?
    {
        Some(_) => Ok(Json(json!({ "data": { "email_verified": true } }))),
        None => Err(ApiError::field(
            "token",
            "is invalid, already used or expired",
        )),
    }
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
    responses((status = 202, description = "accepted")))]
async fn resend_verification(
    State(state): State<AppState>,
    _limit: IpLimit,
    ApiJson(body): ApiJson<EmailBody>,
) -> ApiResult<Response> {
    let email = Email::parse(&body.email).map_err(|e| ApiError::field("email", e.to_string()))?;
    let background = state.clone();
    tokio::spawn(async move {
        match background.store.user_by_email(email.as_str()).await {
            Ok(Some(user)) if user.email_verified_at.is_none() => {
                if let Err(e) = send_verification(&background, &user).await {
                    tracing::warn!(error = %e, "resending verification failed");
                }
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "resending verification failed"),
        }
    });
    Ok(accepted())
}

fn accepted() -> Response {
    (
        StatusCode::ACCEPTED,
        Json(json!({ "data": { "accepted": true } })),
    )
        .into_response()
}

/// Email and password.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginBody {
    email: String,
    #[schema(value_type = String, format = Password)]
    password: Secret<String>,
}

/// Logs in: a token pair in the body and in HttpOnly cookies.
#[utoipa::path(post, path = "/auth/login", tag = "auth", request_body = LoginBody,
    responses((status = 200, description = "access and refresh tokens"), (status = 401, description = "INVALID_CREDENTIALS"),
              (status = 403, description = "EMAIL_NOT_VERIFIED"), (status = 429, description = "account locked")))]
async fn login(
    State(state): State<AppState>,
    _limit: IpLimit,
    client: ClientInfo,
    ApiJson(body): ApiJson<LoginBody>,
) -> ApiResult<Response> {
    let email = Email::parse(&body.email).map_err(|_| ApiError::InvalidCredentials)?;
    let now = unix_now();
    let lockout = lockout_key(&email);
    let quota = lockout_quota(&state);
    let standing = state.limiter.peek(&lockout, quota, 1).await?;
    if !standing.allowed {
        return Err(ApiError::RateLimited {
            retry_after: standing.retry_after_secs(),
        });
    }
    let user = state.store.user_by_email(email.as_str()).await?;
    let ok = state
        .passwords
        .verify(
            body.password,
            user.as_ref().map(|u| u.password_hash.clone()),
        )
        .await?;
    let user = match (ok, user) {
        (true, Some(user)) => user,
        (_, user) => {
            return Err(login_failed(
                &state,
                &client,
                &email,
                user.as_ref().map(|u| u.id.as_str()),
            )
            .await)
        }
    };
    if user.email_verified_at.is_none() && state.config.auth.require_email_verification {
        return Err(ApiError::EmailNotVerified);
    }
    state.limiter.reset(&lockout).await;
    let memberships = state.store.memberships_of_user(&user.id).await?;
    let active_org = memberships.first().map(|m| m.org_id.clone());
    let session_id = SessionId::generate().to_string();
    let refresh_token = random_token();
    let refresh_ttl = state.config.auth.refresh_token_ttl.as_secs() as i64;
    let session = SessionRecord {
        id: session_id.clone(),
        user_id: user.id.clone(),
        active_org_id: active_org.clone(),
        user_agent: client.user_agent.clone(),
        ip: client.ip.clone(),
        created_at: now,
        last_used_at: now,
        expires_at: now + refresh_ttl,
        revoked_at: None,
        revoked_reason: None,
    };
    let refresh = RefreshTokenRecord {
        token_hash: sha256_hex(refresh_token.expose()),
        session_id: session_id.clone(),
        generation: 0,
        issued_at: now,
        expires_at: now + refresh_ttl,
        spent_at: None,
        spent_reason: None,
    };
    let audit = AuditEvent::new("user.login", Some(&user.id), &client)
        .target("session", &session_id)
        .build();
    state
        .store
        .create_session(&session, &refresh, &audit)
        .await?;
    let access_token =
        sign_access_token(&state, &user.id, &session_id, active_org.as_deref(), now, 0).await?;
    Ok(token_pair_response(
        &state,
        TokenPair {
            access_token,
            refresh_token,
        },
    ))
}

/// The lockout's rate-limit key: per address, whether or not it has an account.
fn lockout_key(email: &Email) -> String {
    format!("lockout:{}", email.as_str())
}

/// `lockout_threshold` failures per `lockout_window`; once spent, one attempt per
/// `lockout_window / lockout_threshold`.
fn lockout_quota(state: &AppState) -> Quota {
    Quota::from_rate(Rate {
        limit: u64::from(state.config.auth.lockout_threshold),
        window: state.config.auth.lockout_window,
    })
}

/// Counts a failed login against the address (whether or not it has an account, so the answers
/// cannot tell the two apart) and audits it; the failure that spends the allowance locks the
/// address (audited too) and answers 429.
async fn login_failed(
    state: &AppState,
    client: &ClientInfo,
    email: &Email,
    user_id: Option<&str>,
) -> ApiError {
    let event = |action: &str| {
        let e = AuditEvent::new(action, None, client).data(json!({ "email": email.as_str() }));
        match user_id {
            Some(id) => e.target("user", id),
            None => e,
        }
        .build()
    };
    let key = lockout_key(email);
    let quota = lockout_quota(state);
    let counted = match state.limiter.check(&key, quota, 1).await {
        Ok(decision) => decision,
        Err(e) => return e,
    };
    let mut entries = vec![event("user.login_failed")];
    let locked = counted.remaining == 0;
    if locked {
        entries.push(event("user.locked_out"));
    }
    if let Err(e) = state.store.append_audit(&entries).await {
        return e.into();
    }
    if !locked {
        return ApiError::InvalidCredentials;
    }
    match state.limiter.peek(&key, quota, 1).await {
        Ok(next) => ApiError::RateLimited {
            retry_after: next.retry_after_secs(),
        },
        Err(e) => e,
    }
}

/// A refresh token in the body (or none, to use the cookie).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefreshBody {
    #[schema(value_type = String)]
    refresh_token: Secret<String>,
}

/// Exchanges a refresh token for a new pair; the old token is spent. A spent token presented
/// again revokes the whole session, except within the reuse interval, where it gets the same
/// new pair (two tabs refreshing at once).
#[utoipa::path(post, path = "/auth/refresh", tag = "auth", request_body(content = Option<RefreshBody>, description = "or the refresh_token cookie"),
    responses((status = 200, description = "new access and refresh tokens"), (status = 401, description = "invalid, expired or reused token")))]
async fn refresh(
    State(state): State<AppState>,
    _limit: IpLimit,
    client: ClientInfo,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    let token = if body.iter().any(|b| !b.is_ascii_whitespace()) {
        let is_json = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/json"));
        if !is_json {
            return Err(ApiError::BadRequest(
                "expected a JSON body with Content-Type: application/json".into(),
            ));
        }
        parse_json::<RefreshBody>(&body)?.refresh_token
    } else {
        let token = cookie_value(&headers, REFRESH_COOKIE).ok_or(ApiError::Unauthorized)?;
        check_same_origin(&method, &headers, &state.config.public_url)?;
        Secret::new(token)
    };
    let token_hash = sha256_hex(token.expose());
    let now = unix_now();
    let record = state
        .store
        .refresh_token(&token_hash)
        .await?
        .ok_or(ApiError::Unauthorized)?;
    let session = state
        .store
        .session(&record.session_id)
        .await?
        .ok_or(ApiError::Unauthorized)?;
    if session.revoked_at.is_some() {
        return Err(ApiError::Unauthorized);
    }
    let successor = state.refresh.successor(token.expose());
    let successor_hash = sha256_hex(successor.expose());
    let mut record = record;
    if record.spent_at.is_none() {
        if record.expires_at <= now {
            return Err(ApiError::Unauthorized);
        }
        let next = RefreshTokenRecord {
            token_hash: successor_hash.clone(),
            session_id: session.id.clone(),
            generation: record.generation + 1,
            issued_at: now,
            expires_at: now + state.config.auth.refresh_token_ttl.as_secs() as i64,
            spent_at: None,
            spent_reason: None,
        };
        if state
            .store
            .rotate_refresh_token(&token_hash, &next, now)
            .await?
        {
            let access_token = sign_access_token(
                &state,
                &session.user_id,
                &session.id,
                session.active_org_id.as_deref(),
                now,
                next.generation,
            )
            .await?;
            return Ok(token_pair_response(
                &state,
                TokenPair {
                    access_token,
                    refresh_token: successor,
                },
            ));
        }
        // Another request spent it a moment ago: treat this one as the duplicate it is.
        record = state
            .store
            .refresh_token(&token_hash)
            .await?
            .ok_or(ApiError::Unauthorized)?;
    }
    let spent_at = record.spent_at.unwrap_or(now);
    if record.spent_reason.as_deref() == Some("rotated")
        && now - spent_at <= state.config.auth.refresh_reuse_interval.as_secs() as i64
    {
        // Within the interval a duplicate gets the pair its token was exchanged for, even if that
        // pair has rotated since: successors are derived, so the chain stays consistent.
        if let Some(child) = state.store.refresh_token(&successor_hash).await? {
            let access_token = sign_access_token(
                &state,
                &session.user_id,
                &session.id,
                session.active_org_id.as_deref(),
                child.issued_at,
                child.generation,
            )
            .await?;
            return Ok(token_pair_response(
                &state,
                TokenPair {
                    access_token,
                    refresh_token: successor,
                },
            ));
        }
    }
    if record.spent_reason.as_deref() == Some("rotated") {
        // A spent token came back: someone holds a copy. End the whole session.
        let audit = AuditEvent::new("session.refresh_reuse_detected", None, &client)
            .target("session", &session.id)
            .data(json!({ "user_id": session.user_id, "generation": record.generation }))
            .build();
        if state
            .store
            .revoke_session(&session.user_id, &session.id, "refresh_reuse", now, &audit)
            .await?
        {
            state.revocations.mark(&session.id, now);
        }
    }
    Err(ApiError::Unauthorized)
}

/// Ends the current session and clears both cookies.
#[utoipa::path(post, path = "/auth/logout", tag = "auth", responses((status = 204, description = "logged out")))]
async fn logout(
    State(state): State<AppState>,
    user: AuthUser,
    client: ClientInfo,
) -> ApiResult<Response> {
    let now = unix_now();
    let audit = AuditEvent::new("user.logout", Some(user.user_id()), &client)
        .target("session", user.session_id())
        .build();
    state
        .store
        .revoke_session(user.user_id(), user.session_id(), "logout", now, &audit)
        .await?;
    state.revocations.mark(user.session_id(), now);
    let mut response = StatusCode::NO_CONTENT.into_response();
    clear_cookies(&state, &mut response);
    Ok(response)
}

/// Mails a single-use reset link (1 h) if the account exists. Always 202.
#[utoipa::path(post, path = "/auth/password/forgot", tag = "auth", request_body = EmailBody,
    responses((status = 202, description = "accepted")))]
async fn forgot_password(
    State(state): State<AppState>,
    _limit: IpLimit,
    ApiJson(body): ApiJson<EmailBody>,
) -> ApiResult<Response> {
    let email = Email::parse(&body.email).map_err(|e| ApiError::field("email", e.to_string()))?;
    let background = state.clone();
    tokio::spawn(async move {
        if let Err(e) = send_reset(&background, &email).await {
            tracing::warn!(error = %e, "sending password reset failed");
        }
    });
    Ok(accepted())
}

async fn send_reset(state: &AppState, email: &Email) -> ApiResult<()> {
    let Some(user) = state.store.user_by_email(email.as_str()).await? else {
        return Ok(());
    };
    let token = random_token();
    let now = unix_now();
    state
        .store
        .insert_one_time_token(&OneTimeTokenRecord {
            token_hash: sha256_hex(token.expose()),
            purpose: PURPOSE_RESET_PASSWORD.into(),
            user_id: user.id.clone(),
            created_at: now,
            expires_at: now + state.config.auth.reset_ttl.as_secs() as i64,
            used_at: None,
        })
        .await?;
    let link = format!(
        "{}/reset-password?token={}",
        state.config.public_url,
        token.expose()
    );
    state.mailer.send(Mail {
        to: user.email.clone(),
        subject: "Reset your password".into(),
        body: format!(
            "Someone asked to reset the password of this account.\r\n\r\nChoose a new password here:\r\n{link}\r\n\r\n\
             Or send the token with a new password to POST /api/v1/auth/password/reset:\r\ntoken={}\r\n\r\n\
             The link expires in {}. If it was not you, ignore this message.\r\n",
            token.expose(),
            fluxgate_core::units::format_duration(state.config.auth.reset_ttl)
        ),
    });
    Ok(())
}

/// A reset token and the new password.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResetBody {
    #[schema(value_type = String)]
    token: Secret<String>,
    #[schema(value_type = String, format = Password)]
    password: Secret<String>,
}

/// Sets a new password and revokes every session of the user.
#[utoipa::path(post, path = "/auth/password/reset", tag = "auth", request_body = ResetBody,
    responses((status = 200, description = "password changed"), (status = 422, description = "bad token or password")))]
async fn reset_password(
    State(state): State<AppState>,
    _limit: IpLimit,
    client: ClientInfo,
    ApiJson(body): ApiJson<ResetBody>,
) -> ApiResult<Json<Value>> {
    let password = Password::parse(body.password.expose())
        .map_err(|e| ApiError::field("password", e.to_string()))?;
    let hash = state.passwords.hash(&password).await?;
    let token_hash = sha256_hex(body.token.expose());
    match state
        .store
        .reset_password(&token_hash, &hash, unix_now(), client.audit_meta())
        .await?
    {
        Some(user_id) => {
            state.revocations.poke();
            // whoever proves control of the mailbox is not locked out by earlier guesses
            if let Some(user) = state.store.user_by_id(&user_id).await? {
                state
                    .limiter
                    .reset(&lockout_key(&Email::from_trusted(user.email)))
                    .await;
            }
            Ok(Json(json!({ "data": { "password_reset": true } })))
        }
        None => Err(ApiError::field(
            "token",
            "is invalid, already used or expired",
        )),
    }
}

/// The current user, their memberships, and their effective permissions in the active org.
#[utoipa::path(get, path = "/auth/me", tag = "auth", security(("bearer" = [])), responses((status = 200, description = "the current user")))]
async fn me(State(state): State<AppState>, user: AuthUser) -> ApiResult<Json<Value>> {
    let record = state
        .store
        .user_by_id(user.user_id())
        .await?
        .ok_or(ApiError::Unauthorized)?;
    let memberships = state.store.memberships_of_user(user.user_id()).await?;
    let session = state
        .store
        .session(user.session_id())
        .await?
        .ok_or(ApiError::Unauthorized)?;
    let active = session
        .active_org_id
        .as_deref()
        .and_then(|id| memberships.iter().find(|m| m.org_id == id));
    let permissions = match active {
        Some(m) => crate::access::grants_of(&state, m)
            .await?
            .effective(&state.config.catalog),
        None => Vec::new(),
    };
    Ok(Json(json!({ "data": {
        "user": user_json(&record),
        "memberships": memberships.iter().map(|m| json!({
            "org": { "id": m.org_id, "name": m.org_name, "operator": m.is_operator },
            "role": m.role,
            "joined_at": rfc3339(m.created_at),
        })).collect::<Vec<_>>(),
        "active_org": active.map(|m| json!({ "id": m.org_id, "name": m.org_name, "role": m.role })),
        "permissions": permissions,
        "session_id": user.session_id(),
    }})))
}

/// The user's live sessions.
#[utoipa::path(get, path = "/auth/sessions", tag = "auth", security(("bearer" = [])), responses((status = 200, description = "sessions, newest first")))]
async fn list_sessions(State(state): State<AppState>, user: AuthUser) -> ApiResult<Json<Value>> {
    let sessions = state
        .store
        .active_sessions(user.user_id(), unix_now())
        .await?;
    let data: Vec<Value> = sessions
        .iter()
        .filter(|s| !state.revocations.is_revoked(&s.id))
        .map(|s| {
            json!({
                "id": s.id,
                "device": s.user_agent,
                "ip": s.ip,
                "created_at": rfc3339(s.created_at),
                "last_used_at": rfc3339(s.last_used_at),
                "expires_at": rfc3339(s.expires_at),
                "current": s.id == user.session_id(),
            })
        })
        .collect();
    Ok(Json(json!({ "data": data, "next_cursor": null })))
}

/// Revokes one of the user's sessions (another user's answers 404).
#[utoipa::path(delete, path = "/auth/sessions/{session_id}", tag = "auth", security(("bearer" = [])),
    params(("session_id" = String, Path, description = "ses_…")),
    responses((status = 204, description = "revoked"), (status = 404, description = "no such session of yours")))]
async fn revoke_session(
    State(state): State<AppState>,
    user: AuthUser,
    client: ClientInfo,
    Path(session_id): Path<String>,
) -> ApiResult<Response> {
    let session_id: SessionId = session_id.parse().map_err(|_| ApiError::NotFound)?;
    let now = unix_now();
    let audit = AuditEvent::new("session.revoked", Some(user.user_id()), &client)
        .target("session", session_id.as_str())
        .build();
    if !state
        .store
        .revoke_session(user.user_id(), session_id.as_str(), "revoked", now, &audit)
        .await?
    {
        return Err(ApiError::NotFound);
    }
    state.revocations.mark(session_id.as_str(), now);
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
    responses((status = 200, description = "new tokens acting in that org"), (status = 404, description = "not a member")))]
async fn switch_org(
    State(state): State<AppState>,
    user: AuthUser,
    ApiJson(body): ApiJson<SwitchOrgBody>,
) -> ApiResult<Response> {
    let org_id: OrgId = body.org_id.parse().map_err(|_| ApiError::NotFound)?;
    state
        .store
        .membership(org_id.as_str(), user.user_id())
        .await?
        .ok_or(ApiError::NotFound)?;
    let now = unix_now();
    let refresh_token = random_token();
    let current = state
        .store
        .session(user.session_id())
        .await?
        .ok_or(ApiError::Unauthorized)?;
    let generation = now; // strictly increasing per session and distinct from rotation counts
    let next = RefreshTokenRecord {
        token_hash: sha256_hex(refresh_token.expose()),
        session_id: current.id.clone(),
        generation,
        issued_at: now,
        expires_at: now + state.config.auth.refresh_token_ttl.as_secs() as i64,
        spent_at: None,
        spent_reason: None,
    };
    state
        .store
        .switch_session_org(&current.id, org_id.as_str(), &next, now)
        .await?;
    let access_token = sign_access_token(
        &state,
        user.user_id(),
        &current.id,
        Some(org_id.as_str()),
        now,
        generation,
    )
    .await?;
    Ok(token_pair_response(
        &state,
        TokenPair {
            access_token,
            refresh_token,
        },
    ))
}
