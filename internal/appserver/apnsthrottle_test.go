package appserver_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/push-appserver/push-appserver/internal/appserver"
	"github.com/push-appserver/push-appserver/internal/push"
	"github.com/push-appserver/push-appserver/internal/registry/memory"
	"github.com/push-appserver/push-appserver/internal/testutil/apnsmock"
)

// APNS answers 429 TooManyRequests when "too many requests were made
// consecutively to the same device token": the push is not sent to the
// device again within its push_deadline (one request, however much of
// the deadline is left), the user's server hears a failure to try again
// (wait), the registration stays, and the push is kept for redelivery.
func TestAPNSDeviceTooManyRequestsKept(t *testing.T) {
	ctx := context.Background()
	b, m := realAPNS(t, false)
	store := memory.New()
	svc, err := appserver.New(store, []appserver.App{{Name: "apns", Priority: push.PriorityHigh, Backend: b, Deadline: 10 * time.Second}},
		appserver.Options{Redelivery: time.Minute}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	token := strings.Repeat("cd", 32)
	reg, err := svc.Register(ctx, appserver.Caller{}, "apns", "n", token)
	if err != nil {
		t.Fatal(err)
	}
	m.FailToken(token, apnsmock.Fault{Status: 429, Reason: "TooManyRequests"}, apnsmock.Fault{Status: 429, Reason: "TooManyRequests"})
	err = svc.Push(ctx, appserver.PushRequest{Node: "n", Secret: reg.Secret})
	if !errors.Is(err, appserver.ErrPushFailed) || errors.Is(err, appserver.ErrNotFound) {
		t.Fatalf("push answered 429 TooManyRequests: %v, want ErrPushFailed (wait)", err)
	}
	if n := m.Total(); n != 1 {
		t.Fatalf("%d requests to the device Apple said had too many, want 1", n)
	}
	if s := svc.RedeliveryStats(); s.Kept != 1 {
		t.Fatalf("redelivery %+v, want the push kept", s)
	}
	if _, err := store.Get(ctx, "n"); err != nil {
		t.Fatalf("registration: %v, want it kept", err)
	}
}
