package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"time"
)

// FollowInterval is how often Follow looks for changes: the longest a
// running server serves a registration another process changed from its
// cache.
const FollowInterval = 250 * time.Millisecond

// changeRetention is how long a change stays in the log after a follower
// saw it, at least. A follower polls every FollowInterval, so only one
// stalled for longer (a stopped process) misses rows, and it notices.
const changeRetention = time.Minute

// Follow tells the caller about registrations changed by anyone writing
// the file, this process or another one, until ctx is done. It calls
// live(true) once it follows, changed(node) for every change after that,
// and live(false) then live(true) when it finds it missed changes (the
// caller must forget what it cached). It returns the first error reading
// the log, after live(false).
//
// It holds one read connection of its own and asks it PRAGMA
// data_version every FollowInterval, which changes only when another
// connection committed: an idle registry costs one pragma per poll, and
// the change log is read only after a commit. It also prunes the log, and
// tries again later when a prune fails.
func (s *Store) Follow(ctx context.Context, changed func(node string), live func(bool)) error {
	conn, err := s.read.Conn(ctx)
	if err != nil {
		return fmt.Errorf("change feed: %w", err)
	}
	defer conn.Close()
	f := &follower{conn: conn}
	if f.version, err = f.dataVersion(ctx); err != nil {
		return err
	}
	// Everything up to the last seq ever given out is before us, even
	// when pruning emptied the table.
	err = conn.QueryRowContext(ctx, sqlLastChange).Scan(&f.seq)
	if err != nil {
		return fmt.Errorf("change feed: %w", err)
	}
	live(true)
	defer live(false)
	// Every retention, the changes seen by the previous one go: each is
	// kept at least that long after this follower saw it.
	mark, prunedTo, pruned := f.seq, int64(0), time.Now()
	pruneTo := int64(0) // the mark the log is being pruned to
	pruneFailed := false
	t := time.NewTicker(FollowInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		err := f.poll(ctx, changed, live)
		if now := time.Now(); err == nil && now.Sub(pruned) >= s.retention {
			pruneTo = max(pruneTo, mark)
			mark, pruned, pruneFailed = f.seq, now, false
		}
		// One batch a poll: a log grown large (an import) is pruned
		// without holding the write lock, or this feed, for long. A
		// prune that fails (a full disk) is tried again, up to a later
		// mark, at the next retention. Following goes on meanwhile:
		// ending the feed would turn the caller's cache off when the
		// server needs it most, and the log only grows by what can
		// still be written.
		if err == nil && pruneTo > prunedTo && !pruneFailed {
			done, perr := s.pruneChanges(ctx, pruneTo)
			switch {
			case perr != nil:
				pruneFailed = true
			case done:
				prunedTo = pruneTo
			}
		}
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
	}
}

// sqlLastChange reads the last seq given out, which AUTOINCREMENT keeps in
// sqlite_sequence even when pruning emptied the log.
const sqlLastChange = `SELECT COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'registration_changes'), 0)`

type follower struct {
	conn    *sql.Conn
	version int64
	seq     int64 // the last change seen
}

func (f *follower) dataVersion(ctx context.Context) (int64, error) {
	var v int64
	if err := f.conn.QueryRowContext(ctx, `PRAGMA data_version`).Scan(&v); err != nil {
		return 0, fmt.Errorf("change feed: data_version: %w", err)
	}
	return v, nil
}

// poll reads the changes committed since the last poll, if any. The log
// and the last seq given out are read in one snapshot: when the rows are
// not exactly the seqs after the last one seen, some were pruned before
// this follower read them, and it goes live anew so the caller forgets
// everything.
func (f *follower) poll(ctx context.Context, changed func(string), live func(bool)) error {
	v, err := f.dataVersion(ctx)
	if err != nil || v == f.version {
		return err
	}
	tx, err := f.conn.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return fmt.Errorf("change feed: %w", err)
	}
	defer tx.Rollback()
	var last int64
	err = tx.QueryRowContext(ctx, sqlLastChange).Scan(&last)
	if err != nil {
		return fmt.Errorf("change feed: %w", err)
	}
	if last == f.seq {
		f.version = v
		return nil
	}
	rows, err := tx.QueryContext(ctx, `SELECT seq, node FROM registration_changes WHERE seq > ? ORDER BY seq`, f.seq)
	if err != nil {
		return fmt.Errorf("change feed: %w", err)
	}
	defer rows.Close()
	var nodes []string
	complete := true
	want := f.seq + 1
	for rows.Next() {
		var seq int64
		var node string
		if err := rows.Scan(&seq, &node); err != nil {
			return fmt.Errorf("change feed: %w", err)
		}
		complete = complete && seq == want
		want = seq + 1
		nodes = append(nodes, node)
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("change feed: %w", err)
	}
	complete = complete && want == last+1
	// Taken only once the rows are read: a failed read is read again.
	f.version, f.seq = v, last
	if !complete {
		live(false)
		live(true)
		return nil
	}
	for _, n := range nodes {
		changed(n)
	}
	return nil
}

// pruneBatch is how many changes one statement of pruneChanges deletes:
// the writer holds the write lock for each, so a log grown large (an
// import, a burst) is not deleted in one statement that registrations
// wait for.
const pruneBatch = 20000

// pruneChanges deletes up to pruneBatch of the changes up to seq, and
// reports whether none are left.
func (s *Store) pruneChanges(ctx context.Context, seq int64) (bool, error) {
	res, err := s.write.ExecContext(ctx, `DELETE FROM registration_changes WHERE seq IN
		(SELECT seq FROM registration_changes WHERE seq <= ? ORDER BY seq LIMIT ?)`, seq, pruneBatch)
	if err != nil {
		return false, fmt.Errorf("change feed: pruning: %w", err)
	}
	n, _ := res.RowsAffected()
	return n < pruneBatch, nil
}
