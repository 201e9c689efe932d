// Package postgres is the registry.Store that several push-appserver
// instances share: PostgreSQL through pgx's connection pool, with embedded
// versioned migrations, a statement timeout on every connection, and the
// LISTEN/NOTIFY feed that tells every instance which registrations another
// one changed (Follow). Concurrent registrations are group-committed (see
// groupcommit.go).
package postgres

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/push-appserver/push-appserver/internal/logging"
	"github.com/push-appserver/push-appserver/internal/registry"
	"github.com/push-appserver/push-appserver/internal/registry/groupcommit"
)

//go:embed migrations/*.sql
var migrations embed.FS

// Channel is the NOTIFY channel on which changed nodes are announced.
const Channel = "push_appserver_registrations"

// ComponentChannel is the NOTIFY channel on which an instance announces
// that it released a component JID (see ReleaseComponent).
const ComponentChannel = "push_appserver_components"

// HeldChannel is the NOTIFY channel on which an instance announces that it
// released the pushes it kept for the others to send (see ReleasePushes),
// or handed over pushes of apps it does not have (see HandOverPushes).
const HeldChannel = "push_appserver_held"

// Application names, so an operator sees in pg_stat_activity which
// connection does what.
const (
	appName       = "push-appserver"
	listenAppName = "push-appserver-listen"
	probeAppName  = "push-appserver-probe"
)

// Options tune the store; the zero value is usable.
type Options struct {
	// StatementTimeout bounds every statement on the server side. Default 5 s.
	StatementTimeout time.Duration
	// ConnectTimeout bounds Open's first connection, its session set up
	// included: PgBouncer holds a connection until the server behind it
	// answers (up to its query_wait_timeout, 120 s). Default 15 s. The
	// migrations after it are not bounded: one may take long on a large
	// registry, and cutting it off would only start it again.
	ConnectTimeout time.Duration
	// MaxConns is the pool size. Default pgx's (at least 4).
	MaxConns int32
	// AckWait bounds how long a change waits, while this store is
	// followed, for the other instances to confirm they dropped what they
	// cached of it (see barrier). Default 1 s.
	AckWait time.Duration
	// Password, when set, gives the password of each new connection,
	// asked anew each time: a password rotated (the DSN's file
	// rewritten with the new one) is used by the connections made after,
	// without a restart. An error leaves the DSN's.
	Password func() (string, error)
	Logger   *slog.Logger
}

// Store implements registry.Store on PostgreSQL.
type Store struct {
	pool     *pgxpool.Pool
	maxConns int32 // the pool's size
	tracer   *poolTracer
	dsn      string
	opts     Options
	logger   *slog.Logger
	gc       *groupcommit.Queue
	bar      barrier
	// heartbeat and probeWait time the change feed's probes (see probe).
	heartbeat, probeWait time.Duration
	// namedStatements is set when statements are prepared under a name
	// on their connection (pgx's default exec mode, cache_statement),
	// which a pooler in transaction mode does not carry.
	namedStatements bool

	released atomic.Pointer[func(jid string)]    // see OnComponentReleased
	held     atomic.Pointer[func(apps []string)] // see OnPushesHeld
	// listenPID is the server process of the LISTEN connection while
	// Follow holds one, 0 otherwise: OtherServers leaves it out.
	listenPID atomic.Uint32
}

var _ registry.Store = (*Store)(nil)

const columns = `node, type, token, secret, registered, renewed, last_successful_push, last_push_error, last_error_reason, domain, device_key, owner, account`

// Open connects to the database at dsn (a postgres:// URL or key=value
// string) and brings its schema up to date.
func Open(ctx context.Context, dsn string, opts Options) (*Store, error) {
	if opts.StatementTimeout <= 0 {
		opts.StatementTimeout = 5 * time.Second
	}
	if opts.ConnectTimeout <= 0 {
		opts.ConnectTimeout = 15 * time.Second
	}
	if opts.AckWait <= 0 {
		opts.AckWait = defaultAckWait
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		// pgx's message may quote the DSN, password included.
		return nil, errors.New("database.dsn: not a valid PostgreSQL connection string")
	}
	setParams(cfg.ConnConfig, opts, appName)
	if opts.MaxConns > 0 {
		cfg.MaxConns = opts.MaxConns
	}
	tr := &poolTracer{logger: opts.Logger, done: make(chan struct{})}
	tr.writable = func() bool { return writable(cfg.ConnConfig, opts) }
	cfg.ConnConfig.Tracer = tr
	cfg.BeforeConnect = func(_ context.Context, c *pgx.ConnConfig) error {
		opts.password(c)
		return nil
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("connecting to PostgreSQL: %w", err)
	}
	tr.pool.Store(pool)
	cctx, cancel := context.WithTimeout(ctx, opts.ConnectTimeout)
	err = pool.Ping(cctx)
	cancel()
	if err != nil {
		pool.Close()
		return nil, fmt.Errorf("connecting to PostgreSQL: %w", err)
	}
	s := &Store{pool: pool, maxConns: cfg.MaxConns, tracer: tr, dsn: dsn, opts: opts, logger: opts.Logger, bar: newBarrier(opts.AckWait), heartbeat: defaultHeartbeat, probeWait: probeWait,
		namedStatements: cfg.ConnConfig.DefaultQueryExecMode == pgx.QueryExecModeCacheStatement}
	if err := s.migrate(ctx); err != nil {
		pool.Close()
		if preparedClash(err) {
			// The start of a second instance behind such a pooler.
			return nil, fmt.Errorf("%w: %s", err, execModeAdvice)
		}
		return nil, err
	}
	s.gc = groupcommit.Start(committer{s})
	return s, nil
}

// password sets c's password to the one Password gives now, if set.
// The pool's connections ask for it before each connection, the change
// feed's each time it connects: the DSN was read once, at the start,
// and a password rotated since would otherwise have every new connection
// refused (SQLSTATE 28P01) until a restart.
func (o Options) password(c *pgx.ConnConfig) {
	if o.Password == nil {
		return
	}
	if pw, err := o.Password(); err == nil {
		c.Password = pw
	}
}

// poolTracer watches the pool's statements for two failures that say
// something of where the DSN leads.
//
// A server that turned read-only under the pool (SQLSTATE 25006; 57P03,
// one in recovery, likewise) would keep every pooled connection, and
// fail every write, until the connections' lifetime ends: an hour. That
// happens in a switchover that fences the old primary, which stays up.
// The first write it refuses has the pool reset, and the new connections
// go where target_session_attrs leads, once a connection made as the
// pool makes them reaches a server that takes writes: until then
// (tried every writableRetry, one such wait at a time) the pool keeps
// its connections, and reads go on over them. Resetting at once would
// cost the reads too, between the fence of the old primary and the
// promotion of the new one: with target_session_attrs=read-write the
// pool makes no connection while no server takes writes, and every
// read failed (pushes to devices not cached answered wait, the change
// feed down) though both servers answered reads. Without it, a DSN
// whose only server turned read-only keeps the pool on it, for writes
// that fail either way, rather than make its connections again for
// every refused write.
//
// A named prepared statement (pgx's default exec mode) that is missing,
// or already there, on its server connection means a pooler in
// transaction mode handed that connection to another client: it is
// logged with the DSN setting that avoids it, at most once a minute.
type poolTracer struct {
	pool      atomic.Pointer[pgxpool.Pool]
	resetting atomic.Bool
	logger    *slog.Logger
	logged    atomic.Int64 // when a clash was last logged, in Unix nanoseconds
	// writable reports whether a new connection, made as the pool makes
	// them, reaches a server that takes writes.
	writable func() bool
	done     chan struct{} // closed when the store closes
	stopped  sync.Once
}

// writableRetry is how often a pool kept on a read-only server looks
// for one that takes writes.
const writableRetry = time.Second

// writable connects as cc says, with opts' password, and reports
// whether the server reached takes writes.
func writable(cc *pgx.ConnConfig, opts Options) bool {
	ctx, cancel := context.WithTimeout(context.Background(), opts.ConnectTimeout)
	defer cancel()
	c := cc.Copy()
	c.Tracer = nil // none of the pool's statements
	opts.password(c)
	conn, err := pgx.ConnectConfig(ctx, c)
	if err != nil {
		return false
	}
	defer conn.Close(ctx)
	var ro string
	if err := conn.QueryRow(ctx, `SELECT current_setting('transaction_read_only')`).Scan(&ro); err != nil {
		return false
	}
	return ro != "on"
}

// moveWhenWritable resets the pool once a server the DSN leads to
// takes writes, looking every writableRetry until then or until the
// store closes.
func (t *poolTracer) moveWhenWritable() {
	defer t.resetting.Store(false)
	for {
		if t.writable() {
			if p := t.pool.Load(); p != nil {
				p.Reset()
			}
			return
		}
		select {
		case <-t.done:
			return
		case <-time.After(writableRetry):
		}
	}
}

func (t *poolTracer) stop() { t.stopped.Do(func() { close(t.done) }) }

// execModeAdvice is what a statement refused for its prepared statement
// asks of the DSN.
const execModeAdvice = "behind a pooler in transaction mode, add default_query_exec_mode=cache_describe to the DSN"

func readOnly(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && (pe.Code == "25006" || pe.Code == "57P03")
}

// preparedClash reports whether err is a named prepared statement found
// already there (42P05) or missing (26000) on its server connection.
func preparedClash(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && (pe.Code == "42P05" || pe.Code == "26000") && strings.Contains(pe.Message, "prepared statement")
}

func (t *poolTracer) check(err error) {
	if err == nil {
		return
	}
	if preparedClash(err) {
		last := t.logged.Load()
		if now := time.Now().UnixNano(); now-last >= int64(time.Minute) && t.logged.CompareAndSwap(last, now) {
			t.logger.Error("a statement found its prepared statement missing or already there: the DSN leads to a pooler in transaction mode, which hands server connections to other clients; "+execModeAdvice, "err", err)
		}
		return
	}
	if !readOnly(err) || !t.resetting.CompareAndSwap(false, true) {
		return
	}
	go t.moveWhenWritable()
}

func (t *poolTracer) TraceQueryStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceQueryStartData) context.Context {
	return ctx
}
func (t *poolTracer) TraceQueryEnd(_ context.Context, _ *pgx.Conn, d pgx.TraceQueryEndData) {
	t.check(d.Err)
}
func (t *poolTracer) TraceBatchStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceBatchStartData) context.Context {
	return ctx
}
func (t *poolTracer) TraceBatchQuery(_ context.Context, _ *pgx.Conn, d pgx.TraceBatchQueryData) {
	t.check(d.Err)
}
func (t *poolTracer) TraceBatchEnd(_ context.Context, _ *pgx.Conn, d pgx.TraceBatchEndData) {
	t.check(d.Err)
}

func setParams(c *pgx.ConnConfig, opts Options, app string) {
	if c.RuntimeParams == nil {
		c.RuntimeParams = map[string]string{}
	}
	c.RuntimeParams["application_name"] = app
	// The timeouts are set once connected rather than as startup
	// parameters, which PgBouncer refuses ("unsupported startup
	// parameter"): it passes on only the few it tracks, application_name
	// among them.
	set := timeoutSettings(opts)
	after := c.AfterConnect
	c.AfterConnect = func(ctx context.Context, conn *pgconn.PgConn) error {
		if after != nil {
			if err := after(ctx, conn); err != nil {
				return err
			}
		}
		if err := conn.Exec(ctx, set).Close(); err != nil {
			return fmt.Errorf("setting timeouts: %w", err)
		}
		return nil
	}
	if c.ConnectTimeout == 0 {
		c.ConnectTimeout = 10 * time.Second
	}
}

// keepIdle lifts idle_session_timeout (PostgreSQL 14 and later) on a
// connection of the change feed. A DBA may set it on the database or the
// role, and it ends a session that waits for its next statement that
// long: the LISTEN connection waits for notifications, sending a
// statement only to ack another instance's change, and the probe
// connection sends one every heartbeat. Ended, they take the feed down,
// and with it the cache of every instance and the confirmation of the
// writes under way, again at every timeout while nobody writes. The
// pool's idle connections may go: it pings those idle for more than a
// second before it hands them out. pg_settings, so that a server
// without the setting takes the statement too.
func keepIdle(c *pgx.ConnConfig) {
	after := c.AfterConnect
	c.AfterConnect = func(ctx context.Context, conn *pgconn.PgConn) error {
		if after != nil {
			if err := after(ctx, conn); err != nil {
				return err
			}
		}
		if err := conn.Exec(ctx, `SELECT set_config(name, '0', false) FROM pg_settings WHERE name = 'idle_session_timeout'`).Close(); err != nil {
			return fmt.Errorf("lifting idle_session_timeout: %w", err)
		}
		return nil
	}
}

// timeoutSettings are the statements that bound a session's statements
// and lock waits by opts.StatementTimeout, and give its transactions
// the isolation they are written for: read committed, PostgreSQL's
// default, in which a row locked FOR UPDATE is read as the writer before
// left it. Under a stricter default_transaction_isolation that a DBA
// set on the database or the role, a registration or a push outcome
// that waited for another instance's write of the same device failed
// with a serialization failure (SQLSTATE 40001).
func timeoutSettings(opts Options) string {
	ms := strconv.FormatInt(opts.StatementTimeout.Milliseconds(), 10)
	return `SET statement_timeout = ` + ms + `; SET lock_timeout = ` + ms + `; SET default_transaction_isolation = 'read committed'`
}

// migrate applies the embedded migrations newer than the database's
// version, each in its own transaction, under an advisory lock so that
// instances starting together do not race.
func (s *Store) migrate(ctx context.Context) error { return s.migrateFrom(ctx, migrations) }

// migrateFrom is migrate with the migrations read from fsys's
// migrations/*.sql, so that a test can add one.
//
// Each migration is one transaction that takes a transaction-level
// advisory lock, reads the version and applies the next one: nothing is
// held between transactions, so a pooler in transaction mode (which
// hands each transaction to any server connection) neither lets two
// instances migrate at once nor leaves the lock, or a lifted timeout,
// behind on a server connection that others then use.
func (s *Store) migrateFrom(ctx context.Context, fsys fs.FS) error {
	files, err := fs.Glob(fsys, "migrations/*.sql")
	if err != nil {
		return err
	}
	sort.Strings(files)
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("connecting to PostgreSQL: %w", err)
	}
	defer conn.Release()
	const lockKey int64 = 0x7075736801 // "push" 1; pg_advisory_xact_lock takes a bigint

	var waiting int // the migration that waits for a lock, if any
	var start, warned time.Time
	for {
		done, n := false, 0
		err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
			// Migrations may take longer than a push-path statement, and
			// an instance starting beside one that migrates waits for
			// its lock.
			if _, err := tx.Exec(ctx, `SET LOCAL statement_timeout = 0; SET LOCAL lock_timeout = 0`); err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, lockKey); err != nil {
				return err
			}
			// Created only when missing: CREATE … IF NOT EXISTS needs
			// the right to create in the schema even when the table is
			// there, which a role running a schema its owner migrated
			// need not have.
			var exists bool
			if err := tx.QueryRow(ctx, `SELECT to_regclass('schema_version') IS NOT NULL`).Scan(&exists); err != nil {
				return err
			}
			if !exists {
				if _, err := tx.Exec(ctx, `CREATE TABLE schema_version (version INTEGER NOT NULL)`); err != nil {
					return err
				}
			}
			var version int
			err := tx.QueryRow(ctx, `SELECT version FROM schema_version`).Scan(&version)
			if errors.Is(err, pgx.ErrNoRows) {
				_, err = tx.Exec(ctx, `INSERT INTO schema_version VALUES (0)`)
			}
			if err != nil {
				return errDecide{fmt.Errorf("reading schema version: %w", err)}
			}
			if version > len(files) {
				return errDecide{fmt.Errorf("schema version %d is newer than this program knows (%d): use a newer push-appserver", version, len(files))}
			}
			if version == len(files) {
				done = true
				return nil
			}
			n = version + 1
			f := files[version]
			if want := fmt.Sprintf("migrations/%03d_", n); !strings.HasPrefix(f, want) {
				return errDecide{fmt.Errorf("migration %s out of sequence", f)}
			}
			body, err := fs.ReadFile(fsys, f)
			if err != nil {
				return errDecide{err}
			}
			// Each lock the migration needs is waited for a second at a
			// time (see below).
			if _, err := tx.Exec(ctx, `SET LOCAL lock_timeout = '1s'`); err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, string(body)); err != nil {
				return err
			}
			_, err = tx.Exec(ctx, `UPDATE schema_version SET version = $1`, n)
			return err
		})
		var d errDecide
		var pe *pgconn.PgError
		switch {
		case err == nil && done:
			return nil
		case err == nil:
			continue
		case errors.As(err, &d):
			return d.err
		case !errors.As(err, &pe) || pe.Code != "55P03": // lock_not_available
			if n > 0 {
				return fmt.Errorf("migration %d: %w", n, err)
			}
			return fmt.Errorf("migrating: %w", err)
		}
		// A request for a strong lock (ALTER TABLE's ACCESS EXCLUSIVE)
		// queued behind a long reader (pg_dump, an operator's open
		// transaction) puts every later statement on that table behind
		// it: waiting without bound, it would fail the other instances'
		// pushes and registrations at their statement_timeout for as
		// long as the reader runs. Between tries they go on.
		if n != waiting {
			waiting, start, warned = n, time.Now(), time.Time{}
		}
		if warned.IsZero() || time.Since(warned) >= time.Minute {
			s.logger.Warn("schema migration waits for a lock that other sessions (a long transaction, pg_dump) hold on its table; it tries again every second and holds up no other statement meanwhile",
				"migration", n, "waited", time.Since(start).Round(time.Second))
			warned = time.Now()
		}
		t := time.NewTimer(time.Second)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("migration %d: waiting for a lock: %w", n, ctx.Err())
		case <-t.C:
		}
	}
}

func scan(row pgx.Row) (registry.Registration, error) {
	var r registry.Registration
	var renewed, success, failure *time.Time
	var deviceKey *string
	err := row.Scan(&r.Node, &r.Type, &r.Token, &r.Secret, &r.Registered, &renewed, &success, &failure,
		&r.LastErrorReason, &r.Domain, &deviceKey, &r.Owner, &r.Account)
	if errors.Is(err, pgx.ErrNoRows) {
		return r, registry.ErrNotFound
	}
	if err != nil {
		return r, fmt.Errorf("reading registration: %w", err)
	}
	r.Registered = r.Registered.UTC()
	r.Renewed, r.LastSuccessfulPush, r.LastPushError = utc(renewed), utc(success), utc(failure)
	if deviceKey != nil {
		r.DeviceKey = *deviceKey
	}
	return r, nil
}

func utc(t *time.Time) time.Time {
	if t == nil {
		return time.Time{}
	}
	return t.UTC()
}

func null(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}

func nullString(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

// bound gives ctx, when it has no deadline, the statement timeout and a
// second: a caller that set none (an HTTP request's context ends only
// when its client hangs up) would otherwise wait, on a database gone
// silent (its host gone, its address moved by a failover), until TCP
// gives up on the connection, many minutes later, where the statement
// timeout, the server's, cannot end it. The registrations' group commit
// bounds its transactions likewise.
func (s *Store) bound(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, s.opts.StatementTimeout+time.Second)
}

// sessionLost reports whether err says the statement's session was gone
// before it could answer: ended by the server (pg_terminate_backend, a
// shutdown, idle_session_timeout: a FATAL error) or its connection
// closed. The pool pings only connections idle for over a second
// before it hands them out, so in a busy instance every session ended
// under the pool fails the next statement sent on it.
func sessionLost(err error) bool {
	// A session refused as it was made (too many clients, a server
	// starting up or shutting down, a wrong password: FATAL errors too)
	// lost none: another made at once is refused alike, and a read
	// retried on it would make a connection for every session the pool
	// may hold, at a server already short of them.
	var ce *pgconn.ConnectError
	if errors.As(err, &ce) {
		return false
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.SeverityUnlocalized == "FATAL" || pe.Severity == "FATAL"
	}
	return pgconn.SafeToRetry(err) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

// read runs a read-only statement, and again on another session while
// its session was found gone (see sessionLost), up to once for each
// session the pool may hold, each of which may be gone alike: a read is
// safe to repeat, and failing it would fail a push (answered wait, sent
// only at its redelivery, seconds later) for a database that answers.
// The pool closes a session found gone, so each try takes another.
func (s *Store) read(ctx context.Context, f func() error) error {
	err := f()
	for range s.maxConns {
		if err == nil || ctx.Err() != nil || !sessionLost(err) {
			break
		}
		err = f()
	}
	return err
}

func (s *Store) Get(ctx context.Context, node string) (registry.Registration, error) {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	var r registry.Registration
	err := s.read(ctx, func() error {
		var err error
		r, err = scan(s.pool.QueryRow(ctx, `SELECT `+columns+` FROM registrations WHERE node = $1`, node))
		return err
	})
	return r, err
}

// GetPushTarget reads what a push needs of node's registration: the push
// path's read when its cache misses, four columns instead of thirteen.
func (s *Store) GetPushTarget(ctx context.Context, node string) (registry.PushTarget, error) {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	var t registry.PushTarget
	err := s.read(ctx, func() error {
		return s.pool.QueryRow(ctx, `SELECT type, token, secret, account FROM registrations WHERE node = $1`, node).
			Scan(&t.Type, &t.Token, &t.Secret, &t.Account)
	})
	if errors.Is(err, pgx.ErrNoRows) {
		return registry.PushTarget{}, registry.ErrNotFound
	}
	if err != nil {
		return registry.PushTarget{}, fmt.Errorf("reading registration: %w", err)
	}
	return t, nil
}

func (s *Store) GetByDeviceKey(ctx context.Context, key string) (registry.Registration, error) {
	if key == "" {
		return registry.Registration{}, registry.ErrNotFound
	}
	ctx, cancel := s.bound(ctx)
	defer cancel()
	return scan(s.pool.QueryRow(ctx, `SELECT `+columns+` FROM registrations WHERE device_key = $1`, key))
}

// registerAlone is Register in a transaction of its own: reads the node's
// row locked, decides and writes. The one of two instances creating the
// same node at once that loses the race starts over and decides again on
// the winner's row. While the store is followed, the caller must wait for
// the acks it returns before answering (see barrier).
func (s *Store) registerAlone(ctx context.Context, node string, decide registry.Decide) (registry.Registration, acks, error) {
	if err := ctx.Err(); err != nil {
		return registry.Registration{}, nil, fmt.Errorf("register: %w", err)
	}
	for attempt := 0; ; attempt++ {
		r, raced, a, err := s.register(ctx, node, decide)
		if raced && attempt < 3 {
			continue
		}
		if raced {
			return registry.Registration{}, nil, fmt.Errorf("register: created concurrently: %w", registry.ErrConflict)
		}
		return r, a, err
	}
}

func (s *Store) register(ctx context.Context, node string, decide registry.Decide) (r registry.Registration, raced bool, a acks, err error) {
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		others, err := s.bar.name(ctx, tx)
		if err != nil {
			return err
		}
		old, err := scan(tx.QueryRow(ctx, `SELECT `+columns+` FROM registrations WHERE node = $1 FOR UPDATE`, node))
		if err != nil && !errors.Is(err, registry.ErrNotFound) {
			return err
		}
		found := err == nil
		if r, err = decide(old, found); err != nil {
			return errDecide{err}
		}
		if r.Node != node {
			return errDecide{fmt.Errorf("register: decided on node %q for node %q", r.Node, node)}
		}
		if announced(old, found, r) {
			a.expect(&s.bar, node, others)
		}
		args := []any{r.Node, r.Type, r.Token, r.Secret, r.Registered, null(r.Renewed), null(r.LastSuccessfulPush),
			null(r.LastPushError), r.LastErrorReason, r.Domain, nullString(r.DeviceKey), r.Owner, r.Account}
		var tag pgconn.CommandTag
		if found {
			tag, err = tx.Exec(ctx, sqlUpdate, args...)
		} else {
			tag, err = tx.Exec(ctx, sqlInsert, args...)
		}
		if err != nil {
			return err
		}
		raced = tag.RowsAffected() == 0
		if raced {
			return errRaced
		}
		return nil
	})
	if err != nil || raced {
		s.bar.waitAll(a, false)
		a = nil
	}
	var d errDecide
	var pgErr *pgconn.PgError
	switch {
	case raced:
		return registry.Registration{}, true, nil, nil
	case errors.As(err, &d):
		return registry.Registration{}, false, nil, d.err
	case errors.As(err, &pgErr) && pgErr.Code == "23505": // unique_violation: the device key
		return registry.Registration{}, false, nil, fmt.Errorf("register: device key held by another node: %w", registry.ErrConflict)
	case err != nil:
		return registry.Registration{}, false, nil, fmt.Errorf("register: %w", err)
	}
	return r, false, a, nil
}

var errRaced = errors.New("node created concurrently")

// errDecide carries an error of the caller's decide function (or
// InstanceValue's gen, or migrateFrom's reading of the version and the
// files) out of the transaction unwrapped.
type errDecide struct{ err error }

func (e errDecide) Error() string { return e.err.Error() }

func (s *Store) Delete(ctx context.Context, node, typ string) (registry.Registration, error) {
	var r registry.Registration
	var w *waiter
	tctx, cancel := s.bound(ctx)
	defer cancel()
	err := pgx.BeginFunc(tctx, s.pool, func(tx pgx.Tx) error {
		others, err := s.bar.name(tctx, tx)
		if err != nil {
			return err
		}
		w = s.bar.expect(node, others)
		r, err = scan(tx.QueryRow(tctx, `DELETE FROM registrations WHERE node = $1 AND type = $2 RETURNING `+columns, node, typ))
		return err
	})
	if werr := s.bar.wait(ctx, node, w, err == nil); werr != nil {
		return r, fmt.Errorf("delete: %w", werr)
	}
	if err != nil && !errors.Is(err, registry.ErrNotFound) {
		return r, fmt.Errorf("delete: %w", err)
	}
	return r, err
}

func (s *Store) DeleteRead(ctx context.Context, read registry.Registration) (registry.Registration, error) {
	var r registry.Registration
	var w *waiter
	tctx, cancel := s.bound(ctx)
	defer cancel()
	// The columns keep microseconds: a time as read compares equal, and
	// one with finer digits (as given to Register rather than read back)
	// is compared as stored.
	registered := read.Registered.Truncate(time.Microsecond)
	renewed := null(read.Renewed.Truncate(time.Microsecond))
	err := pgx.BeginFunc(tctx, s.pool, func(tx pgx.Tx) error {
		others, err := s.bar.name(tctx, tx)
		if err != nil {
			return err
		}
		w = s.bar.expect(read.Node, others)
		r, err = scan(tx.QueryRow(tctx, `DELETE FROM registrations
			WHERE node = $1 AND type = $2 AND token = $3 AND secret = $4 AND owner = $5
				AND device_key IS NOT DISTINCT FROM $6
				AND registered = $7 AND renewed IS NOT DISTINCT FROM $8
			RETURNING `+columns, read.Node, read.Type, read.Token, read.Secret, read.Owner, nullString(read.DeviceKey), registered, renewed))
		return err
	})
	if werr := s.bar.wait(ctx, read.Node, w, err == nil); werr != nil {
		return r, fmt.Errorf("delete: %w", werr)
	}
	if err != nil && !errors.Is(err, registry.ErrNotFound) {
		return r, fmt.Errorf("delete: %w", err)
	}
	return r, err
}

func (s *Store) DeleteToken(ctx context.Context, typ, token string, before time.Time) ([]registry.Registration, error) {
	removed, err := s.deleteAnnounced(ctx, `DELETE FROM registrations
		WHERE type = $1 AND token = $2 AND GREATEST(registered, renewed) < $3
		RETURNING `+columns, typ, token, before)
	if err != nil {
		return nil, fmt.Errorf("delete token: %w", err)
	}
	return removed, nil
}

func (s *Store) DeleteIdle(ctx context.Context, before time.Time, typ, after string, limit int) ([]registry.Registration, string, error) {
	// The window first, along the primary key and outside the deleting
	// transaction: where it ends and which of it is idle. One statement
	// reading on until it found limit idle rows read all 3,000,010
	// registrations of a registry with none idle and ran into
	// statement_timeout, so that registry could never be pruned. max(node)
	// is by the column's collation, as node > $1 is: the next window
	// starts right after this one whatever the collation.
	var end *string
	var n int
	var idle []string
	if err := s.pool.QueryRow(ctx, `SELECT max(node), count(*), array_agg(node) FILTER (
				WHERE ($3 = '' OR type = $3) AND GREATEST(registered, renewed) < $4
					AND (last_successful_push IS NULL OR last_successful_push < $4))
			FROM (SELECT node, type, registered, renewed, last_successful_push FROM registrations
				WHERE node > $1 ORDER BY node LIMIT $2) w`,
		after, limit, typ, before).Scan(&end, &n, &idle); err != nil {
		return nil, "", fmt.Errorf("delete idle: %w", err)
	}
	next := ""
	if end != nil && n >= limit {
		next = *end
	}
	if len(idle) == 0 {
		return nil, next, nil
	}
	// By key, and found idle again: a registration renewed since the read
	// stays. SKIP LOCKED: a row a registration is writing now is not idle.
	// The rows come back in the order they were deleted, which is that of
	// their notifications, as deleteAnnounced needs; not sorted by node.
	removed, err := s.deleteAnnounced(ctx, `DELETE FROM registrations WHERE node IN (
			SELECT node FROM registrations
			WHERE node = ANY($3) AND ($2 = '' OR type = $2) AND GREATEST(registered, renewed) < $1
				AND (last_successful_push IS NULL OR last_successful_push < $1)
			FOR UPDATE SKIP LOCKED)
		RETURNING `+columns, before, typ, idle)
	if err != nil {
		return nil, "", fmt.Errorf("delete idle: %w", err)
	}
	return removed, next, nil
}

// deleteAnnounced runs a DELETE … RETURNING columns and returns the
// registrations it removed once the other instances dropped them (see
// barrier). A removal they did not confirm is no error here: nobody is
// answered that it is done, and an instance that pushes to what it
// cached meanwhile reaches a dead token or an idle device, whose
// removal finds nothing left to remove.
func (s *Store) deleteAnnounced(ctx context.Context, query string, args ...any) ([]registry.Registration, error) {
	var removed []registry.Registration
	var w *waiter
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		removed = removed[:0]
		others, err := s.bar.name(ctx, tx)
		if err != nil {
			return err
		}
		rows, err := tx.Query(ctx, query, args...)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			r, err := scan(rows)
			if err != nil {
				return err
			}
			removed = append(removed, r)
		}
		if err := rows.Err(); err != nil {
			return err
		}
		// Before the commit, so no ack can come first. Each instance
		// handles a transaction's notifications in order: its ack of the
		// last one means it handled them all.
		if len(removed) > 0 {
			w = s.bar.expect(removed[len(removed)-1].Node, others)
		}
		return nil
	})
	if w != nil {
		_ = s.bar.wait(ctx, removed[len(removed)-1].Node, w, err == nil)
	}
	return removed, err
}

// UpdatePushStatus writes a batch in one transaction. Several instances
// write batches for the same nodes concurrently: a time only ever moves
// forward (the latest push wins, whichever instance writes last), and the
// rows are locked in node order first so that two batches cannot
// deadlock.
func (s *Store) UpdatePushStatus(ctx context.Context, statuses []registry.PushStatus) error {
	if len(statuses) == 0 {
		return nil
	}
	type latest struct {
		at     time.Time
		reason string
	}
	ok, failed := map[string]latest{}, map[string]latest{}
	nodes := map[string]bool{}
	for _, st := range statuses {
		m := failed
		if st.Success {
			m = ok
		}
		if cur, seen := m[st.Node]; !seen || st.At.After(cur.at) {
			m[st.Node] = latest{st.At, st.Reason}
		}
		nodes[st.Node] = true
	}
	all := make([]string, 0, len(nodes))
	for n := range nodes {
		all = append(all, n)
	}
	sort.Strings(all)
	var okNodes, errNodes, reasons []string
	var okAt, errAt []time.Time
	for _, n := range all {
		if l, has := ok[n]; has {
			okNodes, okAt = append(okNodes, n), append(okAt, l.at)
		}
		if l, has := failed[n]; has {
			errNodes, errAt, reasons = append(errNodes, n), append(errAt, l.at), append(reasons, l.reason)
		}
	}
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT 1 FROM registrations WHERE node = ANY($1) ORDER BY node FOR UPDATE`, all); err != nil {
			return err
		}
		if len(okNodes) > 0 {
			if _, err := tx.Exec(ctx, `UPDATE registrations r SET last_successful_push = v.at
				FROM unnest($1::text[], $2::timestamptz[]) AS v(node, at)
				WHERE r.node = v.node AND (r.last_successful_push IS NULL OR r.last_successful_push < v.at)`,
				okNodes, okAt); err != nil {
				return err
			}
		}
		if len(errNodes) > 0 {
			if _, err := tx.Exec(ctx, `UPDATE registrations r SET last_push_error = v.at, last_error_reason = v.reason
				FROM unnest($1::text[], $2::timestamptz[], $3::text[]) AS v(node, at, reason)
				WHERE r.node = v.node AND (r.last_push_error IS NULL OR r.last_push_error < v.at)`,
				errNodes, errAt, reasons); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("push status: %w", err)
	}
	return nil
}

func (s *Store) Nodes(ctx context.Context, limit int) ([]string, error) {
	rows, err := s.pool.Query(ctx, `SELECT node FROM registrations ORDER BY node LIMIT $1`, limit)
	if err != nil {
		return nil, fmt.Errorf("listing nodes: %w", err)
	}
	nodes, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("listing nodes: %w", err)
	}
	return nodes, nil
}

// Ping checks that the database answers, on a connection of the pool,
// and takes writes: a server that answers every read but refuses every
// write (a standby reached through an address a failover did not move,
// default_transaction_read_only set for maintenance) fails every
// registration, and answers registry.ErrReadOnly.
func (s *Store) Ping(ctx context.Context) error {
	var ro string
	if err := s.pool.QueryRow(ctx, `SELECT current_setting('transaction_read_only')`).Scan(&ro); err != nil {
		return fmt.Errorf("pinging the database: %w", err)
	}
	if ro == "on" {
		return fmt.Errorf("pinging the database: %w (a standby, or default_transaction_read_only)", registry.ErrReadOnly)
	}
	return nil
}

func (s *Store) Count(ctx context.Context) (int, error) {
	var n int
	if err := s.pool.QueryRow(ctx, `SELECT COUNT(*) FROM registrations`).Scan(&n); err != nil {
		return 0, fmt.Errorf("counting registrations: %w", err)
	}
	return n, nil
}

func (s *Store) CountMatching(ctx context.Context, typ, domain string) (int, error) {
	// Only the conditions asked for, so that the planner sees them: the
	// domain's partial index counts a domain.
	q, args := `SELECT COUNT(*) FROM registrations WHERE true`, []any{}
	if typ != "" {
		args = append(args, typ)
		q += fmt.Sprintf(` AND type = $%d`, len(args))
	}
	if domain != "" {
		args = append(args, domain)
		q += fmt.Sprintf(` AND domain = $%d AND domain <> ''`, len(args))
	}
	var n int
	if err := s.pool.QueryRow(ctx, q, args...).Scan(&n); err != nil {
		return 0, fmt.Errorf("counting registrations: %w", err)
	}
	return n, nil
}

func (s *Store) BlockToken(ctx context.Context, b registry.BlockedToken) error {
	_, err := s.pool.Exec(ctx, `INSERT INTO blocked_tokens (type, token_key, token, since, until, reason) VALUES ($1, $2, $3, $4, $5, $6)
		ON CONFLICT (type, token_key) DO UPDATE SET token = excluded.token, since = excluded.since, until = excluded.until, reason = excluded.reason`,
		b.Type, tokenKey(b.Token), b.Token, b.Since, b.Until, b.Reason)
	if err != nil {
		return fmt.Errorf("blocking token: %w", err)
	}
	return nil
}

func (s *Store) GetBlockedToken(ctx context.Context, typ, token string) (registry.BlockedToken, error) {
	b := registry.BlockedToken{Type: typ, Token: token}
	err := s.pool.QueryRow(ctx, `SELECT since, until, reason FROM blocked_tokens WHERE type = $1 AND token_key = $2`, typ, tokenKey(token)).
		Scan(&b.Since, &b.Until, &b.Reason)
	if errors.Is(err, pgx.ErrNoRows) {
		return b, registry.ErrNotFound
	}
	if err != nil {
		return b, fmt.Errorf("reading blocked token: %w", err)
	}
	b.Since, b.Until = b.Since.UTC(), b.Until.UTC()
	return b, nil
}

// tokenKey keys the block list: tokens may be longer than an index entry.
func tokenKey(token string) []byte {
	k := sha256.Sum256([]byte(token))
	return k[:]
}

func (s *Store) UnblockToken(ctx context.Context, typ, token string, until time.Time) error {
	if _, err := s.pool.Exec(ctx, `DELETE FROM blocked_tokens WHERE type = $1 AND token_key = $2 AND until <= $3`, typ, tokenKey(token), until); err != nil {
		return fmt.Errorf("unblocking token: %w", err)
	}
	return nil
}

func (s *Store) CountDomain(ctx context.Context, domain string, limit int) (int, error) {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	var n int
	if err := s.pool.QueryRow(ctx, `SELECT COUNT(*) FROM (
			SELECT 1 FROM registrations WHERE domain = $1 AND domain <> '' LIMIT $2) AS d`, domain, limit).Scan(&n); err != nil {
		return 0, fmt.Errorf("counting registrations of %s: %w", domain, err)
	}
	return n, nil
}

func (s *Store) KeepPushes(ctx context.Context, owner string, lease time.Duration, renew bool, put []registry.HeldPush, del []string) error {
	device := make([]string, len(put))
	at := make([]time.Time, len(put))
	age := make([]int64, len(put)) // µs; -1: none, failed_at as given
	push := make([][]byte, len(put))
	for i, p := range put {
		device[i], at[i], push[i] = p.Device, p.FailedAt, p.Push
		age[i] = -1
		if p.Age != 0 {
			age[i] = p.Age.Microseconds()
		}
	}
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		// The row lock taken here orders a renewal with a taker's
		// expiry (TakeHeldPushes): one that comes second finds the
		// lease renewed, or gone.
		if err := startLease(ctx, tx, owner, lease, renew); err != nil {
			return err
		}
		if len(del) > 0 {
			if _, err := tx.Exec(ctx, `DELETE FROM held_pushes WHERE owner = $1 AND device = ANY($2)`, owner, del); err != nil {
				return err
			}
		}
		if len(put) > 0 {
			// failed_at on the database's clock, which every instance
			// shares: theirs may disagree.
			if _, err := tx.Exec(ctx, `INSERT INTO held_pushes (owner, device, failed_at, push)
				SELECT $1, d, CASE WHEN a < 0 THEN f ELSE now() - a * interval '1 microsecond' END, p
				FROM unnest($2::text[], $3::timestamptz[], $4::bigint[], $5::bytea[]) AS u(d, f, a, p)
				ON CONFLICT (owner, device) DO UPDATE SET failed_at = excluded.failed_at, push = excluded.push`,
				owner, device, at, age, push); err != nil {
				return err
			}
		}
		return nil
	})
	if errors.Is(err, registry.ErrLeaseLost) {
		return err
	}
	if err != nil {
		return fmt.Errorf("keeping pushes: %w", err)
	}
	return nil
}

func (s *Store) ReleasePushes(ctx context.Context, owner string) error {
	// One statement, so it is one transaction through any pooler; the
	// other instances hear of it once it is committed.
	if _, err := s.pool.Exec(ctx, `WITH lease AS (DELETE FROM redelivery_owners WHERE owner = $1),
			released AS (UPDATE held_pushes SET owner = NULL WHERE owner = $1 RETURNING 1)
		SELECT pg_notify($2, count(*)::text) FROM released HAVING count(*) > 0`, owner, HeldChannel); err != nil {
		return fmt.Errorf("releasing pushes: %w", err)
	}
	return nil
}

// A lease ending more than two hours ahead of the database's clock is
// lapsed too: no lease is that long (appserver's is 10 s, the store
// tests' an hour), so that clock has stepped back since it was written,
// and its held pushes would otherwise wait out the step, far past their
// redelivery window.
func (s *Store) TakeHeldPushes(ctx context.Context, limit int) ([]registry.HeldPush, error) {
	if _, err := s.pool.Exec(ctx, `WITH lapsed AS (DELETE FROM redelivery_owners WHERE lease_until < now() OR lease_until > now() + interval '2 hours' RETURNING owner)
		UPDATE held_pushes SET owner = NULL WHERE owner IN (SELECT owner FROM lapsed)`); err != nil {
		return nil, fmt.Errorf("releasing pushes of lapsed leases: %w", err)
	}
	// SKIP LOCKED: instances starting together each take other rows
	// rather than wait for one another.
	rows, err := s.pool.Query(ctx, `DELETE FROM held_pushes WHERE id IN
		(SELECT id FROM held_pushes WHERE owner IS NULL ORDER BY failed_at, id LIMIT $1 FOR UPDATE SKIP LOCKED)
		RETURNING failed_at, `+heldAge+`, push`, limit)
	if err != nil {
		return nil, fmt.Errorf("taking held pushes: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (registry.HeldPush, error) {
		var p registry.HeldPush
		var age int64
		err := r.Scan(&p.FailedAt, &age, &p.Push)
		p.FailedAt, p.Age = p.FailedAt.UTC(), max(time.Duration(age)*time.Microsecond, 1)
		return p, err
	})
	if err != nil {
		return nil, fmt.Errorf("taking held pushes: %w", err)
	}
	// RETURNING gives rows in no set order.
	slices.SortStableFunc(out, func(a, b registry.HeldPush) int { return a.FailedAt.Compare(b.FailedAt) })
	return out, nil
}

// heldAge is a held push's age by the database's clock, in µs.
const heldAge = `(extract(epoch FROM now() - failed_at) * 1000000)::bigint`

// startLease starts owner's lease for lease from now, or with renew
// renews it: ErrLeaseLost when it ran out and was given up.
func startLease(ctx context.Context, tx pgx.Tx, owner string, lease time.Duration, renew bool) error {
	if !renew {
		_, err := tx.Exec(ctx, `INSERT INTO redelivery_owners (owner, lease_until) VALUES ($1, now() + $2::interval)
			ON CONFLICT (owner) DO UPDATE SET lease_until = excluded.lease_until`, owner, lease)
		return err
	}
	tag, err := tx.Exec(ctx, `UPDATE redelivery_owners SET lease_until = now() + $2::interval WHERE owner = $1`, owner, lease)
	if err != nil {
		return err
	}
	if tag.RowsAffected() == 0 {
		return registry.ErrLeaseLost
	}
	return nil
}

func (s *Store) MoveHeldPushes(ctx context.Context, owner string, lease time.Duration, renew bool, limit int) ([]registry.HeldPush, error) {
	if _, err := s.pool.Exec(ctx, `WITH lapsed AS (DELETE FROM redelivery_owners WHERE lease_until < now() OR lease_until > now() + interval '2 hours' RETURNING owner)
		UPDATE held_pushes SET owner = NULL WHERE owner IN (SELECT owner FROM lapsed)`); err != nil {
		return nil, fmt.Errorf("releasing pushes of lapsed leases: %w", err)
	}
	var out []registry.HeldPush
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		// After the release above: a lease that ran out is gone.
		if err := startLease(ctx, tx, owner, lease, renew); err != nil {
			return err
		}
		rows, err := tx.Query(ctx, `UPDATE held_pushes SET owner = $1, device = 'moved/' || id WHERE id IN
			(SELECT id FROM held_pushes WHERE owner IS NULL ORDER BY failed_at, id LIMIT $2 FOR UPDATE SKIP LOCKED)
			RETURNING device, failed_at, `+heldAge+`, push`, owner, limit)
		if err != nil {
			return err
		}
		out, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (registry.HeldPush, error) {
			var p registry.HeldPush
			var age int64
			err := r.Scan(&p.Device, &p.FailedAt, &age, &p.Push)
			p.FailedAt, p.Age = p.FailedAt.UTC(), max(time.Duration(age)*time.Microsecond, 1)
			return p, err
		})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("taking held pushes: %w", err)
	}
	slices.SortStableFunc(out, func(a, b registry.HeldPush) int { return a.FailedAt.Compare(b.FailedAt) })
	return out, nil
}

// Listeners returns how many servers run on the registry now: each
// listens for its changes on one connection named push-appserver-listen
// (Follow). An import taking the pushes waiting for redelivery leaves
// them to such servers.
func (s *Store) Listeners(ctx context.Context) (int, error) {
	var n int
	if err := s.pool.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity
		WHERE datname = current_database() AND application_name = $1`, listenAppName).Scan(&n); err != nil {
		return 0, fmt.Errorf("counting listeners: %w", err)
	}
	return n, nil
}

// OtherServers returns how many servers other than this one run on the
// registry now: Listeners, less this store's own listening connection
// (Follow's), if it holds one.
func (s *Store) OtherServers(ctx context.Context) (int, error) {
	var n int
	if err := s.pool.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity
		WHERE datname = current_database() AND application_name = $1 AND pid <> $2`, listenAppName, int64(s.listenPID.Load())).Scan(&n); err != nil {
		return 0, fmt.Errorf("counting the other servers: %w", err)
	}
	return n, nil
}

func (s *Store) ReturnHeldPushes(ctx context.Context, owner string, devices []string) error {
	if _, err := s.pool.Exec(ctx, `UPDATE held_pushes SET owner = NULL WHERE owner = $1 AND device = ANY($2)`, owner, devices); err != nil {
		return fmt.Errorf("giving held pushes back: %w", err)
	}
	return nil
}

// maxHeldPayload bounds a hand-over's announcement below NOTIFY's 8000
// bytes; apps whose names take more are not named, and every instance
// looks.
const maxHeldPayload = 4000

// HandOverPushes is ReturnHeldPushes for pushes owner cannot send (their
// app is not configured there), announced on HeldChannel once committed
// with the apps they are for: an instance that has one of apps takes them
// at once rather than at its next look, up to 10 s later, and one that
// has none of them need not look.
func (s *Store) HandOverPushes(ctx context.Context, owner string, devices, apps []string) error {
	payload, err := json.Marshal(apps)
	if err != nil || len(payload) > maxHeldPayload || len(apps) == 0 {
		// Any instance may look, as after a stop.
		payload = []byte("0")
	}
	// One statement, as ReleasePushes: the others hear of it once the
	// rows are theirs to take.
	if _, err := s.pool.Exec(ctx, `WITH returned AS (UPDATE held_pushes SET owner = NULL WHERE owner = $1 AND device = ANY($2) RETURNING 1)
		SELECT pg_notify($3, $4) FROM returned HAVING count(*) > 0`, owner, devices, HeldChannel, string(payload)); err != nil {
		return fmt.Errorf("handing held pushes over: %w", err)
	}
	return nil
}

// heldApps is the apps a HeldChannel payload names: those of a hand-over
// (HandOverPushes), or nil for pushes any instance may take (a release's
// count, ReleasePushes).
func heldApps(payload string) []string {
	var apps []string
	if !strings.HasPrefix(payload, "[") || json.Unmarshal([]byte(payload), &apps) != nil {
		return nil
	}
	return apps
}

func (s *Store) PurgeBlockedTokens(ctx context.Context, before time.Time) (int, error) {
	tag, err := s.pool.Exec(ctx, `DELETE FROM blocked_tokens WHERE until < $1`, before)
	if err != nil {
		return 0, fmt.Errorf("purging blocked tokens: %w", err)
	}
	return int(tag.RowsAffected()), nil
}

func (s *Store) TrimBlockedTokens(ctx context.Context, keep int) (int, error) {
	// Ties in the bytes' order, as the other stores break them.
	tag, err := s.pool.Exec(ctx, `DELETE FROM blocked_tokens WHERE (type, token_key) IN (
		SELECT type, token_key FROM blocked_tokens ORDER BY until DESC, type COLLATE "C" DESC, token COLLATE "C" DESC OFFSET $1)`, max(keep, 0))
	if err != nil {
		return 0, fmt.Errorf("trimming blocked tokens: %w", err)
	}
	return int(tag.RowsAffected()), nil
}

func (s *Store) List(ctx context.Context, after string, limit int) ([]registry.Registration, error) {
	return s.list(ctx, `node > $1 ORDER BY node LIMIT $2`, after, limit)
}

func (s *Store) ListDomain(ctx context.Context, domain, after string, limit int) ([]registry.Registration, error) {
	// "domain <> ''" lets the planner use the domain's partial index,
	// which holds (domain, row), not node order: a page of a small
	// domain is its rows past after, sorted; for a domain large
	// enough that the sort would cost more, the planner walks the
	// primary key instead, as List does.
	return s.list(ctx, `domain = $1 AND domain <> '' AND node > $2 ORDER BY node LIMIT $3`, domain, after, limit)
}

// list returns the registrations the rest of the query selects.
func (s *Store) list(ctx context.Context, rest string, args ...any) ([]registry.Registration, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+columns+` FROM registrations WHERE `+rest, args...)
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
	rows, err := s.pool.Query(ctx, `SELECT type, COUNT(*) FROM registrations GROUP BY type`)
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

// Put sends the whole batch in one round trip, in one transaction.
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
	err := s.pool.QueryRow(ctx, `SELECT registered FROM imported_nodes WHERE node = $1`, node).Scan(&ns)
	if errors.Is(err, pgx.ErrNoRows) {
		return time.Time{}, registry.ErrNotFound
	}
	if err != nil {
		return time.Time{}, fmt.Errorf("imported node %s: %w", node, err)
	}
	return time.Unix(0, ns).UTC(), nil
}

func (s *Store) ImportedNodes(ctx context.Context, after string, limit int) ([]registry.ImportedNode, error) {
	rows, err := s.pool.Query(ctx, `SELECT node, registered FROM imported_nodes WHERE node > $1 ORDER BY node LIMIT $2`, after, limit)
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

// PutImportedNodes sends the whole page in one statement.
func (s *Store) PutImportedNodes(ctx context.Context, ns []registry.ImportedNode) error {
	if len(ns) == 0 {
		return nil
	}
	nodes := make([]string, len(ns))
	times := make([]int64, len(ns))
	for i, n := range ns {
		nodes[i], times[i] = n.Node, n.Registered.UnixNano()
	}
	// GROUP BY: ON CONFLICT DO UPDATE refuses a node twice in a statement.
	if _, err := s.pool.Exec(ctx, `INSERT INTO imported_nodes (node, registered)
		SELECT node, max(registered) FROM unnest($1::text[], $2::bigint[]) AS t(node, registered) GROUP BY node
		ON CONFLICT (node) DO UPDATE SET registered = GREATEST(imported_nodes.registered, excluded.registered)`, nodes, times); err != nil {
		return fmt.Errorf("put imported nodes: %w", err)
	}
	return nil
}

// put is Put, recording the nodes in imported_nodes too when imported is
// set (PutImported), in the same batch; when read is not nil, it writes
// only the registrations whose node is still as read (PutRead) and
// returns the others' nodes in changed.
func (s *Store) put(ctx context.Context, rs, read []registry.Registration, imported bool) (int, []string, error) {
	if len(rs) == 0 {
		return 0, nil, nil
	}
	all := make([]string, len(rs))
	for i, r := range rs {
		all[i] = r.Node
	}
	added := 0
	var changed []string
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		added, changed = 0, nil
		write, nodes := rs, all
		// replace says, for each of write, whether it may replace a
		// row of its node: always for Put; for PutRead only a row
		// found as read, locked here until the commit. A row another
		// transaction inserts meanwhile where none was read stays.
		replace := make([]bool, len(rs))
		for i := range replace {
			replace[i] = true
		}
		if read != nil {
			var err error
			if write, nodes, replace, changed, err = lockAsRead(ctx, tx, rs, read, all); err != nil {
				return err
			}
			if len(write) == 0 {
				return nil
			}
		}
		var b pgx.Batch
		// Device keys are judged on what the batch leaves (see the SQLite
		// store's put): the rewritten nodes let theirs go first.
		b.Queue(`UPDATE registrations SET device_key = NULL WHERE node = ANY($1) AND device_key IS NOT NULL`, nodes)
		insert := `INSERT INTO registrations (` + columns + `) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
			ON CONFLICT (node) DO UPDATE SET type = excluded.type, token = excluded.token, secret = excluded.secret,
				registered = excluded.registered, renewed = excluded.renewed,
				last_successful_push = excluded.last_successful_push, last_push_error = excluded.last_push_error,
				last_error_reason = excluded.last_error_reason, domain = excluded.domain,
				device_key = excluded.device_key, owner = excluded.owner, account = excluded.account
			WHERE $14
			RETURNING xmax = 0 AS inserted`
		if imported {
			// The node is recorded in the statement that writes it, and
			// only if it does: not where PutImportedRead left a row
			// registered meanwhile.
			insert = `WITH w AS (` + insert + `),
				i AS (INSERT INTO imported_nodes (node, registered) SELECT $1, $15::bigint FROM w
					ON CONFLICT (node) DO UPDATE SET registered = excluded.registered)
				SELECT inserted FROM w`
		}
		for i, r := range write {
			args := []any{r.Node, r.Type, r.Token, r.Secret, r.Registered, null(r.Renewed), null(r.LastSuccessfulPush),
				null(r.LastPushError), r.LastErrorReason, r.Domain, nullString(r.DeviceKey), r.Owner, r.Account, replace[i]}
			if imported {
				args = append(args, r.LastRegistered().UnixNano())
			}
			b.Queue(insert, args...).
				// A row the statement inserted has no xmax; one it
				// updated has the updating transaction's.
				QueryRow(func(row pgx.Row) error {
					var inserted bool
					if err := row.Scan(&inserted); errors.Is(err, pgx.ErrNoRows) {
						// Registered meanwhile where none was read.
						changed = append(changed, r.Node)
						return nil
					} else if err != nil {
						return err
					}
					if inserted {
						added++
					}
					return nil
				})
		}
		return tx.SendBatch(ctx, &b).Close()
	})
	if err != nil {
		return 0, nil, fmt.Errorf("put: %w", err)
	}
	return added, changed, nil
}

// lockAsRead locks the rows of rs's nodes (all) in tx, and returns
// those of rs whose node is still as read (see PutRead), the nodes of
// them that have a row (whose device keys put lets go first), whether
// each may replace its node's row (it has one), and the nodes of the
// others.
func lockAsRead(ctx context.Context, tx pgx.Tx, rs, read []registry.Registration, all []string) (write []registry.Registration, nodes []string, replace []bool, changed []string, err error) {
	rows, err := tx.Query(ctx, `SELECT `+columns+` FROM registrations WHERE node = ANY($1) ORDER BY node FOR UPDATE`, all)
	if err != nil {
		return nil, nil, nil, nil, err
	}
	now := map[string]registry.Registration{}
	for rows.Next() {
		r, err := scan(rows)
		if err != nil {
			rows.Close()
			return nil, nil, nil, nil, err
		}
		now[r.Node] = r
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, nil, nil, nil, err
	}
	for i, r := range rs {
		cur, found := now[r.Node]
		if !registry.StillAsRead(cur, found, read[i]) {
			changed = append(changed, r.Node)
			continue
		}
		write = append(write, r)
		replace = append(replace, found)
		if found {
			nodes = append(nodes, r.Node)
		}
	}
	return write, nodes, replace, changed, nil
}

// InstanceValue serialises first use across instances with a transaction
// advisory lock on the name, so gen runs once however many ask at once.
func (s *Store) InstanceValue(ctx context.Context, name string, gen func() (string, error)) (string, error) {
	var v string
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtext('instance_values:' || $1))`, name); err != nil {
			return err
		}
		err := tx.QueryRow(ctx, `SELECT value FROM instance_values WHERE name = $1`, name).Scan(&v)
		if !errors.Is(err, pgx.ErrNoRows) {
			return err
		}
		if v, err = gen(); err != nil {
			return errDecide{err}
		}
		_, err = tx.Exec(ctx, `INSERT INTO instance_values (name, value) VALUES ($1, $2)`, name, v)
		return err
	})
	var g errDecide
	if errors.As(err, &g) {
		return "", g.err
	}
	if err != nil {
		return "", fmt.Errorf("instance value %s: %w", name, err)
	}
	return v, nil
}

// Follow tells the caller about registrations changed by anyone sharing
// the database, until ctx is done. It holds one connection of its own that
// LISTENs on Channel and calls changed(node) for every notification, and
// live(true) once listening; when that connection is lost it calls
// live(false), and live(true) again after listening anew: what changed in
// between was not announced, so the caller must forget everything it
// cached. It reconnects with a short backoff, up to one second.
func (s *Store) Follow(ctx context.Context, changed func(node string), live func(bool)) error {
	backoff := 50 * time.Millisecond
	// The feed is tried again about once a second while the database is
	// away: its loss is logged, and then a failure that repeats once a
	// minute, not at each attempt; and its return.
	var lost logging.Repeats
	back := func() {
		backoff = 50 * time.Millisecond
		if n, was := lost.Ended(); was {
			s.logger.Info("registration change feed back", "attempts_not_logged", n)
		}
	}
	for {
		err := s.listen(ctx, changed, live, back)
		if ctx.Err() != nil {
			return nil
		}
		if n, ok := lost.Failed(err.Error(), time.Now()); ok {
			s.logger.Warn("registration change feed lost; caches resync when it is back", "err", err, "attempts_not_logged", n)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, time.Second)
	}
}

func (s *Store) listen(ctx context.Context, changed func(string), live func(bool), connected func()) error {
	cfg, err := pgx.ParseConfig(s.dsn)
	if err != nil {
		return errors.New("database.dsn: not a valid PostgreSQL connection string")
	}
	setParams(cfg, s.opts, listenAppName)
	keepIdle(cfg)
	s.opts.password(cfg)
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return fmt.Errorf("connecting: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	s.listenPID.Store(conn.PgConn().PID())
	defer s.listenPID.Store(0)
	lctx, cancel := context.WithTimeout(ctx, s.probeWait)
	_, err = conn.Exec(lctx, `LISTEN `+Channel+`; LISTEN `+ComponentChannel+`; LISTEN `+HeldChannel+`; LISTEN `+s.bar.ackChannel())
	cancel()
	if err != nil {
		return fmt.Errorf("LISTEN: %w", err)
	}
	// Probes go out on a connection of their own rather than through the
	// pool: a pool whose connections all wait (a locked table, a slow
	// database) says nothing of the LISTEN connection, and must not take
	// the feed down with it.
	pcfg, err := pgx.ParseConfig(s.dsn)
	if err != nil {
		return fmt.Errorf("connecting for probes: %w", err)
	}
	setParams(pcfg, s.opts, probeAppName)
	keepIdle(pcfg)
	s.opts.password(pcfg)
	pconn, err := pgx.ConnectConfig(ctx, pcfg)
	if err != nil {
		return fmt.Errorf("connecting for probes: %w", err)
	}
	defer pconn.Close(context.WithoutCancel(ctx))
	// The feed goes live once its first probe came back (see probe), and
	// is probed again whenever it has been quiet for heartbeat.
	p := probe{conn: pconn}
	if err := p.send(ctx, s); err != nil {
		return err
	}
	following := false
	defer func() {
		if following {
			s.bar.setLive(false)
			live(false)
		}
	}()
	for {
		wait := s.heartbeat
		if p.payload != "" {
			wait = time.Until(p.due)
		}
		wctx, cancel := context.WithTimeout(ctx, wait)
		n, err := conn.WaitForNotification(wctx)
		timedOut := err != nil && ctx.Err() == nil && wctx.Err() != nil
		cancel()
		switch {
		case timedOut && p.payload != "":
			return p.lost(following, s.namedStatements)
		case timedOut:
			if err := p.send(ctx, s); err != nil {
				return err
			}
			continue
		case err != nil:
			return err
		}
		switch n.Channel {
		case ComponentChannel:
			if fn := s.released.Load(); fn != nil {
				(*fn)(n.Payload)
			}
			continue
		case HeldChannel:
			if fn := s.held.Load(); fn != nil {
				(*fn)(heldApps(n.Payload))
			}
			continue
		case Channel:
		default:
			if p.payload != "" && n.Payload == p.payload {
				p.payload = ""
				if !following {
					following = true
					connected()
					// The barrier first: a write made once the caller
					// hears the feed is live waits for the others'
					// acks; told first, the caller could write in
					// between, and be answered OK with no instance
					// having dropped what it cached.
					s.bar.setLive(true)
					live(true)
				}
				continue
			}
			s.bar.acked(n.Payload)
			continue
		}
		// Heard before the feed is live too: the cache is bypassed then,
		// but what it keeps for an outage (see appserver's cache) drops
		// the node, and the writer waits for no one's second.
		writer, node := parseChange(n.Payload)
		changed(node)
		if writer != s.bar.id && isWriterID(writer) {
			// Dropped: tell the writer, whose write waits for it. Bounded
			// like a probe: on a connection gone silent, an ack without
			// a deadline would wait forever, and the heartbeat with it.
			actx, cancel := context.WithTimeout(ctx, s.probeWait)
			_, err := conn.Exec(actx, `SELECT pg_notify($1, $2)`, ackPrefix+writer, node)
			cancel()
			if err != nil {
				return fmt.Errorf("acknowledging a change: %w", err)
			}
		}
	}
}

// defaultHeartbeat is how long the change feed may be quiet before it is
// probed.
const defaultHeartbeat = 30 * time.Second

// probeWait bounds how long a probe's notification may take.
const probeWait = 5 * time.Second

// probePrefix starts the payload of a probe's notification on the ack
// channel, which no writer id starts with.
const probePrefix = "probe:"

// probe is a notification the feed sends itself through the pool, on its
// ack channel, to learn that its LISTEN connection still hears what is
// sent, and from the server it should. Three ways it may not:
//
//   - through a pooler in transaction mode (PgBouncer's pool_mode =
//     transaction) every statement works, LISTEN included, but the server
//     connection it ran on goes back to the pool and nothing is ever
//     delivered. The first probe finds this, and the feed never goes live.
//   - a connection cut without a word (a failover that moved the server's
//     address, a firewall that forgot the connection) reads nothing, and
//     TCP's keep-alive takes many minutes to tell. Meanwhile the others'
//     writes would each wait a second for this instance's ack. A probe
//     whenever the feed has been quiet for heartbeat finds this.
//   - the server turned read-only under the feed (a switchover that
//     fenced the old primary, which stays up): its notifications still
//     arrive, but the writes, and theirs, go to the new primary now. A
//     probe that finds the server read-only where an earlier one on the
//     connection found it writable finds this, and the feed listens again
//     where target_session_attrs leads. Only then: a feed that starts on
//     a read-only server (the only one there is, or a DSN that asks for
//     no writable one) stays, having nowhere better to go, rather than
//     stop at every probe and leave the cache bypassed meanwhile.
//
// Each way the feed stops, and the cache is bypassed until it is back.
type probe struct {
	conn     *pgx.Conn // not the LISTEN connection, nor one of the pool's
	payload  string    // of the probe under way; "" when none is
	due      time.Time
	writable bool // an earlier probe found the server writable
}

func (p *probe) send(ctx context.Context, s *Store) error {
	b := make([]byte, 8)
	rand.Read(b)
	p.payload, p.due = probePrefix+hex.EncodeToString(b), time.Now().Add(s.probeWait)
	sctx, cancel := context.WithTimeout(ctx, s.probeWait)
	defer cancel()
	var ro string
	if err := p.conn.QueryRow(sctx, `SELECT current_setting('transaction_read_only') FROM pg_notify($1, $2)`, s.bar.ackChannel(), p.payload).Scan(&ro); err != nil {
		return fmt.Errorf("probing the change feed: %w", err)
	}
	if ro == "on" && p.writable {
		return errors.New("the database the change feed listens on turned read-only (a switchover?): listening again")
	}
	p.writable = ro != "on"
	return nil
}

// lost is the error of a probe that did not come back in time; named
// says statements are prepared under a name (see Store.namedStatements).
func (p *probe) lost(following, named bool) error {
	if following {
		return errors.New("the LISTEN connection stopped hearing notifications: a probe sent through the pool did not arrive")
	}
	msg := "a notification sent through the pool did not arrive on the LISTEN connection: " +
		"the DSN must lead to PostgreSQL itself or to a pooler in session mode, not one in transaction mode, which does not deliver notifications"
	if named {
		// Statements fail there too, as their prepared statements meet
		// other clients' on the server connections.
		msg += "; " + execModeAdvice
	}
	return errors.New(msg)
}

// ReleaseComponent tells the instances sharing the database that this one
// closed its connection for component jid: one standing by for it (Prosody
// takes one connection per component) connects at once instead of at its
// next retry, up to two seconds later.
func (s *Store) ReleaseComponent(ctx context.Context, jid string) error {
	if _, err := s.pool.Exec(ctx, `SELECT pg_notify($1, $2)`, ComponentChannel, jid); err != nil {
		return fmt.Errorf("announcing the release of %s: %w", jid, err)
	}
	return nil
}

// OnComponentReleased makes Follow call fn with every component JID that
// an instance released.
func (s *Store) OnComponentReleased(fn func(jid string)) { s.released.Store(&fn) }

// OnPushesHeld makes Follow call fn whenever an instance held pushes for
// the others (ReleasePushes), as it does when it stops, with apps nil, or
// handed over pushes of apps it does not have (HandOverPushes), with
// those apps: one still running takes them at once instead of at its next
// look.
func (s *Store) OnPushesHeld(fn func(apps []string)) { s.held.Store(&fn) }

// closeWait bounds how long Close waits for the pool's connections to
// close. pgx gives each 15 s to say goodbye, and a database gone silent
// (its host gone, its address moved by a failover) answers none: the
// stop would take that long on top of everything else, near systemd's
// TimeoutStopSec. Those left close on their own, or with the process.
const closeWait = 2 * time.Second

// Close stores the registrations queued, then closes the pool, waiting
// at most closeWait for it.
func (s *Store) Close() error {
	s.tracer.stop()
	s.gc.Close()
	closed := make(chan struct{})
	go func() {
		s.pool.Close()
		close(closed)
	}()
	t := time.NewTimer(closeWait)
	defer t.Stop()
	select {
	case <-closed:
	case <-t.C:
	}
	return nil
}
