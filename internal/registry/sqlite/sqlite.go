// Package sqlite is the default registry.Store: one SQLite file in WAL mode,
// through the pure-Go modernc.org/sqlite driver so the server stays a
// single static binary. Reads go through a pool of connections and never
// wait for writers; the push path's lookup has connections of its own,
// outside database/sql (lookup.go). Writes go through one connection,
// which serializes them without SQLITE_BUSY retries. Concurrent
// registrations are group-committed (see groupcommit.go). A consistent
// copy of the whole registry is taken beside a running server, and put
// back while none runs (backup.go).
package sqlite

import (
	"cmp"
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"net/url"
	"os"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	modernc "modernc.org/sqlite" // also registers the "sqlite" driver
	lib "modernc.org/sqlite/lib"

	"github.com/push-appserver/push-appserver/internal/registry"
	"github.com/push-appserver/push-appserver/internal/registry/groupcommit"
)

//go:embed migrations/*.sql
var migrations embed.FS

// Store implements registry.Store on SQLite.
type Store struct {
	read, write *sql.DB

	get, getByKey *sql.Stmt
	// lookups reads what a push needs (GetPushTarget) on connections of
	// its own (lookup.go).
	lookups *lookups
	// getBlocked is read on every tokenless push.
	getBlocked *sql.Stmt
	// getImported is read for every record an import finds missing.
	getImported *sql.Stmt

	// reg runs the registrations' statements on the writer's
	// connection (regwriter.go).
	reg *regWriter
	gc  *groupcommit.Queue
	// logs answers the group commit's batches once their log is on
	// disk (logsync.go).
	logs *logSyncer

	// retention is how long the change log keeps a change (changes.go).
	retention time.Duration

	// removeOnClose is the directory of a copy (OpenCopy), gone with it.
	removeOnClose string

	// path is the registry's file and file what it was when opened (see
	// unmoved).
	path string
	file os.FileInfo

	// pageSize is the registry's page size in bytes, and logPages the
	// writer's wal_autocheckpoint as fitLog last set it.
	pageSize int64
	logPages atomic.Int64
}

var _ registry.Store = (*Store)(nil)

// A registration's push outcomes live in a table of their own
// (006_push_status.sql), so they are written without rewriting its row;
// it is read joined with them, in the column order scan expects.
const (
	// regColumns are the registrations table's own, in regValues's order.
	regColumns = `node, type, token, secret, registered, renewed, domain, device_key, owner, account`
	// selectRegistrations is completed by a WHERE clause.
	selectRegistrations = `SELECT node, type, token, secret, registered, renewed,
		p.last_successful_push, p.last_push_error, COALESCE(p.last_error_reason, ''), domain, device_key, owner, account
		FROM registrations LEFT JOIN push_status p USING (node)`
	// selectTarget reads what a push needs (GetPushTarget) as one text:
	// the byte lengths of type, token and secret, each ended by a colon,
	// then the four values one after another (see parseTarget).
	selectTarget = `SELECT octet_length(type) || ':' || octet_length(token) || ':' || octet_length(secret) || ':' ||
		type || token || secret || account FROM registrations WHERE node = ?`
	// returning is the same list for a DELETE, whose RETURNING can name
	// no other table. It sees the outcomes as they were before the delete
	// trigger removed them.
	returning = `RETURNING node, type, token, secret, registered, renewed,
		(SELECT last_successful_push FROM push_status p WHERE p.node = registrations.node),
		(SELECT last_push_error FROM push_status p WHERE p.node = registrations.node),
		COALESCE((SELECT last_error_reason FROM push_status p WHERE p.node = registrations.node), ''),
		domain, device_key, owner, account`
)

// The statements of setStatus: outcomes back to none, or these.
const (
	sqlStatusDelete = `DELETE FROM push_status WHERE node = ?`
	sqlStatusPut    = `INSERT OR REPLACE INTO push_status (node, last_successful_push, last_push_error, last_error_reason)
			VALUES (?, ?, ?, ?)`
)

// setStatus makes r's push outcomes the stored ones.
func setStatus(ctx context.Context, tx *sql.Tx, r registry.Registration) error {
	var err error
	if sameStatus(r, registry.Registration{}) {
		_, err = tx.ExecContext(ctx, sqlStatusDelete, r.Node)
	} else {
		_, err = tx.ExecContext(ctx, sqlStatusPut, r.Node, nanos(r.LastSuccessfulPush), nanos(r.LastPushError), r.LastErrorReason)
	}
	if err != nil {
		return fmt.Errorf("push status: %w", err)
	}
	return nil
}

// regValues are r's values for regColumns.
func regValues(r registry.Registration) []any {
	return []any{r.Node, r.Type, r.Token, r.Secret, r.Registered.UnixNano(), nanos(r.Renewed),
		r.Domain, nullString(r.DeviceKey), r.Owner, r.Account}
}

// walCheckpoint is how many pages the write-ahead log grows to before the
// commit that passes it copies them into the database file (a
// checkpoint, on the writer's time). Registrations land at scattered
// places in the table and its indexes, so a burst of them dirties
// pages all over the file, each of which a checkpoint writes once
// however often it changed since the last: with SQLite's 1,000 pages
// (4 MB), checkpoints were a fifth of a registration's CPU. 10,000 pages
// (40 MB) took 100,000 scattered registrations from 6,800-7,100/s at
// 141-144 us of CPU each to 9,200-10,100/s at 111-122 us (8,000, 16,000
// and 32,000 pages were within the noise of one another then, when the
// writer waited for each commit's sync).
//
// Once the writer no longer waited for the disk (logsync.go), the disk's
// writes became the bound: a registration dirties two scattered pages
// (the table's and the token index's; over XMPP the domain index's too),
// written to the log and again by the checkpoint, with the pages a
// batch shares about 23 KB by the kernel's counters: 21,800
// registrations a second wrote 500 MB/s, with the processors a fifth
// idle and another fifth waiting for the disk. A page changed again
// before the checkpoint is copied once: at 30,000 pages (about 120 MB of
// log on disk) registrations went from 21,775-24,834/s to
// 23,514-26,279/s (four alternating runs each, mean +8.9 %). A reader
// looks a page up in the log's index for each page it reads, one hash
// table per 4,096 frames not yet copied: a few dozen instructions more
// at most for a push that misses the cache.
const walCheckpoint = 30000

// Open opens (creating if needed) the registry at path and brings its
// schema up to date.
func Open(ctx context.Context, path string) (*Store, error) {
	if err := ownFile(path); err != nil {
		return nil, fmt.Errorf("registry %s: %w", path, err)
	}
	q := url.Values{}
	for _, p := range []string{"busy_timeout(10000)", "journal_mode(WAL)",
		// A registration is answered once its commit is on disk: in WAL
		// mode, NORMAL would sync only at checkpoints and a power cut
		// could lose registrations already answered. The group commit
		// makes this nearly free: 30,000 registrations, 64 at a time,
		// took about 1,000 fsyncs and the same CPU as with NORMAL; and
		// the log syncer keeps the writer from waiting for them
		// (logsync.go).
		"synchronous(FULL)", "foreign_keys(ON)",
		// An INSERT OR REPLACE that replaces a row logs its deletion too
		// (the change log's triggers, 005_changes.sql).
		"recursive_triggers(ON)",
		// A deleted registration's token, secret and account, and a
		// delivered push's summary, are zeroed in the pages the delete
		// writes anyway, not left readable in the file (and in every
		// copy of it) until the space is reused. ON, not FAST: FAST
		// leaves the pages a delete frees as they were, and a row too
		// long for its page (a WebPush subscription of a few KiB, a held
		// push with a long message body, a long token in the token
		// index) keeps most of its bytes on such overflow pages. Only
		// freed pages cost an extra write, which is rare.
		"secure_delete(ON)"} {
		q.Add("_pragma", p)
	}
	file := fileURI(path)
	dsn := file + "?" + q.Encode()
	if err := registerWALVFS(); err != nil {
		return nil, fmt.Errorf("registry %s: %w", path, err)
	}
	// The writer copies the WAL into the database every walCheckpoint
	// pages instead of SQLite's 1,000 (see walCheckpoint), and writes the
	// WAL through walVFS.
	write, err := sql.Open("sqlite", dsn+"&_txlock=immediate&vfs="+walVFS+"&_pragma="+url.QueryEscape(fmt.Sprintf("wal_autocheckpoint(%d)", walCheckpoint)))
	if err != nil {
		return nil, fmt.Errorf("opening %s: %w", path, err)
	}
	write.SetMaxOpenConns(1)
	write.SetConnMaxIdleTime(0)
	if err := migrate(ctx, write); err != nil {
		write.Close()
		return nil, fmt.Errorf("registry %s: %w%s", path, err, diskHint(err))
	}
	// walVFS needs every commit to sync the log (FULL is 2, EXTRA 3).
	var sync int
	if err := write.QueryRowContext(ctx, `PRAGMA synchronous`).Scan(&sync); err != nil {
		write.Close()
		return nil, fmt.Errorf("registry %s: %w", path, err)
	}
	if sync < 2 {
		write.Close()
		return nil, fmt.Errorf("registry %s: the writer's synchronous is %d, where the log's VFS needs FULL", path, sync)
	}
	read, err := sql.Open("sqlite", dsn+"&mode=ro")
	if err != nil {
		write.Close()
		return nil, fmt.Errorf("opening %s: %w", path, err)
	}
	n := max(4, 2*runtime.GOMAXPROCS(0))
	read.SetMaxOpenConns(n)
	read.SetMaxIdleConns(n)
	s := &Store{read: read, write: write, retention: changeRetention, lookups: newLookups(file+"?mode=ro", n)}
	if s.get, err = read.PrepareContext(ctx, sqlGet); err == nil {
		s.getByKey, err = read.PrepareContext(ctx, selectRegistrations+` WHERE device_key = ?`)
	}
	if err == nil {
		s.getBlocked, err = read.PrepareContext(ctx, `SELECT since, until, reason FROM blocked_tokens WHERE type = ? AND token = ?`)
	}
	if err == nil {
		s.getImported, err = read.PrepareContext(ctx, `SELECT registered FROM imported_nodes WHERE node = ?`)
	}
	if err == nil {
		s.reg, err = newRegWriter()
	}
	if err == nil {
		// Once now, so that a driver whose connection no longer has its
		// handle where regWriter reads it fails here, not at the first
		// registration.
		err = s.withRegWriter(ctx, func(*regWriter) error { return nil })
	}
	if err != nil {
		s.Close()
		return nil, fmt.Errorf("preparing statements: %w", err)
	}
	s.path = path
	s.logPages.Store(walCheckpoint)
	if err := write.QueryRowContext(ctx, `PRAGMA page_size`).Scan(&s.pageSize); err != nil {
		s.Close()
		return nil, fmt.Errorf("registry %s: %w", path, err)
	}
	if s.file, err = os.Stat(path); err != nil {
		s.Close()
		return nil, fmt.Errorf("registry %s: %w", path, err)
	}
	s.logs = startLogSyncer()
	s.gc = groupcommit.Start(committer{s})
	return s, nil
}

// diskHint is what a failure to open the registry adds to its message
// when SQLite gave an I/O error: SQLite says "disk I/O error" for a file
// it cannot grow, and before it reads anything it must write its
// shared-memory file, so a server started on a full disk fails so at
// once, where an operator would look for a broken disk.
func diskHint(err error) string {
	var se *modernc.Error
	if errors.As(err, &se) && (se.Code()&0xff == lib.SQLITE_IOERR || se.Code()&0xff == lib.SQLITE_FULL) {
		return " (is the disk full?)"
	}
	return ""
}

// ownFile creates the database file readable and writable by us alone
// (it holds every device's secret), and takes group and other access away
// from one created before. SQLite gives its -wal and -shm files the
// database file's mode.
func ownFile(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	st, err := f.Stat()
	if err == nil && st.Mode().Perm()&0o077 != 0 {
		err = groupOnly(st, f.Chmod(st.Mode().Perm()&^0o077))
	}
	err = errors.Join(err, f.Close())
	// A log and shared-memory file left from when the database was
	// readable by others (a server that died, one still running) keep
	// their mode: SQLite copies the database's only when it creates them.
	for _, p := range []string{path + "-wal", path + "-shm"} {
		if st, serr := os.Lstat(p); serr == nil && st.Mode().IsRegular() && st.Mode().Perm()&0o077 != 0 {
			err = errors.Join(err, groupOnly(st, os.Chmod(p, st.Mode().Perm()&^0o077)))
		}
	}
	return err
}

// groupOnly returns the error of taking group and other access away from
// the file st describes, or nil when the file is another user's (the
// change is its owner's to make: we may not) and only its group may
// read or write it besides: the volume's group that Kubernetes' fsGroup
// gives the pod, and gives read and write access again at every mount,
// to files a user ID of another namespace or a restore left. Refusing to
// open them left the server unable to start, and nothing in the pod
// could change their owner.
func groupOnly(st fs.FileInfo, err error) error {
	// Only a file's owner (or root) may change its mode: a refusal
	// says it is another user's.
	if errors.Is(err, fs.ErrPermission) && st.Mode().Perm()&0o007 == 0 {
		return nil
	}
	return err
}

// migrate applies the embedded migrations newer than the file's
// user_version, each in its own transaction.
// fileURI is the URI SQLite opens path by: the path is a URI's, in
// which SQLite would decode %xx and stop at ? or #.
func fileURI(path string) string {
	return "file:" + strings.NewReplacer("%", "%25", "?", "%3f", "#", "%23").Replace(path)
}

// knownSchema fails for a schema version newer than the migrations this
// program has.
func knownSchema(version int) error {
	files, err := fs.Glob(migrations, "migrations/*.sql")
	if err != nil {
		return err
	}
	if version > len(files) {
		return fmt.Errorf("schema version %d is newer than this program knows (%d): use a newer push-appserver", version, len(files))
	}
	return nil
}

func migrate(ctx context.Context, db *sql.DB) error {
	var version int
	if err := db.QueryRowContext(ctx, `PRAGMA user_version`).Scan(&version); err != nil {
		return fmt.Errorf("reading schema version: %w", err)
	}
	files, err := fs.Glob(migrations, "migrations/*.sql")
	if err != nil {
		return err
	}
	sort.Strings(files)
	if err := knownSchema(version); err != nil {
		return err
	}
	for i, f := range files[version:] {
		n := version + i + 1
		if want := fmt.Sprintf("migrations/%03d_", n); !strings.HasPrefix(f, want) {
			return fmt.Errorf("migration %s out of sequence", f)
		}
		body, err := migrations.ReadFile(f)
		if err != nil {
			return err
		}
		tx, err := db.BeginTx(ctx, nil)
		if err != nil {
			return fmt.Errorf("migration %d: %w", n, err)
		}
		// Read again under the write lock (the writer's transactions are
		// IMMEDIATE): another process may have migrated meanwhile.
		var now int
		if err := tx.QueryRowContext(ctx, `PRAGMA user_version`).Scan(&now); err != nil {
			tx.Rollback()
			return fmt.Errorf("migration %d: %w", n, err)
		}
		if now >= n {
			tx.Rollback()
			if err := knownSchema(now); err != nil {
				return err
			}
			continue
		}
		if _, err := tx.ExecContext(ctx, string(body)); err != nil {
			tx.Rollback()
			return fmt.Errorf("migration %d: %w", n, err)
		}
		if _, err := tx.ExecContext(ctx, `PRAGMA user_version = `+strconv.Itoa(n)); err != nil {
			tx.Rollback()
			return fmt.Errorf("migration %d: %w", n, err)
		}
		if err := tx.Commit(); err != nil {
			return fmt.Errorf("migration %d: %w", n, err)
		}
	}
	return nil
}

type scanner interface{ Scan(dest ...any) error }

func scan(row scanner) (registry.Registration, error) {
	var r registry.Registration
	var registered int64
	var renewed, success, failure sql.NullInt64
	var deviceKey sql.NullString
	err := row.Scan(&r.Node, &r.Type, &r.Token, &r.Secret, &registered, &renewed, &success, &failure,
		&r.LastErrorReason, &r.Domain, &deviceKey, &r.Owner, &r.Account)
	if errors.Is(err, sql.ErrNoRows) {
		return r, registry.ErrNotFound
	}
	if err != nil {
		return r, fmt.Errorf("reading registration: %w", err)
	}
	r.Registered = fromNanos(sql.NullInt64{Int64: registered, Valid: true})
	r.Renewed, r.LastSuccessfulPush, r.LastPushError = fromNanos(renewed), fromNanos(success), fromNanos(failure)
	r.DeviceKey = deviceKey.String
	return r, nil
}

func fromNanos(n sql.NullInt64) time.Time {
	if !n.Valid {
		return time.Time{}
	}
	return time.Unix(0, n.Int64).UTC()
}

func nanos(t time.Time) sql.NullInt64 {
	if t.IsZero() {
		return sql.NullInt64{}
	}
	return sql.NullInt64{Int64: t.UnixNano(), Valid: true}
}

func nullString(s string) sql.NullString { return sql.NullString{String: s, Valid: s != ""} }

// keyRead returns the context to read one row by its key under, the
// push path's reads. Such a read takes microseconds and in WAL mode never
// waits for a writer, so ctx is checked once rather than handed down:
// under a context that can end, database/sql and the driver would each
// start a goroutine per query to watch it, which was most of a lookup's
// cost (BenchmarkGet: 9.7 -> 4.1 µs).
func keyRead(ctx context.Context) (context.Context, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return context.WithoutCancel(ctx), nil
}

func (s *Store) Get(ctx context.Context, node string) (registry.Registration, error) {
	ctx, err := keyRead(ctx)
	if err != nil {
		return registry.Registration{}, fmt.Errorf("reading registration: %w", err)
	}
	return scan(s.get.QueryRowContext(ctx, node))
}

// GetPushTarget reads what a push needs of node's registration, and no
// more: the push path's read when its cache misses. Get would also read
// the push outcomes (a join) and seven more columns.
//
// It reads on connections of its own, not through database/sql
// (lookup.go). The four values come as one text, copied out of SQLite
// once, whose memory the four strings share and the registration cache
// then keeps. Like keyRead's reads, the read itself does not watch ctx;
// waiting for a connection does.
func (s *Store) GetPushTarget(ctx context.Context, node string) (registry.PushTarget, error) {
	if err := ctx.Err(); err != nil {
		return registry.PushTarget{}, fmt.Errorf("reading registration: %w", err)
	}
	v, found, err := s.lookups.get(ctx, node)
	if err != nil {
		return registry.PushTarget{}, fmt.Errorf("reading registration: %w", err)
	}
	if !found {
		return registry.PushTarget{}, registry.ErrNotFound
	}
	t, ok := parseTarget(v)
	if !ok {
		// Not v itself: it holds the token and the secret.
		return registry.PushTarget{}, errors.New("reading registration: malformed push target")
	}
	return t, nil
}

// parseTarget splits selectTarget's text into its four values, which
// share v's memory. The lengths make any byte in a value safe, a colon
// included.
func parseTarget(v string) (registry.PushTarget, bool) {
	var n [3]int
	for i := range n {
		colon := strings.IndexByte(v, ':')
		if colon < 0 {
			return registry.PushTarget{}, false
		}
		l, err := strconv.Atoi(v[:colon])
		if err != nil || l < 0 || l > len(v) {
			return registry.PushTarget{}, false
		}
		n[i], v = l, v[colon+1:]
	}
	// Each length is at most len(v) here, so the sum cannot overflow.
	if n[0]+n[1]+n[2] > len(v) {
		return registry.PushTarget{}, false
	}
	var t registry.PushTarget
	t.Type, v = v[:n[0]], v[n[0]:]
	t.Token, v = v[:n[1]], v[n[1]:]
	t.Secret, t.Account = v[:n[2]], v[n[2]:]
	return t, true
}

func (s *Store) GetByDeviceKey(ctx context.Context, key string) (registry.Registration, error) {
	if key == "" {
		return registry.Registration{}, registry.ErrNotFound
	}
	return scan(s.getByKey.QueryRowContext(ctx, key))
}

func (s *Store) Delete(ctx context.Context, node, typ string) (registry.Registration, error) {
	if err := s.unmoved(); err != nil {
		return registry.Registration{}, fmt.Errorf("delete: %w", err)
	}
	r, err := scan(s.write.QueryRowContext(ctx, `DELETE FROM registrations WHERE node = ? AND type = ? `+returning, node, typ))
	if err != nil && !errors.Is(err, registry.ErrNotFound) {
		return r, fmt.Errorf("delete: %w", err)
	}
	return r, err
}

func (s *Store) DeleteRead(ctx context.Context, read registry.Registration) (registry.Registration, error) {
	if err := s.unmoved(); err != nil {
		return registry.Registration{}, fmt.Errorf("delete: %w", err)
	}
	// IS, not =: renewed and device_key are NULL when unset.
	r, err := scan(s.write.QueryRowContext(ctx, `DELETE FROM registrations
		WHERE node = ? AND type = ? AND token = ? AND secret = ? AND owner = ? AND device_key IS ?
			AND registered = ? AND renewed IS ?
		`+returning, read.Node, read.Type, read.Token, read.Secret, read.Owner, nullString(read.DeviceKey),
		read.Registered.UnixNano(), nanos(read.Renewed)))
	if err != nil && !errors.Is(err, registry.ErrNotFound) {
		return r, fmt.Errorf("delete: %w", err)
	}
	return r, err
}

func (s *Store) DeleteToken(ctx context.Context, typ, token string, before time.Time) ([]registry.Registration, error) {
	removed, err := s.deleteReturning(ctx, `DELETE FROM registrations
		WHERE type = ? AND token = ? AND MAX(registered, COALESCE(renewed, 0)) < ?
		`+returning, typ, token, before.UnixNano())
	if err != nil {
		return removed, fmt.Errorf("delete token: %w", err)
	}
	return removed, nil
}

// deleteReturning runs a DELETE ending in returning and reads the
// registrations it removed. Like Delete it refuses a moved file (see
// unmoved): a dead token's or an idle registration's removal answered OK
// there would be undone at the next start.
func (s *Store) deleteReturning(ctx context.Context, query string, args ...any) ([]registry.Registration, error) {
	if err := s.unmoved(); err != nil {
		return nil, err
	}
	rows, err := s.write.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var removed []registry.Registration
	for rows.Next() {
		r, err := scan(rows)
		if err != nil {
			return removed, err
		}
		removed = append(removed, r)
	}
	return removed, rows.Err()
}

func (s *Store) DeleteIdle(ctx context.Context, before time.Time, typ, after string, limit int) ([]registry.Registration, string, error) {
	// The window's end, and whether any of it is idle, are read beside
	// the write lock, along the primary key; the DELETE then reads the
	// window alone, so the lock is held for limit rows at most however
	// few of them are idle (one statement reading on until it found limit
	// idle ones held it 0.55 s on 1,000,000 registrations with none
	// idle), and not at all for a window with none idle.
	var end sql.NullString
	var n, idle int
	if err := s.read.QueryRowContext(ctx, `SELECT max(node), count(*), COALESCE(SUM(
				(?3 = '' OR type = ?3) AND MAX(registered, COALESCE(renewed, 0)) < ?4
				AND COALESCE(last_successful_push, 0) < ?4), 0)
			FROM (SELECT r.node, r.type, r.registered, r.renewed, p.last_successful_push
				FROM registrations r LEFT JOIN push_status p USING (node)
				WHERE r.node > ?1 ORDER BY r.node LIMIT ?2)`,
		after, limit, typ, before.UnixNano()).Scan(&end, &n, &idle); err != nil {
		return nil, "", fmt.Errorf("delete idle: %w", err)
	}
	next := end.String
	if n < limit {
		next = ""
	}
	if idle == 0 {
		return nil, next, nil
	}
	removed, err := s.deleteReturning(ctx, `DELETE FROM registrations WHERE node IN (
			SELECT r.node FROM registrations r LEFT JOIN push_status p USING (node)
			WHERE r.node > ?3 AND r.node <= ?4 AND (?2 = '' OR r.type = ?2)
				AND MAX(r.registered, COALESCE(r.renewed, 0)) < ?1
				AND COALESCE(p.last_successful_push, 0) < ?1)
		`+returning, before.UnixNano(), typ, after, end.String)
	if err != nil {
		return removed, "", fmt.Errorf("delete idle: %w", err)
	}
	return removed, next, nil
}

// eachRow calls write for each of the rows of a write, in a transaction
// begun under ctx, with a context that cannot end, and looks at ctx before
// each row instead. modernc's driver watches a statement whose context can
// end from a goroutine of its own: that cost a device's first push outcome
// two goroutines and 8 allocations, and writing outcomes half their CPU
// (BenchmarkUpdatePushStatus: 16.6-16.9 us a row, 8.6-9.5 without). ctx
// still bounds the write: BEGIN IMMEDIATE, which may wait for the write
// lock, runs under it, and a row's statements, under that lock, wait for
// no one.
func eachRow[T any](ctx context.Context, rows []T, write func(context.Context, T) error) error {
	rowCtx := context.WithoutCancel(ctx)
	for _, r := range rows {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := write(rowCtx, r); err != nil {
			return err
		}
	}
	return nil
}

// UpdatePushStatus writes a batch in one transaction. A node's first
// outcome makes its push_status row; every later one finds it, so the
// UPDATE is all a push usually costs. Only an UPDATE that changed nothing
// (no row yet, or a newer outcome already there) is followed by an INSERT,
// which makes the row if the node is still registered and leaves a newer
// one alone.
func (s *Store) UpdatePushStatus(ctx context.Context, statuses []registry.PushStatus) error {
	if len(statuses) == 0 {
		return nil
	}
	tx, err := s.write.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("push status: %w", err)
	}
	defer tx.Rollback()
	var st [4]*sql.Stmt
	for i, q := range [4]string{
		`UPDATE push_status SET last_successful_push = ?1
			WHERE node = ?2 AND (last_successful_push IS NULL OR last_successful_push < ?1)`,
		`INSERT INTO push_status (node, last_successful_push)
			SELECT ?2, ?1 WHERE EXISTS (SELECT 1 FROM registrations WHERE node = ?2)
			ON CONFLICT (node) DO NOTHING`,
		`UPDATE push_status SET last_push_error = ?1, last_error_reason = ?2
			WHERE node = ?3 AND (last_push_error IS NULL OR last_push_error < ?1)`,
		`INSERT INTO push_status (node, last_push_error, last_error_reason)
			SELECT ?3, ?1, ?2 WHERE EXISTS (SELECT 1 FROM registrations WHERE node = ?3)
			ON CONFLICT (node) DO NOTHING`,
	} {
		if st[i], err = tx.PrepareContext(ctx, q); err != nil {
			return fmt.Errorf("push status: %w", err)
		}
		defer st[i].Close()
	}
	err = eachRow(ctx, statuses, func(ctx context.Context, p registry.PushStatus) error {
		update, insert, args := st[0], st[1], []any{p.At.UnixNano(), p.Node}
		if !p.Success {
			update, insert, args = st[2], st[3], []any{p.At.UnixNano(), p.Reason, p.Node}
		}
		res, err := update.ExecContext(ctx, args...)
		if err == nil {
			var n int64
			if n, err = res.RowsAffected(); err == nil && n == 0 {
				_, err = insert.ExecContext(ctx, args...)
			}
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("push status: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("push status: %w", err)
	}
	s.fitLog(ctx)
	return nil
}

func (s *Store) Nodes(ctx context.Context, limit int) ([]string, error) {
	rows, err := s.read.QueryContext(ctx, `SELECT node FROM registrations ORDER BY node LIMIT ?`, limit)
	if err != nil {
		return nil, fmt.Errorf("listing nodes: %w", err)
	}
	defer rows.Close()
	var nodes []string
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			return nil, fmt.Errorf("listing nodes: %w", err)
		}
		nodes = append(nodes, n)
	}
	return nodes, rows.Err()
}

// Ping checks that the registry's file can be read: its first page, in
// a read transaction, which takes the log's locks as every read does.
func (s *Store) Ping(ctx context.Context) error {
	var n int
	if err := s.read.QueryRowContext(ctx, `SELECT count(*) FROM (SELECT 1 FROM sqlite_schema LIMIT 1)`).Scan(&n); err != nil {
		return fmt.Errorf("reading the registry: %w", err)
	}
	return nil
}

func (s *Store) Count(ctx context.Context) (int, error) {
	var n int
	if err := s.read.QueryRowContext(ctx, `SELECT COUNT(*) FROM registrations`).Scan(&n); err != nil {
		return 0, fmt.Errorf("counting registrations: %w", err)
	}
	return n, nil
}

func (s *Store) CountMatching(ctx context.Context, typ, domain string) (int, error) {
	// Only the conditions asked for, so that the planner sees which
	// index counts them: (type, token) for a type, the domain's
	// partial index for a domain.
	q, args := `SELECT COUNT(*) FROM registrations WHERE 1`, []any{}
	if typ != "" {
		q, args = q+` AND type = ?`, append(args, typ)
	}
	if domain != "" {
		q, args = q+` AND domain = ? AND domain <> ''`, append(args, domain)
	}
	var n int
	if err := s.read.QueryRowContext(ctx, q, args...).Scan(&n); err != nil {
		return 0, fmt.Errorf("counting registrations: %w", err)
	}
	return n, nil
}

func (s *Store) BlockToken(ctx context.Context, b registry.BlockedToken) error {
	_, err := s.write.ExecContext(ctx, `INSERT OR REPLACE INTO blocked_tokens (type, token, since, until, reason) VALUES (?, ?, ?, ?, ?)`,
		b.Type, b.Token, b.Since.UnixNano(), unixNanoSat(b.Until), b.Reason)
	if err != nil {
		return fmt.Errorf("blocking token: %w", err)
	}
	return nil
}

// unixNanoSat is t.UnixNano, but the latest time it can name for a t
// past 2262, where UnixNano wraps into the past.
func unixNanoSat(t time.Time) int64 {
	if t.After(time.Unix(0, math.MaxInt64)) {
		return math.MaxInt64
	}
	return t.UnixNano()
}

func (s *Store) GetBlockedToken(ctx context.Context, typ, token string) (registry.BlockedToken, error) {
	b := registry.BlockedToken{Type: typ, Token: token}
	ctx, err := keyRead(ctx)
	if err != nil {
		return b, fmt.Errorf("reading blocked token: %w", err)
	}
	var since, until int64
	err = s.getBlocked.QueryRowContext(ctx, typ, token).
		Scan(&since, &until, &b.Reason)
	if errors.Is(err, sql.ErrNoRows) {
		return b, registry.ErrNotFound
	}
	if err != nil {
		return b, fmt.Errorf("reading blocked token: %w", err)
	}
	b.Since, b.Until = time.Unix(0, since).UTC(), time.Unix(0, until).UTC()
	return b, nil
}

func (s *Store) UnblockToken(ctx context.Context, typ, token string, until time.Time) error {
	if _, err := s.write.ExecContext(ctx, `DELETE FROM blocked_tokens WHERE type = ? AND token = ? AND until <= ?`, typ, token, unixNanoSat(until)); err != nil {
		return fmt.Errorf("unblocking token: %w", err)
	}
	return nil
}

func (s *Store) CountDomain(ctx context.Context, domain string, limit int) (int, error) {
	var n int
	if err := s.read.QueryRowContext(ctx, `SELECT COUNT(*) FROM (
			SELECT 1 FROM registrations WHERE domain = ? AND domain <> '' LIMIT ?)`, domain, limit).Scan(&n); err != nil {
		return 0, fmt.Errorf("counting registrations of %s: %w", domain, err)
	}
	return n, nil
}

func (s *Store) KeepPushes(ctx context.Context, owner string, lease time.Duration, renew bool, put []registry.HeldPush, del []string) error {
	// Refused, the pushes held at a stop go to the held file instead;
	// answered OK, they would be in a file the next start never opens.
	if err := s.unmoved(); err != nil {
		return fmt.Errorf("keeping pushes: %w", err)
	}
	tx, err := s.write.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("keeping pushes: %w", err)
	}
	defer tx.Rollback()
	until := time.Now().Add(lease).UnixNano()
	if renew {
		res, err := tx.ExecContext(ctx, `UPDATE redelivery_owners SET lease_until = ? WHERE owner = ?`, until, owner)
		if err != nil {
			return fmt.Errorf("keeping pushes: %w", err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return registry.ErrLeaseLost
		}
	} else if _, err := tx.ExecContext(ctx, `INSERT INTO redelivery_owners (owner, lease_until) VALUES (?, ?)
		ON CONFLICT (owner) DO UPDATE SET lease_until = excluded.lease_until`, owner, until); err != nil {
		return fmt.Errorf("keeping pushes: %w", err)
	}
	if len(del) > 0 {
		st, err := tx.PrepareContext(ctx, `DELETE FROM held_pushes WHERE owner = ? AND device = ?`)
		if err != nil {
			return fmt.Errorf("keeping pushes: %w", err)
		}
		defer st.Close()
		if err := eachRow(ctx, del, func(ctx context.Context, d string) error {
			_, err := st.ExecContext(ctx, owner, d)
			return err
		}); err != nil {
			return fmt.Errorf("keeping pushes: %w", err)
		}
	}
	if len(put) > 0 {
		// Prepared once: an outage's second may bring thousands.
		st, err := tx.PrepareContext(ctx, `INSERT INTO held_pushes (owner, device, failed_at, push) VALUES (?, ?, ?, ?)
			ON CONFLICT (owner, device) DO UPDATE SET failed_at = excluded.failed_at, push = excluded.push`)
		if err != nil {
			return fmt.Errorf("keeping pushes: %w", err)
		}
		defer st.Close()
		if err := eachRow(ctx, put, func(ctx context.Context, p registry.HeldPush) error {
			_, err := st.ExecContext(ctx, owner, p.Device, p.FailedAt.UnixNano(), p.Push)
			return err
		}); err != nil {
			return fmt.Errorf("keeping pushes: %w", err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("keeping pushes: %w", err)
	}
	s.fitLog(ctx)
	return nil
}

// maxLeaseAhead bounds how far ahead of now a lease may end: more than
// any server asks for (appserver's is 10 s; the store tests' an hour).
const maxLeaseAhead = 2 * time.Hour

// expireOwners releases the pushes of the owners whose lease ran out by
// now, in tx.
func expireOwners(ctx context.Context, tx *sql.Tx, now time.Time) error {
	// A lease ending further ahead than any lease is long was written by
	// a clock that has stepped back since: lapsed too.
	far := now.Add(maxLeaseAhead).UnixNano()
	if _, err := tx.ExecContext(ctx, `UPDATE held_pushes SET owner = NULL
		WHERE owner IN (SELECT owner FROM redelivery_owners WHERE lease_until < ? OR lease_until > ?)`, now.UnixNano(), far); err != nil {
		return fmt.Errorf("releasing pushes of lapsed leases: %w", err)
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM redelivery_owners WHERE lease_until < ? OR lease_until > ?`, now.UnixNano(), far); err != nil {
		return fmt.Errorf("releasing pushes of lapsed leases: %w", err)
	}
	return nil
}

func (s *Store) ReleasePushes(ctx context.Context, owner string) error {
	tx, err := s.write.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("releasing pushes: %w", err)
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, `UPDATE held_pushes SET owner = NULL WHERE owner = ?`, owner); err != nil {
		return fmt.Errorf("releasing pushes: %w", err)
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM redelivery_owners WHERE owner = ?`, owner); err != nil {
		return fmt.Errorf("releasing pushes: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("releasing pushes: %w", err)
	}
	return nil
}

// releasedPushes selects a page of the released held pushes, oldest
// first, through their index (migration 010): SQLite's planner, without
// statistics, would take the owner index and sort every released push
// for each page.
const releasedPushes = `SELECT id FROM held_pushes INDEXED BY held_pushes_released WHERE owner IS NULL ORDER BY failed_at, id LIMIT ?`

func (s *Store) TakeHeldPushes(ctx context.Context, limit int) ([]registry.HeldPush, error) {
	return s.takeHeld(ctx, nil, `DELETE FROM held_pushes WHERE id IN
		(`+releasedPushes+`) RETURNING '', failed_at, push`, limit)
}

func (s *Store) MoveHeldPushes(ctx context.Context, owner string, lease time.Duration, renew bool, limit int) ([]registry.HeldPush, error) {
	startLease := func(tx *sql.Tx, now time.Time) error {
		if renew {
			// After expireOwners: a lease that ran out is gone.
			res, err := tx.ExecContext(ctx, `UPDATE redelivery_owners SET lease_until = ? WHERE owner = ?`, now.Add(lease).UnixNano(), owner)
			if err != nil {
				return err
			}
			if n, err := res.RowsAffected(); err != nil || n == 0 {
				return cmp.Or(err, registry.ErrLeaseLost)
			}
			return nil
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO redelivery_owners (owner, lease_until) VALUES (?, ?)
			ON CONFLICT (owner) DO UPDATE SET lease_until = excluded.lease_until`, owner, now.Add(lease).UnixNano())
		return err
	}
	return s.takeHeld(ctx, startLease, `UPDATE held_pushes SET owner = ?, device = 'moved/' || id WHERE id IN
		(`+releasedPushes+`) RETURNING device, failed_at, push`, owner, limit)
}

func (s *Store) ReturnHeldPushes(ctx context.Context, owner string, devices []string) error {
	tx, err := s.write.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("giving held pushes back: %w", err)
	}
	defer tx.Rollback()
	if err := eachRow(ctx, devices, func(ctx context.Context, d string) error {
		_, err := tx.ExecContext(ctx, `UPDATE held_pushes SET owner = NULL WHERE owner = ? AND device = ?`, owner, d)
		return err
	}); err != nil {
		return fmt.Errorf("giving held pushes back: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("giving held pushes back: %w", err)
	}
	return nil
}

// takeHeld runs query, which takes the held pushes no server owns and
// returns their device, time and push, in one transaction with the
// release of lapsed leases and then before, unless it is nil.
func (s *Store) takeHeld(ctx context.Context, before func(*sql.Tx, time.Time) error, query string, args ...any) ([]registry.HeldPush, error) {
	tx, err := s.write.BeginTx(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("taking held pushes: %w", err)
	}
	defer tx.Rollback()
	now := time.Now()
	if err := expireOwners(ctx, tx, now); err != nil {
		return nil, err
	}
	if before != nil {
		if err := before(tx, now); err != nil {
			return nil, fmt.Errorf("taking held pushes: %w", err)
		}
	}
	rows, err := tx.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("taking held pushes: %w", err)
	}
	defer rows.Close()
	var out []registry.HeldPush
	for rows.Next() {
		var at int64
		var d string
		var p []byte
		if err := rows.Scan(&d, &at, &p); err != nil {
			return nil, fmt.Errorf("taking held pushes: %w", err)
		}
		out = append(out, registry.HeldPush{Device: d, FailedAt: time.Unix(0, at).UTC(), Push: p})
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("taking held pushes: %w", err)
	}
	rows.Close()
	if err := tx.Commit(); err != nil {
		return nil, fmt.Errorf("taking held pushes: %w", err)
	}
	// RETURNING gives rows in no set order.
	slices.SortStableFunc(out, func(a, b registry.HeldPush) int { return a.FailedAt.Compare(b.FailedAt) })
	return out, nil
}

func (s *Store) PurgeBlockedTokens(ctx context.Context, before time.Time) (int, error) {
	res, err := s.write.ExecContext(ctx, `DELETE FROM blocked_tokens WHERE until < ?`, before.UnixNano())
	if err != nil {
		return 0, fmt.Errorf("purging blocked tokens: %w", err)
	}
	n, _ := res.RowsAffected()
	return int(n), nil
}

func (s *Store) TrimBlockedTokens(ctx context.Context, keep int) (int, error) {
	// The index on until, which ends in the key, gives the order
	// without a sort: one pass over it.
	res, err := s.write.ExecContext(ctx, `DELETE FROM blocked_tokens WHERE (type, token) IN (
		SELECT type, token FROM blocked_tokens ORDER BY until DESC, type DESC, token DESC LIMIT -1 OFFSET ?)`, max(keep, 0))
	if err != nil {
		return 0, fmt.Errorf("trimming blocked tokens: %w", err)
	}
	n, _ := res.RowsAffected()
	return int(n), nil
}

func (s *Store) List(ctx context.Context, after string, limit int) ([]registry.Registration, error) {
	return s.list(ctx, `node > ?`, after, limit)
}

func (s *Store) ListDomain(ctx context.Context, domain, after string, limit int) ([]registry.Registration, error) {
	// The domain's partial index holds (domain, node), node being the
	// key of a table without rowid: it finds the page and gives its
	// order, no sort. "domain <> ''" lets the planner use it.
	return s.list(ctx, `domain = ? AND domain <> '' AND node > ?`, domain, after, limit)
}

// list returns registrations matching where, in node order, limit
// being the last of args.
func (s *Store) list(ctx context.Context, where string, args ...any) ([]registry.Registration, error) {
	rows, err := s.read.QueryContext(ctx, selectRegistrations+` WHERE `+where+` ORDER BY node LIMIT ?`, args...)
	if err != nil {
		return nil, fmt.Errorf("listing registrations: %w", err)
	}
	defer rows.Close()
	var out []registry.Registration
	for rows.Next() {
		r, err := scan(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("listing registrations: %w", err)
	}
	return out, nil
}

func (s *Store) CountByType(ctx context.Context) (map[string]int, error) {
	rows, err := s.read.QueryContext(ctx, `SELECT type, COUNT(*) FROM registrations GROUP BY type`)
	if err != nil {
		return nil, fmt.Errorf("counting registrations: %w", err)
	}
	defer rows.Close()
	out := map[string]int{}
	for rows.Next() {
		var typ string
		var n int
		if err := rows.Scan(&typ, &n); err != nil {
			return nil, fmt.Errorf("counting registrations: %w", err)
		}
		out[typ] = n
	}
	return out, rows.Err()
}

func (s *Store) Put(ctx context.Context, rs []registry.Registration) (int, error) {
	added, _, err := s.put(ctx, rs, nil, false)
	return added, err
}

func (s *Store) PutRead(ctx context.Context, rs, read []registry.Registration) (int, []string, error) {
	if len(read) != len(rs) {
		return 0, nil, fmt.Errorf("put: %d registrations, %d as read", len(rs), len(read))
	}
	return s.put(ctx, rs, read, false)
}

func (s *Store) PutImported(ctx context.Context, rs []registry.Registration) error {
	_, _, err := s.put(ctx, rs, nil, true)
	return err
}

func (s *Store) PutImportedRead(ctx context.Context, rs, read []registry.Registration) ([]string, error) {
	if len(read) != len(rs) {
		return nil, fmt.Errorf("put: %d registrations, %d as read", len(rs), len(read))
	}
	_, changed, err := s.put(ctx, rs, read, true)
	return changed, err
}

func (s *Store) ImportedAt(ctx context.Context, node string) (time.Time, error) {
	var ns int64
	err := s.getImported.QueryRowContext(ctx, node).Scan(&ns)
	if errors.Is(err, sql.ErrNoRows) {
		return time.Time{}, registry.ErrNotFound
	}
	if err != nil {
		return time.Time{}, fmt.Errorf("imported node %s: %w", node, err)
	}
	return time.Unix(0, ns).UTC(), nil
}

func (s *Store) ImportedNodes(ctx context.Context, after string, limit int) ([]registry.ImportedNode, error) {
	rows, err := s.read.QueryContext(ctx, `SELECT node, registered FROM imported_nodes WHERE node > ? ORDER BY node LIMIT ?`, after, limit)
	if err != nil {
		return nil, fmt.Errorf("listing imported nodes: %w", err)
	}
	defer rows.Close()
	var out []registry.ImportedNode
	for rows.Next() {
		var n registry.ImportedNode
		var ns int64
		if err := rows.Scan(&n.Node, &ns); err != nil {
			return nil, fmt.Errorf("listing imported nodes: %w", err)
		}
		n.Registered = time.Unix(0, ns).UTC()
		out = append(out, n)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("listing imported nodes: %w", err)
	}
	return out, nil
}

func (s *Store) PutImportedNodes(ctx context.Context, ns []registry.ImportedNode) error {
	// As put: answered OK into a moved file, a copy's record of what it
	// imported would be missing at the next start.
	if err := s.unmoved(); err != nil {
		return fmt.Errorf("put imported nodes: %w", err)
	}
	tx, err := s.write.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("put imported nodes: %w", err)
	}
	defer tx.Rollback()
	st, err := tx.PrepareContext(ctx, `INSERT INTO imported_nodes (node, registered) VALUES (?, ?)
		ON CONFLICT (node) DO UPDATE SET registered = MAX(registered, excluded.registered)`)
	if err != nil {
		return fmt.Errorf("put imported nodes: %w", err)
	}
	defer st.Close()
	if err := eachRow(ctx, ns, func(ctx context.Context, n registry.ImportedNode) error {
		if _, err := st.ExecContext(ctx, n.Node, n.Registered.UnixNano()); err != nil {
			return fmt.Errorf("node %s: %w", n.Node, err)
		}
		return nil
	}); err != nil {
		return fmt.Errorf("put imported nodes: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("put imported nodes: %w", err)
	}
	return nil
}

// put is Put, recording the nodes in imported_nodes too when imported is
// set (PutImported), and writing only the registrations whose node is
// still as read when read is not nil (PutRead), returning the others'
// nodes in changed.
func (s *Store) put(ctx context.Context, rs, read []registry.Registration, imported bool) (added int, changed []string, err error) {
	// An import answered OK into a moved file would be missing at the
	// next start (see unmoved).
	if err := s.unmoved(); err != nil {
		return 0, nil, fmt.Errorf("put: %w", err)
	}
	tx, err := s.write.BeginTx(ctx, nil)
	if err != nil {
		return 0, nil, fmt.Errorf("put: %w", err)
	}
	defer tx.Rollback()
	if read != nil {
		// Under the write lock the transaction holds since it began, a
		// node found as read stays so until the commit.
		if rs, changed, err = stillAsRead(ctx, tx, rs, read); err != nil {
			return 0, nil, fmt.Errorf("put: %w", err)
		}
	}
	added, err = s.putTx(ctx, tx, rs, imported)
	if err != nil {
		return 0, nil, err
	}
	if err := tx.Commit(); err != nil {
		return 0, nil, fmt.Errorf("put: %w", err)
	}
	s.fitLog(ctx)
	return added, changed, nil
}

// stillAsRead returns those of rs whose node tx finds as read (see
// PutRead), and the nodes of the others.
func stillAsRead(ctx context.Context, tx *sql.Tx, rs, read []registry.Registration) (same []registry.Registration, changed []string, err error) {
	get, err := tx.PrepareContext(ctx, selectRegistrations+` WHERE node = ?`)
	if err != nil {
		return nil, nil, err
	}
	defer get.Close()
	for i, r := range rs {
		now, err := scan(get.QueryRowContext(ctx, r.Node))
		found := err == nil
		if err != nil && !errors.Is(err, registry.ErrNotFound) {
			return nil, nil, fmt.Errorf("node %s: %w", r.Node, err)
		}
		if !registry.StillAsRead(now, found, read[i]) {
			changed = append(changed, r.Node)
			continue
		}
		same = append(same, r)
	}
	return same, changed, nil
}

// putTx writes rs in tx, as put.
func (s *Store) putTx(ctx context.Context, tx *sql.Tx, rs []registry.Registration, imported bool) (added int, err error) {
	// An upsert on the node alone: INSERT OR REPLACE would also delete
	// another node holding the same device key, silently (PostgreSQL's
	// Put refuses that).
	st, err := tx.PrepareContext(ctx, `INSERT INTO registrations (`+regColumns+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT (node) DO UPDATE SET type = excluded.type, token = excluded.token, secret = excluded.secret,
			registered = excluded.registered, renewed = excluded.renewed, domain = excluded.domain,
			device_key = excluded.device_key, owner = excluded.owner, account = excluded.account`)
	if err != nil {
		return 0, fmt.Errorf("put: %w", err)
	}
	defer st.Close()
	// Under the write lock the transaction holds since it began, what
	// it finds is what the upsert then replaces or not.
	exists, err := tx.PrepareContext(ctx, `SELECT EXISTS (SELECT 1 FROM registrations WHERE node = ?)`)
	if err != nil {
		return 0, fmt.Errorf("put: %w", err)
	}
	defer exists.Close()
	// Device keys are judged on what the batch leaves: a node the batch
	// rewrites holds only what the batch gives it, so its key is let go
	// first and the unique index then sees the batch's rows whatever
	// their order.
	if err := eachRow(ctx, rs, func(ctx context.Context, r registry.Registration) error {
		if _, err := tx.ExecContext(ctx, `UPDATE registrations SET device_key = NULL WHERE node = ? AND device_key IS NOT NULL`, r.Node); err != nil {
			return fmt.Errorf("node %s: %w", r.Node, err)
		}
		return nil
	}); err != nil {
		return 0, fmt.Errorf("put: %w", err)
	}
	var imp *sql.Stmt
	if imported {
		if imp, err = tx.PrepareContext(ctx, `INSERT INTO imported_nodes (node, registered) VALUES (?, ?)
			ON CONFLICT (node) DO UPDATE SET registered = excluded.registered`); err != nil {
			return 0, fmt.Errorf("put: %w", err)
		}
		defer imp.Close()
	}
	if err := eachRow(ctx, rs, func(ctx context.Context, r registry.Registration) error {
		var found bool
		if err := exists.QueryRowContext(ctx, r.Node).Scan(&found); err != nil {
			return fmt.Errorf("node %s: %w", r.Node, err)
		}
		if !found {
			added++
		}
		if _, err := st.ExecContext(ctx, regValues(r)...); err != nil {
			return fmt.Errorf("node %s: %w", r.Node, err)
		}
		// The replaced row's outcomes are replaced too (or removed).
		if err := setStatus(ctx, tx, r); err != nil {
			return fmt.Errorf("node %s: %w", r.Node, err)
		}
		if imp != nil {
			if _, err := imp.ExecContext(ctx, r.Node, r.LastRegistered().UnixNano()); err != nil {
				return fmt.Errorf("node %s: %w", r.Node, err)
			}
		}
		return nil
	}); err != nil {
		return 0, fmt.Errorf("put: %w", err)
	}
	return added, nil
}

func (s *Store) InstanceValue(ctx context.Context, name string, gen func() (string, error)) (string, error) {
	tx, err := s.write.BeginTx(ctx, nil)
	if err != nil {
		return "", fmt.Errorf("instance value %s: %w", name, err)
	}
	defer tx.Rollback()
	var v string
	err = tx.QueryRowContext(ctx, `SELECT value FROM instance_values WHERE name = ?`, name).Scan(&v)
	if err == nil {
		return v, nil
	}
	if !errors.Is(err, sql.ErrNoRows) {
		return "", fmt.Errorf("instance value %s: %w", name, err)
	}
	if v, err = gen(); err != nil {
		return "", err
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO instance_values (name, value) VALUES (?, ?)`, name, v); err != nil {
		return "", fmt.Errorf("instance value %s: %w", name, err)
	}
	if err := tx.Commit(); err != nil {
		return "", fmt.Errorf("instance value %s: %w", name, err)
	}
	return v, nil
}

// Close stores the registrations already queued, then closes both
// connection pools.
func (s *Store) Close() error {
	if s.gc != nil {
		s.gc.Close()
	}
	if s.logs != nil {
		s.logs.close()
	}
	if s.reg != nil {
		// Before the writer's pool closes: a statement left would keep
		// its connection, and the file, open.
		s.reg.close()
	}
	if s.lookups != nil {
		s.lookups.close()
	}
	for _, st := range []*sql.Stmt{s.get, s.getByKey, s.getBlocked, s.getImported} {
		if st != nil {
			st.Close()
		}
	}
	err := errors.Join(s.read.Close(), s.write.Close())
	if s.removeOnClose != "" {
		err = errors.Join(err, os.RemoveAll(s.removeOnClose))
	}
	return err
}
