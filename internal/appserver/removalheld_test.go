package appserver_test

import (
	"context"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/push-appserver/push-appserver/internal/appserver"
	"github.com/push-appserver/push-appserver/internal/registry"
	"github.com/push-appserver/push-appserver/internal/registry/memory"
)

// afterRemoval runs meanwhile once, right after the first removal of a
// node by DeleteRead once it is set: what another request does between
// the store's removal and the removing service's cleanup after it.
type afterRemoval struct {
	*memory.Store
	mu        sync.Mutex
	meanwhile func(node string)
}

func (s *afterRemoval) DeleteRead(ctx context.Context, r registry.Registration) (registry.Registration, error) {
	got, err := s.Store.DeleteRead(ctx, r)
	s.mu.Lock()
	f := s.meanwhile
	s.meanwhile = nil
	s.mu.Unlock()
	if err == nil && f != nil {
		f(r.Node)
	}
	return got, err
}

// TestUnregisterKeepsPushOfRegistrationAfterIt: an unregistration ends
// the waits of the pushes to its registration (TestRemovedDeviceForgetsItsWaitingPush),
// but a push kept for a registration of the node made after the removal
// is another sender's, for a device that registered anew: it must stay
// and go out. Ended by node, it went with the removed registration's,
// and the new registration's push was lost.
func TestUnregisterKeepsPushOfRegistrationAfterIt(t *testing.T) {
	ctx := context.Background()
	store := &afterRemoval{Store: memory.New()}
	b := &scripted{answers: map[string]error{}}
	svc, err := appserver.New(store, testApps(b), appserver.Options{Redelivery: time.Hour}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	// No attempt falls due within the test.
	svc.SetRedeliveryTiming(time.Hour, 5*time.Millisecond)
	running(t, svc)
	if _, err := svc.Register(ctx, appserver.Caller{}, "fcm", "n1", "t-old"); err != nil {
		t.Fatal(err)
	}
	b.set("t-new", outage)
	var again registry.Registration
	store.meanwhile = func(node string) {
		// The device registers the node anew, and its user's server's
		// first push to it fails in an outage of the push service.
		var err error
		if again, err = svc.Register(ctx, appserver.Caller{}, "fcm", node, "t-new"); err != nil {
			t.Errorf("registering anew: %v", err)
			return
		}
		if err := svc.Push(ctx, appserver.PushRequest{Node: node, Secret: again.Secret}); err == nil {
			t.Error("the push in the outage went through")
		}
	}
	if _, err := svc.Unregister(ctx, appserver.Caller{}, "fcm", "n1"); err != nil {
		t.Fatal(err)
	}
	if again.Node == "" {
		t.Fatal("the node was not registered anew after the removal")
	}
	if s := svc.RedeliveryStats(); s.Pending != 1 || s.Gone != 0 {
		t.Fatalf("after the removal, with a push kept for the registration made after it: %+v; want it pending", s)
	}
}
