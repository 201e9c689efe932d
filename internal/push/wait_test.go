package push

import (
	"context"
	"testing"
	"time"
)

// Wait gives the slot back while it sleeps and takes one again after,
// through the Waiting its context carries; the context's other values
// and its end are its parent's.
func TestWaitPausesAndResumes(t *testing.T) {
	type key struct{}
	var calls []string
	w := WaitingFuncs{
		PauseFunc:  func() { calls = append(calls, "pause") },
		ResumeFunc: func(context.Context) error { calls = append(calls, "resume"); return nil },
	}
	parent, cancel := context.WithCancel(context.WithValue(context.Background(), key{}, "v"))
	defer cancel()
	ctx := WithWaiting(parent, w)
	if err := Wait(ctx, time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if len(calls) != 2 || calls[0] != "pause" || calls[1] != "resume" {
		t.Fatalf("calls %v, want pause then resume", calls)
	}
	if v := ctx.Value(key{}); v != "v" {
		t.Fatalf("the parent's value: %v", v)
	}
	cancel()
	if ctx.Err() == nil || Wait(ctx, time.Hour) == nil {
		t.Fatal("the parent's end did not end the waiting context")
	}
	// A context without a Waiting: Wait only sleeps.
	calls = nil
	if err := Wait(context.Background(), time.Millisecond); err != nil || calls != nil {
		t.Fatalf("%v, calls %v", err, calls)
	}
}
