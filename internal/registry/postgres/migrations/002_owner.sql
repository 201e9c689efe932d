-- Mirrors SQLite's 002_owner: the account a registration made over XMPP
-- belongs to, as a salted hash ('' for registrations made over HTTP).
ALTER TABLE registrations ADD COLUMN owner TEXT NOT NULL DEFAULT '';
