package appserver

import (
	"context"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/push-appserver/push-appserver/internal/push"
	"github.com/push-appserver/push-appserver/internal/registry/memory"
	"github.com/push-appserver/push-appserver/internal/testutil/fakeclock"
)

// byToken answers each push by its token, as set.
type byToken struct {
	mu      sync.Mutex
	answers map[string]error
	sent    map[string]int
}

func (b *byToken) Send(_ context.Context, n push.Notification) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.sent[n.Token]++
	return b.answers[n.Token]
}

func (b *byToken) Close() error { return nil }

func (b *byToken) set(token string, err error) {
	b.mu.Lock()
	b.answers[token] = err
	b.mu.Unlock()
}

func (b *byToken) count(token string) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.sent[token]
}

// TestPartialRefusalOfProbeOpensGate guards an FCM app whose pushes
// were held by its credentials gate (FCM refused the service account:
// a role missing on the project) and whose Firebase project also holds
// an invalid APNs key, once the role is granted (outside the
// configuration, so no reload tells the gate). FCM answers
// THIRD_PARTY_AUTH_ERROR only to a request it authenticated and
// authorized, and refuses then the iOS device's platform key alone: a
// probe refused so proves the app's credentials as a push to the
// device does, and opens the gate. Taken for a probe that says nothing,
// it left the gate closed, and every push of the app's Android devices
// held, until a later probe, up to a minute later each, happened to be
// one of theirs.
func TestPartialRefusalOfProbeOpensGate(t *testing.T) {
	ctx := context.Background()
	clock := fakeclock.New(time.Now())
	b := &byToken{answers: map[string]error{}, sent: map[string]int{}}
	s, err := New(memory.New(), []App{{Name: "fcm", Priority: push.PriorityHigh, Backend: b}},
		Options{Redelivery: 10 * time.Minute, Now: clock.Now}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	const iosTok, androidTok = "ios-token", "android-token"
	ios, err := s.Register(ctx, Caller{}, "fcm", "ios", iosTok)
	if err != nil {
		t.Fatal(err)
	}
	android, err := s.Register(ctx, Caller{}, "fcm", "android", androidTok)
	if err != nil {
		t.Fatal(err)
	}
	b.set(androidTok, &push.CredentialsRefusedError{Reason: "FCM 403 PERMISSION_DENIED"})
	if err := s.Push(ctx, PushRequest{Node: "android", Secret: android.Secret}); err == nil {
		t.Fatal("push refused for the app's credentials succeeded")
	}
	// The role granted: FCM takes the app's credentials, and refuses
	// the iOS device's platform key alone.
	b.set(androidTok, nil)
	b.set(iosTok, &push.CredentialsRefusedError{Reason: "FCM 401 THIRD_PARTY_AUTH_ERROR", Partial: true})
	clock.Advance(2 * time.Minute) // a probe due
	if err := s.Push(ctx, PushRequest{Node: "ios", Secret: ios.Secret}); err == nil {
		t.Fatal("push refused for the iOS platform key succeeded")
	}
	if n := b.count(iosTok); n != 1 {
		t.Fatalf("the iOS device's push, the probe, made %d requests, want 1", n)
	}
	before := b.count(androidTok)
	if err := s.Push(ctx, PushRequest{Node: "android", Secret: android.Secret}); err != nil {
		t.Fatalf("push to the Android device once FCM authenticated a probe (refusing only the iOS device's platform key): %v; want it sent (%d requests)", err, b.count(androidTok)-before)
	}
}
