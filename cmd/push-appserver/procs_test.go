package main

import (
	"io"
	"net/http"
	"regexp"
	"runtime"
	"strconv"
	"testing"
	"time"
)

// gomaxprocs reads the server's current GOMAXPROCS from its metrics.
func gomaxprocs(t *testing.T, addr string) int {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	m := regexp.MustCompile(`(?m)^go_sched_gomaxprocs_threads (\d+)$`).FindSubmatch(b)
	if m == nil {
		t.Fatal("metrics lack go_sched_gomaxprocs_threads")
	}
	n, _ := strconv.Atoi(string(m[1]))
	return n
}

// An idle server drops to one processor within a few seconds (package
// procs), unless GOMAXPROCS in its environment says otherwise.
func TestIdleServerRunsOnOneProcessor(t *testing.T) {
	bin := buildBinary(t)
	for _, tt := range []struct {
		name string
		env  string
		want int
	}{
		// Empty is unset for Go's runtime and for procs.Enabled, whatever
		// the test's own environment says.
		{"governed", "GOMAXPROCS=", 1},
		{"GOMAXPROCS set", "GOMAXPROCS=2", 2},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, addr, config := minimalConfig(t)
			s := startServerEnv(t, bin, config, tt.env)
			s.waitHealthy(t, addr)
			deadline := time.Now().Add(10 * time.Second)
			got := gomaxprocs(t, addr)
			for got != tt.want && time.Now().Before(deadline) {
				time.Sleep(100 * time.Millisecond)
				got = gomaxprocs(t, addr)
			}
			if got != tt.want {
				t.Fatalf("GOMAXPROCS %d after 10 s idle, want %d (this machine has %d processors)", got, tt.want, runtime.NumCPU())
			}
			if tt.want > 1 {
				// And it stays: nothing governs it.
				time.Sleep(3 * time.Second)
				if got := gomaxprocs(t, addr); got != tt.want {
					t.Fatalf("GOMAXPROCS %d, want %d as set", got, tt.want)
				}
			}
		})
	}
}
