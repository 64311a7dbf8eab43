-- Organizations: invitations, and the indexes that member, role and audit queries use.
-- Keep migrations/{sqlite,postgres} in step.

CREATE TABLE invitations (
    id TEXT PRIMARY KEY,
    org_id TEXT NOT NULL REFERENCES orgs (id),
    email TEXT NOT NULL,
    role TEXT NOT NULL,
    token_hash TEXT NOT NULL UNIQUE,
    invited_by TEXT REFERENCES users (id),
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    accepted_at BIGINT,
    accepted_by TEXT REFERENCES users (id),
    canceled_at BIGINT
);
-- At most one open invitation per address and org.
CREATE UNIQUE INDEX invitations_one_open ON invitations (org_id, email)
    WHERE accepted_at IS NULL AND canceled_at IS NULL;

CREATE INDEX memberships_by_org_role ON memberships (org_id, role);
CREATE INDEX audit_log_by_org_action ON audit_log (org_id, action, id);
