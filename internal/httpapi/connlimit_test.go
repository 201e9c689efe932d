package httpapi_test

import (
	"io"
	"net"
	"testing"
	"time"

	"github.com/push-appserver/push-appserver/internal/httpapi"
)

// Past its slots the listener closes what it accepts at once; a slot
// comes back when a connection closes.
func TestLimitListener(t *testing.T) {
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := httpapi.LimitListener(raw, make(chan struct{}, 2))
	defer ln.Close()
	accepted := make(chan net.Conn, 8)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted <- c
		}
	}()
	dial := func() net.Conn {
		c, err := net.Dial("tcp", raw.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	closed := func(c net.Conn) bool {
		c.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
		_, err := c.Read(make([]byte, 1))
		return err == io.EOF
	}
	dial()
	dial()
	first := <-accepted
	<-accepted
	third := dial()
	if !closed(third) {
		t.Fatal("a connection past the slots stayed open")
	}
	first.Close()
	fourth := dial()
	select {
	case <-accepted:
	case <-time.After(5 * time.Second):
		t.Fatal("a slot freed by a close was not taken")
	}
	if closed(fourth) {
		t.Fatal("the connection in the freed slot was closed")
	}
}

// The cap leaves descriptors for the process's own connections.
func TestConnectionCap(t *testing.T) {
	if n := httpapi.ConnectionCap(); n < 16 || n > 1<<16 {
		t.Fatalf("ConnectionCap() = %d", n)
	}
}
