-- Pushes waiting for redelivery are written as they are kept, not only at
-- a clean stop, so that a server that dies loses none. owner is the
-- server that keeps one (NULL once released: at a clean stop, or when the
-- owner's lease ran out), device the device it is for, one push per
-- device and owner.
ALTER TABLE held_pushes ADD COLUMN owner TEXT;
ALTER TABLE held_pushes ADD COLUMN device TEXT;
CREATE UNIQUE INDEX held_pushes_owner_device ON held_pushes (owner, device);

-- The leases of the servers keeping pushes: while lease_until (Unix
-- nanoseconds) has not passed, no other server takes their pushes.
CREATE TABLE redelivery_owners (
    owner       TEXT PRIMARY KEY,
    lease_until INTEGER NOT NULL
);
