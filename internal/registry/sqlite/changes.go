package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
	"unsafe"

	"modernc.org/libc"
	lib "modernc.org/sqlite/lib"
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
	f, err := newFollower(conn)
	if err != nil {
		return err
	}
	// Before the connection goes back to its pool.
	defer f.close()
	if err := f.start(); err != nil {
		return err
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
		err := f.poll(changed, live)
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

// follower reads the change log through SQLite's C API on the feed's
// connection, borrowed from the read pool for as long as Follow runs, as
// regWriter does on the writer's (regwriter.go). Every registration is a
// row here, read back by every follower: through database/sql and the
// driver each cost the row's values boxed and converted, its text copied
// twice, and the rows object's locks and checks; here the statements are
// prepared once and the nodes of a poll are copied into one string.
//
// Used by Follow's goroutine alone; its TLS is not shared.
type follower struct {
	conn    *sql.Conn
	version int64
	seq     int64 // the last change seen

	tls   *libc.TLS
	db    uintptr // the connection the statements were prepared on
	stmts [nFeedStmts]uintptr
	out   uintptr // receives the C API's output pointers

	// Kept from poll to poll: the nodes read, as ends of one string.
	buf  []byte
	ends []int
}

// The feed's statements, by their index in follower.stmts.
const (
	feedVersion = iota
	feedBegin
	feedLast
	feedChanges
	feedEnd
	nFeedStmts
)

var feedSQL = [nFeedStmts]string{
	feedVersion: `PRAGMA data_version`,
	// A read transaction: the log and the last seq given out are read in
	// one snapshot. DEFERRED takes no lock until the first read.
	feedBegin:   `BEGIN`,
	feedLast:    sqlLastChange,
	feedChanges: `SELECT seq, node FROM registration_changes WHERE seq > ? ORDER BY seq`,
	feedEnd:     `ROLLBACK`, // it wrote nothing
}

func newFollower(conn *sql.Conn) (*follower, error) {
	f := &follower{conn: conn, tls: libc.NewTLS()}
	if f.out = cMalloc(libc.Xmalloc, f.tls, int(unsafe.Sizeof(uintptr(0)))); f.out == 0 {
		f.close()
		return nil, errors.New("change feed: out of memory")
	}
	return f, nil
}

// close finalizes the statements, which must go before the connection
// goes back to its pool, and frees what the follower holds.
func (f *follower) close() {
	f.finalize()
	if f.out != 0 {
		libc.Xfree(f.tls, f.out)
		f.out = 0
	}
	f.tls.Close()
}

func (f *follower) finalize() {
	finalizeAll(f.tls, f.stmts[:])
	f.db = 0
}

// with runs g with the statements ready on the feed's connection.
func (f *follower) with(g func() error) error {
	return f.conn.Raw(func(dc any) error {
		db, err := connHandle(dc)
		if err != nil {
			return err
		}
		if db != f.db {
			f.finalize()
			if err := prepareAll(f.tls, db, feedSQL[:], f.stmts[:], f.out); err != nil {
				f.finalize()
				return fmt.Errorf("change feed: %w", err)
			}
			f.db = db
		}
		return g()
	})
}

func (f *follower) errorf(db uintptr, what string, rc int32) error {
	return fmt.Errorf("change feed: %w", cError(f.tls, db, what, rc))
}

// exec runs statement i, which returns no row, and resets it.
func (f *follower) exec(i int, what string) error {
	st := f.stmts[i]
	rc := lib.Xsqlite3_step(f.tls, st)
	lib.Xsqlite3_reset(f.tls, st)
	if rc != lib.SQLITE_DONE {
		return f.errorf(f.db, what, rc)
	}
	return nil
}

// int64 runs statement i, which returns one row of one integer, and
// resets it.
func (f *follower) int64(i int, what string) (int64, error) {
	st := f.stmts[i]
	defer lib.Xsqlite3_reset(f.tls, st)
	if rc := lib.Xsqlite3_step(f.tls, st); rc != lib.SQLITE_ROW {
		return 0, f.errorf(f.db, what, rc)
	}
	return lib.Xsqlite3_column_int64(f.tls, st, 0), nil
}

// start reads the data version and the last seq given out.
func (f *follower) start() error {
	return f.with(func() (err error) {
		if f.version, err = f.int64(feedVersion, "data_version"); err != nil {
			return err
		}
		// Everything up to the last seq ever given out is before us,
		// even when pruning emptied the table.
		f.seq, err = f.int64(feedLast, "last change")
		return err
	})
}

// poll reads the changes committed since the last poll, if any. The log
// and the last seq given out are read in one snapshot: when the rows are
// not exactly the seqs after the last one seen, some were pruned before
// this follower read them, and it goes live anew so the caller forgets
// everything.
func (f *follower) poll(changed func(string), live func(bool)) error {
	var read, complete bool
	err := f.with(func() error {
		var err error
		read, complete, err = f.read()
		return err
	})
	if err != nil || !read {
		return err
	}
	if !complete {
		live(false)
		live(true)
		return nil
	}
	// One string for the nodes of the poll, cut at their ends.
	all := string(f.buf)
	start := 0
	for _, end := range f.ends {
		changed(all[start:end])
		start = end
	}
	// What a burst (an import) grew them to is not kept.
	if cap(f.buf) > maxFeedBuf {
		f.buf, f.ends = nil, nil
	}
	return nil
}

// maxFeedBuf is how large the nodes' buffer stays between polls.
const maxFeedBuf = 64 << 10

// read reads the changes after f.seq into f.buf and f.ends, when the
// data version moved; read says whether it did, complete whether the
// changes were all there.
func (f *follower) read() (read, complete bool, err error) {
	v, err := f.int64(feedVersion, "data_version")
	if err != nil || v == f.version {
		return false, false, err
	}
	if err := f.exec(feedBegin, "begin"); err != nil {
		return false, false, err
	}
	// Ends the read transaction whatever happened: one left open would
	// keep checkpoints from copying the log past it.
	defer func() {
		if lib.Xsqlite3_get_autocommit(f.tls, f.db) == 0 {
			if cerr := f.exec(feedEnd, "end"); err == nil {
				err = cerr
			}
		}
	}()
	last, err := f.int64(feedLast, "last change")
	if err != nil {
		return false, false, err
	}
	if last == f.seq {
		f.version = v
		return false, false, nil
	}
	st := f.stmts[feedChanges]
	defer lib.Xsqlite3_reset(f.tls, st)
	if rc := lib.Xsqlite3_bind_int64(f.tls, st, 1, f.seq); rc != lib.SQLITE_OK {
		return false, false, f.errorf(f.db, "reading changes", rc)
	}
	f.buf, f.ends = f.buf[:0], f.ends[:0]
	complete = true
	want := f.seq + 1
	for {
		rc := lib.Xsqlite3_step(f.tls, st)
		if rc == lib.SQLITE_DONE {
			break
		}
		if rc != lib.SQLITE_ROW {
			return false, false, f.errorf(f.db, "reading changes", rc)
		}
		seq := lib.Xsqlite3_column_int64(f.tls, st, 0)
		complete = complete && seq == want
		want = seq + 1
		// node is NOT NULL: no text is SQLite out of memory.
		p := lib.Xsqlite3_column_text(f.tls, st, 1)
		if p == 0 {
			return false, false, errors.New("change feed: reading changes: no text")
		}
		n := lib.Xsqlite3_column_bytes(f.tls, st, 1)
		f.buf = append(f.buf, libc.GoBytes(p, int(n))...)
		f.ends = append(f.ends, len(f.buf))
	}
	complete = complete && want == last+1
	// Taken only once the rows are read: a failed read is read again.
	f.version, f.seq = v, last
	return true, complete, nil
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
