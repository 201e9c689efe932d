package appserver_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/push-appserver/push-appserver/internal/appserver"
	"github.com/push-appserver/push-appserver/internal/push"
	"github.com/push-appserver/push-appserver/internal/registry"
	"github.com/push-appserver/push-appserver/internal/registry/memory"
)

// failingFeed fails the first time it is followed; afterwards it
// announces the nodes sent on changes, and sends on announced after.
type failingFeed struct {
	calls     chan int
	changes   chan string
	announced chan struct{}
	n         int
}

func (f *failingFeed) Follow(ctx context.Context, changed func(string), live func(bool)) error {
	f.n++
	f.calls <- f.n
	live(true)
	if f.n == 1 {
		live(false)
		return errors.New("database gone")
	}
	defer live(false)
	for {
		select {
		case <-ctx.Done():
			return nil
		case n := <-f.changes:
			changed(n)
			f.announced <- struct{}{}
		}
	}
}

// A change feed that fails is followed again: the cache comes back and
// stays coherent, rather than caching going off for good.
func TestChangeFeedFollowedAgain(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	store := memory.New()
	feed := &failingFeed{calls: make(chan int, 4), changes: make(chan string), announced: make(chan struct{})}
	svc, err := appserver.New(store, []appserver.App{{Name: "fcm", Priority: push.PriorityHigh, Backend: &scripted{answers: map[string]error{}}}},
		appserver.Options{Changes: feed, CacheTTL: time.Hour}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { svc.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	for want := 1; want <= 2; want++ {
		select {
		case n := <-feed.calls:
			if n != want {
				t.Fatalf("follow #%d, want #%d", n, want)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("feed not followed a %dth time", want)
		}
	}
	r, err := svc.Register(ctx, appserver.Caller{}, "fcm", "n", "tok")
	if err != nil {
		t.Fatal(err)
	}
	if err := svc.Push(ctx, appserver.PushRequest{Node: "n", Secret: r.Secret}); err != nil {
		t.Fatal(err)
	}
	// Another writer deletes it, and the feed says so.
	if _, err := store.Delete(ctx, "n", "fcm"); err != nil {
		t.Fatal(err)
	}
	feed.changes <- "n"
	<-feed.announced
	if err := svc.Push(ctx, appserver.PushRequest{Node: "n", Secret: r.Secret}); !errors.Is(err, appserver.ErrNotFound) {
		t.Fatalf("push after the feed announced the deletion: %v, want %v", err, appserver.ErrNotFound)
	}
}

// hangingStore is a registry whose reads hang, once hang is set, until
// their context is done: a database that stopped answering rather than
// refusing connections.
type hangingStore struct {
	*memory.Store
	hang, fail atomic.Bool
}

func (s *hangingStore) Get(ctx context.Context, node string) (registry.Registration, error) {
	if s.fail.Load() {
		return registry.Registration{}, errors.New("connection refused")
	}
	if s.hang.Load() {
		<-ctx.Done()
		return registry.Registration{}, ctx.Err()
	}
	return s.Store.Get(ctx, node)
}

// lostFeed is live until lose is closed, then down for good.
type lostFeed struct {
	live, lose, lost chan struct{}
}

func (f *lostFeed) Follow(ctx context.Context, changed func(string), live func(bool)) error {
	live(true)
	close(f.live)
	select {
	case <-ctx.Done():
	case <-f.lose:
		live(false)
		close(f.lost)
	}
	<-ctx.Done()
	return nil
}

// heldVictim is a service with opts whose cache holds the registered
// node "victim" (its secret returned) and whose change feed is lost, so
// that pushes read its store, which the test then makes fail or hang.
func heldVictim(t *testing.T, opts appserver.Options) (*appserver.Service, *hangingStore, *scripted, string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	store := &hangingStore{Store: memory.New()}
	feed := &lostFeed{live: make(chan struct{}), lose: make(chan struct{}), lost: make(chan struct{})}
	backend := &scripted{answers: map[string]error{}}
	opts.Changes = feed
	svc, err := appserver.New(store, []appserver.App{{Name: "fcm", Priority: push.PriorityHigh, Backend: backend}},
		opts, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { svc.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	<-feed.live
	r, err := svc.Register(ctx, appserver.Caller{}, "fcm", "victim", "tok")
	if err != nil {
		t.Fatal(err)
	}
	if err := svc.Push(ctx, appserver.PushRequest{Node: "victim", Secret: r.Secret}); err != nil {
		t.Fatal(err)
	}
	close(feed.lose)
	<-feed.lost
	return svc, store, backend, r.Secret
}

// A push to a device the cache held when the feed was lost goes out in
// time when the database then hangs, past the entry's ttl: its read is
// given up after a second, not at the push's deadline, and what the
// cache held then serves for the outage's grace.
func TestHeldPushWhileDatabaseHangs(t *testing.T) {
	ctx := context.Background()
	svc, store, backend, secret := heldVictim(t, appserver.Options{PushTimeout: 5 * time.Second, CacheTTL: 100 * time.Millisecond})
	time.Sleep(200 * time.Millisecond) // past the entry's ttl
	store.hang.Store(true)
	start := time.Now()
	if err := svc.Push(ctx, appserver.PushRequest{Node: "victim", Secret: secret}); err != nil {
		t.Fatalf("push while the database hangs = %v after %v", err, time.Since(start))
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("push took %v; want the read given up after a second", d)
	}
	if sent := backend.Sent(); len(sent) != 2 || sent[1].Token != "tok" {
		t.Errorf("sent %+v; want two pushes to tok", sent)
	}
}

// While the registry cannot be read, a push to a node the cache holds
// with a wrong secret is answered as one to an unknown node is (the
// registry failed, try again), not "not found": the answers must not
// tell someone who knows no secret which nodes are registered.
func TestOutageDoesNotTellRegisteredNodes(t *testing.T) {
	ctx := context.Background()
	svc, store, backend, secret := heldVictim(t, appserver.Options{PushTimeout: 5 * time.Second})
	store.fail.Store(true)
	registered := svc.Push(ctx, appserver.PushRequest{Node: "victim", Secret: "made-up"})
	unknown := svc.Push(ctx, appserver.PushRequest{Node: "nobody", Secret: "made-up"})
	if registered == nil || unknown == nil ||
		errors.Is(registered, appserver.ErrNotFound) != errors.Is(unknown, appserver.ErrNotFound) ||
		errors.Is(registered, appserver.ErrPushFailed) != errors.Is(unknown, appserver.ErrPushFailed) {
		t.Errorf("wrong secret for a held node: %v; unknown node: %v; want the same answer", registered, unknown)
	}
	if err := svc.Push(ctx, appserver.PushRequest{Node: "victim", Secret: secret}); err != nil {
		t.Errorf("push with the right secret during the outage: %v; want it sent with what the cache held", err)
	}
	if sent := backend.Sent(); len(sent) != 2 {
		t.Errorf("sent %d pushes; want 2, none for the wrong secret", len(sent))
	}
}

// While the registry hangs (no answer, rather than refused), a push with
// a wrong secret to a node the cache holds takes as long to be answered
// as one to an unknown node: otherwise the time to the answer tells a
// registered node from an unknown one to someone who knows no secret.
func TestOutageHangTimingDoesNotTellRegisteredNodes(t *testing.T) {
	ctx := context.Background()
	svc, store, _, _ := heldVictim(t, appserver.Options{PushTimeout: 2500 * time.Millisecond})
	store.hang.Store(true)
	start := time.Now()
	registered := svc.Push(ctx, appserver.PushRequest{Node: "victim", Secret: "made-up"})
	dRegistered := time.Since(start)
	start = time.Now()
	unknown := svc.Push(ctx, appserver.PushRequest{Node: "nobody", Secret: "made-up"})
	dUnknown := time.Since(start)
	if registered == nil || unknown == nil {
		t.Fatalf("wrong secret for a held node: %v; unknown node: %v; want both failed", registered, unknown)
	}
	if diff := dUnknown - dRegistered; diff > time.Second || diff < -time.Second {
		t.Errorf("wrong secret for a held node answered after %v, unknown node after %v; want the same time", dRegistered, dUnknown)
	}
}
