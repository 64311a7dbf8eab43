-- Leaked keys: what an org wants done when a secret scanner reports one of its keys found in
-- public (`revoke` at once, or `flag` it so verify answers LEAKED), and when a key was flagged.
-- Keep migrations/{sqlite,postgres} in step.

ALTER TABLE orgs ADD COLUMN leaked_key_action TEXT NOT NULL DEFAULT 'revoke';
ALTER TABLE api_keys ADD COLUMN leaked_at BIGINT;
