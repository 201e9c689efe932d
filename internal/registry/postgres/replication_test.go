package postgres_test

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/push-appserver/push-appserver/internal/registry/postgres"
)

// TestReplicationRisks guards what the settings of the server we write
// to are judged to risk: a registration answered OK is lost by a crash
// with synchronous_commit off, and by a failover when standbys stream
// but commits wait for none of them; and a commit waits for a named
// standby that does not stream. Settings that keep every registration
// answered OK draw no warning, and a standby (which takes no writes)
// none either.
func TestReplicationRisks(t *testing.T) {
	for _, tt := range []struct {
		name       string
		r          postgres.Replication
		replicated int
		risks      []string // a part of each warning, in order
	}{
		{"alone, on", postgres.Replication{SyncCommit: "on"}, -1, nil},
		{"alone, local", postgres.Replication{SyncCommit: "local"}, -1, nil},
		{"alone, off", postgres.Replication{SyncCommit: "off", SyncCommitSource: "database"}, -1,
			[]string{"synchronous_commit is off for our sessions (set by database): "}},
		{"asynchronous standby", postgres.Replication{Standbys: 2, SyncStandbys: 0, SyncCommit: "on"}, 0,
			[]string{"2 standby(s) stream from this PostgreSQL server, but commits do not wait for any (synchronous_standby_names is empty)"}},
		{"asynchronous standby, stats not visible", postgres.Replication{Standbys: 1, SyncStandbys: -1, SyncCommit: "on"}, 0,
			[]string{"1 standby(s) stream"}},
		{"synchronous standby", postgres.Replication{Standbys: 1, SyncStandbys: 1, StandbyNames: "*", SyncCommit: "on"}, 1, nil},
		{"synchronous standby, remote_write", postgres.Replication{Standbys: 1, SyncStandbys: 1, StandbyNames: "*", SyncCommit: "remote_write"}, 1, nil},
		{"synchronous standby, remote_apply, stats not visible", postgres.Replication{Standbys: 1, SyncStandbys: -1, StandbyNames: "*", SyncCommit: "remote_apply"}, 1, nil},
		{"synchronous standby, local for us", postgres.Replication{Standbys: 1, SyncStandbys: 1, StandbyNames: "*", SyncCommit: "local", SyncCommitSource: "user"}, 0,
			[]string{"commits do not wait for any (synchronous_commit is local for our sessions (set by user))"}},
		{"synchronous standby, off for us", postgres.Replication{Standbys: 1, SyncStandbys: 1, StandbyNames: "*", SyncCommit: "off", SyncCommitSource: "client"}, 0,
			[]string{"synchronous_commit is off", "commits do not wait for any (synchronous_commit is off for our sessions (set by client))"}},
		{"named standby not streaming", postgres.Replication{Standbys: 1, SyncStandbys: 0, StandbyNames: "nosuch", SyncCommit: "on"}, 0,
			[]string{`synchronous_standby_names ("nosuch") names no standby that streams now`}},
		{"named standby, none streams", postgres.Replication{StandbyNames: "nosuch", SyncCommit: "on"}, 0,
			[]string{"names no standby that streams now"}},
		{"itself a standby", postgres.Replication{InRecovery: true, Standbys: 1, SyncCommit: "off"}, -1, nil},
		{"two synchronous standbys wanted, one streams", postgres.Replication{Standbys: 1, SyncStandbys: 1, StandbyNames: "ANY 2 (*)", SyncCommit: "on"}, 0,
			[]string{`synchronous_standby_names ("ANY 2 (*)") has every commit wait for 2 standbys, and 1 of those it names streams now`}},
		{"first two wanted, one streams", postgres.Replication{Standbys: 2, SyncStandbys: 1, StandbyNames: "FIRST 2 (a, b)", SyncCommit: "on"}, 0,
			[]string{"wait for 2 standbys, and 1 of those it names streams now"}},
		{"two wanted, one streams, stats not visible", postgres.Replication{Standbys: 1, SyncStandbys: -1, StandbyNames: "2 (a, b)", SyncCommit: "on"}, 0,
			[]string{"wait for 2 standbys, and at most 1 of those it names streams now"}},
		{"two wanted, two stream", postgres.Replication{Standbys: 2, SyncStandbys: 2, StandbyNames: "any 2 (a, b, c)", SyncCommit: "on"}, 1, nil},
		{"two wanted, two stream, stats not visible", postgres.Replication{Standbys: 2, SyncStandbys: -1, StandbyNames: "ANY 2 (*)", SyncCommit: "on"}, 1, nil},
		{"a list of names, one streams", postgres.Replication{Standbys: 1, SyncStandbys: 1, StandbyNames: "a, b", SyncCommit: "on"}, 1, nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.r.Replicated(); got != tt.replicated {
				t.Errorf("Replicated() = %d, want %d", got, tt.replicated)
			}
			risks := tt.r.Risks()
			if len(risks) != len(tt.risks) {
				t.Fatalf("risks %q, want %d", risks, len(tt.risks))
			}
			for i, want := range tt.risks {
				if !strings.Contains(risks[i], want) {
					t.Errorf("risk %q does not say %q", risks[i], want)
				}
			}
		})
	}
}

// TestReplicationOfServer guards what a store reads of a real server,
// in the steps an operator's settings take: the server's
// synchronous_commit off (the test server's, from its command line), on
// for the database as a DBA sets it, off there but on in the DSN (our
// sessions' own, which the DBA's does not overrule); then a streaming
// standby with commits that wait for none, as a role without pg_monitor
// sees it too; then synchronous_standby_names set, with
// synchronous_commit local in the DSN, and with the name of a standby
// that does not stream.
func TestReplicationOfServer(t *testing.T) {
	ctx := context.Background()
	dsn := pg.DB(t)
	open(t, dsn).Close() // the schema, once
	plain := roleDSN(t, dsn)
	read := func(t *testing.T, dsn string) postgres.Replication {
		t.Helper()
		s := open(t, dsn)
		defer s.Close()
		r, err := s.Replication(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	for _, step := range []struct {
		name       string
		setup      func(t *testing.T)
		dsn        func() string
		standbys   int
		sync       int // standbys a commit waits for, -1 not visible
		replicated int
		risks      []string // a part of each warning, in order
	}{
		{"the server's off", nil, nil, 0, 0, -1, []string{"synchronous_commit is off for our sessions (set by command line)"}},
		{"on for the database", func(t *testing.T) { setOnDB(t, dsn, "synchronous_commit = on") }, nil, 0, 0, -1, nil},
		{"off for the database, on in the DSN", func(t *testing.T) { setOnDB(t, dsn, "synchronous_commit = off") }, func() string { return dsn + "&synchronous_commit=on" }, 0, 0, -1, nil},
		{"an asynchronous standby", func(t *testing.T) {
			setOnDB(t, dsn, "synchronous_commit = on")
			pg.Standby(t)
		}, nil, 1, 0, 0, []string{"1 standby(s) stream from this PostgreSQL server, but commits do not wait for any (synchronous_standby_names is empty)"}},
		{"an asynchronous standby, seen by a role without pg_monitor", nil, func() string { return plain }, 1, -1, 0, []string{"1 standby(s) stream"}},
		{"a synchronous standby", func(t *testing.T) { pg.SyncStandbys(t, "ANY 1 (*)", 1) }, nil, 1, 1, 1, nil},
		{"a synchronous standby, seen by a role without pg_monitor", nil, func() string { return plain }, 1, -1, 1, nil},
		{"a synchronous standby, local in the DSN", nil, func() string { return dsn + "&synchronous_commit=local" }, 1, 1, 0, []string{"(synchronous_commit is local for our sessions (set by client))"}},
		{"a standby named that does not stream", func(t *testing.T) { pg.SyncStandbys(t, "nosuch", 0) }, nil, 1, 0, 0, []string{`synchronous_standby_names ("nosuch") names no standby that streams now`}},
	} {
		// Steps, not subtests: each builds on the one before, and the
		// standby and settings last to the end of the test.
		if step.setup != nil {
			step.setup(t)
		}
		d := dsn
		if step.dsn != nil {
			d = step.dsn()
		}
		r := read(t, d)
		if r.Standbys != step.standbys || r.SyncStandbys != step.sync || r.Replicated() != step.replicated {
			t.Errorf("%s: %+v: replicated %d; want %d standby(s), %d synchronous, replicated %d", step.name, r, r.Replicated(), step.standbys, step.sync, step.replicated)
		}
		risks := r.Risks()
		if len(risks) != len(step.risks) {
			t.Errorf("%s: risks %q, want %d", step.name, risks, len(step.risks))
			continue
		}
		for i, want := range step.risks {
			if !strings.Contains(risks[i], want) {
				t.Errorf("%s: risk %q does not say %q", step.name, risks[i], want)
			}
		}
	}
}

// roleDSN is dsn as a role of the test's own, with the rights an
// instance needs to open its store on a migrated schema and no more:
// no pg_monitor, so that pg_stat_replication hides its columns but the
// pids.
func roleDSN(t *testing.T, dsn string) string {
	t.Helper()
	ctx := context.Background()
	c, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	role := fmt.Sprintf("plain_%d", os.Getpid())
	if _, err := c.Exec(ctx, `CREATE ROLE `+role+` LOGIN; GRANT SELECT ON schema_version TO `+role); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c, err := pgx.Connect(ctx, dsn)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close(ctx)
		if _, err := c.Exec(ctx, `DROP OWNED BY `+role+`; DROP ROLE `+role); err != nil {
			t.Error(err)
		}
	})
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.User(role)
	return u.String()
}

// TestReplicationTooFewSyncStandbys guards the judgement of a
// synchronous_standby_names that has commits wait for more standbys than
// stream (ANY 2 with one standby left, as after one of two fails): every
// commit that writes waits until its statement's bound ends it, so
// registrations fail, though one named standby streams. That is said as
// the named standby that does not stream is, and the gauge says commits
// are not replicated, rather than 1 and nothing.
func TestReplicationTooFewSyncStandbys(t *testing.T) {
	ctx := context.Background()
	dsn := pg.DB(t)
	// The test server's own is off, from its command line.
	setOnDB(t, dsn, "synchronous_commit = on")
	s := open(t, dsn)
	defer s.Close()
	pg.Standby(t)
	pg.SyncStandbys(t, "ANY 2 (*)", 1)
	// What the warning is to say: a commit waits for a second standby.
	c, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	wctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	_, err = c.Exec(wctx, `CREATE TABLE waits_for_two (i int)`)
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) && !pgconn.Timeout(err) {
		t.Fatalf("a commit with one of two synchronous standbys streaming: %v, want it to wait", err)
	}
	r, err := s.Replication(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if r.Replicated() != 0 {
		t.Errorf("%+v: replicated %d, want 0: no commit returns", r, r.Replicated())
	}
	risks := r.Risks()
	if len(risks) != 1 || !strings.Contains(risks[0], "has every commit wait for 2 standbys, and 1 of those it names streams now") {
		t.Errorf("risks %q, want one saying that commits wait for a second standby", risks)
	}
}
