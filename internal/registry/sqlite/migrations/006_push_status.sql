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

-- registrations keeps its columns last_successful_push, last_push_error
-- and last_error_reason, no longer read or written: they keep the values
-- they had at this upgrade. Dropping them would
-- rewrite the table, and would break a server of the previous version
-- still running on this file, as when an upgraded binary's command runs
-- before the server is restarted: its statements name them.

-- A trigger rather than the store's statements, so a registration deleted
-- by another process (the admin CLI, the sqlite3 shell) leaves no outcome
-- behind for a node registered again later.
CREATE TRIGGER push_status_deleted AFTER DELETE ON registrations
BEGIN
    DELETE FROM push_status WHERE node = OLD.node;
END;
