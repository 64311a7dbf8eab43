//! Second factors: enrolling, confirming and removing a TOTP factor, recovery codes, and the
//! sign-in challenge between a right password and a second factor. Every wrong code counts
//! against the account's login lockout like a wrong password; every change is audited, mailed
//! to the user and announced (the `GET /auth/me` views show the factors).

use crate::audit::AuditEvent;
use crate::error::{ApiError, ApiResult};
use crate::extract::ClientInfo;
use crate::invalidation::Change;
use crate::mail::Mail;
use crate::services::accounts::account_of;
use crate::services::{passkeys, sessions};
use crate::state::AppState;
use crate::user_auth::{AuthUser, TokenPair};
use fluxgate_core::mfa::{self, TotpFactor};
use fluxgate_core::secret::{
    constant_time_eq, random_token, sha256_hex, ExposeSecret, SecretString,
};
use fluxgate_store::{MfaChallengeRecord, TotpConfirmation, TotpFactorRecord, UserRecord};

/// How long a sign-in challenge can be completed.
pub const CHALLENGE_TTL_SECS: i64 = 300;
/// Codes one challenge may try (each also counts against the account's lockout).
pub const CHALLENGE_ATTEMPTS: i64 = 5;
/// The audit action of a wrong second factor.
pub const MFA_FAILED: &str = "user.mfa_failed";
/// The label authenticator apps show for Fluxgate's factors.
const ISSUER: &str = "Fluxgate";

/// A password accepted, waiting for a second factor.
pub struct Challenge {
    /// The challenge token (stored by hash).
    pub token: SecretString,
    /// Unix seconds.
    pub expires_at: i64,
    /// What completes it.
    pub methods: Vec<&'static str>,
}

/// A second factor as presented: a TOTP code, a recovery code or a passkey's answer.
pub enum Answer {
    /// Six digits from the authenticator app.
    Totp(String),
    /// One of the recovery codes.
    RecoveryCode(SecretString),
    /// A passkey's assertion, answering the options of
    /// [`passkeys::begin_second_factor`].
    Passkey(Box<webauthn_rs::prelude::PublicKeyCredential>),
}

impl Answer {
    /// From a body's `code` and `recovery_code` fields: exactly one must be given.
    pub fn from_fields(
        code: Option<String>,
        recovery_code: Option<SecretString>,
    ) -> ApiResult<Self> {
        match (code, recovery_code) {
            (Some(code), None) => Ok(Self::Totp(code)),
            (None, Some(code)) => Ok(Self::RecoveryCode(code)),
            _ => Err(ApiError::field(
                "code",
                "give either `code` (from the authenticator app) or `recovery_code`",
            )),
        }
    }

    /// What a person typed into one field: six digits are the app's code, anything else a
    /// recovery code.
    pub fn typed(input: &str) -> Self {
        let trimmed = input.trim();
        if trimmed.len() == 6 && trimmed.bytes().all(|b| b.is_ascii_digit()) {
            Self::Totp(trimmed.to_owned())
        } else {
            Self::RecoveryCode(SecretString::from(input.to_owned()))
        }
    }
}

/// A new TOTP factor for authenticator apps.
pub struct Enrolment {
    /// The secret in base32.
    pub secret: String,
    /// `otpauth://totp/…`
    pub uri: String,
    /// The URI as a QR code (SVG).
    pub qr_svg: String,
}

/// Starts enrolling a TOTP factor (the password — or a recent sign-in, for an account without
/// one — confirms it is the account's owner): a new pending secret, replacing a pending one.
/// 409 when a factor is already enabled.
pub async fn enrol(
    state: &AppState,
    user: &AuthUser,
    client: &ClientInfo,
    password: SecretString,
    now: i64,
) -> ApiResult<Enrolment> {
    let account = account_of(state, user).await?;
    sessions::confirm_owner(state, client, user, &account, password, now).await?;
    let secret = TotpFactor::new_secret();
    let factor = totp_factor(&secret, &account)?;
    let record = TotpFactorRecord {
        user_id: account.id.clone(),
        secret_sealed: state.totp_sealer.seal(account.id.as_str(), &secret)?,
        created_at: now,
        confirmed_at: None,
        last_step: None,
    };
    let audit = event("user.totp_enrolment_started", &account, client, now);
    if !state.store.begin_totp(&record, &audit).await? {
        return Err(ApiError::Conflict(
            "a TOTP factor is already enabled: disable it first".into(),
        ));
    }
    enrolment_of(&factor)
}

/// The pending enrolment again (its secret unsealed), until a code confirms it; None when
/// nothing is pending.
pub async fn pending(state: &AppState, user: &AuthUser) -> ApiResult<Option<Enrolment>> {
    let account = account_of(state, user).await?;
    let record = state.store.totp_factor(&account.id).await?;
    match record.filter(|f| f.confirmed_at.is_none()) {
        Some(record) => Ok(Some(enrolment_of(&stored_factor(
            state, &account, &record,
        )?)?)),
        None => Ok(None),
    }
}

fn enrolment_of(factor: &TotpFactor) -> ApiResult<Enrolment> {
    Ok(Enrolment {
        secret: factor.secret_base32(),
        uri: factor.uri().to_owned(),
        qr_svg: qr_svg(factor.uri())?,
    })
}

/// Confirms the pending TOTP factor with its first code: from now on login asks for a code.
/// The confirming session has just used the factor, so it now counts as signed in with it
/// (its next refresh carries `amr` `mfa`). Returns the recovery codes, shown this once.
pub async fn confirm(
    state: &AppState,
    user: &AuthUser,
    client: &ClientInfo,
    code: &str,
    now: i64,
) -> ApiResult<Vec<SecretString>> {
    let account = account_of(state, user).await?;
    let pending = state
        .store
        .totp_factor(&account.id)
        .await?
        .filter(|f| f.confirmed_at.is_none())
        .ok_or_else(|| {
            ApiError::Conflict("no TOTP enrolment is pending: start one first".into())
        })?;
    let factor = stored_factor(state, &account, &pending)?;
    let step = factor
        .accepts(code, now, None)
        .ok_or_else(|| ApiError::field("code", "is not the authenticator app's current code"))?;
    let (codes, hashes) = new_recovery_codes();
    let audit = event("user.totp_enabled", &account, client, now);
    let confirmation = TotpConfirmation {
        user_id: &account.id,
        secret_sealed: &pending.secret_sealed,
        step,
        code_hashes: &hashes,
        session_id: user.session_id(),
        amr: &with_second_factor(first_factor_of(user), mfa::AMR_OTP),
    };
    let confirmed = state.store.confirm_totp(&confirmation, now, &audit).await?;
    if !confirmed {
        return Err(ApiError::Conflict(
            "the enrolment changed meanwhile: start again".into(),
        ));
    }
    factors_changed(
        state,
        &account,
        "Two-step sign-in was turned on",
        "An authenticator app was added to your account: signing in now asks for its code.",
    )
    .await;
    Ok(codes)
}

/// Removes the TOTP factor (and the recovery codes, unless a passkey is left): needs the
/// password and a current code (or a recovery code). 404 when there is none.
pub async fn disable(
    state: &AppState,
    user: &AuthUser,
    client: &ClientInfo,
    password: SecretString,
    answer: &Answer,
    now: i64,
) -> ApiResult<()> {
    let account = account_of(state, user).await?;
    sessions::confirm_owner(state, client, user, &account, password, now).await?;
    if confirmed_factor(state, &account).await?.is_none() {
        return Err(ApiError::NotFound);
    }
    check_answer(state, client, &account, answer, None, now).await?;
    let audit = event("user.totp_disabled", &account, client, now);
    if !state.store.remove_totp(&account.id, &audit).await? {
        return Err(ApiError::NotFound);
    }
    let body = if has_second_factor(state, &account).await? {
        "The authenticator app was removed from your account: signing in with your password now asks for a passkey (or a recovery code)."
    } else {
        "The authenticator app was removed from your account and its recovery codes no longer work: signing in needs only your password."
    };
    factors_changed(state, &account, "Two-step sign-in was turned off", body).await;
    Ok(())
}

/// Replaces the recovery codes; the new ones are shown this once. The second factor must be
/// at hand: the app's current `code`, or — for an account without a TOTP factor — a session
/// that signed in with a passkey. 404 without a second factor.
pub async fn regenerate_recovery_codes(
    state: &AppState,
    user: &AuthUser,
    client: &ClientInfo,
    code: Option<&str>,
    now: i64,
) -> ApiResult<Vec<SecretString>> {
    let account = account_of(state, user).await?;
    if !has_second_factor(state, &account).await? {
        return Err(ApiError::NotFound);
    }
    match code {
        Some(code) => {
            let answer = Answer::Totp(code.to_owned());
            check_answer(state, client, &account, &answer, None, now).await?;
        }
        None if confirmed_factor(state, &account).await?.is_none()
            && user.claims.amr.iter().any(|m| m == mfa::AMR_HARDWARE_KEY) => {}
        None => {
            return Err(ApiError::field(
                "code",
                "give the authenticator app's current code (an account with only passkeys: sign in with one first)",
            ))
        }
    }
    let (codes, hashes) = new_recovery_codes();
    let audit = event("user.recovery_codes_regenerated", &account, client, now);
    state
        .store
        .replace_recovery_codes(&account.id, &hashes, now, &audit)
        .await?;
    factors_changed(
        state,
        &account,
        "New recovery codes",
        "New recovery codes were made for your account; the earlier ones no longer work.",
    )
    .await;
    Ok(codes)
}

/// After a right first factor (`first_factor`: `pwd`, or `fed` for an OpenID provider): a
/// challenge for the account's second factors, if it has any.
pub async fn challenge_if_enrolled(
    state: &AppState,
    client: &ClientInfo,
    user: &UserRecord,
    first_factor: &str,
    now: i64,
) -> ApiResult<Option<Challenge>> {
    let totp = confirmed_factor(state, user).await?.is_some();
    let passkeys = !state.store.passkeys(&user.id).await?.is_empty();
    if !totp && !passkeys {
        return Ok(None);
    }
    let mut methods = Vec::with_capacity(3);
    if totp {
        methods.push("totp");
    }
    if passkeys && state.relying_party.enabled() {
        methods.push("passkey");
    }
    methods.push("recovery_code");
    let token = random_token();
    let expires_at = now.saturating_add(CHALLENGE_TTL_SECS);
    let record = MfaChallengeRecord {
        token_hash: sha256_hex(token.expose_secret()),
        user_id: user.id.clone(),
        client_hash: client_hash(client),
        created_at: now,
        expires_at,
        attempts: 0,
        spent_at: None,
        first_factor: first_factor.to_owned(),
    };
    state.store.insert_mfa_challenge(&record).await?;
    Ok(Some(Challenge {
        token,
        expires_at,
        methods,
    }))
}

/// The account a live sign-in challenge belongs to, with the challenge, counting one attempt
/// on it: it must be from the client that logged in and within its attempts, and the account
/// must still have a second factor.
pub(crate) async fn challenged_account(
    state: &AppState,
    client: &ClientInfo,
    token: &SecretString,
    now: i64,
) -> ApiResult<(UserRecord, MfaChallengeRecord)> {
    let challenge = state
        .store
        .attempt_mfa_challenge(&sha256_hex(token.expose_secret()), now)
        .await?
        .ok_or(ApiError::MfaChallengeInvalid)?;
    if !started_by(&challenge.client_hash, client) || challenge.attempts > CHALLENGE_ATTEMPTS {
        return Err(ApiError::MfaChallengeInvalid);
    }
    let account = state
        .store
        .user_by_id(&challenge.user_id)
        .await?
        .ok_or(ApiError::MfaChallengeInvalid)?;
    if !has_second_factor(state, &account).await? {
        return Err(ApiError::MfaChallengeInvalid);
    }
    Ok((account, challenge))
}

/// Completes a sign-in challenge with a second factor: a new session whose tokens carry the
/// methods used. The challenge must be live, from the client that logged in, within its
/// attempts; it is spent with the session's creation, so it signs in once.
pub async fn complete(
    state: &AppState,
    client: &ClientInfo,
    token: &SecretString,
    answer: &Answer,
    now: i64,
) -> ApiResult<TokenPair> {
    let (account, challenge) = challenged_account(state, client, token, now).await?;
    let token_hash = &challenge.token_hash;
    let method = check_answer(state, client, &account, answer, Some(token_hash), now).await?;
    let amr = with_second_factor(&challenge.first_factor, method);
    let new = sessions::new_session(state, client, &account, &amr, now).await?;
    let completed = state
        .store
        .complete_mfa_challenge(token_hash, now, &new.session, &new.refresh, &new.audit)
        .await?;
    if !completed {
        return Err(ApiError::MfaChallengeInvalid);
    }
    if matches!(answer, Answer::RecoveryCode(_)) {
        let left = state.store.recovery_codes_left(&account.id).await?;
        let body = format!("A recovery code was used to sign in to your account. {left} unused codes are left; if this was not you, change your password and make new codes.");
        factors_changed(state, &account, "A recovery code was used", &body).await;
    }
    new.tokens(state, now).await
}

/// Checks a second factor for `account` as a login checks a password: the address's lockout
/// first; a wrong answer counted against it (and audited), a right one clearing it. A TOTP
/// step and a recovery code are each accepted once; a passkey answers the ceremony started for
/// the login challenge hashed `challenge_hash` (none outside a login). The method's `amr`
/// (`otp`, `rc`, `hwk`).
async fn check_answer(
    state: &AppState,
    client: &ClientInfo,
    account: &UserRecord,
    answer: &Answer,
    challenge_hash: Option<&str>,
    now: i64,
) -> ApiResult<&'static str> {
    let lockout = sessions::Lockout::of_email(&account.email);
    sessions::not_locked_out(state, &lockout).await?;
    let accepted = match answer {
        Answer::Totp(code) => match confirmed_factor(state, account).await? {
            Some(factor) => {
                let step =
                    stored_factor(state, account, &factor)?.accepts(code, now, factor.last_step);
                match step {
                    Some(step) => state.store.spend_totp_step(&account.id, step).await?,
                    None => false,
                }
            }
            None => false,
        }
        .then_some(mfa::AMR_OTP),
        Answer::RecoveryCode(code) => match mfa::recovery_code_hash(code.expose_secret()) {
            Some(hash) => {
                state
                    .store
                    .spend_recovery_code(&account.id, &hash, now)
                    .await?
            }
            None => false,
        }
        .then_some(mfa::AMR_RECOVERY_CODE),
        Answer::Passkey(credential) => match challenge_hash {
            Some(hash) => {
                passkeys::second_factor_answered(state, account, hash, credential, now).await?
            }
            None => false,
        }
        .then_some(mfa::AMR_HARDWARE_KEY),
    };
    if let Some(amr) = accepted {
        lockout.reset(state).await;
        return Ok(amr);
    }
    let user_id = Some(account.id.as_str());
    match sessions::login_failed(state, client, &lockout, user_id, MFA_FAILED, now).await {
        ApiError::InvalidCredentials => Err(ApiError::InvalidMfaCode),
        other => Err(other),
    }
}

/// The `amr` of a sign-in whose first factor was `first` and whose second was `method`.
pub(crate) fn with_second_factor(first: &str, method: &str) -> String {
    format!("{first} {method} {}", mfa::AMR_MFA)
}

/// How the user's session signed in first (`pwd`, `fed`; `hwk` for a passkey alone).
pub(crate) fn first_factor_of(user: &AuthUser) -> &str {
    user.claims
        .amr
        .first()
        .map(String::as_str)
        .unwrap_or(mfa::AMR_PASSWORD)
}

/// Whether the account has a second factor: a confirmed TOTP factor or a passkey.
pub(crate) async fn has_second_factor(state: &AppState, account: &UserRecord) -> ApiResult<bool> {
    Ok(confirmed_factor(state, account).await?.is_some()
        || !state.store.passkeys(&account.id).await?.is_empty())
}

/// The account's confirmed TOTP factor, if any.
async fn confirmed_factor(
    state: &AppState,
    account: &UserRecord,
) -> ApiResult<Option<TotpFactorRecord>> {
    Ok(state
        .store
        .totp_factor(&account.id)
        .await?
        .filter(|f| f.confirmed_at.is_some()))
}

/// The factor of a stored record (its secret unsealed).
fn stored_factor(
    state: &AppState,
    account: &UserRecord,
    record: &TotpFactorRecord,
) -> ApiResult<TotpFactor> {
    let secret = state
        .totp_sealer
        .open(account.id.as_str(), &record.secret_sealed)?;
    totp_factor(&secret, account)
}

fn totp_factor(secret: &[u8], account: &UserRecord) -> ApiResult<TotpFactor> {
    TotpFactor::new(secret, ISSUER, &account.email)
        .ok_or_else(|| anyhow::anyhow!("a TOTP secret of the wrong length").into())
}

/// A fresh set of recovery codes and their hashes.
pub(crate) fn new_recovery_codes() -> (Vec<SecretString>, Vec<String>) {
    let codes = mfa::new_recovery_codes();
    let hashes = codes
        .iter()
        .filter_map(|c| mfa::recovery_code_hash(c.expose_secret()))
        .collect();
    (codes, hashes)
}

/// Whether `client` is the one whose [`client_hash`] a challenge or ceremony stored.
pub(crate) fn started_by(stored_hash: &str, client: &ClientInfo) -> bool {
    constant_time_eq(stored_hash.as_bytes(), client_hash(client).as_bytes())
}

/// Who a challenge or ceremony belongs to: the address and user agent that started it.
pub(crate) fn client_hash(client: &ClientInfo) -> String {
    let ip = client.ip.as_deref().unwrap_or("");
    let agent = client.user_agent.as_deref().unwrap_or("");
    sha256_hex(&format!("{ip}\n{agent}"))
}

/// An audit entry about the account's own factors.
fn event(
    action: &str,
    account: &UserRecord,
    client: &ClientInfo,
    now: i64,
) -> fluxgate_store::AuditRecord {
    AuditEvent::new(action, Some(&account.id), client)
        .at(now)
        .target("user", &account.id)
        .build()
}

/// After a change to the account's factors: the user is told by mail, and every node's
/// `GET /auth/me` view of them is dropped.
pub(crate) async fn factors_changed(
    state: &AppState,
    account: &UserRecord,
    subject: &str,
    body: &str,
) {
    state.mailer.send(Mail {
        to: account.email.clone(),
        subject: subject.to_owned(),
        body: format!("{body}\n\nIf this was not you, sign in and check your account's security settings, or contact your administrator.\n"),
    });
    factors_changed_quietly(state, account).await;
}

/// After a change to the account's factors not worth a mail (a passkey renamed): every node's
/// `GET /auth/me` view of them is dropped.
pub(crate) async fn factors_changed_quietly(state: &AppState, account: &UserRecord) {
    state
        .invalidation
        .publish(Change::User(account.id.clone()))
        .await;
}

/// The URI as a QR code: an SVG document, dark modules on white, with the quiet zone.
fn qr_svg(uri: &str) -> ApiResult<String> {
    use qrcode::render::svg;
    let code = qrcode::QrCode::new(uri.as_bytes())
        .map_err(|e| anyhow::anyhow!("encoding the QR code: {e}"))?;
    Ok(code
        .render::<svg::Color<'_>>()
        .min_dimensions(200, 200)
        .dark_color(svg::Color("#000000"))
        .light_color(svg::Color("#ffffff"))
        .build())
}
