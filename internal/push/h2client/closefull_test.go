package h2client

import (
	"crypto/tls"
	"errors"
	"net/http/httptest"
	"testing"
	"time"
)

// TestCloseOnFullSocketIsPrompt: a connection ended for an error (a write
// that timed out because the service stopped reading) is closed at once.
// tls.Conn's Close would first send close_notify under a 5 s write
// deadline of its own, and with the socket's buffer full hold the
// goroutine ending it, a request that was writing, that much longer
// (TestStalledWriteEndsAtDeadline, now and then: 6.56 s, limit 2 s).
func TestCloseOnFullSocketIsPrompt(t *testing.T) {
	srv := httptest.NewUnstartedServer(nil)
	srv.StartTLS() // for its certificate
	defer srv.Close()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", srv.TLS)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		c.(*tls.Conn).Handshake()
		<-stop // never reads again
	}()
	c, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	// Fill the socket under TLS until not even a byte fits (the peer
	// reads nothing more, so what is written is never parsed).
	raw := c.NetConn()
	for _, size := range []int{64 << 10, 1} {
		buf := make([]byte, size)
		for {
			raw.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
			if _, err := raw.Write(buf); err != nil {
				break
			}
		}
	}
	raw.SetWriteDeadline(time.Time{})
	cc := newClientConn(c, func(bool) {})
	start := time.Now()
	cc.closeWith(errors.New("writing to the service: i/o timeout"))
	if d := time.Since(start); d > time.Second {
		t.Fatalf("closing a connection whose socket is full took %v", d)
	}
}
