-- Pushes waiting for redelivery are written as they are kept, not only at
-- a clean stop, so that an instance that dies loses none. owner is the
-- instance that keeps one (NULL once released: at a clean stop, or when
-- the owner's lease ran out), device the device it is for, one push per
-- device and owner.
ALTER TABLE held_pushes ADD COLUMN owner TEXT, ADD COLUMN device TEXT;
CREATE UNIQUE INDEX held_pushes_owner_device ON held_pushes (owner, device);
CREATE INDEX held_pushes_released ON held_pushes (failed_at, id) WHERE owner IS NULL;

-- The leases of the instances keeping pushes: until lease_until, no
-- other instance takes their pushes.
CREATE TABLE redelivery_owners (
    owner       TEXT PRIMARY KEY,
    lease_until TIMESTAMPTZ NOT NULL
);
