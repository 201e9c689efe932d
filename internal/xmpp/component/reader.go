package component

import (
	"bytes"
	"encoding/xml"
	"errors"
	"fmt"
	"net"
	"sync/atomic"
)

// nsStream is the name space of the stream's own elements.
const nsStream = "http://etherx.jabber.org/streams"

// limitReader fails a read once more than limit bytes arrived since the
// last reset, bounding a single stanza's size.
type limitReader struct {
	net.Conn
	n, limit atomic.Int64
}

func (l *limitReader) Read(p []byte) (int, error) {
	if l.n.Load() > l.limit.Load() {
		return 0, errors.New("stanza too large")
	}
	n, err := l.Conn.Read(p)
	l.n.Add(int64(n))
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
// handshake on c, positioned inside the stream element. Its tokens come
// from our lexer over c's buffer, under encoding/xml's name-space and
// nesting layer.
func stanzaDecoder(c *streamConn) (*xml.Decoder, error) {
	c.unread([]byte(streamHeader))
	d := xml.NewTokenDecoder(newLexer(c))
	tok, err := d.Token()
	if err != nil {
		return nil, err
	}
	if st, ok := tok.(xml.StartElement); !ok || st.Name.Local != "stream" {
		return nil, fmt.Errorf("stanza reader: unexpected %T at the start of the stream", tok)
	}
	return d, nil
}

// isSpace reports whether text between stanzas is only whitespace (a
// keepalive), the only text a stream may carry there.
func isSpace(b []byte) bool {
	return len(bytes.TrimLeft(b, " \t\r\n")) == 0
}
