package appserver_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/push-appserver/push-appserver/internal/appserver"
	"github.com/push-appserver/push-appserver/internal/registry/memory"
)

// TestUnreadPushWithGuessedSecretFirst: while the registry cannot be
// read, a push with a made-up secret that reaches a node first (anyone
// who knows the node can send one, and keep sending) must not keep the
// push of the user's server, with the right secret, from going out once
// the registry answers again.
func TestUnreadPushWithGuessedSecretFirst(t *testing.T) {
	ctx := context.Background()
	store := &unreadableStore{Store: memory.New()}
	feed := newSwitchedFeed()
	svc, b, _ := unreadService(t, store, feed, time.Hour)
	<-feed.switched
	alice, _ := svc.Register(ctx, appserver.Caller{}, "apns", "alice", aliceToken)

	feed.lose <- struct{}{}
	<-feed.switched
	store.down.Store(true)
	for _, req := range []appserver.PushRequest{
		{Node: "alice", Secret: "guessed"},
		{Node: "alice", Secret: alice.Secret, MarkedHigh: true},
	} {
		if err := svc.Push(ctx, req); !errors.Is(err, appserver.ErrPushFailed) {
			t.Fatalf("push with secret %q while the registry is away: %v", req.Secret, err)
		}
	}

	store.down.Store(false)
	feed.back <- struct{}{}
	<-feed.switched
	s := waitStats(t, svc, func(s appserver.RedeliveryStats) bool { return s.Pending == 0 })
	if s.Delivered != 1 {
		t.Fatalf("once the registry is back: %+v; want the right secret's push delivered", s)
	}
	sentOnce(t, b, aliceToken)
}

// TestUnreadPushWithGuessedSecretFirstAcrossRestart: the right secret's
// push, waiting beside one with a made-up secret, is held in the
// registry at a stop as that one is, and the next server sends it.
func TestUnreadPushWithGuessedSecretFirstAcrossRestart(t *testing.T) {
	ctx := context.Background()
	store := &unreadableStore{Store: memory.New()}
	first, _, stop := unreadService(t, store, nil, time.Hour)
	alice, _ := first.Register(ctx, appserver.Caller{}, "apns", "alice", aliceToken)
	store.down.Store(true)
	first.Push(ctx, appserver.PushRequest{Node: "alice", Secret: "guessed"})
	first.Push(ctx, appserver.PushRequest{Node: "alice", Secret: alice.Secret, MarkedHigh: true})
	stop()

	store.down.Store(false)
	second, b, _ := unreadService(t, store, nil, 20*time.Millisecond)
	s := waitStats(t, second, func(s appserver.RedeliveryStats) bool { return s.Pending == 0 && s.Delivered+s.Gone == 2 })
	if s.Delivered != 1 || s.Gone != 1 {
		t.Fatalf("%+v", s)
	}
	sentOnce(t, b, aliceToken)
}

// TestUnregisterEndsEveryUnreadPush: unregistering a node ends the waits
// of all the pushes kept for it while the registry was away, whatever
// secret each came with: none can go out, and what they hold must not
// stay.
func TestUnregisterEndsEveryUnreadPush(t *testing.T) {
	ctx := context.Background()
	store := &unreadableStore{Store: memory.New()}
	svc, _, _ := unreadService(t, store, nil, time.Hour)
	alice, _ := svc.Register(ctx, appserver.Caller{}, "apns", "alice", aliceToken)
	store.down.Store(true)
	svc.Push(ctx, appserver.PushRequest{Node: "alice", Secret: "guessed"})
	svc.Push(ctx, appserver.PushRequest{Node: "alice", Secret: alice.Secret})
	store.down.Store(false)
	if _, err := svc.Unregister(ctx, appserver.Caller{}, "apns", "alice"); err != nil {
		t.Fatal(err)
	}
	if s := svc.RedeliveryStats(); s.Pending != 0 || s.Gone != 2 {
		t.Fatalf("after the node was unregistered: %+v", s)
	}
}
