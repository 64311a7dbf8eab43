-- A key with its own limit may ask for it to be decided exactly: with several nodes, every
-- call is then a Redis round trip instead of being spent from the node's lease.
-- Keep migrations/{sqlite,postgres} in step.

ALTER TABLE api_keys ADD COLUMN rate_exact BOOLEAN NOT NULL DEFAULT FALSE;
