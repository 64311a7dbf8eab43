//! Which sessions are revoked, known to every node within a second without a database round
//! trip per request: each node polls for recent revocations twice a second and keeps them in
//! memory for as long as an access token could outlive them.

use fluxgate_store::{SessionId, Store};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// How often each node asks the database for new revocations.
pub const POLL_EVERY: Duration = Duration::from_millis(500);
/// How far back each poll looks, so revocations committed late are still seen.
const OVERLAP_SECS: i64 = 5;

/// The revoked sessions whose access tokens may still be unexpired.
pub struct SessionRevocations {
    revoked: RwLock<HashMap<SessionId, i64>>,
    keep_for_secs: i64,
    poke: Notify,
}

impl SessionRevocations {
    /// Remembers revocations for the access-token lifetime (plus a margin).
    pub fn new(access_ttl: Duration) -> Self {
        Self {
            revoked: RwLock::new(HashMap::new()),
            keep_for_secs: access_ttl.as_secs() as i64 + 60,
            poke: Notify::new(),
        }
    }

    /// Is this session revoked?
    pub fn is_revoked(&self, session_id: &SessionId) -> bool {
        self.revoked
            .read()
            .map(|r| r.contains_key(session_id))
            .unwrap_or(true)
    }

    /// Records a revocation made on this node, effective here at once.
    pub fn mark(&self, session_id: &SessionId, at: i64) {
        if let Ok(mut r) = self.revoked.write() {
            r.insert(session_id.clone(), at);
        }
    }

    /// Asks the poller to look now (after bulk revocations such as a password reset).
    pub fn poke(&self) {
        self.poke.notify_one();
    }

    /// Loads every revocation that can still matter.
    pub async fn load(
        &self,
        store: &dyn Store,
        now: i64,
    ) -> Result<(), fluxgate_store::StoreError> {
        self.absorb(
            store
                .revoked_sessions_since(now - self.keep_for_secs)
                .await?,
            now,
        );
        Ok(())
    }

    fn absorb(&self, rows: Vec<(SessionId, i64)>, now: i64) {
        if let Ok(mut r) = self.revoked.write() {
            r.extend(rows);
            let horizon = now - self.keep_for_secs;
            r.retain(|_, at| *at >= horizon);
        }
    }

    /// Polls until cancelled. A failed poll keeps what is known and tries again.
    pub async fn run(self: Arc<Self>, store: Arc<dyn Store>, cancel: CancellationToken) {
        let mut failing = false;
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(POLL_EVERY) => {}
                _ = self.poke.notified() => {}
            }
            let now = crate::clock::now();
            match store.revoked_sessions_since(now - OVERLAP_SECS).await {
                Ok(rows) => {
                    if failing {
                        tracing::info!("session revocation polling recovered");
                        failing = false;
                    }
                    self.absorb(rows, now);
                }
                Err(error) => {
                    if !failing {
                        tracing::warn!(error = %error, "session revocation polling failed; retrying");
                        failing = true;
                    }
                }
            }
        }
    }
}
