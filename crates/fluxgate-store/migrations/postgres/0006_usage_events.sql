-- Metered usage reported by the product (POST /sdk/track). An idempotency key counts once,
-- ever, per org: the unique index enforces it. Keep migrations/{sqlite,postgres} in step.

CREATE TABLE usage_events (
    id TEXT PRIMARY KEY,
    org_id TEXT NOT NULL REFERENCES orgs (id),
    meter TEXT NOT NULL,
    quantity DOUBLE PRECISION NOT NULL,
    occurred_at BIGINT NOT NULL,
    idempotency_key TEXT,
    created_at BIGINT NOT NULL
);
CREATE UNIQUE INDEX usage_events_idempotency ON usage_events (org_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX usage_events_by_org_meter ON usage_events (org_id, meter, occurred_at);
