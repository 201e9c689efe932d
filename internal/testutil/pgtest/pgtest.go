// Package pgtest runs a private PostgreSQL server for tests: initdb into a
// temporary directory, its own free port on loopback and its unix socket in
// that directory, torn down when the test binary ends. One server serves a
// test package; every test gets a database of its own.
//
// PostgreSQL comes from Debian's postgresql package, which
// scripts/test-deps.sh (run by `make test-deps`) installs. When the binaries
// are missing the test fails and says so: it is never skipped.
package pgtest

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/push-appserver/push-appserver/internal/testutil/daemon"
)

// Server is a PostgreSQL server started on first use.
type Server struct {
	once    sync.Once
	err     error
	dir     string
	port    int
	proc    *daemon.Process
	logPath string

	// What launch needs to start the server again (Up).
	bin, data string
	cred      *syscall.Credential

	mu  sync.Mutex
	seq int
}

// New returns a server that starts when a test first asks for a database.
// Call Run from TestMain so it is stopped when the tests end.
func New() *Server { return &Server{} }

// Run runs the tests and stops the server afterwards; use it as
// os.Exit(srv.Run(m)) in TestMain.
func (s *Server) Run(m *testing.M) int {
	code := m.Run()
	s.Stop()
	return code
}

// DB creates an empty database for the test, dropped when it ends, and
// returns its DSN (over TCP on loopback, usable by child processes too).
func (s *Server) DB(t testing.TB) string {
	t.Helper()
	s.once.Do(func() { s.err = s.start() })
	if s.err != nil {
		t.Fatalf("PostgreSQL test server: %v", s.err)
	}
	s.mu.Lock()
	s.seq++
	name := fmt.Sprintf("t%d_%d", os.Getpid(), s.seq)
	s.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := s.exec(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatalf("creating test database: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := s.exec(ctx, "DROP DATABASE "+name+" WITH (FORCE)"); err != nil {
			t.Logf("dropping test database: %v", err)
		}
	})
	return s.dsn(name)
}

// Terminate ends the server-side backends of the database in dsn whose
// application_name is app, as an operator or a network failure would, and
// returns how many it ended.
func (s *Server) Terminate(t testing.TB, dsn, app string) int {
	t.Helper()
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		t.Fatal(err)
	}
	ctx, conn, done := s.superuser(t)
	defer done()
	var n int
	err = conn.QueryRow(ctx, `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
		WHERE datname = $1 AND application_name = $2`, cfg.Database, app).Scan(&n)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func (s *Server) dsn(db string) string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable", s.port, db)
}

// superuser connects to the server's own database as its superuser, for
// a minute at most; done closes the connection.
func (s *Server) superuser(t testing.TB) (ctx context.Context, conn *pgx.Conn, done func()) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	conn, err := pgx.Connect(ctx, s.dsn("postgres"))
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	return ctx, conn, func() {
		conn.Close(ctx)
		cancel()
	}
}

func (s *Server) exec(ctx context.Context, sql string) error {
	conn, err := pgx.Connect(ctx, s.dsn("postgres"))
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	_, err = conn.Exec(ctx, sql)
	return err
}

// Binaries returns the directory holding initdb and postgres, the newest
// installed major version.
func Binaries() (string, error) {
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool { return version(dirs[i]) > version(dirs[j]) })
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, "postgres")); err == nil {
			return d, nil
		}
	}
	return "", fmt.Errorf("PostgreSQL server binaries (initdb, postgres) not found under /usr/lib/postgresql: run `make test-deps` (scripts/test-deps.sh installs Debian's postgresql)")
}

func version(binDir string) int {
	n, _ := strconv.Atoi(filepath.Base(filepath.Dir(binDir)))
	return n
}

func (s *Server) start() error {
	bin, err := Binaries()
	if err != nil {
		return err
	}
	s.dir, err = os.MkdirTemp("", "pgtest-")
	if err != nil {
		return err
	}
	// PostgreSQL refuses to run as root: run it as the postgres user the
	// package created.
	cred, err := daemon.OwnAs(s.dir, "postgres", "postgresql")
	if err != nil {
		return err
	}
	data := filepath.Join(s.dir, "data")
	initdb := exec.Command(filepath.Join(bin, "initdb"), "-D", data, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync", "--no-instructions")
	initdb.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	if out, err := initdb.CombinedOutput(); err != nil {
		return fmt.Errorf("initdb: %v\n%s", err, out)
	}
	s.logPath = filepath.Join(s.dir, "postgres.log")
	s.bin, s.data, s.cred = bin, data, cred
	return daemon.OnFreePort(func(port int) error { return s.launch(bin, data, cred, port) })
}

// Crash ends the server as a crash would (Down) and starts it again on
// the same port and data directory (Up), where it recovers from its log
// before it answers. What it survives is what was committed with
// synchronous_commit on: the server runs with it off, so a test that
// crashes it turns it on for its own connections (DurableDSN).
func (s *Server) Crash(t testing.TB) {
	t.Helper()
	s.Down(t)
	s.Up(t)
}

// Down ends the server as a crash would: SIGQUIT, PostgreSQL's immediate
// shutdown, whose processes exit at once, with no checkpoint. Connections
// are refused until Up; a test that ends before it calls Up has the
// server started again for the tests after it.
func (s *Server) Down(t testing.TB) {
	t.Helper()
	if s.proc == nil {
		t.Fatal("PostgreSQL test server: Down while it is not running")
	}
	s.proc.Stop(syscall.SIGQUIT)
	s.proc = nil
	t.Cleanup(func() {
		if s.proc == nil {
			s.Up(t)
		}
	})
}

// Up starts the server again after Down, on the same port and data
// directory, and returns once it answers.
func (s *Server) Up(t testing.TB) {
	t.Helper()
	if s.proc != nil {
		t.Fatal("PostgreSQL test server: Up while it is running")
	}
	if err := s.launch(s.bin, s.data, s.cred, s.port); err != nil {
		t.Fatalf("PostgreSQL test server: starting again: %v", err)
	}
}

// DurableDSN is dsn, one that DB returned (it has a query already), with
// synchronous_commit on for its connections: a commit returns once its
// log is written, so that it survives Crash.
func DurableDSN(dsn string) string { return dsn + "&synchronous_commit=on" }

func (s *Server) launch(bin, data string, cred *syscall.Credential, port int) error {
	s.port = port
	logf, err := os.OpenFile(s.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o666)
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd := exec.Command(filepath.Join(bin, "postgres"), "-D", data, "-p", strconv.Itoa(port),
		"-k", s.dir, "-c", "listen_addresses=127.0.0.1",
		// A throwaway database: durability buys nothing here.
		"-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
		"-c", "max_connections=300", "-c", "shared_buffers=32MB")
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	proc, err := daemon.Start(cmd)
	if err != nil {
		return fmt.Errorf("starting postgres: %w", err)
	}
	if err := daemon.WaitReady("postgres", func(ctx context.Context) error { return s.exec(ctx, "SELECT 1") }, proc.Exited(), s.logPath, 60*time.Second); err != nil {
		// Only the process: the data directory serves the next attempt.
		proc.Stop(syscall.SIGINT)
		return err
	}
	s.proc = proc
	return nil
}

// Stop shuts the server down (fast shutdown) and removes its directory.
func (s *Server) Stop() {
	if s.proc != nil {
		s.proc.Stop(syscall.SIGINT)
		s.proc = nil
	}
	if s.dir != "" {
		os.RemoveAll(s.dir)
		s.dir = ""
	}
}

// Listener is a connection that LISTENs on a channel under an
// application_name, as a push-appserver instance's change feed does, and
// never answers what it hears: a hung instance, which the writers count
// and wait for.
type Listener struct{ conn *pgx.Conn }

// Listen opens a Listener on the database in dsn, closed when the test
// ends.
func Listen(t testing.TB, dsn, app, channel string) *Listener {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn+"&application_name="+app)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	if _, err := conn.Exec(ctx, "LISTEN "+channel); err != nil {
		t.Fatal(err)
	}
	return &Listener{conn: conn}
}

// Heard returns once a notification whose payload ends with suffix
// arrived: the transaction that sent it committed.
func (l *Listener) Heard(t testing.TB, suffix string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for {
		n, err := l.conn.WaitForNotification(ctx)
		if err != nil {
			t.Fatalf("no notification ending in %q: %v", suffix, err)
		}
		if strings.HasSuffix(n.Payload, suffix) {
			return
		}
	}
}

// EndOthers ends the server-side backends of the listener's database
// named app, but for its own, as an operator or a network failure would,
// and returns how many it ended.
func (l *Listener) EndOthers(t testing.TB, app string) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var n int
	if err := l.conn.QueryRow(ctx, `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
		WHERE datname = current_database() AND application_name = $1 AND pid <> pg_backend_pid()`, app).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// RequirePasswords makes the server ask every role but postgres (which
// the helpers here use) for its password over TCP, as a production
// server does, rather than trust it: a test can then rotate a role's
// password. Call it after DB, on a server of the test's own.
func (s *Server) RequirePasswords(t testing.TB) {
	t.Helper()
	if s.data == "" {
		t.Fatal("PostgreSQL test server: RequirePasswords before DB")
	}
	hba := "local all all trust\n" +
		"host all postgres 127.0.0.1/32 trust\n" +
		"host all all 127.0.0.1/32 scram-sha-256\n"
	if err := os.WriteFile(filepath.Join(s.data, "pg_hba.conf"), []byte(hba), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := s.exec(ctx, "SELECT pg_reload_conf()"); err != nil {
		t.Fatal(err)
	}
	// The reload is asynchronous: wait until a role with no password
	// is asked for one (trusted, it is told it does not exist).
	probe := fmt.Sprintf("postgres://pgtest_nobody:x@127.0.0.1:%d/postgres?sslmode=disable", s.port)
	for {
		conn, err := pgx.Connect(ctx, probe)
		if err == nil {
			conn.Close(ctx)
		}
		if err != nil && strings.Contains(err.Error(), "28P01") {
			return
		}
		if ctx.Err() != nil {
			t.Fatalf("PostgreSQL test server: passwords not required after a minute: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Standby makes a streaming hot standby of the server (pg_basebackup
// -R) and starts it on a port of its own, stopped when the test ends:
// it answers reads, refuses writes with SQLSTATE 25006 and LISTEN
// likewise, until Promote. The databases DB made before are there too;
// DSN gives one's address on the standby. It returns once the standby
// streams from the server, which then lists it in pg_stat_replication.
func (s *Server) Standby(t testing.TB) *Server {
	t.Helper()
	s.once.Do(func() { s.err = s.start() })
	if s.err != nil {
		t.Fatalf("PostgreSQL test server: %v", s.err)
	}
	dir, err := os.MkdirTemp("", "pgtest-standby-")
	if err != nil {
		t.Fatal(err)
	}
	sb := &Server{dir: dir, bin: s.bin, cred: s.cred, data: filepath.Join(dir, "data"), logPath: filepath.Join(dir, "postgres.log")}
	sb.once.Do(func() {})
	t.Cleanup(sb.Stop)
	if _, err := daemon.OwnAs(dir, "postgres", "postgresql"); err != nil {
		t.Fatal(err)
	}
	bb := exec.Command(filepath.Join(s.bin, "pg_basebackup"), "-D", sb.data, "-h", "127.0.0.1", "-p", strconv.Itoa(s.port), "-U", "postgres", "-R", "-X", "stream", "--checkpoint=fast", "--no-sync")
	bb.SysProcAttr = &syscall.SysProcAttr{Credential: s.cred}
	if out, err := bb.CombinedOutput(); err != nil {
		t.Fatalf("pg_basebackup: %v\n%s", err, out)
	}
	if err := daemon.OnFreePort(func(port int) error { return sb.launch(sb.bin, sb.data, sb.cred, port) }); err != nil {
		t.Fatalf("starting the standby: %v", err)
	}
	// It answers once its copy is consistent, which may be before its
	// WAL receiver has reached the primary.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for {
		conn, err := pgx.Connect(ctx, sb.dsn("postgres"))
		if err != nil {
			t.Fatalf("connecting to the standby: %v", err)
		}
		var n int
		err = conn.QueryRow(ctx, `SELECT count(*) FROM pg_stat_wal_receiver WHERE status = 'streaming'`).Scan(&n)
		conn.Close(ctx)
		if err != nil {
			t.Fatalf("asking the standby whether it streams: %v", err)
		}
		if n > 0 {
			return sb
		}
		select {
		case <-ctx.Done():
			t.Fatal("the standby does not stream from the primary after a minute")
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// SetSystem sets a parameter for the whole server (ALTER SYSTEM, then a
// reload), as a DBA would in postgresql.conf, and returns once a new
// session has it; when the test ends it is set back the same way. A setting
// given on the server's command line (synchronous_commit among them,
// see launch) cannot be changed so. The tests of a package share their
// server: only for tests that run alone.
func (s *Server) SetSystem(t testing.TB, name, value string) {
	t.Helper()
	before := s.setting(t, name)
	s.setSystem(t, `ALTER SYSTEM SET `+name+` = '`+strings.ReplaceAll(value, "'", "''")+`'`, name, value)
	t.Cleanup(func() {
		back := `ALTER SYSTEM SET ` + name + ` = '` + strings.ReplaceAll(before, "'", "''") + `'`
		if before == "" {
			back = `ALTER SYSTEM RESET ` + name
		}
		s.setSystem(t, back, name, before)
	})
}

// SyncStandbys sets synchronous_standby_names for the whole server (see
// SetSystem) and returns once n of the standbys streaming from it are
// ones a commit waits for (sync_state sync or quorum): each walsender
// takes the setting up at its own pace, after a new session already has
// it.
func (s *Server) SyncStandbys(t testing.TB, names string, n int) {
	t.Helper()
	s.SetSystem(t, "synchronous_standby_names", names)
	ctx, conn, done := s.superuser(t)
	defer done()
	for {
		var got int
		if err := conn.QueryRow(ctx, `SELECT count(*) FROM pg_stat_replication WHERE sync_state IN ('sync', 'quorum')`).Scan(&got); err != nil {
			t.Fatal(err)
		}
		if got == n {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("PostgreSQL test server: %d synchronous standby(s) a minute after synchronous_standby_names = %q, want %d", got, names, n)
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// setting is the value of the parameter name in a new session.
func (s *Server) setting(t testing.TB, name string) string {
	t.Helper()
	ctx, conn, done := s.superuser(t)
	defer done()
	var v string
	if err := conn.QueryRow(ctx, `SELECT current_setting($1)`, name).Scan(&v); err != nil {
		t.Fatal(err)
	}
	return v
}

func (s *Server) setSystem(t testing.TB, stmt, name, value string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, q := range []string{stmt, `SELECT pg_reload_conf()`} {
		if err := s.exec(ctx, q); err != nil {
			t.Fatalf("PostgreSQL test server: %s: %v", q, err)
		}
	}
	// The reload is asynchronous.
	for {
		v := s.setting(t, name)
		if v == value {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("PostgreSQL test server: %s is %q a minute after setting it to %q", name, v, value)
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// Promote makes a standby the primary and returns once it takes writes.
func (s *Server) Promote(t testing.TB) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := s.exec(ctx, "SELECT pg_promote()"); err != nil {
		t.Fatalf("promoting the standby: %v", err)
	}
}

// DSN is dsn, one that DB returned from another server, with this
// server's address: the same database here.
func (s *Server) DSN(dsn string) string {
	i := strings.Index(dsn, "@127.0.0.1:")
	j := strings.Index(dsn[i+1:], "/")
	if i < 0 || j < 0 {
		panic("pgtest: not a DSN of DB: " + dsn)
	}
	return dsn[:i+1] + "127.0.0.1:" + strconv.Itoa(s.port) + dsn[i+1+j:]
}
