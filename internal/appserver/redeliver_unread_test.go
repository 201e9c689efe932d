package appserver_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/push-appserver/push-appserver/internal/appserver"
	"github.com/push-appserver/push-appserver/internal/push"
	"github.com/push-appserver/push-appserver/internal/registry"
	"github.com/push-appserver/push-appserver/internal/registry/memory"
)

// unreadableStore is a registry whose reads fail while down is set, as
// PostgreSQL's do while it is away; its writes work, so that tests can
// register before and hold pushes at a stop.
type unreadableStore struct {
	*memory.Store
	down atomic.Bool
}

func (s *unreadableStore) Get(ctx context.Context, node string) (registry.Registration, error) {
	if s.down.Load() {
		return registry.Registration{}, errors.New("dial tcp: connection refused")
	}
	return s.Store.Get(ctx, node)
}

// switchedFeed is a change feed that is live while its registry is
// readable: it says live(false) on lose and live(true) on back.
type switchedFeed struct {
	lose, back chan struct{}
	switched   chan bool
}

func newSwitchedFeed() *switchedFeed {
	return &switchedFeed{lose: make(chan struct{}), back: make(chan struct{}), switched: make(chan bool, 4)}
}

func (f *switchedFeed) Follow(ctx context.Context, changed func(string), live func(bool)) error {
	live(true)
	f.switched <- true
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-f.lose:
			live(false)
			f.switched <- false
		case <-f.back:
			live(true)
			f.switched <- true
		}
	}
}

// unreadService starts a service with redelivery over store and feed
// (nil for none), whose redelivery looks for due pushes every 5 ms but
// backs off from base.
func unreadService(t *testing.T, store registry.Store, feed appserver.ChangeFeed, base time.Duration) (*appserver.Service, *scripted, func()) {
	t.Helper()
	b := &scripted{answers: map[string]error{}}
	opts := appserver.Options{Redelivery: time.Minute}
	if feed != nil {
		opts.Changes = feed
	}
	svc, err := appserver.New(store, testApps(b), opts, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	svc.SetRedeliveryTiming(base, 5*time.Millisecond)
	return svc, b, running(t, svc)
}

// sentOnce returns the one push the backend got for token, failing the
// test when it got another number.
func sentOnce(t *testing.T, b *scripted, token string) push.Notification {
	t.Helper()
	var got []push.Notification
	for _, n := range b.Sent() {
		if n.Token == token {
			got = append(got, n)
		}
	}
	if len(got) != 1 {
		t.Fatalf("%d pushes to %s, want 1: %+v", len(got), token, b.Sent())
	}
	return got[0]
}

const (
	aliceToken = "a11ce0000000000000000000000000000000000000000000000000000000000a"
	bobToken   = "b0b0000000000000000000000000000000000000000000000000000000000000"
)

// TestRedeliveryOfUnreadPushes: a push whose registration could not be
// read is answered "try again later" and kept with the secret it came
// with; once the change feed is back, which says the registry answers
// again, it goes out at once (not when its backoff ends) if that secret is
// the registration's, at the priority the app gives it then. Pushes with
// a wrong secret or to an unknown node are dropped then, and do not take
// the place of the right one.
func TestRedeliveryOfUnreadPushes(t *testing.T) {
	ctx := context.Background()
	store := &unreadableStore{Store: memory.New()}
	feed := newSwitchedFeed()
	// No attempt falls due by itself within the test.
	svc, b, _ := unreadService(t, store, feed, time.Hour)
	<-feed.switched
	alice, _ := svc.Register(ctx, appserver.Caller{}, "apns", "alice", aliceToken)
	bob, _ := svc.Register(ctx, appserver.Caller{}, "apns", "bob", bobToken)
	call, _ := svc.Register(ctx, appserver.Caller{}, "voip", "call", "voip-token")

	feed.lose <- struct{}{}
	<-feed.switched
	store.down.Store(true)
	for _, req := range []appserver.PushRequest{
		{Node: "alice", Secret: alice.Secret, MarkedHigh: true},
		{Node: "alice", Secret: "guessed", MarkedHigh: true},
		{Node: "bob", Secret: "guessed"},
		{Node: "nobody", Secret: bob.Secret},
		{Node: "call", Secret: call.Secret},
	} {
		if err := svc.Push(ctx, req); !errors.Is(err, appserver.ErrPushFailed) {
			t.Fatalf("push to %s while the registry is away: %v", req.Node, err)
		}
	}
	// alice's two wait apart: either secret may be the right one.
	if s := svc.RedeliveryStats(); s.Kept != 5 || s.Pending != 5 {
		t.Fatalf("kept while the registry is away: %+v", s)
	}
	time.Sleep(50 * time.Millisecond)
	if len(b.Sent()) != 0 {
		t.Fatalf("pushed while the registry is away: %+v", b.Sent())
	}

	store.down.Store(false)
	feed.back <- struct{}{}
	<-feed.switched
	s := waitStats(t, svc, func(s appserver.RedeliveryStats) bool { return s.Pending == 0 })
	// alice's guessed push is refused when read, or, when alice's right
	// one goes out first, ended with it (superseded): either way not
	// sent.
	if s.Delivered != 1 || s.Gone+s.Superseded != 3 || s.Superseded > 1 || s.Failed != 1 {
		t.Fatalf("once the registry is back: %+v", s)
	}
	if n := sentOnce(t, b, aliceToken); n.App != "apns" || n.Node != "alice" || n.Priority != push.PriorityHigh {
		t.Fatalf("the push as sent: %+v", n)
	}
	if len(b.Sent()) != 1 {
		t.Fatalf("sent %+v; want alice's push alone", b.Sent())
	}
}

// TestUnreadPushCheckedPushWins: a push to a device whose registration
// could not be read gives way to one that was checked, and a later
// failure of the same sender's replaces it.
func TestUnreadPushCheckedPushWins(t *testing.T) {
	ctx := context.Background()
	store := &unreadableStore{Store: memory.New()}
	// No attempt falls due before the checked push below comes.
	svc, b, _ := unreadService(t, store, nil, 400*time.Millisecond)
	alice, _ := svc.Register(ctx, appserver.Caller{}, "apns", "alice", aliceToken)
	bob, _ := svc.Register(ctx, appserver.Caller{}, "apns", "bob", bobToken)
	store.down.Store(true)
	svc.Push(ctx, appserver.PushRequest{Node: "alice", Secret: "guessed", MarkedHigh: true})
	svc.Push(ctx, appserver.PushRequest{Node: "bob", Secret: bob.Secret})
	svc.Push(ctx, appserver.PushRequest{Node: "bob", Secret: bob.Secret, MarkedHigh: true})
	store.down.Store(false)
	// Read while an unread push waits: its outcome is checked, and
	// replaces the one whose secret nobody could check.
	b.set(aliceToken, outage)
	svc.Push(ctx, appserver.PushRequest{Node: "alice", Secret: alice.Secret})
	b.set(aliceToken, nil)
	s := waitStats(t, svc, func(s appserver.RedeliveryStats) bool { return s.Pending == 0 })
	if s.Delivered != 2 || s.Gone != 0 {
		t.Fatalf("%+v", s)
	}
	if got := len(b.Sent()); got != 3 { // alice's failure, then both delivered
		t.Fatalf("sent %d pushes, want 3: %+v", got, b.Sent())
	}
	if n := sentOnce(t, b, bobToken); n.Priority != push.PriorityHigh {
		t.Fatalf("bob's push as sent: %+v; want the later, high one", n)
	}
}

// TestUnreadPushHeldAcrossRestart: a push whose registration could not be
// read is held in the registry at a stop with its secret, and the next
// server checks it and sends it.
func TestUnreadPushHeldAcrossRestart(t *testing.T) {
	ctx := context.Background()
	store := &unreadableStore{Store: memory.New()}
	first, _, stop := unreadService(t, store, nil, time.Hour)
	alice, _ := first.Register(ctx, appserver.Caller{}, "apns", "alice", aliceToken)
	first.Register(ctx, appserver.Caller{}, "apns", "bob", bobToken)
	store.down.Store(true)
	first.Push(ctx, appserver.PushRequest{Node: "alice", Secret: alice.Secret, Summary: &push.Summary{HasLastMessageBody: true, MessageCount: 3}})
	first.Push(ctx, appserver.PushRequest{Node: "bob", Secret: alice.Secret})
	stop()
	if s := first.RedeliveryStats(); s.Kept != 2 || s.Dropped != 0 {
		t.Fatalf("%+v", s)
	}

	store.down.Store(false)
	second, b, _ := unreadService(t, store, nil, 20*time.Millisecond)
	s := waitStats(t, second, func(s appserver.RedeliveryStats) bool { return s.Delivered == 1 && s.Gone == 1 })
	if s.Pending != 0 {
		t.Fatalf("%+v", s)
	}
	if n := sentOnce(t, b, aliceToken); n.Priority != push.PriorityHigh || n.Summary == nil || n.Summary.MessageCount != 3 {
		t.Fatalf("the held push as sent: %+v", n)
	}
	if len(b.Sent()) != 1 {
		t.Fatalf("sent %+v", b.Sent())
	}
}

// TestPushToImpossibleNode: a node no one can have registered (not UTF-8,
// or with a NUL) is unknown, even while the registry cannot be read: it
// is not kept, where PostgreSQL, unable to even look it up, would fail
// every write of the waiting pushes with it.
func TestPushToImpossibleNode(t *testing.T) {
	ctx := context.Background()
	store := &unreadableStore{Store: memory.New()}
	svc, _, _ := unreadService(t, store, nil, time.Hour)
	store.down.Store(true)
	for _, node := range []string{"bad\xff", "nul\x00"} {
		if err := svc.Push(ctx, appserver.PushRequest{Node: node, Secret: "s"}); !errors.Is(err, appserver.ErrNotFound) {
			t.Fatalf("push to %q: %v", node, err)
		}
	}
	if s := svc.RedeliveryStats(); s.Kept != 0 {
		t.Fatalf("%+v", s)
	}
}

// An alert held while the registry was away is not replaced by a later
// silent push of the same sender: the device would wake without showing
// the message that arrived first.
func TestUnreadAlertNotReplacedBySilent(t *testing.T) {
	ctx := context.Background()
	store := &unreadableStore{Store: memory.New()}
	feed := newSwitchedFeed()
	svc, b, _ := unreadService(t, store, feed, time.Hour)
	<-feed.switched
	bob, _ := svc.Register(ctx, appserver.Caller{}, "apns", "bob", bobToken)
	feed.lose <- struct{}{}
	<-feed.switched
	store.down.Store(true)
	svc.Push(ctx, appserver.PushRequest{Node: "bob", Secret: bob.Secret, MarkedHigh: true})
	svc.Push(ctx, appserver.PushRequest{Node: "bob", Secret: bob.Secret}) // a receipt, say
	store.down.Store(false)
	feed.back <- struct{}{}
	<-feed.switched
	waitStats(t, svc, func(s appserver.RedeliveryStats) bool { return s.Pending == 0 })
	if n := sentOnce(t, b, bobToken); n.Priority != push.PriorityHigh {
		t.Fatalf("bob's push as sent: %+v; want the alert", n)
	}
}
