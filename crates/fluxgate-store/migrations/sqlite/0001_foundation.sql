-- Foundation: users, organizations, memberships, sessions and tokens, signing keys, audit.
-- Generated alike for both backends; keep migrations/{sqlite,postgres} in step.

CREATE TABLE users (
    id TEXT PRIMARY KEY,
    email TEXT NOT NULL UNIQUE,
    name TEXT,
    password_hash TEXT NOT NULL,
    email_verified_at INTEGER,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);

CREATE TABLE orgs (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    external_id TEXT UNIQUE,
    plan TEXT NOT NULL,
    is_operator BOOLEAN NOT NULL DEFAULT FALSE,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    deleted_at INTEGER
);
-- There is exactly one operator org at most.
CREATE UNIQUE INDEX orgs_one_operator ON orgs (is_operator) WHERE is_operator;

CREATE TABLE roles (
    id TEXT PRIMARY KEY,
    org_id TEXT NOT NULL REFERENCES orgs (id),
    name TEXT NOT NULL,
    description TEXT,
    permissions TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    UNIQUE (org_id, name)
);

CREATE TABLE memberships (
    org_id TEXT NOT NULL REFERENCES orgs (id),
    user_id TEXT NOT NULL REFERENCES users (id),
    role TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (org_id, user_id)
);
CREATE INDEX memberships_by_user ON memberships (user_id);

CREATE TABLE sessions (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users (id),
    active_org_id TEXT REFERENCES orgs (id),
    user_agent TEXT,
    ip TEXT,
    created_at INTEGER NOT NULL,
    last_used_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    revoked_at INTEGER,
    revoked_reason TEXT
);
CREATE INDEX sessions_by_user ON sessions (user_id);
CREATE INDEX sessions_by_revoked_at ON sessions (revoked_at);

-- Every refresh token a session was ever given, by hash; spent ones stay to detect reuse.
CREATE TABLE refresh_tokens (
    token_hash TEXT PRIMARY KEY,
    session_id TEXT NOT NULL REFERENCES sessions (id),
    generation INTEGER NOT NULL,
    issued_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    spent_at INTEGER,
    spent_reason TEXT
);
CREATE INDEX refresh_tokens_by_session ON refresh_tokens (session_id);

-- Single-use secrets sent by mail (email verification, password reset), by hash.
CREATE TABLE one_time_tokens (
    token_hash TEXT PRIMARY KEY,
    purpose TEXT NOT NULL,
    user_id TEXT NOT NULL REFERENCES users (id),
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    used_at INTEGER
);

-- JWT signing keys; the private half is encrypted under the instance secret.
CREATE TABLE signing_keys (
    kid TEXT PRIMARY KEY,
    algorithm TEXT NOT NULL,
    public_key TEXT NOT NULL,
    private_key_encrypted TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    retired_at INTEGER
);

-- Failed logins per email address, whether or not an account has that address.
CREATE TABLE login_throttle (
    email TEXT PRIMARY KEY,
    failures INTEGER NOT NULL,
    window_started_at INTEGER NOT NULL,
    locked_until INTEGER
);

CREATE TABLE audit_log (
    id TEXT PRIMARY KEY,
    org_id TEXT,
    actor_type TEXT NOT NULL,
    actor_id TEXT,
    action TEXT NOT NULL,
    target_type TEXT,
    target_id TEXT,
    ip TEXT,
    user_agent TEXT,
    data TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE INDEX audit_log_by_org ON audit_log (org_id, id);
CREATE INDEX audit_log_by_actor ON audit_log (actor_id, id);
