-- Passkeys (WebAuthn credentials): each user's registered credentials, with the public key and
-- signature counter as webauthn-rs keeps them (JSON; nothing secret), named by the user; and the
-- short-lived state of a ceremony in progress (registration, passkey sign-in, or a passkey as a
-- login's second factor), stored server-side by the hash of the token the client holds, bound
-- to that client, taken once. Keep migrations/{sqlite,postgres} in step.

CREATE TABLE passkeys (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users (id),
    credential_id TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    credential TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    last_used_at BIGINT
);
CREATE INDEX passkeys_by_user ON passkeys (user_id, created_at);

CREATE TABLE webauthn_ceremonies (
    token_hash TEXT PRIMARY KEY,
    purpose TEXT NOT NULL,
    user_id TEXT REFERENCES users (id),
    client_hash TEXT NOT NULL,
    state TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX webauthn_ceremonies_by_expiry ON webauthn_ceremonies (expires_at);
