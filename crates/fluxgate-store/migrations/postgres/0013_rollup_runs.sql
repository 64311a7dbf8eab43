-- The usage roll-up runs once per cluster, not once per node: the node that claims this row
-- (its ran_at older than the roll-up period) rolls up, the others skip and read where the
-- roll-ups have got to. Keep migrations/{sqlite,postgres} in step.

CREATE TABLE usage_rollup_runs (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    ran_at BIGINT NOT NULL,
    hours_to BIGINT NOT NULL,
    days_to BIGINT NOT NULL
);
INSERT INTO usage_rollup_runs (id, ran_at, hours_to, days_to) VALUES (1, 0, 0, 0);
