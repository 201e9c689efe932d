package appserver

import (
	"testing"
	"time"
)

// TestDeviceLimitFullLetsNewDevicesThrough guards the pushes of devices
// first seen while the per-device limit tracks as many devices as it
// may, every window still open (a flood of distinct tokens): they go
// through uncounted. Refused, every user's push would be lost for as
// long as the flood lasts, while only the device pushed to through many
// nodes is the limit's to stop.
func TestDeviceLimitFullLetsNewDevicesThrough(t *testing.T) {
	clk := &fakeClock{t: time.Unix(1000, 0)}
	l := newDeviceLimiter(5*time.Second, 1, 2, clk.now, nil)
	for _, tok := range []string{"a", "b"} {
		if !l.admit("fcm", tok, "example.org", clk.now()) {
			t.Fatalf("first push to %s refused", tok)
		}
	}
	clk.advance(2 * time.Second) // the windows are open, and a sweep due
	for i := range 3 {
		if !l.admit("fcm", "new", "example.org", clk.now()) {
			t.Fatalf("push %d to a device first seen while the limit is full: refused", i+1)
		}
	}
	if l.admit("fcm", "a", "example.org", clk.now()) {
		t.Fatal("a device tracked before the limit filled up let past its limit")
	}
}
