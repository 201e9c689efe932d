-- A renewal (a client registering again with the same token, as Monal and
-- yaxim do at every start) writes the same values with a new renewed
-- time. It changes nothing an instance caches, yet it was announced, and
-- every other instance dropped the device and answered the writer, who
-- waited for them. Only a write that changes one of the columns watched
-- is announced now; the store expects acks for exactly those
-- (announced in echo.go).
CREATE OR REPLACE FUNCTION registrations_notify() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    writer TEXT := coalesce(current_setting('push_appserver.writer', true), '');
BEGIN
    IF TG_OP = 'UPDATE' AND (OLD.node, OLD.type, OLD.token, OLD.secret, OLD.domain, OLD.device_key, OLD.owner, OLD.account)
            IS NOT DISTINCT FROM (NEW.node, NEW.type, NEW.token, NEW.secret, NEW.domain, NEW.device_key, NEW.owner, NEW.account) THEN
        RETURN NULL;
    END IF;
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
