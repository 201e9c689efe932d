package postgres_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// A window of DeleteIdle reads limit registrations of the registry, not
// the registry: one statement reading on until it found 500 idle ones
// read all 3,000,010 rows of a registry with none idle and ran into
// statement_timeout (5 s), so that registry could never be pruned. Here
// 100,000 registrations, none idle, and ten windows of 2,000 one after
// the other, as a prune takes them (past the five executions after which
// PostgreSQL may plan a prepared statement once for all parameters): the
// rows they read, by PostgreSQL's own counters, are about ten windows'
// worth, not the registry's.
func TestDeleteIdleReadsBoundedWindow(t *testing.T) {
	ctx := context.Background()
	dsn := pg.DB(t)
	s := open(t, dsn)
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, `INSERT INTO registrations (node, type, token, secret, registered, last_successful_push)
		SELECT md5(i::text), 'apns', md5('t' || i), md5('s' || i), now(), now() FROM generate_series(1, 100000) i`); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, `VACUUM ANALYZE registrations`); err != nil {
		t.Fatal(err)
	}
	read := func() int64 {
		var n int64
		if _, err := conn.Exec(ctx, `SELECT pg_stat_clear_snapshot()`); err != nil {
			t.Fatal(err)
		}
		if err := conn.QueryRow(ctx, `SELECT COALESCE(seq_tup_read, 0) + COALESCE(idx_tup_fetch, 0)
			FROM pg_stat_user_tables WHERE relname = 'registrations'`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	const window, windows = 2000, 10
	before := read()
	after := ""
	for i := range windows {
		removed, next, err := s.DeleteIdle(ctx, time.Now().Add(-180*24*time.Hour), "", after, window)
		if err != nil || len(removed) != 0 || next <= after {
			t.Fatalf("window %d after %q: %d removed, next %q, %v", i, after, len(removed), next, err)
		}
		after = next
	}
	// A backend adds what it read to the counters as it ends (an idle
	// one only after 10 s), all at once: close the store and wait until
	// the windows' reads are there.
	s.Close()
	var rows int64
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if rows = read() - before; rows >= window*windows {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the counters show %d rows read, fewer than the windows hold", rows)
		}
	}
	t.Logf("%d windows of %d read %d rows", windows, window, rows)
	if rows > 2*window*windows {
		t.Errorf("%d windows of %d read %d rows of the registry: a window's time grows with the registry, past statement_timeout on a large one", windows, window, rows)
	}
}
