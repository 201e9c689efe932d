package main

import (
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/push-appserver/push-appserver/internal/testutil/pgtest"
)

var pg = pgtest.New()

func TestMain(m *testing.M) {
	code := pg.Run(m)
	if built.dir != "" {
		os.RemoveAll(built.dir)
	}
	os.Exit(code)
}

// Two real binaries on one PostgreSQL, the DSN read from the environment as
// the README shows: a device registered on one is pushed through the
// other, and unregistered there it is gone on the first.
func TestServePostgresTwoInstances(t *testing.T) {
	bin := buildBinary(t)
	t.Setenv("PUSH_APPSERVER_DSN", pg.DB(t))
	var srv [2]*server
	for i := range srv {
		dir := t.TempDir()
		addr := freePort(t)
		config := filepath.Join(dir, "push-appserver.toml")
		os.WriteFile(config, []byte(fmt.Sprintf("data_dir = %q\n[http]\nlisten = %q\n[database]\ndriver = \"postgres\"\ndsn = \"env:PUSH_APPSERVER_DSN\"\n",
			filepath.Join(dir, "data"), addr)), 0o600)
		srv[i] = startServer(t, bin, config)
		srv[i].waitHealthy(t, addr)
	}
	a, b := srv[0], srv[1]
	body := a.post(t, "register", url.Values{"type": {"apns"}, "node": {"n1"}, "token": {"ab12"}})
	secret := strings.Split(body, "\n")[2]
	if body := b.post(t, "push", url.Values{"node": {"n1"}, "secret": {secret}}); body != "OK\nn1" {
		t.Fatalf("push via the other instance: %q", body)
	}
	if body := b.post(t, "unregister", url.Values{"type": {"apns"}, "node": {"n1"}}); body != "OK\nn1\n" {
		t.Fatalf("unregister via the other instance: %q", body)
	}
	if body := a.post(t, "push", url.Values{"node": {"n1"}, "secret": {secret}}); !strings.HasPrefix(body, "ERROR\n") {
		t.Fatalf("push after unregister: %q", body)
	}
	for _, s := range srv {
		s.stop(t)
	}
	if _, err := os.Stat(filepath.Join(filepath.Dir(a.cmd.Args[3]), "data", "registry.db")); err == nil {
		t.Fatal("a SQLite registry was created although the driver is postgres")
	}
}
