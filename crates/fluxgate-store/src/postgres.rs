//! The PostgreSQL backend, for several stateless nodes sharing one database.

use crate::{ConnectOptions, StoreError, StoreResult};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Pool, Postgres};
use std::str::FromStr;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/postgres");

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
