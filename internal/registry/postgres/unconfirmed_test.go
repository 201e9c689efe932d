package postgres_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/push-appserver/push-appserver/internal/registry"
	"github.com/push-appserver/push-appserver/internal/registry/postgres"
	"github.com/push-appserver/push-appserver/internal/testutil/pgtest"
)

// A change whose wait for the other instances' acks is cut short by this
// store's feed going down is stored, but answered registry.ErrUnconfirmed:
// an instance that did not hear of it may push with what it cached. One
// the others acked is answered nil, and so is the same registration
// again, which finds it stored.
func TestWriteUnconfirmedWhenFeedGoesDown(t *testing.T) {
	ctx := context.Background()
	dsn := pg.DB(t)
	// Acks that do not come would hold a write for a minute: within the
	// test, only the acks or the feed's end release it.
	a, err := postgres.Open(ctx, dsn, postgres.Options{AckWait: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	fctx, stop := context.WithCancel(ctx)
	live := make(chan bool, 16)
	done := make(chan struct{})
	go func() { defer close(done); a.Follow(fctx, func(string) {}, func(l bool) { live <- l }) }()
	defer func() { stop(); <-done }()
	// waitLive returns once a's feed listens. A feed ended by cut goes
	// down, then listens again on a new connection.
	listening := false
	waitLive := func(t *testing.T) {
		t.Helper()
		for {
			select {
			case listening = <-live:
				continue
			default:
			}
			if listening {
				return
			}
			select {
			case listening = <-live:
			case <-time.After(30 * time.Second):
				t.Fatal("the feed never listened")
			}
		}
	}
	waitLive(t)

	// Acked by an instance that answers: nil, long before the minute.
	b := open(t, dsn)
	bctx, bstop := context.WithCancel(ctx)
	bdone := make(chan struct{})
	blive := make(chan bool, 4)
	go func() { defer close(bdone); b.Follow(bctx, func(string) {}, func(l bool) { blive <- l }) }()
	if !<-blive {
		t.Fatal("b's feed not live")
	}
	start := time.Now()
	if _, err := register(a, registry.Registration{Node: "n-acked", Type: "a", Token: "t", Secret: "s", Registered: time.Now()}); err != nil {
		t.Fatalf("a write the other instance acked: %v", err)
	}
	if d := time.Since(start); d > 30*time.Second {
		t.Fatalf("a write the other instance acked took %v: the ack did not release it", d)
	}
	bstop()
	<-bdone

	// A listener that never acks, as a hung instance's: the writes below
	// wait until the feed goes down.
	hung := pgtest.Listen(t, dsn, "push-appserver-listen", postgres.Channel)
	// cut ends a's LISTEN connection once the write of node is
	// committed, as the hung listener hears, while the write waits.
	cut := func(t *testing.T, node string) {
		t.Helper()
		hung.Heard(t, " "+node)
		if hung.EndOthers(t, "push-appserver-listen") == 0 {
			t.Fatal("no LISTEN connection of a's to end")
		}
	}
	reg := registry.Registration{Node: "n-7f3a", Type: "a", Token: "t1", Secret: "s1", Registered: time.Now()}
	for _, tc := range []struct {
		name  string
		node  string
		write func() error
		check func(r registry.Registration, err error) bool
	}{
		{"new registration", "n-7f3a", func() error { _, err := register(a, reg); return err },
			func(r registry.Registration, err error) bool { return err == nil && r.Token == "t1" }},
		{"new token", "n-7f3a", func() error {
			r := reg
			r.Token = "t2"
			_, err := a.Register(ctx, r.Node, func(registry.Registration, bool) (registry.Registration, error) { return r, nil })
			return err
		}, func(r registry.Registration, err error) bool { return err == nil && r.Token == "t2" }},
		{"unregistration", "n-acked", func() error { _, err := a.Delete(ctx, "n-acked", "a"); return err },
			func(_ registry.Registration, err error) bool { return errors.Is(err, registry.ErrNotFound) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			waitLive(t)
			got := make(chan error, 1)
			go func() { got <- tc.write() }()
			cut(t, tc.node)
			select {
			case err := <-got:
				if !errors.Is(err, registry.ErrUnconfirmed) {
					t.Fatalf("write cut short by the feed going down answered %v, want ErrUnconfirmed", err)
				}
				if strings.Contains(err.Error(), tc.node) {
					t.Errorf("the error names the node: %v", err)
				}
			case <-time.After(30 * time.Second):
				t.Fatal("the write still waits after the feed went down")
			}
			if r, err := a.Get(ctx, tc.node); !tc.check(r, err) {
				t.Fatalf("after the write: %+v, %v: it was not stored", r, err)
			}
			// See the cut feed go down before the next case waits for
			// it to listen again: its last word may still be that it
			// listens, and a write made while it is down waits for
			// nobody (answered OK, as before the feed had acks).
			for listening {
				select {
				case listening = <-live:
				case <-time.After(30 * time.Second):
					t.Fatal("the cut feed never went down")
				}
			}
		})
	}
	// Trying again finds the change stored: a renewal, announced to
	// nobody, so answered at once with the secret stored.
	waitLive(t)
	r, err := a.Register(ctx, "n-7f3a", registry.Renew(registry.Registration{Node: "n-7f3a", Type: "a", Token: "t2", Secret: "other", Registered: time.Now()}))
	if err != nil || r.Secret != "s1" || r.Token != "t2" {
		t.Fatalf("registering again: %+v, %v; want the stored secret s1 and token t2", r, err)
	}
}

// A write made as soon as the feed says it listens waits for the other
// instances' acks: the feed is live for the writes before it says so.
// The other way round, a write in between counted no instance to wait
// for and was answered at once, while another instance might still
// serve what it cached (and TestWriteUnconfirmedWhenFeedGoesDown, which
// writes as soon as it hears the feed is live, failed so under load).
func TestWriteWaitsOnceFeedSaysLive(t *testing.T) {
	ctx := context.Background()
	dsn := pg.DB(t)
	// Another instance that never acks, as a hung one's.
	pgtest.Listen(t, dsn, "push-appserver-listen", postgres.Channel)
	a, err := postgres.Open(ctx, dsn, postgres.Options{AckWait: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	fctx, stop := context.WithCancel(ctx)
	heard, proceed := make(chan struct{}), make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		a.Follow(fctx, func(string) {}, func(live bool) {
			if live {
				// Held here, as a caller's goroutine may be when
				// another writes.
				close(heard)
				<-proceed
			}
		})
	}()
	var release sync.Once
	let := func() { release.Do(func() { close(proceed) }) }
	defer func() { let(); stop(); <-done }()
	select {
	case <-heard:
	case <-time.After(30 * time.Second):
		t.Fatal("the feed never said it listens")
	}
	got := make(chan error, 1)
	go func() {
		_, err := register(a, registry.Registration{Node: "n-live", Type: "a", Token: "t", Secret: "s", Registered: time.Now()})
		got <- err
	}()
	select {
	case err := <-got:
		t.Fatalf("a write made once the feed said it listens was answered %v at once, waiting for no instance's ack", err)
	case <-time.After(500 * time.Millisecond):
	}
	let()
	// The hung instance never acks: the write ends with the feed.
	stop()
	select {
	case <-got:
	case <-time.After(30 * time.Second):
		t.Fatal("the write still waits after the feed ended")
	}
}
