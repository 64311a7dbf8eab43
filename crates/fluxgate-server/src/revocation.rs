//! Which sessions are revoked, known to every node within a second without a database round
//! trip per request: each node polls for revocations since its last successful poll twice a
//! second and keeps them in memory for as long as an access token could outlive them. A poll
//! that fails — the database unreachable for a minute — loses nothing: the next one that works
//! reads everything since the last one that did.

use fluxgate_store::{SessionId, Store};
use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// How often each node asks the database for new revocations.
pub const POLL_EVERY: Duration = Duration::from_millis(500);
/// How far before the last successful poll the next one looks, so revocations committed late
/// (timestamped before a poll, visible after it) are still seen.
const OVERLAP_SECS: i64 = 5;

/// Where a poll at `now` starts reading: a little before the last successful poll, but never
/// further back than a revocation can matter (`keep_for_secs`).
fn poll_from(last_success: i64, now: i64, keep_for_secs: i64) -> i64 {
    last_success
        .min(now)
        .saturating_sub(OVERLAP_SECS)
        .max(now.saturating_sub(keep_for_secs))
}

/// The revoked sessions whose access tokens may still be unexpired.
pub struct SessionRevocations {
    revoked: RwLock<HashMap<SessionId, i64>>,
    keep_for_secs: i64,
    poke: Notify,
    /// When the last successful poll (or load) ran; 0 before the first.
    polled_at: AtomicI64,
}

impl SessionRevocations {
    /// Remembers revocations for the access-token lifetime (plus a margin).
    pub fn new(access_ttl: Duration) -> Self {
        Self {
            revoked: RwLock::new(HashMap::new()),
            keep_for_secs: i64::try_from(access_ttl.as_secs())
                .unwrap_or(i64::MAX / 2)
                .saturating_add(60),
            poke: Notify::new(),
            polled_at: AtomicI64::new(0),
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
                .revoked_sessions_since(now.saturating_sub(self.keep_for_secs))
                .await?,
            now,
        );
        self.polled_at.store(now, Ordering::Relaxed);
        Ok(())
    }

    fn absorb(&self, rows: Vec<(SessionId, i64)>, now: i64) {
        if let Ok(mut r) = self.revoked.write() {
            r.extend(rows);
            let horizon = now.saturating_sub(self.keep_for_secs);
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
            let from = poll_from(
                self.polled_at.load(Ordering::Relaxed),
                now,
                self.keep_for_secs,
            );
            match store.revoked_sessions_since(from).await {
                Ok(rows) => {
                    if failing {
                        tracing::info!("session revocation polling recovered");
                        failing = false;
                    }
                    self.absorb(rows, now);
                    self.polled_at.store(now, Ordering::Relaxed);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_poll_reads_from_just_before_the_last_one_that_worked() {
        // polling every half second: five seconds of overlap
        assert_eq!(poll_from(1_000, 1_001, 960), 995);
        // the database was away for a minute: everything since the last good poll
        assert_eq!(poll_from(1_000, 1_060, 960), 995);
        // never further back than a token can live, nor from the future
        assert_eq!(poll_from(0, 10_000, 960), 9_040);
        assert_eq!(poll_from(2_000, 1_000, 960), 995);
    }
}
