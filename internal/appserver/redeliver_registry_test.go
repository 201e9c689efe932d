package appserver

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/push-appserver/push-appserver/internal/push"
	"github.com/push-appserver/push-appserver/internal/registry/memory"
)

// TestHoldAfterLeaseLost: a server whose lease was lost (another server
// released its pushes) finds out only at its stop. The waits it changed
// since its last write are written under a new lease and handed over
// with the others, not counted lost.
func TestHoldAfterLeaseLost(t *testing.T) {
	ctx := context.Background()
	store := memory.New()
	s, err := New(store, nil, Options{Redelivery: time.Minute}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	r := s.redeliver
	r.keep(redeliveryKey{node: "written"}, push.Notification{App: "apns", Node: "written", Priority: push.PrioritySilent})
	if err := s.writePending(ctx); err != nil || !r.leased {
		t.Fatalf("first write: %v, leased %v", err, r.leased)
	}
	// What another server's take does once the lease has run out.
	if err := store.ReleasePushes(ctx, r.owner); err != nil {
		t.Fatal(err)
	}
	r.keep(redeliveryKey{node: "changed"}, push.Notification{App: "apns", Node: "changed", Priority: push.PrioritySilent})
	s.holdPending()
	if st := r.stats(); st.Dropped != 0 {
		t.Fatalf("%+v", st)
	}
	held, err := store.TakeHeldPushes(ctx, 10)
	if err != nil || len(held) != 2 {
		t.Fatalf("held after the stop: %d, %v; want the push written before the lease was lost and the one kept since", len(held), err)
	}
}
