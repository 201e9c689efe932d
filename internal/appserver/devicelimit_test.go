package appserver

import (
	"strconv"
	"testing"
	"time"
)

func TestDeviceLimit(t *testing.T) {
	clk := &fakeClock{t: time.Unix(1000, 0)}
	l := newDeviceLimiter(5*time.Second, 3, maxLimitedDevices, clk.now, nil)
	admitted := func(app, token string, n int) int {
		got := 0
		for range n {
			if l.admit(app, token, "example.org", clk.now()) {
				got++
			}
		}
		return got
	}
	if got := admitted("fcm", "victim", 10); got != 3 {
		t.Fatalf("10 pushes to one device in a window: %d admitted, want 3", got)
	}
	if got := admitted("fcm", "other", 3); got != 3 {
		t.Fatalf("another device after the first reached its limit: %d of 3 admitted", got)
	}
	if got := admitted("apns", "victim", 3); got != 3 {
		t.Fatalf("the same token of another app: %d of 3 admitted", got)
	}
	for i := range 3 {
		if !l.admit("fcm", "victim", "192.0.2.1", clk.now()) {
			t.Fatalf("push %d of another source to the device that one source took to its limit: refused", i+1)
		}
	}
	if l.admit("fcm", "victim", "192.0.2.1", clk.now()) {
		t.Fatal("another source went past its own limit")
	}
	clk.advance(4999 * time.Millisecond)
	if l.admit("fcm", "victim", "example.org", clk.now()) {
		t.Fatal("admitted within the window that reached its limit")
	}
	clk.advance(time.Millisecond)
	if got := admitted("fcm", "victim", 10); got != 3 {
		t.Fatalf("the next window: %d admitted, want 3", got)
	}
}

func TestDeviceLimitOff(t *testing.T) {
	for _, l := range []*deviceLimiter{
		newDeviceLimiter(0, 3, maxLimitedDevices, time.Now, nil),
		newDeviceLimiter(5*time.Second, 0, maxLimitedDevices, time.Now, nil),
	} {
		for range 10 {
			if !l.admit("fcm", "victim", "example.org", time.Now()) {
				t.Fatal("a limit that is off refused a push")
			}
		}
		if l.size() != 0 {
			t.Fatalf("a limit that is off holds %d devices", l.size())
		}
	}
}

// A flood of pushes to distinct tokens, each a device never seen again,
// takes no more memory than maxLimitedDevices entries, and the devices
// tracked before it stay limited meanwhile. Once their windows end the
// entries go, and new devices are counted again.
func TestDeviceLimitBounded(t *testing.T) {
	clk := &fakeClock{t: time.Unix(1000, 0)}
	warned := 0
	l := newDeviceLimiter(5*time.Second, 2, maxLimitedDevices, clk.now, func() { warned++ })
	l.admit("fcm", "victim", "example.org", clk.now())
	l.admit("fcm", "victim", "example.org", clk.now())
	for i := range 2 * maxLimitedDevices {
		l.admit("fcm", strconv.Itoa(i), "example.org", clk.now())
		if i%4096 == 0 {
			clk.advance(time.Millisecond) // the flood takes its time: sweeps are tried
		}
	}
	if n := l.size(); n > maxLimitedDevices {
		t.Fatalf("after %d distinct tokens %d devices are tracked, more than %d", 2*maxLimitedDevices, n, maxLimitedDevices)
	}
	if warned != 1 {
		t.Fatalf("warned %d times of the devices past the bound, want once", warned)
	}
	if l.admit("fcm", "victim", "example.org", clk.now()) {
		t.Fatal("a device tracked before the flood was let past its limit during it")
	}
	clk.advance(5 * time.Second)
	l.admit("fcm", "new", "example.org", clk.now())
	if n := l.size(); n != 1 {
		t.Fatalf("a window after the flood, the first new device finds %d tracked, want itself alone", n)
	}
	if !l.admit("fcm", "new", "example.org", clk.now()) || l.admit("fcm", "new", "example.org", clk.now()) {
		t.Fatal("a device after the flood is not limited as before it")
	}
}

// BenchmarkDeviceLimit is the limit's cost on every push: a hash of the
// app and token, and a map read and write under a lock (the clock is
// read for the throttle already).
func BenchmarkDeviceLimit(b *testing.B) {
	l := newDeviceLimiter(5*time.Second, 1<<30, maxLimitedDevices, time.Now, nil)
	token := "dGVzdC10b2tlbi1vZi1hLXR5cGljYWwtbGVuZ3RoLWZvci1mY20tMTYwLWNoYXJzLWxvbmctZW5vdWdoLXRvLWJlLXJlYWxpc3RpYy0xMjM0NTY3ODkwYWJjZGVmZ2hpams"
	at := time.Now()
	b.ReportAllocs()
	for b.Loop() {
		l.admit("fcm", token, "example.org", at)
	}
}
