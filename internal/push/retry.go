package push

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/push-appserver/push-appserver/internal/deadline"
)

// Jitter returns a random duration in [d/2, d], so that many waiters that
// failed together do not come back together.
func Jitter(d time.Duration) time.Duration {
	if d <= 0 {
		return 0
	}
	return d/2 + rand.N(d/2+1)
}

// Backoff is jittered exponential backoff: each Next waits about twice as
// long as the one before, from Base up to Max. The zero value is not
// useful; set Base and Max. A Backoff is not safe for concurrent use: each
// retry loop keeps its own.
type Backoff struct {
	Base, Max time.Duration
	cur       time.Duration
}

// Next returns the next wait, jittered.
func (b *Backoff) Next() time.Duration {
	if b.cur == 0 {
		b.cur = b.Base
	}
	d := Jitter(b.cur)
	b.cur = min(2*b.cur, b.Max)
	return d
}

// Reset starts over at Base, after a success.
func (b *Backoff) Reset() { b.cur = 0 }

// DefaultPushDeadline is how long one push may take, retries included,
// unless configured otherwise: well under the IQ timeouts of XMPP servers,
// so the user's server hears "wait" from us rather than a timeout.
const DefaultPushDeadline = 5 * time.Second

// RetryPolicy bounds the retries of one push.
type RetryPolicy struct {
	// Budget is how long one push may take, retries included; the
	// context's own deadline, when earlier, wins (and then Retry starts
	// no timer of its own). 0 means DefaultPushDeadline, so a push never
	// retries without end.
	Budget time.Duration
	// Base and Max shape the backoff between attempts; defaults 100 ms
	// and 2 s.
	Base, Max time.Duration
	// Start is when the push was handed over (Notification.Sent), from
	// which the core set ctx's deadline: Retry compares the two without
	// reading the clock. Zero reads it.
	Start time.Time
}

// Retry calls attempt until it succeeds, fails permanently, or the budget
// runs out. attempt reports a transient failure as a *TemporaryError
// (carrying the service's Retry-After hint and the underlying error); any
// other error is permanent and returned at once. When no time is left for
// the next wait, Retry returns the last *TemporaryError, so the caller
// answers "try later" rather than failing the push for good.
func Retry(ctx context.Context, p RetryPolicy, attempt func(ctx context.Context) error) error {
	if p.Budget <= 0 {
		p.Budget = DefaultPushDeadline
	}
	// The core's deadline for the budget may be rounded up to a shared
	// slot: within that it is the budget, and another timer would be
	// for nothing.
	start := p.Start
	if start.IsZero() {
		start = time.Now()
	}
	if dl, ok := ctx.Deadline(); !ok || dl.Sub(start) > p.Budget+deadline.Slot {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, p.Budget)
		defer cancel()
	}
	b := Backoff{Base: p.Base, Max: p.Max}
	if b.Base <= 0 {
		b.Base = 100 * time.Millisecond
	}
	if b.Max < b.Base {
		b.Max = max(2*time.Second, b.Base)
	}
	var prev error
	for {
		err := attempt(ctx)
		if err == nil {
			return nil
		}
		var te *TemporaryError
		if !errors.As(err, &te) {
			return err
		}
		if ctx.Err() != nil && prev != nil {
			// This attempt was cut short by the deadline; the one
			// before says better what went wrong. It still says the
			// deadline ended it: the service did not answer this one.
			return fmt.Errorf("%w (then: %w)", prev, ctx.Err())
		}
		prev = err
		wait := max(b.Next(), te.RetryAfter)
		if dl, ok := ctx.Deadline(); ok && time.Until(dl) < wait {
			return err
		}
		if ctx.Err() != nil {
			return err
		}
		// Wait, not a timer of our own: a push waiting to retry gives its
		// caller's concurrency slot back meanwhile, so it does not hold up
		// fresh pushes.
		if Wait(ctx, wait) != nil {
			return err
		}
	}
}
