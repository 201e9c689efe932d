package appserver_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/push-appserver/push-appserver/internal/appserver"
	"github.com/push-appserver/push-appserver/internal/push"
	"github.com/push-appserver/push-appserver/internal/registry"
	"github.com/push-appserver/push-appserver/internal/registry/postgres"
	"github.com/push-appserver/push-appserver/internal/testutil/pgtest"
)

// A registration the feed's end left unconfirmed fails with
// ErrUnconfirmed in every dialect, and the client's next try, the same
// registration again, converges: one registration, answered with the node
// and secret stored.
func TestUnconfirmedRegistrationRetried(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	dsn := pg.DB(t)
	// Acks that do not come would hold a write for a minute: within the
	// test, only the feed's end releases it.
	store, err := postgres.Open(ctx, dsn, postgres.Options{AckWait: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	feed := &tap{Store: store, changed: make(chan string, 100), live: make(chan bool, 100)}
	svc, err := appserver.New(store, []appserver.App{{Name: "fcm", Priority: push.PriorityHigh, Backend: &scripted{answers: map[string]error{}}}},
		appserver.Options{Changes: feed, CacheTTL: time.Hour}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { svc.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	feed.waitLive(t, true)
	// Another instance that never confirms: each first try waits for it
	// until this instance's feed is ended once the write is committed.
	hung := pgtest.Listen(t, dsn, "push-appserver-listen", postgres.Channel)
	juliet := appserver.Account{Bare: "juliet@example.org", Domain: "example.org"}
	for _, tc := range []struct {
		name     string
		register func() (registry.Registration, error)
		count    int // registrations stored after it
	}{
		{"HTTP", func() (registry.Registration, error) {
			return svc.Register(ctx, appserver.Caller{}, "fcm", "n-http", "tok-1")
		}, 1},
		// A new token without the secret: a new secret, which the
		// retry is answered with.
		{"HTTP new token", func() (registry.Registration, error) {
			return svc.Register(ctx, appserver.Caller{}, "fcm", "n-http", "tok-2")
		}, 1},
		{"v1-register-push", func() (registry.Registration, error) {
			return svc.Register(ctx, appserver.Caller{Account: juliet}, "fcm", "n-v1", "tok-v1")
		}, 2},
		{"register-push-fcm", func() (registry.Registration, error) {
			return svc.RegisterDevice(ctx, "fcm", juliet, "device-1", "", "tok-p2")
		}, 3},
		{"register-device", func() (registry.Registration, error) {
			return svc.RegisterTigase(ctx, "fcm", juliet, "tok-tigase")
		}, 4},
	} {
		t.Run(tc.name, func(t *testing.T) {
			first := make(chan error, 1)
			go func() { _, err := tc.register(); first <- err }()
			hung.Heard(t, "")
			if hung.EndOthers(t, "push-appserver-listen") == 0 {
				t.Fatal("no LISTEN connection to end")
			}
			select {
			case err := <-first:
				if !errors.Is(err, appserver.ErrUnconfirmed) {
					t.Fatalf("first try = %v, want ErrUnconfirmed", err)
				}
			case <-time.After(30 * time.Second):
				t.Fatal("the first try still waits after the feed went down")
			}
			// Listening again, so that the next first try waits.
			feed.waitLive(t, false)
			feed.waitLive(t, true)
			r, err := tc.register()
			if err != nil {
				t.Fatalf("next try = %v", err)
			}
			stored, err := store.Get(ctx, r.Node)
			if err != nil || stored.Secret != r.Secret || stored.Type != "fcm" {
				t.Fatalf("next try answered %s/%s; stored %+v, %v", r.Node, r.Secret, stored, err)
			}
			if n, err := store.Count(ctx); err != nil || n != tc.count {
				t.Fatalf("%d registrations stored (%v), want %d", n, err, tc.count)
			}
		})
	}
}
