-- Usage credits counted in Redis (when it is configured) reach the database a moment later,
-- from every node, in any order: each count carries the number of changes Redis had made to
-- it, and a count is written only over an older one. Keep migrations/{sqlite,postgres} in step.

ALTER TABLE api_keys ADD COLUMN credits_seq BIGINT NOT NULL DEFAULT 0;
