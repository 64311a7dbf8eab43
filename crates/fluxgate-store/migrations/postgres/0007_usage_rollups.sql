-- Hourly and daily roll-ups of usage_calls, so long ranges read few rows and minute rows can be
-- deleted after their retention. Keep migrations/{sqlite,postgres} in step.

CREATE TABLE usage_calls_hourly (
    org_id TEXT NOT NULL,
    key_id TEXT NOT NULL,
    endpoint TEXT NOT NULL,
    outcome TEXT NOT NULL,
    bucket BIGINT NOT NULL,
    count BIGINT NOT NULL,
    PRIMARY KEY (org_id, bucket, key_id, endpoint, outcome)
);

CREATE TABLE usage_calls_daily (
    org_id TEXT NOT NULL,
    key_id TEXT NOT NULL,
    endpoint TEXT NOT NULL,
    outcome TEXT NOT NULL,
    bucket BIGINT NOT NULL,
    count BIGINT NOT NULL,
    PRIMARY KEY (org_id, bucket, key_id, endpoint, outcome)
);
