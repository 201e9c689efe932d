package e2e_test

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/push-appserver/push-appserver/internal/push"
	"github.com/push-appserver/push-appserver/internal/testutil/logbuf"
	"github.com/push-appserver/push-appserver/internal/testutil/netfreeze"
	"github.com/push-appserver/push-appserver/internal/testutil/prosody"
	"github.com/push-appserver/push-appserver/internal/xmpp/component"
)

// TestProsodyComponentAfterSilentNetworkLoss guards what follows when the
// network between Prosody and the only app server instance lost their
// connection without a word (a NAT or firewall on the way that forgot
// it, a partition). The component notices with its keep-alive and
// connects again. Prosody still holds the old stream, which it learns is
// dead only when its TCP gives up writing to it (about 15 minutes on
// Linux).
//
// With the operators' example as shipped (Prosody's default
// component_conflict_resolve, kick_new), Prosody refuses the new stream
// with conflict and routes every publish into the dead one: no user gets
// a push, and mod_cloud_notify hears no error. The app server cannot
// change that, but it must not call it standing by (healthy, ready, as a
// standby behind another instance is): it reports the component down
// and logs the lock-out with its remedy. With kick_old, which the example
// and README advise for one instance, the new stream replaces the dead
// one and the next message pushes.
func TestProsodyComponentAfterSilentNetworkLoss(t *testing.T) {
	t.Run("as shipped", func(t *testing.T) {
		s, logs := cutComponentStream(t, "")
		deadline := time.Now().Add(15 * time.Second)
		for !strings.Contains(logs.String(), "refuses the component (conflict) since our last stream to it went silent") {
			if time.Now().After(deadline) {
				t.Fatalf("15 s after the stream was found dead, no word of the lock-out (standing by: %v, connected: %v): Prosody refuses every new stream with conflict while it holds the dead one and routes every publish into it, and a component standing by is healthy and ready\n%s", s.conn.StandingBy(), s.conn.Connected(), logs.String())
			}
			time.Sleep(20 * time.Millisecond)
		}
		if s.conn.StandingBy() || s.conn.Connected() {
			t.Fatalf("locked out by Prosody, the component says standing by %v, connected %v; want neither (down)", s.conn.StandingBy(), s.conn.Connected())
		}
	})
	t.Run("kick_old", func(t *testing.T) {
		s, _ := cutComponentStream(t, `component_conflict_resolve = "kick_old"`)
		deadline := time.Now().Add(15 * time.Second)
		for !s.conn.Connected() {
			if time.Now().After(deadline) {
				t.Fatalf("no stream to Prosody 15 s after the old one was found dead (standing by: %v)", s.conn.StandingBy())
			}
			time.Sleep(20 * time.Millisecond)
		}
		bob := login(t, s.xmpp.C2SAddr, "bob", s.xmpp.Domain, "bob-pw")
		bob.sendChat("alice@"+s.xmpp.Domain, "after the network came back")
		bob.close()
		s.waitPushes(t, "token-netloss", 1)
	})
}

// cutComponentStream starts Prosody with extra in its global section and
// the app server connected to it through a proxy, has alice enable push,
// then cuts the component's stream without a word to either side and
// waits for the component's keep-alive to give it up. It returns the
// stack and the component's log.
func cutComponentStream(t *testing.T, extra string) (*stack, *logbuf.Buffer) {
	t.Helper()
	var proxy *netfreeze.Proxy
	rec := &recorder{}
	logs := new(logbuf.Buffer)
	s := startStackAppsOn(t, func(t *testing.T) *xmppServer {
		x := startProsodyWith(t, prosody.Options{Extra: extra})
		proxy = netfreeze.Start(t, x.ComponentAddr)
		through := *x
		through.ComponentAddr = proxy.Addr()
		return &through
	}, map[string]push.Backend{"apns": rec, "fcm": rec}, func(o *component.Options) {
		o.KeepAlive = time.Second
		o.Logger = slog.New(slog.NewTextHandler(logs, nil))
	})
	s.backend = rec
	node, secret := s.registerHTTP(t, "alice-phone", "token-netloss")
	alice := login(t, s.xmpp.C2SAddr, "alice", s.xmpp.Domain, "alice-pw")
	alice.enablePush(s.xmpp.ComponentJID, node, secret)
	alice.close()

	proxy.Cut()
	deadline := time.Now().Add(15 * time.Second)
	for s.conn.Connected() {
		if time.Now().After(deadline) {
			t.Fatal("the keep-alive did not notice the dead stream")
		}
		time.Sleep(20 * time.Millisecond)
	}
	return s, logs
}

// TestProsodyStandbyAfterGivenUpStreamClosed guards two instances on
// Prosody (kick_new, as shipped) when the active one's keep-alive gives
// up a stream whose close does reach Prosody (a server or network that
// was only slow): Prosody drops the stream, the instance standing by
// takes the component, and the one that gave up meets conflict from
// then on. That is a standby's wait, and it must say so (standing by,
// ready), not report the component down and log that every push is
// lost, for the 20 minutes its lock-out heuristic allows, while the
// other instance serves every push.
func TestProsodyStandbyAfterGivenUpStreamClosed(t *testing.T) {
	var proxy *netfreeze.Proxy
	rec := &recorder{}
	logs := new(logbuf.Buffer)
	var x *xmppServer
	s := startStackAppsOn(t, func(t *testing.T) *xmppServer {
		x = startProsodyWith(t, prosody.Options{})
		proxy = netfreeze.Start(t, x.ComponentAddr)
		through := *x
		through.ComponentAddr = proxy.Addr()
		return &through
	}, map[string]push.Backend{"apns": rec, "fcm": rec}, func(o *component.Options) {
		o.KeepAlive = time.Second
		o.Logger = slog.New(slog.NewTextHandler(logs, nil))
	})
	s.backend = rec
	// The other instance, standing by.
	other := component.New(component.Options{
		Addr: x.ComponentAddr, JID: x.ComponentJID, Secret: x.ComponentSecret,
		MaxBackoff: 200 * time.Millisecond, KeepAlive: time.Second,
		Logger: slog.New(slog.DiscardHandler),
	}, s.svc)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { other.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	deadline := time.Now().Add(15 * time.Second)
	for !other.StandingBy() {
		if time.Now().After(deadline) {
			t.Fatal("the second instance does not stand by")
		}
		time.Sleep(20 * time.Millisecond)
	}

	// Nothing passes any more, but a close does; the first reconnection
	// is slow, so that the other instance takes the component.
	proxy.DelayNext(3 * time.Second)
	proxy.Freeze()
	deadline = time.Now().Add(15 * time.Second)
	for !other.Connected() {
		if time.Now().After(deadline) {
			t.Fatalf("the instance standing by did not take the component (first: connected %v)", s.conn.Connected())
		}
		time.Sleep(20 * time.Millisecond)
	}
	deadline = time.Now().Add(15 * time.Second)
	for !s.conn.StandingBy() {
		if time.Now().After(deadline) {
			t.Fatalf("15 s after the other instance took the component, the first says standing by %v, connected %v; want standing by\n%s", s.conn.StandingBy(), s.conn.Connected(), logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}
