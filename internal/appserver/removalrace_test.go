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

// TestUnregistrationKeepsWhatItDidNotRead guards who may remove a
// registration: the caller proven to hold it (its owner account, or one
// that gives its secret). An unregistration reads the registration,
// checks the caller against it and removes it; one made in between by
// someone else (the first removed, by the caller's own retry or a dead
// token, and the node registered anew) is not what the caller was
// checked against and must stay. Removed by node, it went: account B
// lost the registration it was told was stored, to account A, and a
// device's new secret to a caller that knew only the old one.
func TestUnregistrationKeepsWhatItDidNotRead(t *testing.T) {
	ctx := context.Background()
	alice := appserver.Account{Bare: "alice@a.example", Domain: "a.example"}
	bob := appserver.Account{Bare: "bob@b.example", Domain: "b.example"}
	for _, c := range []struct {
		name   string
		strict bool
		// first registers the node for the caller, who unregisters it
		// as caller; second registers it anew for someone else once the
		// first is gone.
		first, second func(svc *appserver.Service) (registry.Registration, error)
		caller        func(first registry.Registration) appserver.Caller
	}{
		{
			name: "another account",
			first: func(svc *appserver.Service) (registry.Registration, error) {
				return svc.Register(ctx, appserver.Caller{Account: alice}, "fcm", "n1", "tok-alice")
			},
			second: func(svc *appserver.Service) (registry.Registration, error) {
				return svc.Register(ctx, appserver.Caller{Account: bob}, "fcm", "n1", "tok-bob")
			},
			caller: func(registry.Registration) appserver.Caller { return appserver.Caller{Account: alice} },
		},
		{
			name:   "another secret",
			strict: true,
			first: func(svc *appserver.Service) (registry.Registration, error) {
				return svc.Register(ctx, appserver.Caller{}, "fcm", "n1", "tok-1")
			},
			second: func(svc *appserver.Service) (registry.Registration, error) {
				return svc.Register(ctx, appserver.Caller{}, "fcm", "n1", "tok-2")
			},
			caller: func(first registry.Registration) appserver.Caller { return appserver.Caller{Secret: first.Secret} },
		},
	} {
		t.Run(c.name, func(t *testing.T) {
			store := &beforeRemoval{Store: memory.New()}
			b := &scripted{answers: map[string]error{}}
			clock := fakeclock.New(time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC))
			svc, err := appserver.New(store, testApps(b), appserver.Options{Now: clock.Now, StrictRegistration: c.strict}, slog.New(slog.DiscardHandler))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { svc.Close() })
			first, err := c.first(svc)
			if err != nil {
				t.Fatal(err)
			}
			var second registry.Registration
			store.set(func(node string) {
				// The first registration goes (the caller's own
				// unregistration, sent twice), and the node is
				// registered anew.
				if _, err := store.Store.Delete(ctx, node, "fcm"); err != nil {
					t.Errorf("removing the first registration: %v", err)
				}
				clock.Advance(time.Second)
				var err error
				if second, err = c.second(svc); err != nil {
					t.Errorf("registering anew: %v", err)
				}
			})
			_, err = svc.Unregister(ctx, c.caller(first), "fcm", "n1")
			if second.Node == "" {
				t.Fatal("the node was not registered anew")
			}
			got, gerr := store.Get(ctx, "n1")
			if gerr != nil || got.Secret != second.Secret {
				t.Fatalf("unregistration (answered %v) by a caller checked against the first registration removed the one made since: %+v, %v", err, got, gerr)
			}
			if err == nil {
				t.Errorf("the unregistration answered OK, and the registration it names is there")
			}
		})
	}
}

// TestUnregistrationRemovesOwnRenewal: a registration renewed by the
// caller's own account between the unregistration's read and its
// removal is still the caller's to remove, and goes.
func TestUnregistrationRemovesOwnRenewal(t *testing.T) {
	ctx := context.Background()
	alice := appserver.Account{Bare: "alice@a.example", Domain: "a.example"}
	store := &beforeRemoval{Store: memory.New()}
	b := &scripted{answers: map[string]error{}}
	clock := fakeclock.New(time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC))
	svc, err := appserver.New(store, testApps(b), appserver.Options{Now: clock.Now}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { svc.Close() })
	if _, err := svc.RegisterDevice(ctx, "fcm", alice, "dev1", "", "tok-1"); err != nil {
		t.Fatal(err)
	}
	store.set(func(string) {
		clock.Advance(time.Second)
		if _, err := svc.RegisterDevice(ctx, "fcm", alice, "dev1", "", "tok-2"); err != nil {
			t.Errorf("renewal: %v", err)
		}
	})
	r, err := svc.UnregisterDevice(ctx, "fcm", alice, "dev1", "")
	if err != nil || r.Token != "tok-2" {
		t.Fatalf("unregistration racing the account's own renewal: %+v, %v; want the renewed registration removed", r, err)
	}
	if n, _ := store.Count(ctx); n != 0 {
		t.Fatalf("%d registrations left", n)
	}
}
