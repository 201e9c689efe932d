package main

import (
	"crypto/sha256"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// setFileSizeLimit sets the soft limit on the size of the files process
// pid (0: this one) writes (RLIMIT_FSIZE), leaving the hard limit as it
// is, and returns the soft limit it replaced: a write past it fails with
// EFBIG, as a write to a full disk fails with ENOSPC, and raising it
// again needs no privilege.
func setFileSizeLimit(t *testing.T, pid int, soft uint64) (old uint64) {
	t.Helper()
	var lim unix.Rlimit
	if err := unix.Prlimit(pid, unix.RLIMIT_FSIZE, nil, &lim); err != nil {
		t.Fatal(err)
	}
	old, lim.Cur = lim.Cur, min(soft, lim.Max)
	if err := unix.Prlimit(pid, unix.RLIMIT_FSIZE, &lim, nil); err != nil {
		t.Fatal(err)
	}
	return old
}

// While the registry's files cannot grow, as on a full disk, a
// registration is answered with an error, never with OK, pushes to the
// devices registered before still go out, and the server keeps running;
// once there is room again, registrations succeed again, and everything
// answered OK is in the registry, intact.
func TestRegistrationsWhenDiskFull(t *testing.T) {
	bin := buildBinary(t)
	dir, addr, config := minimalConfig(t)
	db := filepath.Join(dir, "data", "registry.db")

	s := startServer(t, bin, config)
	s.waitHealthy(t, addr)
	answered := map[string]string{} // node: secret
	var mu sync.Mutex
	// register says whether node was registered; an answer neither OK
	// nor ERROR fails the test.
	register := func(node string) bool {
		lines, err := s.register(node, fmt.Sprintf("%x", sha256.Sum256([]byte(node))))
		switch {
		case err != nil:
			t.Errorf("register %s: %v", node, err)
		case len(lines) == 3 && lines[0] == "OK" && lines[1] == node:
			mu.Lock()
			answered[node] = lines[2]
			mu.Unlock()
			return true
		case lines[0] != "ERROR":
			t.Errorf("register %s: %q", node, lines)
		}
		return false
	}
	for i := range 20 {
		if !register(fmt.Sprintf("before-%d", i)) {
			t.Fatal("registration refused before the disk filled")
		}
	}

	wal, err := os.Stat(db + "-wal")
	if err != nil {
		t.Fatal(err)
	}
	// Room for a few commits more, then none: the log only grows until
	// its checkpoint, thousands of pages away.
	setFileSizeLimit(t, s.cmd.Process.Pid, uint64(wal.Size())+32<<10)
	fullAt := time.Now()
	var wg sync.WaitGroup
	var refused, accepted int
	for g := range 8 {
		wg.Go(func() {
			for i := range 40 {
				ok := register(fmt.Sprintf("full-%d-%d", g, i))
				mu.Lock()
				if ok {
					accepted++
				} else {
					refused++
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	fullFor := time.Since(fullAt)
	// Whether answering OK here lost anything is for the checks below.
	if refused == 0 {
		t.Errorf("all %d registrations answered OK while the registry's files could not grow", accepted)
	}
	t.Logf("while the registry's files could not grow: %d registrations answered OK (before the log reached the limit), %d refused", accepted, refused)
	// Each refusal is counted as the server's own failure, for alerts.
	if got := metric(t, addr, `push_appserver_registration_failures_total{reason="error"}`); got != float64(refused) {
		t.Errorf("registration failures counted as error: %v, want %d", got, refused)
	}
	// Each refusal is a request anyone may repeat: its line is written
	// at most ten times a second, as every other flood's.
	if n := strings.Count(s.log.String(), "disk I/O error"); n > 10*(int(fullFor/time.Second)+2)+10 {
		t.Errorf("%d log lines of the error for %d registrations refused in %v", n, refused, fullFor.Round(time.Millisecond))
	}
	// Pushes read the registry and need no room.
	if body := s.post(t, "push", url.Values{"node": {"before-3"}, "secret": {answered["before-3"]}}); body != "OK\nbefore-3" {
		t.Fatalf("push while the disk is full: %q", body)
	}

	setFileSizeLimit(t, s.cmd.Process.Pid, unix.RLIM_INFINITY)
	for i := range 20 {
		if !register(fmt.Sprintf("after-%d", i)) {
			t.Fatalf("registration %d refused once there was room again", i)
		}
	}
	s.stop(t)

	// Nothing refused made it in either.
	if n := registryHolds(t, db, answered); n != len(answered) {
		t.Fatalf("%d registrations in the registry, %d answered OK", n, len(answered))
	}
}

// A server started where the registry's files cannot grow (SQLite must
// write its shared-memory file before it reads anything) cannot open the
// registry: it exits at once, and says the disk may be full rather than
// only "disk I/O error".
func TestServeOnFullDiskSaysSo(t *testing.T) {
	bin := buildBinary(t)
	_, addr, config := minimalConfig(t)
	s := startServer(t, bin, config)
	s.waitHealthy(t, addr)
	if lines, err := s.register("n1", "ab12"); err != nil || lines[0] != "OK" {
		t.Fatalf("register: %q, %v", lines, err)
	}
	s.stop(t) // a clean stop removes the log and the shared-memory file

	// The server inherits the limit; the test's own files are not written
	// while it is down.
	old := setFileSizeLimit(t, 0, 0)
	s = startServer(t, bin, config)
	setFileSizeLimit(t, 0, old)
	done := make(chan error, 1)
	go func() { done <- s.cmd.Wait() }()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("the server ran on a full disk and exited cleanly")
		}
	case <-time.After(15 * time.Second):
		t.Fatal("the server did not exit on a full disk")
	}
	if log := s.log.String(); !strings.Contains(log, "is the disk full?") {
		t.Fatalf("the server's message does not say the disk may be full:\n%s", log)
	}
}
