package component_test

import (
	"context"
	"encoding/xml"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/push-appserver/push-appserver/internal/testutil/xmppfake"
	"github.com/push-appserver/push-appserver/internal/xmpp/adhoc"
	"github.com/push-appserver/push-appserver/internal/xmpp/component"
)

// peerConn starts a second component of the same process (peers) on a
// fake server of its own, as another XMPP server's component, or on
// f's server when same is set.
func peerConn(t *testing.T, f *fixture, peers *component.Peers, jid string, same bool, configure func(*component.Options)) (*fakeServer, *component.Conn) {
	t.Helper()
	srv, pw := f.srv, secret
	if !same {
		s, err := xmppfake.Listen(jid, "other-secret")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(s.Close)
		srv, pw = &fakeServer{s}, "other-secret"
	}
	opts := component.Options{Addr: srv.Addr(), JID: jid, Secret: pw,
		Commands: adhoc.Options{V1: true}, MaxBackoff: 200 * time.Millisecond, DrainTimeout: 300 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Peers: peers}
	if configure != nil {
		configure(&opts)
	}
	c := component.New(opts, f.svc)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { c.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return srv, c
}

// README (domains): "one process serving the components of several
// servers, some run by others: the server at the other end of a component
// stream vouches for every sender and can claim any", so each component
// gets its domains. The server of push.evil.net may not act for
// example.org's accounts by addressing its stanza to push.example.net on
// its own stream.
func TestPeersKeepDomainsPerServer(t *testing.T) {
	peers := &component.Peers{}
	f := newFixtureWith(t, 0, secret, func(o *component.Options) {
		o.Peers = peers
		o.Commands.Domains = []string{"example.org"}
	})
	good := f.srv.accept(t)
	evilSrv, _ := peerConn(t, f, peers, "push.evil.net", false, func(o *component.Options) { o.Commands.Domains = []string{"evil.net"} })
	evil := evilSrv.accept(t)

	// juliet registers through her own server.
	good.send(t, command("r1", "juliet@example.org/phone", adhoc.V1Register, "type", "apns", "node", "dev-1", "token", "abcd"))
	if r := good.next(t); r.Type != "result" {
		t.Fatalf("register through example.org's server: %s %s", r.Type, r.Inner)
	}
	// evil.net's server, on its own stream, claims juliet as sender: to
	// its own JID, refused.
	evil.send(t, strings.Replace(command("u1", "juliet@example.org/x", adhoc.V1Unregister, "type", "apns", "node", "dev-1"), "to='"+compJID+"'", "to='push.evil.net'", 1))
	if r := evil.next(t); r.Type != "error" || !strings.Contains(r.Inner, "forbidden") {
		t.Fatalf("unregister for example.org to push.evil.net on evil.net's stream: %s %s, want auth/forbidden", r.Type, r.Inner)
	}
	// To push.example.net, on the same stream.
	evil.send(t, command("u2", "juliet@example.org/x", adhoc.V1Unregister, "type", "apns", "node", "dev-1"))
	if r := evil.next(t); r.Type != "error" || !strings.Contains(r.Inner, "forbidden") {
		t.Fatalf("unregister for example.org addressed to push.example.net on evil.net's stream: %s %s, want auth/forbidden", r.Type, r.Inner)
	}
}

// Two instances of a process with push.example.net and push2.example.net
// on one XMPP server: the other instance's keep-alive ping for
// push2 reaches this instance's push.example.net stream. It is not ours:
// it must be answered (as another instance's ping on our own JID is), and
// must not count as our push2 stream being heard: here that stream is
// dead (its server reads and says nothing), and must be replaced.
func TestPeerPingOfOtherInstance(t *testing.T) {
	const keepAlive = 200 * time.Millisecond
	peers := &component.Peers{}
	f := newFixtureWith(t, 0, secret, func(o *component.Options) { o.Peers = peers; o.KeepAlive = keepAlive })
	st := f.srv.accept(t)
	const peer = "push2.example.net"
	srv, _ := peerConn(t, f, peers, peer, true, func(o *component.Options) { o.KeepAlive = keepAlive })
	dead := srv.accept(t)
	go io.Copy(io.Discard, dead.Conn) // reads, never answers

	var answered atomic.Bool
	go func() {
		for {
			tok, err := st.Dec.Token()
			if err != nil {
				return
			}
			if s, ok := tok.(xml.StartElement); ok && s.Name.Local == "iq" {
				for _, a := range s.Attr {
					if a.Name.Local == "id" && strings.HasPrefix(a.Value, "keepalive-0ther-") {
						answered.Store(true)
					}
				}
			}
		}
	}()
	start := time.Now()
	replaced := false
	for i := 0; time.Since(start) < 15*keepAlive; i++ {
		st.send(t, fmt.Sprintf("<iq type='get' id='keepalive-0ther-%d' from='%s' to='%s'><ping xmlns='urn:xmpp:ping'/></iq>", i, peer, peer))
		if srv.Handshakes() > 2 {
			replaced = true
			break
		}
		time.Sleep(keepAlive / 2)
	}
	if !answered.Load() {
		t.Errorf("the other instance's ping for %s was never answered", peer)
	}
	if !replaced {
		t.Errorf("%s's dead stream not replaced after %v at a keep-alive of %v: the other instance's pings counted as heard", peer, time.Since(start).Round(time.Millisecond), keepAlive)
	}
}

// Two components of one process on one ejabberd listener, the second's
// address written with the host name and the first's with the IP (or
// one left at the default 127.0.0.1:5347, the other "localhost:5347"):
// still the same XMPP server, which routes push2's stanzas over push's
// stream. A secretless (fpush-style) publish for push2, whose component
// takes tokenless pushes, arriving on push's stream must be served with
// push2's options, not answered modify/bad-request (on which ejabberd
// deletes the push session).
func TestPeersSameServerOtherAddressSpelling(t *testing.T) {
	peers := &component.Peers{}
	f := newFixtureWith(t, 0, secret, func(o *component.Options) { o.Peers = peers })
	st := f.srv.accept(t)
	const peer = "push2.example.net"
	srv, _ := peerConn(t, f, peers, peer, true, func(o *component.Options) {
		o.Addr = strings.Replace(o.Addr, "127.0.0.1", "localhost", 1)
		o.Dialects = component.Dialects{Tokenless: true, TokenlessApp: "apns"}
	})
	srv.accept(t)

	const token = "5eed5eed5eed5eed"
	st.send(t, `<iq type='set' from='example.org' to='`+peer+`' id='p1'><pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node='`+token+`'><item><notification xmlns='urn:xmpp:push:0'/></item></publish></pubsub></iq>`)
	if r := st.next(t); r.Type != "result" {
		t.Fatalf("tokenless publish for %s routed over %s's stream (same server, address spelt otherwise): %s %s; want a result", peer, compJID, r.Type, r.Inner)
	}
}

// A stanza for another component of the process on the same XMPP server
// is served with that component's options however its to is written, as
// JIDs compare: a domain in other case, with a final dot, or an IDN's
// A-label. ejabberd routes by the prepared domain but passes the to on as
// the sender wrote it (a client's enable or command names the push
// service as its user typed it), over any stream of the listener; served
// with the options of the stream it came over, a tokenless publish for
// push2 is answered modify/bad-request (ejabberd deletes the push session
// on it), and a command runs against the wrong component's apps and
// domains.
func TestPeersServeToInOtherSpelling(t *testing.T) {
	peers := &component.Peers{}
	f := newFixtureWith(t, 0, secret, func(o *component.Options) { o.Peers = peers })
	st := f.srv.accept(t)
	const peer = "push2.bücher.example"
	srv, _ := peerConn(t, f, peers, peer, true, func(o *component.Options) {
		o.Dialects = component.Dialects{Tokenless: true, TokenlessApp: "apns"}
	})
	srv.accept(t)

	const token = "5eed5eed5eed5eed"
	for i, to := range []string{peer, "PUSH2.Bücher.Example", "push2.bücher.example.", "push2.xn--bcher-kva.example", "Push2.XN--BCHER-KVA.example."} {
		st.send(t, fmt.Sprintf(`<iq type='set' from='example.org' to='%s' id='p%d'><pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node='%s%d'><item><notification xmlns='urn:xmpp:push:0'/></item></publish></pubsub></iq>`, to, i, token, i))
		if r := st.next(t); r.Type != "result" {
			t.Errorf("tokenless publish to %s routed over %s's stream: %s %s; want a result, as %s takes tokenless pushes", to, compJID, r.Type, r.Inner, peer)
		}
	}
}

// Two components of one process on one ejabberd listener: the server
// routes the second's keep-alive pings back over the first's stream, and
// none over its own. Those pings are the second's stream heard all the
// same, so it is kept; taken as dead, it was replaced every few
// keep-alives, and the pushes on it lost each time.
func TestPeerPingsRoutedOverAnotherStreamKeepIt(t *testing.T) {
	// Three pings unanswered give a stream up: at 500 ms apart, a
	// loaded machine's late answers are not taken for silence, and a
	// stream taken for dead is replaced well within the ten intervals.
	const keepAlive = 500 * time.Millisecond
	peers := &component.Peers{}
	f := newFixtureWith(t, 0, secret, func(o *component.Options) { o.Peers = peers; o.KeepAlive = keepAlive })
	st := f.srv.accept(t)
	const peer = "push2.example.net"
	srv, _ := peerConn(t, f, peers, peer, true, func(o *component.Options) { o.KeepAlive = keepAlive })
	second := srv.accept(t)

	var mu sync.Mutex // writes to st
	route := func(id, jid string) {
		mu.Lock()
		defer mu.Unlock()
		fmt.Fprintf(st.Conn, "<iq type='get' id='%s' from='%s' to='%s'><ping xmlns='urn:xmpp:ping'/></iq>", id, jid, jid)
	}
	// pings calls fn with the id and from of each ping read from s.
	pings := func(s *stream, fn func(id, from string)) {
		for {
			tok, err := s.Dec.Token()
			if err != nil {
				return
			}
			if e, ok := tok.(xml.StartElement); ok && e.Name.Local == "iq" {
				var id, from string
				for _, a := range e.Attr {
					switch a.Name.Local {
					case "id":
						id = a.Value
					case "from":
						from = a.Value
					}
				}
				if strings.HasPrefix(id, "keepalive-") {
					fn(id, from)
				}
			}
		}
	}
	// The first component's pings come back on its own stream, the
	// second's on the first's stream too.
	go pings(st, func(id, from string) { route(id, from) })
	go pings(second, func(id, from string) { route(id, from) })

	deadline := time.Now().Add(10 * keepAlive)
	for time.Now().Before(deadline) {
		if n := srv.Handshakes(); n > 2 {
			t.Fatalf("%s's stream replaced (%d handshakes) at a keep-alive of %v, though its pings came back over %s's stream", peer, n, keepAlive, compJID)
		}
		time.Sleep(keepAlive / 4)
	}
}
