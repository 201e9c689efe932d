package logging

import (
	"io"
	"sync/atomic"
	"time"
)

// Async writes the log through a bounded queue, so that a log sink that
// stops reading (a stalled journald, a pipe nobody reads) never stops a
// caller of the logger: the push path and the component's handlers log
// refusals and failures. Lines that find the queue full are dropped and
// counted; the count is written, by notice, before the next line that
// goes out.
type Async struct {
	out     io.Writer
	notice  func(dropped uint64) []byte
	ch      chan []byte
	dropped atomic.Uint64 // since the last notice
	total   atomic.Uint64 // since the start, for the metrics
	queued  atomic.Int64  // lines queued or being written
}

// NewAsync starts writing to out what is written to the returned writer,
// at most lines lines waiting; notice renders the line that counts the
// lines dropped.
func NewAsync(out io.Writer, lines int, notice func(dropped uint64) []byte) *Async {
	a := &Async{out: out, notice: notice, ch: make(chan []byte, lines)}
	go a.run()
	return a
}

// Write queues one record (slog writes a record in one call); it never
// blocks.
func (a *Async) Write(p []byte) (int, error) {
	a.queued.Add(1)
	select {
	case a.ch <- append([]byte(nil), p...):
	default:
		a.queued.Add(-1)
		a.dropped.Add(1)
		a.total.Add(1)
	}
	return len(p), nil
}

func (a *Async) run() {
	for b := range a.ch {
		if n := a.dropped.Swap(0); n > 0 && a.notice != nil {
			a.out.Write(a.notice(n))
		}
		a.out.Write(b)
		a.queued.Add(-1)
	}
}

// Dropped returns how many lines found the queue full since the start.
// The notice in the log says so only once the sink reads again; a sink
// that never does is seen only through this count.
func (a *Async) Dropped() uint64 { return a.total.Load() }

// Drain waits up to wait for what is queued to be written, for a
// process about to exit.
func (a *Async) Drain(wait time.Duration) {
	deadline := time.Now().Add(wait)
	for a.queued.Load() > 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
}
