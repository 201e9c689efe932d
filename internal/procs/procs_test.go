package procs

import (
	"context"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"
)

func TestStep(t *testing.T) {
	g := &Governor{Max: 8, Up: 0.6, Down: 0.45, Calm: 3}
	for _, tt := range []struct {
		name  string
		cur   int
		calm  int
		used  float64
		want  int
		calm2 int
	}{
		{"one processor, calm", 1, 0, 0.3, 1, 0},
		{"one processor, just below up", 1, 0, 0.6, 1, 0},
		{"one processor gets busy: all of them", 1, 0, 0.61, 8, 0},
		{"all, busy", 8, 2, 1.5, 8, 0},
		{"all, at down is still busy", 8, 2, 0.45, 8, 0},
		{"all, first calm interval", 8, 0, 0.1, 8, 1},
		{"all, last calm interval: one", 8, 2, 0.1, 1, 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			calm := tt.calm
			if got := g.step(tt.cur, tt.used, &calm); got != tt.want || calm != tt.calm2 {
				t.Fatalf("step(%d, %v) = %d with calm %d, want %d with calm %d", tt.cur, tt.used, got, calm, tt.want, tt.calm2)
			}
		})
	}
}

// fakeCPU is a process whose CPU use the test sets, in processors.
type fakeCPU struct {
	mu    sync.Mutex
	load  float64
	total time.Duration
	at    time.Time
}

func (f *fakeCPU) cpu() time.Duration {
	f.mu.Lock()
	defer f.mu.Unlock()
	now := time.Now()
	if !f.at.IsZero() {
		f.total += time.Duration(f.load * float64(now.Sub(f.at)))
	}
	f.at = now
	return f.total
}

func (f *fakeCPU) setLoad(l float64) {
	f.cpu() // what was used so far, at the old load
	f.mu.Lock()
	f.load = l
	f.mu.Unlock()
}

// A calm server goes to one processor, a busy one back to all, and a
// stopped governor leaves all of them.
func TestRunFollowsTheLoad(t *testing.T) {
	f := &fakeCPU{}
	sets := make(chan int, 10)
	g := &Governor{Max: 4, Interval: 5 * time.Millisecond, Up: 0.6, Down: 0.45, Calm: 3,
		logger: slog.New(slog.NewTextHandler(io.Discard, nil)), cpu: f.cpu, set: func(n int) { sets <- n }}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { g.Run(ctx); close(done) }()
	expect := func(want int, what string) {
		t.Helper()
		select {
		case n := <-sets:
			if n != want {
				t.Fatalf("%s: GOMAXPROCS set to %d, want %d", what, n, want)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("%s: GOMAXPROCS not set", what)
		}
	}
	expect(1, "idle")
	f.setLoad(0.9)
	expect(4, "busy")
	f.setLoad(0.2)
	expect(1, "calm again")
	cancel()
	<-done
	expect(4, "stopped")
}

func TestEnabled(t *testing.T) {
	env := map[string]string{}
	getenv := func(k string) string { return env[k] }
	if Enabled(getenv) != (New(nil).Max > 1) {
		t.Fatal("Enabled without GOMAXPROCS should follow the processors the runtime has")
	}
	env["GOMAXPROCS"] = "2"
	if Enabled(getenv) {
		t.Fatal("Enabled with GOMAXPROCS set: the operator's choice must win")
	}
}
