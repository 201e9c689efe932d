-- The change log a running server follows to drop the registrations it
-- cached (see changes.go). Triggers rather than the store's own statements
-- fill it, so what another process writes is logged too: the admin CLI,
-- an import, a manual fix in the sqlite3 shell. Push status is not what a
-- push reads and is not logged, so the push path writes nothing here.
-- AUTOINCREMENT: a seq is never reused once pruned, so a follower that
-- finds one missing knows it missed a change.
CREATE TABLE registration_changes (
    seq  INTEGER PRIMARY KEY AUTOINCREMENT,
    node TEXT NOT NULL
);

CREATE TRIGGER registrations_changed_insert AFTER INSERT ON registrations
BEGIN
    INSERT INTO registration_changes (node) VALUES (NEW.node);
END;

CREATE TRIGGER registrations_changed_delete AFTER DELETE ON registrations
BEGIN
    INSERT INTO registration_changes (node) VALUES (OLD.node);
END;

CREATE TRIGGER registrations_changed_update
    AFTER UPDATE OF node, type, token, secret, domain, device_key, owner, account ON registrations
BEGIN
    INSERT INTO registration_changes (node) VALUES (OLD.node);
    INSERT INTO registration_changes (node) SELECT NEW.node WHERE NEW.node <> OLD.node;
END;
