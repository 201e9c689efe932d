-- Times are Unix nanoseconds (UTC); NULL means never.
CREATE TABLE registrations (
    node                 TEXT PRIMARY KEY NOT NULL,
    type                 TEXT NOT NULL,
    token                TEXT NOT NULL,
    secret               TEXT NOT NULL,
    registered           INTEGER NOT NULL,
    renewed              INTEGER,
    last_successful_push INTEGER,
    last_push_error      INTEGER,
    last_error_reason    TEXT NOT NULL DEFAULT '',
    domain               TEXT NOT NULL DEFAULT '',
    device_key           TEXT
) WITHOUT ROWID;

-- Dead-token removal looks registrations up by token.
CREATE INDEX registrations_type_token ON registrations (type, token);
CREATE UNIQUE INDEX registrations_device_key ON registrations (device_key) WHERE device_key IS NOT NULL;

CREATE TABLE instance_values (
    name  TEXT PRIMARY KEY NOT NULL,
    value TEXT NOT NULL
) WITHOUT ROWID;
