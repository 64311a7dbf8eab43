//! Fluxgate's wire types: the bodies of requests and responses that the server writes and
//! reads, and the SDK reads and writes, defined once so the two cannot drift. With the
//! `openapi` feature each type also describes itself for the server's OpenAPI document.
#![warn(missing_docs)]

pub mod auth;
pub mod envelope;
pub mod flags;
pub mod keys;
pub mod orgs;
pub mod usage;
pub mod verify;
pub mod webhooks;

pub use auth::{
    Accepted, EmailVerified, EndedSessions, Identity, LoginAnswer, Me, Membership, MfaChallenge,
    OidcProvider, OrgSummary, Passkey, PasskeyAdded, PasskeyCeremony, PasswordReset, RecoveryCodes,
    SecondFactors, Session, SignedUp, Tokens, TotpEnrolment, User,
};
pub use envelope::{Data, ErrorBody, ErrorEnvelope, Health, Page};
pub use flags::{
    EntitlementOverride, EntitlementSource, Flag, FlagChanges, FlagDefinition, NewOverride,
};
pub use keys::{
    CreditRefill, Credits, CreditsChange, Entitlements, IssuedKey, Key, KeyChanges, KeySecret,
    NamedLimit, NewCredits, NewKey, QuotaUse, RateLimit, RotateKey,
};
pub use orgs::{AuditEntry, Invitation, Member, MemberRole, Org, Party, Role};
pub use usage::{
    Amount, TrackBatchResult, TrackEvent, TrackOutcome, TrackSummary, UsagePoint, UsageSeries,
    WidgetToken,
};
pub use verify::{LimitSpend, NamedLimitState, OrgRef, RateLimitState, Verdict, VerifyRequest};
pub use webhooks::{Delivery, NewWebhook, Webhook, WebhookChanges};

/// For `#[serde(default, deserialize_with = "fluxgate_proto::present")]` on an
/// `Option<Option<T>>` field: tells an absent field (`None`) from an explicit `null`
/// (`Some(None)`), for PATCH bodies where `null` clears a value.
pub fn present<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    Ok(Some(serde::Deserialize::deserialize(deserializer)?))
}
