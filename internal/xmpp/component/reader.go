package component

import (
	"bytes"
	"encoding/xml"
	"errors"
	"fmt"
	"net"
	"sync/atomic"

	"github.com/push-appserver/push-appserver/internal/xmpp/xmlwalk"
)

// nsStream is the name space of the stream's own elements.
const nsStream = "http://etherx.jabber.org/streams"

// limitReader fails a read once more than limit bytes arrived since the
// last reset, bounding a single stanza's size.
type limitReader struct {
	net.Conn
	n, limit atomic.Int64
	// reads counts the reads that returned data, so the keep-alive can
	// tell whether the server said anything since it last looked.
	reads atomic.Uint64
}

func (l *limitReader) Read(p []byte) (int, error) {
	if l.n.Load() > l.limit.Load() {
		return 0, errors.New("stanza too large")
	}
	n, err := l.Conn.Read(p)
	if n > 0 {
		l.n.Add(int64(n))
		l.reads.Add(1)
	}
	return n, err
}

// streamConn is the connection as both mellium's handshake and our stanza
// reader read it: through one buffer, which it owns. Being an
// io.ByteReader, encoding/xml reads it directly instead of buffering it
// again, so what arrived right behind the handshake stays here for the
// stanza reader and is not lost in the handshake's decoder. The buffer is
// its own rather than a bufio.Reader's: encoding/xml reads byte by byte,
// and one call less per byte is a few percent of a push.
type streamConn struct {
	*limitReader // writes, deadlines, Close; reads count towards the limit
	buf          []byte
	r, w         int // buf[r:w] is unread
	err          error

	// bound is how many bytes of the stream a stanza may take before
	// what is kept of it is bounded (0: no bound; see decoder.setBound),
	// and over says the stanza being read took more (limitReader.n past
	// bound). Looked at here, where the count moves, rather than at
	// every token the decoder hands out: a publish IQ is about a hundred
	// of them, and the comparison at each cost it some 700 instructions.
	bound int64
	over  bool
}

// newStanza starts the count of a stanza's bytes (see over).
func (c *streamConn) newStanza() {
	c.limitReader.n.Store(0)
	c.over = false
}

func newStreamConn(lr *limitReader) *streamConn {
	return &streamConn{limitReader: lr, buf: make([]byte, 4096)}
}

// fill reads more into an empty buffer.
func (c *streamConn) fill() error {
	if c.err != nil {
		return c.err
	}
	c.r, c.w = 0, 0
	for c.w == 0 {
		n, err := c.limitReader.Read(c.buf)
		c.w = n
		if c.bound > 0 && c.limitReader.n.Load() > c.bound {
			c.over = true
		}
		if err != nil {
			c.err = err
			if n == 0 {
				return err
			}
		}
	}
	return nil
}

func (c *streamConn) Read(p []byte) (int, error) {
	if c.r == c.w {
		if err := c.fill(); err != nil {
			return 0, err
		}
	}
	n := copy(p, c.buf[c.r:c.w])
	c.r += n
	return n, nil
}

func (c *streamConn) ReadByte() (byte, error) {
	if c.r == c.w {
		if err := c.fill(); err != nil {
			return 0, err
		}
	}
	b := c.buf[c.r]
	c.r++
	return b, nil
}

// unread puts b in front of what is still to be read.
func (c *streamConn) unread(b []byte) {
	rest := c.buf[c.r:c.w]
	buf := make([]byte, max(len(c.buf), len(b)+len(rest)))
	c.w = copy(buf, b)
	c.w += copy(buf[c.w:], rest)
	c.buf, c.r = buf, 0
}

// streamHeader opens the stanza reader's view of the stream: the stream
// element the handshake read, with the name spaces a component stream
// declares (XEP-0114), so stanzas decode as they did on the handshake's
// decoder.
const streamHeader = `<stream:stream xmlns:stream='` + nsStream + `' xmlns='jabber:component:accept'>`

// stanzaDecoder returns the decoder of the stanzas that follow the
// handshake on c, positioned inside the stream element.
func stanzaDecoder(c *streamConn) (*decoder, error) {
	c.unread([]byte(streamHeader))
	d := newDecoder(newLexer(c))
	t, err := d.Next()
	if err != nil {
		return nil, err
	}
	if t.Kind != xmlwalk.StartElement || t.Name.Local != "stream" {
		return nil, fmt.Errorf("stanza reader: unexpected token of kind %d at the start of the stream", t.Kind)
	}
	return d, nil
}

// isSpace reports whether text between stanzas is only whitespace (a
// keepalive), the only text a stream may carry there.
func isSpace(b []byte) bool {
	return len(bytes.TrimLeft(b, " \t\r\n")) == 0
}

// nsStreamErrors is the name space of a stream error's condition and text.
const nsStreamErrors = "urn:ietf:params:xml:ns:xmpp-streams"

// readStreamError reads the <stream:error/> that start began and returns
// it as the session's error: its condition, and its text if any (RFC 6120
// §4.9).
func readStreamError(d *decoder, start *xmlwalk.Token) error {
	var se struct {
		Any []struct {
			XMLName xml.Name
			Text    string `xml:",chardata"`
		} `xml:",any"`
	}
	if err := d.DecodeElement(&se, &xml.StartElement{Name: start.Name, Attr: start.Attr}); err != nil {
		return fmt.Errorf("stream error from server, unreadable: %w", err)
	}
	cond, text := "", ""
	for _, e := range se.Any {
		switch {
		case e.XMLName.Space != nsStreamErrors:
		case e.XMLName.Local == "text":
			text = e.Text
		case cond == "":
			cond = e.XMLName.Local
		}
	}
	if cond == "" {
		cond = "undefined-condition"
	}
	if text != "" {
		return fmt.Errorf("stream error from server: %s (%q)", cond, text)
	}
	return fmt.Errorf("stream error from server: %s", cond)
}
