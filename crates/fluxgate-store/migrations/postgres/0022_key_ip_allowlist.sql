-- A key's IP allowlist: a JSON array of CIDR ranges (`203.0.113.7/32`, `2001:db8::/32`) it may
-- be used from; empty allows any address. Keep migrations/{sqlite,postgres} in step.

ALTER TABLE api_keys ADD COLUMN ip_allowlist TEXT NOT NULL DEFAULT '[]';
