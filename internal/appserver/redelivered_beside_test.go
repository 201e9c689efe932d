package appserver_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/push-appserver/push-appserver/internal/appserver"
	"github.com/push-appserver/push-appserver/internal/registry/memory"
)

// TestRedeliveredPushEndsUnreadBesideIt: a checked push that failed and
// then went out on redelivery has woken the device, as a fresh push
// that goes through has: the unread pushes kept beside it while the
// registry could not be read (one per secret) end with it, counted as
// superseded. Left waiting, the one with the registration's secret went
// out once the registry answered again, and woke the device a second
// time for what the redelivered push already said.
func TestRedeliveredPushEndsUnreadBesideIt(t *testing.T) {
	ctx := context.Background()
	store := &unreadableStore{Store: memory.New()}
	feed := newSwitchedFeed()
	// No attempt falls due by itself within the test: only the end of
	// the push service's outage (appsBack) and the registry's return
	// (registryBack) make pushes due.
	svc, b, _ := unreadService(t, store, feed, time.Hour)
	<-feed.switched
	alice, _ := svc.Register(ctx, appserver.Caller{}, "apns", "alice", aliceToken)
	bob, _ := svc.Register(ctx, appserver.Caller{}, "apns", "bob", bobToken)

	feed.lose <- struct{}{}
	<-feed.switched
	store.down.Store(true)
	// A made-up secret first, the user's server's beside it.
	for _, secret := range []string{"guessed", alice.Secret} {
		if err := svc.Push(ctx, appserver.PushRequest{Node: "alice", Secret: secret}); !errors.Is(err, appserver.ErrPushFailed) {
			t.Fatalf("push while the registry is away: %v", err)
		}
	}
	store.down.Store(false)
	// Read again: the user's server's next push is checked, fails in an
	// outage of the push service, and takes the first push's place.
	b.set(aliceToken, outage)
	if err := svc.Push(ctx, appserver.PushRequest{Node: "alice", Secret: alice.Secret, MarkedHigh: true}); err == nil {
		t.Fatal("the push in the outage went through")
	}
	b.set(aliceToken, nil)
	// The service takes a push again: the one waiting after the outage
	// goes out.
	if err := svc.Push(ctx, appserver.PushRequest{Node: "bob", Secret: bob.Secret}); err != nil {
		t.Fatal(err)
	}
	waitStats(t, svc, func(s appserver.RedeliveryStats) bool { return s.Delivered == 1 })

	// The change feed says the registry answers again: whatever unread
	// push still waits goes out now.
	feed.back <- struct{}{}
	<-feed.switched
	s := waitStats(t, svc, func(s appserver.RedeliveryStats) bool { return s.Pending == 0 })
	woken := 0
	for _, n := range b.Sent() {
		if n.Token == aliceToken {
			woken++
		}
	}
	// The push that failed, then its redelivery.
	if woken != 2 || s.Delivered != 1 {
		t.Fatalf("alice's device got %d pushes (the failed one included), want 2; stats %+v", woken, s)
	}
}
