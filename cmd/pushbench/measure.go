package main

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"
)

// serverProbe reads what the server process spent: CPU time from
// /proc/PID/stat, system calls from /proc/PID/io and heap allocations from
// its /metrics page.
type serverProbe struct {
	pid        int
	metricsURL string
	client     *http.Client
}

// sample is the server's cumulative counters at one moment.
type sample struct {
	cpu     time.Duration // utime+stime
	mallocs float64       // go_memstats_mallocs_total; <0 when unknown
	// syscalls counts read and write system calls (syscr+syscw); <0
	// when unknown.
	syscalls float64
	// voluntary and involuntary count the context switches of all the
	// process's threads; <0 when unknown.
	voluntary, involuntary float64
	// hits and misses count the registration cache's lookups; <0 when
	// unknown.
	hits, misses float64
}

// Metric names the probe reads from the server's /metrics page.
const (
	metricMallocs     = "go_memstats_mallocs_total"
	metricCacheHits   = `push_appserver_registration_cache_lookups_total{result="hit"}`
	metricCacheMisses = `push_appserver_registration_cache_lookups_total{result="miss"}`
)

func (p *serverProbe) sample() sample {
	s := sample{cpu: procCPU(p.pid), mallocs: -1, syscalls: procSyscalls(p.pid), hits: -1, misses: -1}
	s.voluntary, s.involuntary = procSwitches(p.pid)
	if p.metricsURL != "" {
		if m, err := p.metrics(metricMallocs, metricCacheHits, metricCacheMisses); err == nil {
			s.mallocs = m[metricMallocs]
			if h, ok := m[metricCacheHits]; ok {
				s.hits, s.misses = h, m[metricCacheMisses]
			}
		}
	}
	return s
}

// metric reads one unlabelled metric from the server's /metrics page.
func (p *serverProbe) metric(name string) (float64, error) {
	m, err := p.metrics(name)
	if err != nil {
		return 0, err
	}
	v, ok := m[name]
	if !ok {
		return 0, fmt.Errorf("%s: no %s", p.metricsURL, name)
	}
	return v, nil
}

// metrics reads the named series (a name with its labels, as the page
// writes them) from one scrape of the server's /metrics page; a series
// the page lacks is missing from the map.
func (p *serverProbe) metrics(names ...string) (map[string]float64, error) {
	resp, err := p.client.Get(p.metricsURL)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s: %s", p.metricsURL, resp.Status)
	}
	m := make(map[string]float64, len(names))
	sc := bufio.NewScanner(io.LimitReader(resp.Body, 4<<20))
	sc.Buffer(make([]byte, 64<<10), 64<<10)
	for sc.Scan() {
		for _, name := range names {
			if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
				f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
				if err != nil {
					return nil, fmt.Errorf("%s: %s: %w", p.metricsURL, name, err)
				}
				m[name] = f
			}
		}
	}
	return m, sc.Err()
}

// cost fills the phase's per-push figures from the samples taken around
// it. Pushes are the successful ones: what the server was there to do.
func (p *Phase) cost(before, after sample) {
	if p.OK == 0 {
		return
	}
	p.CPUus = float64((after.cpu - before.cpu).Microseconds()) / float64(p.OK)
	if before.mallocs >= 0 && after.mallocs >= 0 {
		p.Allocs = (after.mallocs - before.mallocs) / float64(p.OK)
	}
	if before.syscalls >= 0 && after.syscalls >= 0 {
		p.Syscalls = (after.syscalls - before.syscalls) / float64(p.OK)
	}
	if before.hits >= 0 && after.hits >= 0 {
		if n := (after.hits - before.hits) + (after.misses - before.misses); n > 0 {
			p.CacheHits = (after.hits - before.hits) / n
		}
	}
	if before.voluntary >= 0 && after.voluntary >= 0 {
		p.Voluntary = (after.voluntary - before.voluntary) / float64(p.OK)
		p.Involuntary = (after.involuntary - before.involuntary) / float64(p.OK)
	}
}

// procSwitches is the context switches of all of a process's threads so
// far, voluntary (a thread slept: it waited for the network, a lock, a
// timer, or the Go runtime parked an idle thread) and involuntary (the
// kernel preempted it), or -1, -1 when unknown. A voluntary switch is a
// sleep and a wake-up, which on a virtual machine costs several
// microseconds of the process's CPU: at a moderate rate they, more than
// the work, set the cost of a push. Threads that exited are not counted;
// the Go runtime keeps its threads.
func procSwitches(pid int) (voluntary, involuntary float64) {
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		return -1, -1
	}
	for _, t := range tasks {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/status", pid, t.Name()))
		if err != nil {
			continue // the thread exited meanwhile
		}
		for line := range strings.Lines(string(b)) {
			k, v, _ := strings.Cut(line, ":")
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			switch {
			case err != nil:
			case k == "voluntary_ctxt_switches":
				voluntary += f
			case k == "nonvoluntary_ctxt_switches":
				involuntary += f
			}
		}
	}
	return voluntary, involuntary
}

// procSyscalls is the read and write system calls a process made so far
// (/proc/PID/io; on every socket, the push service's, the XMPP server's
// and the HTTP clients'), or -1 when unknown.
func procSyscalls(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/io", pid))
	if err != nil {
		return -1
	}
	n := 0.0
	for line := range strings.Lines(string(b)) {
		k, v, _ := strings.Cut(strings.TrimSpace(line), ": ")
		if k == "syscr" || k == "syscw" {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				return -1
			}
			n += f
		}
	}
	return n
}

// procCPU is utime+stime of a process. The kernel counts them in clock
// ticks (USER_HZ, 100 on Linux), so a window should last seconds.
func procCPU(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// Fields after the command name, which is in parentheses.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(s[i+1:])
	if len(f) <= 12 {
		return 0
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * (time.Second / 100)
}

// peakRSS is the process's peak resident memory (VmHWM) in MB.
func peakRSS(pid int) float64 { return procStatusMB(pid, "VmHWM:") }

// procStatusMB reads a memory figure (kB) of /proc/PID/status, in MB.
func procStatusMB(pid int, field string) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == field {
			kb, _ := strconv.ParseFloat(f[1], 64)
			return kb / 1024
		}
	}
	return 0
}

// loadAverage is the first figure of /proc/loadavg: how busy the machine
// was, since other processes share the cores with the benchmark.
func loadAverage() float64 {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0
	}
	v, _ := strconv.ParseFloat(f[0], 64)
	return v
}
