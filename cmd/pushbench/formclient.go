package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"strconv"
	"time"
)

// formClient posts HTML forms over HTTP/1.1 keep-alive connections, one
// request at a time per connection, the way a phone or an XMPP server
// module does, but at a fraction of net/http's client cost. The load
// generator shares the machine's two cores with the server: with
// net/http's client it spent more CPU per registration than the server did
// (about 100 µs to 65), so it, not the server, set the rate. It speaks
// just enough HTTP for our own server's answers and fails on anything
// else.
type formClient struct {
	addr, path string
	idle       chan *formConn
}

func newFormClient(base, path string, conns int) (*formClient, error) {
	u, err := url.Parse(base)
	if err != nil {
		return nil, err
	}
	if u.Scheme != "http" {
		return nil, fmt.Errorf("form client: %s is not http://", base)
	}
	return &formClient{addr: u.Host, path: path, idle: make(chan *formConn, conns)}, nil
}

type formConn struct {
	c   net.Conn
	br  *bufio.Reader
	req []byte
}

// post sends body as a form and returns the status and the answer's body.
func (f *formClient) post(body []byte) (int, []byte, error) {
	var c *formConn
	select {
	case c = <-f.idle:
	default:
		nc, err := net.DialTimeout("tcp", f.addr, 5*time.Second)
		if err != nil {
			return 0, nil, err
		}
		c = &formConn{c: nc, br: bufio.NewReaderSize(nc, 4096)}
	}
	status, resp, keep, err := c.roundTrip(f.addr, f.path, body)
	if err != nil || !keep {
		c.c.Close()
		return status, resp, err
	}
	select {
	case f.idle <- c:
	default:
		c.c.Close()
	}
	return status, resp, nil
}

func (f *formClient) Close() {
	for {
		select {
		case c := <-f.idle:
			c.c.Close()
		default:
			return
		}
	}
}

// roundTrip sends one request and reads its answer; keep says whether the
// connection can take another.
func (c *formConn) roundTrip(host, path string, body []byte) (status int, resp []byte, keep bool, err error) {
	r := append(c.req[:0], "POST "...)
	r = append(r, path...)
	r = append(r, " HTTP/1.1\r\nHost: "...)
	r = append(r, host...)
	r = append(r, "\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: "...)
	r = strconv.AppendInt(r, int64(len(body)), 10)
	r = append(r, "\r\n\r\n"...)
	r = append(r, body...)
	c.req = r
	c.c.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := c.c.Write(r); err != nil {
		return 0, nil, false, err
	}
	line, err := c.line()
	if err != nil {
		return 0, nil, false, err
	}
	// "HTTP/1.1 200 OK"
	if len(line) < 12 || !bytes.HasPrefix(line, []byte("HTTP/1.1 ")) {
		return 0, nil, false, fmt.Errorf("form client: status line %q", line)
	}
	status, err = strconv.Atoi(string(line[9:12]))
	if err != nil {
		return 0, nil, false, fmt.Errorf("form client: status line %q", line)
	}
	length, closing := -1, false
	for {
		h, err := c.line()
		if err != nil {
			return 0, nil, false, err
		}
		if len(h) == 0 {
			break
		}
		name, value, ok := bytes.Cut(h, []byte(":"))
		if !ok {
			return 0, nil, false, fmt.Errorf("form client: header %q", h)
		}
		switch {
		case bytes.EqualFold(name, []byte("Content-Length")):
			if length, err = strconv.Atoi(string(bytes.TrimSpace(value))); err != nil || length < 0 || length > 1<<16 {
				return 0, nil, false, fmt.Errorf("form client: header %q", h)
			}
		case bytes.EqualFold(name, []byte("Connection")):
			closing = bytes.EqualFold(bytes.TrimSpace(value), []byte("close"))
		case bytes.EqualFold(name, []byte("Transfer-Encoding")):
			return 0, nil, false, fmt.Errorf("form client: header %q is not handled", h)
		}
	}
	if length < 0 {
		return 0, nil, false, errors.New("form client: answer without Content-Length")
	}
	resp = make([]byte, length)
	if _, err := io.ReadFull(c.br, resp); err != nil {
		return 0, nil, false, err
	}
	return status, resp, !closing, nil
}

// line reads one header line without its CRLF.
func (c *formConn) line() ([]byte, error) {
	l, err := c.br.ReadSlice('\n')
	if err != nil {
		return nil, fmt.Errorf("form client: reading the answer: %w", err)
	}
	return bytes.TrimRight(l, "\r\n"), nil
}
