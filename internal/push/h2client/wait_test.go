package h2client

import (
	"net"
	"testing"
)

// woken lists which of ws hold a wake, and takes it.
func woken(ws ...*waiter) []bool {
	got := make([]bool, len(ws))
	for i, w := range ws {
		select {
		case <-w.woken:
			got[i] = true
		default:
		}
	}
	return got
}

func wantWoken(t *testing.T, step string, got []bool, want ...bool) {
	t.Helper()
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("%s: woken %v, want %v", step, got, want)
		}
	}
}

// A stream's end wakes the oldest waiter alone; a change of state wakes
// every waiter.
func TestWakeOneOrAll(t *testing.T) {
	h := &hostPool{}
	a, b, c := h.queue(), h.queue(), h.queue()
	h.wake(false)
	wantWoken(t, "wake one", woken(a, b, c), true, false, false)
	h.wake(true)
	wantWoken(t, "wake all", woken(a, b, c), false, true, true)
	if n := h.nwaiting.Load(); n != 0 || h.waiting.Len() != 0 {
		t.Fatalf("%d waiting (list %d) after waking all", n, h.waiting.Len())
	}
	h.wake(false) // nobody waits: nothing to do
}

// A waiter that leaves with a wake it did not act on (its deadline came
// with it) passes it to the next, or the room it was woken for would wait
// unused; one that leaves unwoken wakes nobody.
func TestLeavePassesAnUnusedWake(t *testing.T) {
	h := &hostPool{}
	a, b, c := h.queue(), h.queue(), h.queue()
	h.wake(false)
	h.leave(a)
	wantWoken(t, "a left woken", woken(b, c), true, false)
	h.leave(c)
	if n := h.nwaiting.Load(); n != 0 || h.waiting.Len() != 0 {
		t.Fatalf("%d waiting (list %d) after all left", n, h.waiting.Len())
	}
	h.leave(b) // woken, and the wake taken: nothing to pass on
}

// A connection tells its pool of a stream's end as room for one request.
func TestStreamEndWakesOneWaiter(t *testing.T) {
	nc, peer := net.Pipe()
	defer nc.Close()
	defer peer.Close()
	h := &hostPool{}
	cc := newClientConn(nc, h.wake)
	a, b := h.queue(), h.queue()
	cc.released()
	wantWoken(t, "stream ended", woken(a, b), true, false)
}
