package e2e_test

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/push-appserver/push-appserver/internal/push"
)

// tooLargeOnce fails its first push as a backend does a notification the
// user's server encrypted larger than the push service takes, and
// records the others.
type tooLargeOnce struct {
	recorder
	refused atomic.Int32
}

func (b *tooLargeOnce) Send(ctx context.Context, n push.Notification) error {
	if b.refused.CompareAndSwap(0, 1) {
		return fmt.Errorf("apns: 5000-byte payload, Apple takes 4096: %w", push.ErrPayloadTooLarge)
	}
	return b.recorder.Send(ctx, n)
}

// TestTooLargeKeepsPushSession: a notification too large for the push
// service is one message's trouble, not the push session's. The user's
// server hears wait (bad-request), on which ejabberd keeps the push
// session (on an error of any other type it deletes it at once) and
// Prosody counts nothing towards push_max_errors; the next message
// pushes.
func TestTooLargeKeepsPushSession(t *testing.T) { eachServer(t, testTooLargeKeepsPushSession) }

func testTooLargeKeepsPushSession(t *testing.T, start startServer) {
	b := &tooLargeOnce{}
	s := startStackAppsOn(t, start, map[string]push.Backend{"apns": b, "fcm": &recorder{}})
	s.backend = &b.recorder
	node, secret := s.registerHTTP(t, "alice-phone", "token-large")
	alice := login(t, s.xmpp.C2SAddr, "alice", s.xmpp.Domain, "alice-pw")
	alice.enablePush(s.xmpp.ComponentJID, node, secret)
	alice.close()
	bob := login(t, s.xmpp.C2SAddr, "bob", s.xmpp.Domain, "bob-pw")
	defer bob.close()

	bob.sendChat("alice@"+s.xmpp.Domain, "a message whose push is too large")
	waitFor(t, func() bool { return b.refused.Load() == 1 })
	// The server has our answer once it logged it.
	heard := map[string]string{"Prosody": "Encrypted notification too large", "ejabberd": "rejected notification"}[s.xmpp.Name]
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(s.xmpp.Log(), heard) {
		if time.Now().After(deadline) {
			t.Fatalf("%s did not log our answer (%q):\n%s", s.xmpp.Name, heard, s.xmpp.Log())
		}
		time.Sleep(20 * time.Millisecond)
	}

	bob.sendChat("alice@"+s.xmpp.Domain, "the next message")
	s.waitPushes(t, "token-large", 1)
	for _, l := range strings.Split(s.xmpp.Log(), "\n") {
		if strings.Contains(l, "disabling push") || strings.Contains(l, "error count for this identifier is now at") {
			t.Fatalf("%s counted our answer against the push session: %s", s.xmpp.Name, l)
		}
	}
}
