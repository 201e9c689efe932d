package pgtest

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/push-appserver/push-appserver/internal/testutil/daemon"
)

// Bouncer starts PgBouncer (Debian's pgbouncer package) in front of the
// server, in pool mode mode ("session" or "transaction"), for the test,
// and returns dsn, one that DB returned, rewritten to go through it.
func (s *Server) Bouncer(t testing.TB, dsn, mode string) string {
	t.Helper()
	bin, err := exec.LookPath("pgbouncer")
	if err != nil {
		if _, serr := os.Stat("/usr/sbin/pgbouncer"); serr != nil {
			t.Fatal("pgbouncer not found: run `make test-deps` (scripts/test-deps.sh installs Debian's pgbouncer)")
		}
		bin = "/usr/sbin/pgbouncer"
	}
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	// Not t.TempDir(): its parent is the test's, which the postgres user
	// cannot enter.
	dir, err := os.MkdirTemp("", "pgbouncer-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	// Like PostgreSQL, PgBouncer refuses to run as root.
	cred, err := daemon.OwnAs(dir, "postgres", "postgresql")
	if err != nil {
		t.Fatal(err)
	}
	logPath := filepath.Join(dir, "pgbouncer.log")
	var proc *daemon.Process
	var port int
	err = daemon.OnFreePort(func(p int) error {
		port = p
		ini := filepath.Join(dir, "pgbouncer.ini")
		conf := fmt.Sprintf(`[databases]
* = host=127.0.0.1 port=%s user=postgres

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = %d
unix_socket_dir =
auth_type = any
pool_mode = %s
max_client_conn = 200
default_pool_size = 20
pidfile = %s
`, u.Port(), p, mode, filepath.Join(dir, "pgbouncer.pid"))
		if err := os.WriteFile(ini, []byte(conf), 0o644); err != nil {
			return err
		}
		if cred != nil {
			os.Chown(ini, int(cred.Uid), int(cred.Gid))
		}
		logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o666)
		if err != nil {
			return err
		}
		defer logf.Close()
		cmd := exec.Command(bin, ini)
		cmd.Stdout, cmd.Stderr = logf, logf
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
		pr, err := daemon.Start(cmd)
		if err != nil {
			return fmt.Errorf("starting pgbouncer: %w", err)
		}
		through := *u
		through.Host = "127.0.0.1:" + strconv.Itoa(p)
		ready := func(ctx context.Context) error {
			conn, err := pgx.Connect(ctx, through.String())
			if err != nil {
				return err
			}
			return conn.Close(ctx)
		}
		if err := daemon.WaitReady("pgbouncer", ready, pr.Exited(), logPath, 20*time.Second); err != nil {
			pr.Stop(syscall.SIGINT)
			return err
		}
		proc = pr
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { proc.Stop(syscall.SIGINT) })
	u.Host = "127.0.0.1:" + strconv.Itoa(port)
	return u.String()
}
