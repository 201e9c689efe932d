package postgres_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/push-appserver/push-appserver/internal/registry"
)

// Sessions ended under the pool (a DBA's pg_terminate_backend, a
// pooler or a firewall that dropped them) cost no read: a push's read
// of its registration that meets a connection found gone is made again
// on another, rather than fail the push, which the user's server is
// answered wait for and which goes out only at its redelivery, seconds
// later. The pool pings only connections idle for over a second, so in
// a busy instance every pooled connection is one such read.
func TestReadsSurviveTerminatedSessions(t *testing.T) {
	ctx := context.Background()
	dsn := pg.DB(t)
	s := open(t, dsn)
	if _, err := register(s, registry.Registration{Node: "n1", Type: "a", Token: "t", Secret: "s", Registered: time.Now()}); err != nil {
		t.Fatal(err)
	}
	const readers = 8
	var wg sync.WaitGroup
	// Busy: every pooled connection used a moment ago.
	for range readers {
		wg.Go(func() {
			for range 20 {
				if _, err := s.GetPushTarget(ctx, "n1"); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	n := pg.Terminate(t, dsn, "push-appserver")
	if n == 0 {
		t.Fatal("no session of the pool to end")
	}
	c, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	waitFor(t, "the ended sessions gone", func() bool {
		var left int
		if err := c.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND application_name = 'push-appserver'`).Scan(&left); err != nil {
			t.Fatal(err)
		}
		return left == 0
	})
	var mu sync.Mutex
	var failed []error
	for range readers {
		wg.Go(func() {
			if _, err := s.GetPushTarget(ctx, "n1"); err != nil {
				mu.Lock()
				failed = append(failed, err)
				mu.Unlock()
			}
			if _, err := s.Get(ctx, "n1"); err != nil {
				mu.Lock()
				failed = append(failed, err)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if len(failed) > 0 {
		t.Fatalf("%d sessions ended, %d of %d reads failed: %v", n, len(failed), 2*readers, failed[0])
	}
}
