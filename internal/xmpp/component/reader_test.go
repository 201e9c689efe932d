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
	"net"
	"strings"
	"testing"
	"time"

	"github.com/push-appserver/push-appserver/internal/appserver"
	"github.com/push-appserver/push-appserver/internal/testutil/logcore"
	"github.com/push-appserver/push-appserver/internal/xmpp/adhoc"
	"github.com/push-appserver/push-appserver/internal/xmpp/component"
)

// rawSession connects a component to a listener the test plays the XMPP
// server on, by hand: it answers the handshake with ack (sent in one write
// with whatever the test appends) and returns the connection.
func rawSession(t *testing.T, ack string) (net.Conn, *appserver.Service) {
	t.Helper()
	const jid, secret = "push.example.net", "raw-secret"
	svc := logcore.New(t, appserver.Options{})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	ctx, cancel := context.WithCancel(context.Background())
	conn := component.New(component.Options{
		Addr: ln.Addr().String(), JID: jid, Secret: secret,
		Commands:   adhoc.Options{V1: true, DefaultApp: "apns"},
		MaxBackoff: time.Hour, MaxStanza: 16 << 10, Logger: slog.New(slog.DiscardHandler),
	}, svc)
	ran := make(chan struct{})
	go func() {
		defer close(ran)
		conn.Run(ctx)
	}()
	t.Cleanup(func() { cancel(); <-ran })
	ln.(*net.TCPListener).SetDeadline(time.Now().Add(10 * time.Second))
	c, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	dec := xml.NewDecoder(bufio.NewReader(c))
	for {
		tok, err := dec.Token()
		if err != nil {
			t.Fatal(err)
		}
		if st, ok := tok.(xml.StartElement); ok && st.Name.Local == "stream" {
			break
		}
	}
	fmt.Fprintf(c, `<?xml version='1.0'?><stream:stream xmlns:stream='http://etherx.jabber.org/streams' xmlns='jabber:component:accept' id='raw' from='%s'>`, jid)
	var hs struct {
		Hash string `xml:",chardata"`
	}
	if err := dec.Decode(&hs); err != nil {
		t.Fatal(err)
	}
	if sum := sha1.Sum([]byte("raw" + secret)); hs.Hash != hex.EncodeToString(sum[:]) {
		t.Fatal("wrong handshake")
	}
	if _, err := io.WriteString(c, ack); err != nil {
		t.Fatal(err)
	}
	return c, svc
}

// Stanzas that arrive in the same packet as the handshake's answer are
// read, not lost with the handshake's decoder.
func TestStanzasRightBehindHandshake(t *testing.T) {
	const disco = "<iq type='get' id='d%d' from='a@example.org/r' to='push.example.net'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>"
	var b strings.Builder
	b.WriteString("<handshake/>")
	for i := range 3 {
		fmt.Fprintf(&b, disco, i)
	}
	c, _ := rawSession(t, b.String())
	got := make([]byte, 0, 4096)
	buf := make([]byte, 4096)
	all := func() bool {
		for i := range 3 {
			if !strings.Contains(string(got), fmt.Sprintf("<iq type='result' id='d%d'", i)) {
				return false
			}
		}
		return true
	}
	for !all() {
		n, err := c.Read(buf)
		if err != nil {
			t.Fatalf("answers so far %q: %v", got, err)
		}
		got = append(got, buf[:n]...)
	}
}

// What a stream may not carry (RFC 6120 §11.1: comments, processing
// instructions, directives, anywhere; text between stanzas; stream
// elements other than an error) ends the session: the component closes
// the connection without answering the stanza.
func TestRestrictedXMLEndsSession(t *testing.T) {
	const iq = "<iq type='get' id='x' from='a@example.org/r' to='push.example.net'>%s</iq>"
	for name, data := range map[string]string{
		"comment in a stanza":   fmt.Sprintf(iq, "<query xmlns='http://jabber.org/protocol/disco#info'><!-- hi --></query>"),
		"comment between":       "<!-- hi -->" + fmt.Sprintf(iq, ""),
		"processing instr":      fmt.Sprintf(iq, "<?pi x?>"),
		"directive":             "<!DOCTYPE x>" + fmt.Sprintf(iq, ""),
		"text between stanzas":  "hello" + fmt.Sprintf(iq, ""),
		"stream features":       "<stream:features/>" + fmt.Sprintf(iq, ""),
		"stream restart":        "<stream:stream xmlns='jabber:component:accept'>" + fmt.Sprintf(iq, ""),
		"stream error":          "<stream:error><conflict xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error>",
		"mismatched end":        "</iq>",
		"end of stream":         "</stream:stream>",
		"end of another stream": "</stream:features>",
	} {
		t.Run(name, func(t *testing.T) {
			c, _ := rawSession(t, "<handshake/>"+data)
			got, err := io.ReadAll(c)
			if err != nil {
				t.Fatalf("reading until the component closes: %v", err)
			}
			if strings.Contains(string(got), "<iq") {
				t.Fatalf("answered %q", got)
			}
		})
	}
}
