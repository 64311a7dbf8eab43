//! A Redis connection established in the background: a Redis that is down when a node starts
//! does not stop it; callers see "not connected yet" and apply their failure policy.

use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// A multiplexed, self-healing connection, available once the first connect succeeds.
#[derive(Clone)]
pub struct RedisConnection(Arc<Slot>);

struct Slot {
    connection: OnceLock<redis::aio::ConnectionManager>,
    connected: tokio::sync::Notify,
}

impl RedisConnection {
    /// Starts connecting to `client`, retrying every second until it answers or `cancel`;
    /// a command not answered within `response_timeout` fails.
    pub fn connect(
        client: redis::Client,
        purpose: &'static str,
        response_timeout: Duration,
        cancel: CancellationToken,
    ) -> Self {
        let slot = Arc::new(Slot {
            connection: OnceLock::new(),
            connected: tokio::sync::Notify::new(),
        });
        let connection = Self(slot.clone());
        tokio::spawn(async move {
            loop {
                let config = redis::aio::ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(Duration::from_secs(1)))
                    .set_response_timeout(Some(response_timeout));
                match client.get_connection_manager_with_config(config).await {
                    Ok(manager) => {
                        let _ = slot.connection.set(manager);
                        slot.connected.notify_waiters();
                        tracing::info!(purpose, "connected to Redis");
                        return;
                    }
                    Err(error) => tracing::warn!(purpose, %error, "Redis unreachable; retrying"),
                }
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        });
        connection
    }

    /// The connection, once established (it reconnects by itself afterwards).
    pub fn get(&self) -> Option<redis::aio::ConnectionManager> {
        self.0.connection.get().cloned()
    }

    /// The connection, waiting up to `limit` for the first connect (a node just started).
    pub async fn within(&self, limit: Duration) -> Option<redis::aio::ConnectionManager> {
        let connected = self.0.connected.notified();
        if let Some(connection) = self.get() {
            return Some(connection);
        }
        let _ = tokio::time::timeout(limit, connected).await;
        self.get()
    }
}
