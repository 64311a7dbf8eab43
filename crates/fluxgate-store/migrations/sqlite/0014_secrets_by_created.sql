-- Secrets by creation time: each node reads the secrets created lately every
-- keys.cache_max_age (to learn keys whose announcement it missed) without scanning them all.
CREATE INDEX api_key_secrets_by_created ON api_key_secrets (created_at);
