package appserver_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/push-appserver/push-appserver/internal/appserver"
	"github.com/push-appserver/push-appserver/internal/push"
	"github.com/push-appserver/push-appserver/internal/registry/memory"
)

// rotatingBackend plays a push service whose answer to the old token
// comes while the device registers its new one: the call to the old token
// waits for release once it has said so on entered, then answers dead
// (FCM UNREGISTERED, WebPush 404/410: no timestamp, the time of the
// answer). Its first answer to the old token may be an outage instead.
type rotatingBackend struct {
	old         string
	outageFirst bool
	entered     chan struct{}
	release     chan struct{}
	mu          sync.Mutex
	calls       map[string]int
}

func (b *rotatingBackend) Send(ctx context.Context, n push.Notification) error {
	b.mu.Lock()
	b.calls[n.Token]++
	call := b.calls[n.Token]
	b.mu.Unlock()
	if n.Token != b.old {
		return nil
	}
	if b.outageFirst && call == 1 {
		return &push.TemporaryError{Reason: "503 ServiceUnavailable", Outage: true}
	}
	b.entered <- struct{}{}
	<-b.release
	return &push.DeadTokenError{Since: time.Now(), Reason: "UNREGISTERED"}
}

func (b *rotatingBackend) sent(token string) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.calls[token]
}

// TestRotatedTokenGetsThePushTheOldOneRefused guards a device's wake
// across a token rotation: the push service gives the app a new token and
// the app registers it (same node, same secret) while a push is on its way
// to the old one, which the push service answers dead. The registration
// is rightly kept (it holds another token now), and the push, which the
// user's server sent for a message, must reach the device at its new
// token rather than be dropped: otherwise that message never wakes it.
// The same holds for a push being redelivered when the answer comes.
func TestRotatedTokenGetsThePushTheOldOneRefused(t *testing.T) {
	for _, redelivered := range []bool{false, true} {
		t.Run(fmt.Sprint("redelivered=", redelivered), func(t *testing.T) {
			ctx := context.Background()
			store := memory.New()
			b := &rotatingBackend{old: "T1", outageFirst: redelivered, entered: make(chan struct{}), release: make(chan struct{}), calls: map[string]int{}}
			svc, err := appserver.New(store, []appserver.App{{Name: "fcm", Priority: push.PriorityHigh, Backend: b}},
				appserver.Options{Redelivery: time.Minute}, slog.New(slog.DiscardHandler))
			if err != nil {
				t.Fatal(err)
			}
			svc.SetRedeliveryTiming(20*time.Millisecond, 5*time.Millisecond)
			running(t, svc)
			account := appserver.Account{Bare: "juliet@example.org", Domain: "example.org"}
			r, err := svc.RegisterDevice(ctx, "fcm", account, "android-1", "", "T1")
			if err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() { done <- svc.Push(ctx, appserver.PushRequest{Node: r.Node, Secret: r.Secret}) }()
			if redelivered {
				if err := <-done; !errors.Is(err, appserver.ErrPushFailed) {
					t.Fatalf("push during the outage: %v", err)
				}
			}
			<-b.entered // the push (or its redelivery) is at the push service
			r2, err := svc.RegisterDevice(ctx, "fcm", account, "android-1", "", "T2")
			if err != nil || r2.Node != r.Node || r2.Secret != r.Secret {
				t.Fatalf("the new token's registration: %+v %v", r2, err)
			}
			close(b.release)
			if !redelivered {
				if err := <-done; errors.Is(err, appserver.ErrNotFound) {
					t.Fatalf("push answered %v (cancel), though the node is registered", err)
				}
			}
			if _, err := store.Get(ctx, r.Node); err != nil {
				t.Fatalf("registration renewed with a new token, after the old token's dead answer: %v", err)
			}
			eventually(t, func() bool { return b.sent("T2") > 0 }, func() string {
				return fmt.Sprintf("the push refused at the old token never went to the new one (%d requests to T1, 0 to T2): the message that caused it wakes no one", b.sent("T1"))
			})
		})
	}
}
