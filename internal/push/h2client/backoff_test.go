package h2client

import (
	"errors"
	"testing"
	"time"
)

// TestDialBackoffStartsOverAfterAConnection: the wait between dials grows
// while they fail, up to dialBackoffMax, and starts over at
// dialBackoffBase once a connection answers: a service that failed for a
// while and came back is redialled about dialBackoffBase after its next
// failure, not a whole dialBackoffMax later, which every push waiting
// for a connection would wait too.
func TestDialBackoffStartsOverAfterAConnection(t *testing.T) {
	c, err := New(Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	h := c.p.host("push.example.org:443")
	refused := errors.New("connection refused")
	for range 8 {
		h.dialFailed(refused)
	}
	h.connected()
	h.mu.Lock()
	cleared := h.nextDial.IsZero()
	h.mu.Unlock()
	if !cleared {
		t.Fatal("a connection that answered left the next dial waiting")
	}
	before := time.Now()
	h.dialFailed(refused)
	h.mu.Lock()
	wait := h.nextDial.Sub(before)
	h.mu.Unlock()
	// Jittered between half of it and all of it: dialBackoffBase at most,
	// while the backoff left at its top waits dialBackoffMax/2 at least.
	if wait >= dialBackoffMax/2 {
		t.Fatalf("first failed dial after a connection waits %s, want about %s", wait, dialBackoffBase)
	}
}
