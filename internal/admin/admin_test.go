package admin_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/push-appserver/push-appserver/internal/admin"
	"github.com/push-appserver/push-appserver/internal/registry"
	"github.com/push-appserver/push-appserver/internal/registry/memory"
)

// Prune deletes every idle registration and none renewed since, a batch
// at a time with a pause between batches, in which a running server's
// writes get the registry (SQLite's busy handler looks again only every
// 100 ms: batches one after the other kept it out for the whole prune).
func TestPrune(t *testing.T) {
	ctx := context.Background()
	s := memory.New()
	old := time.Now().Add(-400 * 24 * time.Hour)
	var rs []registry.Registration
	for i := range 1100 {
		rs = append(rs, registry.Registration{Node: fmt.Sprint("idle-", i), Type: "fcm", Token: "t", Secret: "s", Registered: old})
	}
	rs = append(rs, registry.Registration{Node: "active", Type: "fcm", Token: "t", Secret: "s", Registered: time.Now()})
	if err := s.Put(ctx, rs); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	n, err := admin.Prune(ctx, s, "", time.Now().Add(-180*24*time.Hour))
	took := time.Since(start)
	if err != nil || n["fcm"] != 1100 {
		t.Fatalf("pruned %v, %v; want 1100", n, err)
	}
	if _, err := s.Get(ctx, "active"); err != nil {
		t.Fatalf("an active registration pruned: %v", err)
	}
	// Three batches of 500: two pauses.
	if took < 300*time.Millisecond {
		t.Errorf("three batches in %v: no pause between them", took)
	}
}
