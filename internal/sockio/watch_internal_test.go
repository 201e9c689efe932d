package sockio

import (
	"errors"
	"io"
	"net"
	"os"
	"runtime"
	"testing"
	"time"
)

// listenerPair is a connection accepted by a Listener, as net/http's
// server gets it, and its client.
func listenerPair(t *testing.T) (*Conn, net.Conn) {
	t.Helper()
	tl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := Listener{Listener: tl}
	defer ln.Close()
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	srv, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	return srv.(*Conn), client
}

// A waiting watch still sees what net/http watches for: the client's
// next bytes, its hang-up, and the deadline net/http moves into the past
// to end the watch when the handler returns.
func TestWatchEnds(t *testing.T) {
	for _, tc := range []struct {
		name    string
		act     func(c *Conn, client net.Conn)
		wantN   int
		wantErr func(error) bool
	}{
		{"client writes", func(_ *Conn, client net.Conn) { client.Write([]byte("G")) }, 1, func(err error) bool { return err == nil }},
		{"client hangs up", func(_ *Conn, client net.Conn) { client.Close() }, 0, func(err error) bool { return err == io.EOF }},
		{"deadline in the past", func(c *Conn, _ net.Conn) { c.SetReadDeadline(time.Unix(1, 0)) }, 0, func(err error) bool { return errors.Is(err, os.ErrDeadlineExceeded) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, client := listenerPair(t)
			type result struct {
				n   int
				err error
			}
			got := make(chan result, 1)
			go func() {
				n, err := c.Read(make([]byte, 1))
				got <- result{n, err}
			}()
			// Once the watch tells its deadline that it waits, the poller
			// has been told to report the socket's next readiness.
			for {
				c.rdl.mu.Lock()
				w := c.rdl.waiting
				c.rdl.mu.Unlock()
				if w {
					break
				}
				runtime.Gosched()
			}
			tc.act(c, client)
			select {
			case r := <-got:
				if r.n != tc.wantN || !tc.wantErr(r.err) {
					t.Fatalf("watch ended with %d bytes, %v", r.n, r.err)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("watch did not end")
			}
		})
	}
}

// SkipWatch ends the next watch at once, as net/http takes one that saw
// nothing, and only that: a read of another kind takes the mark away, so
// that it never reaches the watch of a later request; and a connection
// no Listener accepted has no watch to skip.
func TestSkipWatch(t *testing.T) {
	for _, tc := range []struct {
		name      string
		server    bool // the Listener's connection, else a wrapped client
		readFirst bool // a longer read between the mark and the watch
		wantSkip  bool
	}{
		{"watch after the mark", true, false, true},
		{"watch after another read", true, true, false},
		{"other connection", false, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv, client := listenerPair(t)
			r, w := srv, net.Conn(Wrap(client).(*Conn))
			if !tc.server {
				r, w = w.(*Conn), srv
			}
			r.SkipWatch()
			if tc.readFirst {
				if _, err := w.Write([]byte("ab")); err != nil {
					t.Fatal(err)
				}
				r.SetReadDeadline(time.Now().Add(10 * time.Second))
				if n, err := r.Read(make([]byte, 4096)); n != 2 || err != nil {
					t.Fatalf("read %d bytes, %v", n, err)
				}
			}
			// Nothing to read: a watch not skipped waits for its
			// deadline.
			r.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
			n, err := r.Read(make([]byte, 1))
			if skipped := n == 0 && err == nil; skipped != tc.wantSkip {
				t.Fatalf("watch skipped: %v (%d bytes, %v), want %v", skipped, n, err, tc.wantSkip)
			}
			if !tc.wantSkip && !errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatalf("watch ended with %d bytes, %v; want its deadline", n, err)
			}
		})
	}
}
