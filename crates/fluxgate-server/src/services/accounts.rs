//! Accounts: signing up (with an org of one's own), verifying the email address, resending the
//! link, and resetting a forgotten password. Mail goes out through the mailer's queue; answers
//! that could reveal whether an address has an account are the same either way.

use crate::audit::AuditEvent;
use crate::error::{ApiError, ApiResult};
use crate::extract::ClientInfo;
use crate::invalidation::Change;
use crate::mail::Mail;
use crate::services::sessions::Lockout;
use crate::state::AppState;
use fluxgate_core::email::Email;
use fluxgate_core::ids::{OrgId, UserId};
use fluxgate_core::password::Password;
use fluxgate_core::secret::{random_token, sha256_hex, ExposeSecret, SecretString};
use fluxgate_core::validation::{single_line, FieldErrors};
use fluxgate_store::{
    LoginKind, OneTimeTokenRecord, OrgRecord, UserRecord, PURPOSE_RESET_PASSWORD,
    PURPOSE_VERIFY_EMAIL,
};
use serde::Deserialize;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use utoipa::ToSchema;

/// A new account (`POST /auth/signup`).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Signup {
    /// The address to sign in with; a verification link is mailed to it.
    pub email: String,
    /// 8 to 128 characters, not a common password.
    #[schema(value_type = String, format = Password)]
    pub password: SecretString,
    /// A display name.
    pub name: Option<String>,
    /// Creates an org owned by the new user.
    pub organization_name: Option<String>,
    /// A username to log in with, when the instance uses them (`auth.username`).
    #[serde(default)]
    pub username: Option<String>,
    /// A document number to log in with, when the instance uses them (`[auth.document]`).
    #[serde(default)]
    pub document: Option<String>,
}

/// The signup's username and document, normalised and checked against the instance's rules
/// (each unique: 409 when another account has it).
async fn login_identifiers(
    state: &AppState,
    errors: &mut FieldErrors,
    username: Option<&str>,
    document: Option<&str>,
) -> ApiResult<(Option<String>, Option<String>)> {
    use crate::config::IdentifierUse;
    let given = |v: Option<&str>| {
        v.map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
    };
    let (username, document) = (given(username), given(document));
    let username = match (state.config.auth.username, username) {
        (IdentifierUse::Off, Some(_)) => {
            errors.add("username", "is not used on this instance");
            None
        }
        (IdentifierUse::Required, None) => {
            errors.add("username", "is required");
            None
        }
        (_, Some(name)) => errors.check(
            "username",
            fluxgate_core::identifier::normalise_username(&name).map_err(str::to_owned),
        ),
        (_, None) => None,
    };
    let document = match (&state.config.auth.document, document) {
        (None, Some(_)) => {
            errors.add("document", "is not used on this instance");
            None
        }
        (Some(rule), None) if rule.required => {
            errors.add("document", "is required");
            None
        }
        (Some(rule), Some(number)) => errors.check("document", rule.rule.normalise(&number)),
        (_, None) => None,
    };
    for (kind, value, what) in [
        (LoginKind::Username, &username, "username"),
        (LoginKind::Document, &document, "document"),
    ] {
        if let Some(value) = value {
            if state.store.user_by_login(kind, value).await?.is_some() {
                return Err(ApiError::Conflict(format!(
                    "an account with this {what} already exists"
                )));
            }
        }
    }
    Ok((username, document))
}

fn optional_text(
    errors: &mut FieldErrors,
    field: &str,
    value: Option<&str>,
    max: usize,
) -> Option<String> {
    let value = value.map(str::trim).filter(|v| !v.is_empty())?;
    errors.check(field, single_line(value, max))
}

/// A change of profile (`PATCH /auth/me`).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProfileChange {
    /// The display name; empty or `null` clears it.
    pub name: Option<String>,
}

/// Sets the caller's display name (one line, at most 200 characters); empty or absent clears it.
pub async fn rename(
    state: &AppState,
    user: &crate::user_auth::AuthUser,
    client: &ClientInfo,
    name: Option<&str>,
    now: i64,
) -> ApiResult<()> {
    let mut errors = FieldErrors::new();
    let name = optional_text(&mut errors, "name", name, 200);
    errors.into_result()?;
    let audit = AuditEvent::new("user.renamed", Some(user.user_id()), client)
        .at(now)
        .target("user", user.user_id())
        .build();
    state
        .store
        .rename_user(user.user_id(), name.as_deref(), now, &audit)
        .await?;
    let change = Change::User(user.user_id().clone());
    state.invalidation.publish(change).await;
    Ok(())
}

/// Creates an account (and an org owned by it when `organization_name` is given) and mails a
/// verification link. An address already registered: 409.
pub async fn signup(
    state: &AppState,
    client: &ClientInfo,
    input: Signup,
    now: i64,
) -> ApiResult<(UserRecord, Option<OrgRecord>)> {
    let mut errors = FieldErrors::new();
    let email = errors.check("email", Email::parse(&input.email));
    let password = errors.check("password", Password::parse(input.password.expose_secret()));
    let name = optional_text(&mut errors, "name", input.name.as_deref(), 200);
    let org_name = optional_text(
        &mut errors,
        "organization_name",
        input.organization_name.as_deref(),
        200,
    );
    let (username, document) = login_identifiers(
        state,
        &mut errors,
        input.username.as_deref(),
        input.document.as_deref(),
    )
    .await?;
    errors.into_result()?;
    let (Some(email), Some(password)) = (email, password) else {
        return Err(ApiError::field("body", "invalid"));
    };
    let password_hash = state.passwords.hash(&password).await?;
    let user = UserRecord {
        id: UserId::generate(),
        email: email.as_str().to_owned(),
        username,
        document,
        name,
        password_hash,
        email_verified_at: None,
        created_at: now,
        updated_at: now,
    };
    let org = org_name.map(|name| OrgRecord {
        id: OrgId::generate(),
        name,
        external_id: None,
        plan: state.config.default_plan().to_owned(),
        is_operator: false,
        created_at: now,
        updated_at: now,
        deleted_at: None,
        disabled_at: None,
        require_mfa: false,
        leaked_key_action: "revoke".into(),
    });
    let mut audit = vec![AuditEvent::new("user.signup", Some(&user.id), client)
        .at(now)
        .target("user", &user.id)
        .build()];
    if let Some(org) = &org {
        audit.push(
            AuditEvent::new("org.created", Some(&user.id), client)
                .at(now)
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
    send_verification(state, &user, now).await?;
    Ok((user, org))
}

/// A single-use token mailed as a link (`{public_url}/{page}?token=…`): stored by hash with
/// its purpose and expiry, then the mail `compose(link, token, lifetime)` writes goes out.
struct MailedToken<'a> {
    purpose: &'a str,
    ttl: Duration,
    page: &'a str,
    subject: &'a str,
}

async fn mail_token(
    state: &AppState,
    user: &UserRecord,
    what: MailedToken<'_>,
    compose: impl FnOnce(&str, &str, &str) -> String,
    now: i64,
) -> ApiResult<()> {
    let token = random_token();
    state
        .store
        .insert_one_time_token(&OneTimeTokenRecord {
            token_hash: sha256_hex(token.expose_secret()),
            purpose: what.purpose.into(),
            user_id: user.id.clone(),
            created_at: now,
            expires_at: crate::clock::after(now, what.ttl),
            used_at: None,
        })
        .await?;
    let link = format!(
        "{}/{}?token={}",
        state.config.public_url,
        what.page,
        token.expose_secret()
    );
    let lifetime = fluxgate_core::units::format_duration(what.ttl);
    state.mailer.send(Mail {
        to: user.email.clone(),
        subject: what.subject.into(),
        body: compose(&link, token.expose_secret(), &lifetime),
    });
    Ok(())
}

async fn send_verification(state: &AppState, user: &UserRecord, now: i64) -> ApiResult<()> {
    let what = MailedToken {
        purpose: PURPOSE_VERIFY_EMAIL,
        ttl: state.config.auth.verification_ttl,
        page: "verify-email",
        subject: "Verify your email address",
    };
    mail_token(state, user, what, |link, token, lifetime| {
        format!(
            "Welcome to Fluxgate.\r\n\r\nConfirm your email address by opening this link:\r\n{link}\r\n\r\n\
             Or send the token to POST /api/v1/auth/verify-email:\r\ntoken={token}\r\n\r\nThe link expires in {lifetime}.\r\n"
        )
    }, now)
    .await
}

/// Spends a mailed verification token and marks its user's email verified.
pub async fn verify_email(
    state: &AppState,
    client: &ClientInfo,
    token: &SecretString,
    now: i64,
) -> ApiResult<()> {
    let hash = sha256_hex(token.expose_secret());
    match state
        .store
        .verify_email(&hash, now, client.audit_meta())
        .await?
    {
        Some(user_id) => {
            state.invalidation.publish(Change::User(user_id)).await;
            Ok(())
        }
        None => Err(ApiError::field(
            "token",
            "is invalid, already used or expired",
        )),
    }
}

fn parse_email(text: &str) -> ApiResult<Email> {
    Email::parse(text).map_err(|e| ApiError::field("email", e.to_string()))
}

/// Sends a new verification link if the account exists and is unverified, in the background
/// so the caller's answer (and its timing) says nothing about the address.
pub fn resend_verification(state: &AppState, email: &str) -> ApiResult<()> {
    let email = parse_email(email)?;
    let background = state.clone();
    tokio::spawn(async move {
        match background
            .store
            .user_by_login(fluxgate_store::LoginKind::Email, email.as_str())
            .await
        {
            Ok(Some(user)) if user.email_verified_at.is_none() => {
                let now = crate::clock::now();
                if let Err(e) = send_verification(&background, &user, now).await {
                    tracing::warn!(error = %e, "resending verification failed");
                }
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "resending verification failed"),
        }
    });
    Ok(())
}

/// Mails a single-use reset link if the account exists, in the background (same answer and
/// timing either way).
pub fn forgot_password(state: &AppState, email: &str) -> ApiResult<()> {
    let email = parse_email(email)?;
    let background = state.clone();
    tokio::spawn(async move {
        if let Err(e) = send_reset(&background, &email, crate::clock::now()).await {
            tracing::warn!(error = %e, "sending password reset failed");
        }
    });
    Ok(())
}

async fn send_reset(state: &AppState, email: &Email, now: i64) -> ApiResult<()> {
    let Some(user) = state
        .store
        .user_by_login(fluxgate_store::LoginKind::Email, email.as_str())
        .await?
    else {
        return Ok(());
    };
    let what = MailedToken {
        purpose: PURPOSE_RESET_PASSWORD,
        ttl: state.config.auth.reset_ttl,
        page: "reset-password",
        subject: "Reset your password",
    };
    mail_token(state, &user, what, |link, token, lifetime| {
        format!(
            "Someone asked to reset the password of this account.\r\n\r\nChoose a new password here:\r\n{link}\r\n\r\n\
             Or send the token with a new password to POST /api/v1/auth/password/reset:\r\ntoken={token}\r\n\r\n\
             The link expires in {lifetime}. If it was not you, ignore this message.\r\n"
        )
    }, now)
    .await
}

/// Spends a reset token, sets the new password and ends every session of the user; whoever
/// proves control of the mailbox is no longer locked out by earlier guesses.
pub async fn reset_password(
    state: &AppState,
    client: &ClientInfo,
    token: &SecretString,
    password: &SecretString,
    now: i64,
) -> ApiResult<()> {
    let password = Password::parse(password.expose_secret())
        .map_err(|e| ApiError::field("password", e.to_string()))?;
    let hash = state.passwords.hash(&password).await?;
    let token_hash = sha256_hex(token.expose_secret());
    let Some(user_id) = state
        .store
        .reset_password(&token_hash, &hash, now, client.audit_meta())
        .await?
    else {
        return Err(ApiError::field(
            "token",
            "is invalid, already used or expired",
        ));
    };
    state.revocations.poke();
    if let Some(user) = state.store.user_by_id(&user_id).await? {
        Lockout::of_email(&user.email).reset(state).await;
    }
    Ok(())
}

/// The signed-in user's account (401 when it is gone).
pub async fn account_of(
    state: &AppState,
    user: &crate::user_auth::AuthUser,
) -> ApiResult<UserRecord> {
    state
        .store
        .user_by_id(user.user_id())
        .await?
        .ok_or(ApiError::Unauthorized)
}

/// The current user, their memberships, the membership of the session's active org and their
/// effective permissions there.
pub struct WhoAmI {
    /// The account.
    pub user: UserRecord,
    /// Every org they belong to.
    pub memberships: Vec<fluxgate_store::MembershipRecord>,
    /// The membership of the org the session acts in.
    pub active: Option<fluxgate_store::MembershipRecord>,
    /// Effective permissions in the active org.
    pub permissions: Vec<String>,
    /// How the session signed in (`amr`).
    pub session_amr: Vec<String>,
    /// Whether the account has a confirmed TOTP factor.
    pub totp: bool,
    /// Its passkeys, oldest first.
    pub passkeys: Vec<fluxgate_store::PasskeyRecord>,
    /// Its identities at OpenID providers, oldest first.
    pub identities: Vec<fluxgate_store::IdentityRecord>,
    /// Its unused recovery codes.
    pub recovery_codes_left: i64,
}

/// Who the caller is (`GET /auth/me`): from this node's session views when the session's
/// user, memberships and orgs have not changed since it was last read.
pub async fn who_am_i(
    state: &AppState,
    user: &crate::user_auth::AuthUser,
) -> ApiResult<Arc<WhoAmI>> {
    if let Some(view) = state.session_views.get(user.session_id()) {
        return Ok(view);
    }
    let read_at = state.session_views.generation();
    let record = account_of(state, user).await?;
    let memberships = state.store.memberships_of_user(user.user_id()).await?;
    let session = state
        .store
        .session(user.session_id())
        .await?
        .ok_or(ApiError::Unauthorized)?;
    let active = session
        .active_org_id
        .as_ref()
        .and_then(|id| memberships.iter().find(|m| &m.org_id == id))
        .cloned();
    let permissions = match &active {
        Some(m) => crate::access::grants_of(state, m)
            .await?
            .effective(&state.config.catalog),
        None => Vec::new(),
    };
    let totp = state
        .store
        .totp_factor(user.user_id())
        .await?
        .is_some_and(|f| f.confirmed_at.is_some());
    let passkeys = state.store.passkeys(user.user_id()).await?;
    let identities = state.store.identities(user.user_id()).await?;
    let recovery_codes_left = state.store.recovery_codes_left(user.user_id()).await?;
    let view = Arc::new(WhoAmI {
        user: record,
        memberships,
        active,
        permissions,
        session_amr: fluxgate_core::mfa::amr_list(&session.amr),
        totp,
        passkeys,
        identities,
        recovery_codes_left,
    });
    state
        .session_views
        .keep(user.session_id(), view.clone(), read_at);
    Ok(view)
}

/// A change of password (`POST /auth/password/change`).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PasswordChange {
    /// The password in use, checked as a login would check it (lockout included).
    #[schema(value_type = String, format = Password)]
    pub current_password: SecretString,
    /// 8 to 128 characters, not a common password.
    #[schema(value_type = String, format = Password)]
    pub new_password: SecretString,
}

/// Changes the signed-in user's password after checking the current one; every other session
/// of theirs ends (this one stays). How many sessions ended.
pub async fn change_password(
    state: &AppState,
    user: &crate::user_auth::AuthUser,
    client: &ClientInfo,
    change: PasswordChange,
    now: i64,
) -> ApiResult<u64> {
    let new = Password::parse(change.new_password.expose_secret())
        .map_err(|e| ApiError::field("new_password", e.to_string()))?;
    let account = account_of(state, user).await?;
    crate::services::sessions::check_password(
        state,
        client,
        &account,
        change.current_password,
        now,
    )
    .await?;
    let hash = state.passwords.hash(&new).await?;
    let audit = AuditEvent::new("user.password_changed", Some(user.user_id()), client)
        .at(now)
        .target("user", user.user_id())
        .build();
    let ended = state
        .store
        .change_password(user.user_id(), &hash, user.session_id(), now, &audit)
        .await?;
    state.revocations.poke();
    Ok(ended)
}
