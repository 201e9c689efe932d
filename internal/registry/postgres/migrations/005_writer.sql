-- A change notification names the instance that wrote it ("<writer> <node>",
-- the writer empty for writes outside an instance: imports, admin commands,
-- psql), so that the other instances can confirm to the writer that they
-- dropped their cached copy before its write returns.
CREATE OR REPLACE FUNCTION registrations_notify() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    writer TEXT := coalesce(current_setting('push_appserver.writer', true), '');
BEGIN
    IF TG_OP = 'INSERT' THEN
        PERFORM pg_notify('push_appserver_registrations', writer || ' ' || NEW.node);
    ELSE
        PERFORM pg_notify('push_appserver_registrations', writer || ' ' || OLD.node);
        IF TG_OP = 'UPDATE' AND NEW.node <> OLD.node THEN
            PERFORM pg_notify('push_appserver_registrations', writer || ' ' || NEW.node);
        END IF;
    END IF;
    RETURN NULL;
END
$$;
