package e2e_test

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"encoding/xml"
	"fmt"
	"io"
	"maps"
	"net"
	"slices"
	"testing"
	"time"

	"mellium.im/sasl"
	"mellium.im/xmpp"
	"mellium.im/xmpp/jid"
	"mellium.im/xmpp/stanza"
	"mellium.im/xmpp/stream"

	"github.com/push-appserver/push-appserver/internal/xmpp/adhoc"
	"github.com/push-appserver/push-appserver/internal/xmpp/dataform"
)

// client is a user's XMPP client, speaking to Prosody over c2s.
type client struct {
	t    *testing.T
	sess *xmpp.Session
	jid  jid.JID
	done chan struct{}
}

func login(t *testing.T, addr, user, domain, password string) *client {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	// The login's time limit is the connection's own deadline, not a
	// context: see deadlineFree.
	conn.SetDeadline(time.Now().Add(15 * time.Second))
	j := jid.MustParse(user + "@" + domain + "/test")
	sess, err := xmpp.NewClientSession(context.Background(), j, deadlineFree{conn},
		xmpp.StartTLS(&tls.Config{ServerName: domain, InsecureSkipVerify: true}),
		xmpp.SASL("", password, sasl.Plain),
		xmpp.BindResource(),
	)
	if err != nil {
		conn.Close()
		t.Fatalf("login %s: %v", user, err)
	}
	conn.SetDeadline(time.Time{})
	c := &client{t: t, sess: sess, jid: sess.LocalAddr(), done: make(chan struct{})}
	go func() {
		defer close(c.done)
		sess.Serve(nil)
	}()
	t.Cleanup(c.close)
	return c
}

// deadlineFree keeps mellium.im/xmpp (v0.22.0) from setting deadlines on
// a connection. For each write with a context, it starts a goroutine that
// sets a deadline in the past if the context ends, and stops it when the
// write returns; a context cancelled right after the write can still win
// that goroutine's select, and the deadline lands on the next write, which
// fails with "i/o timeout" and breaks the TLS connection for good. A test
// that sent a few messages in a row failed so about once in a few hundred
// messages. Contexts still bound how long an IQ waits for its answer.
type deadlineFree struct{ net.Conn }

func (deadlineFree) SetDeadline(time.Time) error      { return nil }
func (deadlineFree) SetReadDeadline(time.Time) error  { return nil }
func (deadlineFree) SetWriteDeadline(time.Time) error { return nil }

func (c *client) close() {
	select {
	case <-c.done:
		return
	default:
	}
	// Our closing tag, then the server's in answer, before the
	// connection goes: cut at once, the connection could take a stanza
	// just sent with it (ejabberd logged "TLS failed" for a client that
	// sent a message and closed, and never routed the message).
	c.sess.Close()
	select {
	case <-c.done:
	case <-time.After(2 * time.Second):
	}
	c.sess.Conn().Close()
	<-c.done
}

func randomID() string {
	b := make([]byte, 8)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// iq sends an IQ with payload and decodes the answer's payload into resp.
func (c *client) iq(to string, typ stanza.IQType, payload any, resp *adhoc.Command) error {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out := struct {
		stanza.IQ
		Payload any
	}{stanza.IQ{ID: randomID(), To: jid.MustParse(to), Type: typ}, payload}
	r, err := c.sess.EncodeIQ(ctx, out)
	if err != nil {
		return err
	}
	defer r.Close()
	// The reply arrives as tokens, so ",innerxml" would be empty: decode
	// the parts we look at.
	var in struct {
		Type  string `xml:"type,attr"`
		Error *struct {
			Type       string `xml:"type,attr"`
			Conditions []struct {
				XMLName xml.Name
				Text    string `xml:",chardata"`
			} `xml:",any"`
		} `xml:"error"`
		Command *adhoc.Command `xml:"http://jabber.org/protocol/commands command"`
	}
	if err := xml.NewTokenDecoder(r).Decode(&in); err != nil && err != io.EOF {
		return err
	}
	if in.Type == "error" {
		if in.Error == nil {
			return fmt.Errorf("error reply")
		}
		return fmt.Errorf("error reply: %s %+v", in.Error.Type, in.Error.Conditions)
	}
	if resp != nil && in.Command != nil {
		*resp = *in.Command
	}
	return nil
}

// command runs an ad-hoc command at the app server and returns the result
// form's fields.
func (c *client) command(to, node string, fields map[string]string) (map[string]string, error) {
	c.t.Helper()
	form := &dataform.Form{Type: "submit"}
	for k, v := range fields {
		form.Fields = append(form.Fields, dataform.Field{Var: k, Values: []string{v}})
	}
	var resp adhoc.Command
	if err := c.iq(to, stanza.SetIQ, adhoc.Command{Node: node, Action: "execute", Form: form}, &resp); err != nil {
		return nil, err
	}
	out := map[string]string{}
	if resp.Form != nil {
		for _, f := range resp.Form.Fields {
			if len(f.Values) > 0 {
				out[f.Var] = f.Values[0]
			}
		}
	}
	out["status"] = resp.Status
	return out, nil
}

type enable struct {
	XMLName xml.Name       `xml:"urn:xmpp:push:0 enable"`
	JID     string         `xml:"jid,attr"`
	Node    string         `xml:"node,attr"`
	Form    *dataform.Form `xml:"jabber:x:data x"`
}

// enablePush asks the user's server to push to the app server (XEP-0357 §5).
func (c *client) enablePush(appServer, node, secret string) {
	c.t.Helper()
	c.enablePushWith(appServer, node, map[string]string{"secret": secret})
}

// enablePushWith enables push with the given publish-options fields; with
// none, the enable carries no form at all (as Siskin's does).
func (c *client) enablePushWith(appServer, node string, options map[string]string) {
	c.t.Helper()
	e := enable{JID: appServer, Node: node}
	if len(options) > 0 {
		e.Form = &dataform.Form{Type: "submit", Fields: []dataform.Field{
			{Var: "FORM_TYPE", Values: []string{"http://jabber.org/protocol/pubsub#publish-options"}},
		}}
		for _, k := range slices.Sorted(maps.Keys(options)) {
			e.Form.Fields = append(e.Form.Fields, dataform.Field{Var: k, Values: []string{options[k]}})
		}
	}
	if err := c.iq(c.jid.Bare().String(), stanza.SetIQ, e, nil); err != nil {
		c.t.Fatalf("enable push: %v", err)
	}
}

type chat struct {
	stanza.Message
	Body string `xml:"body"`
}

func (c *client) sendChat(to, body string) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	m := chat{stanza.Message{ID: randomID(), To: jid.MustParse(to), Type: stanza.ChatMessage}, body}
	if err := c.sess.Encode(ctx, m); err != nil {
		c.t.Fatalf("send message: %v", err)
	}
}

type receipt struct {
	stanza.Message
	Received struct {
		XMLName xml.Name `xml:"urn:xmpp:receipts received"`
		ID      string   `xml:"id,attr"`
	}
}

// sendReceipt sends a bare delivery receipt (XEP-0184): a message without
// a body, which the user's server pushes as unimportant.
func (c *client) sendReceipt(to, id string) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	m := receipt{Message: stanza.Message{ID: randomID(), To: jid.MustParse(to), Type: stanza.ChatMessage}}
	m.Received.ID = id
	if err := c.sess.Encode(ctx, m); err != nil {
		c.t.Fatalf("send receipt: %v", err)
	}
}

// A write whose context is cancelled just after it returned leaves the
// connection fit for the next write (see deadlineFree).
func TestClientWritesOutliveTheirContexts(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err == nil {
			io.Copy(io.Discard, c)
			c.Close()
		}
	}()
	conn, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ready := func(context.Context, *stream.Info, *stream.Info, *xmpp.Session, any) (xmpp.SessionState, io.ReadWriter, any, error) {
		return xmpp.Ready, nil, nil, nil
	}
	sess, err := xmpp.NewSession(context.Background(), jid.MustParse("localhost"), jid.MustParse("bob@localhost"), deadlineFree{conn}, 0, ready)
	if err != nil {
		t.Fatal(err)
	}
	// Without deadlineFree, one of the first thousand writes failed in
	// each of a few runs.
	for i := range 10000 {
		ctx, cancel := context.WithCancel(context.Background())
		m := chat{stanza.Message{ID: randomID(), To: jid.MustParse("alice@localhost"), Type: stanza.ChatMessage}, "hi"}
		err := sess.Encode(ctx, m)
		cancel()
		if err != nil {
			t.Fatalf("write %d: %v", i, err)
		}
	}
}
