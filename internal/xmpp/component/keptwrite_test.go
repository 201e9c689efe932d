package component_test

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/push-appserver/push-appserver/internal/appserver"
	"github.com/push-appserver/push-appserver/internal/push"
	"github.com/push-appserver/push-appserver/internal/registry"
	"github.com/push-appserver/push-appserver/internal/registry/memory"
)

// slowKeep is a registry whose writes of the pushes kept for redelivery
// take until the test ends (a PostgreSQL commit that waits for a slow
// standby or a lock, an SQLite fsync on a busy disk), and which tells
// when the first such write began.
type slowKeep struct {
	*memory.Store
	began   chan struct{}
	release chan struct{}
}

func (s *slowKeep) KeepPushes(ctx context.Context, owner string, lease time.Duration, renew bool, put []registry.HeldPush, del []string) error {
	if len(put) > 0 {
		select {
		case s.began <- struct{}{}:
		default:
		}
		select {
		case <-s.release:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return s.Store.KeepPushes(ctx, owner, lease, renew, put, del)
}

// failing is a push service in an outage: it refuses every push at once
// with a temporary error, so each is kept for redelivery.
type failing struct{}

func (failing) Send(context.Context, push.Notification) error {
	return &push.TemporaryError{Reason: "service unavailable", Outage: true}
}

// TestKeptPushWaitingForWriteHoldsNoSlot: two apps on one component
// connection; the APNS app's push service is in an outage (every push
// fails at once and is kept for redelivery), and the registry writes
// the kept pushes slowly. A kept push is answered once its write was
// tried, for at most a second; meanwhile it must not hold one of the
// connection's slots, or the outage of one app's push service, with a
// registry slow to commit, holds up every other app's pushes on the
// connection (here a push to the healthy app waited over 2 s, behind
// pushes that waited a second each for the write).
func TestKeptPushWaitingForWriteHoldsNoSlot(t *testing.T) {
	const slots = 2
	logger := slog.New(slog.DiscardHandler)
	store := &slowKeep{Store: memory.New(), began: make(chan struct{}, 1), release: make(chan struct{})}
	svc, err := appserver.New(store, []appserver.App{
		{Name: "ios", Priority: push.PriorityHigh, Backend: failing{}},
		{Name: "android", Priority: push.PriorityHigh, Backend: nopBackend{}},
	}, appserver.Options{PushTimeout: 15 * time.Second}, logger)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan struct{})
	go func() { svc.Run(ctx); close(ran) }()
	t.Cleanup(func() { close(store.release); cancel(); <-ran })
	st := serveWith(t, svc, slots, logger)
	reg := func(app, node, token string) string {
		r, err := svc.Register(context.Background(), appserver.Caller{}, app, node, token)
		if err != nil {
			t.Fatal(err)
		}
		return r.Secret
	}
	const iosPushes = 3 * slots
	for i := range iosPushes {
		node := fmt.Sprint("ios-", i)
		st.send(t, publish(node, node, reg("ios", node, strings.Repeat("0a", 32)), true))
	}
	victim := reg("android", "android-1", "fcm-token")
	select {
	case <-store.began:
	case <-time.After(10 * time.Second):
		t.Fatal("no write of the kept pushes began")
	}
	// Normally a few ms; held up, it waits a second for each slot's
	// worth of kept pushes before it.
	if took := androidPushTook(t, st, victim); took > time.Second {
		t.Fatalf("healthy app's push answered after %v: %d pushes kept during an outage of another app's push service held every slot of the connection (%d) while the registry wrote them", took.Round(time.Millisecond), iosPushes, slots)
	}
}
