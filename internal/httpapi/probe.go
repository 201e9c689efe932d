package httpapi

import (
	"context"
	"sync/atomic"
	"time"
)

// Probe holds the last answer of a check that may take long (a ping of a
// registry that hangs) for a Check's OK. The health page is a liveness
// probe, which orchestrators give a second or less: one that waited for
// the registry would have every instance restarted when the registry
// hangs, and anyone who can reach the page could make it read the
// registry as often as they like.
type Probe struct {
	ok  atomic.Bool
	err atomic.Pointer[error] // the last answer's; nil when it was none
}

// StartProbe runs check now and then every interval until ctx ends,
// each run bounded by timeout (a check that overruns counts as failed).
// The first answer is in before it returns.
func StartProbe(ctx context.Context, interval, timeout time.Duration, check func(ctx context.Context) error) *Probe {
	p := &Probe{}
	run := func() {
		cctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		err := check(cctx)
		p.err.Store(&err)
		p.ok.Store(err == nil)
	}
	run()
	go func() {
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				run()
			}
		}
	}()
	return p
}

// OK reports the last answer, at once.
func (p *Probe) OK() bool { return p.ok.Load() }

// Err is the last answer's error, nil when it was none.
func (p *Probe) Err() error {
	if e := p.err.Load(); e != nil {
		return *e
	}
	return nil
}
