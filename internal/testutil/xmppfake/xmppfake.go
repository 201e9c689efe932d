// Package xmppfake is the XMPP server's side of an external component
// connection (XEP-0114), for tests and the benchmark: it accepts the app
// server's component, checks its handshake, and hands the test the stream
// to send stanzas on and read replies from. It also renders the publish
// IQs a user's server sends. It can play a server that is down (accepting
// and dropping connections) and counts connections and handshakes, so
// reconnection can be measured.
package xmppfake

import (
	"bufio"
	"crypto/sha1"
	"encoding/hex"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Server listens for component connections on a free loopback port.
type Server struct {
	ln     net.Listener
	jid    string
	secret string

	streams     chan *Stream
	connections atomic.Int64
	handshakes  atomic.Int64
	down        atomic.Bool
	conflict    atomic.Bool
	events      chan Event

	mu     sync.Mutex
	closed bool
	conns  map[net.Conn]struct{}
}

// Event is what happened to one incoming connection.
type Event struct {
	At   time.Time
	Kind string // "connect" (TCP accepted), "dropped" (while down), "authenticated", "rejected", "conflict"
}

// Listen starts a server for component jid with secret.
func Listen(jid, secret string) (*Server, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s := &Server{ln: ln, jid: jid, secret: secret, streams: make(chan *Stream, 16),
		events: make(chan Event, 1024), conns: map[net.Conn]struct{}{}}
	go s.serve()
	return s, nil
}

// Addr is the host:port the component dials.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Close stops listening and closes every connection.
func (s *Server) Close() {
	s.ln.Close()
	s.mu.Lock()
	s.closed = true
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
}

// SetDown makes the server behave as one that is not ready: connections
// are accepted and closed at once, before any stream. Each still counts.
func (s *Server) SetDown(down bool) { s.down.Store(down) }

// SetConflict makes the server refuse each handshake with conflict, as
// Prosody (component_conflict_resolve kick_new, its default) does while
// it holds another connection for the component.
func (s *Server) SetConflict(conflict bool) { s.conflict.Store(conflict) }

// Connections is the number of TCP connections accepted.
func (s *Server) Connections() int { return int(s.connections.Load()) }

// Handshakes is the number of handshakes the component attempted.
func (s *Server) Handshakes() int { return int(s.handshakes.Load()) }

// Events delivers what happens to incoming connections, for tests that
// measure reconnection; events beyond its buffer are dropped.
func (s *Server) Events() <-chan Event { return s.events }

func (s *Server) event(kind string) {
	select {
	case s.events <- Event{At: time.Now(), Kind: kind}:
	default:
	}
}

func (s *Server) serve() {
	for i := 0; ; i++ {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.connections.Add(1)
		s.event("connect")
		if s.down.Load() {
			s.event("dropped")
			c.Close()
			continue
		}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			c.Close()
			return
		}
		s.conns[c] = struct{}{}
		s.mu.Unlock()
		go s.handshake(c, fmt.Sprintf("stream-%d", i))
	}
}

// HandshakeOK checks the component's answer to stream id: the hex SHA-1 of
// id followed by the secret (XEP-0114 §3).
func HandshakeOK(id, secret, answer string) bool {
	sum := sha1.Sum([]byte(id + secret))
	return strings.EqualFold(strings.TrimSpace(answer), hex.EncodeToString(sum[:]))
}

func (s *Server) handshake(c net.Conn, id string) {
	c.SetDeadline(time.Now().Add(30 * time.Second))
	dec := xml.NewDecoder(bufio.NewReaderSize(c, 64<<10))
	for {
		tok, err := dec.Token()
		if err != nil {
			c.Close()
			return
		}
		if st, ok := tok.(xml.StartElement); ok && st.Name.Local == "stream" {
			break
		}
	}
	fmt.Fprintf(c, `<?xml version='1.0'?><stream:stream xmlns:stream='http://etherx.jabber.org/streams' xmlns='jabber:component:accept' id='%s' from='%s'>`, id, s.jid)
	var hs struct {
		XMLName xml.Name `xml:"handshake"`
		Hash    string   `xml:",chardata"`
	}
	if err := dec.Decode(&hs); err != nil {
		c.Close()
		return
	}
	s.handshakes.Add(1)
	if !HandshakeOK(id, s.secret, hs.Hash) {
		s.event("rejected")
		io.WriteString(c, `<stream:error><not-authorized xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error></stream:stream>`)
		c.Close()
		return
	}
	if s.conflict.Load() {
		s.event("conflict")
		io.WriteString(c, `<stream:error><conflict xmlns='urn:ietf:params:xml:ns:xmpp-streams'/><text xmlns='urn:ietf:params:xml:ns:xmpp-streams'>Component already connected</text></stream:error></stream:stream>`)
		c.Close()
		return
	}
	io.WriteString(c, `<handshake/>`)
	c.SetDeadline(time.Time{})
	s.event("authenticated")
	s.streams <- &Stream{Conn: c, Dec: dec}
}

// Accept waits up to timeout for the next authenticated component stream.
func (s *Server) Accept(timeout time.Duration) (*Stream, error) {
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case st := <-s.streams:
		return st, nil
	case <-t.C:
		return nil, errors.New("component did not connect")
	}
}

// Stream is one authenticated component stream. Conn writes stanzas to the
// component; Dec reads what it sent.
type Stream struct {
	Conn net.Conn
	Dec  *xml.Decoder
}

// Send writes s to the component.
func (st *Stream) Send(s string) error {
	_, err := io.WriteString(st.Conn, s)
	return err
}

// Close drops the connection, as a server going away does.
func (st *Stream) Close() { st.Conn.Close() }

// PublishIQ renders a push publish the way Prosody's mod_cloud_notify
// sends it (see the interop notes). With important set, the summary
// carries the placeholder body that marks a message the user should see.
func PublishIQ(id, from, to, node, secret string, important bool) string {
	body := ""
	if important {
		body = `<field var='last-message-body'><value>New Message!</value></field>`
	}
	return `<iq type='set' from='` + from + `' to='` + to + `' id='` + id + `'><pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node='` + node +
		`'><item><notification xmlns='urn:xmpp:push:0'><x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE'><value>urn:xmpp:push:summary</value></field><field var='message-count'><value>1</value></field>` + body +
		`</x></notification></item></publish><publish-options><x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE'><value>http://jabber.org/protocol/pubsub#publish-options</value></field><field var='secret'><value>` +
		secret + `</value></field></x></publish-options></pubsub></iq>`
}
