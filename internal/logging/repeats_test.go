package logging

import (
	"testing"
	"time"
)

// TestRepeats: of failures that repeat, the first is logged, then one a
// minute counting the others; a failure of another kind, or the first
// after an end, is logged at once; digits alone make no other kind.
func TestRepeats(t *testing.T) {
	var r Repeats
	now := time.Unix(1000, 0)
	step := func(err string, wantLog bool, wantN int) {
		t.Helper()
		n, log := r.Failed(err, now)
		if log != wantLog || n != wantN {
			t.Fatalf("%s at %v: log %v, %d not logged; want %v, %d", err, now.Unix(), log, n, wantLog, wantN)
		}
		now = now.Add(time.Second)
	}
	step("dial 127.0.0.1:5347: refused", true, 0)
	for range 58 {
		step("dial 127.0.0.1:5347: refused", false, 0)
	}
	step("dial 127.0.0.1:40001: refused", false, 0) // digits only
	step("dial 127.0.0.1:5347: refused", true, 59)
	step("handshake: not-authorized", true, 0)
	step("handshake: not-authorized", false, 0)
	if n, was := r.Ended(); !was || n != 1 {
		t.Fatalf("Ended: %d not logged, failing %v; want 1, true", n, was)
	}
	if _, was := r.Ended(); was {
		t.Fatal("Ended twice: failing")
	}
	step("handshake: not-authorized", true, 0)
}
