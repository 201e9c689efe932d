package appserver_test

import (
	"context"
	"errors"
	"log/slog"
	"testing"

	"github.com/push-appserver/push-appserver/internal/appserver"
	"github.com/push-appserver/push-appserver/internal/registry/memory"
)

// TestPushKeptWhileRegistryUnreadable guards which pushes the registry's
// failure keeps for redelivery: a push to a node, answered wait, is kept
// to go out once its registration can be read (dropped, the message
// that caused it wakes no one); a tokenless push is not, since only the
// read says whether its node is a device token at all, and keeping it
// would hold a device token for a push that may never be one.
func TestPushKeptWhileRegistryUnreadable(t *testing.T) {
	for _, tc := range []struct {
		name     string
		req      appserver.PushRequest
		wantKept uint64
	}{
		{"registered node", appserver.PushRequest{Node: "n1"}, 1},
		{"tokenless", appserver.PushRequest{Node: "c0ffee00c0ffee00", Tokenless: true, TokenApp: "fcm"}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			store := &unreadableStore{Store: memory.New()}
			svc, err := appserver.New(store, testApps(&scripted{answers: map[string]error{}}), appserver.Options{CacheSize: -1}, slog.New(slog.DiscardHandler))
			if err != nil {
				t.Fatal(err)
			}
			r, err := svc.Register(ctx, appserver.Caller{}, "fcm", "n1", "tok")
			if err != nil {
				t.Fatal(err)
			}
			store.down.Store(true)
			tc.req.Secret = r.Secret
			if err := svc.Push(ctx, tc.req); !errors.Is(err, appserver.ErrPushFailed) {
				t.Fatalf("push with the registry unreadable = %v, want ErrPushFailed", err)
			}
			if s := svc.RedeliveryStats(); s.Kept != tc.wantKept || s.Pending != int(tc.wantKept) {
				t.Fatalf("redelivery kept %d, %d pending; want %d", s.Kept, s.Pending, tc.wantKept)
			}
		})
	}
}
