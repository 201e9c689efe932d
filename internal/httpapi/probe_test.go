package httpapi_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/push-appserver/push-appserver/internal/httpapi"
)

// TestProbeAnswersAtOnce: a check that hangs (a registry that does not
// answer) is seen as down when its timeout passes, and asking the probe
// never waits for it.
func TestProbeAnswersAtOnce(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var hang atomic.Bool
	// A check that hangs holds its run for timeout: long beside the bound
	// on OK below, so that OK waiting for it is told from a thread the
	// loaded machine did not run for a few ms.
	const timeout = time.Second
	p := httpapi.StartProbe(ctx, 20*time.Millisecond, timeout, func(ctx context.Context) error {
		if hang.Load() {
			<-ctx.Done()
			return ctx.Err()
		}
		return nil
	})
	if !p.OK() {
		t.Fatal("down before any check failed")
	}
	hang.Store(true)
	deadline := time.Now().Add(5 * time.Second)
	for {
		start := time.Now()
		ok := p.OK()
		if took := time.Since(start); took > timeout/2 {
			t.Fatalf("OK took %v: it waited for the check", took)
		}
		if !ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("a hanging check never seen as down")
		}
		time.Sleep(5 * time.Millisecond)
	}
	hang.Store(false)
	for !p.OK() {
		if time.Now().After(deadline) {
			t.Fatal("never up again")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestProbeStopsWithContext: no check runs after ctx ends.
func TestProbeStopsWithContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	var runs atomic.Int32
	httpapi.StartProbe(ctx, time.Millisecond, time.Second, func(context.Context) error {
		runs.Add(1)
		return errors.New("down")
	})
	cancel()
	time.Sleep(20 * time.Millisecond)
	n := runs.Load()
	time.Sleep(50 * time.Millisecond)
	if runs.Load() != n {
		t.Fatalf("checks went on after the context ended: %d, then %d", n, runs.Load())
	}
}
