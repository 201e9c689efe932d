package e2e_test

import (
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/push-appserver/push-appserver/internal/push"
	"github.com/push-appserver/push-appserver/internal/xmpp/component"
)

// A component JID configured in another case (jid = "PUSH.LOCALHOST")
// is the server's domain as the server writes it: Prosody closes the
// stream (invalid-from) on a ping from another spelling, and so the
// quiet stream stays up and pushes arrive.
func TestMixedCaseComponentJID(t *testing.T) { eachServer(t, testMixedCaseComponentJID) }

func testMixedCaseComponentJID(t *testing.T, start startServer) {
	rec := &recorder{}
	var drops atomic.Int32
	s := startStackAppsOn(t, start, map[string]push.Backend{"apns": rec, "fcm": rec}, func(o *component.Options) {
		o.JID = strings.ToUpper(o.JID)
		o.KeepAlive = 500 * time.Millisecond
		o.OnState = func(up bool) {
			if !up {
				drops.Add(1)
			}
		}
	})
	s.backend = rec
	node, secret := s.registerHTTP(t, "alice-phone", "token-case")
	alice := login(t, s.xmpp.C2SAddr, "alice", s.xmpp.Domain, "alice-pw")
	alice.enablePush(s.xmpp.ComponentJID, node, secret)
	alice.close()
	time.Sleep(4 * time.Second)
	if n := drops.Load(); n != 0 || !s.conn.Connected() {
		t.Errorf("the stream was dropped %d times while quiet behind %s (connected: %v)", n, s.xmpp.Name, s.conn.Connected())
	}
	bob := login(t, s.xmpp.C2SAddr, "bob", s.xmpp.Domain, "bob-pw")
	bob.sendChat("alice@"+s.xmpp.Domain, "hello")
	bob.close()
	s.waitPushes(t, "token-case", 1)
}
