-- account: the bare JID of registrations whose client reads it back from
-- the push payload (Tigase register-device: Siskin's notification
-- extension picks the decryption key by it). Empty for every other scheme.
ALTER TABLE registrations ADD COLUMN account TEXT NOT NULL DEFAULT '';

-- Device tokens a push service declared dead that have no registration to
-- delete (tokenless and publish-options pushes). Times are Unix
-- nanoseconds (UTC).
CREATE TABLE blocked_tokens (
    type    TEXT NOT NULL,
    token   TEXT NOT NULL,
    since   INTEGER NOT NULL,
    until   INTEGER NOT NULL,
    reason  TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (type, token)
) WITHOUT ROWID;
