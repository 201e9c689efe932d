package postgres_test

import (
	"context"
	"io/fs"
	"log/slog"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/push-appserver/push-appserver/internal/registry/postgres"
)

// TestMigrationBuildsNoIndexItCannotKeep guards migration 006 behind a
// long reader of registrations (pg_dump, an open psql transaction): its
// DROP INDEX needs ACCESS EXCLUSIVE, which the reader holds off, and the
// migration is tried again every two seconds, each try rolled back. It
// built the token's hash index before asking for that lock, so each try
// read every registration again (9 s on 10,000,000) holding a SHARE
// lock that stops every registration's write, then threw the index
// away: for as long as the reader ran, writes were held up most of the
// time and the database rebuilt the index every few seconds. The lock is
// to be known available before the index is built.
func TestMigrationBuildsNoIndexItCannotKeep(t *testing.T) {
	ctx := context.Background()
	dsn := pg.DB(t)
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	// The schema as version 5 left it, as the runner applies it.
	files, err := fs.Glob(postgres.Migrations(), "migrations/*.sql")
	if err != nil || len(files) < 6 {
		t.Fatalf("migrations: %v, %v", files, err)
	}
	if _, err := conn.Exec(ctx, `CREATE TABLE schema_version (version INTEGER NOT NULL); INSERT INTO schema_version VALUES (5)`); err != nil {
		t.Fatal(err)
	}
	for _, f := range files[:5] {
		body, err := fs.ReadFile(postgres.Migrations(), f)
		if err != nil {
			t.Fatal(err)
		}
		if err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
			_, err := tx.Exec(ctx, string(body))
			return err
		}); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
	}
	// Every index build counted, rolled back or not.
	if _, err := conn.Exec(ctx, `CREATE SEQUENCE index_builds;
		CREATE FUNCTION count_index_build() RETURNS event_trigger LANGUAGE plpgsql AS $$ BEGIN PERFORM nextval('index_builds'); END $$;
		CREATE EVENT TRIGGER index_builds ON ddl_command_start WHEN TAG IN ('CREATE INDEX') EXECUTE FUNCTION count_index_build()`); err != nil {
		t.Fatal(err)
	}

	read := readingRegistrations(t, ctx, dsn)

	mctx, cancel := context.WithCancel(ctx)
	opened := make(chan error, 1)
	go func() {
		s, err := postgres.Open(mctx, dsn, postgres.Options{Logger: slog.New(slog.DiscardHandler)})
		if err == nil {
			s.Close()
		}
		opened <- err
	}()
	defer func() {
		cancel()
		<-opened
	}()
	waitFor(t, "the migration's lock request on registrations queued", func() bool {
		var waiting bool
		err := conn.QueryRow(ctx, `SELECT EXISTS (SELECT FROM pg_locks
			WHERE database = (SELECT oid FROM pg_database WHERE datname = current_database())
				AND relation = 'registrations'::regclass AND mode = 'AccessExclusiveLock' AND NOT granted)`).Scan(&waiting)
		if err != nil {
			t.Fatal(err)
		}
		return waiting
	})
	var builds int64
	var called bool
	if err := conn.QueryRow(ctx, `SELECT last_value, is_called FROM index_builds`).Scan(&builds, &called); err != nil {
		t.Fatal(err)
	}
	if !called {
		builds = 0
	}
	if builds != 0 {
		t.Fatalf("migration 006 built %d index(es) on registrations before it had the lock its DROP INDEX waits for: behind a long reader every try rebuilds the index, stopping every write meanwhile, and rolls it back", builds)
	}

	// Once the reader is done, the migration goes through.
	if err := read.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-opened:
		opened <- err
		if err != nil {
			t.Fatalf("migrating once the reader was done: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("migration not done 30 s after the reader was")
	}
	var version int
	var hashIndex bool
	if err := conn.QueryRow(ctx, `SELECT version, to_regclass('registrations_token') IS NOT NULL FROM schema_version`).Scan(&version, &hashIndex); err != nil {
		t.Fatal(err)
	}
	if version != len(files) || !hashIndex {
		t.Fatalf("schema version %d, hash index %v; want %d, true", version, hashIndex, len(files))
	}
}
