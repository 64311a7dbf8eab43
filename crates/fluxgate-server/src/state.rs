//! The application state every handler shares, built once at start.

use crate::config::Config;
use crate::mail::Mailer;
use crate::metrics::Metrics;
use crate::passwords::PasswordHasher;
use crate::ratelimit::Limiter;
use crate::revocation::SessionRevocations;
use crate::tokens::{Keyring, RefreshTokenDeriver};
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
