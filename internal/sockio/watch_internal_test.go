package sockio

import (
	"errors"
	"io"
	"net"
	"os"
	"runtime"
	"syscall"
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

// queued waits until the socket of c holds a byte to read.
func queued(t *testing.T, c *Conn) {
	t.Helper()
	for {
		var n int
		err := c.rc.Control(func(fd uintptr) {
			n, _, _ = syscall.Recvfrom(int(fd), make([]byte, 1), syscall.MSG_PEEK)
		})
		if err != nil {
			t.Fatal(err)
		}
		if n > 0 {
			return
		}
		runtime.Gosched()
	}
}

// A single-byte read on a connection a Listener accepted (net/http's
// watch of the client) waits for the socket before it reads, instead of
// a system call that nearly always fails: its first call of the callback
// the poller runs asks to wait, and leaves a byte already there for
// later. A longer read, or any read on another connection, reads first,
// as the package comment says every read must that cannot afford to
// miss what came before it. (Through Read, whether such a byte is seen
// depends on whether the poller had taken in its arrival: not tested.)
func TestSingleByteReadOfAServerWaitsFirst(t *testing.T) {
	for _, tc := range []struct {
		name     string
		server   bool // read the Listener's connection, else a wrapped client
		buf      int
		wantRead bool
	}{
		{"server connection, one byte", true, 1, false},
		{"server connection, a buffer", true, 4096, true},
		{"other connection, one byte", false, 1, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv, client := listenerPair(t)
			r, w := srv, net.Conn(Wrap(client).(*Conn))
			if !tc.server {
				r, w = w.(*Conn), srv
			}
			if _, err := w.Write([]byte("x")); err != nil {
				t.Fatal(err)
			}
			queued(t, r)
			p := make([]byte, tc.buf)
			var done bool
			r.rmu.Lock()
			r.startRead(p)
			if err := r.rc.Control(func(fd uintptr) { done = r.read(fd) }); err != nil {
				t.Fatal(err)
			}
			r.rdl.end()
			read := done && r.rn == 1 && p[0] == 'x'
			r.rbuf = nil
			r.rmu.Unlock()
			if read != tc.wantRead {
				t.Fatalf("read the byte there at once: %v, want %v (done %v)", read, tc.wantRead, done)
			}
			if !tc.wantRead {
				if done {
					t.Fatal("the watch's first call did not ask to wait")
				}
				r.SetReadDeadline(time.Now().Add(10 * time.Second))
				if n, err := r.Read(make([]byte, 8)); n != 1 || err != nil {
					t.Fatalf("the next read got %d bytes, %v; want the byte the watch left", n, err)
				}
			}
		})
	}
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
