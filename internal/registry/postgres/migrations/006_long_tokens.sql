-- A device token may be 4096 bytes long (the API's limit), more than a
-- btree index entry holds (about 2700 bytes): such a registration could
-- not be stored. Dead-token removal finds registrations through a hash
-- index on the token (equality is all it needs), and the block list is
-- keyed by the token's SHA-256, which the store computes.
--
-- The new index is built before the old one is dropped: DROP INDEX locks
-- the table against reads (ACCESS EXCLUSIVE) until the migration
-- commits, and the build reads every registration (9 s for 10,000,000),
-- during which the instances of a rolling upgrade that still serve could
-- read no registration. Built first, it holds only a SHARE lock, which
-- lets their pushes read on.
--
-- But first the lock DROP INDEX needs is taken and let go at once (a
-- savepoint rolled back releases it): behind a long reader (pg_dump, an
-- open transaction) it cannot be had, the try fails within the
-- runner's lock_timeout, and the runner tries again. Without this, each
-- try built the whole index, stopping every registration's write for
-- the build's seconds, only to be rolled back at DROP INDEX, for as long
-- as the reader ran.
SAVEPOINT drop_lock;
LOCK TABLE registrations IN ACCESS EXCLUSIVE MODE;
ROLLBACK TO SAVEPOINT drop_lock;
CREATE INDEX registrations_token ON registrations USING hash (token);
DROP INDEX registrations_type_token;

ALTER TABLE blocked_tokens ADD COLUMN token_key BYTEA;
UPDATE blocked_tokens SET token_key = sha256(convert_to(token, 'UTF8'));
ALTER TABLE blocked_tokens ALTER COLUMN token_key SET NOT NULL;
ALTER TABLE blocked_tokens DROP CONSTRAINT blocked_tokens_pkey;
ALTER TABLE blocked_tokens ADD PRIMARY KEY (type, token_key);
