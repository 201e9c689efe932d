package appserver

import (
	"testing"
	"time"
)

type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time          { return c.t }
func (c *fakeClock) advance(d time.Duration) { c.t = c.t.Add(d) }

func TestThrottle(t *testing.T) {
	type step struct {
		after    time.Duration // clock advance before the call
		key      string
		release  bool // call Release(key) instead of Admit
		want     Decision
		wantWait time.Duration
	}
	tests := []struct {
		name  string
		steps []step
	}{
		{"first push of a burst goes at once", []step{
			{key: "a", want: Send},
		}},
		{"second in window is delayed to the window's end, the rest refused", []step{
			{key: "a", want: Send},
			{after: time.Second, key: "a", want: Delay, wantWait: 4 * time.Second},
			{after: time.Second, key: "a", want: Refuse},
			{after: time.Second, key: "a", want: Refuse},
		}},
		{"after the delayed push fired a new window starts from it", []step{
			{key: "a", want: Send},
			{after: time.Second, key: "a", want: Delay, wantWait: 4 * time.Second},
			{after: 4 * time.Second, key: "a", release: true},
			{after: time.Second, key: "a", want: Delay, wantWait: 4 * time.Second},
		}},
		{"a quiet period resets the burst", []step{
			{key: "a", want: Send},
			{after: 6 * time.Second, key: "a", want: Send},
		}},
		{"exactly one distance later is still the same window", []step{
			{key: "a", want: Send},
			{after: 5 * time.Second, key: "a", want: Delay, wantWait: 0},
		}},
		{"keys are independent", []step{
			{key: "a", want: Send},
			{key: "b", want: Send},
			{key: "a", want: Delay, wantWait: 5 * time.Second},
			{key: "b", want: Delay, wantWait: 5 * time.Second},
			{key: "a", want: Refuse},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := &fakeClock{t: time.Unix(1000, 0)}
			th := NewThrottle(5*time.Second, clk.now)
			for i, s := range tt.steps {
				clk.advance(s.after)
				if s.release {
					th.Release(s.key)
					continue
				}
				d, w := th.Admit(s.key)
				if d != s.want || w != s.wantWait {
					t.Fatalf("step %d: Admit(%q) = %v, %v; want %v, %v", i, s.key, d, w, s.want, s.wantWait)
				}
			}
		})
	}
}

func TestThrottleOff(t *testing.T) {
	th := NewThrottle(0, time.Now)
	for range 10 {
		if d, _ := th.Admit("a"); d != Send {
			t.Fatalf("disabled throttle said %v", d)
		}
	}
	if th.Len() != 0 {
		t.Fatalf("disabled throttle holds %d keys", th.Len())
	}
}

func TestThrottleSweep(t *testing.T) {
	clk := &fakeClock{t: time.Unix(1000, 0)}
	th := NewThrottle(5*time.Second, clk.now)
	th.Admit("old")
	clk.advance(3 * time.Second)
	th.Admit("new")
	th.Admit("new") // pending
	clk.advance(3 * time.Second)
	th.Sweep()
	if th.Len() != 1 {
		t.Fatalf("after sweep %d keys, want 1 (the pending one)", th.Len())
	}
	if d, _ := th.Admit("new"); d != Refuse {
		t.Fatalf("pending key lost its state: %v", d)
	}
}
