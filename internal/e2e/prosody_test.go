package e2e_test

import (
	"context"
	"encoding/xml"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"mellium.im/xmpp/stanza"

	"github.com/push-appserver/push-appserver/internal/appserver"
	"github.com/push-appserver/push-appserver/internal/httpapi"
	"github.com/push-appserver/push-appserver/internal/push"
	"github.com/push-appserver/push-appserver/internal/registry"
	"github.com/push-appserver/push-appserver/internal/registry/sqlite"
	"github.com/push-appserver/push-appserver/internal/xmpp/adhoc"
	"github.com/push-appserver/push-appserver/internal/xmpp/component"
	"github.com/push-appserver/push-appserver/internal/xmpp/dataform"
)

// recorder is a push backend that remembers what it was asked to send.
// The services' own backends are tested against their mocks; here the
// point is what Prosody and the component deliver to the core.
type recorder struct {
	mu   sync.Mutex
	sent []push.Notification
}

func (r *recorder) Send(ctx context.Context, n push.Notification) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.sent = append(r.sent, n)
	return nil
}

func (r *recorder) forToken(tok string) []push.Notification {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []push.Notification
	for _, n := range r.sent {
		if n.Token == tok {
			out = append(out, n)
		}
	}
	return out
}

type stack struct {
	xmpp    *xmppServer
	store   registry.Store
	svc     *appserver.Service
	backend *recorder
	conn    *component.Conn
	http    *httptest.Server
}

func logger(t *testing.T) *slog.Logger {
	if os.Getenv("E2E_VERBOSE") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// startStack runs Prosody, and the app server (core, SQLite, component,
// HTTP API) connected to it, with a recording backend for every app.
func startStack(t *testing.T) *stack {
	t.Helper()
	return startStackOn(t, startProsody)
}

// startStackOn is startStack on the given XMPP server.
func startStackOn(t *testing.T, start startServer) *stack {
	t.Helper()
	rec := &recorder{}
	return startStackWithOn(t, start, rec, rec)
}

func startStackWith(t *testing.T, rec *recorder, apnsBackend push.Backend) *stack {
	t.Helper()
	return startStackWithOn(t, startProsody, rec, apnsBackend)
}

func startStackWithOn(t *testing.T, start startServer, rec *recorder, apnsBackend push.Backend) *stack {
	t.Helper()
	s := startStackAppsOn(t, start, map[string]push.Backend{"apns": apnsBackend, "fcm": rec})
	s.backend = rec
	return s
}

// startStackWithApps is startStack with the given backend per app (both
// "apns" and "fcm" must be there; "webpush" is optional and turns on
// register-push-webpush).
func startStackWithApps(t *testing.T, backends map[string]push.Backend, configure ...func(*component.Options)) *stack {
	t.Helper()
	return startStackAppsOn(t, startProsody, backends, configure...)
}

func startStackAppsOn(t *testing.T, start startServer, backends map[string]push.Backend, configure ...func(*component.Options)) *stack {
	t.Helper()
	store, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "registry.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	return startStackOnRegistry(t, start, store, backends, configure...)
}

// startStackOnRegistry is startStackAppsOn over the given registry.
func startStackOnRegistry(t *testing.T, start startServer, store registry.Store, backends map[string]push.Backend, configure ...func(*component.Options)) *stack {
	t.Helper()
	p := start(t)

	log := logger(t)
	apps := []appserver.App{
		{Name: "apns", Priority: push.PriorityAuto, Backend: backends["apns"]},
		{Name: "fcm", Priority: push.PriorityAuto, Backend: backends["fcm"]},
	}
	cmds := adhoc.Options{V1: true, FCMApp: "fcm"}
	if b, ok := backends["webpush"]; ok {
		apps = append(apps, appserver.App{Name: "webpush", Priority: push.PriorityAuto, Backend: b})
		cmds.WebPushApp = "webpush"
	}
	svc, err := appserver.New(store, apps, appserver.Options{RateLimit: 0}, log)
	if err != nil {
		t.Fatal(err)
	}
	opts := component.Options{
		Addr: p.ComponentAddr, JID: p.ComponentJID, Secret: p.ComponentSecret,
		Commands:   cmds,
		MaxBackoff: 500 * time.Millisecond, Logger: log,
	}
	for _, c := range configure {
		c(&opts)
	}
	conn := component.New(opts, svc)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { conn.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	waitConnected(t, conn)

	h := httptest.NewServer(httpapi.New(httpapi.Options{Service: svc, Registrations: store, Logger: log}))
	t.Cleanup(h.Close)
	return &stack{xmpp: p, store: store, svc: svc, conn: conn, http: h}
}

func waitConnected(t *testing.T, c *component.Conn) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !c.Connected() {
		if time.Now().After(deadline) {
			t.Fatal("component did not connect to the XMPP server")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (s *stack) registerHTTP(t *testing.T, node, token string) (string, string) {
	t.Helper()
	resp, err := http.PostForm(s.http.URL+"/push_appserver/v1/register", url.Values{"type": {"apns"}, "node": {node}, "token": {token}})
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	lines := strings.Split(string(b), "\n")
	if len(lines) != 3 || lines[0] != "OK" {
		t.Fatalf("register over HTTP: %q", b)
	}
	return lines[1], lines[2]
}

// waitPushes waits up to 5 s for exactly want pushes to token, then checks
// that no more arrive for a moment.
func (s *stack) waitPushes(t *testing.T, token string, want int) []push.Notification {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for len(s.backend.forToken(token)) < want && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(300 * time.Millisecond)
	got := s.backend.forToken(token)
	if len(got) != want {
		t.Fatalf("%d pushes for %s, want %d", len(got), token, want)
	}
	return got
}

// offlineMessage has alice enable push with node and secret and go
// offline; bob then writes to her, which makes her server push.
func (s *stack) offlineMessage(t *testing.T, alice *client, node, secret string) {
	t.Helper()
	alice.enablePush(s.xmpp.ComponentJID, node, secret)
	alice.close()
	bob := login(t, s.xmpp.C2SAddr, "bob", s.xmpp.Domain, "bob-pw")
	bob.sendChat("alice@"+s.xmpp.Domain, "Hello Alice")
	bob.close()
}

func TestPushRegisteredOverHTTP(t *testing.T) { eachServer(t, testPushRegisteredOverHTTP) }

func testPushRegisteredOverHTTP(t *testing.T, start startServer) {
	s := startStackOn(t, start)
	node, secret := s.registerHTTP(t, "alice-phone", "token-http")
	alice := login(t, s.xmpp.C2SAddr, "alice", s.xmpp.Domain, "alice-pw")
	s.offlineMessage(t, alice, node, secret)
	got := s.waitPushes(t, "token-http", 1)
	if got[0].Priority != push.PriorityHigh || got[0].Node != node || got[0].Summary == nil || !got[0].Summary.HasLastMessageBody {
		t.Fatalf("push %+v summary %+v: want high priority with a body in the summary", got[0], got[0].Summary)
	}
}

func TestPushRegisteredByCommand(t *testing.T) { eachServer(t, testPushRegisteredByCommand) }

func testPushRegisteredByCommand(t *testing.T, start startServer) {
	s := startStackOn(t, start)
	alice := login(t, s.xmpp.C2SAddr, "alice", s.xmpp.Domain, "alice-pw")
	res, err := alice.command(s.xmpp.ComponentJID, adhoc.V1Register, map[string]string{"type": "apns", "node": "alice-ipad", "token": "token-cmd"})
	if err != nil {
		t.Fatal(err)
	}
	if res["status"] != "complete" || res["node"] != "alice-ipad" || res["jid"] != s.xmpp.ComponentJID || len(res["secret"]) != 64 {
		t.Fatalf("command result %v", res)
	}
	s.offlineMessage(t, alice, res["node"], res["secret"])
	got := s.waitPushes(t, "token-cmd", 1)
	if got[0].Priority != push.PriorityHigh {
		t.Fatalf("priority %s, want high", got[0].Priority)
	}
}

func TestConversationsRegisterPushFCM(t *testing.T) { eachServer(t, testConversationsRegisterPushFCM) }

func testConversationsRegisterPushFCM(t *testing.T, start startServer) {
	s := startStackOn(t, start)
	alice := login(t, s.xmpp.C2SAddr, "alice", s.xmpp.Domain, "alice-pw")
	res, err := alice.command(s.xmpp.ComponentJID, adhoc.RegisterFCM, map[string]string{"token": "fcm-token", "android-id": "a1b2c3"})
	if err != nil {
		t.Fatal(err)
	}
	again, err := alice.command(s.xmpp.ComponentJID, adhoc.RegisterFCM, map[string]string{"token": "fcm-token", "android-id": "a1b2c3"})
	if err != nil || again["node"] != res["node"] || again["secret"] != res["secret"] {
		t.Fatalf("repeated registration: %v vs %v (%v)", again, res, err)
	}
	s.offlineMessage(t, alice, res["node"], res["secret"])
	got := s.waitPushes(t, "fcm-token", 1)
	if got[0].App != "fcm" {
		t.Fatalf("push went to app %q", got[0].App)
	}
}

func TestWrongSecret(t *testing.T) { eachServer(t, testWrongSecret) }

func testWrongSecret(t *testing.T, start startServer) {
	s := startStackOn(t, start)
	node, _ := s.registerHTTP(t, "alice-phone", "token-wrong")
	alice := login(t, s.xmpp.C2SAddr, "alice", s.xmpp.Domain, "alice-pw")
	s.offlineMessage(t, alice, node, strings.Repeat("0", 64))
	s.waitPushes(t, "token-wrong", 0)
	// The server got our item-not-found and logged it.
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(s.xmpp.Log(), s.xmpp.Rejected) {
		if time.Now().After(deadline) {
			t.Fatalf("%s did not log an error reply from the app server", s.xmpp.Name)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// startStackCountingDrops starts a stack on start's server and counts
// the times its component's stream was lost.
func startStackCountingDrops(t *testing.T, start startServer) (*stack, *atomic.Int32) {
	drops := new(atomic.Int32)
	s := startStackAppsOn(t, start, map[string]push.Backend{"apns": &recorder{}, "fcm": &recorder{}}, func(o *component.Options) {
		o.OnState = func(up bool) {
			if !up {
				drops.Add(1)
			}
		}
	})
	return s, drops
}

// Any user of any server can send the component an IQ, and the XMPP
// servers route more than the component's 64 KiB for one (Prosody takes
// 256 KiB from a client): such a command is answered with an error, and
// the component's stream, which carries everyone's pushes, stays up.
func TestOversizeCommandFromUser(t *testing.T) { eachServer(t, testOversizeCommandFromUser) }

func testOversizeCommandFromUser(t *testing.T, start startServer) {
	s, drops := startStackCountingDrops(t, start)
	bob := login(t, s.xmpp.C2SAddr, "bob", s.xmpp.Domain, "bob-pw")
	form := &dataform.Form{Type: "submit", Fields: []dataform.Field{
		{Var: "type", Values: []string{"apns"}}, {Var: "node", Values: []string{"n"}}, {Var: "token", Values: []string{"ab"}},
		{Var: "padding", Values: []string{strings.Repeat("x", 70<<10)}},
	}}
	err := bob.iq(s.xmpp.ComponentJID, stanza.SetIQ, adhoc.Command{Node: adhoc.V1Register, Action: "execute", Form: form}, nil)
	if err == nil || !strings.Contains(err.Error(), "modify") || !strings.Contains(err.Error(), "not-acceptable") {
		t.Errorf("answer to a 70 KiB command: %v, want modify/not-acceptable", err)
	}
	if n := drops.Load(); n > 0 {
		t.Fatalf("one user's IQ took the component off %s (%d streams lost)", s.xmpp.Name, n)
	}
}

func TestRestart(t *testing.T) { eachServer(t, testRestart) }

func testRestart(t *testing.T, start startServer) {
	s := startStackOn(t, start)
	node, secret := s.registerHTTP(t, "alice-phone", "token-restart")
	alice := login(t, s.xmpp.C2SAddr, "alice", s.xmpp.Domain, "alice-pw")
	alice.enablePush(s.xmpp.ComponentJID, node, secret)
	alice.close()

	s.xmpp.Restart()
	waitConnected(t, s.conn)
	bob := login(t, s.xmpp.C2SAddr, "bob", s.xmpp.Domain, "bob-pw")
	bob.sendChat("alice@"+s.xmpp.Domain, "after the restart")
	bob.close()
	s.waitPushes(t, "token-restart", 1)
}

func TestKeepAliveThroughServer(t *testing.T) { eachServer(t, testKeepAliveThroughServer) }

// The component's keep-alive ping goes to its own JID; the real server
// routes it back, so a quiet stream is kept however long it stays quiet,
// and pushes still arrive on it.
func testKeepAliveThroughServer(t *testing.T, start startServer) {
	rec := &recorder{}
	var drops atomic.Int32
	s := startStackAppsOn(t, start, map[string]push.Backend{"apns": rec, "fcm": rec}, func(o *component.Options) {
		o.KeepAlive = 500 * time.Millisecond
		o.OnState = func(up bool) {
			if !up {
				drops.Add(1)
			}
		}
	})
	s.backend = rec
	node, secret := s.registerHTTP(t, "alice-phone", "token-keepalive")
	alice := login(t, s.xmpp.C2SAddr, "alice", s.xmpp.Domain, "alice-pw")
	alice.enablePush(s.xmpp.ComponentJID, node, secret)
	alice.close()
	// Quiet for ten keep-alives: an unanswered ping ends the stream
	// after one and a half.
	time.Sleep(5 * time.Second)
	if n := drops.Load(); n != 0 || !s.conn.Connected() {
		t.Fatalf("the stream was dropped %d times while quiet behind %s (connected: %v)", n, s.xmpp.Name, s.conn.Connected())
	}
	bob := login(t, s.xmpp.C2SAddr, "bob", s.xmpp.Domain, "bob-pw")
	bob.sendChat("alice@"+s.xmpp.Domain, "after a quiet while")
	bob.close()
	s.waitPushes(t, "token-keepalive", 1)
}

// Anyone can send the component's JID a stanza, and a user's server
// routes one of up to 256 KiB from its client, opening tag included, and
// re-escapes what it routes: Prosody writes each " of a text as &quot;,
// six bytes for the one its client sent, so a message within 256 KiB
// arrives larger than 1 MiB. None of them may end the component's stream.
func TestLargeStanzasFromUser(t *testing.T) { eachServer(t, testLargeStanzasFromUser) }

func testLargeStanzasFromUser(t *testing.T, start startServer) {
	for _, tc := range []struct{ name, raw string }{
		{"message of quotes", `<message to='%s' type='chat' id='m1'><body>` + strings.Repeat(`"`, 200<<10) + `</body></message>`},
		{"message with a long id", `<message to='%s' type='chat' id='` + strings.Repeat("a", 70<<10) + `'><body>hi</body></message>`},
		{"IQ with a long id", `<iq type='get' to='%s' id='` + strings.Repeat("a", 70<<10) + `'><query xmlns='jabber:iq:version'/></iq>`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, drops := startStackCountingDrops(t, start)
			bob := login(t, s.xmpp.C2SAddr, "bob", s.xmpp.Domain, "bob-pw")
			if _, err := fmt.Fprintf(bob.sess.Conn(), tc.raw, s.xmpp.ComponentJID); err != nil {
				t.Fatal(err)
			}
			// The server routes bob's stanzas to the component in
			// order: once this IQ is answered, the large one was read.
			info := struct {
				XMLName xml.Name `xml:"http://jabber.org/protocol/disco#info query"`
			}{}
			if err := bob.iq(s.xmpp.ComponentJID, stanza.GetIQ, info, nil); err != nil {
				t.Errorf("disco#info after the %s: %v", tc.name, err)
			}
			if n := drops.Load(); n > 0 {
				t.Fatalf("one user's %s took the component off %s (%d streams lost)", tc.name, s.xmpp.Name, n)
			}
		})
	}
}
