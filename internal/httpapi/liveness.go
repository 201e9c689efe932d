package httpapi

import (
	"context"
	"sync/atomic"
	"time"
)

// Liveness runs, again and again, a check that does not return while
// the server is stuck (the core's locks held for good), and says how
// long the run under way has waited. The live page reads that at once:
// an orchestrator's liveness probe gets its answer within its timeout
// however long the check waits, and a request never takes the core's
// locks itself, so no client can add to their load or pile up
// goroutines behind a lock that is held for good.
type Liveness struct {
	now        func() time.Time
	stuckAfter time.Duration
	// since is when the run under way started; nil between runs.
	since atomic.Pointer[time.Time]
}

// LivenessOptions configure a Liveness.
type LivenessOptions struct {
	// Every is how long after a run ends the next starts.
	Every time.Duration
	// StuckAfter is how long a run may wait before the server counts as
	// stuck.
	StuckAfter time.Duration
	// Now is the clock; time.Now when nil.
	Now func() time.Time
}

// StartLiveness runs check, as set out in o, until ctx ends.
func StartLiveness(ctx context.Context, o LivenessOptions, check func()) *Liveness {
	if o.Now == nil {
		o.Now = time.Now
	}
	l := &Liveness{now: o.Now, stuckAfter: o.StuckAfter}
	go func() {
		t := time.NewTimer(0)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			start := l.now()
			l.since.Store(&start)
			check()
			l.since.Store(nil)
			t.Reset(o.Every)
		}
	}()
	return l
}

// Stuck says whether the run under way has waited StuckAfter or longer,
// and how long it has.
func (l *Liveness) Stuck() (time.Duration, bool) {
	since := l.since.Load()
	if since == nil {
		return 0, false
	}
	d := l.now().Sub(*since)
	return d, d >= l.stuckAfter
}
