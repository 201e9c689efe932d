package admin_test

import (
	"bytes"
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/push-appserver/push-appserver/internal/admin"
	"github.com/push-appserver/push-appserver/internal/registry"
	"github.com/push-appserver/push-appserver/internal/registry/memory"
	"github.com/push-appserver/push-appserver/internal/registry/sqlite"
)

// Prune deletes every idle registration and none renewed since, a window
// of the registry at a time, with a pause after each window that deleted
// something, in which a running server's writes get the registry
// (SQLite's busy handler looks again only every 100 ms: batches one after
// the other kept it out for the whole prune).
func TestPrune(t *testing.T) {
	ctx := context.Background()
	s := memory.New()
	old := time.Now().Add(-400 * 24 * time.Hour)
	var rs []registry.Registration
	for i := range 4400 {
		rs = append(rs, registry.Registration{Node: fmt.Sprintf("idle-%04d", i), Type: "fcm", Token: "t", Secret: "s", Registered: old})
	}
	rs = append(rs, registry.Registration{Node: "active", Type: "fcm", Token: "t", Secret: "s", Registered: time.Now()})
	if err := s.Put(ctx, rs); err != nil {
		t.Fatal(err)
	}
	w := &watched{Store: s}
	start := time.Now()
	n, err := admin.Prune(ctx, w, "", time.Now().Add(-180*24*time.Hour))
	took := time.Since(start)
	if err != nil || n["fcm"] != 4400 {
		t.Fatalf("pruned %v, %v; want 4400", n, err)
	}
	if _, err := s.Get(ctx, "active"); err != nil {
		t.Fatalf("an active registration pruned: %v", err)
	}
	// Three windows of 2,000: two pauses.
	if took < 300*time.Millisecond {
		t.Errorf("three windows in %v: no pause between them", took)
	}
	// Each window follows the one before, where the store said it ended,
	// not the start: the registrations in use it passed are not read
	// again.
	if want := append([]string{""}, w.next[:len(w.next)-1]...); len(w.after) != 3 || !slices.Equal(w.after, want) || w.next[2] != "" {
		t.Errorf("windows after %q ending at %q, want after %q and the last at the end", w.after, w.next, want)
	}
}

// A window with none idle deleted nothing and took no write lock: Prune
// goes on to the next at once, so a large registry with few idle
// registrations is read through in the time its statements take, not in
// 150 ms a window.
func TestPruneNoPauseAfterEmptyWindow(t *testing.T) {
	ctx := context.Background()
	s := memory.New()
	var rs []registry.Registration
	for i := range 20000 {
		rs = append(rs, registry.Registration{Node: fmt.Sprintf("active-%05d", i), Type: "fcm", Token: "t", Secret: "s", Registered: time.Now()})
	}
	rs = append(rs, registry.Registration{Node: "zz-idle", Type: "fcm", Token: "t", Secret: "s", Registered: time.Now().Add(-400 * 24 * time.Hour)})
	if err := s.Put(ctx, rs); err != nil {
		t.Fatal(err)
	}
	w := &watched{Store: s}
	start := time.Now()
	n, err := admin.Prune(ctx, w, "", time.Now().Add(-180*24*time.Hour))
	took := time.Since(start)
	if err != nil || n["fcm"] != 1 {
		t.Fatalf("pruned %v, %v; want the one idle", n, err)
	}
	// Eleven windows: ten pauses would be 1.5 s at least.
	if len(w.after) != 11 || took > time.Second {
		t.Errorf("%d windows in %v, want 11 without pauses", len(w.after), took)
	}
}

// watched records what Prune asks of a store.
type watched struct {
	admin.Store
	took  time.Duration // in DeleteIdle
	after []string      // DeleteIdle's after, call by call
	next  []string      // where each call's window ended
}

func (s *watched) DeleteIdle(ctx context.Context, before time.Time, typ, after string, limit int) ([]registry.Registration, string, error) {
	start := time.Now()
	removed, next, err := s.Store.DeleteIdle(ctx, before, typ, after, limit)
	s.took += time.Since(start)
	s.after, s.next = append(s.after, after), append(s.next, next)
	return removed, next, err
}

// BenchmarkPrune prunes a SQLite registry of 300,000 registrations of
// which every tenth is idle, scattered in node order among the others
// (half renewed lately, half pushed to lately); each round puts the idle
// ones back first. Most of a round is Prune's pauses between batches:
// statement-ms is the time its statements took.
func BenchmarkPrune(b *testing.B) {
	ctx := context.Background()
	s, err := sqlite.Open(ctx, filepath.Join(b.TempDir(), "registry.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	const n = 300000
	old, recent := time.Unix(1_700_000_000, 0), time.Now()
	var idle, rs []registry.Registration
	for i := range n {
		r := registry.Registration{Node: fmt.Sprintf("%016x", uint64(i)*0x9e3779b97f4a7c15), Type: "fcm",
			Token: fmt.Sprintf("token-%0150d", i), Secret: fmt.Sprintf("%064x", i), Registered: old}
		switch {
		case i%10 == 0:
			idle = append(idle, r)
		case i%2 == 0:
			r.Renewed = recent
		default:
			r.LastSuccessfulPush = recent
		}
		rs = append(rs, r)
	}
	if err := s.Put(ctx, rs); err != nil {
		b.Fatal(err)
	}
	ts := &watched{Store: s}
	for b.Loop() {
		b.StopTimer()
		if err := s.Put(ctx, idle); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		if got, err := admin.Prune(ctx, ts, "", recent.Add(-time.Hour)); err != nil || got["fcm"] != len(idle) {
			b.Fatalf("pruned %v, %v; want %d", got, err, len(idle))
		}
	}
	b.ReportMetric(float64(ts.took.Milliseconds())/float64(b.N), "statement-ms/op")
}

// TestPrinterTableStreams: the table of `registrations list` reaches its
// output as it is printed, a page of rows at a time, rather than all at
// the end: a tabwriter holds every row until flushed, and with 1,000,000
// registrations the command printed nothing for 10 s and peaked at 870 MB.
func TestPrinterTableStreams(t *testing.T) {
	var out bytes.Buffer
	p := &admin.Printer{W: &out}
	const rows = 20000
	for i := range rows {
		r := registry.Registration{Node: fmt.Sprintf("node-%08d", i), Type: "apns", Token: fmt.Sprintf("%064x", i), Registered: time.Unix(1700000000, 0)}
		if err := p.Print(r); err != nil {
			t.Fatal(err)
		}
	}
	before := out.Len()
	if err := p.Flush(); err != nil {
		t.Fatal(err)
	}
	if held := out.Len() - before; held > out.Len()/10 {
		t.Errorf("%d of %d bytes held back until Flush: the table is buffered whole", held, out.Len())
	}
}
