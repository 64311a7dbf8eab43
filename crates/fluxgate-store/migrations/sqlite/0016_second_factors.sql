-- Second factors: a user's TOTP factor (its secret sealed under the instance secret; the last
-- step accepted, so each code is used once), their recovery codes (by hash, single use), the
-- short-lived sign-in challenges between a password and a second factor (by hash, bound to the
-- client that logged in), and which methods each session signed in with (RFC 8176 `amr`).
-- Keep migrations/{sqlite,postgres} in step.

CREATE TABLE totp_factors (
    user_id TEXT PRIMARY KEY REFERENCES users (id),
    secret_sealed TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    confirmed_at INTEGER,
    last_step INTEGER
);

CREATE TABLE recovery_codes (
    user_id TEXT NOT NULL REFERENCES users (id),
    code_hash TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    used_at INTEGER,
    PRIMARY KEY (user_id, code_hash)
);

CREATE TABLE mfa_challenges (
    token_hash TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users (id),
    client_hash TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    spent_at INTEGER
);
CREATE INDEX mfa_challenges_by_expiry ON mfa_challenges (expires_at);

ALTER TABLE sessions ADD COLUMN amr TEXT NOT NULL DEFAULT 'pwd';

-- An org may require its members to sign in with a second factor.
ALTER TABLE orgs ADD COLUMN require_mfa BOOLEAN NOT NULL DEFAULT FALSE;
