-- What an org may do beyond its plan: the operator's per-org entitlement overrides (grant or
-- deny, possibly until a time: a trial), and the instance's feature flags with their targeting
-- (an org list, plans, a stable percentage rollout) and kill switch (`enabled`). Verify answers
-- from memory: overrides are read with a key's context, flags kept by every node.
-- Keep migrations/{sqlite,postgres} in step.

CREATE TABLE entitlement_overrides (
    org_id TEXT NOT NULL REFERENCES orgs (id),
    entitlement TEXT NOT NULL,
    effect TEXT NOT NULL,
    expires_at BIGINT,
    note TEXT NOT NULL DEFAULT '',
    created_by TEXT,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (org_id, entitlement)
);

CREATE TABLE feature_flags (
    name TEXT PRIMARY KEY,
    description TEXT NOT NULL DEFAULT '',
    enabled BOOLEAN NOT NULL,
    variant TEXT,
    default_variant TEXT,
    orgs TEXT NOT NULL DEFAULT '[]',
    plans TEXT NOT NULL DEFAULT '[]',
    rollout_percent BIGINT NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
