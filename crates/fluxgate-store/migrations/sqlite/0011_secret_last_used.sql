-- When each secret of a key was last presented (to a minute), so that during a rotation's grace
-- period the owner can see whether the old secret is still being called. Written only for
-- secrets being rotated out. Keep migrations/{sqlite,postgres} in step.

ALTER TABLE api_key_secrets ADD COLUMN last_used_at INTEGER;
