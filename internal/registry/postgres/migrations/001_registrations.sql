-- Mirrors the SQLite schema's 001_registrations. NULL times mean never.
CREATE TABLE registrations (
    node                 TEXT PRIMARY KEY,
    type                 TEXT NOT NULL,
    token                TEXT NOT NULL,
    secret               TEXT NOT NULL,
    registered           TIMESTAMPTZ NOT NULL,
    renewed              TIMESTAMPTZ,
    last_successful_push TIMESTAMPTZ,
    last_push_error      TIMESTAMPTZ,
    last_error_reason    TEXT NOT NULL DEFAULT '',
    domain               TEXT NOT NULL DEFAULT '',
    device_key           TEXT
);

-- Dead-token removal looks registrations up by token.
CREATE INDEX registrations_type_token ON registrations (type, token);
CREATE UNIQUE INDEX registrations_device_key ON registrations (device_key) WHERE device_key IS NOT NULL;

CREATE TABLE instance_values (
    name  TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

-- Every instance caches registrations; any change to what a push reads
-- (push status aside) is announced so they drop their copy. A trigger
-- rather than the store's own statements, so imports and manual fixes in
-- psql are announced too.
CREATE FUNCTION registrations_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        PERFORM pg_notify('push_appserver_registrations', NEW.node);
    ELSE
        PERFORM pg_notify('push_appserver_registrations', OLD.node);
        IF TG_OP = 'UPDATE' AND NEW.node <> OLD.node THEN
            PERFORM pg_notify('push_appserver_registrations', NEW.node);
        END IF;
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER registrations_notify
    AFTER INSERT OR DELETE OR UPDATE OF node, type, token, secret, domain, device_key ON registrations
    FOR EACH ROW EXECUTE FUNCTION registrations_notify();
