package httpapi_test

import (
	"context"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/push-appserver/push-appserver/internal/httpapi"
	"github.com/push-appserver/push-appserver/internal/testutil/fakeclock"
)

// TestLivenessStuck guards what the live page reports: a check that
// waits StuckAfter or longer (the core's locks held) makes the server
// stuck, one that waits less does not, and once it returns the server is
// not stuck any more. Asking never waits for the check.
func TestLivenessStuck(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	clock := fakeclock.New(time.Unix(1e9, 0))
	entered := make(chan struct{}, 1)
	var held sync.Mutex
	held.Lock()
	var runs atomic.Int32
	l := httpapi.StartLiveness(ctx, httpapi.LivenessOptions{Every: time.Millisecond, StuckAfter: 10 * time.Second, Now: clock.Now}, func() {
		if runs.Add(1) == 1 {
			entered <- struct{}{}
			held.Lock() // as Alive does: waits while the lock is held
			//lint:ignore SA2001 taking the lock is the check
			held.Unlock()
		}
	})
	<-entered
	if d, stuck := l.Stuck(); stuck || d != 0 {
		t.Fatalf("stuck at once: %v %v", d, stuck)
	}
	clock.Advance(9 * time.Second)
	if d, stuck := l.Stuck(); stuck || d != 9*time.Second {
		t.Fatalf("after 9 s: %v %v, want not stuck", d, stuck)
	}
	clock.Advance(time.Second)
	if d, stuck := l.Stuck(); !stuck || d != 10*time.Second {
		t.Fatalf("after 10 s: %v %v, want stuck", d, stuck)
	}
	held.Unlock()
	// Runs go on once the check returned: the server is not stuck then.
	for deadline := time.Now().Add(10 * time.Second); runs.Load() < 3; {
		if time.Now().After(deadline) {
			t.Fatal("no check ran after the lock was let go")
		}
		time.Sleep(time.Millisecond)
	}
	for deadline := time.Now().Add(10 * time.Second); ; {
		if _, stuck := l.Stuck(); !stuck {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("still stuck after the check returned")
		}
		time.Sleep(time.Millisecond)
	}
}

// TestLivePage guards the live page's answers: 200 ALIVE unless the
// server is stuck, then 503 with how long, never cached.
func TestLivePage(t *testing.T) {
	for _, tt := range []struct {
		name  string
		stuck func() (time.Duration, bool)
		code  int
		body  string
	}{
		{"no check", nil, 200, "ALIVE\n"},
		{"waiting briefly", func() (time.Duration, bool) { return 3 * time.Second, false }, 200, "ALIVE\n"},
		{"stuck", func() (time.Duration, bool) { return 12400 * time.Millisecond, true }, 503, "NOT ALIVE\ncore: stuck for 12s\n"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			h := httpapi.New(httpapi.Options{Stuck: tt.stuck})
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest("GET", "/push_appserver/v1/live", nil))
			if rec.Code != tt.code || rec.Body.String() != tt.body {
				t.Fatalf("%d %q, want %d %q", rec.Code, rec.Body.String(), tt.code, tt.body)
			}
			if cc := rec.Header().Get("Cache-Control"); cc != "no-store" {
				t.Fatalf("Cache-Control %q", cc)
			}
		})
	}
}

// TestLivenessNotStuckOnceCheckReturned: a check that took longer than
// StuckAfter but returned leaves the server alive until the next check
// begins, however far off that is: the live page must not answer 503,
// and have the orchestrator restart the server, for a wait that is over.
func TestLivenessNotStuckOnceCheckReturned(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	clock := fakeclock.New(time.Unix(1e9, 0))
	var runs atomic.Int32
	l := httpapi.StartLiveness(ctx, httpapi.LivenessOptions{Every: time.Hour, StuckAfter: 10 * time.Second, Now: clock.Now}, func() {
		runs.Add(1)
		clock.Advance(20 * time.Second) // a slow check, which returns
	})
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
		if _, stuck := l.Stuck(); runs.Load() == 1 && !stuck {
			break
		}
		if time.Now().After(deadline) {
			d, stuck := l.Stuck()
			t.Fatalf("after the check returned: %v %v, want not stuck", d, stuck)
		}
	}
	clock.Advance(time.Minute)
	if d, stuck := l.Stuck(); stuck || d != 0 {
		t.Fatalf("a minute after the check returned: %v %v, want not stuck", d, stuck)
	}
}
