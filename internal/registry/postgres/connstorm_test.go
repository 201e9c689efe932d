package postgres_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/push-appserver/push-appserver/internal/registry"
	"github.com/push-appserver/push-appserver/internal/registry/postgres"
)

// TestRefusedConnectionNotRetried guards a database that refuses new
// sessions (too many clients already, starting up or shutting down in
// a failover, a wrong password, a database closed to connections): its
// refusal is a FATAL error, as a session ended under the pool is, but
// no session was lost, and another connection made at once is refused
// alike. A read retried on it made a new connection for each session
// the pool may hold, all at once, for every push whose registration
// was not cached: a storm of connections to a server already short of
// them. A read makes at most the connection it needs, and one more
// when the session it was handed was found gone.
func TestRefusedConnectionNotRetried(t *testing.T) {
	ctx := context.Background()
	dsn := pg.DB(t)
	var connects atomic.Int64
	s, err := postgres.Open(ctx, dsn, postgres.Options{MaxConns: 16, Password: func() (string, error) {
		connects.Add(1)
		return "", nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	if _, err := register(s, registry.Registration{Node: "n1", Type: "a", Token: "t", Secret: "s", Registered: time.Now()}); err != nil {
		t.Fatal(err)
	}
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		t.Fatal(err)
	}
	db := cfg.Database
	cfg.Database = "postgres"
	admin, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(ctx)
	if _, err := admin.Exec(ctx, `ALTER DATABASE `+db+` ALLOW_CONNECTIONS false`); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { admin.Exec(context.Background(), `ALTER DATABASE `+db+` ALLOW_CONNECTIONS true`) })
	pg.Terminate(t, dsn, "push-appserver")
	waitFor(t, "the pool's sessions ended", func() bool {
		var left int
		if err := admin.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND application_name = 'push-appserver'`, db).Scan(&left); err != nil {
			t.Fatal(err)
		}
		return left == 0
	})
	before := connects.Load()
	if _, err := s.GetPushTarget(ctx, "n1"); err == nil {
		t.Fatal("read succeeded on a database refusing connections")
	}
	if n := connects.Load() - before; n > 2 {
		t.Fatalf("one read on a database refusing new sessions made %d connection attempts, want at most 2", n)
	}
}
