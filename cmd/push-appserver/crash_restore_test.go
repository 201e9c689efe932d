package main

import (
	"database/sql"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/push-appserver/push-appserver/internal/registry/sqlite"
)

// TestRestoreKilledKeepsARegistry guards the registry against a restore
// killed midway (kill -9, the OOM killer, a reboot): until the copy of the
// backup is whole, the registry stays in its place, so the server started
// next serves it rather than a new, empty one that answers every device's
// push as to a node that is gone (and ejabberd then disables push for
// every user). The restore is killed once its copy of the backup appears
// beside the registry, while it is still being written.
func TestRestoreKilledKeepsARegistry(t *testing.T) {
	bin := buildBinary(t)
	dir, addr, cfg := minimalConfig(t)
	data := filepath.Join(dir, "data")
	db := filepath.Join(data, "registry.db")
	s := startServer(t, bin, cfg)
	s.waitHealthy(t, addr)
	lines, err := s.register("kept", fmt.Sprintf("%064x", 1))
	if err != nil || len(lines) != 3 || lines[0] != "OK" {
		t.Fatalf("register: %q, %v", lines, err)
	}
	secret := lines[2]
	s.stop(t)

	// A backup large enough that copying it takes a while: the node
	// above and 300,000 others.
	backup := filepath.Join(t.TempDir(), "backup.db")
	if out, err := exec.Command(bin, "backup", "-config", cfg, backup).CombinedOutput(); err != nil {
		t.Fatalf("backup: %v\n%s", err, out)
	}
	fill(t, backup, 300000)

	restore := exec.Command(bin, "restore", "-config", cfg, backup)
	if err := restore.Start(); err != nil {
		t.Fatal(err)
	}
	var copying string
	for deadline := time.Now().Add(30 * time.Second); copying == ""; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			restore.Process.Kill()
			restore.Wait()
			t.Fatal("the restore never started copying the backup")
		}
		m, _ := filepath.Glob(filepath.Join(data, "registry.db.restoring-*"))
		if len(m) > 0 {
			copying = m[0]
		}
	}
	restore.Process.Signal(syscall.SIGKILL)
	restore.Wait()
	_, statErr := os.Stat(db)
	t.Logf("killed the restore while it wrote %s; the registry is there: %v", filepath.Base(copying), statErr == nil)

	s = startServer(t, bin, cfg)
	s.waitHealthy(t, addr)
	if body := s.post(t, "push", url.Values{"node": {"kept"}, "secret": {secret}}); body != "OK\nkept" {
		t.Fatalf("push after a restore killed midway: %q (the registry is there: %v)", body, statErr)
	}
	if strings.Contains(s.log.String(), "created a new, empty registry") {
		t.Fatal("the server started on a new, empty registry after a restore killed midway")
	}
	s.stop(t)
}

// fill adds n registrations to the registry at path.
func fill(t *testing.T, path string, n int) {
	t.Helper()
	store, err := sqlite.Open(t.Context(), path) // brings the schema up to date
	if err != nil {
		t.Fatal(err)
	}
	store.Close()
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec(`WITH RECURSIVE i(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM i WHERE n < ?)
		INSERT INTO registrations (node, type, token, secret, registered) SELECT 'filler-' || n, 'apns', printf('%064x', n), printf('%064x', n * 7), 1 FROM i`, n); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`PRAGMA wal_checkpoint(TRUNCATE)`); err != nil {
		t.Fatal(err)
	}
}
