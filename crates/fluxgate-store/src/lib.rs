//! Fluxgate's storage: the [`Store`] trait, its SQLite and PostgreSQL implementations (one SQL
//! text serving both), and the checked-in migrations of each backend.

mod error;
mod factors;
mod flags;
mod identities;
mod keys;
mod orgs;
mod passkeys;
mod postgres;
mod records;
mod shared;
mod sqlite;
mod usage;
mod webhooks;

pub use error::StoreError;
pub use factors::{FactorStore, TotpConfirmation};
pub use flags::FlagStore;
pub use fluxgate_core::ids::{
    DeliveryId, EventId, IdentityId, InvitationId, KeyId, OrgId, PasskeyId, RoleId, SessionId,
    UserId, WebhookId,
};
pub use identities::IdentityStore;
pub use keys::KeyStore;
pub use orgs::OrgStore;
pub use passkeys::PasskeyStore;
pub use postgres::{migrations_fingerprint, PostgresStore};
pub use records::*;
pub use sqlite::SqliteStore;
pub use usage::UsageStore;
pub use webhooks::{event_type, WebhookStore, EVENT_TYPES};

use async_trait::async_trait;
use std::sync::Arc;
use std::time::Duration;

/// Results of storage calls.
pub type StoreResult<T> = Result<T, StoreError>;

/// Everything Fluxgate keeps: one implementation per database backend. Each method is one
/// transaction; a method that changes state takes the audit entry that records the change and
/// writes it in the same transaction.
#[async_trait]
pub trait Store:
    OrgStore
    + KeyStore
    + UsageStore
    + FactorStore
    + PasskeyStore
    + IdentityStore
    + WebhookStore
    + FlagStore
    + Notifier
    + Send
    + Sync
    + 'static
{
    /// `sqlite` or `postgres`.
    fn backend(&self) -> &'static str;
    /// Applies pending migrations (PostgreSQL takes an advisory lock, so concurrent nodes are safe).
    async fn migrate(&self) -> StoreResult<()>;
    /// A round trip to the database.
    async fn ping(&self) -> StoreResult<()>;
    /// Closes the pool, waiting for connections in use.
    async fn close(&self);

    // ---- users and organizations
    /// Creates a user and, optionally, an org they own. `Conflict` if the email is taken.
    async fn create_user(
        &self,
        user: &UserRecord,
        org: Option<&OrgRecord>,
        audit: &[AuditRecord],
    ) -> StoreResult<()>;
    /// Creates the operator org and its verified owner. `Conflict` if either exists already.
    async fn bootstrap_operator(
        &self,
        user: &UserRecord,
        org: &OrgRecord,
        audit: &AuditRecord,
    ) -> StoreResult<()>;
    /// The id of the operator org, once bootstrapped.
    async fn operator_org_id(&self) -> StoreResult<Option<OrgId>>;
    /// The user whose (normalised) identifier of `kind` is `value`.
    async fn user_by_login(&self, kind: LoginKind, value: &str) -> StoreResult<Option<UserRecord>>;
    /// The user with this id.
    async fn user_by_id(&self, id: &UserId) -> StoreResult<Option<UserRecord>>;
    /// The user's memberships in orgs that are not deleted, oldest first.
    async fn memberships_of_user(&self, user_id: &UserId) -> StoreResult<Vec<MembershipRecord>>;
    /// The user's membership in one (not deleted) org.
    async fn membership(
        &self,
        org_id: &OrgId,
        user_id: &UserId,
    ) -> StoreResult<Option<MembershipRecord>>;
    /// The permission patterns of a custom role of an org, by name.
    async fn custom_role_permissions(
        &self,
        org_id: &OrgId,
        role: &str,
    ) -> StoreResult<Option<Vec<String>>>;

    // ---- one-time tokens (email verification, password reset)
    /// Stores a new single-use token (by hash).
    async fn insert_one_time_token(&self, token: &OneTimeTokenRecord) -> StoreResult<()>;
    /// Spends a verification token and marks its user verified; the user's id, or None if the
    /// token is unknown, spent or expired.
    async fn verify_email(
        &self,
        token_hash: &str,
        now: i64,
        audit: AuditMeta,
    ) -> StoreResult<Option<UserId>>;
    /// Spends a reset token, sets the new password hash, verifies the email, revokes every
    /// session of the user; the user's id, or None.
    async fn reset_password(
        &self,
        token_hash: &str,
        password_hash: &str,
        now: i64,
        audit: AuditMeta,
    ) -> StoreResult<Option<UserId>>;

    /// Sets (or clears) a user's display name, with the audit entry.
    async fn rename_user(
        &self,
        user_id: &UserId,
        name: Option<&str>,
        now: i64,
        audit: &AuditRecord,
    ) -> StoreResult<()>;

    /// Sets a user's new password hash and ends every live session of theirs but `keep`, with
    /// the audit entry; how many sessions ended.
    async fn change_password(
        &self,
        user_id: &UserId,
        password_hash: &str,
        keep: &SessionId,
        now: i64,
        audit: &AuditRecord,
    ) -> StoreResult<u64>;

    // ---- sessions and refresh tokens
    /// Creates a session with its first refresh token.
    async fn create_session(
        &self,
        session: &SessionRecord,
        refresh: &RefreshTokenRecord,
        audit: &AuditRecord,
    ) -> StoreResult<()>;
    /// Records that a live session proved its password again at `now`; false if it is gone.
    async fn confirm_session(
        &self,
        session_id: &SessionId,
        now: i64,
        audit: &AuditRecord,
    ) -> StoreResult<bool>;
    /// A session by id.
    async fn session(&self, id: &SessionId) -> StoreResult<Option<SessionRecord>>;
    /// The user's sessions that are neither revoked nor expired, newest first.
    async fn active_sessions(&self, user_id: &UserId, now: i64) -> StoreResult<Vec<SessionRecord>>;
    /// Revokes a session of this user; false if there is no such live session.
    async fn revoke_session(
        &self,
        user_id: &UserId,
        session_id: &SessionId,
        reason: fluxgate_core::stored::EndReason,
        now: i64,
        audit: &AuditRecord,
    ) -> StoreResult<bool>;
    /// Sessions revoked at or after `since`, with the time of revocation.
    async fn revoked_sessions_since(&self, since: i64) -> StoreResult<Vec<(SessionId, i64)>>;
    /// A refresh token by hash.
    async fn refresh_token(&self, token_hash: &str) -> StoreResult<Option<RefreshTokenRecord>>;
    /// Spends `old_hash` and stores `next` in its place, if `old_hash` is still unspent; false
    /// when another request spent it first.
    async fn rotate_refresh_token(
        &self,
        old_hash: &str,
        next: &RefreshTokenRecord,
        now: i64,
    ) -> StoreResult<bool>;
    /// Switches the session's active org and replaces its refresh token by `next`.
    async fn switch_session_org(
        &self,
        session_id: &SessionId,
        org_id: &OrgId,
        next: &RefreshTokenRecord,
        now: i64,
    ) -> StoreResult<()>;

    // ---- signing keys
    /// All signing keys, newest first.
    async fn signing_keys(&self) -> StoreResult<Vec<SigningKeyRecord>>;
    /// Adds a signing key; every key in use so far is retired at `key.created_at`.
    async fn add_signing_key(&self, key: &SigningKeyRecord, audit: &AuditRecord)
        -> StoreResult<()>;

    // ---- audit
    /// Appends entries on their own (for events that change nothing else).
    async fn append_audit(&self, entries: &[AuditRecord]) -> StoreResult<()>;
    /// Entries matching `filter`, newest first.
    async fn audit_entries(&self, filter: &AuditFilter) -> StoreResult<Vec<AuditRecord>>;
}

/// Which identifier a login names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginKind {
    /// The email address.
    Email,
    /// The username.
    Username,
    /// The document number.
    Document,
}

/// What differs in the SQL of the two backends.
pub(crate) trait Dialect {
    /// `column` contains the lower-cased `LIKE` pattern in `param`, ignoring case. SQLite's own
    /// `LIKE` ignores ASCII case (and its `LOWER` folds only ASCII), so wrapping the column in
    /// `LOWER` would only cost time; PostgreSQL compares `LOWER(column)`, which its trigram index
    /// on key names covers (migration 0012). A query using it should not be a persistent
    /// prepared statement: PostgreSQL would settle on a generic plan that cannot see the pattern,
    /// and scan.
    fn contains(column: &str, param: &str) -> String;
}

impl Dialect for sqlx::Sqlite {
    fn contains(column: &str, param: &str) -> String {
        format!("{column} LIKE {param} ESCAPE '\\'")
    }
}

impl Dialect for sqlx::Postgres {
    fn contains(column: &str, param: &str) -> String {
        // backslash is PostgreSQL's default LIKE escape; an explicit ESCAPE clause would
        // hide the pattern from the trigram index
        format!("LOWER({column}) LIKE {param}")
    }
}

/// Messages between the nodes sharing a database: PostgreSQL `NOTIFY`/`LISTEN`; SQLite serves
/// one node, so there is nobody to tell.
#[async_trait]
pub trait Notifier: Send + Sync {
    /// Sends `payload` on `channel` to every listening node (this one included).
    async fn notify(&self, channel: &str, payload: &str) -> StoreResult<()>;
    /// Starts listening on `channel`, if this backend can. The receiver yields each payload,
    /// and `None` when the connection dropped and messages may have been lost.
    async fn listen(
        &self,
        channel: &str,
    ) -> StoreResult<Option<tokio::sync::mpsc::Receiver<Option<String>>>>;
}

/// How to reach the database.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// `sqlite://…` or `postgres://…`.
    pub url: String,
    /// Upper bound on pooled connections.
    pub max_connections: u32,
    /// How long a request waits for a connection before the database counts as unavailable.
    pub acquire_timeout: Duration,
}

/// Opens the store the URL names (without migrating).
pub async fn connect(options: &ConnectOptions) -> StoreResult<Arc<dyn Store>> {
    if options.url.starts_with("sqlite:") {
        Ok(Arc::new(SqliteStore::connect(options).await?))
    } else if options.url.starts_with("postgres:") || options.url.starts_with("postgresql:") {
        Ok(Arc::new(PostgresStore::connect(options).await?))
    } else {
        Err(StoreError::Config(
            "database_url must start with sqlite:// or postgres://".into(),
        ))
    }
}
