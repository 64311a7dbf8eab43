-- Sign-in with OpenID Connect: each account's linked identities at configured providers (the
-- provider's id for the person, `sub`, unique per provider; the email it gave, for display),
-- the short-lived state of an authorisation in progress (by the hash of its `state`, which the
-- browser also holds in a cookie; the nonce and PKCE verifier it must be completed with; whether
-- it ends in a portal session or the API's cookies; taken once), and the first factor a second-factor challenge follows (a password or a provider).
-- Keep migrations/{sqlite,postgres} in step.

CREATE TABLE user_identities (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users (id),
    provider TEXT NOT NULL,
    subject TEXT NOT NULL,
    email TEXT,
    created_at BIGINT NOT NULL,
    last_used_at BIGINT,
    UNIQUE (provider, subject)
);
CREATE INDEX user_identities_by_user ON user_identities (user_id, created_at);

CREATE TABLE oidc_flows (
    state_hash TEXT PRIMARY KEY,
    provider TEXT NOT NULL,
    user_id TEXT REFERENCES users (id),
    nonce TEXT NOT NULL,
    pkce_verifier TEXT NOT NULL,
    next TEXT NOT NULL,
    ends_in TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX oidc_flows_by_expiry ON oidc_flows (expires_at);

ALTER TABLE mfa_challenges ADD COLUMN first_factor TEXT NOT NULL DEFAULT 'pwd';
