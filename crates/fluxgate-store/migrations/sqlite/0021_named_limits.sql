-- Named limits of a key (`tokens`, `exports`): a JSON array of {name, limit, window_seconds},
-- spent by verifies that name them. Org-wide named limits come from the org's plan (config).
-- Keep migrations/{sqlite,postgres} in step.

ALTER TABLE api_keys ADD COLUMN named_limits TEXT NOT NULL DEFAULT '[]';
