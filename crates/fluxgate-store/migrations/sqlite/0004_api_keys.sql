-- API keys (stored only as hashes), their secrets (several during a rotation's grace period),
-- and the monthly usage counters the plans' quotas are checked against.
-- Keep migrations/{sqlite,postgres} in step.

CREATE TABLE api_keys (
    id TEXT PRIMARY KEY,
    org_id TEXT NOT NULL REFERENCES orgs (id),
    name TEXT NOT NULL,
    environment TEXT NOT NULL,
    start TEXT NOT NULL,
    scopes TEXT NOT NULL,
    metadata TEXT NOT NULL,
    rate_limit INTEGER,
    rate_window_seconds INTEGER,
    created_by TEXT,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    expires_at INTEGER,
    revoked_at INTEGER,
    last_used_at INTEGER
);
CREATE INDEX api_keys_by_org ON api_keys (org_id, id);

-- Every secret of a key by hash; a rotated-out secret works until `retires_at`.
CREATE TABLE api_key_secrets (
    hash TEXT PRIMARY KEY,
    key_id TEXT NOT NULL REFERENCES api_keys (id),
    start TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    retires_at INTEGER
);
CREATE INDEX api_key_secrets_by_key ON api_key_secrets (key_id);

CREATE TABLE usage_monthly (
    org_id TEXT NOT NULL REFERENCES orgs (id),
    meter TEXT NOT NULL,
    month TEXT NOT NULL,
    quantity INTEGER NOT NULL,
    PRIMARY KEY (org_id, meter, month)
);
