-- Held pushes released by their server (owner NULL) are taken oldest
-- first, a page at a time. Without an index in that order every page
-- sorted the whole released set under the write lock: 120 ms a page,
-- 7.9 s for 65,536 pushes, while registrations waited. PostgreSQL's
-- 008_held_pushes has the same index.
CREATE INDEX held_pushes_released ON held_pushes (failed_at, id) WHERE owner IS NULL;
