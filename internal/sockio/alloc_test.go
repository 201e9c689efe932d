//go:build !race

package sockio_test

import (
	"io"
	"testing"
	"time"
)

// The race detector's own bookkeeping allocates, so this runs without it
// (make test runs this package once more without -race).

// A read and a write on the push path allocate nothing.
func TestNoAllocations(t *testing.T) {
	c, srv := pair(t)
	msg := []byte("<iq type='result' id='x'/>")
	buf := make([]byte, 64)
	allocs := testing.AllocsPerRun(100, func() {
		if _, err := c.Write(msg); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(srv, buf[:len(msg)]); err != nil {
			t.Fatal(err)
		}
		if _, err := srv.Write(msg); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(c, buf[:len(msg)]); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per write and read, want 0", allocs)
	}
}

// A read or write begun after its deadline allocates nothing either:
// net/http ends the read it watches every request's client with that
// way.
func TestLateOperationsAllocateNothing(t *testing.T) {
	c, _ := pair(t)
	c.SetDeadline(time.Now().Add(-time.Second))
	buf := make([]byte, 8)
	var rerr, werr error
	allocs := testing.AllocsPerRun(100, func() {
		_, rerr = c.Read(buf)
		_, werr = c.Write(buf)
	})
	if !isTimeout(rerr) || !isTimeout(werr) {
		t.Fatalf("read: %v; write: %v; want timeouts", rerr, werr)
	}
	if allocs != 0 {
		t.Fatalf("%v allocations per late read and write, want 0", allocs)
	}
}
