package appserver_test

import (
	"context"
	"errors"
	"testing"

	"github.com/push-appserver/push-appserver/internal/appserver"
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
