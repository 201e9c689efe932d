package component

import (
	"bytes"
	"errors"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// writer serializes whole stanzas onto the connection. Replies are
// appended to a buffer, and the goroutine that finds no write under way
// writes the buffer itself: a lone reply leaves without waking another
// goroutine (at a moderate rate that wake-up, and the idle processor
// spinning after it, cost more than the write), and under load the
// replies queued during one write leave together in the next system call.
//
// The buffer is bounded: when the peer stops reading, write blocks once
// limit bytes wait, the handlers waiting in it keep their in-flight slots,
// and the reader stops reading for want of a slot. Memory stays bounded
// and the peer feels backpressure instead. A write that fails or misses
// its deadline closes the connection, so the reader ends the session and
// the component reconnects rather than going on answering nobody.
type writer struct {
	conn    net.Conn
	timeout time.Duration
	limit   int
	clock   clock
	// last is the clock's elapsed reading at the last write, in
	// nanoseconds (see sinceWrite).
	last atomic.Int64

	mu      sync.Mutex // guards pending and err
	room    *sync.Cond // on mu: pending shrank or err was set
	pending *bytes.Buffer
	err     error

	wmu   sync.Mutex // serializes writes to conn
	spare *bytes.Buffer

	// others, when set, reports whether other handlers are under way,
	// whose replies may be about to join the queue.
	others func() bool
}

func newWriter(conn net.Conn, timeout time.Duration, limit int, clk clock) *writer {
	w := &writer{conn: conn, timeout: timeout, limit: limit, clock: clk, pending: new(bytes.Buffer), spare: new(bytes.Buffer)}
	w.room = sync.NewCond(&w.mu)
	// The stream's opening and the handshake were just written.
	w.wrote()
	return w
}

// write queues one whole stanza, waiting while the queue is full, and
// writes the queue unless another goroutine is writing it. It fails once
// the connection failed.
func (w *writer) write(b []byte) error {
	w.mu.Lock()
	// A stanza larger than the limit still goes, alone.
	for w.err == nil && w.pending.Len() > 0 && w.pending.Len()+len(b) > w.limit {
		w.room.Wait()
	}
	if w.err != nil {
		w.mu.Unlock()
		return w.err
	}
	w.pending.Write(b)
	w.mu.Unlock()
	w.drain()
	return nil
}

// drain writes the queue until it is empty, unless another goroutine is
// writing: that one looks at the queue again after its write (and after
// letting go of wmu), so nothing queued is left behind.
func (w *writer) drain() {
	for w.wmu.TryLock() {
		if w.others != nil && w.others() {
			// Let the other handlers run first: a reply they queue
			// meanwhile leaves in this write instead of a write of its
			// own. A system call costs more than this round through the
			// scheduler, which returns at once when nothing else is
			// ready to run.
			runtime.Gosched()
		}
		err := w.flushLocked()
		w.wmu.Unlock()
		w.mu.Lock()
		done := err != nil || w.pending.Len() == 0
		w.mu.Unlock()
		if done {
			return
		}
	}
}

// errStreamClosed is what writes fail with once we closed our side of the
// stream.
var errStreamClosed = errors.New("stream closed by us: no more stanzas may be sent")

// closeStream writes what is queued, then the stream's closing tag. After
// it every write fails with errStreamClosed and sends nothing (RFC 6120
// §4.4: nothing may follow the closing tag), but the connection stays
// open, so what the server sent before it saw the tag is still read.
func (w *writer) closeStream() error {
	w.wmu.Lock()
	defer w.wmu.Unlock()
	w.mu.Lock()
	if w.err != nil {
		err := w.err
		w.mu.Unlock()
		return err
	}
	w.pending.WriteString("</stream:stream>")
	buf := w.pending
	w.pending = new(bytes.Buffer)
	w.err = errStreamClosed
	w.room.Broadcast()
	w.mu.Unlock()
	w.conn.SetWriteDeadline(time.Now().Add(w.timeout))
	_, err := w.conn.Write(buf.Bytes())
	w.wrote()
	if err != nil {
		w.conn.Close()
	}
	return err
}

// wrote records a write, for sinceWrite.
func (w *writer) wrote() { w.last.Store(int64(w.clock.elapsed())) }

// sinceWrite is how long nothing was written, for the whitespace
// keep-alive: on the monotonic clock, since a write timed on the wall
// clock just before NTP or an operator stepped it back would hold the
// next whitespace back by as long as the step, and a NAT on the way
// could forget the stream meanwhile.
func (w *writer) sinceWrite() time.Duration {
	return w.clock.elapsed() - time.Duration(w.last.Load())
}

// queued returns the bytes waiting to be written.
func (w *writer) queued() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.pending.Len()
}

// flush writes whatever is pending.
func (w *writer) flush() error {
	w.wmu.Lock()
	err := w.flushLocked()
	w.wmu.Unlock()
	if err == nil {
		// What was queued during the write was left to us.
		w.drain()
	}
	return err
}

// flushLocked is flush with wmu held.
func (w *writer) flushLocked() error {
	w.mu.Lock()
	buf := w.pending
	w.pending, w.spare = w.spare, buf
	err := w.err
	w.room.Broadcast()
	w.mu.Unlock()
	if err != nil || buf.Len() == 0 {
		buf.Reset()
		return err
	}
	w.conn.SetWriteDeadline(time.Now().Add(w.timeout))
	_, err = w.conn.Write(buf.Bytes())
	buf.Reset()
	w.wrote()
	if err != nil {
		w.fail(err)
	}
	return err
}

// fail marks the connection broken and closes it: the reader stops, the
// session ends and the component reconnects.
func (w *writer) fail(err error) {
	w.mu.Lock()
	if w.err == nil {
		w.err = err
	}
	w.room.Broadcast()
	w.mu.Unlock()
	w.conn.Close()
}
