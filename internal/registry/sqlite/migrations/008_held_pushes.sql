-- Pushes that failed and were still waiting to be sent again when their
-- server stopped (appserver's redelivery). The next server to start takes
-- them, so a restart during a push service's outage loses none. push is
-- the server's own encoding of the push; failed_at is when the device's
-- latest push failed, from which redelivery counts.
CREATE TABLE held_pushes (
    id        INTEGER PRIMARY KEY,
    failed_at INTEGER NOT NULL,
    push      BLOB NOT NULL
);
