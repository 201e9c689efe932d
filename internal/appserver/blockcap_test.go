package appserver_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/push-appserver/push-appserver/internal/appserver"
	"github.com/push-appserver/push-appserver/internal/push"
	"github.com/push-appserver/push-appserver/internal/registry"
	"github.com/push-appserver/push-appserver/internal/registry/memory"
	"github.com/push-appserver/push-appserver/internal/registry/sqlite"
	"github.com/push-appserver/push-appserver/internal/testutil/fakeclock"
)

// TestTokenBlockListCapped guards the bounds on the block list of dead
// tokens, which a stranger naming made-up tokens to tokenless pushes
// fills a row per token: it holds at most MaxBlockedTokens rows (and a
// hundredth more between trims), the blocks written last kept and those
// ending soonest dropped; and one push source puts at most 60 tokens a
// minute on it, each past that still answered dead.
func TestTokenBlockListCapped(t *testing.T) {
	for _, tt := range []struct {
		name  string
		store func(t *testing.T) registry.Store
	}{
		{"memory", func(*testing.T) registry.Store { return memory.New() }},
		{"sqlite", func(t *testing.T) registry.Store {
			s, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "registry.db"))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { s.Close() })
			return s
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			store := tt.store(t)
			clk := fakeclock.New(time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC))
			b := &scripted{answers: map[string]error{}}
			const maxRows = 200 // trimmed every 2 blocks
			svc, err := appserver.New(store, []appserver.App{{Name: "fcm", Priority: push.PriorityHigh, Backend: b}},
				appserver.Options{TokenBlock: 24 * time.Hour, MaxBlockedTokens: maxRows, Now: clk.Now}, slog.New(slog.NewTextHandler(io.Discard, nil)))
			if err != nil {
				t.Fatal(err)
			}
			pushDead := func(source, token string) {
				t.Helper()
				b.set(token, &push.DeadTokenError{Since: clk.Now(), Reason: "UNREGISTERED"})
				err := svc.PushToken(ctx, appserver.TokenPush{App: "fcm", Token: token, Request: appserver.PushRequest{Node: token, Source: source}})
				if !errors.Is(err, appserver.ErrNotFound) {
					t.Fatalf("push to dead token %s from %s = %v, want ErrNotFound", token, source, err)
				}
			}
			blocked := func(token string) bool {
				t.Helper()
				_, err := store.GetBlockedToken(ctx, "fcm", token)
				if err != nil && !errors.Is(err, registry.ErrNotFound) {
					t.Fatal(err)
				}
				return err == nil
			}

			// One source: 60 blocks at once, then none until its
			// minute has given it more.
			for i := range 61 {
				pushDead("stranger.example", fmt.Sprint("s", i))
			}
			if !blocked("s59") || blocked("s60") {
				t.Fatalf("one source's 60th token blocked %v, its 61st %v; want the 60th only", blocked("s59"), blocked("s60"))
			}
			pushDead("other.example", "o0")
			if !blocked("o0") {
				t.Fatal("another source's dead token not blocked")
			}
			clk.Advance(time.Second)
			pushDead("stranger.example", "s61")
			if !blocked("s61") {
				t.Fatal("a source's dead token not blocked a second after its last one")
			}

			// 300 sources a second apart, one dead token each: the
			// list keeps the 200 written last.
			for i := range 300 {
				clk.Advance(time.Second)
				pushDead(fmt.Sprintf("d%d.example", i), fmt.Sprint("t", i))
			}
			kept := 0
			for i := range 300 {
				if blocked(fmt.Sprint("t", i)) {
					kept++
				}
			}
			if kept != maxRows || blocked("t99") || !blocked("t100") || !blocked("t299") || blocked("s0") {
				t.Errorf("after 362 blocks %d of the last 300 kept, t99 %v, t100 %v, t299 %v, s0 %v; want the %d written last",
					kept, blocked("t99"), blocked("t100"), blocked("t299"), blocked("s0"), maxRows)
			}
		})
	}
}
