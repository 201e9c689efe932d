package main

import (
	"fmt"
	"io"
	"slices"
	"time"
)

// soakSample is the server's state at the end of one soak window.
type soakSample struct {
	At         float64 `json:"at_s"` // seconds of sending so far
	RSSMB      float64 `json:"rss_mb"`
	Goroutines float64 `json:"goroutines"`
	OpenFDs    float64 `json:"open_fds"`
	P99ms      float64 `json:"p99_ms"`
	Rate       float64 `json:"pushes_per_s"`
	OK         int64   `json:"ok"`
	Errors     int64   `json:"errors"`
	Load       float64 `json:"load_avg_1m"` // how shared the machine was
}

// SoakResult is the JSON line of a soak run.
type SoakResult struct {
	Rate    float64      `json:"target_rate"`
	Samples []soakSample `json:"samples"`
	Growth  []string     `json:"unbounded_growth,omitempty"`
}

// soak sends publish IQs at rate for d, one open-loop window of every at
// a time, and after each window reads the server's resident memory, its
// goroutines and open file descriptors (from the Go runtime and process
// metrics on /metrics) and the window's p99. It fails when a figure keeps
// growing: see growth.
func soak(o options, probe *serverProbe, stream *stream, devices []device, w io.Writer) (SoakResult, error) {
	res := SoakResult{Rate: o.soakRate}
	fmt.Fprintf(w, "%6s  %8s  %10s  %8s  %9s  %10s  %6s  %s\n", "time", "RSS MB", "goroutines", "open fds", "p99 ms", "pushes/s", "errors", "load")
	for i := range max(1, int(o.soak/o.soakEvery)) {
		p := stream.OpenLoop(devices, o.soakRate, o.soakEvery)
		s := soakSample{At: (time.Duration(i+1) * o.soakEvery).Seconds(), RSSMB: procStatusMB(probe.pid, "VmRSS:"), P99ms: p.P99ms, Rate: p.Rate, OK: p.OK, Load: loadAverage()}
		for _, n := range p.Errors {
			s.Errors += n
		}
		var err error
		if s.Goroutines, err = probe.metric("go_goroutines"); err != nil {
			return res, err
		}
		if s.OpenFDs, err = probe.metric("process_open_fds"); err != nil {
			return res, err
		}
		res.Samples = append(res.Samples, s)
		fmt.Fprintf(w, "%5.0fs  %8.1f  %10.0f  %8.0f  %9.2f  %10.0f  %6d  %.1f\n", s.At, s.RSSMB, s.Goroutines, s.OpenFDs, s.P99ms, s.Rate, s.Errors, s.Load)
	}
	res.Growth = growth(res.Samples)
	if len(res.Growth) > 0 {
		return res, fmt.Errorf("soak: figures grow without bound: %v", res.Growth)
	}
	return res, nil
}

// Allowed rise of the late samples over the early ones: room for a heap
// that settles, a connection more, and a loaded machine's latency noise,
// but not for a leak that keeps going.
const (
	rssSlack        = 1.25 // ×, and at least rssSlackMB more
	rssSlackMB      = 16
	goroutineSlack  = 32
	fdSlack         = 16
	p99Slack        = 4.0 // ×, and at least p99SlackMS more
	p99SlackMS      = 20
	minSoakSamples  = 4
	warmupSoakWinds = 1
)

// growth names the figures that keep growing, comparing the last third of
// the windows with the first third (after the first window, the server's
// warm-up). Memory, goroutines and descriptors: the worst late value well
// above the worst early one, and above every window between them too. A
// pool that grows once to its bound and stays there (the component's
// workers after a burst of latency) is a step, not a leak; a leak is still
// rising at the end. Latency follows the machine's load, which on a
// shared machine swings by a factor of ten within a minute, so it counts as
// growing only when even the best late window is well above the worst
// early one: a backlog that builds up raises every window.
func growth(samples []soakSample) []string {
	if len(samples) < minSoakSamples {
		return nil
	}
	s := samples[warmupSoakWinds:]
	third := max(1, len(s)/3)
	early, middle, late := s[:third], s[third:len(s)-third], s[len(s)-third:]
	worst := func(ss []soakSample, f func(soakSample) float64) float64 {
		vs := make([]float64, len(ss))
		for i, x := range ss {
			vs[i] = f(x)
		}
		return slices.Max(vs)
	}
	var grew []string
	best := func(ss []soakSample, f func(soakSample) float64) float64 {
		vs := make([]float64, len(ss))
		for i, x := range ss {
			vs[i] = f(x)
		}
		return slices.Min(vs)
	}
	check := func(name string, f func(soakSample) float64, allowed func(float64) float64) {
		e, l := worst(early, f), worst(late, f)
		settled := len(middle) > 0 && l <= worst(middle, f)
		if name == "p99 ms" {
			l, settled = best(late, f), false
		}
		if l > allowed(e) && !settled {
			grew = append(grew, fmt.Sprintf("%s %.1f → %.1f", name, e, l))
		}
	}
	check("RSS MB", func(x soakSample) float64 { return x.RSSMB }, func(e float64) float64 { return max(e*rssSlack, e+rssSlackMB) })
	check("goroutines", func(x soakSample) float64 { return x.Goroutines }, func(e float64) float64 { return e + goroutineSlack })
	check("open fds", func(x soakSample) float64 { return x.OpenFDs }, func(e float64) float64 { return e + fdSlack })
	check("p99 ms", func(x soakSample) float64 { return x.P99ms }, func(e float64) float64 { return max(e*p99Slack, e+p99SlackMS) })
	return grew
}

func soakOK(r SoakResult) int64 {
	var n int64
	for _, s := range r.Samples {
		n += s.OK
	}
	return n
}
