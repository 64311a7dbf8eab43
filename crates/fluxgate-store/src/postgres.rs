//! The PostgreSQL backend, for several stateless nodes sharing one database.

use crate::{ConnectOptions, StoreError, StoreResult};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Pool, Postgres};
use std::str::FromStr;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/postgres");

/// A fingerprint of the PostgreSQL migrations (their versions and checksums, SHA-256, 16 hex
/// characters): equal exactly when two builds migrate a database to the same schema. Test kits
/// name migrated template databases by it.
pub fn migrations_fingerprint() -> String {
    let listing: String = MIGRATOR
        .iter()
        .map(|m| format!("{}:{:?};", m.version, m.checksum))
        .collect();
    fluxgate_core::secret::sha256_hex(&listing)[..16].to_owned()
}

/// Fluxgate's store on PostgreSQL.
#[derive(Debug, Clone)]
pub struct PostgresStore {
    pool: Pool<Postgres>,
}

impl PostgresStore {
    /// Creates the pool; connections are opened on demand, so a database that is down at start
    /// makes requests answer 503 until it is back rather than stopping the process.
    pub async fn connect(options: &ConnectOptions) -> StoreResult<Self> {
        let connect = PgConnectOptions::from_str(&options.url)
            .map_err(|e| StoreError::Config(format!("database_url: {e}")))?;
        let pool = PgPoolOptions::new()
            .max_connections(options.max_connections.max(1))
            .acquire_timeout(options.acquire_timeout)
            .connect_lazy_with(connect);
        Ok(Self { pool })
    }
}

crate::shared::impl_store!(PostgresStore, Postgres, "postgres");
crate::orgs::impl_org_store!(PostgresStore, Postgres);
crate::keys::impl_key_store!(PostgresStore, Postgres);
crate::usage::impl_usage_store!(PostgresStore, Postgres);
crate::factors::impl_factor_store!(PostgresStore, Postgres);
crate::passkeys::impl_passkey_store!(PostgresStore, Postgres);
crate::identities::impl_identity_store!(PostgresStore, Postgres);
crate::webhooks::impl_webhook_store!(PostgresStore, Postgres);
crate::flags::impl_flag_store!(PostgresStore, Postgres);

#[async_trait::async_trait]
impl crate::Notifier for PostgresStore {
    async fn notify(&self, channel: &str, payload: &str) -> StoreResult<()> {
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(channel)
            .bind(payload)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn listen(
        &self,
        channel: &str,
    ) -> StoreResult<Option<tokio::sync::mpsc::Receiver<Option<String>>>> {
        let pool = self.pool.clone();
        let channel = channel.to_owned();
        let mut listener = sqlx::postgres::PgListener::connect_with(&pool).await?;
        listener.listen(&channel).await?;
        let (sender, receiver) = tokio::sync::mpsc::channel(1024);
        tokio::spawn(async move {
            loop {
                match listener.try_recv().await {
                    Ok(Some(notification)) => {
                        if sender
                            .send(Some(notification.payload().to_owned()))
                            .await
                            .is_err()
                        {
                            return; // nobody listens any more
                        }
                        continue;
                    }
                    Ok(None) => tracing::warn!("LISTEN connection lost; reconnecting"),
                    Err(error) => tracing::warn!(%error, "LISTEN connection failed; reconnecting"),
                }
                // reconnect by hand, and only once it works tell the receiver that messages may
                // have been missed (so caches are not flushed again and again during an outage)
                listener = loop {
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                    if sender.is_closed() {
                        return;
                    }
                    if let Ok(mut fresh) = sqlx::postgres::PgListener::connect_with(&pool).await {
                        if fresh.listen(&channel).await.is_ok() {
                            break fresh;
                        }
                    }
                };
                if sender.send(None).await.is_err() {
                    return;
                }
            }
        });
        Ok(Some(receiver))
    }
}
