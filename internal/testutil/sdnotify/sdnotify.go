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

	"golang.org/x/sys/unix"
)

// Socket receives the messages of a process given its Path as
// NOTIFY_SOCKET.
type Socket struct {
	Path string
	msgs chan Message
}

// Message is one message and the process that sent it, which the kernel
// names (SO_PASSCRED), as systemd tells the main process's messages from
// others'.
type Message struct {
	Text string
	PID  int
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
	raw, err := conn.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var serr error
	if err := raw.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_PASSCRED, 1)
	}); err != nil || serr != nil {
		t.Fatal(err, serr)
	}
	s := &Socket{Path: path, msgs: make(chan Message, 256)}
	go func() {
		buf := make([]byte, 4096)
		oob := make([]byte, unix.CmsgSpace(unix.SizeofUcred))
		for {
			n, oobn, _, _, err := conn.ReadMsgUnix(buf, oob)
			if err != nil {
				close(s.msgs)
				return
			}
			m := Message{Text: string(buf[:n])}
			if cmsgs, err := unix.ParseSocketControlMessage(oob[:oobn]); err == nil && len(cmsgs) > 0 {
				if cred, err := unix.ParseUnixCredentials(&cmsgs[0]); err == nil {
					m.PID = int(cred.Pid)
				}
			}
			s.msgs <- m
		}
	}()
	return s
}

// Next returns the next message, failing the test when none comes
// within timeout.
func (s *Socket) Next(t *testing.T, timeout time.Duration) string {
	t.Helper()
	return s.NextMessage(t, timeout).Text
}

// NextMessage is Next with the sender.
func (s *Socket) NextMessage(t *testing.T, timeout time.Duration) Message {
	t.Helper()
	select {
	case m, ok := <-s.msgs:
		if !ok {
			t.Fatal("notify socket closed")
		}
		return m
	case <-time.After(timeout):
		t.Fatalf("no message on the notify socket within %v", timeout)
		return Message{}
	}
}

// Quiet fails the test when a message comes within d.
func (s *Socket) Quiet(t *testing.T, d time.Duration) {
	t.Helper()
	select {
	case m := <-s.msgs:
		t.Fatalf("unexpected message on the notify socket: %q", m.Text)
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

// Drain discards the messages that come within d.
func (s *Socket) Drain(d time.Duration) {
	deadline := time.After(d)
	for {
		select {
		case <-s.msgs:
		case <-deadline:
			return
		}
	}
}
