package appserver_test

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/push-appserver/push-appserver/internal/appserver"
	"github.com/push-appserver/push-appserver/internal/push"
	"github.com/push-appserver/push-appserver/internal/registry"
	"github.com/push-appserver/push-appserver/internal/registry/memory"
	"github.com/push-appserver/push-appserver/internal/testutil/fakeclock"
)

// beforeRemoval runs meanwhile once, in the first removal of a single
// node (Delete or DeleteRead) after it is set, before the store carries
// it out: what another request changed between the service's read of a
// registration and its removal.
type beforeRemoval struct {
	*memory.Store
	mu        sync.Mutex
	meanwhile func(node string)
}

func (s *beforeRemoval) set(f func(node string)) {
	s.mu.Lock()
	s.meanwhile = f
	s.mu.Unlock()
}

func (s *beforeRemoval) run(node string) {
	s.mu.Lock()
	f := s.meanwhile
	s.meanwhile = nil
	s.mu.Unlock()
	if f != nil {
		f(node)
	}
}

func (s *beforeRemoval) Delete(ctx context.Context, node, typ string) (registry.Registration, error) {
	s.run(node)
	return s.Store.Delete(ctx, node, typ)
}

func (s *beforeRemoval) DeleteRead(ctx context.Context, r registry.Registration) (registry.Registration, error) {
	s.run(r.Node)
	return s.Store.DeleteRead(ctx, r)
}

// TestSuspectRefusalKeepsRenewal guards the removal of a registration
// for a refusal a misconfigured app gets for every token (Suspect): it
// reads the registration, finds its token refused and not renewed since,
// and removes it. A renewal with a new token between the read and the
// removal (the device, given a new token, registers it: answered OK)
// must keep the registration, as one made before the read does; removed
// by node, it went, and the push that found the old token refused was
// answered item-not-found, so the user's server stopped pushing to a
// device that holds a registration it was told is stored.
func TestSuspectRefusalKeepsRenewal(t *testing.T) {
	ctx := context.Background()
	store := &beforeRemoval{Store: memory.New()}
	b := &scripted{answers: map[string]error{}}
	clock := fakeclock.New(time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC))
	svc, err := appserver.New(store, testApps(b), appserver.Options{Now: clock.Now}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { svc.Close() })
	reg, err := svc.Register(ctx, appserver.Caller{}, "fcm", "n1", "tok-old")
	if err != nil {
		t.Fatal(err)
	}
	clock.Advance(time.Hour)
	b.set("tok-old", &push.DeadTokenError{Since: clock.Now(), Reason: "SENDER_ID_MISMATCH", Suspect: true})

	var renewed registry.Registration
	store.set(func(string) {
		clock.Advance(time.Second)
		var err error
		renewed, err = svc.Register(ctx, appserver.Caller{Secret: reg.Secret}, "fcm", "n1", "tok-new")
		if err != nil {
			t.Errorf("renewal with a new token: %v", err)
		}
	})
	err = svc.Push(ctx, appserver.PushRequest{Node: "n1", Secret: reg.Secret})
	if renewed.Node == "" {
		t.Fatal("the registration was not removed, nor the renewal made")
	}
	got, gerr := store.Get(ctx, "n1")
	if gerr != nil || got.Token != "tok-new" || got.Secret != renewed.Secret {
		t.Fatalf("registration after a refusal of its old token, renewed with a new one meanwhile: %+v, %v; want token tok-new, secret as answered", got, gerr)
	}
	if errors.Is(err, appserver.ErrNotFound) {
		t.Errorf("the push to the old token answered %v: the user's server stops pushing to a node that is registered", err)
	}
}
