package main

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestPercentile(t *testing.T) {
	var d []time.Duration
	for i := 1; i <= 100; i++ {
		d = append(d, time.Duration(i)*time.Millisecond)
	}
	for pct, want := range map[float64]time.Duration{50: 50 * time.Millisecond, 90: 90 * time.Millisecond, 99: 99 * time.Millisecond, 100: 100 * time.Millisecond} {
		if got := percentile(d, pct); got != want {
			t.Errorf("p%v = %v, want %v", pct, got, want)
		}
	}
	if percentile(nil, 50) != 0 {
		t.Error("empty")
	}
}

func TestGrowth(t *testing.T) {
	series := func(f func(i int) soakSample) []soakSample {
		var s []soakSample
		for i := range 10 {
			s = append(s, f(i))
		}
		return s
	}
	flat := func(i int) soakSample {
		return soakSample{RSSMB: 80 + float64(i%2), Goroutines: 40, OpenFDs: 20, P99ms: 3}
	}
	for _, tt := range []struct {
		name    string
		samples []soakSample
		want    string // "" = no growth
	}{
		{"flat", series(flat), ""},
		{"warm-up spike", series(func(i int) soakSample {
			s := flat(i)
			if i == 0 {
				s.RSSMB, s.Goroutines, s.P99ms = 300, 400, 200
			}
			return s
		}), ""},
		{"rises then settles", series(func(i int) soakSample {
			s := flat(i)
			s.RSSMB += float64(min(i, 3)) * 4
			return s
		}), ""},
		// A pool that grows to its bound after a burst and stays there
		// (the component's workers, in a 3-minute soak of 2026-12-05).
		{"steps up, then flat", []soakSample{
			{RSSMB: 40, Goroutines: 106, OpenFDs: 27, P99ms: 3.7}, {RSSMB: 41, Goroutines: 180, OpenFDs: 27, P99ms: 4.0},
			{RSSMB: 42, Goroutines: 228, OpenFDs: 27, P99ms: 6.6}, {RSSMB: 42, Goroutines: 228, OpenFDs: 27, P99ms: 3.3},
			{RSSMB: 43, Goroutines: 228, OpenFDs: 27, P99ms: 4.9}, {RSSMB: 44, Goroutines: 228, OpenFDs: 27, P99ms: 4.3},
		}, ""},
		{"short goroutine leak", []soakSample{
			{Goroutines: 100}, {Goroutines: 140}, {Goroutines: 180}, {Goroutines: 220}, {Goroutines: 260}, {Goroutines: 300},
		}, "goroutines"},
		{"memory leak", series(func(i int) soakSample { s := flat(i); s.RSSMB += float64(i) * 10; return s }), "RSS MB"},
		{"goroutine leak", series(func(i int) soakSample { s := flat(i); s.Goroutines += float64(i) * 20; return s }), "goroutines"},
		{"fd leak", series(func(i int) soakSample { s := flat(i); s.OpenFDs += float64(i) * 5; return s }), "open fds"},
		{"latency keeps growing", series(func(i int) soakSample { s := flat(i); s.P99ms *= float64(int(1) << i); return s }), "p99 ms"},
		{"too short to tell", series(flat)[:3], ""},
		// The 5-minute soak of 2026-11-25 on a machine at load 7-14: p99
		// swung between 5 and 280 ms, nothing grew.
		{"loaded machine", []soakSample{
			{RSSMB: 41.5, Goroutines: 84, OpenFDs: 89, P99ms: 11.9}, {RSSMB: 41.9, Goroutines: 84, OpenFDs: 89, P99ms: 33.9},
			{RSSMB: 42.0, Goroutines: 20, OpenFDs: 25, P99ms: 38.3}, {RSSMB: 40.2, Goroutines: 20, OpenFDs: 25, P99ms: 28.8},
			{RSSMB: 41.2, Goroutines: 20, OpenFDs: 25, P99ms: 170.5}, {RSSMB: 41.7, Goroutines: 20, OpenFDs: 25, P99ms: 237.6},
			{RSSMB: 41.5, Goroutines: 20, OpenFDs: 25, P99ms: 221.4}, {RSSMB: 40.9, Goroutines: 20, OpenFDs: 25, P99ms: 280.5},
			{RSSMB: 41.2, Goroutines: 20, OpenFDs: 25, P99ms: 5.3}, {RSSMB: 41.1, Goroutines: 20, OpenFDs: 25, P99ms: 112.9},
		}, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got := growth(tt.samples)
			if tt.want == "" && len(got) != 0 || tt.want != "" && (len(got) != 1 || !strings.HasPrefix(got[0], tt.want)) {
				t.Fatalf("growth = %q, want %q", got, tt.want)
			}
		})
	}
}

// A thread that sleeps is switched out voluntarily, and procSwitches sees
// it across all of the process's threads.
func TestProcSwitchesCountsSleeps(t *testing.T) {
	v0, i0 := procSwitches(os.Getpid())
	if v0 < 0 || i0 < 0 {
		t.Fatalf("procSwitches = %v, %v: /proc not read", v0, i0)
	}
	slept, counted := make(chan struct{}), make(chan struct{})
	go func() {
		// A thread of its own, so the sleeps are the kernel's; it lives
		// until counted (a locked thread ends with its goroutine).
		runtime.LockOSThread()
		for range 20 {
			syscall.Nanosleep(&syscall.Timespec{Nsec: 100_000}, nil)
		}
		close(slept)
		<-counted
	}()
	<-slept
	v1, _ := procSwitches(os.Getpid())
	close(counted)
	if v1-v0 < 20 {
		t.Fatalf("%v voluntary switches over 20 sleeps, want at least 20", v1-v0)
	}
	if v, i := procSwitches(1 << 30); v != -1 || i != -1 {
		t.Fatalf("a process that does not exist: %v, %v; want -1, -1", v, i)
	}
}

// A Zipf order pushes to few devices often and to most rarely, to any
// of them, and is the same in every run.
func TestZipfOrder(t *testing.T) {
	devices := make([]device, 10000)
	for i := range devices {
		devices[i] = device{node: fmt.Sprint(i)}
	}
	order := zipfOrder(devices, 1.1)
	if len(order) < len(devices) {
		t.Fatalf("%d pushes for %d devices", len(order), len(devices))
	}
	count := map[string]int{}
	for _, d := range order {
		count[d.node]++
	}
	top := 0
	for i := range len(devices) / 100 {
		top += count[devices[i].node]
	}
	if share := float64(top) / float64(len(order)); share < 0.5 {
		t.Errorf("the first 1%% of devices get %.0f%% of the pushes; want most", 100*share)
	}
	if len(count) < len(devices)/2 {
		t.Errorf("%d of %d devices pushed to; want most of them at least once", len(count), len(devices))
	}
	if again := zipfOrder(devices, 1.1); again[12345] != order[12345] || again[len(again)-1] != order[len(order)-1] {
		t.Error("the order differs between runs")
	}
}

// A push-batch answer counts as one outcome per push: a push the server
// refused, an answer for another node and a request that failed whole are
// errors of their pushes alone.
func TestPushBatchOutcomes(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/push_appserver/v1/push-batch" {
			http.NotFound(w, r)
			return
		}
		body, _ := io.ReadAll(r.Body)
		if strings.Contains(string(body), `"node":"bad"`) {
			http.Error(w, "ERROR\nMalformed JSON", http.StatusBadRequest)
			return
		}
		io.WriteString(w, `{"results":[{"node":"a","status":"ok"},{"node":"b","status":"not-found","error":"x"},{"node":"x","status":"ok"}]}`+"\n")
	}))
	defer srv.Close()
	h := newHTTPPusher(srv.URL, 1, 3)
	got := h.pushBatch([]device{{node: "a"}, {node: "b"}, {node: "c"}})
	if want := []string{"", "not-found", "answer for another node"}; !slices.Equal(got, want) {
		t.Fatalf("outcomes %q, want %q", got, want)
	}
	got = h.pushBatch([]device{{node: "a"}, {node: "bad"}})
	if want := []string{"HTTP 400", "HTTP 400"}; !slices.Equal(got, want) {
		t.Fatalf("outcomes of a refused request %q, want %q", got, want)
	}
}
