package sqlite_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/push-appserver/push-appserver/internal/registry"
)

// TestDeletedRegistrationLeavesNoTrace: `registrations delete NODE` (or
// an unregistration, or a dead token) removes a device. Its token, its
// secret and the account JID a Tigase registration keeps must not stay
// readable in the registry's file afterwards: SQLite leaves a deleted
// row's bytes in the page unless secure_delete is on.
func TestDeletedRegistrationLeavesNoTrace(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "registry.db")
	s := open(t, path)
	const token, secret, account = "f00dfeedf00dfeedf00dfeedf00dfeed", "s3cr3t-of-romeo-s3cr3t", "romeo@montague.example"
	// A few neighbours, so the page the row lived on is not freed whole.
	for _, n := range []string{"a", "b", "c"} {
		if _, err := register(s, registry.Registration{Node: n, Type: "apns", Token: "00" + n, Secret: "x" + n, Registered: time.Now()}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := register(s, registry.Registration{Node: "tigase-romeo", Type: "apns", Token: token, Secret: secret, Account: account, Registered: time.Now()}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Delete(ctx, "tigase-romeo", "apns"); err != nil {
		t.Fatal(err)
	}
	s.Close() // checkpoints the log into the file
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for what, v := range map[string]string{"token": token, "secret": secret, "account JID": account} {
		if bytes.Contains(data, []byte(v)) {
			t.Errorf("the deleted registration's %s is still in %s", what, filepath.Base(path))
		}
	}
}

// TestLeftoverLogClosedToOthers: README: "SQLite files are created 0600
// (an existing file readable by others is changed to 0600)". A registry
// whose files were readable by others and whose server died (or is still
// running: an upgrade in place, a `registrations` command beside it)
// leaves a write-ahead log with the old mode: Open closes the database
// file to others, but the log, which holds the latest registrations'
// tokens and secrets, stays readable.
func TestLeftoverLogClosedToOthers(t *testing.T) {
	old := syscall.Umask(0o022)
	defer syscall.Umask(old)
	path := filepath.Join(t.TempDir(), "registry.db")
	running := open(t, path)
	defer running.Close()
	if _, err := register(running, registry.Registration{Node: "n", Type: "apns", Token: "t", Secret: "s", Registered: time.Now()}); err != nil {
		t.Fatal(err)
	}
	// What a registry made readable by others has (an older install, a
	// copy made with cp -p by hand, a restore by hand).
	for _, p := range []string{path, path + "-wal", path + "-shm"} {
		if err := os.Chmod(p, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	s := open(t, path)
	defer s.Close()
	for _, p := range []string{path, path + "-wal", path + "-shm"} {
		st, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm()&0o077 != 0 {
			t.Errorf("%s has mode %v after Open, want 0600", filepath.Base(p), st.Mode().Perm())
		}
	}
}
