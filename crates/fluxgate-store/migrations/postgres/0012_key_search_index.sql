-- Searching an org's keys by name or start reads this index alone (name and start ride along
-- with the keyset order), not each key's whole row; it replaces the plain (org_id, id) index,
-- which serves every query that one did. Keep migrations/{sqlite,postgres} in step.

DROP INDEX api_keys_by_org;
CREATE INDEX api_keys_by_org ON api_keys (org_id, id, name, start);
