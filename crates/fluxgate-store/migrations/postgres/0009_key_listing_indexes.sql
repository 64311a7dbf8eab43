-- The portal's key views stay fast with tens of thousands of keys per org: keys about to expire
-- (the overview) and the revoked ones (a status filter) each have their own partial index, so
-- neither scans the org's live keys. Keep migrations/{sqlite,postgres} in step.

CREATE INDEX api_keys_expiring ON api_keys (org_id, expires_at)
    WHERE revoked_at IS NULL AND expires_at IS NOT NULL;
CREATE INDEX api_keys_revoked ON api_keys (org_id, id) WHERE revoked_at IS NOT NULL;
