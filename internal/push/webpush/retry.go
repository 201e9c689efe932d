package webpush

import (
	"context"
	"math/rand/v2"
	"time"

	"github.com/push-appserver/push-appserver/internal/push"
)

// retryTransient calls try until it returns anything but a
// *push.TemporaryError, waiting with jittered backoff (or the service's
// Retry-After) in between, and gives up with the last temporary error when
// the next wait would pass ctx's deadline.
func retryTransient(ctx context.Context, try func() error) error {
	backoff := 100 * time.Millisecond
	for {
		err := try()
		if !push.IsTemporary(err) {
			return err
		}
		var wait time.Duration
		if t, ok := err.(*push.TemporaryError); ok && t.RetryAfter > 0 {
			wait = t.RetryAfter
		} else {
			wait = backoff/2 + rand.N(backoff/2+1)
		}
		if dl, ok := ctx.Deadline(); ok && time.Until(dl) < wait {
			return err
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return err
		case <-t.C:
		}
		backoff = min(2*backoff, 2*time.Second)
	}
}
