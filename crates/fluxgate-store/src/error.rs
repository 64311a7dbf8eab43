//! Storage errors, classified the way the API needs them: conflict, unavailable, or a bug.

/// What went wrong in a storage call.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A uniqueness rule refused the write; holds the constraint's description.
    #[error("conflict: {0}")]
    Conflict(String),
    /// The database could not be reached or did not answer in time.
    #[error("database unavailable: {0}")]
    Unavailable(#[source] sqlx::Error),
    /// A bad database URL or option.
    #[error("{0}")]
    Config(String),
    /// Migrations failed.
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// Anything else: a bug or corrupted data.
    #[error("database error: {0}")]
    Other(#[source] sqlx::Error),
}

impl From<sqlx::Error> for StoreError {
    fn from(error: sqlx::Error) -> Self {
        match &error {
            sqlx::Error::Database(db) if db.is_unique_violation() => {
                StoreError::Conflict(db.message().to_owned())
            }
            sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed => StoreError::Unavailable(error),
            sqlx::Error::Database(db) if is_unavailable_code(db.code().as_deref()) => {
                StoreError::Unavailable(error)
            }
            _ => StoreError::Other(error),
        }
    }
}

/// PostgreSQL's "cannot connect now" / shutdown classes and SQLite's busy/locked codes.
fn is_unavailable_code(code: Option<&str>) -> bool {
    match code {
        Some(c) => {
            c.starts_with("08")
                || c.starts_with("57P")
                || c == "53300"
                || c == "5"
                || c == "6"
                || c == "517"
        }
        None => false,
    }
}
