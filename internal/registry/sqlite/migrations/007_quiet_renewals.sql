-- A renewal (a client registering again with the same token, as Monal and
-- yaxim do at every start) writes the same values with a new renewed
-- time. It changes nothing a follower caches, yet it was logged, and
-- every follower dropped the device. Only a write that changes one of
-- the columns watched is logged now. Mirrors PostgreSQL's
-- 007_quiet_renewals.
DROP TRIGGER registrations_changed_update;

CREATE TRIGGER registrations_changed_update
    AFTER UPDATE OF node, type, token, secret, domain, device_key, owner, account ON registrations
    WHEN OLD.node IS NOT NEW.node OR OLD.type IS NOT NEW.type OR OLD.token IS NOT NEW.token
        OR OLD.secret IS NOT NEW.secret OR OLD.domain IS NOT NEW.domain
        OR OLD.device_key IS NOT NEW.device_key OR OLD.owner IS NOT NEW.owner
        OR OLD.account IS NOT NEW.account
BEGIN
    INSERT INTO registration_changes (node) VALUES (OLD.node);
    INSERT INTO registration_changes (node) SELECT NEW.node WHERE NEW.node <> OLD.node;
END;
