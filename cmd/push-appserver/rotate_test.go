package main

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/push-appserver/push-appserver/internal/testutil/pgtest"
)

// A rotated PostgreSQL password (SQLSTATE 28P01 for the old one), with
// the DSN's file (dsn = "file:...") rewritten and the server reloaded as
// for any other secret, is taken up without a restart: once the old
// sessions are ended, the connections made after use the new password,
// and registrations are stored again. With the password read once at
// the start, every new connection was refused until a restart, while a
// reload answered that nothing had changed.
func TestPasswordRotatedInDSNFile(t *testing.T) {
	bin := buildBinary(t)
	// A server of its own, asking for passwords.
	own := pgtest.New()
	t.Cleanup(own.Stop)
	admin := own.DB(t)
	own.RequirePasswords(t)
	ctx := context.Background()
	c, err := pgx.Connect(ctx, admin)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	db := c.Config().Database
	for _, q := range []string{`CREATE ROLE pushapp LOGIN PASSWORD 'first-password'`, `ALTER DATABASE ` + db + ` OWNER TO pushapp`} {
		if _, err := c.Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	u, err := url.Parse(admin)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	dsnFile := filepath.Join(dir, "dsn")
	writeDSN := func(password string) {
		t.Helper()
		v := *u
		v.User = url.UserPassword("pushapp", password)
		if err := os.WriteFile(dsnFile, []byte(v.String()+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	writeDSN("first-password")
	addr := freePort(t)
	config := filepath.Join(dir, "push-appserver.toml")
	if err := os.WriteFile(config, []byte(fmt.Sprintf("data_dir = %q\n[http]\nlisten = %q\n[database]\ndriver = \"postgres\"\ndsn = \"file:%s\"\n",
		filepath.Join(dir, "data"), addr, dsnFile)), 0o600); err != nil {
		t.Fatal(err)
	}
	s := startServer(t, bin, config)
	s.waitHealthy(t, addr)
	s.registerTo(t, "apns", "n1", "ab12")

	// The DBA rotates the password, the file gets the new one, the
	// server is reloaded, and the old sessions are ended.
	if _, err := c.Exec(ctx, `ALTER ROLE pushapp PASSWORD 'second-password'`); err != nil {
		t.Fatal(err)
	}
	writeDSN("second-password")
	if err := s.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	s.waitLog(t, "reload:")
	if _, err := c.Exec(ctx, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = 'pushapp'`); err != nil {
		t.Fatal(err)
	}
	var last string
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		last = s.post(t, "register", url.Values{"type": {"apns"}, "node": {"n2"}, "token": {"cd34"}})
		if strings.HasPrefix(last, "OK\n") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("15 s after the password was rotated and the DSN's file rewritten, registrations still fail: %q", last)
		}
	}
	if strings.Contains(s.log.String(), "second-password") || strings.Contains(s.log.String(), "first-password") {
		t.Error("the log holds a password")
	}
	s.stop(t)
}
