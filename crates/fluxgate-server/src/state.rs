//! The application state every handler shares, built once at start.

use crate::config::Config;
use crate::invalidation::InvalidationBus;
use crate::keycache::KeyCache;
use crate::limiter::Limiter;
use crate::mail::Mailer;
use crate::metrics::Metrics;
use crate::passwords::PasswordHasher;
use crate::revocation::SessionRevocations;
use crate::tokens::{Keyring, RefreshTokenDeriver};
use crate::usage_recorder::UsageRecorder;
use fluxgate_store::Store;
use std::ops::Deref;
use std::sync::Arc;

/// Cheap to clone; everything lives behind one `Arc`.
#[derive(Clone)]
pub struct AppState(Arc<AppInner>);

/// What [`AppState`] holds.
pub struct AppInner {
    /// The validated configuration.
    pub config: Config,
    /// The database.
    pub store: Arc<dyn Store>,
    /// JWT signing and verification keys.
    pub keyring: Arc<Keyring>,
    /// Successors of refresh tokens.
    pub refresh: RefreshTokenDeriver,
    /// argon2id on a bounded pool.
    pub passwords: PasswordHasher,
    /// Outgoing mail.
    pub mailer: Mailer,
    /// Revoked sessions.
    pub revocations: Arc<SessionRevocations>,
    /// Prometheus metrics.
    pub metrics: Arc<Metrics>,
    /// Rate limits (memory, or Redis when configured).
    pub limiter: Arc<Limiter>,
    /// What verify answers with, by key hash.
    pub keys: Arc<KeyCache>,
    /// Who each session's user is, for `GET /auth/me`.
    pub session_views: Arc<crate::session_views::SessionViews>,
    /// Tells every node's key cache and session views about changes.
    pub invalidation: Arc<InvalidationBus>,
    /// Monthly usage counters and keys' last use, written in batches.
    pub usage: Arc<UsageRecorder>,
    /// Seals webhook endpoints' signing secrets.
    pub webhook_sealer: crate::secrets::Sealer,
    /// The feature flags as this node knows them.
    pub flags: Arc<crate::flagbook::FlagBook>,
    /// Counts the usage credits verifies spend (in Redis or the database).
    pub credits: crate::services::credits::CreditLedger,
    /// Seals TOTP secrets in the database.
    pub totp_sealer: crate::secrets::Sealer,
    /// Seals the PKCE verifiers of OpenID authorisations in progress.
    pub flow_sealer: crate::secrets::Sealer,
    /// The OpenID providers people sign in with.
    pub oidc: crate::services::oidc::Providers,
    /// This instance as a WebAuthn relying party (passkeys).
    pub relying_party: crate::services::passkeys::RelyingParty,
    /// Signs and checks usage-widget tokens.
    pub widget_tokens: crate::widget_tokens::WidgetTokens,
}

impl AppState {
    /// Wraps the parts.
    pub fn new(inner: AppInner) -> Self {
        Self(Arc::new(inner))
    }
}

impl Deref for AppState {
    type Target = AppInner;
    fn deref(&self) -> &AppInner {
        &self.0
    }
}
