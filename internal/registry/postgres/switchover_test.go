package postgres_test

import (
	"context"
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/push-appserver/push-appserver/internal/registry"
	"github.com/push-appserver/push-appserver/internal/registry/postgres"
	"github.com/push-appserver/push-appserver/internal/testutil/pgtest"
)

// switchover returns a DSN naming PostgreSQL A (the package's server) and
// B (a second one, stopped when the test ends, with the schema, as a
// promoted standby has it) with target_session_attrs=read-write, B's own
// DSN, and fence, which makes A read-only as a planned switchover fences
// the old primary, which stays up.
func switchover(t *testing.T) (multi, dsnB string, fence func()) {
	ctx := context.Background()
	dsnA := pg.DB(t)
	pg2 := pgtest.New()
	t.Cleanup(pg2.Stop)
	other := pg2.DB(t)
	ua, err := url.Parse(dsnA)
	if err != nil {
		t.Fatal(err)
	}
	ub, err := url.Parse(other)
	if err != nil {
		t.Fatal(err)
	}
	// The same database name on both, as a standby has it.
	dbName := strings.TrimPrefix(ua.Path, "/")
	if ub.Path != ua.Path {
		c2, err := pgx.Connect(ctx, other)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c2.Exec(ctx, "CREATE DATABASE "+dbName); err != nil {
			t.Fatal(err)
		}
		c2.Close(ctx)
	}
	ub.Path = "/" + dbName
	open(t, ub.String())
	multi = fmt.Sprintf("postgres://postgres@%s,%s/%s?sslmode=disable&target_session_attrs=read-write", ua.Host, ub.Host, dbName)
	fence = func() {
		setReadOnly(t, dsnA, "on")
		t.Cleanup(func() { setReadOnly(t, dsnA+"&default_transaction_read_only=off", "off") })
	}
	return multi, ub.String(), fence
}

// setReadOnly sets the server's default_transaction_read_only, which
// its sessions take up at their next statement, and returns once a new
// connection has it too.
func setReadOnly(t *testing.T, dsn, value string) {
	t.Helper()
	ctx := context.Background()
	c, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	for _, q := range []string{`ALTER SYSTEM SET default_transaction_read_only = ` + value, `SELECT pg_reload_conf()`} {
		if _, err := c.Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	// Not dsn, whose parameters may say otherwise.
	plain, _, _ := strings.Cut(dsn, "&default_transaction_read_only=")
	waitFor(t, "a new connection with transaction_read_only = "+value, func() bool {
		n, err := pgx.Connect(ctx, plain)
		if err != nil {
			t.Fatal(err)
		}
		defer n.Close(ctx)
		var ro string
		if err := n.QueryRow(ctx, `SELECT current_setting('transaction_read_only')`).Scan(&ro); err != nil {
			t.Fatal(err)
		}
		return ro == value
	})
}

// After a switchover, the store's writes go to the new primary: the
// pool's connections to the fenced old one do not stay until their
// lifetime ends.
func TestSwitchoverMovesWrites(t *testing.T) {
	multi, _, fence := switchover(t)
	s := open(t, multi)
	if _, err := register(s, registry.Registration{Node: "before", Type: "a", Token: "t", Secret: "s", Registered: time.Now()}); err != nil {
		t.Fatal(err)
	}
	fence()
	var lastErr error
	var fails int
	deadline := time.Now().Add(15 * time.Second)
	for i := 0; time.Now().Before(deadline); i++ {
		_, lastErr = register(s, registry.Registration{Node: fmt.Sprintf("after%d", i), Type: "a", Token: "t", Secret: "s", Registered: time.Now()})
		if lastErr == nil {
			t.Logf("a registration stored after %d failures", fails)
			return
		}
		fails++
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("15 s after A went read-only, with writable B in the DSN, registrations still fail (%d in a row): %v", fails, lastErr)
}

// After a switchover, the change feed hears the writes made on the new
// primary (by an instance started since), within a few heartbeats.
func TestSwitchoverMovesChangeFeed(t *testing.T) {
	multi, dsnB, fence := switchover(t)
	s := open(t, multi)
	postgres.SetProbes(s, 300*time.Millisecond, time.Second)
	ctx, cancel := context.WithCancel(context.Background())
	changed := make(chan string, 64)
	live := make(chan bool, 64)
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.Follow(ctx, func(n string) { changed <- n }, func(l bool) { live <- l })
	}()
	defer func() { cancel(); <-done }()
	select {
	case <-live:
	case <-time.After(10 * time.Second):
		t.Fatal("feed never live")
	}
	fence()
	w := open(t, dsnB) // an instance started after the switchover
	deadline := time.After(10 * time.Second)
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	for i := 0; ; i++ {
		select {
		case n := <-changed:
			if strings.HasPrefix(n, "onB") {
				return
			}
		case <-tick.C:
			if _, err := register(w, registry.Registration{Node: fmt.Sprintf("onB%d", i), Type: "a", Token: "t", Secret: "s", Registered: time.Now()}); err != nil {
				t.Fatal(err)
			}
		case <-deadline:
			t.Fatal("10 s after the switchover the change feed still hears nothing of the writes on the new primary: it listens on the fenced old one")
		}
	}
}

// A change feed that starts on a read-only server, with no writable one
// to go to, stays live there: only a server that turns read-only under
// the feed makes it listen again.
func TestChangeFeedStaysOnReadOnlyServer(t *testing.T) {
	dsn := pg.DB(t)
	s := open(t, dsn)
	postgres.SetProbes(s, 300*time.Millisecond, 5*time.Second)
	// For the database's new connections, the feed's among them.
	setOnDB(t, dsn, "default_transaction_read_only = on")
	// Five heartbeats, each probed.
	feedStaysLive(t, s, 1500*time.Millisecond, "on a read-only server")
}

// In a switchover, between the fence of the old primary and the
// promotion of the new one, no server takes writes but both answer
// reads. A write refused meanwhile must not cost the reads: the pool's
// connections to the fenced primary serve them until a server takes
// writes, where target_session_attrs=read-write makes no new connection
// at all. Once the new primary takes writes, the store writes there.
func TestReadsGoOnWhileNoServerTakesWrites(t *testing.T) {
	multi, dsnB, fence := switchover(t)
	s := open(t, multi)
	want, err := register(s, registry.Registration{Node: "n1", Type: "a", Token: "t", Secret: "s", Registered: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	// B is a standby not promoted yet: read-only too.
	setReadOnly(t, dsnB, "on")
	promoted := false
	t.Cleanup(func() {
		if !promoted {
			setReadOnly(t, dsnB+"&default_transaction_read_only=off", "off")
		}
	})
	fence()
	if _, err := register(s, registry.Registration{Node: "n2", Type: "a", Token: "t", Secret: "s", Registered: time.Now()}); err == nil {
		t.Fatal("a registration stored while no server takes writes")
	}
	// The refused write's consequences settle within a few tries.
	for i := range 10 {
		r, err := s.Get(context.Background(), "n1")
		if err != nil {
			t.Fatalf("read %d after a write was refused, while both servers answer reads: %v", i, err)
		}
		if r.Secret != want.Secret {
			t.Fatalf("read %+v, want %+v", r, want)
		}
		time.Sleep(100 * time.Millisecond)
	}
	// B promoted: writes go there.
	setReadOnly(t, dsnB+"&default_transaction_read_only=off", "off")
	promoted = true
	var lastErr error
	for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if _, lastErr = register(s, registry.Registration{Node: "n3", Type: "a", Token: "t", Secret: "s", Registered: time.Now()}); lastErr == nil {
			return
		}
	}
	t.Fatalf("15 s after B took writes, registrations still fail: %v", lastErr)
}
