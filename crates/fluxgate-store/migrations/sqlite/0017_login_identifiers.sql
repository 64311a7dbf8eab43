-- Login identifiers besides the email address, when the operator turns them on: a username and
-- a document number (both normalised by the server), each unique among accounts that have one.
-- Keep migrations/{sqlite,postgres} in step.

ALTER TABLE users ADD COLUMN username TEXT;
ALTER TABLE users ADD COLUMN document TEXT;
CREATE UNIQUE INDEX users_by_username ON users (username) WHERE username IS NOT NULL;
CREATE UNIQUE INDEX users_by_document ON users (document) WHERE document IS NOT NULL;
