-- Push outcomes move to a table of their own. The push path writes one
-- per push (batched, appserver's statusWriter), and SQLite rewrites a
-- whole row to change one column: a narrow row here costs a fraction of a
-- registration's. A node has a row once it was pushed to; registrations
-- are read joined with it.
CREATE TABLE push_status (
    node                 TEXT PRIMARY KEY NOT NULL,
    last_successful_push INTEGER,
    last_push_error      INTEGER,
    last_error_reason    TEXT NOT NULL DEFAULT ''
) WITHOUT ROWID;

INSERT INTO push_status (node, last_successful_push, last_push_error, last_error_reason)
    SELECT node, last_successful_push, last_push_error, last_error_reason FROM registrations
    WHERE last_successful_push IS NOT NULL OR last_push_error IS NOT NULL OR last_error_reason <> '';

ALTER TABLE registrations DROP COLUMN last_successful_push;
ALTER TABLE registrations DROP COLUMN last_push_error;
ALTER TABLE registrations DROP COLUMN last_error_reason;

-- A trigger rather than the store's statements, so a registration deleted
-- by another process (the admin CLI, the sqlite3 shell) leaves no outcome
-- behind for a node registered again later.
CREATE TRIGGER push_status_deleted AFTER DELETE ON registrations
BEGIN
    DELETE FROM push_status WHERE node = OLD.node;
END;
