package appserver

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
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
