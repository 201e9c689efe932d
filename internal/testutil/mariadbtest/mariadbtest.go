// Package mariadbtest runs a private MariaDB server for tests:
// mariadb-install-db into a temporary directory, its own free port on
// loopback and its unix socket in that directory, torn down when the test
// binary ends. One server serves a test package; every test gets a
// database, and a user with a password, of its own.
//
// MariaDB comes from Debian's mariadb-server package, which
// scripts/test-deps.sh (run by `make test-deps`) installs. When the binaries
// are missing the test fails and says so: it is never skipped.
package mariadbtest

import (
	"context"
	"database/sql"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/push-appserver/push-appserver/internal/testutil/daemon"
)

// The server binaries, where Debian's mariadb-server puts them.
const (
	mariadbd  = "/usr/sbin/mariadbd"
	installDB = "mariadb-install-db"
)

// Server is a MariaDB server started on first use.
type Server struct {
	once    sync.Once
	err     error
	dir     string
	port    int
	proc    *daemon.Process
	logPath string
	admin   *sql.DB // root, over the unix socket

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

// Database is an empty database of one test and its user's credentials.
type Database struct {
	Name, User, Password string
	Addr                 string // host:port on loopback
	// URL is mysql://user:password@host:port/name.
	URL string
	// DSN is the same for github.com/go-sql-driver/mysql.
	DSN string
}

// DB creates an empty database for the test and a user (with a password,
// over TCP) that owns it, both dropped when the test ends.
func (s *Server) DB(t testing.TB) Database {
	t.Helper()
	s.once.Do(func() { s.err = s.start() })
	if s.err != nil {
		t.Fatalf("MariaDB test server: %v", s.err)
	}
	s.mu.Lock()
	s.seq++
	d := Database{Name: fmt.Sprintf("t%d_%d", os.Getpid(), s.seq), User: fmt.Sprintf("u%d", s.seq),
		Password: fmt.Sprintf("pw-%d:@/%d", os.Getpid(), s.seq), Addr: fmt.Sprintf("127.0.0.1:%d", s.port)}
	s.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, q := range []string{
		"CREATE DATABASE " + d.Name + " CHARACTER SET utf8mb4 COLLATE utf8mb4_bin",
		"CREATE USER '" + d.User + "'@'127.0.0.1' IDENTIFIED BY '" + d.Password + "'",
		"GRANT ALL ON " + d.Name + ".* TO '" + d.User + "'@'127.0.0.1'",
	} {
		if _, err := s.admin.ExecContext(ctx, q); err != nil {
			t.Fatalf("MariaDB test server: %s: %v", q, err)
		}
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		for _, q := range []string{"DROP DATABASE " + d.Name, "DROP USER '" + d.User + "'@'127.0.0.1'"} {
			if _, err := s.admin.ExecContext(ctx, q); err != nil {
				t.Logf("MariaDB test server: %s: %v", q, err)
			}
		}
	})
	d.URL = (&url.URL{Scheme: "mysql", User: url.UserPassword(d.User, d.Password), Host: d.Addr, Path: "/" + d.Name}).String()
	cfg := mysql.NewConfig()
	cfg.User, cfg.Passwd, cfg.Net, cfg.Addr, cfg.DBName = d.User, d.Password, "tcp", d.Addr, d.Name
	d.DSN = cfg.FormatDSN()
	return d
}

// binaries checks that the server binaries are installed.
func binaries() (string, error) {
	if _, err := os.Stat(mariadbd); err != nil {
		return "", fmt.Errorf("MariaDB server binary %s not found: run `make test-deps` (scripts/test-deps.sh installs Debian's mariadb-server)", mariadbd)
	}
	install, err := exec.LookPath(installDB)
	if err != nil {
		return "", fmt.Errorf("%s not found: run `make test-deps` (scripts/test-deps.sh installs Debian's mariadb-server)", installDB)
	}
	return install, nil
}

func (s *Server) start() error {
	install, err := binaries()
	if err != nil {
		return err
	}
	s.dir, err = os.MkdirTemp("", "mariadbtest-")
	if err != nil {
		return err
	}
	// As root, mariadbd switches to the mysql user the package created,
	// which must own the directory.
	var userArgs []string
	if cred, err := daemon.OwnAs(s.dir, "mysql", "mariadb-server"); err != nil {
		return err
	} else if cred != nil {
		userArgs = []string{"--user=mysql"}
	}
	data := filepath.Join(s.dir, "data")
	// --no-defaults everywhere: nothing of the system's my.cnf.
	initdb := exec.Command(install, append([]string{"--no-defaults", "--datadir=" + data, "--auth-root-authentication-method=normal",
		"--skip-test-db", "--skip-name-resolve"}, userArgs...)...)
	if out, err := initdb.CombinedOutput(); err != nil {
		return fmt.Errorf("mariadb-install-db: %v\n%s", err, out)
	}
	s.logPath = filepath.Join(s.dir, "mariadb.log")
	return daemon.OnFreePort(func(port int) error { return s.launch(data, userArgs, port) })
}

func (s *Server) launch(data string, userArgs []string, port int) error {
	s.port = port
	socket := filepath.Join(s.dir, "mariadb.sock")
	cmd := exec.Command(mariadbd, append([]string{"--no-defaults", "--datadir=" + data,
		"--port=" + strconv.Itoa(port), "--bind-address=127.0.0.1", "--socket=" + socket,
		"--pid-file=" + filepath.Join(s.dir, "mariadb.pid"), "--log-error=" + s.logPath,
		"--skip-name-resolve", "--skip-log-bin",
		// A throwaway database: durability buys nothing here, and a small
		// buffer pool starts faster.
		"--innodb-buffer-pool-size=16M", "--innodb-flush-log-at-trx-commit=0", "--innodb-doublewrite=0",
	}, userArgs...)...)
	proc, err := daemon.Start(cmd)
	if err != nil {
		return fmt.Errorf("starting mariadbd: %w", err)
	}
	cfg := mysql.NewConfig()
	cfg.User, cfg.Net, cfg.Addr = "root", "unix", socket
	connector, err := mysql.NewConnector(cfg)
	if err != nil {
		proc.Stop(syscall.SIGTERM)
		return err
	}
	admin := sql.OpenDB(connector)
	if err := daemon.WaitReady("mariadbd", admin.PingContext, proc.Exited(), s.logPath, 60*time.Second); err != nil {
		// Only the process: the data directory serves the next attempt.
		admin.Close()
		proc.Stop(syscall.SIGTERM)
		return err
	}
	s.admin, s.proc = admin, proc
	return nil
}

// Stop shuts the server down and removes its directory.
func (s *Server) Stop() {
	if s.admin != nil {
		s.admin.Close()
		s.admin = nil
	}
	if s.proc != nil {
		s.proc.Stop(syscall.SIGTERM)
		s.proc = nil
	}
	if s.dir != "" {
		os.RemoveAll(s.dir)
		s.dir = ""
	}
}
