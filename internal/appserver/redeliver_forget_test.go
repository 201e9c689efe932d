package appserver_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/push-appserver/push-appserver/internal/appserver"
	"github.com/push-appserver/push-appserver/internal/push"
	"github.com/push-appserver/push-appserver/internal/registry"
	"github.com/push-appserver/push-appserver/internal/registry/memory"
)

// heldTracker is a registry that remembers which pushes it holds for
// redelivery, as written by KeepPushes.
type heldTracker struct {
	*memory.Store
	mu   sync.Mutex
	held map[string][]byte
}

func (s *heldTracker) KeepPushes(ctx context.Context, owner string, lease time.Duration, renew bool, put []registry.HeldPush, del []string) error {
	err := s.Store.KeepPushes(ctx, owner, lease, renew, put, del)
	if err == nil {
		s.mu.Lock()
		for _, p := range put {
			s.held[p.Device] = p.Push
		}
		for _, d := range del {
			delete(s.held, d)
		}
		s.mu.Unlock()
	}
	return err
}

// holding says whether a push held in the registry contains text.
func (s *heldTracker) holding(text string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, p := range s.held {
		if strings.Contains(string(p), text) {
			return true
		}
	}
	return false
}

// TestRemovedDeviceForgetsItsWaitingPush: a push waiting for redelivery
// keeps what the user's server sent (the summary's sender and body, for
// an app that shows them) in memory and in the registry. Once its device
// is gone (unregistered, or its token declared dead), nothing may be
// sent to it any more, so that must be forgotten at once, not kept until
// the push's next attempt, which may be minutes away (Retry-After, the
// backoff, an app whose credentials are refused; at most the redelivery
// window).
func TestRemovedDeviceForgetsItsWaitingPush(t *testing.T) {
	for _, how := range []string{"unregistered", "dead token"} {
		t.Run(how, func(t *testing.T) {
			ctx := context.Background()
			store := &heldTracker{Store: memory.New(), held: map[string][]byte{}}
			b := &scripted{answers: map[string]error{}}
			svc, err := appserver.New(store, testApps(b), appserver.Options{Redelivery: time.Hour}, slog.New(slog.NewTextHandler(io.Discard, nil)))
			if err != nil {
				t.Fatal(err)
			}
			// The next attempt is an hour away.
			svc.SetRedeliveryTiming(time.Hour, 5*time.Millisecond)
			running(t, svc)
			reg, _ := svc.Register(ctx, appserver.Caller{}, "fcm", "n1", "t1")
			other, _ := svc.Register(ctx, appserver.Caller{}, "fcm", "n2", "t1")
			b.set("t1", outage)
			svc.Push(ctx, appserver.PushRequest{Node: "n1", Secret: reg.Secret, Summary: &push.Summary{LastMessageSender: "juliet@capulet.example", LastMessageBody: "meet me at the balcony", HasLastMessageBody: true}})
			eventually(t, func() bool { return store.holding("meet me at the balcony") }, func() string { return "the push never waited in the registry" })

			switch how {
			case "unregistered":
				if _, err := svc.Unregister(ctx, appserver.Caller{}, "fcm", "n1"); err != nil {
					t.Fatal(err)
				}
			case "dead token":
				// A push to another node of the same token finds it dead:
				// both registrations go.
				b.set("t1", &push.DeadTokenError{Since: time.Now().Add(time.Minute), Reason: "Unregistered"})
				svc.Push(ctx, appserver.PushRequest{Node: "n2", Secret: other.Secret})
				if _, err := store.Get(ctx, "n1"); err == nil {
					t.Fatal("n1 was not removed with its dead token")
				}
			}
			if s := svc.RedeliveryStats(); s.Pending != 0 {
				t.Errorf("the removed device's push still waits: %+v", s)
			}
			eventually(t, func() bool { return !store.holding("meet me at the balcony") }, func() string {
				return fmt.Sprintf("the removed device's message is still held in the registry: %+v", svc.RedeliveryStats())
			})
		})
	}
}
