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
)

// TestDeadTokenThatWorkedRemoved guards a device whose app was removed:
// its token took pushes, then the push service declares it dead with an
// answer no misconfiguration gives (APNS 410 Unregistered, FCM
// UNREGISTERED). The registration goes and the user's server hears the
// node is gone; only the answers a misconfigured app gets for every
// token (Suspect) are doubted for a token that worked. Kept, every push
// of the user's server would be answered wait, and kept to be tried
// again, for good.
func TestDeadTokenThatWorkedRemoved(t *testing.T) {
	ctx := context.Background()
	svc, store, b := newService(t, 0)
	r, err := svc.Register(ctx, appserver.Caller{}, "fcm", "n", "tok")
	if err != nil {
		t.Fatal(err)
	}
	if err := svc.Push(ctx, appserver.PushRequest{Node: "n", Secret: r.Secret}); err != nil {
		t.Fatal(err)
	}
	b.set("tok", &push.DeadTokenError{Since: time.Now().Add(time.Minute), Reason: "UNREGISTERED"})
	if err := svc.Push(ctx, appserver.PushRequest{Node: "n", Secret: r.Secret}); !errors.Is(err, appserver.ErrNotFound) {
		t.Fatalf("push to a token declared dead that took a push before = %v, want ErrNotFound", err)
	}
	if _, err := store.Get(ctx, "n"); !errors.Is(err, registry.ErrNotFound) {
		t.Fatalf("registration of the dead token: %v, want removed", err)
	}
	if s := svc.RedeliveryStats(); s.Pending != 0 {
		t.Fatalf("%d pushes to the dead token kept for redelivery", s.Pending)
	}
}

// TestDeadTokenOfRenewedRegistrationNotKept guards a registration the
// device renewed with the same token after the push service saw the
// token die: it stays, and the push, answered wait, is not kept to be
// sent again to the token the service just refused (only a push whose
// device registered another token meanwhile is).
func TestDeadTokenOfRenewedRegistrationNotKept(t *testing.T) {
	ctx := context.Background()
	svc, store, b := newService(t, 0)
	r, err := svc.Register(ctx, appserver.Caller{}, "fcm", "n", "tok")
	if err != nil {
		t.Fatal(err)
	}
	b.set("tok", &push.DeadTokenError{Since: time.Now().Add(-time.Hour), Reason: "Unregistered"})
	if err := svc.Push(ctx, appserver.PushRequest{Node: "n", Secret: r.Secret}); !errors.Is(err, appserver.ErrPushFailed) {
		t.Fatalf("push = %v, want ErrPushFailed", err)
	}
	if _, err := store.Get(ctx, "n"); err != nil {
		t.Fatalf("registration renewed after the token died: %v, want kept", err)
	}
	if s := svc.RedeliveryStats(); s.Kept != 0 {
		t.Fatalf("push to the token the service refused kept for redelivery: %+v", s)
	}
}

// gatedSend answers a push to its token, once released, with answer;
// reached is closed when that push arrives. Other tokens' pushes go
// through.
type gatedSend struct {
	token   string
	reached chan struct{}
	release chan struct{}
	answer  func() error
}

func (g *gatedSend) Send(ctx context.Context, n push.Notification) error {
	if n.Token != g.token {
		return nil
	}
	close(g.reached)
	<-g.release
	return g.answer()
}

// TestSuspectRefusalOfReplacedTokenKeepsRegistration guards a device
// that registered a new token while a push to its old one was on its
// way, when the push service refuses the old one with an answer a
// misconfigured app gets too (APNS BadDeviceToken): the registration,
// now of the new token, stays, and the push is kept to go to the new
// token, answered wait. Removed, the device would get no push until it
// registers again, and the user's server, told the node is gone, would
// end its push session.
func TestSuspectRefusalOfReplacedTokenKeepsRegistration(t *testing.T) {
	ctx := context.Background()
	store := memory.New()
	g := &gatedSend{token: "tok-old", reached: make(chan struct{}), release: make(chan struct{}),
		answer: func() error {
			return &push.DeadTokenError{Since: time.Now(), Reason: "BadDeviceToken", Suspect: true}
		}}
	svc, err := appserver.New(store, []appserver.App{{Name: "ios", Priority: push.PriorityHigh, Backend: g}},
		appserver.Options{Redelivery: time.Minute}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { svc.Close() })
	r, err := svc.Register(ctx, appserver.Caller{}, "ios", "n", "tok-old")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- svc.Push(ctx, appserver.PushRequest{Node: "n", Secret: r.Secret}) }()
	<-g.reached
	if _, err := svc.Register(ctx, appserver.Caller{Secret: r.Secret}, "ios", "n", "tok-new"); err != nil {
		t.Fatal(err)
	}
	close(g.release)
	if err := <-done; !errors.Is(err, appserver.ErrPushFailed) || errors.Is(err, appserver.ErrNotFound) {
		t.Fatalf("push refused at the replaced token = %v, want ErrPushFailed", err)
	}
	got, err := store.Get(ctx, "n")
	if err != nil || got.Token != "tok-new" {
		t.Fatalf("registration after the refusal of its old token: %+v %v, want kept with tok-new", got, err)
	}
	if s := svc.RedeliveryStats(); s.Kept != 1 {
		t.Fatalf("push refused at the old token not kept for the new one: %+v", s)
	}
}

// TestDeadTokenRemovesOnlyRegistrationsMadeBefore guards a token shared
// by several registrations (accounts of one device, a node per group
// chat) when the push service declares it dead: one renewed since stays,
// and a push to that one is answered wait, not "gone", so its user's
// server keeps the push session. This holds for a dead token and for a
// refusal a misconfigured app gets too (Suspect). Those made before it
// died go with a dead token; a suspect refusal, which removes only the
// registration pushed to, leaves them.
func TestDeadTokenRemovesOnlyRegistrationsMadeBefore(t *testing.T) {
	for _, suspect := range []bool{false, true} {
		t.Run(map[bool]string{false: "dead", true: "suspect"}[suspect], func(t *testing.T) {
			ctx := context.Background()
			now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
			svc, store, b := newServiceAt(t, &now)
			if _, err := svc.Register(ctx, appserver.Caller{}, "fcm", "before", "tok"); err != nil {
				t.Fatal(err)
			}
			died := now.Add(30 * time.Second)
			now = now.Add(time.Minute)
			renewed, err := svc.Register(ctx, appserver.Caller{}, "fcm", "renewed", "tok")
			if err != nil {
				t.Fatal(err)
			}
			b.set("tok", &push.DeadTokenError{Since: died, Reason: "BadDeviceToken", Suspect: suspect})
			err = svc.Push(ctx, appserver.PushRequest{Node: "renewed", Secret: renewed.Secret})
			if !errors.Is(err, appserver.ErrPushFailed) || errors.Is(err, appserver.ErrNotFound) {
				t.Fatalf("push to the registration renewed after the token died = %v, want ErrPushFailed", err)
			}
			if _, err := store.Get(ctx, "renewed"); err != nil {
				t.Fatalf("registration renewed after the token died: %v, want kept", err)
			}
			// A dead token takes every registration of it made before
			// it died; a suspect refusal, the one pushed to alone.
			if _, err := store.Get(ctx, "before"); errors.Is(err, registry.ErrNotFound) != !suspect {
				t.Fatalf("registration made before the token died: %v, want it gone for a dead token alone", err)
			}
		})
	}
}

// TestSuspectRefusalAfterNodeRegisteredAfresh guards a node unregistered
// and registered again with another token, while the success of a push
// to its old token still waits to be written: a refusal of the new
// token that a misconfigured app gets too (APNS BadDeviceToken) removes
// the registration, since the new token never took a push. The old
// token's success says nothing of it.
func TestSuspectRefusalAfterNodeRegisteredAfresh(t *testing.T) {
	ctx := context.Background()
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	svc, store, b := newServiceAt(t, &now)
	r, err := svc.Register(ctx, appserver.Caller{}, "fcm", "n", "tok-old")
	if err != nil {
		t.Fatal(err)
	}
	if err := svc.Push(ctx, appserver.PushRequest{Node: "n", Secret: r.Secret}); err != nil {
		t.Fatal(err)
	}
	now = now.Add(time.Minute)
	if _, err := svc.Unregister(ctx, appserver.Caller{}, "fcm", "n"); err != nil {
		t.Fatal(err)
	}
	r, err = svc.Register(ctx, appserver.Caller{}, "fcm", "n", "tok-new")
	if err != nil {
		t.Fatal(err)
	}
	now = now.Add(time.Minute)
	b.set("tok-new", &push.DeadTokenError{Since: now, Reason: "BadDeviceToken", Suspect: true})
	if err := svc.Push(ctx, appserver.PushRequest{Node: "n", Secret: r.Secret}); !errors.Is(err, appserver.ErrNotFound) {
		t.Fatalf("push refused so to a token that never took a push = %v, want ErrNotFound", err)
	}
	if _, err := store.Get(ctx, "n"); !errors.Is(err, registry.ErrNotFound) {
		t.Fatalf("registration whose token never took a push: %v, want removed", err)
	}
}
