package sqlite_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/push-appserver/push-appserver/internal/registry"
	"github.com/push-appserver/push-appserver/internal/registry/sqlite"
)

// Many concurrent registrations are all there after a reopen, each with
// the secret its caller was answered with.
func TestConcurrentRegistrationsDurable(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "registry.db")
	s := open(t, path)
	var batches, rows int
	var mu sync.Mutex
	sqlite.SetHooks(s, nil, nil, func(nodes []string) {
		mu.Lock()
		batches++
		rows += len(nodes)
		mu.Unlock()
	})
	const n = 2000
	secrets := make([]string, n)
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for w := range 64 {
		wg.Go(func() {
			for i := w; i < n; i += 64 {
				node := fmt.Sprintf("node-%d", i)
				r, err := register(s, registry.Registration{Node: node, Type: "apns", Token: fmt.Sprintf("%x", i), Secret: fmt.Sprintf("secret-%d", i), Registered: time.Now()})
				if err != nil {
					errs <- err
					return
				}
				secrets[i] = r.Secret
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if rows != n {
		t.Fatalf("%d rows committed in %d batches, want %d", rows, batches, n)
	}
	t.Logf("%d registrations in %d transactions", n, batches)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = open(t, path)
	defer s.Close()
	for i := range n {
		r, err := s.Get(ctx, fmt.Sprintf("node-%d", i))
		if err != nil || r.Secret != secrets[i] || r.Secret != fmt.Sprintf("secret-%d", i) {
			t.Fatalf("node-%d after reopen: %+v, %v", i, r, err)
		}
	}
}

// batch registers first, holds the writer on it until every other node is
// queued behind it, so all of them land in one batch, and returns each
// node's answer.
func batch(t *testing.T, s *sqlite.Store, first string, others []string, decide func(node string) registry.Decide) map[string]error {
	t.Helper()
	started := make(chan struct{})
	release := make(chan struct{})
	queued := make(chan struct{}, len(others)+1)
	var once sync.Once
	sqlite.SetHooks(s, func() { queued <- struct{}{} }, func(node string) {
		if node == first {
			once.Do(func() { close(started); <-release })
		}
	}, nil)
	defer sqlite.SetHooks(s, nil, nil, nil)
	got := make(map[string]error)
	var mu sync.Mutex
	var wg sync.WaitGroup
	reg := func(node string) {
		wg.Go(func() {
			_, err := s.Register(context.Background(), node, decide(node))
			mu.Lock()
			got[node] = err
			mu.Unlock()
		})
	}
	reg(first)
	<-started
	<-queued
	for _, n := range others {
		reg(n)
	}
	for range others {
		<-queued
	}
	close(release)
	wg.Wait()
	return got
}

func plain(node string) registry.Decide {
	return registry.Renew(registry.Registration{Node: node, Type: "apns", Token: "ab", Secret: "s-" + node, Registered: time.Now()})
}

// errRefused is what refusing's decide function answers for the node
// "refused".
var errRefused = errors.New("not yours")

// refusing decides for a batch: the node "refused" is refused by its
// decide function, "conflict" wants the device key "dk" (held by the
// node "holder" in the tests), and any other node is stored as is.
func refusing(node string) registry.Decide {
	switch node {
	case "refused":
		return func(registry.Registration, bool) (registry.Registration, error) {
			return registry.Registration{}, errRefused
		}
	case "conflict":
		return registry.Renew(registry.Registration{Node: node, Type: "apns", Token: "ab", Secret: "y", Registered: time.Now(), DeviceKey: "dk"})
	}
	return plain(node)
}

// A row that is refused (by its decide function, or for a device key held
// by another node) fails alone; the rest of its batch is stored.
func TestBatchRowRefusals(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "registry.db")
	s := open(t, path)
	if _, err := s.Register(ctx, "holder", registry.Renew(registry.Registration{Node: "holder", Type: "apns", Token: "ab", Secret: "x", Registered: time.Now(), DeviceKey: "dk"})); err != nil {
		t.Fatal(err)
	}
	got := batch(t, s, "a", []string{"refused", "conflict", "b"}, refusing)
	if got["a"] != nil || got["b"] != nil || !errors.Is(got["refused"], errRefused) || !errors.Is(got["conflict"], registry.ErrConflict) {
		t.Fatalf("answers: %v", got)
	}
	s.Close()
	s = open(t, path)
	defer s.Close()
	for node, want := range map[string]bool{"a": true, "b": true, "refused": false, "conflict": false, "holder": true} {
		if _, err := s.Get(ctx, node); (err == nil) != want {
			t.Errorf("%s stored = %v, want %v", node, err == nil, want)
		}
	}
}

// A row that makes the whole transaction fail (here at commit, through a
// deferred foreign key a trigger breaks for node "bad"; at its statement,
// through a trigger's RAISE for "abort"; or through a constraint a trigger
// breaks, which rolls the transaction back at once, as a registration's
// write says OR ROLLBACK, for "null" when it is written and "renew-null"
// when it is written again) is answered with an error; the others of its
// batch, those before it included, are still stored and answered OK, and
// no one is answered OK for a row that is not there.
func TestBatchCommitFailure(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "registry.db")
	open(t, path).Close()
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{
		`CREATE TABLE parent (id INTEGER PRIMARY KEY)`,
		`CREATE TABLE child (p INTEGER REFERENCES parent(id) DEFERRABLE INITIALLY DEFERRED)`,
		`CREATE TRIGGER poison AFTER INSERT ON registrations WHEN NEW.node = 'bad' BEGIN INSERT INTO child VALUES (42); END`,
		`CREATE TRIGGER abort BEFORE INSERT ON registrations WHEN NEW.node = 'abort' BEGIN SELECT RAISE(ABORT, 'refused by trigger'); END`,
		`CREATE TABLE never_null (x INTEGER NOT NULL)`,
		`CREATE TRIGGER nulled AFTER INSERT ON registrations WHEN NEW.node = 'null' BEGIN INSERT INTO never_null VALUES (NULL); END`,
		`CREATE TRIGGER nulled_again AFTER UPDATE ON registrations WHEN NEW.node = 'renew-null' BEGIN INSERT INTO never_null VALUES (NULL); END`,
	} {
		if _, err := db.Exec(q); err != nil {
			t.Fatal(err)
		}
	}
	db.Close()
	s := open(t, path)
	// One batch fails at commit, the other at a statement.
	got := batch(t, s, "a", []string{"bad", "b"}, plain)
	if got["a"] != nil || got["b"] != nil || got["bad"] == nil {
		t.Fatalf("answers: %v", got)
	}
	got = batch(t, s, "c", []string{"abort", "d"}, plain)
	if got["c"] != nil || got["d"] != nil || got["abort"] == nil {
		t.Fatalf("answers: %v", got)
	}
	got = batch(t, s, "e", []string{"null", "f"}, plain)
	if got["e"] != nil || got["f"] != nil || got["null"] == nil {
		t.Fatalf("answers: %v", got)
	}
	if _, err := s.Register(ctx, "renew-null", plain("renew-null")); err != nil {
		t.Fatal(err)
	}
	renewed := func(node string) registry.Decide {
		if node != "renew-null" {
			return plain(node)
		}
		return func(old registry.Registration, found bool) (registry.Registration, error) {
			old.Token = "cd"
			return old, nil
		}
	}
	got = batch(t, s, "g", []string{"renew-null", "h"}, renewed)
	if got["g"] != nil || got["h"] != nil || got["renew-null"] == nil {
		t.Fatalf("answers: %v", got)
	}
	s.Close()
	s = open(t, path)
	defer s.Close()
	for node, want := range map[string]bool{"a": true, "b": true, "c": true, "d": true, "e": true, "f": true, "g": true, "h": true,
		"bad": false, "abort": false, "null": false} {
		if _, err := s.Get(ctx, node); (err == nil) != want {
			t.Errorf("%s stored = %v, want %v", node, err == nil, want)
		}
	}
	if r, err := s.Get(ctx, "renew-null"); err != nil || r.Token != "ab" {
		t.Errorf("renew-null after its failed renewal: %+v, %v; want its first registration", r, err)
	}
}

// Registrations queued when Close is called are stored; later ones are
// refused.
func TestRegisterAfterClose(t *testing.T) {
	s := open(t, filepath.Join(t.TempDir(), "registry.db"))
	s.Close()
	if _, err := register(s, registry.Registration{Node: "late", Type: "apns", Token: "ab", Secret: "s", Registered: time.Now()}); err == nil {
		t.Fatal("Register after Close succeeded")
	}
}

func BenchmarkRegisterParallel(b *testing.B) {
	s := open(b, filepath.Join(b.TempDir(), "registry.db"))
	defer s.Close()
	var next sync.Mutex
	i := 0
	b.SetParallelism(16)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			next.Lock()
			i++
			node := fmt.Sprintf("node-%d", i)
			next.Unlock()
			if _, err := register(s, registry.Registration{Node: node, Type: "apns", Token: "t", Secret: "s", Registered: time.Now()}); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// A row its decide function or a held device key refuses is refused in a
// batch that fails and is stored again one registration at a time, as it
// is in a batch that commits: answered OK, the caller would hand out a
// registration (an empty node and secret) that was never stored.
func TestBatchFailureKeepsRowRefusals(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "registry.db")
	open(t, path).Close()
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`CREATE TRIGGER abort BEFORE INSERT ON registrations WHEN NEW.node = 'abort' BEGIN SELECT RAISE(ABORT, 'refused by trigger'); END`); err != nil {
		t.Fatal(err)
	}
	db.Close()
	s := open(t, path)
	defer s.Close()
	if _, err := s.Register(ctx, "holder", registry.Renew(registry.Registration{Node: "holder", Type: "apns", Token: "ab", Secret: "x", Registered: time.Now(), DeviceKey: "dk"})); err != nil {
		t.Fatal(err)
	}
	got := batch(t, s, "a", []string{"abort", "refused", "conflict"}, refusing)
	if got["a"] != nil || got["abort"] == nil || !errors.Is(got["refused"], errRefused) || !errors.Is(got["conflict"], registry.ErrConflict) {
		t.Fatalf("answers: %v", got)
	}
	for node, want := range map[string]bool{"a": true, "abort": false, "refused": false, "conflict": false} {
		if _, err := s.Get(ctx, node); (err == nil) != want {
			t.Errorf("%s stored = %v, want %v", node, err == nil, want)
		}
	}
}

// A batch that cannot take the write lock, held by another process (an
// admin command, a backup tool) past the busy timeout, is answered the
// error once, every registration of it, instead of each trying alone
// after it and waiting as long again: 16 registrations took 17 busy
// timeouts. After the lock is let go, registrations are stored again.
func TestBatchLockedOutAnsweredAtOnce(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "registry.db")
	s := open(t, path)
	defer s.Close()
	const timeout = 250 * time.Millisecond
	if err := sqlite.SetBusyTimeout(s, timeout); err != nil {
		t.Fatal(err)
	}
	other, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	holder, err := other.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Close()
	if _, err := holder.ExecContext(ctx, `BEGIN IMMEDIATE`); err != nil {
		t.Fatal(err)
	}
	var others []string
	for i := range 15 {
		others = append(others, fmt.Sprintf("n%d", i))
	}
	start := time.Now()
	got := batch(t, s, "first", others, plain)
	took := time.Since(start)
	for node, err := range got {
		if err == nil {
			t.Errorf("%s answered OK while the write lock was held elsewhere", node)
		}
	}
	// At once is one busy timeout; each alone after the batch, 17.
	if took > 6*timeout {
		t.Errorf("a batch locked out answered after %v, more than %v", took.Round(time.Millisecond), 6*timeout)
	}
	if _, err := holder.ExecContext(ctx, `ROLLBACK`); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Register(ctx, "after", plain("after")); err != nil {
		t.Fatalf("registration once the lock is free: %v", err)
	}
}
