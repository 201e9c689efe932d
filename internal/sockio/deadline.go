package sockio

import (
	"sync"
	"time"
)

// deadline is the deadline of one direction of a Conn, its reads' or its
// writes'. It is handed to the runtime's poller only when an operation is
// about to wait for the socket, or waits already.
//
// Why: a deadline set on a socket is a runtime timer started, moved or
// stopped, and net/http sets eight a request (for the header, the body,
// the answer, the background read it watches the client with, and the
// idle wait): 6.95 calls of runtime_pollSetDeadline an HTTP push, 2.17
// with this. Yet an operation on a busy connection seldom waits: the request is
// there when it is read, the answer fits in the socket's buffer. So the
// deadline asked for is only noted, and it reaches the poller when an
// operation has to wait. An operation that starts after the deadline
// fails at once, as the poller would fail it.
type deadline struct {
	mu      sync.Mutex
	want    time.Time // as last set
	applied time.Time // as the poller has it
	waiting bool      // an operation waits for the socket, or is about to
	apply   func(time.Time) error
}

// set notes t, and hands it to the poller at once if an operation waits,
// which it must then end at t (net/http ends its background read so). The
// error is the poller's; one that is only noted has none.
func (d *deadline) set(t time.Time) error {
	d.mu.Lock()
	d.want = t
	var err error
	if d.waiting {
		err = d.handOver()
	}
	d.mu.Unlock()
	return err
}

// handOver hands want to the poller unless it has it. d.mu must be held.
func (d *deadline) handOver() error {
	if d.applied.Equal(d.want) {
		return nil
	}
	d.applied = d.want
	return d.apply(d.want)
}

// begin starts an operation: false when the deadline has passed. A
// deadline the poller still has from an earlier wait, and that could end
// this operation sooner than the one asked for now, is replaced first:
// once it passes, the poller fails any operation on the socket.
func (d *deadline) begin() bool {
	d.mu.Lock()
	// time.Until, not time.Now().Before: for a deadline with a monotonic
	// reading (every one net/http sets but its past one, time.Unix(1, 0))
	// it reads only the monotonic clock, where Now reads the wall clock
	// too, and it compares the same way.
	ok := d.want.IsZero() || time.Until(d.want) > 0
	if ok && !d.applied.IsZero() && (d.want.IsZero() || d.applied.Before(d.want)) {
		d.handOver()
	}
	d.mu.Unlock()
	return ok
}

// wait tells that the operation is about to wait for the socket: the
// poller gets the deadline now.
func (d *deadline) wait() {
	d.mu.Lock()
	d.handOver()
	d.waiting = true
	d.mu.Unlock()
}

// end ends the operation.
func (d *deadline) end() {
	d.mu.Lock()
	d.waiting = false
	d.mu.Unlock()
}
