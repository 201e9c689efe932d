package main

import (
	"bytes"
	"context"
	"os"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/push-appserver/push-appserver/internal/registry/postgres"
)

// TestCheckConfigSlowCountOnPostgresWarns guards a reload (the unit runs
// check-config before it) on a PostgreSQL registry whose count of the
// registrations by type runs into the statement timeout, 5 s by default
// and so before check-config's own 10 s for the count: a registry too
// large to count so quickly, or one whose table a migration or a
// VACUUM FULL holds locked. The count is advice only, and its running
// out of time is a warning, however it ran out; a valid configuration
// must pass.
func TestCheckConfigSlowCountOnPostgresWarns(t *testing.T) {
	ctx := context.Background()
	dsn := pg.DB(t)
	t.Setenv("PUSH_APPSERVER_DSN", dsn)
	store, err := postgres.Open(ctx, dsn, postgres.Options{})
	if err != nil {
		t.Fatal(err)
	}
	store.Close()
	_, config := postgresConfig(t)
	f, err := os.OpenFile(config, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString("statement_timeout = \"1s\"\n"); err != nil {
		t.Fatal(err)
	}
	f.Close()

	// The count waits on the lock until the statement's timeout.
	c, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	tx, err := c.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, `LOCK TABLE registrations IN ACCESS EXCLUSIVE MODE`); err != nil {
		t.Fatal(err)
	}

	var out, errb bytes.Buffer
	code := run([]string{"check-config", "-config", config}, &out, &errb)
	if code != 0 {
		t.Fatalf("check-config with a count that ran out of time: exit %d, want 0 (a warning)\n%s%s", code, out.String(), errb.String())
	}
	if all := out.String() + errb.String(); !strings.Contains(all, "registry not checked") {
		t.Fatalf("check-config with a count that ran out of time says nothing of it:\n%s", all)
	}
}
