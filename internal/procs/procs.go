// Package procs sizes the Go scheduler (GOMAXPROCS) to the server's load.
//
// At a moderate rate every push finds the process idle, and with more
// than one processor the runtime hands each piece of work that one
// goroutine passes to another (the IQ to a worker, the push service's
// answer back to it) to a second thread, which it must wake first and
// which goes back to sleep after: measured at 2,000 pushes/s, 3 of the
// server's voluntary context switches per push with two processors, 1.3
// with one, and 15-28 % of its CPU per push (see "Moderate rates" in
// docs/performance.md). One processor serves several thousand pushes a
// second, more than most servers ever see, but not a burst beyond that.
//
// So the Governor runs the server on one processor while it is calm, and
// on all of them as soon as it gets busy: every Interval it reads the
// CPU time the process used, goes to all processors at once when one
// processor was more than Up busy, and back to one after Calm intervals
// in a row below Down. A server on one processor that meets a burst
// serves it with one processor for at most one Interval.
//
// The price is latency: on one processor a push waits while another
// goroutine runs (the write-behind of push outcomes, a registration's
// SQLite work) or while the kernel gives the one thread's core to
// another process. At 2,000 pushes/s p99 rose from 2.5-3.3 ms to
// 7.3-8.7 ms in the benchmark with 20,000 registrations, and from 5-7.5
// to 11-12 ms with 100,000 (half the pushes then look their
// registration up in SQLite), on a machine whose two cores the load
// generator and the push service's mock share with the server. With
// those 100,000 registered scattered over the registry, as real devices
// are, it was 10-18 ms against 2.8-3.6 ms with GOMAXPROCS=2, for 138-160
// µs of CPU per push against 182-190.
//
// Setting GOMAXPROCS in the environment turns the governor off, and so
// does a single processor. Go's runtime stops following a container's
// CPU limit once GOMAXPROCS is set at run time, so a limit that changes
// while the server runs is not followed either.
package procs

import (
	"context"
	"log/slog"
	"runtime"
	"syscall"
	"time"
)

// Defaults of the Governor's thresholds.
const (
	DefaultInterval = 250 * time.Millisecond
	// DefaultUp is the share of one processor's time above which a
	// server on one processor gets all of them. It leaves room: the
	// single processor is never the bottleneck for longer than an
	// Interval.
	DefaultUp = 0.75
	// DefaultDown is the CPU use, in processors, below which a server
	// on all of them goes back to one. The same load costs a quarter
	// less on one processor, so a load just below Down comes to about
	// 0.45 there, well below Up: the two cannot chase each other. A
	// lower Down left a server whose pushes cost more (cache misses
	// with 100,000 registrations: 0.5 processors at 2,000/s) on all
	// processors.
	DefaultDown = 0.6
	// DefaultCalm is how many intervals in a row must be calm first.
	DefaultCalm = 8
)

// Governor switches GOMAXPROCS between 1 and Max. The zero value is not
// usable; make one with New.
type Governor struct {
	Max      int
	Interval time.Duration
	Up, Down float64
	Calm     int

	logger *slog.Logger
	cpu    func() time.Duration // the process's CPU time so far
	set    func(int)            // sets GOMAXPROCS
}

// New returns a governor over the processors the runtime has now.
func New(logger *slog.Logger) *Governor {
	return &Governor{
		Max:      runtime.GOMAXPROCS(0),
		Interval: DefaultInterval,
		Up:       DefaultUp,
		Down:     DefaultDown,
		Calm:     DefaultCalm,
		logger:   logger,
		cpu:      CPUTime,
		set:      func(n int) { runtime.GOMAXPROCS(n) },
	}
}

// Enabled reports whether a governor is worth running: the machine has
// more than one processor for us, and the operator did not choose a
// number through GOMAXPROCS, which Go's runtime has applied and which
// wins.
func Enabled(getenv func(string) string) bool {
	return getenv("GOMAXPROCS") == "" && runtime.GOMAXPROCS(0) > 1
}

// Run governs until ctx is done, then gives the runtime all processors
// back.
func (g *Governor) Run(ctx context.Context) {
	if g.Max <= 1 {
		return
	}
	t := time.NewTicker(g.Interval)
	defer t.Stop()
	cur, calm := g.Max, 0
	last, lastAt := g.cpu(), time.Now()
	for {
		select {
		case <-ctx.Done():
			if cur != g.Max {
				g.set(g.Max)
			}
			return
		case <-t.C:
		}
		now, at := g.cpu(), time.Now()
		used := float64(now-last) / float64(at.Sub(lastAt))
		last, lastAt = now, at
		next := g.step(cur, used, &calm)
		if next != cur {
			g.set(next)
			g.logger.Debug("processors", "from", cur, "to", next, "cpu", used)
			cur = next
		}
	}
}

// step decides the number of processors after an interval in which the
// process used used processors' worth of CPU. calm counts the calm
// intervals in a row on all processors.
func (g *Governor) step(cur int, used float64, calm *int) int {
	if cur == 1 {
		if used > g.Up {
			*calm = 0
			return g.Max
		}
		return 1
	}
	if used >= g.Down {
		*calm = 0
		return cur
	}
	*calm++
	if *calm >= g.Calm {
		*calm = 0
		return 1
	}
	return cur
}

// CPUTime is the CPU time (user and system) the process used so far.
func CPUTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
