package appserver

import (
	"testing"
	"time"
)

// fakeClock is a wall clock (t) and a monotonic one (mono) that tests
// move: advance moves both, as time passing does; step moves the wall
// clock alone, as NTP or an operator's date does.
type fakeClock struct {
	t    time.Time
	mono time.Duration
}

func (c *fakeClock) now() time.Time          { return c.t }
func (c *fakeClock) advance(d time.Duration) { c.t, c.mono = c.t.Add(d), c.mono+d }
func (c *fakeClock) step(d time.Duration)    { c.t = c.t.Add(d) }

func (c *fakeClock) cacheClock() cacheClock {
	return cacheClock{now: c.now, elapsed: func() time.Duration { return c.mono }}
}

func TestThrottle(t *testing.T) {
	type step struct {
		after    time.Duration // clock advance before the call
		key      string
		release  bool // call release(key) instead of admit
		abandon  bool // call abandon(key) instead of admit
		want     decision
		wantWait time.Duration
	}
	tests := []struct {
		name  string
		steps []step
	}{
		{"first push of a burst goes at once", []step{
			{key: "a", want: sendNow},
		}},
		{"second in window is delayed to the window's end, the rest refused", []step{
			{key: "a", want: sendNow},
			{after: time.Second, key: "a", want: delaySend, wantWait: 4 * time.Second},
			{after: time.Second, key: "a", want: refuse},
			{after: time.Second, key: "a", want: refuse},
		}},
		{"after the delayed push fired a new window starts from it", []step{
			{key: "a", want: sendNow},
			{after: time.Second, key: "a", want: delaySend, wantWait: 4 * time.Second},
			{after: 4 * time.Second, key: "a", release: true},
			{after: time.Second, key: "a", want: delaySend, wantWait: 4 * time.Second},
		}},
		{"a delayed push given up gives its window back", []step{
			{key: "a", want: sendNow},
			{after: time.Second, key: "a", want: delaySend, wantWait: 4 * time.Second},
			{after: time.Second, key: "a", abandon: true},
			{after: 4 * time.Second, key: "a", want: sendNow},
		}},
		{"a quiet period resets the burst", []step{
			{key: "a", want: sendNow},
			{after: 6 * time.Second, key: "a", want: sendNow},
		}},
		{"exactly one distance later is still the same window", []step{
			{key: "a", want: sendNow},
			{after: 5 * time.Second, key: "a", want: delaySend, wantWait: 0},
		}},
		{"keys are independent", []step{
			{key: "a", want: sendNow},
			{key: "b", want: sendNow},
			{key: "a", want: delaySend, wantWait: 5 * time.Second},
			{key: "b", want: delaySend, wantWait: 5 * time.Second},
			{key: "a", want: refuse},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := &fakeClock{t: time.Unix(1000, 0)}
			th := newThrottler[string](5*time.Second, clk.now)
			for i, s := range tt.steps {
				clk.advance(s.after)
				if s.release {
					th.release(s.key)
					continue
				}
				if s.abandon {
					th.abandon(s.key)
					continue
				}
				d, w := th.admit(s.key)
				if d != s.want || w != s.wantWait {
					t.Fatalf("step %d: admit(%q) = %v, %v; want %v, %v", i, s.key, d, w, s.want, s.wantWait)
				}
			}
		})
	}
}

func TestThrottleOff(t *testing.T) {
	th := newThrottler[string](0, time.Now)
	for range 10 {
		if d, _ := th.admit("a"); d != sendNow {
			t.Fatalf("disabled throttle said %v", d)
		}
	}
	if th.size() != 0 {
		t.Fatalf("disabled throttle holds %d keys", th.size())
	}
}

func TestThrottleSweep(t *testing.T) {
	clk := &fakeClock{t: time.Unix(1000, 0)}
	th := newThrottler[string](5*time.Second, clk.now)
	th.admit("old")
	clk.advance(3 * time.Second)
	th.admit("new")
	th.admit("new") // pending
	clk.advance(3 * time.Second)
	th.sweep()
	if th.size() != 1 {
		t.Fatalf("after sweep %d keys, want 1 (the pending one)", th.size())
	}
	if d, _ := th.admit("new"); d != refuse {
		t.Fatalf("pending key lost its state: %v", d)
	}
}
