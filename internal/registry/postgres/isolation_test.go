package postgres_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/push-appserver/push-appserver/internal/registry"
)

// The store's transactions are written for PostgreSQL's default
// isolation, read committed: a row locked FOR UPDATE is read as the
// writer before left it. A DBA's default_transaction_isolation of
// repeatable read or serializable on the database (or the role) must
// not make a registration, or a push outcome, that waited for another
// instance's write of the same device fail with a serialization failure
// (SQLSTATE 40001): the client would be answered an error, and the
// outcome wait for the next try.
func TestWritesAfterAnotherUnderStricterDefaultIsolation(t *testing.T) {
	ctx := context.Background()
	dsn := pg.DB(t)
	// Another instance's session, of before the DBA's change.
	c, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	setOnDB(t, dsn, "default_transaction_isolation = 'serializable'")
	s := open(t, dsn)
	r := registry.Registration{Node: "n1", Type: "a", Token: "t", Secret: "s", Registered: time.Now()}
	if _, err := register(s, r); err != nil {
		t.Fatal(err)
	}
	for _, w := range []struct {
		name  string
		write func() error
	}{
		{"renewal", func() error {
			r := r
			r.Registered = time.Now()
			_, err := register(s, r)
			return err
		}},
		{"push outcome", func() error {
			return s.UpdatePushStatus(ctx, []registry.PushStatus{{Node: "n1", Success: true, At: time.Now()}})
		}},
	} {
		// Another instance's write of the device, under way.
		tx, err := c.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tx.Exec(ctx, `UPDATE registrations SET renewed = now() WHERE node = 'n1'`); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- w.write() }()
		o, err := pgx.Connect(ctx, dsn)
		if err != nil {
			t.Fatal(err)
		}
		waitFor(t, "the "+w.name+" waiting for the other write's lock", func() bool {
			var n int
			if err := o.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()
				AND application_name = 'push-appserver' AND wait_event_type = 'Lock'`).Scan(&n); err != nil {
				t.Fatal(err)
			}
			return n > 0
		})
		o.Close(ctx)
		if err := tx.Commit(ctx); err != nil {
			t.Fatal(err)
		}
		if err := <-done; err != nil {
			t.Errorf("a %s after another instance's write of the device: %v", w.name, err)
		}
	}
}

// setOnDB sets setting (e.g. "idle_session_timeout = '500ms'") on the
// database dsn names, as a DBA would: for its sessions from then on.
func setOnDB(t *testing.T, dsn, setting string) {
	t.Helper()
	ctx := context.Background()
	c, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	if _, err := c.Exec(ctx, `ALTER DATABASE `+c.Config().Database+` SET `+setting); err != nil {
		t.Fatal(err)
	}
}
