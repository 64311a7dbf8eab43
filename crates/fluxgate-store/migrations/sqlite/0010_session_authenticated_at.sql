-- When the session last proved its password (login, or a confirmation before a sensitive change
-- in the portal); NULL means at creation. Keep migrations/{sqlite,postgres} in step.

ALTER TABLE sessions ADD COLUMN authenticated_at INTEGER;
