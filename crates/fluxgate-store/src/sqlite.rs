//! The SQLite backend: one file under `data_dir`, WAL, foreign keys on, a busy timeout.

use crate::{ConnectOptions, StoreError, StoreResult};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Pool, Sqlite};
use std::str::FromStr;
use std::time::Duration;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/sqlite");

/// Fluxgate's store on an embedded SQLite database.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: Pool<Sqlite>,
}

impl SqliteStore {
    /// Opens (creating if missing) the database file the URL names.
    pub async fn connect(options: &ConnectOptions) -> StoreResult<Self> {
        let connect = SqliteConnectOptions::from_str(&options.url)
            .map_err(|e| StoreError::Config(format!("database_url: {e}")))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(5));
        let pool = SqlitePoolOptions::new()
            .max_connections(options.max_connections.max(1))
            .acquire_timeout(options.acquire_timeout)
            // an embedded database has no connection to lose: no ping (a round trip to the
            // connection's worker thread) before every acquire
            .test_before_acquire(false)
            .connect_with(connect)
            .await?;
        Ok(Self { pool })
    }
}

crate::shared::impl_store!(SqliteStore, Sqlite, "sqlite");
crate::orgs::impl_org_store!(SqliteStore, Sqlite);
crate::keys::impl_key_store!(SqliteStore, Sqlite);
crate::usage::impl_usage_store!(SqliteStore, Sqlite);
crate::factors::impl_factor_store!(SqliteStore, Sqlite);
crate::passkeys::impl_passkey_store!(SqliteStore, Sqlite);
crate::identities::impl_identity_store!(SqliteStore, Sqlite);
crate::webhooks::impl_webhook_store!(SqliteStore, Sqlite);
crate::flags::impl_flag_store!(SqliteStore, Sqlite);

#[async_trait::async_trait]
impl crate::Notifier for SqliteStore {
    async fn notify(&self, _channel: &str, _payload: &str) -> StoreResult<()> {
        Ok(())
    }

    async fn listen(
        &self,
        _channel: &str,
    ) -> StoreResult<Option<tokio::sync::mpsc::Receiver<Option<String>>>> {
        Ok(None)
    }
}
