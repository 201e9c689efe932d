package postgres_test

import (
	"context"
	"net/url"
	"testing"
	"time"

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
