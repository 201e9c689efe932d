package appserver_test

import (
	"context"
	"errors"
	"log/slog"
	"testing"
	"time"

	"github.com/push-appserver/push-appserver/internal/appserver"
	"github.com/push-appserver/push-appserver/internal/push"
	"github.com/push-appserver/push-appserver/internal/registry"
	"github.com/push-appserver/push-appserver/internal/registry/memory"
	"github.com/push-appserver/push-appserver/internal/testutil/fakeclock"
)

// TestSameTokenRenewalKeepsTokenWorked guards the rule that a refusal a
// misconfigured app gets for every token (APNS BadDeviceToken after a
// switch of environment, FCM SENDER_ID_MISMATCH after a switch of
// project) deletes no registration whose token took a push. Clients
// register again, with the same token, every time they connect, and a
// push that wakes them makes them connect: so the push after that is,
// nearly always, the first since the registration was renewed. The
// renewal changed nothing of the token, and the push that went through
// before it still speaks for it. A renewal that brought another token
// does not inherit that proof.
func TestSameTokenRenewalKeepsTokenWorked(t *testing.T) {
	ctx := context.Background()
	store := memory.New()
	b := &scripted{answers: map[string]error{}}
	clock := fakeclock.New(time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC))
	svc, err := appserver.New(store, []appserver.App{{Name: "fcm", Priority: push.PriorityHigh, Backend: b}},
		appserver.Options{Redelivery: time.Minute, Now: clock.Now}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { svc.Close() })
	juliet := appserver.Account{Bare: "juliet@example.org", Domain: "example.org"}
	romeo := appserver.Account{Bare: "romeo@example.org", Domain: "example.org"}

	// Conversations (p2): registered, woken by a push, connects and
	// registers again with the same token.
	conv, err := svc.RegisterDevice(ctx, "fcm", juliet, "android-1", "", "tok-conv")
	if err != nil {
		t.Fatal(err)
	}
	if err := svc.Push(ctx, appserver.PushRequest{Node: conv.Node, Secret: conv.Secret}); err != nil {
		t.Fatal(err)
	}
	clock.Advance(time.Minute)
	if _, err := svc.RegisterDevice(ctx, "fcm", juliet, "android-1", "", "tok-conv"); err != nil {
		t.Fatal(err)
	}
	// The HTTP API, every launch.
	web, err := svc.Register(ctx, appserver.Caller{}, "fcm", "http-node", "tok-http")
	if err != nil {
		t.Fatal(err)
	}
	if err := svc.Push(ctx, appserver.PushRequest{Node: "http-node", Secret: web.Secret}); err != nil {
		t.Fatal(err)
	}
	clock.Advance(time.Minute)
	if _, err := svc.Register(ctx, appserver.Caller{}, "fcm", "http-node", "tok-http"); err != nil {
		t.Fatal(err)
	}
	// A device whose renewal brought a new token: the old token's
	// success says nothing of the new one.
	moved, err := svc.RegisterDevice(ctx, "fcm", romeo, "android-2", "", "tok-old")
	if err != nil {
		t.Fatal(err)
	}
	if err := svc.Push(ctx, appserver.PushRequest{Node: moved.Node, Secret: moved.Secret}); err != nil {
		t.Fatal(err)
	}
	clock.Advance(time.Minute)
	if _, err := svc.RegisterDevice(ctx, "fcm", romeo, "android-2", "", "tok-new"); err != nil {
		t.Fatal(err)
	}
	clock.Advance(time.Hour)

	// The app is reloaded onto another FCM project by mistake.
	for _, tok := range []string{"tok-conv", "tok-http", "tok-new"} {
		b.set(tok, &push.DeadTokenError{Since: clock.Now(), Reason: "SENDER_ID_MISMATCH", Suspect: true})
	}
	for _, r := range []registry.Registration{conv, web} {
		if err := svc.Push(ctx, appserver.PushRequest{Node: r.Node, Secret: r.Secret}); errors.Is(err, appserver.ErrNotFound) {
			t.Errorf("%s: a suspect refusal after a same-token renewal was answered %v (cancel), although the token took a push", r.Node, err)
		}
		if _, err := store.Get(ctx, r.Node); err != nil {
			t.Errorf("%s: registration whose token took a push, renewed with the same token, after a suspect refusal: %v, want kept", r.Node, err)
		}
	}
	if err := svc.Push(ctx, appserver.PushRequest{Node: moved.Node, Secret: moved.Secret}); !errors.Is(err, appserver.ErrNotFound) {
		t.Errorf("a suspect refusal of a token that never took a push (renewed from another): %v, want ErrNotFound", err)
	}
}
