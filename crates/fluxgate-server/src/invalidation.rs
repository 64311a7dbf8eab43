//! Cross-node invalidation of the key cache and the session views. A change applies to this
//! node's caches at once and is published to the others: over Redis pub/sub when `redis_url`
//! is set, else over PostgreSQL `NOTIFY`, else (SQLite: one node) nowhere. A subscriber that
//! loses its connection drops every loaded entry when it is back, since it may have missed
//! messages.

use crate::keycache::{KeyCache, KeyHash};
use crate::redisconn::RedisConnection;
use crate::session_views::SessionViews;
use fluxgate_core::ids::UserId;
use fluxgate_store::{KeyId, OrgId, Store};
use futures_util::StreamExt;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const CHANNEL: &str = "fluxgate_invalidate";

/// What changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A key was patched, rotated or revoked.
    Key(KeyId),
    /// An org's plan, name or roles changed, it was disabled or it was deleted.
    Org(OrgId),
    /// A user's account, memberships or session's active org changed.
    User(UserId),
    /// A secret now exists (a key was created or rotated): its hash.
    Secret(String),
    /// A feature flag was created, changed or deleted.
    Flags,
}

impl Change {
    fn encode(&self) -> String {
        match self {
            Self::Key(id) => format!("key:{id}"),
            Self::Org(id) => format!("org:{id}"),
            Self::User(id) => format!("user:{id}"),
            Self::Secret(hash) => format!("secret:{hash}"),
            Self::Flags => "flags:".to_owned(),
        }
    }

    fn decode(text: &str) -> Option<Self> {
        let (kind, value) = text.split_once(':')?;
        match kind {
            "key" => value.parse().ok().map(Self::Key),
            "org" => value.parse().ok().map(Self::Org),
            "user" => value.parse().ok().map(Self::User),
            "secret" => Some(Self::Secret(value.to_owned())),
            "flags" => Some(Self::Flags),
            _ => None,
        }
    }

    fn apply(&self, caches: &Caches) {
        match self {
            Self::Key(id) => caches.keys.invalidate_key(id),
            Self::Org(id) => {
                caches.keys.invalidate_org(id);
                caches.sessions.forget_org(id);
            }
            Self::User(id) => caches.sessions.forget_user(id),
            Self::Secret(hex) => {
                if let Some(hash) = KeyHash::from_hex(hex) {
                    caches.keys.learn(&hash);
                }
            }
            Self::Flags => caches.flags.changed(),
        }
    }
}

/// The caches changes apply to.
#[derive(Clone)]
pub struct Caches {
    /// What verify answers with.
    pub keys: Arc<KeyCache>,
    /// What `GET /auth/me` answers with.
    pub sessions: Arc<SessionViews>,
    /// The feature flags verify evaluates.
    pub flags: Arc<crate::flagbook::FlagBook>,
}

impl Caches {
    /// Drops everything loaded (announcements may have been missed).
    fn forget_all(&self) {
        self.keys.invalidate_all();
        self.sessions.forget_all();
        self.flags.changed();
    }
}

enum Transport {
    Local,
    Redis(RedisConnection),
    Database(Arc<dyn Store>),
}

/// Publishes changes and applies the ones other nodes publish.
pub struct InvalidationBus {
    caches: Caches,
    transport: Transport,
}

impl InvalidationBus {
    /// Picks the transport (Redis, else the database's own, else none) and starts listening.
    pub async fn start(
        caches: Caches,
        redis_url: Option<&str>,
        store: Arc<dyn Store>,
        cancel: CancellationToken,
    ) -> anyhow::Result<Self> {
        if let Some(url) = redis_url {
            let client = redis::Client::open(url)?;
            tokio::spawn(subscribe_redis(
                client.clone(),
                caches.clone(),
                cancel.clone(),
            ));
            let connection = RedisConnection::connect(
                client,
                "key invalidation",
                Duration::from_secs(1),
                cancel,
            );
            return Ok(Self {
                caches,
                transport: Transport::Redis(connection),
            });
        }
        if let Some(receiver) = store.listen(CHANNEL).await? {
            tokio::spawn(apply_from_database(receiver, caches.clone(), cancel));
            return Ok(Self {
                caches,
                transport: Transport::Database(store),
            });
        }
        Ok(Self {
            caches,
            transport: Transport::Local,
        })
    }

    /// Applies `change` here at once and tells the other nodes (best effort: a node that
    /// misses it heals when its subscription reconnects).
    pub async fn publish(&self, change: Change) {
        change.apply(&self.caches);
        let payload = change.encode();
        match &self.transport {
            Transport::Local => {}
            Transport::Redis(connection) => {
                let Some(mut connection) = connection.get() else {
                    tracing::warn!(
                        "key invalidation: Redis not connected; other nodes learn on reconnect"
                    );
                    return;
                };
                let mut command = redis::cmd("PUBLISH");
                command.arg(CHANNEL).arg(&payload);
                let sent = tokio::time::timeout(
                    Duration::from_secs(1),
                    command.query_async::<i64>(&mut connection),
                )
                .await;
                if !matches!(sent, Ok(Ok(_))) {
                    tracing::warn!("key invalidation: publishing to Redis failed");
                }
            }
            Transport::Database(store) => {
                if let Err(error) = store.notify(CHANNEL, &payload).await {
                    tracing::warn!(%error, "key invalidation: NOTIFY failed");
                }
            }
        }
    }
}

async fn subscribe_redis(client: redis::Client, caches: Caches, cancel: CancellationToken) {
    let mut first = true;
    loop {
        match client.get_async_pubsub().await {
            Ok(mut pubsub) => {
                if pubsub.subscribe(CHANNEL).await.is_ok() {
                    if !first {
                        caches.forget_all(); // messages may have been missed meanwhile
                    }
                    let mut messages = pubsub.on_message();
                    loop {
                        tokio::select! {
                            _ = cancel.cancelled() => return,
                            message = messages.next() => match message {
                                Some(message) => {
                                    let payload: String = message.get_payload().unwrap_or_default();
                                    if let Some(change) = Change::decode(&payload) {
                                        change.apply(&caches);
                                    }
                                }
                                None => break,
                            }
                        }
                    }
                    tracing::warn!("key invalidation: Redis subscription lost; reconnecting");
                }
            }
            Err(error) => tracing::warn!(%error, "key invalidation: Redis unreachable; retrying"),
        }
        first = false;
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

async fn apply_from_database(
    mut receiver: tokio::sync::mpsc::Receiver<Option<String>>,
    caches: Caches,
    cancel: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            message = receiver.recv() => match message {
                Some(Some(payload)) => {
                    if let Some(change) = Change::decode(&payload) {
                        change.apply(&caches);
                    }
                }
                Some(None) => caches.forget_all(),
                None => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_round_trip() {
        for change in [
            Change::Key(KeyId::generate()),
            Change::Org(OrgId::generate()),
            Change::User(UserId::generate()),
            Change::Secret("ab".repeat(32)),
            Change::Flags,
        ] {
            assert_eq!(Change::decode(&change.encode()), Some(change));
        }
        assert_eq!(Change::decode("nonsense"), None);
        assert_eq!(
            Change::decode("key:org_01ARZ3NDEKTSV4RRFFQ69G5FAV"),
            None,
            "wrong kind"
        );
    }
}
