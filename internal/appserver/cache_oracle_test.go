package appserver_test

import (
	"context"
	"errors"
	"testing"

	"github.com/push-appserver/push-appserver/internal/appserver"
	"github.com/push-appserver/push-appserver/internal/registry"
)

// README: /metrics never tells a wrong secret from an unknown node. Nor
// does the cache's size (push_appserver_registration_cache_entries): a
// registration read for a push with a made-up secret, or none (a
// component with Tigase providers takes publishes without one), is not
// cached, as nothing is for an unknown node.
func TestCacheEntriesDoNotTellRegisteredNodes(t *testing.T) {
	for _, secret := range []string{"made-up", ""} {
		ctx := context.Background()
		svc, _, _ := newService(t, 0)
		if _, err := svc.Register(ctx, appserver.Caller{}, "fcm", "victim", "tok"); err != nil {
			t.Fatal(err)
		}
		probe := func(node string) int {
			before := svc.CacheStats().Entries
			err := svc.Push(ctx, appserver.PushRequest{Node: node, Secret: secret})
			if !errors.Is(err, appserver.ErrNotFound) {
				t.Fatalf("push to %s with secret %q: %v", node, secret, err)
			}
			return svc.CacheStats().Entries - before
		}
		if unknown, registered := probe("nobody"), probe("victim"); unknown != registered {
			t.Errorf("secret %q: cache entries grew by %d for a registered node, by %d for an unknown one: /metrics tells them apart", secret, registered, unknown)
		}
	}
}

// A push whose secret does not match the registration the cache holds
// reads the registry, as one to a node the cache does not hold does.
// Answered from memory, it came back a registry read sooner than a push
// to an unknown node (microseconds on SQLite, a round trip on
// PostgreSQL), and that time told a registered node from an unknown one
// to someone who knows no secret. The read also finds a secret written
// by another instance whose change the feed has yet to announce: here,
// a write the cache never hears of.
func TestWrongSecretForCachedNodeReadsRegistry(t *testing.T) {
	ctx := context.Background()
	svc, store, b := newService(t, 0)
	reg, err := svc.Register(ctx, appserver.Caller{}, "fcm", "n1", "tok")
	if err != nil {
		t.Fatal(err)
	}
	if err := svc.Push(ctx, appserver.PushRequest{Node: "n1", Secret: reg.Secret}); err != nil {
		t.Fatalf("first push: %v", err)
	}
	if svc.CacheStats().Entries != 1 {
		t.Fatalf("registration not cached by its push: %+v", svc.CacheStats())
	}
	renewed := reg
	renewed.Secret = "written-elsewhere"
	if _, err := store.Put(ctx, []registry.Registration{renewed}); err != nil {
		t.Fatal(err)
	}
	if err := svc.Push(ctx, appserver.PushRequest{Node: "n1", Secret: "written-elsewhere"}); err != nil {
		t.Fatalf("push with the secret in the registry, not in the cache: %v", err)
	}
	if n := len(b.Sent()); n != 2 {
		t.Errorf("%d pushes sent, want 2", n)
	}
	// The cache now holds what the registry holds: the old secret is
	// refused, after a read of its own.
	if err := svc.Push(ctx, appserver.PushRequest{Node: "n1", Secret: reg.Secret}); !errors.Is(err, appserver.ErrNotFound) {
		t.Errorf("push with the secret replaced: %v, want ErrNotFound", err)
	}
}
