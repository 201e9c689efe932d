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
