//! Rows as the storage layer reads and writes them.

use fluxgate_core::apikey::Environment;
use fluxgate_core::ids::{
    DeliveryId, EventId, IdentityId, InvitationId, KeyId, OrgId, PasskeyId, RoleId, SessionId,
    UserId, WebhookId,
};
use fluxgate_core::refresh::SpentReason;
use fluxgate_core::stored::{ActorKind, EndReason};
use serde_json::Value;

/// A user account.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct UserRecord {
    /// `usr_…`
    pub id: UserId,
    /// Normalised email address.
    pub email: String,
    /// Normalised username, when the instance uses them and the user has one.
    pub username: Option<String>,
    /// Normalised document number, when the instance uses them and the user has one.
    pub document: Option<String>,
    /// Display name.
    pub name: Option<String>,
    /// argon2id PHC string.
    pub password_hash: String,
    /// When the email was verified.
    pub email_verified_at: Option<i64>,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds.
    pub updated_at: i64,
}

/// An organization.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct OrgRecord {
    /// `org_…`
    pub id: OrgId,
    /// Display name.
    pub name: String,
    /// The product's own id for this customer.
    pub external_id: Option<String>,
    /// Plan name from the configuration.
    pub plan: String,
    /// True for the one operator org.
    pub is_operator: bool,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds.
    pub updated_at: i64,
    /// Set when the org was deleted.
    pub deleted_at: Option<i64>,
    /// Set while an operator has it disabled (its keys do not verify).
    pub disabled_at: Option<i64>,
    /// Whether its members must have signed in with a second factor to act in it.
    pub require_mfa: bool,
    /// What a reported leak of one of its keys does: `revoke` or `flag`.
    pub leaked_key_action: String,
}

/// A user's membership in an org, with the org's name.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct MembershipRecord {
    /// `org_…`
    pub org_id: OrgId,
    /// The org's name.
    pub org_name: String,
    /// Whether the org is the operator org.
    pub is_operator: bool,
    /// `usr_…`
    pub user_id: UserId,
    /// Built-in role name or custom role name.
    pub role: String,
    /// Unix seconds.
    pub created_at: i64,
}

/// A login session.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SessionRecord {
    /// `ses_…`
    pub id: SessionId,
    /// `usr_…`
    pub user_id: UserId,
    /// The org the session's tokens act in.
    pub active_org_id: Option<OrgId>,
    /// The client's user agent at login.
    pub user_agent: Option<String>,
    /// The client's IP at login.
    pub ip: Option<String>,
    /// Unix seconds.
    pub created_at: i64,
    /// Last login or refresh (Unix seconds).
    pub last_used_at: i64,
    /// When the newest refresh token expires.
    pub expires_at: i64,
    /// When the session was revoked.
    pub revoked_at: Option<i64>,
    /// Why it ended.
    pub revoked_reason: Option<EndReason>,
    /// When it last proved its password, if since its creation.
    pub authenticated_at: Option<i64>,
    /// How it signed in (RFC 8176 `amr` values, space-separated: `pwd`, `pwd otp mfa`, …).
    pub amr: String,
}

/// A user's TOTP factor: pending until a first code confirms it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TotpFactorRecord {
    /// `usr_…`
    pub user_id: UserId,
    /// The secret, sealed under the instance secret.
    pub secret_sealed: String,
    /// Unix seconds.
    pub created_at: i64,
    /// When a first code confirmed it; None while pending.
    pub confirmed_at: Option<i64>,
    /// The last TOTP step accepted (a step is accepted once).
    pub last_step: Option<i64>,
}

/// A sign-in between its password and its second factor (stored by hash).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct MfaChallengeRecord {
    /// SHA-256 of the challenge token.
    pub token_hash: String,
    /// `usr_…`
    pub user_id: UserId,
    /// SHA-256 of the client that logged in (address and user agent): only it may complete.
    pub client_hash: String,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds.
    pub expires_at: i64,
    /// Codes tried so far.
    pub attempts: i64,
    /// When it completed.
    pub spent_at: Option<i64>,
    /// How the first step signed in (`pwd`, or `fed` through an OpenID provider).
    pub first_factor: String,
}

/// A user's passkey (a WebAuthn credential).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct PasskeyRecord {
    /// `psk_…`
    pub id: PasskeyId,
    /// `usr_…`
    pub user_id: UserId,
    /// The credential's id (base64url), unique across the instance.
    pub credential_id: String,
    /// The user's name for it.
    pub name: String,
    /// The credential as webauthn-rs keeps it (public key, counter; JSON, nothing secret).
    pub credential: String,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds of its last sign-in.
    pub last_used_at: Option<i64>,
}

/// A user's identity at an OpenID provider, which signs them in.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct IdentityRecord {
    /// `idn_…`
    pub id: IdentityId,
    /// `usr_…`
    pub user_id: UserId,
    /// The provider's id in the configuration.
    pub provider: String,
    /// The provider's id for the person (`sub`), unique per provider.
    pub subject: String,
    /// The email address the provider gave, for display.
    pub email: Option<String>,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds of its last sign-in.
    pub last_used_at: Option<i64>,
}

/// An authorisation at an OpenID provider in progress, by the hash of its `state`.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct OidcFlowRecord {
    /// SHA-256 of the `state` sent to the provider (the browser holds it in a cookie too).
    pub state_hash: String,
    /// The provider's id in the configuration.
    pub provider: String,
    /// The signed-in user linking an identity; None for a sign-in.
    pub user_id: Option<UserId>,
    /// The nonce the ID token must carry.
    pub nonce: String,
    /// The PKCE verifier, sealed under the instance secret.
    pub pkce_verifier: String,
    /// The local path to return to.
    pub next: String,
    /// What the sign-in ends in: `portal` (its session's cookies) or `api` (the API's).
    pub ends_in: String,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds.
    pub expires_at: i64,
}

/// A WebAuthn ceremony in progress: the server's half of its state, by the hash of the token
/// the client holds.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct WebauthnCeremonyRecord {
    /// SHA-256 of the ceremony's token.
    pub token_hash: String,
    /// What it is for (`register`, `sign_in`, `second_factor`).
    pub purpose: String,
    /// Whose (None for a passkey sign-in, which learns the user from the passkey).
    pub user_id: Option<UserId>,
    /// SHA-256 of the client that started it: only it may finish.
    pub client_hash: String,
    /// webauthn-rs's ceremony state (JSON).
    pub state: String,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds.
    pub expires_at: i64,
}

/// One refresh token of a session (stored by hash).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct RefreshTokenRecord {
    /// SHA-256 of the token.
    pub token_hash: String,
    /// `ses_…`
    pub session_id: SessionId,
    /// 0 for the token issued at login, +1 per rotation.
    pub generation: i64,
    /// Unix seconds.
    pub issued_at: i64,
    /// Unix seconds.
    pub expires_at: i64,
    /// When it was exchanged (or superseded).
    pub spent_at: Option<i64>,
    /// Rotated, or superseded by a switch of org.
    pub spent_reason: Option<SpentReason>,
}

/// A single-use token sent by mail.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct OneTimeTokenRecord {
    /// SHA-256 of the token.
    pub token_hash: String,
    /// See the `PURPOSE_*` constants.
    pub purpose: String,
    /// `usr_…`
    pub user_id: UserId,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds.
    pub expires_at: i64,
    /// When it was used.
    pub used_at: Option<i64>,
}

/// One-time token purpose: verify an email address.
pub const PURPOSE_VERIFY_EMAIL: &str = "verify_email";
/// One-time token purpose: reset a password.
pub const PURPOSE_RESET_PASSWORD: &str = "reset_password";

/// A JWT signing key.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SigningKeyRecord {
    /// Key id (the JWT `kid`).
    pub kid: String,
    /// `EdDSA`.
    pub algorithm: String,
    /// Base64url public key.
    pub public_key: String,
    /// Nonce and ciphertext of the private key, base64url.
    pub private_key_encrypted: String,
    /// Unix seconds.
    pub created_at: i64,
    /// When it stopped signing.
    pub retired_at: Option<i64>,
}

/// Who did something and from where; what every audit entry carries.
#[derive(Debug, Clone, Default)]
pub struct AuditMeta {
    /// Client IP.
    pub ip: Option<String>,
    /// Client user agent.
    pub user_agent: Option<String>,
}

/// One audit log entry.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AuditRecord {
    /// `evt_…`
    pub id: EventId,
    /// The org the event belongs to, if any.
    pub org_id: Option<OrgId>,
    /// Who acted.
    pub actor_type: ActorKind,
    /// The actor's id.
    pub actor_id: Option<String>,
    /// Dotted action name, e.g. `user.login_failed`.
    pub action: String,
    /// Kind of the target, e.g. `session`.
    pub target_type: Option<String>,
    /// The target's id.
    pub target_id: Option<String>,
    /// Client IP.
    pub ip: Option<String>,
    /// Client user agent.
    pub user_agent: Option<String>,
    /// Extra details as JSON text (never secrets).
    pub data: String,
    /// Unix seconds.
    pub created_at: i64,
}

impl AuditRecord {
    /// An entry for something the system itself did to a target (no actor, no request).
    pub fn by_system(
        org_id: Option<OrgId>,
        action: &str,
        target: Option<(&str, String)>,
        now: i64,
    ) -> Self {
        let (target_type, target_id) =
            target.map_or((None, None), |(kind, id)| (Some(kind.to_owned()), Some(id)));
        Self {
            id: EventId::generate(),
            org_id,
            actor_type: ActorKind::System,
            actor_id: None,
            action: action.to_owned(),
            target_type,
            target_id,
            ip: None,
            user_agent: None,
            data: "{}".into(),
            created_at: now,
        }
    }

    /// The details parsed back into JSON.
    pub fn data_json(&self) -> Value {
        serde_json::from_str(&self.data).unwrap_or(Value::Null)
    }
}

/// Which audit entries to read.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    /// Only this org's.
    pub org_id: Option<OrgId>,
    /// Only this actor's.
    pub actor_id: Option<String>,
    /// Only this action.
    pub action: Option<String>,
    /// At or after (Unix seconds).
    pub from: Option<i64>,
    /// Before (Unix seconds).
    pub to: Option<i64>,
    /// Entries with ids below this (cursor pagination, newest first).
    pub before_id: Option<String>,
    /// How many.
    pub limit: i64,
}

/// A member of an org, with the user's email and name.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct MemberRecord {
    /// `usr_…`
    pub user_id: UserId,
    /// The user's email.
    pub email: String,
    /// The user's display name.
    pub name: Option<String>,
    /// Built-in or custom role name.
    pub role: String,
    /// When they joined (Unix seconds).
    pub created_at: i64,
    /// Whether they have a confirmed second factor.
    pub second_factor: bool,
}

/// A custom role of an org.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct RoleRecord {
    /// `rol_…`
    pub id: RoleId,
    /// `org_…`
    pub org_id: OrgId,
    /// Unique within the org; never a built-in role's name.
    pub name: String,
    /// What the role is for.
    pub description: Option<String>,
    /// JSON array of permission patterns.
    pub permissions: String,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds.
    pub updated_at: i64,
}

impl RoleRecord {
    /// The permission patterns, parsed from their JSON text.
    pub fn permission_list(&self) -> Vec<String> {
        serde_json::from_str(&self.permissions).unwrap_or_default()
    }
}

/// An invitation to join an org.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct InvitationRecord {
    /// `inv_…`
    pub id: InvitationId,
    /// `org_…`
    pub org_id: OrgId,
    /// The invited (normalised) address.
    pub email: String,
    /// The role granted on acceptance.
    pub role: String,
    /// SHA-256 of the mailed token.
    pub token_hash: String,
    /// The inviting user.
    pub invited_by: Option<UserId>,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds.
    pub expires_at: i64,
    /// When it was accepted.
    pub accepted_at: Option<i64>,
    /// Who accepted it.
    pub accepted_by: Option<UserId>,
    /// When it was cancelled.
    pub canceled_at: Option<i64>,
}

/// What became of a change to a membership.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberChange {
    /// Done.
    Done,
    /// No such member.
    NotFound,
    /// Refused: it would leave the org without an owner.
    LastOwner,
}

/// What became of deleting a custom role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoleDeletion {
    /// Deleted.
    Deleted,
    /// No such role in that org.
    NotFound,
    /// Refused: members or open invitations still hold it.
    InUse,
}

/// What became of accepting an invitation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acceptance {
    /// The user is now a member.
    Joined,
    /// The invitation was accepted, cancelled or expired meanwhile.
    Gone,
    /// The user was a member already.
    AlreadyMember,
}

/// Changes to an org's editable fields; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct OrgChanges {
    /// A new name.
    pub name: Option<String>,
    /// A new external id (`Some(None)` clears it).
    pub external_id: Option<Option<String>>,
    /// Whether members must sign in with a second factor.
    pub require_mfa: Option<bool>,
    /// What a reported leak does: `revoke` or `flag`.
    pub leaked_key_action: Option<String>,
}

/// An API key (its secrets are stored apart, as hashes).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ApiKeyRecord {
    /// `key_…`
    pub id: KeyId,
    /// `org_…`
    pub org_id: OrgId,
    /// What the key is for.
    pub name: String,
    /// Production or testing.
    pub environment: Environment,
    /// The displayable beginning of the current secret.
    pub start: String,
    /// JSON array of scopes.
    pub scopes: String,
    /// JSON object of the owner's metadata.
    pub metadata: String,
    /// The key's own rate limit (calls per window), if any.
    pub rate_limit: Option<i64>,
    /// The window of the key's own rate limit, in seconds.
    pub rate_window_seconds: Option<i64>,
    /// Whether the key's own limit is decided exactly across nodes (no leases).
    pub rate_exact: bool,
    /// The user or key that created it.
    pub created_by: Option<String>,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds.
    pub updated_at: i64,
    /// When it stops working.
    pub expires_at: Option<i64>,
    /// When it was revoked.
    pub revoked_at: Option<i64>,
    /// Last verified or used (updated in batches).
    pub last_used_at: Option<i64>,
    /// Usage credits left in the refill period that started at `credits_refilled_at` (None: the
    /// key has no credits).
    pub credits_remaining: Option<i64>,
    /// What a refill sets the credits to.
    pub credits_refill_amount: Option<i64>,
    /// `daily` or `monthly`.
    pub credits_refill_interval: Option<String>,
    /// The day of the month of a monthly refill.
    pub credits_refill_day: Option<i64>,
    /// When the period the remaining credits belong to started.
    pub credits_refilled_at: Option<i64>,
    /// JSON array of named limits: `{name, limit, window_seconds}`.
    pub named_limits: String,
    /// JSON array of the CIDR ranges the key may be used from (empty: any).
    pub ip_allowlist: String,
    /// When a secret scanner reported it found in public (and its org flags rather than
    /// revokes).
    pub leaked_at: Option<i64>,
}

impl ApiKeyRecord {
    /// A new live key without scopes, metadata, limit or expiry, made by no user (seeding and
    /// tests that write keys behind the API's back).
    pub fn unscoped(org_id: OrgId, name: String, start: String, now: i64) -> Self {
        Self {
            id: KeyId::generate(),
            org_id,
            name,
            environment: Environment::Live,
            start,
            scopes: "[]".into(),
            metadata: "{}".into(),
            rate_limit: None,
            rate_window_seconds: None,
            rate_exact: false,
            created_by: None,
            created_at: now,
            updated_at: now,
            expires_at: None,
            revoked_at: None,
            last_used_at: None,
            credits_remaining: None,
            credits_refill_amount: None,
            credits_refill_interval: None,
            credits_refill_day: None,
            credits_refilled_at: None,
            named_limits: "[]".into(),
            ip_allowlist: "[]".into(),
            leaked_at: None,
        }
    }

    /// The scopes, parsed from their JSON text.
    pub fn scope_list(&self) -> Vec<String> {
        serde_json::from_str(&self.scopes).unwrap_or_default()
    }

    /// The metadata, parsed from its JSON text.
    pub fn metadata_json(&self) -> Value {
        serde_json::from_str(&self.metadata).unwrap_or(Value::Null)
    }

    /// `active`, `revoked` or `expired` at `now`.
    pub fn status(&self, now: i64) -> &'static str {
        if self.revoked_at.is_some() {
            "revoked"
        } else if self.expires_at.is_some_and(|e| e <= now) {
            "expired"
        } else {
            "active"
        }
    }
}

/// How a change to a key changes its remaining credits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CreditsUpdate {
    /// Left as they are.
    Keep,
    /// Set to this many, for the refill period starting at `period_start`.
    Set {
        /// The new count.
        remaining: i64,
        /// The current refill period's start (now, for a key without refill).
        period_start: i64,
    },
    /// Topped up by this many (after any refill due by `period_start`).
    Add {
        /// Added to the count.
        credits: i64,
        /// The current refill period's start (now, for a key without refill).
        period_start: i64,
    },
    /// No more credits: the key is not limited by them.
    Clear,
    /// The count Redis holds after a change there: written unless a later one is stored.
    Mirror(CreditCount),
}

/// A key's credit count as Redis holds it: the `seq`-th change Redis made to it. Counts reach
/// the database from many nodes in any order; a count is written only over an older one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CreditCount {
    /// How many are left.
    pub remaining: i64,
    /// The start of the refill period the count belongs to.
    pub refilled_at: i64,
    /// How many changes Redis had made to the count.
    pub seq: i64,
}

/// One key's credits to spend: `cost`, after any refill due by `period_start`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreditSpendRequest {
    /// The key.
    pub key_id: KeyId,
    /// How many to spend.
    pub cost: i64,
    /// The start of the key's current refill period (now, for a key without refill).
    pub period_start: i64,
}

/// What spending a key's credits found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CreditSpend {
    /// Spent; this many are left.
    Spent(i64),
    /// Too few left (this many): nothing was spent.
    Short(i64),
    /// The key has no credits (any more): nothing to spend.
    Unlimited,
}

/// A key found by the hash of a presented secret, with its org and that secret's retirement.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct KeyLookup {
    /// The key.
    #[sqlx(flatten)]
    pub key: ApiKeyRecord,
    /// The org's name.
    pub org_name: String,
    /// The org's external id.
    pub org_external_id: Option<String>,
    /// The org's plan.
    pub org_plan: String,
    /// Whether the org is the operator org.
    pub org_is_operator: bool,
    /// When the org was deleted.
    pub org_deleted_at: Option<i64>,
    /// Since when an operator has the org disabled.
    pub org_disabled_at: Option<i64>,
    /// When the presented secret stops working (rotated out), if it does.
    pub secret_retires_at: Option<i64>,
    /// What a reported leak does in the org: `revoke` or `flag`.
    pub org_leaked_key_action: String,
    /// Whether the org has entitlement overrides (ended ones too): read them only then.
    pub org_has_overrides: bool,
}

/// One secret of a key (never its hash): the current one, or one being rotated out.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct KeySecretRecord {
    /// The secret's first characters, as shown to its owner.
    pub start: String,
    /// When it was issued.
    pub created_at: i64,
    /// When it stops (or stopped) working, if it was rotated out.
    pub retires_at: Option<i64>,
    /// When it was last presented, to a minute; recorded only while it is being rotated out.
    pub last_used_at: Option<i64>,
}

/// Which of an org's keys a listing wants.
#[derive(Debug, Clone, Copy)]
pub struct KeyQuery<'a> {
    /// Only those of this status at `now`.
    pub status: Option<KeyStatus>,
    /// Only those whose name or start contains this (case-insensitive).
    pub search: Option<&'a str>,
    /// The time statuses are judged at.
    pub now: i64,
    /// Ids after this cursor.
    pub after: Option<&'a str>,
    /// How many.
    pub limit: i64,
}

/// Which keys a listing wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyStatus {
    /// Neither revoked nor expired.
    Active,
    /// Revoked.
    Revoked,
    /// Past `expires_at`, not revoked.
    Expired,
}

/// Metered quantity to add to an org's monthly counter.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UsageIncrement {
    /// `org_…`
    pub org_id: OrgId,
    /// The meter, e.g. `requests`.
    pub meter: String,
    /// `YYYY-MM` (UTC).
    pub month: String,
    /// How much to add.
    pub quantity: i64,
}

/// A key's new secret, and when its other secrets stop working.
#[derive(Debug, Clone)]
pub struct Rotation {
    /// SHA-256 of the new secret.
    pub secret_hash: String,
    /// Its displayable beginning.
    pub start: String,
    /// When the previous secrets stop working.
    pub retire_at: i64,
    /// Unix seconds.
    pub now: i64,
}

/// Calls counted for one org, key, endpoint, outcome and minute.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CallCount {
    /// `org_…`
    pub org_id: OrgId,
    /// `key_…`
    pub key_id: KeyId,
    /// `METHOD /route/template` for API calls, the caller's `endpoint` for verifies.
    pub endpoint: String,
    /// The HTTP status, or the verify code.
    pub outcome: String,
    /// Start of the minute (Unix seconds).
    pub minute: i64,
    /// How many.
    pub count: i64,
}

/// Which calls to sum, and in buckets of what size.
#[derive(Debug, Clone)]
pub struct CallFilter {
    /// Only this org's (None: every org).
    pub org_id: Option<OrgId>,
    /// Only this key's.
    pub key_id: Option<KeyId>,
    /// Only this endpoint's.
    pub endpoint: Option<String>,
    /// From (Unix seconds, inclusive).
    pub from: i64,
    /// To (Unix seconds, exclusive).
    pub to: i64,
    /// Bucket size in seconds (60, 3600 or 86400).
    pub bucket: i64,
    /// Hourly/daily roll-ups are complete before this time (Unix seconds); later buckets are
    /// summed from minute rows.
    pub rolled_until: i64,
}

/// One run of the usage roll-up: which hours and days to recompute, and what to delete.
#[derive(Debug, Clone)]
pub struct RollUp {
    /// First hour to recompute (Unix seconds, on an hour).
    pub hours_from: i64,
    /// End of the hours to recompute (exclusive; the current hour's start).
    pub hours_to: i64,
    /// First day to recompute.
    pub days_from: i64,
    /// End of the days to recompute (exclusive; the current day's start).
    pub days_to: i64,
    /// Delete minute rows before this time.
    pub keep_minutes_after: Option<i64>,
    /// Delete hourly rows before this time.
    pub keep_hours_after: Option<i64>,
    /// Delete daily rows before this time.
    pub keep_days_after: Option<i64>,
    /// When this roll-up runs (Unix seconds).
    pub now: i64,
    /// Skip (another node did it) if a roll-up ran within this many seconds before `now`;
    /// `None` runs regardless.
    pub unless_ran_within: Option<i64>,
}

/// Where the cluster's roll-ups have got to, after a call to roll up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RolledUp {
    /// Whether this call rolled up (false: another node had, recently).
    pub ran: bool,
    /// Hourly rows are complete before this time.
    pub hours_to: i64,
    /// Daily rows are complete before this time.
    pub days_to: i64,
}

/// One metered usage event.
#[derive(Debug, Clone)]
pub struct UsageEvent {
    /// `evt_…`
    pub id: EventId,
    /// `org_…`
    pub org_id: OrgId,
    /// The meter, e.g. `tokens`.
    pub meter: String,
    /// How much (positive).
    pub quantity: f64,
    /// When it happened (Unix seconds).
    pub occurred_at: i64,
    /// Counted once per org when given.
    pub idempotency_key: Option<String>,
    /// When it was recorded (Unix seconds).
    pub created_at: i64,
}

/// An org's webhook endpoint.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct WebhookEndpointRecord {
    /// `whk_…`
    pub id: WebhookId,
    /// `org_…`
    pub org_id: OrgId,
    /// Where events are posted.
    pub url: String,
    /// JSON array of the event types it receives (`["*"]`: all).
    pub events: String,
    /// A note for people.
    pub description: String,
    /// The signing secret, sealed with the instance secret.
    pub secret_sealed: String,
    /// Whether events are sent to it.
    pub enabled: bool,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds.
    pub updated_at: i64,
    /// When it was deleted.
    pub deleted_at: Option<i64>,
    /// An operator's endpoint for every org's events.
    pub all_orgs: bool,
}

/// One delivery of an event to an endpoint, as its log shows it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DeliveryRecord {
    /// `whd_…`
    pub id: DeliveryId,
    /// The endpoint.
    pub endpoint_id: WebhookId,
    /// The event (`evt_…`, the audit entry's id).
    pub event_id: String,
    /// The event's type, e.g. `key.revoked`.
    pub event_type: String,
    /// `pending`, `delivered` or `failed` (gave up).
    pub status: String,
    /// Attempts made.
    pub attempts: i64,
    /// When the next attempt is due (pending only).
    pub next_attempt_at: i64,
    /// The HTTP status of the last attempt, if it got one.
    pub last_status: Option<i64>,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
    /// Unix seconds.
    pub created_at: i64,
    /// When the endpoint accepted it.
    pub delivered_at: Option<i64>,
}

/// A delivery claimed to be attempted now, with what it takes to send it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DueDelivery {
    /// `whd_…`
    pub id: DeliveryId,
    /// The endpoint.
    pub endpoint_id: WebhookId,
    /// Its URL.
    pub url: String,
    /// Its sealed signing secret.
    pub secret_sealed: String,
    /// The event's id.
    pub event_id: String,
    /// The event's type.
    pub event_type: String,
    /// The JSON body to post.
    pub payload: String,
    /// Attempts made before this one.
    pub attempts: i64,
    /// When the first attempt was due.
    pub created_at: i64,
}

/// How an attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttemptOutcome {
    /// The endpoint answered 2xx.
    Delivered {
        /// Its status.
        status: i64,
        /// When.
        at: i64,
    },
    /// It did not; try again at `retry_at`, or give up when None.
    Failed {
        /// Its status, when it answered.
        status: Option<i64>,
        /// Why (never a secret).
        error: String,
        /// The next attempt, or None to give up.
        retry_at: Option<i64>,
    },
}

/// A feature flag as stored.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct FlagRecord {
    /// Its name (also the entitlement it gives).
    pub name: String,
    /// A note for people.
    pub description: String,
    /// False: killed (off for every org).
    pub enabled: bool,
    /// The variant targeted orgs get (`None`: a boolean flag).
    pub variant: Option<String>,
    /// The variant the others get.
    pub default_variant: Option<String>,
    /// JSON array of the org ids it is on for.
    pub orgs: String,
    /// JSON array of the plans its rollout is among (empty: all).
    pub plans: String,
    /// The rollout share in percent, 0–100.
    pub rollout_percent: i64,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds.
    pub updated_at: i64,
}

/// An operator's override of one entitlement for one org.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct OverrideRecord {
    /// `org_…`
    pub org_id: OrgId,
    /// The entitlement.
    pub entitlement: String,
    /// `grant` or `deny`.
    pub effect: String,
    /// When it ends by itself.
    pub expires_at: Option<i64>,
    /// Why.
    pub note: String,
    /// Who set it (`usr_…`, or a key's id).
    pub created_by: Option<String>,
    /// Unix seconds.
    pub created_at: i64,
}
