package postgres_test

import (
	"context"
	"fmt"
	"io/fs"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/push-appserver/push-appserver/internal/registry/postgres"
)

// readsEveryRow matches a migration statement whose work grows with the
// registry: an index built on registrations, or an update of every row.
// On 10,000,000 registrations, building the token's hash index took 9 s.
var readsEveryRow = regexp.MustCompile(`(?is)^\s*(CREATE\s+(UNIQUE\s+)?INDEX\b.*\bON\s+registrations\b|UPDATE\s+registrations\b|INSERT\s+INTO\b.*\bFROM\s+registrations\b)`)

// TestMigrationsLetPushesReadWhileTheyScan guards a rolling upgrade of
// several instances on one registry: while the first upgraded instance
// migrates, the others still serve, and every push they cannot answer
// from their cache reads its registration. No migration may hold a lock
// that stops those reads (ACCESS EXCLUSIVE, as DROP INDEX and most of
// ALTER TABLE take, kept to the end of the migration's transaction)
// while it does work that grows with the registry: 006 dropped the
// token's index before building its hash index on every row, and on
// 10,000,000 registrations every read of registrations waited the 9 s
// of the build, so the other instances' uncached pushes failed with
// their statement timeout. Each migration's statements run here one by
// one in one transaction, as a migration runs, and before each that
// reads every row another connection must read a registration.
func TestMigrationsLetPushesReadWhileTheyScan(t *testing.T) {
	ctx := context.Background()
	dsn := pg.DB(t)
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	reader, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer reader.Close(ctx)
	if _, err := reader.Exec(ctx, `SET statement_timeout = '2s'`); err != nil {
		t.Fatal(err)
	}
	files, err := fs.Glob(postgres.Migrations(), "migrations/*.sql")
	if err != nil || len(files) == 0 {
		t.Fatalf("migrations: %v, %v", files, err)
	}
	checked := 0
	for _, f := range files {
		body, err := fs.ReadFile(postgres.Migrations(), f)
		if err != nil {
			t.Fatal(err)
		}
		var exists bool
		if err := conn.QueryRow(ctx, `SELECT to_regclass('registrations') IS NOT NULL`).Scan(&exists); err != nil {
			t.Fatal(err)
		}
		tx, err := conn.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, stmt := range statements(stripComments(string(body))) {
			if exists && readsEveryRow.MatchString(stripComments(stmt)) {
				checked++
				rctx, cancel := context.WithTimeout(ctx, 3*time.Second)
				var n int
				err := reader.QueryRow(rctx, `SELECT count(*) FROM registrations WHERE node = 'n'`).Scan(&n)
				cancel()
				if err != nil {
					t.Errorf("%s: a push's read of registrations, before %q: %v; the migration holds it up while it reads every row",
						f, firstLine(stmt), err)
				}
			}
			if _, err := tx.Exec(ctx, stmt); err != nil {
				t.Fatalf("%s: %q: %v", f, firstLine(stmt), err)
			}
		}
		if err := tx.Commit(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if checked == 0 {
		t.Fatal("no migration statement read every row: the pattern matches nothing")
	}
}

// statements splits a migration, its comments stripped, into its
// statements at the semicolons outside dollar-quoted bodies.
func statements(body string) []string {
	var out []string
	var cur strings.Builder
	quoted := false
	for i := 0; i < len(body); i++ {
		if strings.HasPrefix(body[i:], "$$") {
			quoted = !quoted
			cur.WriteString("$$")
			i++
			continue
		}
		if body[i] == ';' && !quoted {
			if s := strings.TrimSpace(stripComments(cur.String())); s != "" {
				out = append(out, cur.String())
			}
			cur.Reset()
			continue
		}
		cur.WriteByte(body[i])
	}
	if s := strings.TrimSpace(stripComments(cur.String())); s != "" {
		out = append(out, cur.String())
	}
	return out
}

// stripComments drops the lines that are -- comments (the migrations
// put a comment on lines of its own).
func stripComments(s string) string {
	var b strings.Builder
	for _, line := range strings.Split(s, "\n") {
		if strings.HasPrefix(strings.TrimSpace(line), "--") {
			continue
		}
		b.WriteString(line)
		b.WriteByte('\n')
	}
	return b.String()
}

func firstLine(stmt string) string {
	s := strings.TrimSpace(stripComments(stmt))
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	return fmt.Sprint(s)
}
