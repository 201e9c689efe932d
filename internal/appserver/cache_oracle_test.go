package appserver_test

import (
	"context"
	"errors"
	"testing"

	"github.com/push-appserver/push-appserver/internal/appserver"
)

// README: /metrics never tells a wrong secret from an unknown node. Nor
// does the cache's size (push_appserver_registration_cache_entries): a
// registration read for a push with a made-up secret is not cached, as
// nothing is for an unknown node.
func TestCacheEntriesDoNotTellRegisteredNodes(t *testing.T) {
	ctx := context.Background()
	svc, _, _ := newService(t, 0)
	if _, err := svc.Register(ctx, appserver.Caller{}, "fcm", "victim", "tok"); err != nil {
		t.Fatal(err)
	}
	probe := func(node string) int {
		before := svc.CacheStats().Entries
		err := svc.Push(ctx, appserver.PushRequest{Node: node, Secret: "made-up"})
		if !errors.Is(err, appserver.ErrNotFound) {
			t.Fatalf("push to %s with a made-up secret: %v", node, err)
		}
		return svc.CacheStats().Entries - before
	}
	unknown, registered := probe("nobody"), probe("victim")
	if unknown != registered {
		t.Fatalf("cache entries grew by %d for a made-up secret to a registered node, by %d for an unknown node: /metrics tells them apart", registered, unknown)
	}
}
