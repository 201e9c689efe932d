-- Mirrors SQLite's 003_dialects: the account a Tigase registration was
-- made from ('' otherwise), and the tokens a push service declared dead
-- that have no registration to delete (tokenless pushes).
ALTER TABLE registrations ADD COLUMN account TEXT NOT NULL DEFAULT '';

CREATE TABLE blocked_tokens (
    type    TEXT NOT NULL,
    token   TEXT NOT NULL,
    since   TIMESTAMPTZ NOT NULL,
    until   TIMESTAMPTZ NOT NULL,
    reason  TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (type, token)
);

-- The account goes into every push: caches must drop a registration whose
-- account changed.
DROP TRIGGER registrations_notify ON registrations;
CREATE TRIGGER registrations_notify
    AFTER INSERT OR DELETE OR UPDATE OF node, type, token, secret, domain, device_key, account ON registrations
    FOR EACH ROW EXECUTE FUNCTION registrations_notify();
