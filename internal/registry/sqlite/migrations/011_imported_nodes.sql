-- The nodes an import from mod_push_appserver wrote, each with the time
-- its record there was last registered (Unix nanoseconds). A registration
-- removed here since (unregistered, its token dead) is no longer in
-- registrations but still here, so running the import again does not
-- bring it back unless its record there is newer. Written by the import
-- alone, in the transaction that writes the registrations.
CREATE TABLE imported_nodes (
    node       TEXT PRIMARY KEY,
    registered INTEGER NOT NULL
) WITHOUT ROWID;
