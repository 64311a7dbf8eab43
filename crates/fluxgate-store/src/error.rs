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
            sqlx::Error::Database(db) if is_unavailable(db.code().as_deref(), db.message()) => {
                StoreError::Unavailable(error)
            }
            _ => StoreError::Other(error),
        }
    }
}

/// Errors that mean "the database cannot serve right now" rather than "this request is wrong":
/// PostgreSQL's connection (08), resource (53), operator-intervention (57P), authorization (28)
/// and missing-database (3D000) classes, a database closed to connections (55000 with that
/// message), and SQLite's busy (5), locked (6) and busy-recovery (261, 517) codes.
fn is_unavailable(code: Option<&str>, message: &str) -> bool {
    let Some(code) = code else { return false };
    ["08", "53", "57P", "28"]
        .iter()
        .any(|class| code.starts_with(class))
        || code == "3D000"
        || (code == "55000" && message.contains("accepting connections"))
        || ["5", "6", "261", "517"].contains(&code)
}
