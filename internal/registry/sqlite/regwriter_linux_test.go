package sqlite

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/push-appserver/push-appserver/internal/registry"
)

// The writer's pool replaces its connection now and then (one that a
// caller's context interrupted is discarded; here every connection
// expires at once). A registration on the new connection is stored
// through statements prepared on it, and those of the old one are
// finalized, so that it closes instead of keeping the registry's files
// open for as long as the server runs.
func TestRegisterOnReplacedConnection(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "registry.db")
	s, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	s.write.SetConnMaxLifetime(time.Nanosecond)
	before := openFiles(t, path)
	const n = 20
	for i := range n {
		node := fmt.Sprintf("node-%d", i)
		db := s.reg.db
		if _, err := s.Register(ctx, node, func(registry.Registration, bool) (registry.Registration, error) {
			return registry.Registration{Node: node, Type: "apns", Token: "t", Secret: "s", Registered: time.Now()}, nil
		}); err != nil {
			t.Fatalf("register %s: %v", node, err)
		}
		time.Sleep(time.Millisecond) // past the connection's lifetime
		if i > 0 && s.reg.db == db {
			t.Fatalf("registration %d ran on the connection of the one before: the pool did not replace it", i)
		}
	}
	for i := range n {
		if _, err := s.Get(ctx, fmt.Sprintf("node-%d", i)); err != nil {
			t.Errorf("node-%d: %v", i, err)
		}
	}
	// The connection of the last registration is open, and may hold
	// the files beside the one the test started with.
	if after := openFiles(t, path); after > before+3 {
		t.Errorf("%d of the registry's files open after %d registrations on connections replaced each time, %d before: the old connections stayed open", after, n, before)
	}
}

// openFiles counts this process's descriptors of the registry at path and
// its log and shared-memory files.
func openFiles(t *testing.T, path string) int {
	t.Helper()
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, fd := range fds {
		target, err := os.Readlink(filepath.Join("/proc/self/fd", fd.Name()))
		if err == nil && strings.HasPrefix(target, path) {
			n++
		}
	}
	return n
}
