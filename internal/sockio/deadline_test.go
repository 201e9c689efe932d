package sockio_test

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"testing"
	"time"

	"github.com/push-appserver/push-appserver/internal/sockio"
)

// within runs op and returns its error, failing the test if op takes
// longer than d: a deadline that never reaches the poller would otherwise
// hang the test.
func within(t *testing.T, d time.Duration, op func() error) error {
	t.Helper()
	errc := make(chan error, 1)
	go func() { errc <- op() }()
	select {
	case err := <-errc:
		return err
	case <-time.After(d):
		t.Fatalf("still waiting after %v", d)
		return nil
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, os.ErrDeadlineExceeded) && errors.As(err, &ne) && ne.Timeout()
}

// An operation begun after its deadline fails at once, as net.Conn's do,
// even with data to read or room to write.
func TestPassedDeadlineFailsAtOnce(t *testing.T) {
	c, srv := pair(t)
	srv.Write([]byte("ready"))
	time.Sleep(20 * time.Millisecond)
	c.SetDeadline(time.Now().Add(-time.Second))
	if n, err := c.Read(make([]byte, 10)); n != 0 || !isTimeout(err) {
		t.Fatalf("read: %d, %v; want 0 and a timeout", n, err)
	}
	if n, err := c.Write([]byte("x")); n != 0 || !isTimeout(err) {
		t.Fatalf("write: %d, %v; want 0 and a timeout", n, err)
	}
	// A later deadline makes the connection usable again.
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if n, err := c.Read(make([]byte, 10)); n != 5 || err != nil {
		t.Fatalf("read after the deadline moved: %d, %v", n, err)
	}
}

// A deadline set while an operation waits ends it: a past one at once (how
// net/http ends the read it watches a client with), a future one when it
// passes.
func TestDeadlineSetWhileWaiting(t *testing.T) {
	for _, tc := range []struct {
		name  string
		write bool
		after time.Duration
	}{
		{"read, past", false, -time.Second},
		{"read, future", false, 50 * time.Millisecond},
		{"write, past", true, -time.Second},
		{"write, future", true, 50 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, _ := pair(t)
			set, op := c.SetReadDeadline, func() error { _, err := c.Read(make([]byte, 10)); return err }
			if tc.write {
				// The peer reads nothing: the write waits for room.
				set, op = c.SetWriteDeadline, func() error { _, err := c.Write(make([]byte, 64<<20)); return err }
			}
			go func() {
				time.Sleep(50 * time.Millisecond)
				set(time.Now().Add(tc.after))
			}()
			if err := within(t, 5*time.Second, op); !isTimeout(err) {
				t.Fatalf("%v; want a timeout", err)
			}
		})
	}
}

// A deadline cleared after a wait that gave it to the poller ends no later
// operation, though the poller's timer for it has passed by then.
func TestClearedDeadlineEndsNothing(t *testing.T) {
	c, srv := pair(t)
	c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	go func() {
		time.Sleep(5 * time.Millisecond)
		srv.Write([]byte("a"))
	}()
	// This read waits for the peer, with the deadline.
	if err := within(t, 5*time.Second, func() error { _, err := c.Read(make([]byte, 10)); return err }); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Time{})
	time.Sleep(250 * time.Millisecond) // past the deadline cleared
	go func() {
		time.Sleep(20 * time.Millisecond)
		srv.Write([]byte("b"))
	}()
	if err := within(t, 5*time.Second, func() error { _, err := c.Read(make([]byte, 10)); return err }); err != nil {
		t.Fatalf("read after the deadline was cleared: %v", err)
	}
}

// A deadline only noted, never given to the poller, is still kept by an
// operation that then waits.
func TestNotedDeadlineReachesAWait(t *testing.T) {
	c, srv := pair(t)
	srv.Write([]byte("a"))
	time.Sleep(20 * time.Millisecond)
	dl := time.Now().Add(300 * time.Millisecond)
	c.SetReadDeadline(dl)
	// The data is there: no wait.
	if _, err := c.Read(make([]byte, 10)); err != nil {
		t.Fatal(err)
	}
	// Nothing is there: this one waits until the deadline.
	err := within(t, 5*time.Second, func() error { _, err := c.Read(make([]byte, 10)); return err })
	if !isTimeout(err) {
		t.Fatalf("%v; want a timeout", err)
	}
	if early := time.Until(dl); early > 10*time.Millisecond {
		t.Fatalf("the read gave up %v before its deadline", early)
	}
}

var _ net.Conn = (*sockio.Conn)(nil)

// net/http's timeouts hold on connections of a sockio.Listener: a client
// that sends half a header, or goes idle, is cut off when its timeout
// passes, and requests on a kept-alive connection (each of which has
// net/http set eight deadlines, and end a read that waits) go through.
func TestHTTPServerTimeouts(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			io.Copy(io.Discard, r.Body)
			// Long enough for the read net/http now starts to watch the
			// client to wait in the poller: the answer must end it.
			time.Sleep(2 * time.Millisecond)
			io.WriteString(w, "ok")
		}),
		ReadHeaderTimeout: 100 * time.Millisecond,
		ReadTimeout:       200 * time.Millisecond,
		WriteTimeout:      200 * time.Millisecond,
		IdleTimeout:       time.Second,
	}
	// A connection turns idle once net/http ended the read it watched the
	// client with during the request.
	idle := make(chan struct{}, 100)
	srv.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateIdle {
			idle <- struct{}{}
		}
	}
	go srv.Serve(sockio.Listener{Listener: ln})
	t.Cleanup(func() { srv.Close() })
	dial := func() net.Conn {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		c.SetDeadline(time.Now().Add(5 * time.Second)) // a broken server fails the test, not hang it
		return c
	}
	// closedWithin reads from c until the server closes it.
	closedWithin := func(c net.Conn, min, max time.Duration) {
		t.Helper()
		start := time.Now()
		err := within(t, 5*time.Second, func() error {
			_, err := io.Copy(io.Discard, c)
			return err
		})
		if d := time.Since(start); err != nil || d < min || d > max {
			t.Fatalf("closed after %v (%v); want between %v and %v", d, err, min, max)
		}
	}

	t.Run("half a header", func(t *testing.T) {
		c := dial()
		io.WriteString(c, "POST / HTTP/1.1\r\nHost: x\r\n")
		closedWithin(c, 80*time.Millisecond, 2*time.Second)
	})
	t.Run("kept alive, then idle", func(t *testing.T) {
		c := dial()
		br := bufio.NewReader(c)
		for i := range 50 {
			io.WriteString(c, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nbody")
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatalf("request %d: %v", i, err)
			}
			b, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != 200 || string(b) != "ok" {
				t.Fatalf("request %d: %d %q", i, resp.StatusCode, b)
			}
			select {
			case <-idle:
			case <-time.After(2 * time.Second):
				t.Fatalf("request %d answered, but the connection never turned idle", i)
			}
		}
		// Past the header and request timeouts of the last request, well
		// short of the idle one: still open.
		time.Sleep(400 * time.Millisecond)
		io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
		resp, err := http.ReadResponse(br, nil)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("request after a pause: %v", err)
		}
		io.ReadAll(resp.Body)
		closedWithin(c, 800*time.Millisecond, 3*time.Second)
	})
}
