package sockio

import (
	"errors"
	"net"
	"os"
	"testing"
	"time"
)

// A deadline reaches the poller only while an operation waits, and once
// for each value: deadlines set between operations, or set again to the
// value the poller has, cost no runtime timer.
func TestDeadlineHandedOverOnlyToAWait(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	srv, err := ln.Accept() // never writes
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	c := Wrap(client).(*Conn)
	var applied []time.Time
	apply := c.rdl.apply
	c.rdl.apply = func(t time.Time) error {
		applied = append(applied, t)
		return apply(t)
	}

	dl := time.Now().Add(time.Minute)
	c.SetReadDeadline(dl)
	c.SetReadDeadline(dl.Add(time.Second))
	if len(applied) != 0 {
		t.Fatalf("deadlines set with no read waiting reached the poller: %v", applied)
	}
	// Nothing to read: the read waits, with its deadline at the poller,
	// until the deadline passes. A read that starts only after its
	// deadline (the goroutine held up that long on a loaded machine)
	// fails at once without waiting, and hands nothing over: it is not
	// the read this test is about, so it is made again with a later
	// deadline.
	for wait := 20 * time.Millisecond; ; wait *= 2 {
		c.SetReadDeadline(time.Now().Add(wait))
		if _, err := c.Read(make([]byte, 1)); !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("read with nothing to read: %v, want the deadline", err)
		}
		if len(applied) > 0 {
			break
		}
		if wait > 5*time.Second {
			t.Fatal("no read waited for its deadline: none handed it over")
		}
	}
	n := len(applied)
	if n != 1 {
		t.Fatalf("one read that waited handed %d deadlines over: %v", n, applied)
	}
	c.SetReadDeadline(dl.Add(2 * time.Second))
	if len(applied) != n {
		t.Fatalf("a deadline set after the read ended reached the poller: %v", applied[n:])
	}
	c.rdl.mu.Lock()
	c.rdl.waiting = true
	c.rdl.mu.Unlock()
	c.SetReadDeadline(dl.Add(3 * time.Second))
	c.SetReadDeadline(dl.Add(3 * time.Second))
	if len(applied) != n+1 {
		t.Fatalf("a deadline set twice to one value during a wait reached the poller %d times", len(applied)-n)
	}
}

// begin judges a deadline as time.Now().Before would: by the monotonic
// clock when the deadline has a reading of it, by the wall clock when it
// has none (net/http's past deadline, time.Unix(1, 0), and deadlines
// stripped with Round(0)).
func TestBeginJudgesAsBefore(t *testing.T) {
	now := time.Now()
	for _, tc := range []struct {
		name string
		want time.Time
		ok   bool
	}{
		{"none", time.Time{}, true},
		{"monotonic, future", now.Add(time.Minute), true},
		{"monotonic, past", now.Add(-time.Nanosecond), false},
		{"monotonic, now", now, false},
		{"wall, future", now.Add(time.Minute).Round(0), true},
		{"wall, past", now.Add(-time.Second).Round(0), false},
		{"net/http's past deadline", time.Unix(1, 0), false},
		{"wall, far future", time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC), true},
		{"wall, far past", time.Date(1, 1, 1, 0, 0, 0, 1, time.UTC), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := deadline{want: tc.want}
			if ok := d.begin(); ok != tc.ok {
				t.Fatalf("begin with the deadline %v: %v, want %v", tc.want, ok, tc.ok)
			}
		})
	}
}
