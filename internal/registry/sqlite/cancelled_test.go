package sqlite_test

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/push-appserver/push-appserver/internal/registry"
)

// A registration whose caller gave up before it was sent stores nothing
// and says why: whether it is queued (the queue has room) and the writer
// skips it, or never queued, the caller hears its context's error.
func TestRegisterCancelledBeforeSent(t *testing.T) {
	s := open(t, filepath.Join(t.TempDir(), "registry.db"))
	defer s.Close()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	for range 20 {
		r := registry.Registration{Node: "gone", Type: "apns", Token: "t", Secret: "s", Registered: time.Now()}
		if _, err := s.Register(ctx, r.Node, registry.Renew(r)); !errors.Is(err, context.Canceled) {
			t.Fatalf("Register with a cancelled context: %v, want context.Canceled", err)
		}
	}
	// A registration after them is stored, and they were not.
	if _, err := register(s, registry.Registration{Node: "after", Type: "apns", Token: "t", Secret: "s", Registered: time.Now()}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(context.Background(), "gone"); !errors.Is(err, registry.ErrNotFound) {
		t.Fatalf("Get of a registration whose caller gave up before it was sent: %v, want ErrNotFound", err)
	}
}
