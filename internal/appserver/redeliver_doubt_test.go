package appserver_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/push-appserver/push-appserver/internal/appserver"
	"github.com/push-appserver/push-appserver/internal/push"
)

// TestRedeliverySuspectRefusalKeepsTokenThatWorked guards a registration
// whose token took a push, when the push service refuses it with an
// answer a misconfigured app gets for every token (APNS BadDeviceToken
// after a switch of environment) on a redelivery attempt, as on a fresh
// push: the configuration is at fault, the registration stays and the
// push waits for the configuration to be mended. Removed, every device
// pushed while the app was misconfigured would have to register again.
func TestRedeliverySuspectRefusalKeepsTokenThatWorked(t *testing.T) {
	ctx := context.Background()
	svc, store, b := redeliveringService(t, time.Minute)
	reg, err := svc.Register(ctx, appserver.Caller{}, "fcm", "n1", "t1")
	if err != nil {
		t.Fatal(err)
	}
	if err := svc.Push(ctx, appserver.PushRequest{Node: "n1", Secret: reg.Secret}); err != nil {
		t.Fatal(err)
	}
	b.set("t1", &push.DeadTokenError{Since: time.Now(), Reason: "BadDeviceToken", Suspect: true})
	if err := svc.Push(ctx, appserver.PushRequest{Node: "n1", Secret: reg.Secret}); !errors.Is(err, appserver.ErrPushFailed) || errors.Is(err, appserver.ErrNotFound) {
		t.Fatalf("push refused so to a token that worked = %v, want ErrPushFailed", err)
	}
	// Attempts to one device run one after another: a third one sent
	// means the first redelivery attempt's refusal was dealt with.
	eventually(t, func() bool {
		_, err := store.Get(ctx, "n1")
		return sentTo(b, "t1") >= 4 || err != nil
	}, func() string { return "no second redelivery attempt" })
	if _, err := store.Get(ctx, "n1"); err != nil {
		t.Fatalf("registration whose token worked, after a redelivery attempt refused for a reason a misconfiguration gives: %v, want kept", err)
	}
}
