//! Sessions: logging in (with the per-address lockout), refresh-token rotation with reuse
//! detection, switching the active org, logging out and ending sessions. Ending a session is
//! written with its audit entry, then marked in this node's revocation cache (other nodes poll
//! the database every second).

use crate::audit::AuditEvent;
use crate::clock;
use crate::config::IdentifierUse;
use crate::error::{ApiError, ApiResult};
use crate::extract::ClientInfo;
use crate::invalidation::Change;
use crate::state::AppState;
use crate::user_auth::{AuthUser, TokenPair};
use fluxgate_core::claims::AccessClaims;
use fluxgate_core::email::Email;
use fluxgate_core::identifier::normalise_username;
use fluxgate_core::ids::{OrgId, SessionId};
use fluxgate_core::mfa;
use fluxgate_core::ratelimit::Quota;
use fluxgate_core::refresh::{self, RefreshStep, SpentReason, TokenState};
use fluxgate_core::secret::{random_token, sha256_hex, ExposeSecret, SecretString};
use fluxgate_core::stored::EndReason;
use fluxgate_core::units::Rate;
use fluxgate_store::{LoginKind, RefreshTokenRecord, SessionRecord, UserRecord};
use serde_json::json;

/// Whose failed logins count together: an account's (keyed by its email address, whichever of
/// its identifiers was typed), or — for a name no account has — that name's, so the answers
/// cannot tell the two apart.
pub struct Lockout {
    key: String,
    /// What the audit entries record as typed.
    named: serde_json::Value,
}

impl Lockout {
    /// The account with this (normalised) email address, or an address no account has.
    pub fn of_email(email: &str) -> Self {
        Self {
            key: format!("lockout:{email}"),
            named: json!({ "email": email }),
        }
    }

    /// A username or document number no account has.
    fn of_unknown(kind: LoginKind, value: &str) -> Self {
        let field = match kind {
            LoginKind::Email => return Self::of_email(value),
            LoginKind::Username => "username",
            LoginKind::Document => "document",
        };
        Self {
            key: format!("lockout:{field}:{value}"),
            named: json!({ field: value }),
        }
    }

    /// Clears the count (a right password or second factor).
    pub async fn reset(&self, state: &AppState) {
        state.limiter.reset(&self.key).await;
    }
}

/// What a login names its account by.
#[derive(Debug, Clone)]
pub enum LoginName {
    /// The email address.
    Email(String),
    /// The username (when the instance uses them).
    Username(String),
    /// The document number (when the instance uses them).
    Document(String),
}

impl LoginName {
    /// What one field typed into the portal's login means: an address when it holds `@`, else
    /// a document number when the instance uses them and it is one, else a username.
    pub fn typed(config: &crate::config::Config, input: &str) -> Self {
        let document = config.auth.document.as_ref();
        if input.contains('@') {
            Self::Email(input.to_owned())
        } else if document.is_some_and(|d| d.rule.normalise(input).is_ok()) {
            Self::Document(input.to_owned())
        } else if config.auth.username != IdentifierUse::Off {
            Self::Username(input.to_owned())
        } else {
            Self::Email(input.to_owned())
        }
    }

    /// The column and normalised value to look the account up by; None when it cannot name one
    /// here (malformed, or a kind this instance does not use).
    fn resolve(&self, config: &crate::config::Config) -> Option<(LoginKind, String)> {
        match self {
            Self::Email(text) => Some((
                LoginKind::Email,
                Email::parse(text).ok()?.as_str().to_owned(),
            )),
            Self::Username(text) if config.auth.username != IdentifierUse::Off => {
                Some((LoginKind::Username, normalise_username(text).ok()?))
            }
            Self::Document(text) => {
                let rule = &config.auth.document.as_ref()?.rule;
                Some((LoginKind::Document, rule.normalise(text).ok()?))
            }
            Self::Username(_) => None,
        }
    }
}

/// `lockout_threshold` failures per `lockout_window`; once spent, one attempt per
/// `lockout_window / lockout_threshold`.
fn lockout_quota(state: &AppState) -> Quota {
    Quota::from_rate(Rate {
        limit: u64::from(state.config.auth.lockout_threshold),
        window: state.config.auth.lockout_window,
    })
}

/// Signs an access token for a session, with the methods it signed in with (`amr`).
/// Deterministic for equal inputs (Ed25519 signatures are), so re-issuing generation `n` of a
/// session yields the same token.
pub async fn sign_access_token(
    state: &AppState,
    session: &SessionRecord,
    org_id: Option<&OrgId>,
    issued_at: i64,
    generation: i64,
) -> ApiResult<String> {
    let (user_id, session_id) = (&session.user_id, &session.id);
    let membership = match org_id {
        Some(org) => state.store.membership(org, user_id).await?,
        None => None,
    };
    let (org, role, perms) = match &membership {
        Some(m) => (
            Some(m.org_id.clone()),
            Some(m.role.clone()),
            crate::access::grants_of(state, m)
                .await?
                .effective(&state.config.catalog),
        ),
        None => (None, None, Vec::new()),
    };
    let claims = AccessClaims {
        iss: state.keyring.issuer().to_owned(),
        aud: state.keyring.audience().to_owned(),
        sub: user_id.clone(),
        sid: session_id.clone(),
        iat: issued_at,
        nbf: issued_at,
        exp: clock::after(issued_at, state.config.auth.access_token_ttl),
        jti: format!("{session_id}.{generation}"),
        org,
        role,
        perms,
        amr: mfa::amr_list(&session.amr),
    };
    Ok(state.keyring.sign(&claims)?)
}

fn refresh_expiry(state: &AppState, now: i64) -> i64 {
    clock::after(now, state.config.auth.refresh_token_ttl)
}

/// What a correct password leads to: a session, or — when the account has a second factor —
/// a challenge to complete with it ([`services::mfa::complete`](crate::services::mfa::complete)).
pub enum SignIn {
    /// Signed in.
    Tokens(TokenPair),
    /// The password was right; a second factor must follow.
    Challenge(crate::services::mfa::Challenge),
}

/// Logs in with email and password: a new session and its first token pair, or a second-factor
/// challenge. Unknown emails and wrong passwords take the same path (one argon2 verification,
/// one audit entry, one count against the address's lockout) and get the same answer; the
/// failure that spends the address's allowance locks it (429 with the wait). With a second
/// factor the lockout is cleared only once the factor is right, so a known password does not
/// reset the count of wrong codes.
pub async fn login(
    state: &AppState,
    client: &ClientInfo,
    name: &LoginName,
    password: SecretString,
    now: i64,
) -> ApiResult<SignIn> {
    let (kind, value) = name
        .resolve(&state.config)
        .ok_or(ApiError::InvalidCredentials)?;
    let user = state.store.user_by_login(kind, &value).await?;
    let lockout = match &user {
        Some(user) => Lockout::of_email(&user.email),
        None => Lockout::of_unknown(kind, &value),
    };
    not_locked_out(state, &lockout).await?;
    let ok = state
        .passwords
        .verify(password, user.as_ref().map(|u| u.password_hash.clone()))
        .await?;
    let user = match (ok, user) {
        (true, Some(user)) => user,
        (_, user) => {
            let user_id = user.as_ref().map(|u| u.id.as_str());
            return Err(login_failed(state, client, &lockout, user_id, LOGIN_FAILED, now).await);
        }
    };
    if user.email_verified_at.is_none() && state.config.auth.require_email_verification {
        return Err(ApiError::EmailNotVerified);
    }
    if let Some(challenge) =
        crate::services::mfa::challenge_if_enrolled(state, client, &user, mfa::AMR_PASSWORD, now)
            .await?
    {
        return Ok(SignIn::Challenge(challenge));
    }
    lockout.reset(state).await;
    Ok(SignIn::Tokens(
        start_session(state, client, &user, mfa::AMR_PASSWORD, now).await?,
    ))
}

/// Ok unless the lockout holds (then 429 with the wait).
pub async fn not_locked_out(state: &AppState, lockout: &Lockout) -> ApiResult<()> {
    let standing = state
        .limiter
        .peek(&lockout.key, lockout_quota(state), 1)
        .await?;
    if !standing.allowed {
        return Err(ApiError::RateLimited {
            retry_after: standing.retry_after_secs(),
        });
    }
    Ok(())
}

/// The audit action of a wrong password.
pub const LOGIN_FAILED: &str = "user.login_failed";

/// Counts a failed login (`action`: a wrong password, or a wrong second factor) against the address (whether or not it has an account, so the answers
/// cannot tell the two apart) and audits it; the failure that spends the allowance locks the
/// address (audited too) and answers 429.
pub async fn login_failed(
    state: &AppState,
    client: &ClientInfo,
    lockout: &Lockout,
    user_id: Option<&str>,
    action: &str,
    now: i64,
) -> ApiError {
    let event = |action: &str| {
        let e = AuditEvent::new(action, None, client)
            .at(now)
            .data(lockout.named.clone());
        match user_id {
            Some(id) => e.target("user", id),
            None => e,
        }
        .build()
    };
    let key = &lockout.key;
    let quota = lockout_quota(state);
    let counted = match state.limiter.check(key, quota, 1).await {
        Ok(decision) => decision,
        Err(e) => return e,
    };
    let mut entries = vec![event(action)];
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
    match state.limiter.peek(key, quota, 1).await {
        Ok(next) => ApiError::RateLimited {
            retry_after: next.retry_after_secs(),
        },
        Err(e) => e,
    }
}

/// Confirms the signed-in user's password before a sensitive change: the session counts as
/// freshly authenticated for `auth.reauthenticate_after`. A wrong password counts against the
/// address's lockout exactly like a failed login.
pub async fn confirm_password(
    state: &AppState,
    user: &AuthUser,
    client: &ClientInfo,
    password: SecretString,
    now: i64,
) -> ApiResult<()> {
    let account = crate::services::accounts::account_of(state, user).await?;
    check_password(state, client, &account, password, now).await?;
    let audit = AuditEvent::new("session.reauthenticated", Some(user.user_id()), client)
        .at(now)
        .target("session", user.session_id())
        .build();
    if !state
        .store
        .confirm_session(user.session_id(), now, &audit)
        .await?
    {
        return Err(ApiError::Unauthorized);
    }
    Ok(())
}

/// Checks a signed-in user's password as a login would: the address's lockout first, a wrong
/// password counted against it (and audited), a right one clearing it.
pub async fn check_password(
    state: &AppState,
    client: &ClientInfo,
    account: &UserRecord,
    password: SecretString,
    now: i64,
) -> ApiResult<()> {
    let lockout = Lockout::of_email(&account.email);
    not_locked_out(state, &lockout).await?;
    if !state
        .passwords
        .verify(password, Some(account.password_hash.clone()))
        .await?
    {
        let user_id = Some(account.id.as_str());
        return Err(login_failed(state, client, &lockout, user_id, LOGIN_FAILED, now).await);
    }
    lockout.reset(state).await;
    Ok(())
}

/// Confirms the signed-in user owns the account before a change to how it signs in: its
/// password (checked as a login would) — or, for an account without one (made by an OpenID
/// provider), a session that signed in within `auth.reauthenticate_after` (403 otherwise,
/// saying to sign in again).
pub async fn confirm_owner(
    state: &AppState,
    client: &ClientInfo,
    user: &AuthUser,
    account: &UserRecord,
    password: SecretString,
    now: i64,
) -> ApiResult<()> {
    if !account.password_hash.is_empty() {
        return check_password(state, client, account, password, now).await;
    }
    if recently_authenticated(state, user, now).await? {
        return Ok(());
    }
    let window = fluxgate_core::units::format_duration(state.config.auth.reauthenticate_after);
    Err(ApiError::Refused(format!(
        "this account has no password: sign in again (with its provider) to confirm it is you; this session signed in more than {window} ago"
    )))
}

/// Whether the user's session entered its password within `auth.reauthenticate_after`.
pub async fn recently_authenticated(
    state: &AppState,
    user: &AuthUser,
    now: i64,
) -> ApiResult<bool> {
    let session = state
        .store
        .session(user.session_id())
        .await?
        .ok_or(ApiError::Unauthorized)?;
    let at = session.authenticated_at.unwrap_or(session.created_at);
    let window =
        i64::try_from(state.config.auth.reauthenticate_after.as_secs()).unwrap_or(i64::MAX);
    Ok(now.saturating_sub(at) <= window)
}

/// A new session for `user` in their first org, signed in with `amr`, and its first token pair.
pub async fn start_session(
    state: &AppState,
    client: &ClientInfo,
    user: &UserRecord,
    amr: &str,
    now: i64,
) -> ApiResult<TokenPair> {
    let new = new_session(state, client, user, amr, now).await?;
    state
        .store
        .create_session(&new.session, &new.refresh, &new.audit)
        .await?;
    new.tokens(state, now).await
}

/// A session about to be stored: the record, its first refresh token and the login's audit
/// entry; [`NewSession::tokens`] once it is.
pub struct NewSession {
    /// The session.
    pub session: SessionRecord,
    /// Its first refresh token (by hash).
    pub refresh: RefreshTokenRecord,
    /// `user.login`.
    pub audit: fluxgate_store::AuditRecord,
    refresh_token: SecretString,
}

/// A new session for `user` in their first org, signed in with `amr` (not stored yet).
pub async fn new_session(
    state: &AppState,
    client: &ClientInfo,
    user: &UserRecord,
    amr: &str,
    now: i64,
) -> ApiResult<NewSession> {
    let memberships = state.store.memberships_of_user(&user.id).await?;
    let active_org = memberships.first().map(|m| m.org_id.clone());
    let session_id = SessionId::generate();
    let refresh_token = random_token();
    let expires_at = refresh_expiry(state, now);
    let session = SessionRecord {
        id: session_id.clone(),
        user_id: user.id.clone(),
        active_org_id: active_org,
        user_agent: client.user_agent.clone(),
        ip: client.ip.clone(),
        created_at: now,
        last_used_at: now,
        expires_at,
        revoked_at: None,
        revoked_reason: None,
        authenticated_at: Some(now),
        amr: amr.to_owned(),
    };
    let refresh = RefreshTokenRecord {
        token_hash: sha256_hex(refresh_token.expose_secret()),
        session_id: session_id.clone(),
        generation: 0,
        issued_at: now,
        expires_at,
        spent_at: None,
        spent_reason: None,
    };
    let audit = AuditEvent::new("user.login", Some(&user.id), client)
        .at(now)
        .target("session", &session_id)
        .data(json!({ "amr": mfa::amr_list(amr) }))
        .build();
    Ok(NewSession {
        session,
        refresh,
        audit,
        refresh_token,
    })
}

impl NewSession {
    /// The first token pair of the stored session.
    pub async fn tokens(self, state: &AppState, now: i64) -> ApiResult<TokenPair> {
        let org = self.session.active_org_id.as_ref();
        let access_token = sign_access_token(state, &self.session, org, now, 0).await?;
        Ok(TokenPair {
            access_token,
            refresh_token: self.refresh_token,
        })
    }
}

fn token_state(record: &RefreshTokenRecord, now: i64) -> TokenState {
    TokenState {
        expires_at: record.expires_at,
        spent: record.spent_at.map(|at| {
            let reason = record.spent_reason.unwrap_or(SpentReason::Superseded);
            (at.min(now), reason)
        }),
    }
}

/// Exchanges a refresh token for a new pair; the old token is spent. A spent token presented
/// again ends the whole session, except within the reuse interval, where it gets the same new
/// pair (two tabs refreshing at once). See [`fluxgate_core::refresh`] for the rule.
pub async fn refresh(
    state: &AppState,
    client: &ClientInfo,
    token: SecretString,
    now: i64,
) -> ApiResult<TokenPair> {
    let token_hash = sha256_hex(token.expose_secret());
    let mut record = state
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
    let successor = state.refresh.successor(token.expose_secret());
    let successor_hash = sha256_hex(successor.expose_secret());
    let reuse_interval = clock::seconds(state.config.auth.refresh_reuse_interval);
    let mut step = refresh::step(token_state(&record, now), now, reuse_interval);
    if step == RefreshStep::Rotate {
        let next = RefreshTokenRecord {
            token_hash: successor_hash.clone(),
            session_id: session.id.clone(),
            generation: record.generation.saturating_add(1),
            issued_at: now,
            expires_at: refresh_expiry(state, now),
            spent_at: None,
            spent_reason: None,
        };
        if state
            .store
            .rotate_refresh_token(&token_hash, &next, now)
            .await?
        {
            let access_token = sign_access_token(
                state,
                &session,
                session.active_org_id.as_ref(),
                now,
                next.generation,
            )
            .await?;
            return Ok(TokenPair {
                access_token,
                refresh_token: successor,
            });
        }
        // Another request spent it a moment ago: treat this one as the duplicate it is.
        record = state
            .store
            .refresh_token(&token_hash)
            .await?
            .ok_or(ApiError::Unauthorized)?;
        step = refresh::step(token_state(&record, now), now, reuse_interval);
    }
    if step == RefreshStep::ReplaySuccessor {
        // the pair its token was exchanged for, even if that pair has rotated since:
        // successors are derived, so the chain stays consistent
        if let Some(child) = state.store.refresh_token(&successor_hash).await? {
            let access_token = sign_access_token(
                state,
                &session,
                session.active_org_id.as_ref(),
                child.issued_at,
                child.generation,
            )
            .await?;
            return Ok(TokenPair {
                access_token,
                refresh_token: successor,
            });
        }
        step = RefreshStep::EndSession; // rotated, yet its successor is gone: not ours
    }
    if step == RefreshStep::EndSession {
        // A spent token came back: someone holds a copy. End the whole session.
        let audit = AuditEvent::new("session.refresh_reuse_detected", None, client)
            .at(now)
            .target("session", &session.id)
            .data(json!({ "user_id": session.user_id, "generation": record.generation }))
            .build();
        if state
            .store
            .revoke_session(
                &session.user_id,
                &session.id,
                EndReason::RefreshReuse,
                now,
                &audit,
            )
            .await?
        {
            state.revocations.mark(&session.id, now);
        }
    }
    Err(ApiError::Unauthorized)
}

/// Ends the caller's current session.
pub async fn logout(
    state: &AppState,
    user: &AuthUser,
    client: &ClientInfo,
    now: i64,
) -> ApiResult<()> {
    let audit = AuditEvent::new("user.logout", Some(user.user_id()), client)
        .at(now)
        .target("session", user.session_id())
        .build();
    state
        .store
        .revoke_session(
            user.user_id(),
            user.session_id(),
            EndReason::Logout,
            now,
            &audit,
        )
        .await?;
    state.revocations.mark(user.session_id(), now);
    Ok(())
}

/// The user's live sessions, newest first.
pub async fn list(state: &AppState, user: &AuthUser, now: i64) -> ApiResult<Vec<SessionRecord>> {
    Ok(state
        .store
        .active_sessions(user.user_id(), now)
        .await?
        .into_iter()
        .filter(|s| !state.revocations.is_revoked(&s.id))
        .collect())
}

/// Ends one of the user's sessions; another user's (or a malformed id) answers 404.
pub async fn end(
    state: &AppState,
    user: &AuthUser,
    client: &ClientInfo,
    session_id: &SessionId,
    now: i64,
) -> ApiResult<()> {
    let audit = AuditEvent::new("session.revoked", Some(user.user_id()), client)
        .at(now)
        .target("session", session_id.as_str())
        .build();
    if !state
        .store
        .revoke_session(user.user_id(), session_id, EndReason::Revoked, now, &audit)
        .await?
    {
        return Err(ApiError::NotFound);
    }
    state.revocations.mark(session_id, now);
    Ok(())
}

/// Ends every live session of the user but the one asking; how many ended.
pub async fn end_others(
    state: &AppState,
    user: &AuthUser,
    client: &ClientInfo,
    now: i64,
) -> ApiResult<u64> {
    let mut ended = 0u64;
    for session in list(state, user, now).await? {
        if &session.id == user.session_id() {
            continue;
        }
        match end(state, user, client, &session.id, now).await {
            Ok(()) => ended = ended.saturating_add(1),
            Err(ApiError::NotFound) => {} // it ended meanwhile
            Err(other) => return Err(other),
        }
    }
    Ok(ended)
}

/// Makes another of the user's orgs active: a new token pair acting in it (the session's
/// previous refresh token is superseded). Not a member: 404.
pub async fn switch_org(
    state: &AppState,
    user: &AuthUser,
    org_id: &str,
    now: i64,
) -> ApiResult<TokenPair> {
    let org_id: OrgId = org_id.parse().map_err(|_| ApiError::NotFound)?;
    state
        .store
        .membership(&org_id, user.user_id())
        .await?
        .ok_or(ApiError::NotFound)?;
    let refresh_token = random_token();
    let current = state
        .store
        .session(user.session_id())
        .await?
        .ok_or(ApiError::Unauthorized)?;
    let generation = now; // strictly increasing per session and distinct from rotation counts
    let next = RefreshTokenRecord {
        token_hash: sha256_hex(refresh_token.expose_secret()),
        session_id: current.id.clone(),
        generation,
        issued_at: now,
        expires_at: refresh_expiry(state, now),
        spent_at: None,
        spent_reason: None,
    };
    state
        .store
        .switch_session_org(&current.id, &org_id, &next, now)
        .await?;
    let change = Change::User(user.user_id().clone());
    state.invalidation.publish(change).await;
    let access_token = sign_access_token(state, &current, Some(&org_id), now, generation).await?;
    Ok(TokenPair {
        access_token,
        refresh_token,
    })
}
