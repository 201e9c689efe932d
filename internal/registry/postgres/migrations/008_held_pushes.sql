-- Pushes that failed and were still waiting to be sent again when their
-- instance stopped (appserver's redelivery). The next instance to start
-- takes them, so a rolling restart during a push service's outage loses
-- none. push is the server's own encoding of the push; failed_at is when
-- the device's latest push failed, from which redelivery counts.
CREATE TABLE held_pushes (
    id        BIGSERIAL PRIMARY KEY,
    failed_at TIMESTAMPTZ NOT NULL,
    push      BYTEA NOT NULL
);
