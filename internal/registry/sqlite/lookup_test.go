package sqlite

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"modernc.org/libc"
	lib "modernc.org/sqlite/lib"

	"github.com/push-appserver/push-appserver/internal/registry"
)

// openWith opens a registry in a new directory and registers a device
// for each node, whose token is "token-"+node.
func openWith(t *testing.T, nodes ...string) *Store {
	t.Helper()
	s, err := Open(context.Background(), filepath.Join(t.TempDir(), "registry.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	for _, node := range nodes {
		r := registry.Registration{Node: node, Type: "apns", Token: "token-" + node, Secret: "secret", Registered: time.Now()}
		if _, err := s.Register(context.Background(), node, registry.Renew(r)); err != nil {
			t.Fatal(err)
		}
	}
	return s
}

// A lookup's read transaction ends with the lookup, found or not: one
// left open would keep every later checkpoint from copying the log past
// it, and the log would grow without bound. A lookup that finds its row
// holds the transaction until the statement is reset; one that finds
// nothing has run to SQLITE_DONE, which ends it on its own: only the
// first case fails without the reset.
func TestLookupEndsItsReadTransaction(t *testing.T) {
	ctx := context.Background()
	s := openWith(t, "a")
	for _, node := range []string{"a", "unknown"} {
		s.GetPushTarget(ctx, node)
		r := registry.Registration{Node: "b", Type: "apns", Token: "t", Secret: "s", Registered: time.Now()}
		if _, err := s.Register(ctx, "b", registry.Renew(r)); err != nil {
			t.Fatal(err)
		}
		var busy, log, copied int
		if err := s.write.QueryRowContext(ctx, `PRAGMA wal_checkpoint(PASSIVE)`).Scan(&busy, &log, &copied); err != nil {
			t.Fatal(err)
		}
		if copied != log {
			t.Fatalf("after looking %s up, a checkpoint copied %d of the log's %d pages: the lookup still reads", node, copied, log)
		}
	}
}

// At most the bound of connections are open; a lookup beyond it waits
// for one to come back, or for its context to end.
func TestLookupConnectionsBounded(t *testing.T) {
	s := openWith(t, "a")
	l := newLookups(s.lookups.dsn, 2)
	defer l.close()
	ctx := context.Background()
	c1, err := l.take(ctx)
	if err != nil {
		t.Fatal(err)
	}
	c2, err := l.take(ctx)
	if err != nil {
		t.Fatal(err)
	}
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if c, err := l.take(short); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("a third connection of two: %v, %v", c, err)
	}
	l.put(c2)
	if c, err := l.take(ctx); err != nil || c != c2 {
		t.Fatalf("after one came back: %p, %v; want it (%p)", c, err, c2)
	} else {
		l.put(c)
	}
	l.put(c1)
	if v, found, err := l.get(ctx, "a"); err != nil || !found || !strings.Contains(v, "token-a") {
		t.Fatalf("get = %q, %v, %v", v, found, err)
	}
}

// Concurrent lookups, more than there are connections, each get their
// own node's values while registrations are written (run with -race:
// the connections are opened without SQLite's mutex and handed from
// goroutine to goroutine).
func TestConcurrentLookups(t *testing.T) {
	nodes := make([]string, 50)
	for i := range nodes {
		nodes[i] = fmt.Sprintf("node-%d", i)
	}
	s := openWith(t, nodes...)
	s.lookups = newLookups(s.lookups.dsn, 2)
	ctx := context.Background()
	var wg sync.WaitGroup
	errs := make(chan error, 100)
	for g := range 8 {
		wg.Go(func() {
			for i := range 200 {
				node := nodes[(g*7+i)%len(nodes)]
				got, err := s.GetPushTarget(ctx, node)
				if err != nil || got.Token != "token-"+node {
					errs <- fmt.Errorf("GetPushTarget(%s) = %+v, %v", node, got, err)
					return
				}
			}
		})
	}
	wg.Go(func() {
		for i := range 50 {
			node := fmt.Sprintf("new-%d", i)
			r := registry.Registration{Node: node, Type: "apns", Token: "token-" + node, Secret: "secret", Registered: time.Now()}
			if _, err := s.Register(ctx, node, registry.Renew(r)); err != nil {
				errs <- err
				return
			}
			if got, err := s.GetPushTarget(ctx, node); err != nil || got.Token != "token-"+node {
				errs <- fmt.Errorf("a registration just written: %+v, %v", got, err)
				return
			}
		}
	})
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// A node longer than the memory a connection first keeps for it is
// read whole, and the next shorter one is not read with the longer
// one's tail.
func TestLookupLongNode(t *testing.T) {
	long := strings.Repeat("n", 1000)
	s := openWith(t, long, long[:10])
	ctx := context.Background()
	for _, node := range []string{long[:10], long, long[:10], long[:500]} {
		got, err := s.GetPushTarget(ctx, node)
		if node == long[:500] {
			if !errors.Is(err, registry.ErrNotFound) {
				t.Fatalf("a node never registered: %+v, %v", got, err)
			}
			continue
		}
		if err != nil || got.Token != "token-"+node {
			t.Fatalf("GetPushTarget(%d bytes) = %d-byte token, %v", len(node), len(got.Token), err)
		}
	}
}

// A connection that cannot be opened gives its place back: the next
// lookup tries again instead of waiting for a connection that will
// never come.
func TestLookupOpenFailure(t *testing.T) {
	l := newLookups("file:"+filepath.Join(t.TempDir(), "missing.db")+"?mode=ro", 1)
	defer l.close()
	for range 3 {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, _, err := l.get(ctx, "a")
		cancel()
		if err == nil || errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "unable to open") {
			t.Fatalf("get on a missing file: %v", err)
		}
	}
}

// After Close, a lookup fails instead of opening a connection, and one
// under way when the store closed closes its connection once done.
func TestLookupAfterClose(t *testing.T) {
	s := openWith(t, "a")
	ctx := context.Background()
	c, err := s.lookups.take(ctx)
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	s.lookups.put(c)
	if c.db != 0 {
		t.Error("a connection put back after Close stayed open")
	}
	if len(s.lookups.slots) != 0 {
		t.Errorf("%d connections still counted as open", len(s.lookups.slots))
	}
	if got, err := s.GetPushTarget(ctx, "a"); !errors.Is(err, errStoreClosed) {
		t.Fatalf("after Close: %+v, %v", got, err)
	}
}

// A lookup connection's page cache is lookupCacheKiB, so that it
// reaches its quota and reuses the shared cache's least recently used
// pages rather than pushing the cache over its total (see
// lookupCacheKiB).
func TestLookupCacheSize(t *testing.T) {
	s := openWith(t, "a")
	c, err := s.lookups.take(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer s.lookups.put(c)
	q, err := libc.CString("PRAGMA cache_size")
	if err != nil {
		t.Fatal(err)
	}
	defer libc.Xfree(c.tls, q)
	if rc := lib.Xsqlite3_prepare_v2(c.tls, c.db, q, -1, c.out, 0); rc != lib.SQLITE_OK {
		t.Fatal(c.errorf("prepare", rc))
	}
	stmt := readPointer(c.out)
	defer lib.Xsqlite3_finalize(c.tls, stmt)
	if rc := lib.Xsqlite3_step(c.tls, stmt); rc != lib.SQLITE_ROW {
		t.Fatal(c.errorf("step", rc))
	}
	if got := lib.Xsqlite3_column_int64(c.tls, stmt, 0); got != -lookupCacheKiB {
		t.Fatalf("cache_size = %d, want %d", got, -lookupCacheKiB)
	}
}

// A read's error names no node: it reaches log lines above debug, where
// a node appears only as its node_ref.
func TestReadErrorsNameNoNode(t *testing.T) {
	const node = "my-capability-node-4f1c9a"
	s := openWith(t, node)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := s.Get(ctx, node)
	_, terr := s.GetPushTarget(ctx, node)
	for _, err := range []error{err, terr} {
		if err == nil || strings.Contains(err.Error(), node) {
			t.Errorf("a read under a cancelled context: %v, want an error without the node", err)
		}
	}
}
