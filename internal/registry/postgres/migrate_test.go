package postgres_test

import (
	"context"
	"fmt"
	"io/fs"
	"log/slog"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/push-appserver/push-appserver/internal/registry"
	"github.com/push-appserver/push-appserver/internal/registry/postgres"
	"github.com/push-appserver/push-appserver/internal/testutil/logbuf"
)

// A migration that locks a table while a long reader (pg_dump, an open
// psql transaction) holds it waits for the reader, says so in the log,
// and meanwhile the other instances' statements on that table do not
// queue behind its lock request until their statement_timeout: in a
// rolling upgrade the instances still serving go on serving.
func TestMigrationWaitingForALockHoldsNoOneUp(t *testing.T) {
	ctx := context.Background()
	dsn := pg.DB(t)
	var log logbuf.Buffer
	upgrading, err := postgres.Open(ctx, dsn, postgres.Options{Logger: slog.New(slog.NewTextHandler(&log, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer upgrading.Close()
	serving, err := postgres.Open(ctx, dsn, postgres.Options{StatementTimeout: 3 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer serving.Close()

	read := readingRegistrations(t, ctx, dsn)

	// The shipped migrations and one after them that needs ACCESS
	// EXCLUSIVE on registrations, as ADD COLUMN does.
	fsys := fstest.MapFS{}
	shipped, err := fs.Glob(postgres.Migrations(), "migrations/*.sql")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range shipped {
		body, err := fs.ReadFile(postgres.Migrations(), f)
		if err != nil {
			t.Fatal(err)
		}
		fsys[f] = &fstest.MapFile{Data: body}
	}
	next := len(shipped) + 1
	fsys[fmt.Sprintf("migrations/%03d_probe.sql", next)] = &fstest.MapFile{Data: []byte(`ALTER TABLE registrations ADD COLUMN probe INT`)}

	migrated := make(chan error, 1)
	mctx, cancel := context.WithCancel(ctx)
	defer func() {
		cancel()
		<-migrated
	}()
	go func() { migrated <- postgres.MigrateFrom(mctx, upgrading, fsys) }()

	watch, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer watch.Close(ctx)
	waitFor(t, "the migration's lock request on registrations queued", func() bool {
		var waiting bool
		err := watch.QueryRow(ctx, `SELECT EXISTS (SELECT FROM pg_locks
			WHERE database = (SELECT oid FROM pg_database WHERE datname = current_database())
				AND relation = 'registrations'::regclass AND mode = 'AccessExclusiveLock' AND NOT granted)`).Scan(&waiting)
		if err != nil {
			t.Fatal(err)
		}
		return waiting
	})

	start := time.Now()
	if _, err := register(serving, registry.Registration{Node: "n1", Type: "a", Token: "t", Secret: "s", Registered: time.Now()}); err != nil {
		t.Fatalf("register while a migration waits for its lock: %v", err)
	}
	if r, err := serving.Get(ctx, "n1"); err != nil || r.Token != "t" {
		t.Fatalf("get while a migration waits for its lock: %+v, %v", r, err)
	}
	t.Logf("register and get while the migration waited: %v", time.Since(start))
	waitFor(t, "the migration's warning logged", func() bool {
		return strings.Contains(log.String(), "level=WARN") && strings.Contains(log.String(), fmt.Sprintf("migration=%d", next))
	})
	select {
	case err := <-migrated:
		t.Fatalf("migration ended while the reader held its table: %v", err)
	default:
	}

	if err := read.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-migrated:
		if err != nil {
			t.Fatalf("migration after the reader was done: %v", err)
		}
		migrated <- nil // for the deferred wait
	case <-time.After(30 * time.Second):
		t.Fatal("migration not done 30 s after the reader was")
	}
	var version int
	var column bool
	if err := watch.QueryRow(ctx, `SELECT version, EXISTS (SELECT FROM information_schema.columns
		WHERE table_name = 'registrations' AND column_name = 'probe') FROM schema_version`).Scan(&version, &column); err != nil {
		t.Fatal(err)
	}
	if version != next || !column {
		t.Fatalf("schema version %d, column probe present %v; want %d, true", version, column, next)
	}
}

// An instance may run as a role that uses the tables but may not create
// in the schema, once the schema's owner migrated it: with nothing to
// migrate, it creates nothing. The role is the cluster's, its rights and
// the revoked CREATE only the test's database's.
func TestOpenAsRoleWithoutCreate(t *testing.T) {
	ctx := context.Background()
	dsn := pg.DB(t)
	open(t, dsn) // migrated by the owner
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	const role = "push_without_create"
	for _, q := range []string{
		`CREATE ROLE ` + role + ` LOGIN`,
		`REVOKE CREATE ON SCHEMA public FROM PUBLIC`,
		`GRANT USAGE ON SCHEMA public TO ` + role,
		`GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO ` + role,
		`GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO ` + role,
	} {
		if _, err := conn.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	// Before the database goes, so that the role has nothing left to
	// keep it.
	t.Cleanup(func() {
		c, err := pgx.Connect(ctx, dsn)
		if err != nil {
			t.Error(err)
			return
		}
		defer c.Close(ctx)
		if _, err := c.Exec(ctx, `DROP OWNED BY `+role+`; DROP ROLE `+role); err != nil {
			t.Error(err)
		}
	})
	s, err := postgres.Open(ctx, strings.Replace(dsn, "postgres@", role+"@", 1), postgres.Options{})
	if err != nil {
		t.Fatalf("open as a role that may use but not create tables, schema up to date: %v", err)
	}
	defer s.Close()
	if _, err := register(s, registry.Registration{Node: "n", Type: "a", Token: "t", Secret: "s", Registered: time.Now()}); err != nil {
		t.Fatal(err)
	}
}

// waitFor polls cond until it holds, failing the test after 30 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 30 s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// readingRegistrations opens a transaction that has read the
// registrations and holds their table until it ends, as a long reader
// does (pg_dump, a report): what a migration must wait for. Rolled back
// when the test ends, unless committed first.
func readingRegistrations(t *testing.T, ctx context.Context, dsn string) pgx.Tx {
	t.Helper()
	reader, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { reader.Close(context.Background()) })
	read, err := reader.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { read.Rollback(context.Background()) })
	if _, err := read.Exec(ctx, `SELECT count(*) FROM registrations`); err != nil {
		t.Fatal(err)
	}
	return read
}
