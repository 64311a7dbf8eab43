-- An operator can disable an org (its keys stop verifying, answering ORG_DISABLED) and enable
-- it again. Keep migrations/{sqlite,postgres} in step.

ALTER TABLE orgs ADD COLUMN disabled_at INTEGER;
