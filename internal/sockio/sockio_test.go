package sockio_test

import (
	"bytes"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"

	"github.com/push-appserver/push-appserver/internal/sockio"
)

// pair returns a wrapped client connection and the server's end of it.
func pair(t *testing.T) (*sockio.Conn, net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := sockio.Listener{Listener: ln}.Accept()
		if err != nil {
			close(accepted)
			return
		}
		accepted <- c
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	srv, ok := <-accepted
	if !ok {
		t.Fatal("accept failed")
	}
	if _, ok := srv.(*sockio.Conn); !ok {
		t.Fatalf("the listener accepted a %T, want *sockio.Conn", srv)
	}
	t.Cleanup(func() { c.Close(); srv.Close() })
	return sockio.Wrap(c).(*sockio.Conn), srv
}

// More than the socket buffers hold crosses intact both ways: the writer
// waits for room, the reader for data.
func TestLargeTransfersBothWays(t *testing.T) {
	c, srv := pair(t)
	want := make([]byte, 8<<20)
	rand.Read(want)
	for _, dir := range []struct {
		name string
		w, r net.Conn
	}{{"wrapped writes", c, srv}, {"wrapped reads", srv, c}} {
		t.Run(dir.name, func(t *testing.T) {
			// A broken side fails the test rather than hanging it.
			dir.r.SetReadDeadline(time.Now().Add(10 * time.Second))
			dir.w.SetWriteDeadline(time.Now().Add(10 * time.Second))
			errc := make(chan error, 1)
			go func() {
				n, err := dir.w.Write(want)
				if err == nil && n != len(want) {
					err = io.ErrShortWrite
				}
				if err != nil {
					dir.w.Close() // the reader stops too
				}
				errc <- err
			}()
			got := make([]byte, len(want))
			if _, err := io.ReadFull(dir.r, got); err != nil {
				t.Fatal(err)
			}
			if err := <-errc; err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Fatal("the bytes read differ from the bytes written")
			}
		})
	}
}

func TestReadDeadline(t *testing.T) {
	c, _ := pair(t)
	c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	start := time.Now()
	var n int
	err := within(t, 5*time.Second, func() (err error) { n, err = c.Read(make([]byte, 10)); return err })
	if n != 0 || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read: %d, %v; want 0 and a deadline error", n, err)
	}
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("%v is not a net.Error that says timeout", err)
	}
	if d := time.Since(start); d < 40*time.Millisecond {
		t.Fatalf("the read gave up after %v, before its deadline", d)
	}
}

// A peer that stops reading: the write waits for room until its deadline
// and reports what it had written.
func TestWriteDeadline(t *testing.T) {
	c, _ := pair(t)
	c.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
	var n int
	err := within(t, 5*time.Second, func() (err error) { n, err = c.Write(make([]byte, 64<<20)); return err })
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("write: %v; want a deadline error", err)
	}
	if n == 0 || n >= 64<<20 {
		t.Fatalf("the write reported %d bytes written, want some but not all", n)
	}
}

func TestPeerCloseIsEOF(t *testing.T) {
	c, srv := pair(t)
	srv.Write([]byte("last words"))
	srv.Close()
	got, err := io.ReadAll(c)
	if err != nil || string(got) != "last words" {
		t.Fatalf("read %q, %v; want the last words and EOF", got, err)
	}
	if n, err := c.Read(make([]byte, 1)); n != 0 || err != io.EOF {
		t.Fatalf("read after EOF: %d, %v", n, err)
	}
}

// Closing the connection ends a read that waits on it, as with net.Conn.
func TestCloseEndsWaitingRead(t *testing.T) {
	c, _ := pair(t)
	errc := make(chan error, 1)
	go func() {
		_, err := c.Read(make([]byte, 10))
		errc <- err
	}()
	time.Sleep(20 * time.Millisecond)
	c.Close()
	select {
	case err := <-errc:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("read: %v; want net.ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the read did not end when the connection closed")
	}
	if _, err := c.Write([]byte("x")); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("write after close: %v; want net.ErrClosed", err)
	}
}

func TestWrapLeavesOtherConnsAlone(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	if got := sockio.Wrap(a); got != a {
		t.Fatalf("Wrap(pipe) = %T, want the pipe itself", got)
	}
}
