package appserver_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/push-appserver/push-appserver/internal/appserver"
	"github.com/push-appserver/push-appserver/internal/push"
	"github.com/push-appserver/push-appserver/internal/registry"
	"github.com/push-appserver/push-appserver/internal/registry/memory"
)

// redeliveringService is newService with redelivery's waits in
// milliseconds and the service running.
func redeliveringService(t *testing.T, redelivery time.Duration) (*appserver.Service, registry.Store, *scripted) {
	t.Helper()
	store := memory.New()
	b := &scripted{answers: map[string]error{}}
	svc, err := appserver.New(store, []appserver.App{
		{Name: "apns", Priority: push.PriorityAuto, Backend: hexOnly{b}},
		{Name: "voip", Priority: push.PriorityVoIP, Backend: b},
		{Name: "fcm", Priority: push.PriorityHigh, Backend: b},
	}, appserver.Options{Redelivery: redelivery}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	if redelivery > 0 {
		svc.SetRedeliveryTiming(20*time.Millisecond, 5*time.Millisecond)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { svc.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done; svc.Close() })
	return svc, store, b
}

// sentTo counts the pushes the backend got for token.
func sentTo(b *scripted, token string) int {
	n := 0
	for _, s := range b.Sent() {
		if s.Token == token {
			n++
		}
	}
	return n
}

// waitStats waits until the service's redelivery stats satisfy ok.
func waitStats(t *testing.T, svc *appserver.Service, ok func(appserver.RedeliveryStats) bool) appserver.RedeliveryStats {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		s := svc.RedeliveryStats()
		if ok(s) {
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("redelivery stats: %+v", s)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

var outage = &push.TemporaryError{Reason: "503 ServiceUnavailable"}

// TestRedelivery: a push the push service did not take is answered "try
// again later" and sent again once the service takes it: the user's XMPP
// server never tries again.
func TestRedelivery(t *testing.T) {
	ctx := context.Background()
	svc, store, b := redeliveringService(t, time.Minute)
	reg, _ := svc.Register(ctx, appserver.Caller{}, "fcm", "n1", "t1")
	b.set("t1", outage)
	if err := svc.Push(ctx, appserver.PushRequest{Node: "n1", Secret: reg.Secret}); !errors.Is(err, appserver.ErrPushFailed) {
		t.Fatalf("push during the outage: %v", err)
	}
	waitStats(t, svc, func(s appserver.RedeliveryStats) bool { return s.Kept == 1 && sentTo(b, "t1") >= 2 })
	b.set("t1", nil)
	s := waitStats(t, svc, func(s appserver.RedeliveryStats) bool { return s.Delivered == 1 })
	if s.Pending != 0 {
		t.Fatalf("%+v", s)
	}
	sent := sentTo(b, "t1")
	time.Sleep(100 * time.Millisecond)
	if sentTo(b, "t1") != sent {
		t.Fatal("sent again after it went through")
	}
	svc.Close()
	if r, _ := store.Get(ctx, "n1"); r.LastSuccessfulPush.IsZero() {
		t.Fatalf("the redelivered push's success was not recorded: %+v", r)
	}
}

// TestRedeliveryReadsTheRegistrationAgain: a device that registered a
// new token meanwhile gets the push at the new one, and one that
// unregistered gets nothing.
func TestRedeliveryReadsTheRegistrationAgain(t *testing.T) {
	ctx := context.Background()
	svc, _, b := redeliveringService(t, time.Minute)
	moved, _ := svc.Register(ctx, appserver.Caller{}, "fcm", "moved", "old-token")
	gone, _ := svc.Register(ctx, appserver.Caller{}, "fcm", "gone", "gone-token")
	b.set("old-token", outage)
	b.set("gone-token", outage)
	svc.Push(ctx, appserver.PushRequest{Node: "moved", Secret: moved.Secret})
	svc.Push(ctx, appserver.PushRequest{Node: "gone", Secret: gone.Secret})
	if _, err := svc.Register(ctx, appserver.Caller{}, "fcm", "moved", "new-token"); err != nil {
		t.Fatal(err)
	}
	if _, err := svc.Unregister(ctx, appserver.Caller{}, "fcm", "gone"); err != nil {
		t.Fatal(err)
	}
	s := waitStats(t, svc, func(s appserver.RedeliveryStats) bool { return s.Delivered == 1 && s.Gone == 1 })
	if s.Pending != 0 || sentTo(b, "new-token") != 1 || sentTo(b, "gone-token") != 1 {
		t.Fatalf("%+v; sent %+v", s, b.Sent())
	}
}

// TestRedeliveryEnds: a push that goes through ends the device's wait,
// a token that turns out dead ends it and its registration, and a
// device still failing when its time runs out is given up.
func TestRedeliveryEnds(t *testing.T) {
	ctx := context.Background()
	svc, store, b := redeliveringService(t, 300*time.Millisecond)
	woken, _ := svc.Register(ctx, appserver.Caller{}, "fcm", "woken", "woken-token")
	dead, _ := svc.Register(ctx, appserver.Caller{}, "fcm", "dead", "dead-token")
	down, _ := svc.Register(ctx, appserver.Caller{}, "fcm", "down", "down-token")
	for _, tok := range []string{"woken-token", "dead-token", "down-token"} {
		b.set(tok, outage)
	}
	svc.Push(ctx, appserver.PushRequest{Node: "woken", Secret: woken.Secret})
	svc.Push(ctx, appserver.PushRequest{Node: "dead", Secret: dead.Secret})
	svc.Push(ctx, appserver.PushRequest{Node: "down", Secret: down.Secret})

	b.set("woken-token", nil)
	if err := svc.Push(ctx, appserver.PushRequest{Node: "woken", Secret: woken.Secret}); err != nil {
		t.Fatal(err)
	}
	b.set("dead-token", &push.DeadTokenError{Since: time.Now().Add(time.Minute), Reason: "UNREGISTERED"})
	s := waitStats(t, svc, func(s appserver.RedeliveryStats) bool { return s.Pending == 0 })
	if s.Superseded != 1 || s.Gone != 1 || s.Expired != 1 || s.Delivered != 0 {
		t.Fatalf("%+v", s)
	}
	if _, err := store.Get(ctx, "dead"); !errors.Is(err, registry.ErrNotFound) {
		t.Fatalf("dead token's registration: %v", err)
	}
	if sentTo(b, "woken-token") != 2 || sentTo(b, "down-token") < 3 {
		t.Fatalf("sent: %+v", b.Sent())
	}
}

// TestRedeliveryOfTokenPushes: a tokenless push (the node is a device
// token) is kept by its app and token, and a VoIP push is not kept.
func TestRedeliveryOfTokenPushes(t *testing.T) {
	ctx := context.Background()
	svc, _, b := redeliveringService(t, time.Minute)
	b.set("ab12", outage)
	if err := svc.Push(ctx, appserver.PushRequest{Node: "ab12", Tokenless: true, TokenApp: "apns"}); !errors.Is(err, appserver.ErrPushFailed) {
		t.Fatalf("tokenless push: %v", err)
	}
	voip, _ := svc.Register(ctx, appserver.Caller{}, "voip", "call", "voip-token")
	b.set("voip-token", outage)
	svc.Push(ctx, appserver.PushRequest{Node: "call", Secret: voip.Secret})
	b.set("ab12", nil)
	s := waitStats(t, svc, func(s appserver.RedeliveryStats) bool { return s.Delivered == 1 })
	if s.Kept != 1 || sentTo(b, "voip-token") != 1 {
		t.Fatalf("%+v; sent %+v", s, b.Sent())
	}
}

// TestRedeliveryOff: with Redelivery negative nothing is kept.
func TestRedeliveryOff(t *testing.T) {
	ctx := context.Background()
	svc, _, b := redeliveringService(t, -1)
	reg, _ := svc.Register(ctx, appserver.Caller{}, "fcm", "n1", "t1")
	b.set("t1", outage)
	svc.Push(ctx, appserver.PushRequest{Node: "n1", Secret: reg.Secret})
	b.set("t1", nil)
	time.Sleep(100 * time.Millisecond)
	if s := svc.RedeliveryStats(); s != (appserver.RedeliveryStats{}) || sentTo(b, "t1") != 1 {
		t.Fatalf("%+v", s)
	}
}
