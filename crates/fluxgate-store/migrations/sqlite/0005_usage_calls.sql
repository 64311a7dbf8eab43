-- Attribution: calls authenticated by an API key and verifies, counted per org, key, endpoint,
-- outcome and minute (written in batches by each node). Keep migrations/{sqlite,postgres} in step.

CREATE TABLE usage_calls (
    org_id TEXT NOT NULL,
    key_id TEXT NOT NULL,
    endpoint TEXT NOT NULL,
    outcome TEXT NOT NULL,
    minute INTEGER NOT NULL,
    count INTEGER NOT NULL,
    PRIMARY KEY (org_id, minute, key_id, endpoint, outcome)
);
CREATE INDEX usage_calls_by_key ON usage_calls (key_id, minute);
