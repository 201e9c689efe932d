package postgres_test

import (
	"context"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/push-appserver/push-appserver/internal/registry"
	"github.com/push-appserver/push-appserver/internal/registry/postgres"
	"github.com/push-appserver/push-appserver/internal/testutil/netfreeze"
)

// A LISTEN connection that goes silent without closing, as after a
// failover that moved the server's address, is found by the feed's next
// probe: the feed goes down and comes back on a new connection, which
// hears the others' writes again.
func TestFeedProbesSilentConnection(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	direct := pg.DB(t)
	u, err := url.Parse(direct)
	if err != nil {
		t.Fatal(err)
	}
	f := netfreeze.Start(t, u.Host)
	u.Host = f.Addr()
	s, err := postgres.Open(ctx, u.String(), postgres.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	defer f.Close()
	postgres.SetProbes(s, 300*time.Millisecond, time.Second)
	live := make(chan bool, 16)
	changed := make(chan string, 64)
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.Follow(ctx, func(n string) { changed <- n }, func(l bool) { live <- l })
	}()
	defer func() { cancel(); <-done }()
	expect := func(want bool, within time.Duration) {
		t.Helper()
		select {
		case l := <-live:
			if l != want {
				t.Fatalf("live(%v), want live(%v)", l, want)
			}
		case <-time.After(within):
			t.Fatalf("no live(%v) within %v", want, within)
		}
	}
	expect(true, 10*time.Second)
	// Quiet for several heartbeats: every probe comes back, and the
	// connection, whose waits for a notification timed out, still hears
	// a change.
	select {
	case l := <-live:
		t.Fatalf("live(%v) while the connection is well", l)
	case <-time.After(time.Second):
	}
	// The writer follows too, so it waits for this feed's ack, which
	// goes out on the connection whose waits timed out.
	writer := open(t, direct)
	wlive := make(chan bool, 4)
	go writer.Follow(ctx, func(string) {}, func(l bool) { wlive <- l })
	if !<-wlive {
		t.Fatal("the writer's feed not live")
	}
	wrote := time.Now()
	if _, err := register(writer, registry.Registration{Node: "n0", Type: "a", Token: "t", Secret: "s", Registered: time.Now()}); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(wrote); d > 500*time.Millisecond {
		t.Errorf("a write took %v: this feed's ack did not come after its heartbeats", d)
	}
	select {
	case n := <-changed:
		if n != "n0" {
			t.Fatalf("changed %q, want n0", n)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("another instance's write not heard after the heartbeats")
	}
	f.Freeze()
	start := time.Now()
	expect(false, 5*time.Second)
	t.Logf("silent connection found after %v", time.Since(start).Round(time.Millisecond))
	expect(true, 10*time.Second)
	if !heardOtherWrite(t, direct, changed, "n1") {
		t.Fatal("another instance's write not heard on the new connection")
	}
}

// A pool whose connections all wait for a locked table says nothing of
// the LISTEN connection, which is well: the feed must not be given up
// (and the caches bypassed) because a probe found no free pooled
// connection in time.
func TestFeedSurvivesBusyPool(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	dsn := pg.DB(t)
	s, err := postgres.Open(ctx, dsn, postgres.Options{MaxConns: 2, StatementTimeout: 3 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	postgres.SetProbes(s, 300*time.Millisecond, time.Second)
	live := make(chan bool, 16)
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.Follow(ctx, func(string) {}, func(l bool) { live <- l })
	}()
	defer func() { cancel(); <-done }()
	if l := <-live; !l {
		t.Fatal("not live")
	}

	locker, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer locker.Close(context.Background())
	tx, err := locker.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, `LOCK TABLE registrations IN ACCESS EXCLUSIVE MODE`); err != nil {
		t.Fatal(err)
	}
	until := time.Now().Add(4 * time.Second)
	var wg sync.WaitGroup
	for range 4 { // pushes to devices not cached: reads that wait for the table
		wg.Go(func() {
			for time.Now().Before(until) {
				rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
				s.GetPushTarget(rctx, "some-node")
				cancel()
			}
		})
	}
	select {
	case l := <-live:
		t.Errorf("live(%v) after %v of the table locked: the LISTEN connection was well all along", l, 4*time.Second-time.Until(until))
	case <-time.After(time.Until(until)):
	}
	tx.Rollback(ctx)
	wg.Wait()
}
