-- Searching an org's keys by name or start reads this index alone (name and start ride along
-- with the keyset order), not each key's whole row; it replaces the plain (org_id, id) index,
-- which serves every query that one did. Keep migrations/{sqlite,postgres} in step.

DROP INDEX api_keys_by_org;
CREATE INDEX api_keys_by_org ON api_keys (org_id, id, name, start);

-- And where the pg_trgm extension can be had (it ships with PostgreSQL's contrib and is trusted,
-- so a database owner may create it), a trigram index answers a search of three or more
-- characters without reading the org's keys at all. Where it cannot, search scans the index above.
DO $$
BEGIN
    CREATE EXTENSION IF NOT EXISTS pg_trgm;
    CREATE INDEX api_keys_search ON api_keys
        USING gin (LOWER(name) gin_trgm_ops, LOWER(start) gin_trgm_ops);
EXCEPTION WHEN OTHERS THEN
    RAISE NOTICE 'pg_trgm is not available (%): key search scans the (org_id, id, name, start) index', SQLERRM;
END
$$;
