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

// TestSuspectRefusalKeepsSharedTokenThatWorked guards the registrations
// of a token that took a push, when another registration of the same
// token (another account of the device, a node per group chat) that has
// not taken one yet is refused with an answer a misconfigured app gets
// for every token (APNS BadDeviceToken after a switch of environment):
// the refusal may be the configuration's, and the token's registration
// that worked must stay, as it does when its own push is refused so.
func TestSuspectRefusalKeepsSharedTokenThatWorked(t *testing.T) {
	ctx := context.Background()
	store := memory.New()
	b := &scripted{answers: map[string]error{}}
	svc, err := appserver.New(store, []appserver.App{{Name: "ios", Priority: push.PriorityHigh, Backend: b}},
		appserver.Options{Redelivery: time.Minute}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { svc.Close() })
	const token = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	worked, err := svc.Register(ctx, appserver.Caller{}, "ios", "worked", token)
	if err != nil {
		t.Fatal(err)
	}
	if err := svc.Push(ctx, appserver.PushRequest{Node: "worked", Secret: worked.Secret}); err != nil {
		t.Fatal(err)
	}
	// Another account of the same device registers the token later,
	// and its first push meets the misconfiguration.
	fresh, err := svc.Register(ctx, appserver.Caller{}, "ios", "fresh", token)
	if err != nil {
		t.Fatal(err)
	}
	b.set(token, &push.DeadTokenError{Since: time.Now(), Reason: "BadDeviceToken", Suspect: true})
	if err := svc.Push(ctx, appserver.PushRequest{Node: "fresh", Secret: fresh.Secret}); !errors.Is(err, appserver.ErrNotFound) {
		t.Errorf("push to the registration whose token took no push, refused: %v, want ErrNotFound (its registration removed)", err)
	}
	if _, err := store.Get(ctx, "fresh"); !errors.Is(err, registry.ErrNotFound) {
		t.Errorf("registration whose token took no push, refused: %v, want removed", err)
	}
	if _, err := store.Get(ctx, "worked"); err != nil {
		t.Fatalf("registration whose token took a push, after a suspect refusal of another registration of the token: %v, want kept", err)
	}
}
