package component_test

import (
	"bufio"
	"context"
	"crypto/sha1"
	"encoding/hex"
	"encoding/xml"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"runtime/pprof"
	"strings"
	"testing"
	"time"

	"github.com/push-appserver/push-appserver/internal/appserver"
	"github.com/push-appserver/push-appserver/internal/testutil/logcore"
	"github.com/push-appserver/push-appserver/internal/xmpp/adhoc"
	"github.com/push-appserver/push-appserver/internal/xmpp/component"
)

// FuzzStanzaReader plays an XMPP server that, after a correct handshake,
// sends arbitrary bytes on the component stream. The component, over the
// real core, must neither panic nor hang: the session ends (at the latest
// when the server closes its side) and the connection is released.
func FuzzStanzaReader(f *testing.F) {
	const jid, secret = "push.example.net", "fuzz-secret"
	logger := slog.New(slog.DiscardHandler)
	svc := logcore.New(f, appserver.Options{})
	reg, err := svc.Register(context.Background(), appserver.Caller{}, "apns", "fuzz-node", "ab12")
	if err != nil {
		f.Fatal(err)
	}

	iq := func(id, body string) string {
		return "<iq type='set' from='example.org' to='" + jid + "' id='" + id + "'>" + body + "</iq>"
	}
	publish := "<pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node='fuzz-node'><item><notification xmlns='urn:xmpp:push:0'>" +
		"<x xmlns='jabber:x:data'><field var='last-message-body'><value>hi</value></field></x></notification></item></publish>" +
		"<publish-options><x xmlns='jabber:x:data'><field var='secret'><value>" + reg.Secret + "</value></field></x></publish-options></pubsub>"
	for _, seed := range []string{
		iq("1", publish),
		iq("2", publish) + iq("3", publish) + " \n ",
		"<iq type='get' id='d' from='a@example.org/r' to='" + jid + "'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>",
		"<iq type='set' id='c' from='a@example.org/r' to='" + jid + "'><command xmlns='http://jabber.org/protocol/commands' node='v1-register-push'>" +
			"<x xmlns='jabber:x:data' type='submit'><field var='node'><value>n</value></field><field var='token'><value>t</value></field></x></command></iq>",
		"<message from='a@example.org'><body>x</body></message><presence/>",
		"<iq type='set' from='example.org'>" + publish + "</iq>",
		"<iq type='result' id='x'/><iq type='error' id='y'/>",
		"<stream:error><not-authorized xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error>",
		"<iq type='set' id='z'><!-- unterminated",
		"</stream:stream>",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		// A fresh loopback address each time: thousands of short sessions
		// a second would otherwise run out of ports to 127.0.0.1 while the
		// closed ones wait out TIME_WAIT.
		ln, err := net.Listen("tcp", fmt.Sprintf("127.%d.%d.%d:0", 1+rand.IntN(254), rand.IntN(256), 1+rand.IntN(254)))
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		ctx, cancel := context.WithCancel(context.Background())
		conn := component.New(component.Options{
			Addr: ln.Addr().String(), JID: jid, Secret: secret,
			Commands:   adhoc.Options{V1: true, DefaultApp: "apns", FCMApp: "fcm"},
			MaxBackoff: time.Hour, MaxStanza: 16 << 10, Logger: logger,
		}, svc)
		ran := make(chan struct{})
		go func() {
			defer close(ran)
			conn.Run(ctx)
		}()
		defer func() {
			cancel()
			select {
			case <-ran:
			case <-time.After(10 * time.Second):
				t.Errorf("Run did not return after its context ended:\n%s", stacks())
			}
		}()

		ln.(*net.TCPListener).SetDeadline(time.Now().Add(10 * time.Second))
		c, err := ln.Accept()
		if err != nil {
			t.Fatalf("component did not connect: %v", err)
		}
		defer c.Close()
		fuzzHandshake(t, c, jid, secret)
		// Everything the component answers is read until it closes the
		// connection, which ends the session.
		closed := make(chan struct{})
		go func() {
			io.Copy(io.Discard, c)
			close(closed)
		}()
		c.Write(data)
		c.Write([]byte("</stream:stream>"))
		c.(*net.TCPConn).CloseWrite()
		select {
		case <-closed:
		case <-time.After(10 * time.Second):
			t.Fatalf("the component did not end the session on %q:\n%s", data, stacks())
		}
	})
}

// fuzzHandshake is the server's side of XEP-0114's handshake.
func fuzzHandshake(t *testing.T, c net.Conn, jid, secret string) {
	t.Helper()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	defer c.SetDeadline(time.Time{})
	dec := xml.NewDecoder(bufio.NewReader(c))
	for {
		tok, err := dec.Token()
		if err != nil {
			t.Fatalf("reading the stream header: %v", err)
		}
		if st, ok := tok.(xml.StartElement); ok && st.Name.Local == "stream" {
			break
		}
	}
	const id = "fuzz-stream"
	fmt.Fprintf(c, `<?xml version='1.0'?><stream:stream xmlns:stream='http://etherx.jabber.org/streams' xmlns='jabber:component:accept' id='%s' from='%s'>`, id, jid)
	var hs struct {
		XMLName xml.Name `xml:"handshake"`
		Hash    string   `xml:",chardata"`
	}
	if err := dec.Decode(&hs); err != nil {
		t.Fatalf("reading the handshake: %v", err)
	}
	if sum := sha1.Sum([]byte(id + secret)); hs.Hash != hex.EncodeToString(sum[:]) {
		t.Fatal("wrong handshake")
	}
	io.WriteString(c, `<handshake/>`)
}

func stacks() string {
	var b strings.Builder
	pprof.Lookup("goroutine").WriteTo(&b, 1)
	return b.String()
}
