//! Accounts and sessions on the wire: users, the token pair, who am I, sessions.

use serde::{Deserialize, Serialize};

/// A user account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct User {
    /// `usr_…`
    pub id: String,
    /// Their email address.
    pub email: String,
    /// Their username, on instances that use them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Their document number, on instances that use them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub document: Option<String>,
    /// Their display name.
    pub name: Option<String>,
    /// Whether the address is verified.
    pub email_verified: bool,
    /// RFC 3339.
    pub created_at: String,
}

/// An org as signup shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct OrgSummary {
    /// `org_…`
    pub id: String,
    /// Its name.
    pub name: String,
    /// Its plan.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<String>,
    /// The user's role in it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// Whether it is the operator org.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operator: Option<bool>,
}

/// The answer to a signup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SignedUp {
    /// The new account.
    pub user: User,
    /// The org it owns, when one was asked for.
    pub organization: Option<OrgSummary>,
}

/// A token pair (also set as HttpOnly cookies).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Tokens {
    /// The EdDSA access token (JWT).
    pub access_token: String,
    /// The opaque refresh token (single use).
    pub refresh_token: String,
    /// `Bearer`.
    pub token_type: String,
    /// Seconds until the access token expires.
    pub expires_in: u64,
}

/// One membership of the current user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Membership {
    /// The org.
    pub org: OrgSummary,
    /// The role in it.
    pub role: String,
    /// RFC 3339.
    pub joined_at: String,
}

/// Who am I: the user, their memberships, the active org and what they may do there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Me {
    /// The account.
    pub user: User,
    /// Every org they belong to.
    pub memberships: Vec<Membership>,
    /// The org this session acts in.
    pub active_org: Option<OrgSummary>,
    /// Effective permissions in the active org.
    pub permissions: Vec<String>,
    /// `ses_…`
    pub session_id: String,
    /// How this session signed in (RFC 8176 `amr`: `pwd`, plus `otp`/`rc` and `mfa` after a
    /// second factor).
    #[serde(default)]
    pub session_amr: Vec<String>,
    /// The second factors the account has.
    #[serde(default)]
    pub second_factors: SecondFactors,
    /// Its identities at OpenID providers, which sign it in.
    #[serde(default)]
    pub identities: Vec<Identity>,
}

/// The second factors of an account.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SecondFactors {
    /// Whether a confirmed TOTP factor is required at login.
    pub totp: bool,
    /// The account's passkeys (each signs in alone, or completes a password login).
    #[serde(default)]
    pub passkeys: Vec<Passkey>,
    /// Unused recovery codes.
    pub recovery_codes_left: u32,
}

/// One of a user's passkeys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Passkey {
    /// `psk_…`
    pub id: String,
    /// The user's name for it.
    pub name: String,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339, of its last sign-in.
    pub last_used_at: Option<String>,
}

/// A WebAuthn ceremony the server has started: hand `options` to the browser
/// (`navigator.credentials.create` or `.get`, after decoding its base64url fields), then send
/// the credential it answers back with `ceremony`, from the same client, before `expires_at`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PasskeyCeremony {
    /// The ceremony's token (single use; the server keeps its state).
    pub ceremony: String,
    /// WebAuthn options: `{"publicKey": …}` as `CredentialCreationOptions` or
    /// `CredentialRequestOptions`, binary fields in base64url.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub options: serde_json::Value,
    /// RFC 3339.
    pub expires_at: String,
}

/// A passkey just registered, and — when it is the account's first second factor — the
/// recovery codes, shown this once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PasskeyAdded {
    /// The passkey.
    pub passkey: Passkey,
    /// Ten single-use codes, when the account had no second factor before; otherwise empty.
    pub recovery_codes: Vec<String>,
}

/// What `POST /auth/login` answers when the account has a second factor: no tokens yet, but a
/// challenge to complete at `POST /auth/mfa/verify` from the same client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MfaChallenge {
    /// Always true: tell this answer from a token pair.
    pub mfa_required: bool,
    /// The challenge (single use, short-lived, bound to this client).
    pub mfa_token: String,
    /// The methods that complete it: `totp`, `passkey`, `recovery_code`.
    pub methods: Vec<String>,
    /// RFC 3339.
    pub expires_at: String,
}

/// What `POST /auth/login` answers: tokens, or a challenge for the second factor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(untagged)]
pub enum LoginAnswer {
    /// Signed in.
    Tokens(Tokens),
    /// A second factor must follow.
    Challenge(MfaChallenge),
}

/// A TOTP factor being enrolled: hand `otpauth_uri` (or the QR code, or the secret typed by
/// hand) to an authenticator app, then confirm with its first code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TotpEnrolment {
    /// The secret in base32.
    pub secret: String,
    /// `otpauth://totp/…`
    pub otpauth_uri: String,
    /// The URI as a QR code, an SVG document.
    pub qr_svg: String,
}

/// Recovery codes, shown this once: each signs in once in place of a TOTP code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RecoveryCodes {
    /// The codes (`xxxxx-xxxxx`).
    pub recovery_codes: Vec<String>,
}

/// How many sessions were ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EndedSessions {
    /// Sessions ended by the call.
    pub ended: u64,
}

/// A live session of the current user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Session {
    /// `ses_…`
    pub id: String,
    /// The user agent that started it.
    pub device: Option<String>,
    /// The address it started from.
    pub ip: Option<String>,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub last_used_at: String,
    /// RFC 3339.
    pub expires_at: String,
    /// Whether it is the session asking.
    pub current: bool,
}

/// `{"email_verified": true}`
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EmailVerified {
    /// Always true.
    pub email_verified: bool,
}

/// `{"password_reset": true}`
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PasswordReset {
    /// Always true.
    pub password_reset: bool,
}

/// `{"accepted": true}`: the request is taken; its outcome is not told.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Accepted {
    /// Always true.
    pub accepted: bool,
}

/// An OpenID provider people can sign in with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct OidcProvider {
    /// Its id in the configuration (`[auth.oidc.<id>]`).
    pub id: String,
    /// What the buttons call it.
    pub name: String,
    /// Where a browser starts signing in with it (a form post from the portal's login page).
    pub sign_in_path: String,
}

/// An identity at an OpenID provider, linked to the account: it signs the account in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Identity {
    /// `idn_…`
    pub id: String,
    /// The provider's id.
    pub provider: String,
    /// The email address the provider gave.
    pub email: Option<String>,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339, of its last sign-in.
    pub last_used_at: Option<String>,
}
