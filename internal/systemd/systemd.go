// Package systemd tells the service manager how the server is doing
// (sd_notify(3)): when it has started and serves, when it reloads its
// configuration and is done, when it stops, and a status line that
// `systemctl status` shows. With the unit's Type=notify, `systemctl
// start` returns once the server listens, units ordered after it start
// only then, and a server that fails while starting fails the start.
// With the unit's WatchdogSec, the server also feeds systemd's watchdog
// while it works (see Watchdog).
//
// Outside systemd (no NOTIFY_SOCKET in the environment: a shell, a
// container) every method does nothing.
package systemd

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
	"golang.org/x/sys/unix"
)

// Notifier sends the server's state to the service manager. Its methods
// are safe for concurrent use; a message that cannot be sent is logged
// once at warn and otherwise ignored, since the server works the same
// without it.
type Notifier struct {
	logger *slog.Logger
	// statusOf computes the status line. It may be dear (the health
	// checks ping the registry), so it is called only when managed:
	// when systemd gave us a socket.
	statusOf func() string
	managed  bool

	mu     sync.Mutex
	status string // the status line last sent
	held   bool   // reloading or stopping: Status waits for Ready
	failed bool   // a send failed and was logged
	gone   bool   // another process took over as the service's main one
}

// New returns a notifier that logs to logger and takes its status line
// from status.
func New(logger *slog.Logger, status func() string) *Notifier {
	return &Notifier{logger: logger, statusOf: status, managed: os.Getenv("NOTIFY_SOCKET") != ""}
}

// Ready says the server has started (or finished reloading) and serves.
func (n *Notifier) Ready() { n.ready("READY=1") }

// TakeOver says this process, started by an upgrade (package upgrade),
// is now the service's main process, and serves. It must come before the
// old process exits: systemd takes the main process's exit for the
// service's. The unit needs NotifyAccess=all, since systemd hears only
// its main process otherwise.
//
// It also makes this process the one that feeds the watchdog, if the old
// one did: systemd named the old one in WATCHDOG_PID, which this one
// inherited, and would otherwise kill the service once the old one has
// gone. Call it before Watchdog.
func (n *Notifier) TakeOver() {
	if pid, err := strconv.Atoi(os.Getenv("WATCHDOG_PID")); err == nil && pid == os.Getppid() {
		os.Setenv("WATCHDOG_PID", strconv.Itoa(os.Getpid()))
	}
	n.ready(fmt.Sprintf("MAINPID=%d\nREADY=1", os.Getpid()))
}

// ready sends state with the status line, which it sets and releases
// from a reload's or a stop's hold.
func (n *Notifier) ready(state string) {
	if !n.managed {
		return
	}
	status := n.statusOf()
	n.mu.Lock()
	defer n.mu.Unlock()
	n.status, n.held = status, false
	n.send(state + "\nSTATUS=" + status)
}

// HandOver says nothing, and makes the notifier say nothing from now on:
// a new process took over as the service's main one, and what this one
// would say (STOPPING=1 above all) would be taken for the service's.
func (n *Notifier) HandOver() {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.gone = true
}

// Reloading says a reload of the configuration has begun; Ready ends it.
// MONOTONIC_USEC lets systemd 253 and later (Type=notify-reload) tell
// this reload from an earlier one.
func (n *Notifier) Reloading() {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.held = true
	n.send(fmt.Sprintf("RELOADING=1\nMONOTONIC_USEC=%d\nSTATUS=reloading the configuration", monotonicUsec()))
}

// Stopping says the server is shutting down: it finishes what it has
// under way first.
func (n *Notifier) Stopping() {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.held = true
	n.send("STOPPING=1\nSTATUS=stopping: finishing the pushes under way")
}

// Status sets the status line, if it changed. While a reload is under
// way or the server stops, the line says so and Status leaves it.
func (n *Notifier) Status(status string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.held || status == n.status {
		return
	}
	n.status = status
	n.send("STATUS=" + status)
}

// Follow brings the status line up to date every interval until ctx
// ends; the line is sent only when it changes. Outside systemd it
// returns at once.
func (n *Notifier) Follow(ctx context.Context, interval time.Duration) {
	if !n.managed {
		return
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			n.Status(n.statusOf())
		}
	}
}

// Watchdog feeds systemd's watchdog while the server works, until ctx
// ends: twice in each WatchdogSec it calls alive, and once alive returns
// it sends WATCHDOG=1. An alive that does not return (the core's locks
// held for good, a stalled process) stops the messages, and systemd then
// kills the service with SIGABRT, on which Go writes every goroutine's
// stack to the journal, and starts it again (Restart=on-failure).
//
// It returns at once unless systemd asked this process for them
// (WATCHDOG_USEC, and WATCHDOG_PID naming it: the unit's other processes
// must not answer for it).
func (n *Notifier) Watchdog(ctx context.Context, alive func()) {
	interval, err := daemon.SdWatchdogEnabled(false)
	if err != nil {
		n.logger.Warn("systemd's watchdog settings cannot be read; not feeding it", "err", err)
		return
	}
	if interval <= 0 || !n.managed {
		return
	}
	t := time.NewTicker(interval / 2)
	defer t.Stop()
	for {
		alive()
		n.mu.Lock()
		n.send("WATCHDOG=1")
		n.mu.Unlock()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// send writes one message; n.mu is held.
func (n *Notifier) send(state string) {
	if n.gone {
		return
	}
	sent, err := daemon.SdNotify(false, state)
	switch {
	case err != nil && !n.failed:
		n.failed = true
		n.logger.Warn("cannot tell systemd how the server is doing (NOTIFY_SOCKET)", "err", err)
	case sent && n.failed:
		n.failed = false
		n.logger.Info("telling systemd how the server is doing again")
	}
}

// monotonicUsec is CLOCK_MONOTONIC in microseconds, the clock systemd
// compares MONOTONIC_USEC with. Go's time package keeps its monotonic
// reading private.
func monotonicUsec() int64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return 0
	}
	return ts.Nano() / 1000
}
