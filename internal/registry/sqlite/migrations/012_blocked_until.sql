-- The block list is read by its end: the hourly purge of ended blocks,
-- and the cap on its rows, which drops the blocks ending soonest.
CREATE INDEX blocked_tokens_until ON blocked_tokens (until);
