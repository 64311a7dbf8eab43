-- An operator's webhook endpoint may receive every org's events (`all_orgs`), not only its own
-- org's. Keep migrations/{sqlite,postgres} in step.

ALTER TABLE webhook_endpoints ADD COLUMN all_orgs BOOLEAN NOT NULL DEFAULT FALSE;
