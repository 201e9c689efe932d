package push_test

import (
	"context"
	"errors"
	"io"
	"testing"
	"time"

	"github.com/push-appserver/push-appserver/internal/deadline"
	"github.com/push-appserver/push-appserver/internal/push"
)

func TestRetry(t *testing.T) {
	errPermanent := errors.New("bad key")
	tests := []struct {
		name     string
		policy   push.RetryPolicy
		answers  []error // one per attempt; the last repeats
		want     func(error) bool
		attempts int
		minTook  time.Duration
	}{
		{"success at once", push.RetryPolicy{Budget: time.Second}, []error{nil}, func(err error) bool { return err == nil }, 1, 0},
		{"permanent at once", push.RetryPolicy{Budget: time.Second},
			[]error{errPermanent}, func(err error) bool { return errors.Is(err, errPermanent) }, 1, 0},
		{"temporary then success", push.RetryPolicy{Budget: 5 * time.Second, Base: time.Millisecond},
			[]error{&push.TemporaryError{Reason: "503"}, &push.TemporaryError{Reason: "503"}, nil}, func(err error) bool { return err == nil }, 3, 0},
		// Budget: 100 backoffs at Base, so that a thread a loaded machine
		// leaves unrun for a few ms still sees the retries asked for.
		{"transport error stays inside", push.RetryPolicy{Budget: 500 * time.Millisecond, Base: 5 * time.Millisecond},
			[]error{&push.TemporaryError{Reason: "request", Err: io.ErrUnexpectedEOF}},
			func(err error) bool { return push.IsTemporary(err) && errors.Is(err, io.ErrUnexpectedEOF) }, -1, 0},
		{"retry-after honoured", push.RetryPolicy{Budget: 5 * time.Second, Base: time.Millisecond},
			[]error{&push.TemporaryError{RetryAfter: 300 * time.Millisecond}, nil}, func(err error) bool { return err == nil }, 2, 300 * time.Millisecond},
		{"retry-after beyond the budget: give up at once", push.RetryPolicy{Budget: time.Second},
			[]error{&push.TemporaryError{Reason: "429", RetryAfter: time.Minute}},
			func(err error) bool {
				var te *push.TemporaryError
				return errors.As(err, &te) && te.RetryAfter == time.Minute
			}, 1, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := 0
			start := time.Now()
			err := push.Retry(context.Background(), tt.policy, func(ctx context.Context) error {
				if _, ok := ctx.Deadline(); !ok {
					t.Error("attempt without a deadline")
				}
				a := tt.answers[min(n, len(tt.answers)-1)]
				n++
				return a
			})
			took := time.Since(start)
			if !tt.want(err) {
				t.Fatalf("err = %v", err)
			}
			if tt.attempts >= 0 && n != tt.attempts {
				t.Fatalf("%d attempts, want %d", n, tt.attempts)
			}
			if tt.attempts < 0 && n < 2 {
				t.Fatalf("%d attempts, want retries", n)
			}
			if took < tt.minTook {
				t.Fatalf("took %v, want at least %v", took, tt.minTook)
			}
			if took > tt.policy.Budget+time.Second {
				t.Fatalf("took %v, budget %v", took, tt.policy.Budget)
			}
		})
	}
}

// The budget bounds a push even when the service keeps failing, and the
// caller's earlier deadline wins over the budget.
func TestRetryBudget(t *testing.T) {
	fail := func(context.Context) error { return &push.TemporaryError{Reason: "503"} }
	start := time.Now()
	err := push.Retry(context.Background(), push.RetryPolicy{Budget: 300 * time.Millisecond, Base: 10 * time.Millisecond}, fail)
	if !push.IsTemporary(err) || time.Since(start) > 2*time.Second {
		t.Fatalf("%v after %v", err, time.Since(start))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start = time.Now()
	err = push.Retry(ctx, push.RetryPolicy{Budget: time.Hour, Base: 10 * time.Millisecond}, fail)
	if !push.IsTemporary(err) || time.Since(start) > 2*time.Second {
		t.Fatalf("%v after %v", err, time.Since(start))
	}
}

func TestBackoff(t *testing.T) {
	b := push.Backoff{Base: 100 * time.Millisecond, Max: time.Second}
	want := []time.Duration{100, 200, 400, 800, 1000, 1000}
	for i, w := range want {
		w *= time.Millisecond
		if d := b.Next(); d < w/2 || d > w {
			t.Fatalf("wait %d = %v, want in [%v, %v]", i, d, w/2, w)
		}
	}
	b.Reset()
	if d := b.Next(); d > 100*time.Millisecond {
		t.Fatalf("after Reset: %v", d)
	}
}

// A caller's deadline that ends within the budget is the one the attempts
// get, in the caller's own context: no timer of Retry's. A later one is
// cut to the budget.
func TestRetryKeepsEarlierDeadline(t *testing.T) {
	parent, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	err := push.Retry(parent, push.RetryPolicy{Budget: 5 * time.Second}, func(ctx context.Context) error {
		if ctx != parent {
			t.Errorf("attempt got a context of Retry's own though the caller's ends first")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	long, cancel2 := context.WithTimeout(context.Background(), time.Hour)
	defer cancel2()
	start := time.Now()
	push.Retry(long, push.RetryPolicy{Budget: time.Second}, func(ctx context.Context) error {
		dl, ok := ctx.Deadline()
		if !ok || dl.After(start.Add(time.Second+100*time.Millisecond)) {
			t.Errorf("attempt deadline %v (set: %v), want within the 1 s budget", time.Until(dl), ok)
		}
		return nil
	})
}

// Retry bounds attempts by its budget, unless the caller's deadline is
// earlier or no later than a shared deadline slot past it: the core's,
// rounded up to its slot, needs no second timer. The budget counts from
// the policy's Start when it has one (the time the core read for the
// push, and set its deadline from), else from now.
func TestRetryBudgetDeadline(t *testing.T) {
	const budget = time.Second
	for _, tc := range []struct {
		name  string
		start time.Duration // the policy's Start, after now; 0 for none
		after time.Duration // the caller's deadline, after start+budget
		kept  bool
	}{
		{"earlier", 0, -budget / 2, true},
		{"within a slot", 0, deadline.Slot / 2, true},
		{"later", 0, time.Minute, false},
		{"two slots later", 0, 2 * deadline.Slot, false},
		{"within a slot of Start", time.Hour, deadline.Slot / 2, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			now := time.Now()
			var start time.Time
			if tc.start != 0 {
				start = now.Add(tc.start)
			}
			want := now.Add(tc.start + budget + tc.after)
			ctx, cancel := context.WithDeadline(context.Background(), want)
			defer cancel()
			var got time.Time
			push.Retry(ctx, push.RetryPolicy{Budget: budget, Start: start}, func(ctx context.Context) error {
				got, _ = ctx.Deadline()
				return nil
			})
			if kept := got.Equal(want); kept != tc.kept || !kept && got.After(time.Now().Add(budget)) {
				t.Fatalf("attempt's deadline %v, caller's %v (kept %v, want %v)", got, want, kept, tc.kept)
			}
		})
	}
}

// A Retry-After beyond what is left of the budget ends the push at once,
// answered "wait", rather than at its deadline: the user's server hears
// at once, and redelivery sends it again when the service asks.
func TestRetryAfterBeyondBudgetEndsAtOnce(t *testing.T) {
	start := time.Now()
	err := push.Retry(context.Background(), push.RetryPolicy{}, func(context.Context) error {
		return &push.TemporaryError{Reason: "429", RetryAfter: time.Minute}
	})
	if took := time.Since(start); !push.IsTemporary(err) || took > time.Second {
		t.Fatalf("%v after %v, want a temporary failure at once", err, took)
	}
}

// The backoff between attempts grows up to its default maximum when the
// policy names none, as every backend's does: a push service failing
// every request gets a few of each push within the budget, not one every
// 100 ms.
func TestRetryDefaultBackoffGrows(t *testing.T) {
	n := 0
	push.Retry(context.Background(), push.RetryPolicy{Budget: time.Second}, func(context.Context) error {
		n++
		return &push.TemporaryError{Reason: "503"}
	})
	// Waits of at least 50, 100, 200 and 400 ms: at most 5 attempts.
	if n > 5 {
		t.Fatalf("%d attempts within 1 s, want at most 5", n)
	}
}

// An attempt that the deadline cut short ends the push with the earlier
// attempt's error, which says what went wrong, and the deadline's.
func TestRetryCutShortKeepsEarlierError(t *testing.T) {
	errService := errors.New("503 Service Unavailable")
	n := 0
	err := push.Retry(context.Background(), push.RetryPolicy{Budget: 300 * time.Millisecond, Base: time.Millisecond},
		func(ctx context.Context) error {
			n++
			if n == 1 {
				return &push.TemporaryError{Reason: "503", Err: errService}
			}
			<-ctx.Done()
			return &push.TemporaryError{Reason: "request", Err: ctx.Err()}
		})
	if !push.IsTemporary(err) || !errors.Is(err, errService) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want the 503 and the deadline", err)
	}
}
