package appserver_test

import (
	"context"
	"errors"
	"log/slog"
	"testing"
	"time"

	"github.com/push-appserver/push-appserver/internal/appserver"
	"github.com/push-appserver/push-appserver/internal/push"
	"github.com/push-appserver/push-appserver/internal/registry/memory"
	"github.com/push-appserver/push-appserver/internal/testutil/fakeclock"
)

// heldBackend answers scripted's answers, but holds a push to the token
// hold until release is closed, telling started when it has it.
type heldBackend struct {
	scripted
	hold    string
	started chan struct{}
	release chan struct{}
}

func (b *heldBackend) Send(ctx context.Context, n push.Notification) error {
	if n.Token == b.hold {
		close(b.started)
		<-b.release
	}
	return b.scripted.Send(ctx, n)
}

// TestInFlightOldTokenSuccessIsNotTheNewTokens guards the rule that the
// proof a registration's token took a push (which stops a refusal a
// misconfigured app gets for every token from deleting it) is the token's
// own: a push on its way to the old token when the device renewed with a
// new one, and answered after the renewal, went to the old token and
// says nothing of the new one. Recorded, it made a new token that never
// took a push look proven, so a SENDER_ID_MISMATCH for it kept the
// registration (answered wait, for ever) instead of deleting it.
func TestInFlightOldTokenSuccessIsNotTheNewTokens(t *testing.T) {
	ctx := context.Background()
	store := memory.New()
	b := &heldBackend{scripted: scripted{answers: map[string]error{}}, hold: "tok-old",
		started: make(chan struct{}), release: make(chan struct{})}
	clock := fakeclock.New(time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC))
	svc, err := appserver.New(store, []appserver.App{{Name: "fcm", Priority: push.PriorityHigh, Backend: b}},
		appserver.Options{Redelivery: time.Minute, Now: clock.Now}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { svc.Close() })
	romeo := appserver.Account{Bare: "romeo@example.org", Domain: "example.org"}

	reg, err := svc.RegisterDevice(ctx, "fcm", romeo, "android-2", "", "tok-old")
	if err != nil {
		t.Fatal(err)
	}
	clock.Advance(time.Minute)
	pushed := make(chan error, 1)
	go func() { pushed <- svc.Push(ctx, appserver.PushRequest{Node: reg.Node, Secret: reg.Secret}) }()
	select {
	case <-b.started:
	case <-time.After(10 * time.Second):
		t.Fatal("the push never reached the push service")
	}
	// The device gets a new token while the push is at the old one.
	clock.Advance(time.Second)
	if _, err := svc.RegisterDevice(ctx, "fcm", romeo, "android-2", "", "tok-new"); err != nil {
		t.Fatal(err)
	}
	clock.Advance(time.Second)
	close(b.release)
	select {
	case err := <-pushed:
		if err != nil {
			t.Fatalf("push to the old token: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the push to the old token never ended")
	}
	svc.FlushStatus(ctx)
	if got, err := store.Get(ctx, reg.Node); err != nil {
		t.Fatal(err)
	} else if !got.LastSuccessfulPush.IsZero() {
		t.Errorf("last_successful_push %v after a renewal with a new token that took no push; want none (the success was the old token's)", got.LastSuccessfulPush)
	}

	// The app is moved to another FCM project by mistake: the new token,
	// which never took a push, has no proof to keep it.
	clock.Advance(time.Hour)
	b.set("tok-new", &push.DeadTokenError{Since: clock.Now(), Reason: "SENDER_ID_MISMATCH", Suspect: true})
	if err := svc.Push(ctx, appserver.PushRequest{Node: reg.Node, Secret: reg.Secret}); !errors.Is(err, appserver.ErrNotFound) {
		t.Errorf("a suspect refusal of a token that never took a push: %v, want ErrNotFound", err)
	}
}
