package systemd

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/push-appserver/push-appserver/internal/testutil/sdnotify"
)

func TestNotifier(t *testing.T) {
	sock := sdnotify.Listen(t)
	t.Setenv("NOTIFY_SOCKET", sock.Path)
	n := New(slog.New(slog.DiscardHandler), func() string { return "serving" })
	const wait = 2 * time.Second

	n.Ready()
	if got := sock.Next(t, wait); got != "READY=1\nSTATUS=serving" {
		t.Fatalf("ready: %q", got)
	}
	// A status line is sent when it changes, not every time it is set.
	n.Status("serving")
	n.Status("serving; down: component push.example.org")
	if got := sock.Next(t, wait); got != "STATUS=serving; down: component push.example.org" {
		t.Fatalf("status: %q", got)
	}

	before := monotonicUsec()
	n.Reloading()
	f := sdnotify.Fields(sock.Next(t, wait))
	usec, err := strconv.ParseInt(f["MONOTONIC_USEC"], 10, 64)
	if f["RELOADING"] != "1" || err != nil || usec < before || usec > monotonicUsec() {
		t.Fatalf("reloading: %v (CLOCK_MONOTONIC %d before)", f, before)
	}
	// The reload's own line stands until it ends.
	n.Status("serving")
	sock.Quiet(t, 100*time.Millisecond)
	n.Ready()
	if got := sock.Next(t, wait); got != "READY=1\nSTATUS=serving" {
		t.Fatalf("ready after the reload: %q", got)
	}

	n.Stopping()
	if f := sdnotify.Fields(sock.Next(t, wait)); f["STOPPING"] != "1" || !strings.HasPrefix(f["STATUS"], "stopping") {
		t.Fatalf("stopping: %v", f)
	}
	n.Status("serving; down: registry")
	sock.Quiet(t, 100*time.Millisecond)
}

func TestFollow(t *testing.T) {
	sock := sdnotify.Listen(t)
	t.Setenv("NOTIFY_SOCKET", sock.Path)
	lines := make(chan string, 1)
	last := "serving"
	n := New(slog.New(slog.DiscardHandler), func() string {
		select {
		case last = <-lines:
		default:
		}
		return last
	})
	n.Ready()
	sock.Next(t, time.Second)

	lines <- "serving; down: registry"
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() {
		defer close(done)
		n.Follow(ctx, 10*time.Millisecond)
	}()
	if got := sock.Next(t, 2*time.Second); got != "STATUS=serving; down: registry" {
		t.Fatalf("followed status: %q", got)
	}
	sock.Quiet(t, 100*time.Millisecond)
	cancel()
	<-done
}

// TestWithoutSystemd: outside systemd nothing is sent and nothing logged.
func TestWithoutSystemd(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	var log bytes.Buffer
	n := New(slog.New(slog.NewTextHandler(&log, nil)), func() string { return "serving" })
	n.Ready()
	n.Reloading()
	n.Stopping()
	if log.Len() != 0 {
		t.Fatalf("log: %s", log.String())
	}
}

// TestSocketGone: a socket that cannot be reached is logged once, not at
// every message, and its coming back is logged too.
func TestSocketGone(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", filepath.Join(t.TempDir(), "gone"))
	var log bytes.Buffer
	n := New(slog.New(slog.NewTextHandler(&log, nil)), func() string { return "serving" })
	n.Ready()
	n.Status("serving; down: registry")
	n.Status("serving")
	if c := strings.Count(log.String(), "cannot tell systemd"); c != 1 {
		t.Fatalf("%d warnings:\n%s", c, log.String())
	}
	sock := sdnotify.Listen(t)
	t.Setenv("NOTIFY_SOCKET", sock.Path)
	n.Status("serving; down: registry")
	sock.Next(t, time.Second)
	if !strings.Contains(log.String(), "again") {
		t.Fatalf("log:\n%s", log.String())
	}
}

// TestFollowOutsideSystemd: without a socket the status is never
// computed, since computing it pings the registry.
func TestFollowOutsideSystemd(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	calls := 0
	n := New(slog.New(slog.DiscardHandler), func() string { calls++; return "serving" })
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	n.Ready()
	n.Follow(ctx, time.Millisecond)
	if calls != 0 {
		t.Fatalf("status computed %d times outside systemd", calls)
	}
}

// TestUpgrade: the new process of an upgrade names itself the main
// process as it says it is ready; the old one, once handed over, says
// nothing more, neither STOPPING=1 nor a status line.
func TestUpgrade(t *testing.T) {
	sock := sdnotify.Listen(t)
	t.Setenv("NOTIFY_SOCKET", sock.Path)
	status := "serving"
	n := New(slog.New(slog.DiscardHandler), func() string { return status })

	// systemd named the old process, this one's parent, as the one to
	// feed the watchdog.
	t.Setenv("WATCHDOG_PID", strconv.Itoa(os.Getppid()))
	n.TakeOver()
	f := sdnotify.Fields(sock.Next(t, 2*time.Second))
	if f["MAINPID"] != strconv.Itoa(os.Getpid()) || f["READY"] != "1" || f["STATUS"] != "serving" {
		t.Fatalf("take over: %v", f)
	}
	if got := os.Getenv("WATCHDOG_PID"); got != strconv.Itoa(os.Getpid()) {
		t.Errorf("WATCHDOG_PID after the take-over: %s, want this process", got)
	}

	n.HandOver()
	status = "serving; down: registry"
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() {
		defer close(done)
		n.Follow(ctx, 10*time.Millisecond)
	}()
	n.Status(status)
	n.Reloading()
	n.Ready()
	n.Stopping()
	sock.Quiet(t, 100*time.Millisecond)
	cancel()
	<-done
}

// TestWatchdog: with WATCHDOG_USEC and WATCHDOG_PID naming this process,
// WATCHDOG=1 comes twice in each interval, but only while alive returns;
// with another process's WATCHDOG_PID nothing is sent.
func TestWatchdog(t *testing.T) {
	sock := sdnotify.Listen(t)
	t.Setenv("NOTIFY_SOCKET", sock.Path)
	t.Setenv("WATCHDOG_USEC", "200000")
	n := New(slog.New(slog.DiscardHandler), func() string { return "serving" })

	t.Setenv("WATCHDOG_PID", strconv.Itoa(os.Getppid()))
	// It returns at once; bounded all the same, so that a Watchdog that
	// pinged for another process fails the test rather than hang it.
	ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	n.Watchdog(ctx, func() {})
	cancel()
	sock.Quiet(t, 50*time.Millisecond)

	t.Setenv("WATCHDOG_PID", strconv.Itoa(os.Getpid()))
	var stuck sync.Mutex
	ctx, cancel = context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() {
		defer close(done)
		n.Watchdog(ctx, func() {
			stuck.Lock()
			//lint:ignore SA2001 a stand-in for the core's locks
			stuck.Unlock()
		})
	}()
	start := time.Now()
	for range 3 {
		if got := sock.Next(t, time.Second); got != "WATCHDOG=1" {
			t.Fatalf("watchdog: %q", got)
		}
	}
	// The first at once, then every 100 ms.
	if d := time.Since(start); d < 150*time.Millisecond || d > 2*time.Second {
		t.Errorf("three messages in %v, want about 200 ms", d)
	}
	stuck.Lock()
	sock.Drain(150 * time.Millisecond) // one may have passed alive already
	sock.Quiet(t, 400*time.Millisecond)
	stuck.Unlock()
	if got := sock.Next(t, time.Second); got != "WATCHDOG=1" {
		t.Fatalf("watchdog once alive returns again: %q", got)
	}
	cancel()
	<-done
}

// TestStatusAfterReload: once a reload has ended with Ready, the status
// line follows the server again: held after it, `systemctl status` would
// say "reloading the configuration" until the next restart, whatever
// went down meanwhile.
func TestStatusAfterReload(t *testing.T) {
	sock := sdnotify.Listen(t)
	t.Setenv("NOTIFY_SOCKET", sock.Path)
	n := New(slog.New(slog.DiscardHandler), func() string { return "serving" })
	const wait = 2 * time.Second
	n.Reloading()
	sock.Next(t, wait)
	n.Ready()
	if got := sock.Next(t, wait); got != "READY=1\nSTATUS=serving" {
		t.Fatalf("ready: %q", got)
	}
	n.Status("serving; down: registry")
	if got := sock.Next(t, wait); got != "STATUS=serving; down: registry" {
		t.Fatalf("status after the reload: %q", got)
	}
}

// TestWatchdogTwiceAnInterval: WATCHDOG=1 goes out twice in each
// WatchdogSec, as sd_watchdog_enabled(3) advises, so that one message
// late by a scheduling hiccup does not get a working server killed.
// With a 2 s interval, three messages take about 2 s (at once, at 1 s,
// at 2 s); once an interval they would take 4 s. A second between the
// two leaves room for a loaded machine's late timers.
func TestWatchdogTwiceAnInterval(t *testing.T) {
	sock := sdnotify.Listen(t)
	t.Setenv("NOTIFY_SOCKET", sock.Path)
	t.Setenv("WATCHDOG_USEC", "2000000")
	t.Setenv("WATCHDOG_PID", strconv.Itoa(os.Getpid()))
	n := New(slog.New(slog.DiscardHandler), func() string { return "serving" })
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() {
		defer close(done)
		n.Watchdog(ctx, func() {})
	}()
	defer func() { cancel(); <-done }()
	if got := sock.Next(t, 5*time.Second); got != "WATCHDOG=1" {
		t.Fatalf("watchdog: %q", got)
	}
	start := time.Now()
	for range 2 {
		if got := sock.Next(t, 5*time.Second); got != "WATCHDOG=1" {
			t.Fatalf("watchdog: %q", got)
		}
	}
	if d := time.Since(start); d >= 3*time.Second {
		t.Errorf("two more messages took %v, want about 2 s: half the interval apart", d)
	}
}
