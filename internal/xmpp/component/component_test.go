package component_test

import (
	"bytes"
	"cmp"
	"context"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/push-appserver/push-appserver/internal/appserver"
	"github.com/push-appserver/push-appserver/internal/push"
	"github.com/push-appserver/push-appserver/internal/registry/memory"
	"github.com/push-appserver/push-appserver/internal/testutil/logbuf"
	"github.com/push-appserver/push-appserver/internal/testutil/netfreeze"
	"github.com/push-appserver/push-appserver/internal/testutil/xmppfake"
	"github.com/push-appserver/push-appserver/internal/xmpp/adhoc"
	"github.com/push-appserver/push-appserver/internal/xmpp/component"
)

const (
	compJID = "push.example.net"
	secret  = "s3cret"
)

// fakeServer is the XMPP server's side, with the test's helpers.
type fakeServer struct{ *xmppfake.Server }

type stream struct{ *xmppfake.Stream }

func newFakeServer(t *testing.T, secret string) *fakeServer {
	t.Helper()
	s, err := xmppfake.Listen(compJID, secret)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return &fakeServer{s}
}

func (s *fakeServer) accept(t *testing.T) *stream {
	t.Helper()
	st, err := s.Accept(10 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	return &stream{st}
}

func (st *stream) send(t *testing.T, s string) {
	t.Helper()
	if err := st.Send(s); err != nil {
		t.Fatal(err)
	}
}

// waitClosed reads until the component closes its stream.
func (st *stream) waitClosed(t *testing.T) {
	t.Helper()
	st.Conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		tok, err := st.Dec.Token()
		if err != nil {
			t.Fatalf("stream not closed cleanly: %v", err)
		}
		if end, ok := tok.(xml.EndElement); ok && end.Name.Local == "stream" {
			return
		}
	}
}

type reply struct {
	XMLName xml.Name
	ID      string     `xml:"id,attr"`
	Type    string     `xml:"type,attr"`
	To      string     `xml:"to,attr"`
	From    string     `xml:"from,attr"`
	Inner   string     `xml:",innerxml"`
	Attrs   []xml.Attr `xml:"-"` // every attribute, as sent
}

// next reads the next stanza the component sent.
func (st *stream) next(t *testing.T) reply {
	t.Helper()
	st.Conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		tok, err := st.Dec.Token()
		if err != nil {
			t.Fatalf("reading from component: %v", err)
		}
		if start, ok := tok.(xml.StartElement); ok {
			var r reply
			r.Attrs = start.Attr
			if err := st.Dec.DecodeElement(&r, &start); err != nil {
				t.Fatal(err)
			}
			return r
		}
	}
}

// blocking is a push backend whose pushes to token "slow" wait for release.
type blocking struct {
	release chan struct{}
	mu      sync.Mutex
	sent    []push.Notification
	fail    map[string]error
	waiting int        // pushes to "slow" that reached Send
	changed *sync.Cond // on mu
}

// pushUnderWay sends a publish whose push waits in the backend (token
// "slow") until the test ends, and returns once it is there.
func (f *fixture) pushUnderWay(t *testing.T, st *stream) {
	t.Helper()
	slow, _ := f.svc.Register(context.Background(), appserver.Caller{}, "apns", "slow", "slow")
	st.send(t, publish("under-way", "slow", slow.Secret, true))
	waitSlow(f.backend)
}

// waitSlow waits until a push to token "slow" is inside Send.
func waitSlow(b *blocking) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for b.waiting == 0 {
		b.changed.Wait()
	}
}

func (b *blocking) Send(ctx context.Context, n push.Notification) error {
	if n.Token == "slow" {
		b.mu.Lock()
		b.waiting++
		b.mu.Unlock()
		b.changed.Broadcast()
		<-b.release
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.sent = append(b.sent, n)
	return b.fail[n.Token]
}

type fixture struct {
	srv     *fakeServer
	svc     *appserver.Service
	backend *blocking
	conn    *component.Conn
	cancel  context.CancelFunc
	done    chan error
}

func newFixture(t *testing.T, rate time.Duration, compSecret string) *fixture {
	t.Helper()
	return newFixtureWith(t, rate, compSecret, nil)
}

// newFixtureWith is newFixture with the component's options changed by
// configure.
func newFixtureWith(t *testing.T, rate time.Duration, compSecret string, configure func(*component.Options)) *fixture {
	t.Helper()
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	b := &blocking{release: make(chan struct{}), fail: map[string]error{
		"broken": &push.TemporaryError{Reason: "503"},
	}}
	b.changed = sync.NewCond(&b.mu)
	svc, err := appserver.New(memory.New(), []appserver.App{
		{Name: "apns", Priority: push.PriorityAuto, Backend: b},
		{Name: "fcm", Priority: push.PriorityHigh, Backend: b},
	}, appserver.Options{RateLimit: rate}, logger)
	if err != nil {
		t.Fatal(err)
	}
	srv := newFakeServer(t, secret)
	opts := component.Options{
		Addr: srv.Addr(), JID: compJID, Secret: compSecret,
		Commands:   adhoc.Options{V1: true, FCMApp: "fcm"},
		MaxBackoff: 200 * time.Millisecond, MaxStanza: 16 << 10, Logger: logger,
		// The fake server does not answer our closing tag by closing its
		// side, as real servers do: don't wait for it.
		DrainTimeout: 300 * time.Millisecond,
	}
	if configure != nil {
		configure(&opts)
	}
	conn := component.New(opts, svc)
	ctx, cancel := context.WithCancel(context.Background())
	f := &fixture{srv: srv, svc: svc, backend: b, conn: conn, cancel: cancel, done: make(chan error, 1)}
	go func() { f.done <- conn.Run(ctx) }()
	t.Cleanup(func() {
		close(b.release)
		cancel()
		<-f.done
	})
	return f
}

func publish(id, node, secret string, body bool) string {
	return xmppfake.PublishIQ(id, "example.org", compJID, node, secret, body)
}

func TestPushReplies(t *testing.T) {
	f := newFixture(t, time.Hour, secret)
	st := f.srv.accept(t)
	ctx := context.Background()
	ok, _ := f.svc.Register(ctx, appserver.Caller{}, "apns", "ok", "tok")
	broken, _ := f.svc.Register(ctx, appserver.Caller{}, "apns", "broken", "broken")
	throttled, _ := f.svc.Register(ctx, appserver.Caller{}, "fcm", "throttled", "tok3")
	req := appserver.PushRequest{Node: "throttled", Secret: throttled.Secret}
	f.svc.Push(ctx, req) // uses the window
	waiting := make(chan struct{})
	go f.svc.Push(push.WithWaiting(ctx, push.WaitingFuncs{
		PauseFunc:  func() { close(waiting) },
		ResumeFunc: func(context.Context) error { return nil },
	}), req)
	<-waiting // the second now waits for the next window

	tests := []struct {
		name, stanza, wantType, wantInner string
	}{
		{"success", publish("1", "ok", ok.Secret, true), "result", ""},
		{"unknown node", publish("2", "nope", ok.Secret, true), "error", "<error type='cancel'><item-not-found"},
		{"wrong secret", publish("3", "ok", "wrong", true), "error", "<error type='cancel'><item-not-found"},
		{"throttled", publish("4", "throttled", throttled.Secret, true), "error", "<error type='wait'><service-unavailable"},
		{"push service failure", publish("5", "broken", broken.Secret, true), "error", "<error type='wait'><internal-server-error"},
		{"no secret", strings.Replace(publish("6", "ok", ok.Secret, true), "<field var='secret'>", "<field var='other'>", 1), "error", "<error type='modify'><bad-request"},
		{"no node", strings.Replace(publish("7", "ok", ok.Secret, true), "node='ok'", "", 1), "error", "<error type='modify'><bad-request"},
		{"unknown payload", `<iq type='get' id='8' from='a@example.org/r' to='` + compJID + `'><ping xmlns='urn:xmpp:ping'/></iq>`, "error", "<error type='cancel'><service-unavailable"},
		{"empty set", `<iq type='set' id='9' from='a@example.org/r' to='` + compJID + `'/>`, "error", "<error type='cancel'><service-unavailable"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st.send(t, tt.stanza)
			r := st.next(t)
			if r.Type != tt.wantType || !strings.HasPrefix(r.Inner, tt.wantInner) {
				t.Fatalf("reply %s %q, want %s %q", r.Type, r.Inner, tt.wantType, tt.wantInner)
			}
			if r.To == "" || r.From != compJID {
				t.Fatalf("reply addressed to %q from %q", r.To, r.From)
			}
		})
	}
	// The successful push carried the summary, so auto picked high.
	f.backend.mu.Lock()
	n := f.backend.sent[len(f.backend.sent)-2] // before "broken"
	f.backend.mu.Unlock()
	if n.Node != "ok" || n.Priority != push.PriorityHigh {
		t.Fatalf("backend got %+v", n)
	}
}

// rate_limit_per_token counts each server's publishes to a device apart:
// a server that took the device to its limit leaves another's pushes to
// it alone, whichever of its accounts or resources, in whatever case,
// the publish comes from; and that server is held to its own limit.
func TestDeviceLimitPerServer(t *testing.T) {
	publishFrom := publishToVictim(t)
	const limited = "<error type='wait'><service-unavailable"
	for i, tt := range []struct{ from, want string }{
		{"a.example", ""},
		{"romeo@a.example", ""},
		{"juliet@a.example/phone", ""},
		{"Juliet@A.Example/desk", limited},
		{"a.example", ""},
		{"A.Example", limited},
		{"b.example", ""},
	} {
		got := publishFrom(i, tt.from)
		if tt.want == "" && got.Type != "result" || tt.want != "" && !strings.HasPrefix(got.Inner, tt.want) {
			t.Errorf("publish %d from %s through a node of its own: %s %q, want %q", i+1, tt.from, got.Type, got.Inner, cmp.Or(tt.want, "result"))
		}
	}
}

// A stranger with an account on the user's own server (a public server:
// conversations.im, jabber.de) registers the device's token under nodes
// of their own and sends publishes to the component from their account,
// which any client may address. The user's server sends its publishes
// from its bare domain. The stranger should spend their own budget, not
// the server's: the user's push through the user's node must go out.
func TestDeviceLimitSameServerStranger(t *testing.T) {
	publishFrom := publishToVictim(t)
	for i, from := range []string{"mallory@a.example/x", "mallory@a.example/x", "a.example"} {
		got := publishFrom(i, from)
		if from == "a.example" && got.Type != "result" {
			t.Errorf("the user's server's publish, after a stranger on that server took the device's budget: %s %q", got.Type, got.Inner)
		}
	}
}

// publishToVictim serves a component connection whose core allows each
// source 2 pushes an hour to a device, and returns a function that
// registers node n<i> for the device "victim" and publishes through it
// from from, returning the answer.
func publishToVictim(t *testing.T) func(i int, from string) reply {
	logger := slog.New(slog.DiscardHandler)
	svc, err := appserver.New(memory.New(), []appserver.App{{Name: "fcm", Priority: push.PriorityHigh, Backend: nopBackend{}}},
		appserver.Options{RateLimit: time.Hour, RateLimitPerToken: 2}, logger)
	if err != nil {
		t.Fatal(err)
	}
	st, _ := serveConn(t, svc, 4, logger)
	return func(i int, from string) reply {
		node := fmt.Sprint("n", i)
		r, err := svc.Register(context.Background(), appserver.Caller{}, "fcm", node, "victim")
		if err != nil {
			t.Fatal(err)
		}
		st.send(t, xmppfake.PublishIQ(node, from, compJID, node, r.Secret, true))
		return st.next(t)
	}
}

func TestConcurrentPushesAnswerOutOfOrder(t *testing.T) {
	f := newFixture(t, 0, secret)
	st := f.srv.accept(t)
	ctx := context.Background()
	slow, _ := f.svc.Register(ctx, appserver.Caller{}, "apns", "slow", "slow")
	fast, _ := f.svc.Register(ctx, appserver.Caller{}, "apns", "fast", "fast")
	st.send(t, publish("slow-1", "slow", slow.Secret, true))
	st.send(t, publish("fast-1", "fast", fast.Secret, true))
	if r := st.next(t); r.ID != "fast-1" || r.Type != "result" {
		t.Fatalf("first reply %+v, want fast-1 while slow-1 waits", r)
	}
	f.backend.release <- struct{}{}
	if r := st.next(t); r.ID != "slow-1" || r.Type != "result" {
		t.Fatalf("second reply %+v", r)
	}
}

func TestDiscoAndCommands(t *testing.T) {
	f := newFixture(t, 0, secret)
	st := f.srv.accept(t)
	st.send(t, `<iq type='get' id='d1' from='a@example.org/r' to='`+compJID+`'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>`)
	r := st.next(t)
	for _, w := range []string{`<identity category="pubsub" type="push"`, `var="urn:xmpp:push:0"`, `var="http://jabber.org/protocol/disco#info"`, `var="http://jabber.org/protocol/commands"`} {
		if !strings.Contains(r.Inner, w) {
			t.Errorf("disco#info lacks %s: %s", w, r.Inner)
		}
	}
	st.send(t, `<iq type='get' id='d2' from='a@example.org/r' to='`+compJID+`'><query xmlns='http://jabber.org/protocol/disco#items' node='http://jabber.org/protocol/commands'/></iq>`)
	r = st.next(t)
	for _, w := range []string{`node="v1-register-push"`, `node="v1-unregister-push"`, `node="register-push-fcm"`} {
		if !strings.Contains(r.Inner, w) {
			t.Errorf("disco#items lacks %s: %s", w, r.Inner)
		}
	}
	if strings.Contains(r.Inner, "register-push-apns") {
		t.Errorf("disabled command listed: %s", r.Inner)
	}

	register := `<iq type='set' id='c1' from='juliet@example.org/phone' to='` + compJID + `'>
<command xmlns='http://jabber.org/protocol/commands' node='v1-register-push' action='execute'>
<x xmlns='jabber:x:data' type='submit'>
<field var='type'><value>apns</value></field><field var='node'><value>dev-1</value></field><field var='token'><value>abcd</value></field>
</x></command></iq>`
	st.send(t, register)
	r = st.next(t)
	if r.Type != "result" || !strings.Contains(r.Inner, `status="complete"`) || !strings.Contains(r.Inner, `<field var="node" type="text-single"><value>dev-1</value></field>`) ||
		!strings.Contains(r.Inner, `<field var="jid" type="jid-single"><value>`+compJID+`</value></field>`) {
		t.Fatalf("register reply %s %s", r.Type, r.Inner)
	}
	i := strings.Index(r.Inner, `<field var="secret" type="text-single"><value>`)
	if i < 0 {
		t.Fatalf("no secret in %s", r.Inner)
	}
	secretVal := r.Inner[i+len(`<field var="secret" type="text-single"><value>`):][:64]
	st.send(t, publish("p1", "dev-1", secretVal, false))
	if r := st.next(t); r.Type != "result" {
		t.Fatalf("push with the command's secret: %+v", r)
	}

	tests := []struct{ name, stanza, want string }{
		{"fcm command", `<iq type='set' id='c2' from='romeo@example.org/tab' to='` + compJID + `'><command xmlns='http://jabber.org/protocol/commands' node='register-push-fcm' action='execute'><x xmlns='jabber:x:data' type='submit'><field var='token'><value>fcmtok</value></field><field var='android-id'><value>a1</value></field></x></command></iq>`, `status="completed"`},
		{"missing field", strings.Replace(register, "<field var='token'><value>abcd</value></field>", "", 1), "<error type='modify'><bad-request"},
		{"no form", `<iq type='set' id='c3' from='a@example.org/r' to='` + compJID + `'><command xmlns='http://jabber.org/protocol/commands' node='v1-register-push' action='execute'/></iq>`, "<error type='modify'><bad-request"},
		{"unknown type", strings.Replace(register, "<value>apns</value>", "<value>gcm</value>", 1), "<error type='modify'><bad-request"},
		{"disabled command", strings.Replace(register, "v1-register-push", "register-push-apns", 1), "<error type='cancel'><item-not-found"},
		{"unregister unknown", `<iq type='set' id='c4' from='a@example.org/r' to='` + compJID + `'><command xmlns='http://jabber.org/protocol/commands' node='v1-unregister-push' action='execute'><x xmlns='jabber:x:data' type='submit'><field var='type'><value>apns</value></field><field var='node'><value>nope</value></field></x></command></iq>`, "<error type='cancel'><item-not-found"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st.send(t, tt.stanza)
			r := st.next(t)
			if !strings.Contains(r.Inner, tt.want) {
				t.Fatalf("reply %s %q, want %q", r.Type, r.Inner, tt.want)
			}
		})
	}
}

// TestLongPublish: with Prosody's push_notification_with_body or
// ejabberd's include_body, a publish carries a message's whole body, and
// anyone can send a long message (both servers take 256 KiB from a
// client). Such a publish is answered and pushed, and the stream stays:
// while the component reconnected, ejabberd would answer other users'
// publishes with errors and delete their push sessions. A publish past
// the bound for what is kept of a stanza is read through and answered
// wait (the push session stays), on the same stream.
func TestLongPublish(t *testing.T) {
	f := newFixture(t, 0, secret) // MaxStanza 16 KiB
	st := f.srv.accept(t)
	ok, _ := f.svc.Register(context.Background(), appserver.Caller{}, "apns", "ok", "tok")
	long := strings.Replace(publish("long", "ok", ok.Secret, true), "New Message!", strings.Repeat("x&lt;", 40<<10), 1)
	st.send(t, long)
	st.send(t, publish("after", "ok", ok.Secret, true))
	got := map[string]string{}
	for range 2 {
		r := st.next(t)
		got[r.ID] = r.Type
	}
	if got["long"] != "result" || got["after"] != "result" {
		t.Fatalf("answers: %v", got)
	}
	f.backend.mu.Lock()
	sent := slices.Clone(f.backend.sent)
	f.backend.mu.Unlock()
	bodies := []int{}
	for _, n := range sent {
		if n.Summary != nil {
			bodies = append(bodies, len(n.Summary.LastMessageBody))
		}
	}
	slices.Sort(bodies)
	if len(bodies) != 2 || bodies[0] != len("New Message!") || bodies[1] != 4096 {
		t.Fatalf("bodies of the pushes sent: %v bytes", bodies)
	}
	st.send(t, strings.Replace(publish("too long", "ok", ok.Secret, true), "New Message!", strings.Repeat("x", 1100<<10), 1))
	st.send(t, publish("again", "ok", ok.Secret, true))
	if r := st.next(t); r.ID != "too long" || r.Type != "error" || !strings.Contains(r.Inner, "type='wait'") || !strings.Contains(r.Inner, "bad-request") {
		t.Fatalf("a publish past the bound: %+v", r)
	}
	if r := st.next(t); r.ID != "again" || r.Type != "result" {
		t.Fatalf("after a publish past the bound: %+v", r)
	}
}

// Anyone can address an IQ to the component's JID, and XMPP servers
// route stanzas larger than MaxStanza (Prosody takes 256 KiB from a
// client). A command a little over it is answered with an error on the
// same stream: ending the stream would cost the pushes under way their
// answers, and ejabberd, while the component reconnects, answers publishes
// with an error that deletes users' push sessions.
func TestOversizeCommandIQKeepsStream(t *testing.T) {
	f := newFixture(t, 0, secret) // MaxStanza 16 KiB
	st := f.srv.accept(t)
	ok, _ := f.svc.Register(context.Background(), appserver.Caller{}, "apns", "ok", "tok")
	big := `<iq type='set' id='big' from='mallory@evil.example/x' to='` + compJID + `'>` +
		`<command xmlns='http://jabber.org/protocol/commands' node='v1-register-push' action='execute'>` +
		`<x xmlns='jabber:x:data' type='submit'><field var='junk'><value>` + strings.Repeat("x", 20<<10) + `</value></field>` +
		`<field var='type'><value>apns</value></field><field var='node'><value>n</value></field><field var='token'><value>ab</value></field></x></command></iq>`
	st.send(t, big)
	st.send(t, publish("after", "ok", ok.Secret, true))
	got := map[string]string{}
	for range 2 {
		r := st.next(t) // fails with a read error when the component dropped the stream
		got[r.ID] = r.Type
	}
	if got["after"] != "result" || got["big"] != "error" {
		t.Fatalf("answers on the same stream: %v", got)
	}
	if err := f.svc.Push(context.Background(), appserver.PushRequest{Node: "n", Secret: "x"}); !errors.Is(err, appserver.ErrNotFound) {
		t.Fatalf("the command too large registered its node: %v", err)
	}
}

func TestHostileInput(t *testing.T) {
	f := newFixture(t, 0, secret)
	st := f.srv.accept(t)
	ok, _ := f.svc.Register(context.Background(), appserver.Caller{}, "apns", "ok", "tok")
	// Ignored: messages, presence, results, deep nesting inside a message.
	st.send(t, `<message from='a@example.org' to='`+compJID+`'><body>hi</body></message><presence/>`)
	st.send(t, `<iq type='result' id='x' from='example.org' to='`+compJID+`'/>`)
	st.send(t, `<message>`+strings.Repeat("<a>", 500)+strings.Repeat("</a>", 500)+`</message>`)
	st.send(t, publish("after", "ok", ok.Secret, true))
	if r := st.next(t); r.ID != "after" || r.Type != "result" {
		t.Fatalf("after ignored stanzas: %+v", r)
	}
	// A message over MaxStanza (16 KiB here) is skipped like the others:
	// anyone can send one to our JID.
	st.send(t, `<message from='mallory@example.org/x' to='`+compJID+`'><body>`+strings.Repeat("x&lt;&amp;", 20<<10)+`</body></message>`)
	st.send(t, `<presence>`+strings.Repeat("<a>", 20<<10)+strings.Repeat("</a>", 20<<10)+`</presence>`)
	st.send(t, publish("after large", "ok", ok.Secret, true))
	if r := st.next(t); r.ID != "after large" || r.Type != "result" {
		t.Fatalf("after large messages: %+v", r)
	}
	// An IQ past the bound for what is kept of a stanza is read
	// through and answered, on the same stream.
	st.send(t, `<iq type='get' id='big' to='`+compJID+`'><query xmlns='jabber:iq:version'>`+strings.Repeat("x", 1100<<10)+`</query></iq>`)
	st.send(t, publish("again", "ok", ok.Secret, true))
	if r := st.next(t); r.ID != "big" || r.Type != "error" || !strings.Contains(r.Inner, "not-acceptable") {
		t.Fatalf("an IQ past the bound: %+v", r)
	}
	if r := st.next(t); r.ID != "again" || r.Type != "result" {
		t.Fatalf("after an IQ past the bound: %+v", r)
	}
	// Broken XML ends the stream; the component comes back.
	st.send(t, `<iq type='set' id='bad'><<<`)
	st3 := f.srv.accept(t)
	st3.send(t, publish("third", "ok", ok.Secret, true))
	if r := st3.next(t); r.ID != "third" {
		t.Fatalf("after broken XML: %+v", r)
	}
}

func TestReconnectAndState(t *testing.T) {
	f := newFixture(t, 0, secret)
	srv := newFakeServer(t, secret)
	states := make(chan bool, 16)
	conn := component.New(component.Options{
		Addr: srv.Addr(), JID: compJID, Secret: secret, MaxBackoff: 100 * time.Millisecond,
		DrainTimeout: 300 * time.Millisecond, // see newFixtureWith
		OnState:      func(c bool) { states <- c },
	}, f.svc)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- conn.Run(ctx) }()
	st := srv.accept(t)
	if !<-states || !conn.Connected() {
		t.Fatal("not connected after the handshake")
	}
	st.Close() // the server goes away
	if <-states || conn.Connected() {
		t.Fatal("still connected after the server went away")
	}
	srv.accept(t) // and the component comes back
	if !<-states {
		t.Fatal("no connect after the server came back")
	}
	cancel()
	if err := <-done; err != context.Canceled {
		t.Fatalf("Run = %v", err)
	}
	if <-states || conn.Connected() {
		t.Fatal("connected after Run returned")
	}
	select {
	case v := <-states:
		t.Fatalf("extra state change %v", v)
	default:
	}
}

// TestReconnectNotHeldByPushes: a stream that breaks while pushes are under
// way is replaced at once, not when they end: meanwhile the XMPP server
// answers publishes with errors of its own, and ejabberd drops the push
// session at the first. A push can be under way for long: at a slow push
// service, or held by the throttle for its next window (the last push of
// every burst).
func TestReconnectNotHeldByPushes(t *testing.T) {
	t.Run("slow push service", func(t *testing.T) {
		f := newFixture(t, 0, secret)
		st := f.srv.accept(t)
		f.pushUnderWay(t, st)
		st.Close()
		if _, err := f.srv.Accept(3 * time.Second); err != nil {
			t.Fatalf("no reconnect while a push waits for its push service: %v", err)
		}
	})
	t.Run("throttled push", func(t *testing.T) {
		f := newFixture(t, time.Hour, secret)
		st := f.srv.accept(t)
		r, _ := f.svc.Register(context.Background(), appserver.Caller{}, "apns", "n", "tok")
		st.send(t, publish("p1", "n", r.Secret, true))
		if rep := st.next(t); rep.Type != "result" {
			t.Fatalf("first push: %+v", rep)
		}
		st.send(t, publish("p2", "n", r.Secret, true)) // held for the next window
		time.Sleep(100 * time.Millisecond)
		st.Close()
		if _, err := f.srv.Accept(3 * time.Second); err != nil {
			t.Fatalf("no reconnect while the throttle holds a push: %v", err)
		}
	})
}

// TestShutdownWaitsForPushesOfBrokenStream: a push of a stream that broke
// goes on after its session; a shutdown waits for it as for its own
// session's, so that it is neither cut off nor outlives the core.
func TestShutdownWaitsForPushesOfBrokenStream(t *testing.T) {
	f := newFixtureWith(t, 0, secret, func(o *component.Options) { o.CloseGrace = 200 * time.Millisecond })
	st := f.srv.accept(t)
	f.pushUnderWay(t, st)
	st.Close()
	st2 := f.srv.accept(t)
	f.cancel()
	st2.waitClosed(t)
	st2.send(t, "</stream:stream>")
	select {
	case err := <-f.done:
		f.done <- err // for the cleanup
		t.Fatal("Run returned while a push of the broken stream was under way")
	case <-time.After(time.Second):
	}
}

// TestHandshakeTimesOut: a server that accepts the connection and never
// answers (hung, or a proxy in front of a dead one) is left and tried
// again, and does not hold up a shutdown.
func TestHandshakeTimesOut(t *testing.T) {
	for _, tt := range []struct {
		name    string
		timeout time.Duration
	}{{"timeout", 300 * time.Millisecond}, {"shutdown", time.Hour}} {
		t.Run(tt.name, func(t *testing.T) {
			port, accepted := netfreeze.SilentAccepting(t)
			addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
			conn := component.New(component.Options{Addr: addr, JID: compJID, Secret: secret,
				MaxBackoff: 100 * time.Millisecond, HandshakeTimeout: tt.timeout}, nil)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			done := make(chan error, 1)
			go func() { done <- conn.Run(ctx) }()
			<-accepted
			if tt.name == "timeout" {
				select {
				case <-accepted:
				case <-time.After(10 * time.Second):
					t.Fatal("no second attempt after the server went silent in the handshake")
				}
			}
			cancel()
			select {
			case <-done:
			case <-time.After(5 * time.Second):
				t.Fatal("Run did not return on shutdown during a silent handshake")
			}
		})
	}
}

// TestWrongSecretRetries: a handshake the server refuses is tried again
// (the secret may be fixed on the server's side), and never counts as
// connected. The log says what to fix, not only "not-authorized".
func TestWrongSecretRetries(t *testing.T) {
	var log logbuf.Buffer
	f := newFixtureWith(t, 0, "wrong", func(o *component.Options) { o.Logger = slog.New(slog.NewTextHandler(&log, nil)) })
	rejected := 0
	timeout := time.After(10 * time.Second)
	for rejected < 3 {
		select {
		case e := <-f.srv.Events():
			switch e.Kind {
			case "rejected":
				rejected++
			case "authenticated":
				t.Fatal("handshake with a wrong secret accepted")
			}
		case <-timeout:
			t.Fatalf("%d handshakes in 10 s, want the component to keep trying", f.srv.Handshakes())
		}
		if f.conn.Connected() {
			t.Fatal("connected with a wrong secret")
		}
	}
	for !strings.Contains(log.String(), "not-authorized (the XMPP server refused the secret for "+compJID) {
		select {
		case <-timeout:
			t.Fatalf("the log does not say which secret to fix:\n%s", log.String())
		case <-time.After(10 * time.Millisecond):
		}
	}
}

func TestShutdownClosesStream(t *testing.T) {
	f := newFixture(t, 0, secret)
	st := f.srv.accept(t)
	f.cancel()
	st.waitClosed(t)
}

// TestShutdownServesUntilClosed: a shutdown loses no push. Publishes
// arriving before the stream closes are pushed and answered like any other,
// the push under way is answered, and what the server sent before it saw
// our closing tag is still pushed (no answer can follow the tag), until the
// server closes its side.
func TestShutdownServesUntilClosed(t *testing.T) {
	f := newFixtureWith(t, 0, secret, func(o *component.Options) { o.CloseGrace, o.DrainTimeout = 10*time.Second, 10*time.Second })
	st := f.srv.accept(t)
	ctx := context.Background()
	slow, _ := f.svc.Register(ctx, appserver.Caller{}, "apns", "slow", "slow")
	ok, _ := f.svc.Register(ctx, appserver.Caller{}, "apns", "ok", "tok")
	st.send(t, publish("under-way", "slow", slow.Secret, true))
	waitSlow(f.backend) // the push reached the backend
	f.cancel()
	st.send(t, publish("late", "ok", ok.Secret, true))
	if r := st.next(t); r.ID != "late" || r.Type != "result" {
		t.Fatalf("publish while shutting down answered %+v, want a result", r)
	}
	f.backend.release <- struct{}{}
	if r := st.next(t); r.ID != "under-way" || r.Type != "result" {
		t.Fatalf("push under way answered %+v", r)
	}
	st.waitClosed(t)
	select {
	case err := <-f.done:
		f.done <- err // for the cleanup
		t.Fatalf("Run returned (%v) before the server closed its side", err)
	default:
	}
	// Sent before the server saw our closing tag: pushed, not answered.
	st.send(t, publish("crossed", "ok", ok.Secret, true))
	st.send(t, "</stream:stream>")
	select {
	case <-f.done:
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after the server closed the stream")
	}
	f.done <- nil // for the cleanup
	st.Conn.SetReadDeadline(time.Now().Add(time.Second))
	if b, _ := io.ReadAll(st.Conn); len(bytes.TrimSpace(b)) != 0 {
		t.Fatalf("sent after the closing tag: %q", b)
	}
	f.backend.mu.Lock()
	defer f.backend.mu.Unlock()
	pushed := 0
	for _, n := range f.backend.sent {
		if n.Node == "ok" {
			pushed++
		}
	}
	if pushed != 2 {
		t.Fatalf("%d pushes to ok, want 2 (late and crossed)", pushed)
	}
}

// TestShutdownClosesAfterGrace: a push that does not answer in
// time does not hold the stream open; it still completes.
func TestShutdownClosesAfterGrace(t *testing.T) {
	f := newFixtureWith(t, 0, secret, func(o *component.Options) { o.CloseGrace = 200 * time.Millisecond })
	st := f.srv.accept(t)
	f.pushUnderWay(t, st)
	begin := time.Now()
	f.cancel()
	st.waitClosed(t)
	if d := time.Since(begin); d > 5*time.Second {
		t.Fatalf("stream closed after %v with a push under way, want about CloseGrace", d)
	}
	st.send(t, "</stream:stream>")
	f.backend.release <- struct{}{}
	select {
	case <-f.done:
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return")
	}
	f.done <- nil
	f.backend.mu.Lock()
	defer f.backend.mu.Unlock()
	if len(f.backend.sent) != 1 {
		t.Fatalf("%d pushes sent, want the one under way", len(f.backend.sent))
	}
}

// A server that stops answering (a connection cut without a word) is
// pinged once the stream has been quiet for KeepAlive, and the stream is
// replaced when three pings, half of it apart, pass without a word: not
// at the first, which ejabberd may have balanced to another instance's
// connection on our JID.
func TestKeepAliveReplacesSilentStream(t *testing.T) {
	const keepAlive = 400 * time.Millisecond
	f := newFixtureWith(t, 0, secret, func(o *component.Options) { o.KeepAlive = keepAlive })
	st := f.srv.accept(t)
	start := time.Now()
	ping := st.next(t)
	if ping.XMLName.Local != "iq" || ping.Type != "get" || !strings.HasPrefix(ping.ID, "keepalive-") ||
		ping.From != compJID || ping.To != compJID || !strings.Contains(ping.Inner, "urn:xmpp:ping") {
		t.Fatalf("first stanza on a quiet stream: %+v, want a ping to ourselves", ping)
	}
	if d := time.Since(start); d < keepAlive/2 {
		t.Errorf("pinged %v after connecting, before the stream was quiet for %v", d, keepAlive)
	}
	// Unanswered: the component pings twice more, then closes the
	// connection.
	st.Conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	pings := 1
	for {
		tok, err := st.Dec.Token()
		if err != nil {
			break
		}
		if e, ok := tok.(xml.StartElement); ok && e.Name.Local == "iq" {
			pings++
		}
	}
	if pings != 3 {
		t.Errorf("%d pings before the stream was given up, want 3", pings)
	}
	if d := time.Since(start); d > 4*keepAlive {
		t.Errorf("stream closed %v after connecting, want about %v", d, keepAlive*5/2)
	} else {
		t.Logf("stream closed %v after connecting", d.Round(time.Millisecond))
	}
	f.srv.accept(t) // and connects again
}

// A server that routes the pings back, as Prosody and ejabberd do, keeps
// the stream, however long nothing else happens; the pings are not
// answered.
func TestKeepAliveAnsweredKeepsStream(t *testing.T) {
	const keepAlive = 200 * time.Millisecond
	f := newFixtureWith(t, 0, secret, func(o *component.Options) { o.KeepAlive = keepAlive })
	st := f.srv.accept(t)
	pings := 0
	for end := time.Now().Add(15 * keepAlive); time.Now().Before(end); {
		r := st.next(t)
		if r.Type != "get" || !strings.HasPrefix(r.ID, "keepalive-") {
			t.Fatalf("stanza from the component: %+v, want only pings", r)
		}
		pings++
		st.send(t, fmt.Sprintf("<iq type='get' id='%s' from='%s' to='%s'>%s</iq>", r.ID, compJID, compJID, r.Inner))
	}
	if pings < 3 {
		t.Errorf("%d pings in %v at a keep-alive of %v", pings, 15*keepAlive, keepAlive)
	}
	if n := f.srv.Handshakes(); n != 1 || !f.conn.Connected() {
		t.Errorf("%d handshakes, connected %v: the stream was replaced though the server answered", n, f.conn.Connected())
	}
}

// A publish that arrives while the service drains (a shutdown) is
// answered wait: ejabberd drops the user's push session on any other
// error type, so a restart must never answer cancel.
func TestDrainingPushAnsweredWait(t *testing.T) {
	f := newFixture(t, time.Hour, secret)
	st := f.srv.accept(t)
	ok, _ := f.svc.Register(context.Background(), appserver.Caller{}, "apns", "ok", "tok")
	f.svc.Drain()
	st.send(t, publish("1", "ok", ok.Secret, true))
	r := st.next(t)
	if r.Type != "error" || !strings.HasPrefix(r.Inner, "<error type='wait'><service-unavailable") {
		t.Fatalf("publish while draining answered %s %q, want wait/service-unavailable", r.Type, r.Inner)
	}
}

// Another instance's ping on our JID, which ejabberd balanced to this
// connection, is answered (the answer may reach the other instance); our
// own pings coming back are not.
func TestOtherInstancesPingAnswered(t *testing.T) {
	const keepAlive = 200 * time.Millisecond
	f := newFixtureWith(t, 0, secret, func(o *component.Options) { o.KeepAlive = keepAlive })
	st := f.srv.accept(t)
	own := st.next(t)
	if !strings.HasPrefix(own.ID, "keepalive-") {
		t.Fatalf("first stanza %+v, want a ping", own)
	}
	st.send(t, fmt.Sprintf("<iq type='get' id='%s' from='%s' to='%s'>%s</iq>", own.ID, compJID, compJID, own.Inner))
	st.send(t, fmt.Sprintf("<iq type='get' id='keepalive-0ther-1' from='%s' to='%s'><ping xmlns='urn:xmpp:ping'/></iq>", compJID, compJID))
	for {
		r := st.next(t)
		if r.ID == own.ID {
			t.Fatalf("our own ping answered: %+v", r)
		}
		if r.ID == "keepalive-0ther-1" {
			if r.Type != "result" {
				t.Fatalf("another instance's ping answered %+v, want a result", r)
			}
			return
		}
	}
}

// A stanza's opening tag is read within MaxStanza, before the bound of
// skipped stanzas and IQs is raised: a message or an IQ whose id is
// longer than MaxStanza, which anyone can send our JID and servers route,
// ends the stream.
func TestLongOpeningTagKeepsStream(t *testing.T) {
	f := newFixture(t, 0, secret) // MaxStanza 16 KiB
	st := f.srv.accept(t)
	ok, _ := f.svc.Register(context.Background(), appserver.Caller{}, "apns", "ok", "tok")
	st.send(t, `<message from='mallory@evil.example/x' to='`+compJID+`' id='`+strings.Repeat("a", 20<<10)+`'><body>hi</body></message>`)
	st.send(t, `<iq type='get' from='mallory@evil.example/x' to='`+compJID+`' id='`+strings.Repeat("a", 20<<10)+`'><query xmlns='jabber:iq:version'/></iq>`)
	st.send(t, publish("after", "ok", ok.Secret, true))
	if r := st.next(t); r.ID != "after" || r.Type != "result" { // a read error when the stream was dropped
		t.Fatalf("after long opening tags: %+v", r)
	}
}

// A MaxInFlight so large that the connection's waiting places (a few
// times it) would overflow is bounded, not a panic in make(chan) at the
// first stream (the configuration refuses it; a caller may not).
func TestHugeMaxInFlightDoesNotPanic(t *testing.T) {
	f := newFixtureWith(t, 0, secret, func(o *component.Options) { o.MaxInFlight = math.MaxInt64/2 + 1 })
	st := f.srv.accept(t)
	st.send(t, publish("1", "nope", "x", true))
	if r := st.next(t); r.Type != "error" {
		t.Fatalf("reply %+v", r)
	}
}

// Prosody writes each prefixed attribute with a name-space declaration
// of its own (xmlns:ns1='u' ns1:a=""), so a user's message of a kilobyte
// reaches us with more declarations than the decoder resolves. Such a
// stanza is skipped, an IQ answered, and the stream goes on: it was a
// syntax error that ended the stream.
func TestManyBindingsKeepStream(t *testing.T) {
	f := newFixture(t, 0, secret)
	st := f.srv.accept(t)
	ok, _ := f.svc.Register(context.Background(), appserver.Caller{}, "apns", "ok", "tok")
	var attrs strings.Builder
	for i := range 100 {
		fmt.Fprintf(&attrs, " xmlns:ns%d='urn:example:p' ns%d:a=''", i, i)
	}
	st.send(t, `<message from='mallory@example.org/x' to='`+compJID+`'><x xmlns='urn:example:x'`+attrs.String()+`/></message>`)
	st.send(t, `<presence from='mallory@example.org/x' to='`+compJID+`'`+attrs.String()+`/>`)
	st.send(t, `<iq type='get' id='many' from='mallory@example.org/x' to='`+compJID+`'><query xmlns='jabber:iq:version'`+attrs.String()+`/></iq>`)
	st.send(t, publish("after", "ok", ok.Secret, true))
	if r := st.next(t); r.ID != "many" || r.Type != "error" || !strings.Contains(r.Inner, "not-acceptable") {
		t.Fatalf("an IQ with %d name-space declarations: %+v", 100, r)
	}
	if r := st.next(t); r.ID != "after" || r.Type != "result" {
		t.Fatalf("after stanzas with many name-space declarations: %+v", r)
	}
}

// A stanza whose own start tag is longer than what is kept of a stanza
// (Prosody writes a declaration with each prefixed attribute, so a
// user's message of a few hundred KB may be one of GBs) is read through
// and dropped, unanswered, and the stream goes on.
func TestLongStartTagKeepsStream(t *testing.T) {
	f := newFixture(t, 0, secret) // MaxStanza 16 KiB: 1 MiB kept of a stanza
	st := f.srv.accept(t)
	ok, _ := f.svc.Register(context.Background(), appserver.Caller{}, "apns", "ok", "tok")
	space := strings.Repeat("u", 1000)
	var attrs strings.Builder
	attrs.WriteString(" xmlns:p='urn:example:p'")
	for i := range 2000 {
		fmt.Fprintf(&attrs, " p:a%d='%s'", i, space)
	}
	st.send(t, `<message from='mallory@example.org/x' to='`+compJID+`'`+attrs.String()+`><body>hi</body></message>`)
	st.send(t, `<iq type='get' id='long' from='mallory@example.org/x' to='`+compJID+`'`+attrs.String()+`><query xmlns='jabber:iq:version'/></iq>`)
	st.send(t, publish("after", "ok", ok.Secret, true))
	if r := st.next(t); r.ID != "after" || r.Type != "result" {
		t.Fatalf("after stanzas with start tags of %d bytes: %+v", attrs.Len(), r)
	}
}

// TestConflictAfterServerClosedGivenUpStreamStandsBy guards several
// instances on Prosody: when the keep-alive gave up a stream whose server
// did hear it close (a server that stalled for a while, a partition that
// healed before TCP gave up), the server no longer holds it, and another
// instance standing by takes the component. The conflicts that follow are
// that instance's connection: this one stands by (healthy, ready), not
// down with the error that every push is lost, for the 20 minutes the
// lock-out heuristic allows. A stream whose server never closed it (the
// network lost it without a word) still counts as held.
func TestConflictAfterServerClosedGivenUpStreamStandsBy(t *testing.T) {
	for _, serverCloses := range []bool{true, false} {
		t.Run(fmt.Sprintf("server closes %v", serverCloses), func(t *testing.T) {
			const keepAlive = 400 * time.Millisecond
			f := newFixtureWith(t, 0, secret, func(o *component.Options) { o.KeepAlive = keepAlive })
			st := f.srv.accept(t)
			// The pings go unanswered, and another instance has the
			// component from now on.
			f.srv.SetConflict(true)
			st.Conn.SetReadDeadline(time.Now().Add(10 * time.Second))
			for {
				if _, err := st.Dec.Token(); err != nil {
					break // given up
				}
			}
			if serverCloses {
				// The server heard the close and drops the stream, as
				// Prosody does.
				st.Conn.Close()
			}
			conflicts := 0
			deadline := time.After(10 * time.Second)
			for conflicts < 4 || serverCloses && !f.conn.StandingBy() {
				select {
				case e := <-f.srv.Events():
					if e.Kind == "conflict" {
						conflicts++
					}
				case <-deadline:
					t.Fatalf("%d conflicts answered in 10 s, standing by %v: the server closed the given-up stream, and another connection has the component", conflicts, f.conn.StandingBy())
				}
			}
			if !serverCloses && f.conn.StandingBy() {
				t.Fatalf("after %d conflicts, standing by, though the server never closed the given-up stream (it may still hold it)", conflicts)
			}
		})
	}
}

// Refused says the XMPP server refused the handshake for our
// configuration (a wrong secret, a JID it does not have), which the
// operator must fix and the start-up reports, and only then: a server
// shutting down or in trouble refuses nothing of ours.
func TestRefusedNamesConfigurationErrors(t *testing.T) {
	for cond, want := range map[string]bool{
		"not-authorized":        true,
		"host-unknown":          true,
		"improper-addressing":   true,
		"system-shutdown":       false,
		"internal-server-error": false,
	} {
		t.Run(cond, func(t *testing.T) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			// Each connection: the stream's opening, then the error.
			accepted := make(chan struct{}, 100)
			go func() {
				for {
					c, err := ln.Accept()
					if err != nil {
						return
					}
					accepted <- struct{}{}
					go func() {
						defer c.Close()
						dec := xml.NewDecoder(c)
						for {
							tok, err := dec.Token()
							if err != nil {
								return
							}
							if s, ok := tok.(xml.StartElement); ok && s.Name.Local == "stream" {
								break
							}
						}
						fmt.Fprintf(c, "<?xml version='1.0'?><stream:stream xmlns:stream='http://etherx.jabber.org/streams' xmlns='jabber:component:accept' id='s1' from='%s'>"+
							"<stream:error><%s xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error></stream:stream>", compJID, cond)
						io.Copy(io.Discard, c)
					}()
				}
			}()
			conn := component.New(component.Options{Addr: ln.Addr().String(), JID: compJID, Secret: secret,
				MaxBackoff: 50 * time.Millisecond, Logger: slog.New(slog.DiscardHandler)}, nil)
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan struct{})
			go func() { conn.Run(ctx); close(done) }()
			defer func() { cancel(); <-done }()
			// The second attempt starts once the first one's answer was
			// taken in.
			for range 2 {
				select {
				case <-accepted:
				case <-time.After(10 * time.Second):
					t.Fatal("the component did not try again")
				}
			}
			if got := conn.Refused(); got != want {
				t.Fatalf("Refused() = %v after the server answered %s, want %v", got, cond, want)
			}
		})
	}
}
