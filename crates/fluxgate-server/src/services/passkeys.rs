//! Passkeys (WebAuthn, through webauthn-rs): registering, naming and removing a user's passkeys,
//! signing in with one as the only factor (a discoverable credential: nothing typed), and one
//! as a login's second factor. A ceremony's state stays on the server, stored by the hash of a
//! token the client holds, bound to that client, five minutes long and taken once.

use crate::audit::AuditEvent;
use crate::error::{ApiError, ApiResult};
use crate::extract::ClientInfo;
use crate::services::accounts::account_of;
use crate::services::{mfa, sessions};
use crate::state::AppState;
use crate::user_auth::{AuthUser, TokenPair};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use fluxgate_core::mfa::AMR_HARDWARE_KEY;
use fluxgate_core::secret::{
    constant_time_eq, random_token, sha256_hex, ExposeSecret, SecretString,
};
use fluxgate_store::{PasskeyId, PasskeyRecord, UserRecord, WebauthnCeremonyRecord};
use serde::de::DeserializeOwned;
use serde::Serialize;
use webauthn_rs::prelude::{
    DiscoverableAuthentication, DiscoverableKey, Passkey, PasskeyAuthentication,
    PasskeyRegistration, PublicKeyCredential, RegisterPublicKeyCredential, Url, Uuid, Webauthn,
    WebauthnBuilder,
};

/// How long a ceremony can be finished.
pub const CEREMONY_TTL_SECS: i64 = 300;
/// The longest name a passkey may have, in characters.
const NAME_MAX_CHARS: usize = 64;
/// How a session signed in with a passkey alone: a user-verified passkey is something held and
/// something known or been (the device's PIN or biometrics), so it counts as two factors.
const AMR_PASSKEY: &str = "hwk mfa";

const REGISTER: &str = "register";
const SIGN_IN: &str = "sign_in";
const SECOND_FACTOR: &str = "second_factor";

/// This instance as a WebAuthn relying party: its id is the public URL's host name, its only
/// origin the public URL's. Passkeys are off when that host is an IP address, which WebAuthn
/// does not accept (say so rather than fail in the browser).
pub struct RelyingParty(Result<Webauthn, String>);

impl RelyingParty {
    /// The relying party of `public_url`.
    pub fn new(public_url: &str) -> Self {
        Self(Self::build(public_url))
    }

    fn build(public_url: &str) -> Result<Webauthn, String> {
        let origin =
            Url::parse(public_url).map_err(|e| format!("`public_url` is not a URL: {e}"))?;
        let Some(rp_id) = origin.domain().map(str::to_owned) else {
            return Err(format!(
                "passkeys need `public_url` to name a host (such as `http://localhost:8080`), \
                 not an IP address: WebAuthn accepts no IP address (it is `{public_url}`)"
            ));
        };
        WebauthnBuilder::new(&rp_id, &origin)
            .and_then(|b| b.rp_name("Fluxgate").build())
            .map_err(|e| format!("passkeys cannot use `public_url` {public_url}: {e}"))
    }

    /// The relying party, or 409 saying why passkeys are off.
    fn webauthn(&self) -> ApiResult<&Webauthn> {
        self.0
            .as_ref()
            .map_err(|why| ApiError::Conflict(why.clone()))
    }

    /// Whether passkeys work on this instance.
    pub fn enabled(&self) -> bool {
        self.0.is_ok()
    }
}

/// A ceremony started: the token the client sends back, and the options for its browser.
pub struct Ceremony {
    /// The ceremony's token (its hash keys the stored state).
    pub token: SecretString,
    /// `{"publicKey": …}` for `navigator.credentials`.
    pub options: serde_json::Value,
    /// Unix seconds.
    pub expires_at: i64,
}

/// Starts registering a passkey for the signed-in user (the password confirms it is the
/// account's owner). The authenticator is asked for a discoverable credential where it can
/// make one, so the passkey can later sign in with nothing typed; the user's other passkeys
/// are excluded, so one authenticator is not registered twice.
pub async fn begin_registration(
    state: &AppState,
    user: &AuthUser,
    client: &ClientInfo,
    password: SecretString,
    now: i64,
) -> ApiResult<Ceremony> {
    let webauthn = state.relying_party.webauthn()?;
    let account = account_of(state, user).await?;
    sessions::confirm_owner(state, client, user, &account, password, now).await?;
    let existing = stored_passkeys(state, &account).await?;
    let exclude = existing.iter().map(|(_, p)| p.cred_id().clone()).collect();
    let (options, registration) = webauthn
        .start_passkey_registration(
            user_handle(&account)?,
            &account.email,
            display_name(&account),
            Some(exclude),
        )
        .map_err(|e| anyhow::anyhow!("starting a passkey registration: {e}"))?;
    let mut options = json_value(&options)?;
    if let Some(selection) = options.pointer_mut("/publicKey/authenticatorSelection") {
        selection["residentKey"] = "preferred".into();
    }
    let token = random_token();
    store_ceremony(
        state,
        &token,
        REGISTER,
        Some(&account),
        client,
        &registration,
        now,
    )
    .await?;
    Ok(ceremony(token, options, now))
}

/// Finishes a registration with the authenticator's answer: the passkey, named `name`, and —
/// when it is the account's first second factor — the recovery codes, shown this once. The
/// registering session counts as signed in with the passkey from its next refresh.
pub async fn finish_registration(
    state: &AppState,
    user: &AuthUser,
    client: &ClientInfo,
    ceremony_token: &SecretString,
    name: &str,
    credential: &RegisterPublicKeyCredential,
    now: i64,
) -> ApiResult<(PasskeyRecord, Vec<SecretString>)> {
    let webauthn = state.relying_party.webauthn()?;
    let name = passkey_name(name)?;
    let account = account_of(state, user).await?;
    let record = take_ceremony(state, ceremony_token, REGISTER, client, now).await?;
    if record.user_id.as_ref() != Some(&account.id) {
        return Err(dead_ceremony());
    }
    let registration: PasskeyRegistration = ceremony_state(&record)?;
    let passkey = webauthn
        .finish_passkey_registration(credential, &registration)
        .map_err(|e| {
            ApiError::field(
                "credential",
                format!("the authenticator's answer did not verify ({e}): start again"),
            )
        })?;
    let first_factor = !mfa::has_second_factor(state, &account).await?;
    let (codes, hashes) = if first_factor {
        mfa::new_recovery_codes()
    } else {
        (Vec::new(), Vec::new())
    };
    let passkey_record = PasskeyRecord {
        id: PasskeyId::generate(),
        user_id: account.id.clone(),
        credential_id: URL_SAFE_NO_PAD.encode(passkey.cred_id().as_ref()),
        name: name.clone(),
        credential: to_json(&passkey)?,
        created_at: now,
        last_used_at: None,
    };
    let audit = event("user.passkey_added", &account, client, now)
        .target("passkey", &passkey_record.id)
        .data(serde_json::json!({ "name": name }))
        .build();
    // the registering session has just used the passkey: from its next refresh it counts as
    // signed in with it, as a session that confirms a TOTP factor does
    let session = user.session_id();
    let amr = mfa::with_second_factor(mfa::first_factor_of(user), AMR_HARDWARE_KEY);
    let added = state
        .store
        .add_passkey(&passkey_record, &hashes, session, &amr, &audit)
        .await?;
    if !added {
        return Err(ApiError::Conflict(
            "this passkey is registered already".into(),
        ));
    }
    let body =
        format!("A passkey named “{name}” was added to your account: it can now sign you in.");
    mfa::factors_changed(state, &account, "A passkey was added", &body).await;
    Ok((passkey_record, codes))
}

/// The signed-in user's passkeys, oldest first.
pub async fn list(state: &AppState, user: &AuthUser) -> ApiResult<Vec<PasskeyRecord>> {
    Ok(state.store.passkeys(user.user_id()).await?)
}

/// Renames one of the signed-in user's passkeys; 404 when they have none with this id.
pub async fn rename(
    state: &AppState,
    user: &AuthUser,
    client: &ClientInfo,
    id: &PasskeyId,
    name: &str,
    now: i64,
) -> ApiResult<PasskeyRecord> {
    let name = passkey_name(name)?;
    let account = account_of(state, user).await?;
    let audit = event("user.passkey_renamed", &account, client, now)
        .target("passkey", id)
        .data(serde_json::json!({ "name": name }))
        .build();
    if !state
        .store
        .rename_passkey(&account.id, id, &name, &audit)
        .await?
    {
        return Err(ApiError::NotFound);
    }
    mfa::factors_changed_quietly(state, &account).await;
    state
        .store
        .passkeys(&account.id)
        .await?
        .into_iter()
        .find(|p| &p.id == id)
        .ok_or(ApiError::NotFound)
}

/// Removes one of the signed-in user's passkeys (the password confirms it is the account's
/// owner); with their last second factor go the recovery codes. 404 when there is no such
/// passkey of theirs.
pub async fn remove(
    state: &AppState,
    user: &AuthUser,
    client: &ClientInfo,
    id: &PasskeyId,
    password: SecretString,
    now: i64,
) -> ApiResult<()> {
    let account = account_of(state, user).await?;
    sessions::confirm_owner(state, client, user, &account, password, now).await?;
    let name = state
        .store
        .passkeys(&account.id)
        .await?
        .into_iter()
        .find(|p| &p.id == id)
        .map(|p| p.name)
        .ok_or(ApiError::NotFound)?;
    let audit = event("user.passkey_removed", &account, client, now)
        .target("passkey", id)
        .data(serde_json::json!({ "name": name }))
        .build();
    if !state.store.remove_passkey(&account.id, id, &audit).await? {
        return Err(ApiError::NotFound);
    }
    let body = format!(
        "The passkey named “{name}” was removed from your account: it no longer signs you in."
    );
    mfa::factors_changed(state, &account, "A passkey was removed", &body).await;
    Ok(())
}

/// Starts a sign-in with a passkey alone: options naming no account, so the authenticator
/// offers the discoverable credentials it holds for this site.
pub async fn begin_sign_in(state: &AppState, client: &ClientInfo, now: i64) -> ApiResult<Ceremony> {
    let webauthn = state.relying_party.webauthn()?;
    let (options, authentication) = webauthn
        .start_discoverable_authentication()
        .map_err(|e| anyhow::anyhow!("starting a passkey sign-in: {e}"))?;
    let mut options = json_value(&options)?;
    // A button asks for it, not the browser's autofill: drop webauthn-rs's conditional mediation.
    if let Some(object) = options.as_object_mut() {
        object.remove("mediation");
    }
    let token = random_token();
    store_ceremony(state, &token, SIGN_IN, None, client, &authentication, now).await?;
    Ok(ceremony(token, options, now))
}

/// Finishes a sign-in with a passkey alone: a new session whose `amr` is `hwk mfa` (a
/// user-verified passkey counts as two factors, so an org that requires a second factor lets
/// it in). The passkey must be registered, belong to the account its user handle names, and
/// its signature verify; any failure is the same 401 and is audited.
pub async fn finish_sign_in(
    state: &AppState,
    client: &ClientInfo,
    ceremony_token: &SecretString,
    credential: &PublicKeyCredential,
    now: i64,
) -> ApiResult<TokenPair> {
    let webauthn = state.relying_party.webauthn()?;
    let record = take_ceremony(state, ceremony_token, SIGN_IN, client, now).await?;
    let authentication: DiscoverableAuthentication = ceremony_state(&record)?;
    let credential_id = URL_SAFE_NO_PAD.encode(credential.get_credential_id());
    let stored = state.store.passkey_by_credential(&credential_id).await?;
    let Some((account, stored)) = signing_in(state, credential, stored).await? else {
        return Err(passkey_refused(state, client, None, now).await);
    };
    let mut passkey: Passkey = from_json(&stored.credential)?;
    let keys = [DiscoverableKey::from(&passkey)];
    let Ok(result) = webauthn.finish_discoverable_authentication(credential, authentication, &keys)
    else {
        return Err(passkey_refused(state, client, Some(&account), now).await);
    };
    passkey.update_credential(&result);
    state
        .store
        .passkey_used(&stored.id, &to_json(&passkey)?, now)
        .await?;
    if account.email_verified_at.is_none() && state.config.auth.require_email_verification {
        return Err(ApiError::EmailNotVerified);
    }
    sessions::start_session(state, client, &account, AMR_PASSKEY, now).await
}

/// The account a passkey sign-in names, with its stored passkey: the credential must be
/// registered and its user handle must be that account's.
async fn signing_in(
    state: &AppState,
    credential: &PublicKeyCredential,
    stored: Option<PasskeyRecord>,
) -> ApiResult<Option<(UserRecord, PasskeyRecord)>> {
    let Some(stored) = stored else {
        return Ok(None);
    };
    let Some(account) = state.store.user_by_id(&stored.user_id).await? else {
        return Ok(None);
    };
    let claimed = credential.get_user_unique_id().unwrap_or_default();
    let handle = user_handle(&account)?;
    if !constant_time_eq(claimed, handle.as_bytes()) {
        return Ok(None);
    }
    Ok(Some((account, stored)))
}

/// The options for completing a login's challenge with a passkey: the account's passkeys
/// allowed; the ceremony's state kept under the challenge itself (a newer request replaces it).
pub async fn begin_second_factor(
    state: &AppState,
    client: &ClientInfo,
    challenge_token: &SecretString,
    now: i64,
) -> ApiResult<Ceremony> {
    let webauthn = state.relying_party.webauthn()?;
    let (account, _) = mfa::challenged_account(state, client, challenge_token, now).await?;
    let passkeys: Vec<Passkey> = stored_passkeys(state, &account)
        .await?
        .into_iter()
        .map(|(_, p)| p)
        .collect();
    if passkeys.is_empty() {
        return Err(ApiError::Conflict(
            "this account has no passkey: use another method".into(),
        ));
    }
    let (options, authentication) = webauthn
        .start_passkey_authentication(&passkeys)
        .map_err(|e| anyhow::anyhow!("starting a passkey second factor: {e}"))?;
    let record = WebauthnCeremonyRecord {
        token_hash: sha256_hex(challenge_token.expose_secret()),
        purpose: SECOND_FACTOR.into(),
        user_id: Some(account.id.clone()),
        client_hash: mfa::client_hash(client),
        state: to_json(&authentication)?,
        created_at: now,
        expires_at: now.saturating_add(CEREMONY_TTL_SECS),
    };
    state.store.put_webauthn_ceremony(&record).await?;
    Ok(ceremony(
        challenge_token.clone(),
        json_value(&options)?,
        now,
    ))
}

/// Whether `credential` answers the passkey ceremony started for the login challenge hashed
/// `challenge_hash` by one of `account`'s passkeys (its counter then recorded). False for
/// anything else: no ceremony, another account's, a signature that does not verify.
pub(crate) async fn second_factor_answered(
    state: &AppState,
    account: &UserRecord,
    challenge_hash: &str,
    credential: &PublicKeyCredential,
    now: i64,
) -> ApiResult<bool> {
    let webauthn = state.relying_party.webauthn()?;
    let Some(record) = state
        .store
        .take_webauthn_ceremony(challenge_hash, SECOND_FACTOR, now)
        .await?
    else {
        return Ok(false);
    };
    if record.user_id.as_ref() != Some(&account.id) {
        return Ok(false);
    }
    let authentication: PasskeyAuthentication = ceremony_state(&record)?;
    let Ok(result) = webauthn.finish_passkey_authentication(credential, &authentication) else {
        return Ok(false);
    };
    for (stored, mut passkey) in stored_passkeys(state, account).await? {
        if passkey.cred_id() == result.cred_id() {
            passkey.update_credential(&result);
            state
                .store
                .passkey_used(&stored.id, &to_json(&passkey)?, now)
                .await?;
            return Ok(true);
        }
    }
    Ok(false)
}

/// The WebAuthn user handle of an account: its id's ULID as the 16 bytes of a UUID (stable,
/// opaque, no personal data).
fn user_handle(account: &UserRecord) -> ApiResult<Uuid> {
    let ulid = account
        .id
        .as_str()
        .split_once('_')
        .and_then(|(_, ulid)| ulid::Ulid::from_string(ulid).ok())
        .ok_or_else(|| anyhow::anyhow!("a user id that is not a ULID"))?;
    Ok(Uuid::from_bytes(ulid.to_bytes()))
}

/// What the authenticator shows beside the email: the account's name, or the email again.
fn display_name(account: &UserRecord) -> &str {
    match account.name.as_deref().map(str::trim) {
        Some(name) if !name.is_empty() => name,
        _ => &account.email,
    }
}

/// A passkey's name: trimmed, 1 to 64 characters.
pub fn passkey_name(name: &str) -> ApiResult<String> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > NAME_MAX_CHARS {
        return Err(ApiError::field(
            "name",
            format!("must be 1 to {NAME_MAX_CHARS} characters"),
        ));
    }
    Ok(name.to_owned())
}

/// The account's passkeys, each with its webauthn-rs credential.
async fn stored_passkeys(
    state: &AppState,
    account: &UserRecord,
) -> ApiResult<Vec<(PasskeyRecord, Passkey)>> {
    state
        .store
        .passkeys(&account.id)
        .await?
        .into_iter()
        .map(|record| from_json(&record.credential).map(|passkey| (record, passkey)))
        .collect()
}

/// Stores a ceremony's state under the hash of `token`.
async fn store_ceremony(
    state: &AppState,
    token: &SecretString,
    purpose: &str,
    account: Option<&UserRecord>,
    client: &ClientInfo,
    ceremony_state: &impl Serialize,
    now: i64,
) -> ApiResult<()> {
    let record = WebauthnCeremonyRecord {
        token_hash: sha256_hex(token.expose_secret()),
        purpose: purpose.to_owned(),
        user_id: account.map(|a| a.id.clone()),
        client_hash: mfa::client_hash(client),
        state: to_json(ceremony_state)?,
        created_at: now,
        expires_at: now.saturating_add(CEREMONY_TTL_SECS),
    };
    Ok(state.store.put_webauthn_ceremony(&record).await?)
}

/// Takes the live ceremony of `token` for `purpose`, started by this client.
async fn take_ceremony(
    state: &AppState,
    token: &SecretString,
    purpose: &str,
    client: &ClientInfo,
    now: i64,
) -> ApiResult<WebauthnCeremonyRecord> {
    let record = state
        .store
        .take_webauthn_ceremony(&sha256_hex(token.expose_secret()), purpose, now)
        .await?
        .ok_or_else(dead_ceremony)?;
    if !mfa::started_by(&record.client_hash, client) {
        return Err(dead_ceremony());
    }
    Ok(record)
}

fn dead_ceremony() -> ApiError {
    ApiError::field(
        "ceremony",
        "is unknown, finished or expired, or was started by another client: start again",
    )
}

/// A refused passkey sign-in: audited (with the account, when the passkey named one) and
/// answered like a wrong password, without counting toward a lockout (a passkey cannot be
/// guessed, and a locked account can still sign in with one).
async fn passkey_refused(
    state: &AppState,
    client: &ClientInfo,
    account: Option<&UserRecord>,
    now: i64,
) -> ApiError {
    let mut audit = AuditEvent::new("user.passkey_failed", None, client).at(now);
    if let Some(account) = account {
        audit = audit.target("user", &account.id);
    }
    if let Err(e) = state.store.append_audit(&[audit.build()]).await {
        return e.into();
    }
    ApiError::InvalidCredentials
}

fn ceremony_state<T: DeserializeOwned>(record: &WebauthnCeremonyRecord) -> ApiResult<T> {
    from_json(&record.state)
}

fn ceremony(token: SecretString, options: serde_json::Value, now: i64) -> Ceremony {
    Ceremony {
        token,
        options,
        expires_at: now.saturating_add(CEREMONY_TTL_SECS),
    }
}

fn json_value(options: &impl Serialize) -> ApiResult<serde_json::Value> {
    Ok(serde_json::to_value(options)
        .map_err(|e| anyhow::anyhow!("encoding passkey options: {e}"))?)
}

fn to_json(value: &impl Serialize) -> ApiResult<String> {
    Ok(serde_json::to_string(value).map_err(|e| anyhow::anyhow!("encoding passkey state: {e}"))?)
}

fn from_json<T: DeserializeOwned>(text: &str) -> ApiResult<T> {
    Ok(serde_json::from_str(text).map_err(|e| anyhow::anyhow!("reading passkey state: {e}"))?)
}

/// An audit entry about the account's own passkeys (still open for its target and data).
fn event(action: &str, account: &UserRecord, client: &ClientInfo, now: i64) -> AuditEvent {
    AuditEvent::new(action, Some(&account.id), client).at(now)
}
