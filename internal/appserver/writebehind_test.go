package appserver

import (
	"context"
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
