package appserver_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/push-appserver/push-appserver/internal/appserver"
	"github.com/push-appserver/push-appserver/internal/push"
)

// TestThrottledPushChecksRegistrationAgain guards a push that waited for
// its node's throttle window while the registration changed: it is
// checked against the registration as it is when the window opens, so a
// device that unregistered meanwhile, or a node registered afresh (a new
// secret, another token: maybe someone else's device), is not pushed to
// with what the waiting push was sent for. Either is answered as an
// unknown node, which ends the user's push session.
func TestThrottledPushChecksRegistrationAgain(t *testing.T) {
	for _, tc := range []struct {
		name   string
		change func(t *testing.T, svc *appserver.Service)
	}{
		{"unregistered", func(t *testing.T, svc *appserver.Service) {
			if _, err := svc.Unregister(context.Background(), appserver.Caller{}, "fcm", "n"); err != nil {
				t.Fatal(err)
			}
		}},
		{"registered afresh", func(t *testing.T, svc *appserver.Service) {
			ctx := context.Background()
			if _, err := svc.Unregister(ctx, appserver.Caller{}, "fcm", "n"); err != nil {
				t.Fatal(err)
			}
			if _, err := svc.Register(ctx, appserver.Caller{}, "fcm", "n", "tok-new"); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			// The change must come within the window: two seconds
			// leave room for a loaded machine.
			svc, _, b := newService(t, 2*time.Second)
			r, err := svc.Register(ctx, appserver.Caller{}, "fcm", "n", "tok-old")
			if err != nil {
				t.Fatal(err)
			}
			if err := svc.Push(ctx, appserver.PushRequest{Node: "n", Secret: r.Secret}); err != nil {
				t.Fatal(err) // takes the window
			}
			waiting := make(chan struct{})
			wctx := push.WithWaiting(ctx, push.WaitingFuncs{
				PauseFunc:  func() { close(waiting) },
				ResumeFunc: func(context.Context) error { return nil },
			})
			done := make(chan error, 1)
			go func() { done <- svc.Push(wctx, appserver.PushRequest{Node: "n", Secret: r.Secret}) }()
			<-waiting
			tc.change(t, svc)
			if err := <-done; !errors.Is(err, appserver.ErrNotFound) {
				t.Fatalf("push that waited for its window across the change = %v, want ErrNotFound", err)
			}
			if sent := b.Sent(); len(sent) != 1 {
				t.Fatalf("backend got %d pushes after the change, want none: %+v", len(sent)-1, sent[1:])
			}
		})
	}
}
