package appserver

import (
	"testing"
	"time"
)

// TestStallSeenAcrossWallClockSteps guards the stall detection behind
// AppMaxInFlight against steps of the wall clock: a service silent for
// longer than its limit is stalled however NTP or an operator's date
// moved the wall clock meanwhile, and one that answered a moment ago is
// not, even after a step forward. Timed on the wall clock, a step back
// by D hid a stall for D.
func TestStallSeenAcrossWallClockSteps(t *testing.T) {
	const deadline = 10 * time.Second // limit: 500 ms for a service answering in 10 ms
	tests := []struct {
		name   string
		silent time.Duration // monotonic time since the last answer
		step   time.Duration // wall clock step meanwhile
		want   bool
	}{
		{"silent past the limit", 2 * time.Second, 0, true},
		{"silent past the limit, wall clock stepped back an hour", 2 * time.Second, -time.Hour, true},
		{"silent past the limit, wall clock stepped back a second", 2 * time.Second, -time.Second, true},
		{"answered a moment ago", 100 * time.Millisecond, 0, false},
		{"answered a moment ago, wall clock stepped forward an hour", 100 * time.Millisecond, time.Hour, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := &fakeClock{t: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC), mono: time.Hour}
			f := newAppFlow(c.cacheClock().elapsed)
			f.busy()
			start := c.now()
			c.advance(10 * time.Millisecond)
			f.note(nil, start, c.now())
			c.advance(tc.silent / 2)
			c.step(tc.step)
			c.advance(tc.silent - tc.silent/2)
			if got := f.stalled(deadline); got != tc.want {
				t.Errorf("stalled = %v after %v of silence, want %v", got, tc.silent, tc.want)
			}
		})
	}
}
