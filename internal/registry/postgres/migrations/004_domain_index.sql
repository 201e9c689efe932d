-- Mirrors SQLite's 004_domain_index: the per-domain registration quota
-- counts registrations by domain.
CREATE INDEX registrations_domain ON registrations (domain) WHERE domain <> '';
