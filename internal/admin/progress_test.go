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

// heard is what a Progress was told, call by call.
type heard [][2]int

func (h *heard) progress() admin.Progress {
	return func(read, done int) { *h = append(*h, [2]int{read, done}) }
}

// TestProgressGrows guards what `registrations prune` and `import
// registry` report while they read a large registry: Idle, Prune and
// Copy tell their Progress, page after page (window after window), how
// many registrations they read and how many of them they found idle,
// deleted or copied, both only growing, read growing at every call, and
// ending at what they did (Prune's last window, whose size the store
// does not say, is left to the summary).
func TestProgressGrows(t *testing.T) {
	ctx := context.Background()
	const n, idleEvery = 5500, 4
	old, recent := time.Unix(1_700_000_000, 0), time.Now()
	fill := func(t *testing.T) *memory.Store {
		s := memory.New()
		var rs []registry.Registration
		for i := range n {
			r := registry.Registration{Node: fmt.Sprintf("node-%05d", i), Type: "fcm", Token: fmt.Sprintf("t%d", i), Secret: "s", Registered: recent}
			if i%idleEvery == 0 {
				r.Registered = old
			}
			rs = append(rs, r)
		}
		if _, err := s.Put(ctx, rs); err != nil {
			t.Fatal(err)
		}
		return s
	}
	before := recent.Add(-time.Hour)
	idle := (n + idleEvery - 1) / idleEvery
	for _, tt := range []struct {
		name string
		run  func(t *testing.T, p admin.Progress) int // how many it found, deleted or copied
		// calls, lastRead: how many times it tells, and how many
		// registrations it says it read the last time; did: how many
		// it finds, deletes or copies.
		calls, lastRead, did int
	}{
		{"idle", func(t *testing.T, p admin.Progress) int {
			got, err := admin.Idle(ctx, fill(t), "", before, p)
			if err != nil {
				t.Fatal(err)
			}
			return got["fcm"]
		}, 6, n, idle},
		{"prune", func(t *testing.T, p admin.Progress) int {
			c := &fakeClock{now: time.Unix(1_800_000_000, 0)}
			got, err := admin.PruneWith(ctx, fill(t), "", before, p, c)
			if err != nil {
				t.Fatal(err)
			}
			return got["fcm"]
		}, 2, 4000, idle},
		{"copy", func(t *testing.T, p admin.Progress) int {
			c := &fakeClock{now: time.Unix(1_800_000_000, 0)}
			sum, err := admin.CopyWith(ctx, memory.New(), fill(t), false, p, c)
			if err != nil {
				t.Fatal(err)
			}
			return sum.Total()
		}, 6, n, n},
		{"copy, dry run", func(t *testing.T, p admin.Progress) int {
			sum, err := admin.Copy(ctx, memory.New(), fill(t), true, p)
			if err != nil {
				t.Fatal(err)
			}
			return sum.Total()
		}, 6, n, n},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var h heard
			did := tt.run(t, h.progress())
			if len(h) != tt.calls {
				t.Fatalf("told %d times (%v), want %d", len(h), h, tt.calls)
			}
			for i := 1; i < len(h); i++ {
				if h[i][0] <= h[i-1][0] || h[i][1] < h[i-1][1] {
					t.Fatalf("went back or stood still: %v", h)
				}
			}
			last := h[len(h)-1]
			if last[0] != tt.lastRead || last[1] > last[0] || last[1] > did {
				t.Errorf("last told %d read, %d done; want %d read, at most %d done", last[0], last[1], tt.lastRead, did)
			}
			if tt.lastRead == n && last[1] != did {
				t.Errorf("last told %d done, did %d", last[1], did)
			}
			if did != tt.did {
				t.Errorf("did %d, want %d", did, tt.did)
			}
		})
	}
}

// A nil Progress hears nothing and stops nothing.
func TestNilProgress(t *testing.T) {
	ctx := context.Background()
	s := memory.New()
	if _, err := s.Put(ctx, []registry.Registration{{Node: "a", Type: "fcm", Token: "t", Secret: "s", Registered: time.Unix(1_700_000_000, 0)}}); err != nil {
		t.Fatal(err)
	}
	if n, err := admin.Prune(ctx, s, "", time.Now().Add(-time.Hour), nil); err != nil || n["fcm"] != 1 {
		t.Fatalf("pruned %v, %v", n, err)
	}
}
