package admin_test

import (
	"context"
	"database/sql"
	"fmt"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/push-appserver/push-appserver/internal/admin"
	"github.com/push-appserver/push-appserver/internal/registry"
	"github.com/push-appserver/push-appserver/internal/registry/sqlite"
)

// BenchmarkPruneBesideServer prunes a SQLite registry of 1,000,000
// registrations of real size, 20,000 of them idle and scattered in node
// order among the others, while a second store on the same file, as a
// running server would, registers a device every 10 ms. It reports how
// long the prune took (prune-s) and the longest any of those
// registrations waited (worst-wait-ms, and p99-wait-ms and
// median-wait-ms): the write lock is shared, and a
// prune that holds it batch after batch keeps the server's
// registrations waiting. Run it with -benchtime=1x; each round puts the
// idle registrations back first.
func BenchmarkPruneBesideServer(b *testing.B) {
	ctx := context.Background()
	path := filepath.Join(b.TempDir(), "registry.db")
	s, err := sqlite.Open(ctx, path)
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	db, err := sql.Open("sqlite", path+"?_pragma=busy_timeout(10000)")
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	const n, every = 1_000_000, 50
	now := time.Now()
	old := now.Add(-400 * 24 * time.Hour)
	fill := func(onlyIdle bool) {
		b.Helper()
		filter := ""
		if onlyIdle {
			filter = "WHERE i % ?4 = 0"
		}
		if _, err := db.ExecContext(ctx, `WITH RECURSIVE i(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM i WHERE i < ?1)
			INSERT OR IGNORE INTO registrations (node, type, token, secret, registered)
			SELECT printf('%016x', i * 2654435761 % 4294967291), 'fcm', printf('token-%0150d', i), printf('%064x', i),
				CASE WHEN i % ?4 = 0 THEN ?2 ELSE ?3 END FROM i `+filter,
			n, old.UnixNano(), now.UnixNano(), every); err != nil {
			b.Fatal(err)
		}
	}
	fill(false)
	server, err := sqlite.Open(ctx, path)
	if err != nil {
		b.Fatal(err)
	}
	defer server.Close()
	var took time.Duration
	var waits []time.Duration
	for b.Loop() {
		b.StopTimer()
		fill(true)
		b.StartTimer()
		stop := make(chan struct{})
		var wg sync.WaitGroup
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				case <-time.After(10 * time.Millisecond):
				}
				r := registry.Registration{Node: fmt.Sprintf("server-%d", i), Type: "fcm", Token: "t", Secret: "s", Registered: time.Now()}
				start := time.Now()
				if _, err := server.Register(ctx, r.Node, registry.Renew(r)); err != nil {
					b.Error(err)
					return
				}
				waits = append(waits, time.Since(start))
			}
		})
		start := time.Now()
		got, err := admin.Prune(ctx, s, "", now.Add(-180*24*time.Hour), nil)
		took += time.Since(start)
		close(stop)
		wg.Wait()
		if err != nil || got["fcm"] != n/every {
			b.Fatalf("pruned %v, %v; want %d", got, err, n/every)
		}
	}
	b.ReportMetric(took.Seconds()/float64(b.N), "prune-s/op")
	slices.Sort(waits)
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	b.ReportMetric(ms(waits[len(waits)-1]), "worst-wait-ms")
	b.ReportMetric(ms(waits[len(waits)*99/100]), "p99-wait-ms")
	b.ReportMetric(ms(waits[len(waits)/2]), "median-wait-ms")
}
