-- Webhooks (events and deliveries are ordered by `seq`, the order they were written in; ids
-- made in the same millisecond do not sort by time): an org's endpoints, the outbox of events (written in the same transaction as the
-- audit entry of the change), and one delivery per event and subscribed endpoint, retried with
-- back-off, at most one claimed at a time per endpoint so each endpoint gets its events in order.
-- Keep migrations/{sqlite,postgres} in step.

CREATE TABLE webhook_endpoints (
    id TEXT PRIMARY KEY,
    org_id TEXT NOT NULL REFERENCES orgs (id),
    url TEXT NOT NULL,
    events TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    secret_sealed TEXT NOT NULL,
    enabled BOOLEAN NOT NULL DEFAULT TRUE,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    deleted_at BIGINT
);
CREATE INDEX webhook_endpoints_by_org ON webhook_endpoints (org_id);

CREATE TABLE webhook_events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    org_id TEXT NOT NULL,
    event_type TEXT NOT NULL,
    payload TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    dispatched BOOLEAN NOT NULL DEFAULT FALSE
);
CREATE INDEX webhook_events_undispatched ON webhook_events (dispatched, seq);

CREATE TABLE webhook_deliveries (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    endpoint_id TEXT NOT NULL REFERENCES webhook_endpoints (id),
    event_id TEXT NOT NULL REFERENCES webhook_events (id),
    status TEXT NOT NULL,
    attempts BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    claimed_until BIGINT NOT NULL DEFAULT 0,
    last_status BIGINT,
    last_error TEXT,
    created_at BIGINT NOT NULL,
    delivered_at BIGINT
);
CREATE INDEX webhook_deliveries_by_endpoint ON webhook_deliveries (endpoint_id, status, seq);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (status, next_attempt_at);
