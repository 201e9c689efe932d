package logging

import (
	"bytes"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"
)

type gatedWriter struct {
	gate chan struct{}
	mu   sync.Mutex
	buf  bytes.Buffer
}

func (w *gatedWriter) Write(p []byte) (int, error) {
	<-w.gate
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.Write(p)
}

// A sink that stops reading never stops a logger: lines past the queue
// are dropped, and counted once the sink reads again.
func TestAsyncNeverBlocks(t *testing.T) {
	w := &gatedWriter{gate: make(chan struct{})}
	a := NewAsync(w, 4, func(n uint64) []byte { return fmt.Appendf(nil, "dropped %d\n", n) })
	logger := slog.New(slog.NewTextHandler(a, nil))
	done := make(chan struct{})
	go func() {
		for i := range 100 {
			logger.Info("line", "i", i)
		}
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(2 * time.Second):
		t.Fatal("logging blocked on a sink that does not read")
	}
	// Counted before the sink reads again: a sink that never does is
	// seen through the metrics alone.
	if d := a.Dropped(); d != 100-4-1 && d != 100-4 {
		t.Errorf("Dropped() = %d with the sink stalled, want 95 or 96 of 100 lines (4 queued, 1 perhaps taken by the writer)", d)
	}
	close(w.gate)
	a.Drain(time.Second)
	logger.Info("after")
	a.Drain(time.Second)
	w.mu.Lock()
	defer w.mu.Unlock()
	if !bytes.Contains(w.buf.Bytes(), []byte("dropped ")) || !bytes.Contains(w.buf.Bytes(), []byte("msg=after")) {
		t.Fatalf("log:\n%s", w.buf.String())
	}
}

// heldWriter holds every write until release is closed, and says on
// entered when the first write has begun.
type heldWriter struct {
	entered chan struct{}
	release chan struct{}
	once    sync.Once
	mu      sync.Mutex
	buf     bytes.Buffer
}

func newHeldWriter() *heldWriter {
	return &heldWriter{entered: make(chan struct{}), release: make(chan struct{})}
}

func (w *heldWriter) Write(p []byte) (int, error) {
	w.once.Do(func() { close(w.entered) })
	<-w.release
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.Write(p)
}

func (w *heldWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}

// A single dropped line is counted in the log too, and the count goes
// out before the next line: an operator reading the log learns that a
// line is missing however few were dropped.
func TestAsyncNoticeOfOneDroppedLine(t *testing.T) {
	w := newHeldWriter()
	a := NewAsync(w, 1, func(n uint64) []byte { return fmt.Appendf(nil, "dropped %d\n", n) })
	a.Write([]byte("first\n"))
	<-w.entered                 // the writer holds "first": the queue is empty
	a.Write([]byte("second\n")) // queued
	a.Write([]byte("third\n"))  // the queue is full: dropped
	if d := a.Dropped(); d != 1 {
		t.Fatalf("Dropped() = %d, want 1", d)
	}
	close(w.release)
	a.Drain(5 * time.Second)
	if got, want := w.String(), "first\ndropped 1\nsecond\n"; got != want {
		t.Fatalf("log %q, want %q", got, want)
	}
}

// Drain waits for the line being written, not only for the lines
// queued: a process that exits once Drain returns must not cut the last
// line (often the one that says why it stops) short.
func TestAsyncDrainWaitsForTheLineBeingWritten(t *testing.T) {
	w := newHeldWriter()
	a := NewAsync(w, 4, nil)
	a.Write([]byte("last\n"))
	<-w.entered
	const wait = 200 * time.Millisecond
	start := time.Now()
	a.Drain(wait)
	if d := time.Since(start); d < wait {
		t.Fatalf("Drain returned after %v with the line still being written, want it to wait %v", d, wait)
	}
	close(w.release)
	a.Drain(5 * time.Second)
	if got := w.String(); got != "last\n" {
		t.Fatalf("log %q", got)
	}
}

// Lines dropped are not waited for: once the sink reads again, Drain
// returns as soon as what was queued is written, rather than waiting its
// whole time for lines that never will be (a stop delayed by seconds).
func TestAsyncDrainDoesNotWaitForDroppedLines(t *testing.T) {
	w := newHeldWriter()
	a := NewAsync(w, 1, nil)
	a.Write([]byte("first\n"))
	<-w.entered
	for range 10 {
		a.Write([]byte("more\n")) // one queued, nine dropped
	}
	close(w.release)
	start := time.Now()
	a.Drain(10 * time.Second)
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("Drain waited %v for lines that were dropped", d)
	}
	if got := w.String(); got != "first\nmore\n" {
		t.Fatalf("log %q", got)
	}
}
