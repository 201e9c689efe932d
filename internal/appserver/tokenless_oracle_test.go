package appserver_test

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/push-appserver/push-appserver/internal/appserver"
)

// TestTokenlessPushDoesNotTellRegisteredNodes: on a component that takes
// tokenless publishes (fpush's), a publish with a made-up secret is
// answered, counted and cached alike whether its node is registered or
// not. Otherwise anyone who can reach the component learns which nodes
// exist from the answer alone: a made-up secret to a registered node was
// answered item-not-found, to an unknown one as a push to the node as a
// token (a result, or wait for a pushModule naming no app), and
// /metrics (registration_cache_entries, cache lookups) told them apart
// too.
func TestTokenlessPushDoesNotTellRegisteredNodes(t *testing.T) {
	for _, app := range []string{"fcm", "no-such-app"} {
		for _, secret := range []string{"made-up", ""} {
			t.Run(fmt.Sprintf("%s/%q", app, secret), func(t *testing.T) {
				ctx := context.Background()
				svc, _, _ := newService(t, 0)
				if _, err := svc.Register(ctx, appserver.Caller{}, "fcm", "victim", "tok"); err != nil {
					t.Fatal(err)
				}
				type seen struct {
					answer                string
					entries, hits, misses int
				}
				class := func(err error) string {
					for _, e := range []error{appserver.ErrNotFound, appserver.ErrUnknownType, appserver.ErrThrottled, appserver.ErrPushFailed} {
						if errors.Is(err, e) {
							return e.Error()
						}
					}
					if err != nil {
						return "other: " + err.Error()
					}
					return "ok"
				}
				probe := func(node string) []seen {
					var out []seen
					// Twice: the second finds what the first cached.
					for range 2 {
						before := svc.CacheStats()
						err := svc.Push(ctx, appserver.PushRequest{Node: node, Secret: secret, Tokenless: true, TokenApp: app})
						after := svc.CacheStats()
						out = append(out, seen{class(err), after.Entries - before.Entries, int(after.Hits - before.Hits), int(after.Misses - before.Misses)})
					}
					return out
				}
				unknown, registered := probe("nobody"), probe("victim")
				if fmt.Sprint(unknown) != fmt.Sprint(registered) {
					t.Errorf("tokenless push with secret %q through %s: unknown node %+v, registered node %+v: they tell a registered node from an unknown one", secret, app, unknown, registered)
				}
			})
		}
	}
}
