// Package sdnotify is the service manager's end of sd_notify(3) for
// tests: a datagram socket, as systemd makes for a Type=notify unit,
// that collects what a process sends to it.
package sdnotify

import (
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Socket receives the messages of a process given its Path as
// NOTIFY_SOCKET.
type Socket struct {
	Path string
	msgs chan string
}

// Listen opens a socket in a directory of the test's, closed when the
// test ends.
func Listen(t *testing.T) *Socket {
	t.Helper()
	path := filepath.Join(t.TempDir(), "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	s := &Socket{Path: path, msgs: make(chan string, 64)}
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				close(s.msgs)
				return
			}
			s.msgs <- string(buf[:n])
		}
	}()
	return s
}

// Next returns the next message, failing the test when none comes
// within timeout.
func (s *Socket) Next(t *testing.T, timeout time.Duration) string {
	t.Helper()
	select {
	case m, ok := <-s.msgs:
		if !ok {
			t.Fatal("notify socket closed")
		}
		return m
	case <-time.After(timeout):
		t.Fatalf("no message on the notify socket within %v", timeout)
		return ""
	}
}

// Quiet fails the test when a message comes within d.
func (s *Socket) Quiet(t *testing.T, d time.Duration) {
	t.Helper()
	select {
	case m := <-s.msgs:
		t.Fatalf("unexpected message on the notify socket: %q", m)
	case <-time.After(d):
	}
}

// Fields splits a message into its KEY=VALUE lines.
func Fields(msg string) map[string]string {
	f := map[string]string{}
	for _, line := range strings.Split(msg, "\n") {
		if k, v, ok := strings.Cut(line, "="); ok {
			f[k] = v
		}
	}
	return f
}
