-- The per-domain registration quota counts registrations by domain.
CREATE INDEX registrations_domain ON registrations (domain) WHERE domain <> '';
