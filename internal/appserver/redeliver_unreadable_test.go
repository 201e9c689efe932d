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
	"github.com/push-appserver/push-appserver/internal/registry"
	"github.com/push-appserver/push-appserver/internal/registry/memory"
)

// readsFailing is a registry whose registrations cannot be read while
// down; failed counts the reads refused.
type readsFailing struct {
	*memory.Store
	down   atomic.Bool
	failed atomic.Int64
}

func (s *readsFailing) Get(ctx context.Context, node string) (registry.Registration, error) {
	if s.down.Load() {
		s.failed.Add(1)
		return registry.Registration{}, errors.New("dial tcp: connection refused")
	}
	return s.Store.Get(ctx, node)
}

// TestRedeliveryWaitsOutUnreadableRegistry guards a push kept for
// redelivery whose attempts come while the registry cannot be read: the
// registration decides whether the push goes out, and while it cannot
// be read the push waits, to go out once it can. Dropped, a database's
// restart during a push service's outage loses every push kept for it.
func TestRedeliveryWaitsOutUnreadableRegistry(t *testing.T) {
	ctx := context.Background()
	store := &readsFailing{Store: memory.New()}
	b := &scripted{answers: map[string]error{}}
	svc, err := appserver.New(store, testApps(b), appserver.Options{Redelivery: time.Minute, CacheSize: -1}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	svc.SetRedeliveryTiming(20*time.Millisecond, 5*time.Millisecond)
	running(t, svc)
	reg, err := svc.Register(ctx, appserver.Caller{}, "fcm", "n1", "t1")
	if err != nil {
		t.Fatal(err)
	}
	b.set("t1", outage)
	store.down.Store(true)
	// Kept unread first: the registry is down for the push itself too.
	if err := svc.Push(ctx, appserver.PushRequest{Node: "n1", Secret: reg.Secret}); !errors.Is(err, appserver.ErrPushFailed) {
		t.Fatalf("push while the registry is down = %v, want ErrPushFailed", err)
	}
	store.down.Store(false)
	// A checked attempt fails at the push service, then the registry
	// goes away and at least two attempts (one after another) find it so.
	eventually(t, func() bool { return sentTo(b, "t1") >= 1 }, func() string { return "no redelivery attempt" })
	store.failed.Store(0)
	store.down.Store(true)
	eventually(t, func() bool { return store.failed.Load() >= 2 || svc.RedeliveryStats().Pending == 0 },
		func() string { return "no redelivery attempt while the registry is down" })
	if s := svc.RedeliveryStats(); s.Pending != 1 {
		t.Fatalf("redelivery once its attempts found the registry unreadable: %+v, want the push waiting", s)
	}
	b.set("t1", nil)
	store.down.Store(false)
	s := waitStats(t, svc, func(s appserver.RedeliveryStats) bool { return s.Delivered == 1 || s.Pending == 0 })
	if s.Delivered != 1 {
		t.Fatalf("once the registry is back: %+v, want the push delivered", s)
	}
}
