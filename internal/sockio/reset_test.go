package sockio_test

import (
	"errors"
	"io"
	"syscall"
	"testing"
	"time"

	"github.com/push-appserver/push-appserver/internal/sockio"
)

// A connection the peer reset fails its read with the reset, not a
// clean end, and the writes after it with an error: a writer told
// nothing would take its bytes for sent.
func TestPeerResetIsAnError(t *testing.T) {
	c, srv := pair(t)
	if err := srv.(*sockio.Conn).SetLinger(0); err != nil {
		t.Fatal(err)
	}
	srv.Close() // with linger 0: a reset
	c.SetDeadline(time.Now().Add(5 * time.Second))
	n, err := c.Read(make([]byte, 16))
	if n != 0 || err == io.EOF || !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("read after the peer's reset: %d, %v; want ECONNRESET", n, err)
	}
	if _, err := c.Write([]byte("push")); err == nil {
		t.Fatal("write after the peer's reset: no error")
	}
}

// An empty read or write does nothing and fails nothing, as net.Conn's.
func TestEmptyReadWrite(t *testing.T) {
	c, _ := pair(t)
	if n, err := c.Read(nil); n != 0 || err != nil {
		t.Fatalf("Read(nil) = %d, %v", n, err)
	}
	if n, err := c.Write(nil); n != 0 || err != nil {
		t.Fatalf("Write(nil) = %d, %v", n, err)
	}
}
