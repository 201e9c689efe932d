package main

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"time"
)

func (o options) path(name string) bool {
	for _, p := range strings.Split(o.paths, ",") {
		if strings.TrimSpace(p) == name {
			return true
		}
	}
	return false
}

// runPhases runs the timed phases of each path, with the server's CPU time
// and allocations sampled around every phase.
func runPhases(o options, probe *serverProbe, pprofAddr string, stream *stream, web *httpPusher, devices []device, res *Result) {
	measure := func(run func() *Phase) *Phase {
		before := probe.sample()
		p := run()
		p.cost(before, probe.sample())
		return p
	}
	openRate := func(closed *Phase) float64 {
		if o.openRate != 0 || closed == nil {
			return o.openRate // <0: no fixed-rate phase
		}
		return closed.Rate / 2
	}
	// The heap profile's allocation counts are the server's since it
	// started: taken after the first closed loop, they hold that loop's
	// pushes and the registrations before it.
	heapProfile := func() {
		if o.heapprofile == "" {
			return
		}
		if err := fetchProfile("http://"+pprofAddr+"/debug/pprof/heap", o.heapprofile); err != nil {
			fmt.Fprintln(os.Stderr, "heap profile:", err)
		}
		o.heapprofile = ""
	}
	if o.path("xmpp") {
		profiled := startProfile(o, "xmpp", pprofAddr)
		fmt.Fprintf(os.Stderr, "XEP-0357 closed loop: %d in flight for %s ...\n", o.concurrency, o.duration)
		res.Closed = measure(func() *Phase { return stream.ClosedLoop(devices, o.concurrency, o.duration, 0) })
		res.ServerCPUus, res.AllocsPerPush, res.PushesPS = res.Closed.CPUus, res.Closed.Allocs, res.Closed.Rate
		profiled()
		heapProfile()
		if rate := openRate(res.Closed); rate > 0 {
			profiled := startProfile(o, "xmpp-rate", pprofAddr)
			fmt.Fprintf(os.Stderr, "XEP-0357 open loop: %.0f IQs/s for %s ...\n", rate, o.openFor)
			res.Open = measure(func() *Phase { return stream.OpenLoop(devices, rate, o.openFor) })
			profiled()
			res.RateServerCPUus = res.Open.CPUus
		}
	}
	if o.path("http") {
		profiled := startProfile(o, "http", pprofAddr)
		if o.httpBatch > 1 {
			fmt.Fprintf(os.Stderr, "HTTP closed loop: %d requests of %d pushes in flight for %s ...\n", o.httpC, o.httpBatch, o.duration)
		} else {
			fmt.Fprintf(os.Stderr, "HTTP closed loop: %d in flight for %s ...\n", o.httpC, o.duration)
		}
		res.HTTPClosed = measure(func() *Phase { return web.ClosedLoop(devices, o.httpC, o.duration, 0) })
		profiled()
		heapProfile()
		res.HTTPServerCPUus, res.HTTPAllocsPerPush, res.HTTPPushesPS = res.HTTPClosed.CPUus, res.HTTPClosed.Allocs, res.HTTPClosed.Rate
		if rate := openRate(res.HTTPClosed); rate > 0 {
			profiled := startProfile(o, "http-rate", pprofAddr)
			if o.httpBatch > 1 {
				fmt.Fprintf(os.Stderr, "HTTP open loop: %.0f pushes/s in requests of %d for %s ...\n", rate, o.httpBatch, o.openFor)
			} else {
				fmt.Fprintf(os.Stderr, "HTTP open loop: %.0f requests/s for %s ...\n", rate, o.openFor)
			}
			res.HTTPOpen = measure(func() *Phase { return web.OpenLoop(devices, rate, o.openFor, o.httpC*4) })
			profiled()
			res.HTTPRateServerCPUus = res.HTTPOpen.CPUus
		}
	}
}

// countInstructions runs o.count pushes closed-loop on each path with the
// server under callgrind, then o.count registrations of new devices
// (register adds devices from its first argument on), and counts the
// instructions of each window.
func countInstructions(o options, cg *callgrind, stream *stream, web *httpPusher, devices []device, register func(from, n int) (int, time.Duration, error), res *Result) error {
	window := func(name string, run func() *Phase) (*Phase, float64, error) {
		if err := cg.zero(); err != nil {
			return nil, 0, err
		}
		fmt.Fprintf(os.Stderr, "%s: counting the instructions of %d pushes ...\n", name, o.count)
		p := run()
		n, err := cg.dump()
		if err != nil {
			return p, 0, err
		}
		if p.OK == 0 {
			return p, 0, fmt.Errorf("%s: no successful push", name)
		}
		p.WindowS = p.duration.Seconds()
		return p, float64(n) / float64(p.OK), nil
	}
	// Long enough for any count under valgrind; the count ends the phase.
	const forever = time.Hour
	// One push per device first, not counted, so that both windows find
	// the registrations in the server's cache: the same state whichever
	// path runs first.
	fmt.Fprintf(os.Stderr, "warming up: one push per device ...\n")
	warm := web.ClosedLoop(devices, o.httpC, forever, len(devices))
	if warm.OK != int64(len(devices)) {
		fmt.Fprintf(os.Stderr, "warm-up: %d of %d pushes failed: %v\n", int64(len(devices))-warm.OK, len(devices), warm.Errors)
	}
	res.Successes += warm.OK
	// What the server executes doing nothing: timers and the runtime's
	// background work. Under valgrind a push takes milliseconds, so this
	// part of a window's count grows with its duration, not its pushes.
	if err := cg.zero(); err != nil {
		return err
	}
	const idle = 5 * time.Second
	time.Sleep(idle)
	n, err := cg.dump()
	if err != nil {
		return err
	}
	res.IdleInstrPerS = float64(n) / idle.Seconds()
	if o.path("xmpp") {
		if res.Closed, res.InstrPerPush, err = window("XEP-0357", func() *Phase {
			return stream.ClosedLoop(devices, o.concurrency, forever, o.count)
		}); err != nil {
			return err
		}
	}
	if o.path("http") {
		if res.HTTPClosed, res.HTTPInstrPerPush, err = window("HTTP", func() *Phase {
			return web.ClosedLoop(devices, o.httpC, forever, o.count)
		}); err != nil {
			return err
		}
	}
	// Last, so that the push windows count the same registry as before
	// this window was added. New devices, as the timed registrations
	// are: renewals of the devices above would cost less.
	if err := cg.zero(); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "registrations: counting the instructions of %d registrations ...\n", o.count)
	ok, _, regErr := register(len(devices), o.count)
	n, err = cg.dump()
	if err := errors.Join(regErr, err); err != nil {
		return err
	}
	if ok != o.count {
		return fmt.Errorf("registrations: %d of %d registered", ok, o.count)
	}
	res.RegInstr = float64(n) / float64(ok)
	return nil
}

// startProfile starts a 10 s CPU profile of the server if -cpuprofile asks
// for one during the named phase (xmpp, http, registrations); the returned
// function waits for it.
func startProfile(o options, phase, pprofAddr string) func() {
	if o.cpuprofile == "" || o.profilePhase != phase {
		return func() {}
	}
	done := make(chan error, 1)
	go func() {
		time.Sleep(min(2*time.Second, o.duration/4))
		done <- fetchProfile("http://"+pprofAddr+"/debug/pprof/profile?seconds=10", o.cpuprofile)
	}()
	return func() {
		if err := <-done; err != nil {
			fmt.Fprintln(os.Stderr, "cpu profile:", err)
		}
	}
}
