package appserver

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/push-appserver/push-appserver/internal/registry"
	"github.com/push-appserver/push-appserver/internal/registry/memory"
)

// batchRecorder is a store that keeps the batches of outcomes it is given.
type batchRecorder struct {
	registry.Store
	batches [][]registry.PushStatus
}

func (r *batchRecorder) UpdatePushStatus(ctx context.Context, b []registry.PushStatus) error {
	r.batches = append(r.batches, slices.Clone(b))
	return r.Store.UpdatePushStatus(ctx, b)
}

// A flush hands the store its outcomes in node order, whatever order they
// came in, one per node and kind, the latest.
func TestStatusFlushInNodeOrder(t *testing.T) {
	rec := &batchRecorder{Store: memory.New()}
	w := newStatusWriter(rec, slog.New(slog.NewTextHandler(io.Discard, nil)))
	at := time.Date(2026, 12, 4, 0, 0, 0, 0, time.UTC)
	for i, node := range []string{"m", "c", "x", "a", "c", "k", "b"} {
		w.add(registry.PushStatus{Node: node, At: at.Add(time.Duration(i) * time.Second), Success: true})
	}
	w.add(registry.PushStatus{Node: "c", At: at, Reason: "failed"})
	w.flush(context.Background())
	if len(rec.batches) != 1 {
		t.Fatalf("%d batches, want 1", len(rec.batches))
	}
	var got []string
	for _, s := range rec.batches[0] {
		got = append(got, s.Node)
		if s.Node == "c" && s.Success && !s.At.Equal(at.Add(4*time.Second)) {
			t.Errorf("c's success at %v, want the later one", s.At)
		}
	}
	if want := "a b c c k m x"; strings.Join(got, " ") != want {
		t.Fatalf("batch in order %q, want %q", strings.Join(got, " "), want)
	}
}

// A device's success is written at most once every successResolution;
// every error is, and so is the first success after the node's
// registration changed.
func TestStatusSuccessResolution(t *testing.T) {
	rec := &batchRecorder{Store: memory.New()}
	w := newStatusWriter(rec, slog.New(slog.NewTextHandler(io.Discard, nil)))
	t0 := time.Date(2026, 12, 5, 0, 0, 0, 0, time.UTC)
	for i, step := range []struct {
		at      time.Duration
		success bool
		forget  bool
		written bool
	}{
		{0, true, false, true},
		{successResolution / 2, true, false, false},
		{successResolution/2 + time.Second, false, false, true},
		{successResolution - time.Millisecond, true, false, false},
		{successResolution, true, false, true},
		{successResolution + time.Second, true, true, true},
		{successResolution + 2*time.Second, true, false, false},
		{4 * successResolution, true, false, true},
		// Older than the one written: the store would ignore it anyway.
		{3 * successResolution, true, false, false},
	} {
		if step.forget {
			w.forget("n")
		}
		rec.batches = nil
		w.add(registry.PushStatus{Node: "n", At: t0.Add(step.at), Success: step.success, Reason: "r"})
		w.flush(context.Background())
		if written := len(rec.batches) == 1; written != step.written {
			t.Fatalf("step %d (%v, success %v): written %v, want %v", i, step.at, step.success, written, step.written)
		}
	}
}

// recentSet holds what it was given until a bucket overflows; then it
// forgets one of the bucket's four, never wrongly holds another.
func TestRecentSet(t *testing.T) {
	s := newRecentSet(4)
	// Hashes of bucket 1 with distinct fingerprints.
	h := func(i uint64) uint64 { return i<<33 | 1 }
	for i := range uint64(4) {
		if s.add(h(i)) {
			t.Fatalf("hash %d held before it was added", i)
		}
	}
	for i := range uint64(4) {
		if !s.add(h(i)) {
			t.Fatalf("hash %d not held", i)
		}
	}
	if s.add(2<<33 | 2) {
		t.Fatal("a hash of another bucket with a held fingerprint is held")
	}
	s.remove(h(1))
	if s.add(h(1)) {
		t.Fatal("removed hash still held")
	}
	// A fifth hash takes a place: of the five, exactly four are held.
	s.add(h(4))
	held := 0
	for i := range uint64(5) {
		b, fp := s.slot(h(i))
		for _, v := range b {
			if v == fp {
				held++
			}
		}
	}
	if held != 4 {
		t.Fatalf("%d of five held, want 4", held)
	}
	s.clear()
	for i := range uint64(5) {
		if s.add(h(i)) {
			t.Fatalf("hash %d held after clear", i)
		}
	}
}

// batchSignal is a store that says how large each batch of outcomes was.
type batchSignal struct {
	registry.Store
	sizes chan int
}

func (s batchSignal) UpdatePushStatus(ctx context.Context, b []registry.PushStatus) error {
	s.sizes <- len(b)
	return nil
}

// earlyBatch outcomes are written long before the interval ends, fewer
// wait for it.
func TestStatusEarlyWrite(t *testing.T) {
	store := batchSignal{Store: memory.New(), sizes: make(chan int, 10)}
	w := newStatusWriter(store, slog.New(slog.NewTextHandler(io.Discard, nil)))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go w.run(ctx, time.Hour)
	at := time.Date(2026, 12, 5, 0, 0, 0, 0, time.UTC)
	add := func(from, n int) {
		for i := range n {
			w.add(registry.PushStatus{Node: fmt.Sprintf("n%d", from+i), At: at, Success: true})
		}
	}
	add(0, earlyBatch-1)
	select {
	case n := <-store.sizes:
		t.Fatalf("%d outcomes written before the interval ended", n)
	case <-time.After(3 * earlyGap):
	}
	add(earlyBatch, 1)
	select {
	case n := <-store.sizes:
		if n != earlyBatch {
			t.Fatalf("wrote %d outcomes, want %d", n, earlyBatch)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("nothing written with earlyBatch outcomes pending")
	}
}

// refusing is a store that refuses outcomes while down, calling during
// first, and records the batches it takes.
type refusing struct {
	registry.Store
	mu      sync.Mutex
	down    bool
	during  func()
	calls   int
	batches [][]registry.PushStatus
}

func (r *refusing) UpdatePushStatus(ctx context.Context, b []registry.PushStatus) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls++
	if r.during != nil {
		r.during()
	}
	if r.down {
		return errors.New("database down")
	}
	r.batches = append(r.batches, slices.Clone(b))
	return nil
}

func (r *refusing) setDown(down bool) {
	r.mu.Lock()
	r.down = down
	r.mu.Unlock()
}

// Outcomes the store refuses stay pending, at most maxHeld of them, the
// latest per node and kind, and are written once it takes them; what
// cannot be held is counted, and so is what is still refused at close.
func TestStatusHeldWhileStoreRefuses(t *testing.T) {
	store := &refusing{Store: memory.New(), down: true}
	w := newStatusWriter(store, slog.New(slog.NewTextHandler(io.Discard, nil)))
	w.maxHeld = 4
	at := time.Date(2026, 12, 5, 0, 0, 0, 0, time.UTC)
	out := func(node string, sec int, success bool) registry.PushStatus {
		return registry.PushStatus{Node: node, At: at.Add(time.Duration(sec) * time.Second), Success: success, Reason: "r"}
	}
	w.add(out("a", 0, true))
	w.add(out("b", 0, false))
	// An outcome added while the refused write is under way is newer
	// than the one it carried, and is kept instead.
	store.during = func() { w.add(out("b", 2, false)) }
	w.flush(context.Background())
	store.during = nil
	if s := w.stats(); s.Pending != 2 || s.Dropped != 0 {
		t.Fatalf("after a refused write: %+v, want 2 pending", s)
	}
	if b := w.pending[statusKey{"b", false}]; !b.At.Equal(at.Add(2 * time.Second)) {
		t.Fatalf("b's error pending from %v, want the one added during the write", b.At)
	}
	w.add(out("a", 1, false))
	w.add(out("c", 1, true))
	w.add(out("d", 1, true)) // the fifth: dropped
	if s := w.stats(); s.Pending != 4 || s.Dropped != 1 {
		t.Fatalf("after a fifth outcome: %+v, want 4 pending, 1 dropped", s)
	}
	w.add(out("b", 3, false))
	w.flush(context.Background())
	if s := w.stats(); s.Pending != 4 || s.Dropped != 1 {
		t.Fatalf("after a second refused write: %+v, want 4 pending, 1 dropped", s)
	}

	store.setDown(false)
	w.flush(context.Background())
	if len(store.batches) != 1 {
		t.Fatalf("%d batches written, want 1", len(store.batches))
	}
	var got []string
	for _, s := range store.batches[0] {
		got = append(got, fmt.Sprintf("%s/%v/%d", s.Node, s.Success, s.At.Sub(at)/time.Second))
	}
	slices.Sort(got) // a node's two kinds come in either order
	if want := "a/false/1 a/true/0 b/false/3 c/true/1"; strings.Join(got, " ") != want {
		t.Errorf("written %q, want %q", strings.Join(got, " "), want)
	}
	if s := w.stats(); s.Pending != 0 || s.Dropped != 1 {
		t.Errorf("after the store took them: %+v, want none pending, 1 dropped", s)
	}

	store.setDown(true)
	w.add(out("e", 4, true))
	w.close(context.Background())
	if s := w.stats(); s.Pending != 0 || s.Dropped != 2 {
		t.Errorf("after a refused close: %+v, want none pending, 2 dropped", s)
	}
}

// What was held is written at most maxPending a transaction; a refusal
// halfway keeps what was not written.
func TestStatusHeldWrittenInChunks(t *testing.T) {
	store := &refusing{Store: memory.New()}
	w := newStatusWriter(store, slog.New(slog.NewTextHandler(io.Discard, nil)))
	at := time.Date(2026, 12, 5, 0, 0, 0, 0, time.UTC)
	const n = 2*maxPending + 10
	for i := range n {
		w.add(registry.PushStatus{Node: fmt.Sprintf("n%05d", i), At: at, Success: true})
	}
	store.during = func() { store.down = store.calls == 2 }
	w.flush(context.Background())
	if s := w.stats(); s.Pending != n-maxPending {
		t.Fatalf("after the second chunk was refused: %+v, want %d pending", s, n-maxPending)
	}
	store.during = nil
	store.setDown(false)
	w.flush(context.Background())
	var sizes []int
	seen := map[string]bool{}
	for _, b := range store.batches {
		sizes = append(sizes, len(b))
		for _, s := range b {
			seen[s.Node] = true
		}
	}
	if want := []int{maxPending, maxPending, 10}; !slices.Equal(sizes, want) {
		t.Errorf("written in transactions of %v, want %v", sizes, want)
	}
	if len(seen) != n {
		t.Errorf("%d outcomes written, want %d", len(seen), n)
	}
}

// A store that refuses outcomes is tried once an interval, not at every
// outcome beyond maxPending.
func TestStatusRetriesOnceAnInterval(t *testing.T) {
	store := &refusing{Store: memory.New(), down: true}
	w := newStatusWriter(store, slog.New(slog.NewTextHandler(io.Discard, nil)))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	const interval = 200 * time.Millisecond
	go w.run(ctx, interval)
	at := time.Date(2026, 12, 5, 0, 0, 0, 0, time.UTC)
	start := time.Now()
	for i := 0; time.Since(start) < 5*interval; i++ {
		w.add(registry.PushStatus{Node: fmt.Sprintf("n%d", i), At: at, Success: true})
		if i > maxPending {
			time.Sleep(100 * time.Microsecond)
		}
	}
	store.mu.Lock()
	calls := store.calls
	store.mu.Unlock()
	// The first kick at maxPending, then a tick an interval.
	if calls < 2 || calls > 8 {
		t.Errorf("%d writes tried in %v at an interval of %v, want 2 to 8", calls, time.Since(start), interval)
	}
}

// A push service's reason is stored as text PostgreSQL takes: valid
// UTF-8, no control characters, at most 200 bytes.
func TestStoredReason(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"apns: 400 BadDeviceToken", "apns: 400 BadDeviceToken"},
		{"BadPriority\x00", "BadPriority "},
		{"a\xffb", "a\uFFFDb"},
		{"line\nbreak\ttab\x7f", "line break tab "},
		{"émoji 🙂", "émoji 🙂"},
		{strings.Repeat("é", 150), strings.Repeat("é", 100)},
	} {
		if got := storedReason(tc.in); got != tc.want {
			t.Errorf("storedReason(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// slowRefusing is a store whose every write of outcomes fails after
// taking d, as a database gone silent does at its timeout, and counts
// them.
type slowRefusing struct {
	registry.Store
	d     time.Duration
	mu    sync.Mutex
	calls int
}

func (s *slowRefusing) UpdatePushStatus(ctx context.Context, b []registry.PushStatus) error {
	s.mu.Lock()
	s.calls++
	s.mu.Unlock()
	time.Sleep(s.d)
	return errors.New("timeout")
}

// Once told to stop, the writer's loop writes no more: close makes the
// last attempt. With a write that takes its timeout, each attempt the
// loop made after the stop (its ticker is always ready by then, and a
// select of two ready cases picks at random) added that timeout to the
// stop, so that a stop with PostgreSQL silent took 11.5 s or 21.5 s at
// random, past systemd's patience in one run of four.
func TestStatusLoopStopsWriting(t *testing.T) {
	for range 10 {
		store := &slowRefusing{Store: memory.New(), d: 20 * time.Millisecond}
		w := newStatusWriter(store, slog.New(slog.DiscardHandler))
		w.add(registry.PushStatus{Node: "n1", At: time.Now(), Success: true})
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { w.run(ctx, time.Millisecond); close(done) }()
		for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(time.Millisecond) {
			store.mu.Lock()
			calls := store.calls
			store.mu.Unlock()
			if calls > 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("the loop never wrote")
			}
		}
		// Stopped during its first write: the loop writes no other.
		cancel()
		<-done
		store.mu.Lock()
		calls := store.calls
		store.mu.Unlock()
		if calls != 1 {
			t.Fatalf("the loop wrote %d times, told to stop during its first write", calls)
		}
	}
}
