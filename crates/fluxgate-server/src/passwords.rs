//! Password hashing with argon2id (OWASP's m=19 MiB, t=2, p=1) on a bounded pool of blocking
//! threads, so a burst of logins queues instead of stalling every other request.

use anyhow::anyhow;
use argon2::password_hash::{
    rand_core::OsRng, PasswordHash, PasswordHasher as _, PasswordVerifier, SaltString,
};
use argon2::Argon2;
use fluxgate_core::password::Password;
use fluxgate_core::secret::{ExposeSecret, SecretString};
use prometheus_client::metrics::counter::Counter;
use std::sync::Arc;
use tokio::sync::Semaphore;

/// Hashes and verifies passwords off the async executor.
#[derive(Clone)]
pub struct PasswordHasher {
    permits: Arc<Semaphore>,
    /// Verified against when the email is unknown, so both answers take the same time.
    dummy_hash: Arc<String>,
    /// Password verifications run (known email or not): `fluxgate_password_verifications_total`.
    verifications: Counter,
}

fn argon2() -> Argon2<'static> {
    // argon2's defaults are argon2id v1.3 with m=19456 KiB, t=2, p=1: OWASP's recommendation.
    Argon2::default()
}

impl PasswordHasher {
    /// A hasher running at most `parallelism` hashes at once.
    pub fn new(parallelism: usize) -> anyhow::Result<Self> {
        let salt = SaltString::generate(&mut OsRng);
        let dummy_hash = argon2()
            .hash_password(b"fluxgate-dummy-password", &salt)
            .map_err(|e| anyhow!("argon2: {e}"))?
            .to_string();
        Ok(Self {
            permits: Arc::new(Semaphore::new(parallelism.max(1))),
            dummy_hash: Arc::new(dummy_hash),
            verifications: Counter::default(),
        })
    }

    /// The PHC string of a new hash of `password`.
    pub async fn hash(&self, password: &Password) -> anyhow::Result<String> {
        let secret = SecretString::from(password.expose().to_owned());
        self.run(move || {
            let salt = SaltString::generate(&mut OsRng);
            argon2()
                .hash_password(secret.expose_secret().as_bytes(), &salt)
                .map(|h| h.to_string())
                .map_err(|e| anyhow!("argon2: {e}"))
        })
        .await
    }

    /// Checks `password` against `stored`; with no stored hash, spends the same time and fails.
    pub async fn verify(
        &self,
        password: SecretString,
        stored: Option<String>,
    ) -> anyhow::Result<bool> {
        // an account without a password (made by an OpenID provider) stores none: nothing matches
        let stored = stored.filter(|hash| !hash.is_empty());
        let known = stored.is_some();
        let hash = stored.unwrap_or_else(|| self.dummy_hash.as_ref().clone());
        self.verifications.inc();
        self.run(move || {
            let parsed = PasswordHash::new(&hash).map_err(|e| anyhow!("stored hash: {e}"))?;
            let ok = argon2()
                .verify_password(password.expose_secret().as_bytes(), &parsed)
                .is_ok();
            Ok(ok && known)
        })
        .await
    }

    /// How many verifications ran, for the metrics.
    pub fn verification_counter(&self) -> Counter {
        self.verifications.clone()
    }

    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
    ) -> anyhow::Result<T> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| anyhow!("hasher closed"))?;
        tokio::task::spawn_blocking(work)
            .await
            .map_err(|e| anyhow!("hash task: {e}"))?
    }
}
