package postgres_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/push-appserver/push-appserver/internal/registry"
	"github.com/push-appserver/push-appserver/internal/registry/postgres"
)

// Many concurrent registrations are all there, read through another
// instance, each with the secret its caller was answered with, and they
// shared transactions.
func TestConcurrentRegistrationsGrouped(t *testing.T) {
	ctx := context.Background()
	dsn := pg.DB(t)
	s := open(t, dsn)
	var batches, rows int
	var mu sync.Mutex
	postgres.SetHooks(s, nil, nil, func(nodes []string) {
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
	mu.Lock()
	if batches == 0 || batches >= n/2 {
		t.Errorf("%d registrations in %d batch transactions (%d rows): not grouped", n, batches, rows)
	}
	t.Logf("%d registrations, %d of them in %d batch transactions", n, rows, batches)
	mu.Unlock()
	other := open(t, dsn)
	for i := range n {
		r, err := other.Get(ctx, fmt.Sprintf("node-%d", i))
		if err != nil || r.Secret != secrets[i] || r.Secret != fmt.Sprintf("secret-%d", i) {
			t.Fatalf("node-%d: %+v, %v", i, r, err)
		}
	}
}

// batch registers first, holds the writer on it until every other node is
// queued behind it in the order given, so all of them land in one batch,
// and returns each node's answer.
func batch(t *testing.T, s *postgres.Store, first string, others []string, decide func(node string) registry.Decide) map[string]error {
	got, _ := batchCommits(t, s, first, others, decide)
	return got
}

// batchCommits is batch, and also returns the nodes of each batch
// transaction that committed.
func batchCommits(t *testing.T, s *postgres.Store, first string, others []string, decide func(node string) registry.Decide) (map[string]error, [][]string) {
	t.Helper()
	started := make(chan struct{})
	release := make(chan struct{})
	queued := make(chan struct{}, len(others)+1)
	var once sync.Once
	var commits [][]string
	postgres.SetHooks(s, func() { queued <- struct{}{} }, func(node string) {
		if node == first {
			once.Do(func() { close(started); <-release })
		}
	}, func(nodes []string) { commits = append(commits, nodes) })
	defer postgres.SetHooks(s, nil, nil, nil)
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
	// One at a time: the batch holds them in this order.
	for _, n := range others {
		reg(n)
		<-queued
	}
	close(release)
	wg.Wait()
	return got, commits
}

func plain(node string) registry.Decide {
	return registry.Renew(registry.Registration{Node: node, Type: "apns", Token: "ab", Secret: "s-" + node, Registered: time.Now()})
}

func withKey(node, key string) registry.Decide {
	return registry.Renew(registry.Registration{Node: node, Type: "apns", Token: "ab", Secret: "s-" + node, Registered: time.Now(), DeviceKey: key})
}

// A row that is refused (by its decide function, or for a device key held
// by another node, stored or earlier in the same batch) fails alone; the
// rest of its batch is stored. A key its holder gives up earlier in the
// batch is free for a later row. A decision for another node than the
// one registered is refused, and writes neither.
func TestBatchRowRefusals(t *testing.T) {
	ctx := context.Background()
	dsn := pg.DB(t)
	s := open(t, dsn)
	for node, key := range map[string]string{"holder": "dk", "mover": "moved"} {
		if _, err := s.Register(ctx, node, withKey(node, key)); err != nil {
			t.Fatal(err)
		}
	}
	refused := errors.New("not yours")
	got, commits := batchCommits(t, s, "a", []string{"refused", "conflict", "b", "mover", "taker", "newkey", "samekey", "stray"}, func(node string) registry.Decide {
		switch node {
		case "refused":
			return func(registry.Registration, bool) (registry.Registration, error) {
				return registry.Registration{}, refused
			}
		case "conflict":
			return withKey(node, "dk")
		case "mover":
			return withKey(node, "elsewhere")
		case "taker":
			return withKey(node, "moved")
		case "newkey":
			return withKey(node, "fresh")
		case "samekey":
			return withKey(node, "fresh")
		case "stray":
			return plain("victim")
		}
		return plain(node)
	})
	for node, want := range map[string]error{"a": nil, "b": nil, "mover": nil, "taker": nil, "newkey": nil, "refused": refused, "conflict": registry.ErrConflict, "samekey": registry.ErrConflict} {
		if want == nil && got[node] != nil || want != nil && !errors.Is(got[node], want) {
			t.Errorf("%s answered %v, want %v", node, got[node], want)
		}
	}
	if got["stray"] == nil {
		t.Errorf("a decision for another node answered OK")
	}
	// Refusals are settled in the batch, not by a failed transaction and
	// single ones after it.
	if len(commits) != 1 || len(commits[0]) != 5 {
		t.Errorf("batch transactions committed: %v, want one of the five accepted", commits)
	}
	other := open(t, dsn)
	for node, key := range map[string]string{"a": "", "b": "", "holder": "dk", "mover": "elsewhere", "taker": "moved", "newkey": "fresh", "refused": "-", "conflict": "-", "samekey": "-", "stray": "-", "victim": "-"} {
		r, err := other.Get(ctx, node)
		if key == "-" {
			if err == nil {
				t.Errorf("%s stored", node)
			}
			continue
		}
		if err != nil || r.DeviceKey != key {
			t.Errorf("%s: %+v, %v; want device key %q", node, r, err, key)
		}
	}
}

// Rows of the same node in one batch go one after the other: the second
// renews what the first stored and keeps its secret.
func TestBatchSameNodeTwice(t *testing.T) {
	s := open(t, pg.DB(t))
	var calls atomic.Int64
	got := batch(t, s, "a", []string{"x", "x"}, func(node string) registry.Decide {
		return func(old registry.Registration, found bool) (registry.Registration, error) {
			n := calls.Add(1)
			return registry.Renew(registry.Registration{Node: node, Type: "apns", Token: fmt.Sprintf("t%d", n), Secret: fmt.Sprintf("s%d", n), Registered: time.Now()})(old, found)
		}
	})
	if got["a"] != nil || got["x"] != nil {
		t.Fatalf("answers: %v", got)
	}
	r, err := s.Get(context.Background(), "x")
	n := calls.Load()
	if err != nil || r.Secret != fmt.Sprintf("s%d", n-1) || r.Token != fmt.Sprintf("t%d", n) || r.Renewed.IsZero() {
		t.Fatalf("x after %d decisions: %+v, %v; want the first one's secret renewed with the second one's token", n, r, err)
	}
}

// A row that makes a statement fail (here a trigger refusing node
// "abort") is answered with an error; the others of its batch are still
// stored and answered OK, and no one is answered OK for a row that is not
// there.
func TestBatchStatementFailure(t *testing.T) {
	ctx := context.Background()
	dsn := pg.DB(t)
	s := open(t, dsn)
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	for _, q := range []string{
		`CREATE FUNCTION refuse_abort() RETURNS trigger AS $$ BEGIN IF NEW.node = 'abort' THEN RAISE EXCEPTION 'refused by trigger'; END IF; RETURN NEW; END $$ LANGUAGE plpgsql`,
		`CREATE TRIGGER refuse_abort BEFORE INSERT ON registrations FOR EACH ROW EXECUTE FUNCTION refuse_abort()`,
	} {
		if _, err := conn.Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	got := batch(t, s, "c", []string{"abort", "d"}, plain)
	if got["c"] != nil || got["d"] != nil || got["abort"] == nil {
		t.Fatalf("answers: %v", got)
	}
	for node, want := range map[string]bool{"c": true, "d": true, "abort": false} {
		if _, err := s.Get(ctx, node); (err == nil) != want {
			t.Errorf("%s stored = %v, want %v", node, err == nil, want)
		}
	}
}

// Registrations after Close are refused.
func TestRegisterAfterClose(t *testing.T) {
	s := open(t, pg.DB(t))
	s.Close()
	if _, err := register(s, registry.Registration{Node: "late", Type: "apns", Token: "ab", Secret: "s", Registered: time.Now()}); err == nil {
		t.Fatal("Register after Close succeeded")
	}
}
