// Package upgrade hands the running server over to a new process of its
// binary, usually a newer one just installed, with no moment in which
// nobody serves.
//
// A restart leaves a gap between the old process closing its component
// stream and the new one connecting. ejabberd answers a publish that
// finds no component with an error of type auth, and deletes the user's
// push session for it: every user who gets a message in that gap loses
// push until the app enables it again. The HTTP API refuses connections
// in that gap too. An upgrade has no gap: the new process inherits the
// listening sockets, opens the registry beside the old one, connects its
// components (ejabberd takes a second connection for a component;
// Prosody refuses it, so the new process stands by), and says it is
// ready. Only then does the old process shut down as on SIGTERM,
// finishing what it has under way; once its component stream is closed
// it tells the new one through a pipe, which connects at once where it
// stood by. If the new process fails to start, or is not ready in time,
// it is killed and the old one serves on. If the old process is told to
// stop while the new one starts, it tells the new one through the same
// pipe, and the new one stops as on SIGTERM, answering what its
// components took, rather than be killed with it.
//
// The sockets and the readiness handshake are cloudflare/tableflip's,
// the library Cloudflare's own Go services upgrade with.
package upgrade

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cloudflare/tableflip"
)

// releasedFile names the pipe through which the old process tells the new
// one which component streams it closed, a JID a line, or that it stops
// (stopLine). The old process holds its write end until it exits, so its
// end of file says the old process is gone.
const releasedFile = "component-released"

// stopLine, on the old process's pipe, tells the new process to stop as
// on SIGTERM: the old one was told to stop while the new one started.
// No JID holds a "!"; a new process of an older version takes the line
// for a component it does not have.
const stopLine = "!stop"

// Process is this process's part in upgrades: as the old process, the one
// that starts a new one and hands over; as the new one, the one that
// inherits from its parent.
type Process struct {
	tf     *tableflip.Upgrader // nil: not this process's first (see New)
	logger *slog.Logger

	mu sync.Mutex
	// pipe is the write end of the pipe to the new process (see
	// releasePipe); released is it too, once a new process is ready.
	pipe     *os.File
	released *os.File
	// stopping: this process stops, and starts no new one (see
	// StopNewProcess).
	stopping bool

	// What the new process does with what the old one says (see
	// OnComponentReleased, OnOldProcessGone), and whether the old one
	// has gone already.
	onReleased func(jid string)
	onGone     func()
	gone       bool
	// stopped is closed when the old process told this one to stop.
	stopped chan struct{}
}

// taken: a process has one parent and one set of inherited sockets, so
// only its first Process takes part in upgrades (tableflip allows one
// Upgrader a process).
var taken atomic.Bool

// New sets up this process's part. A process started by an upgrade
// inherits its parent's sockets from here on. timeout bounds how long a
// new process may take to be ready.
//
// Only the first Process of a process takes part. Later ones (tests run
// several servers in one process) listen anew, never inherit, and refuse
// to upgrade.
func New(logger *slog.Logger, timeout time.Duration) (*Process, error) {
	p := &Process{logger: logger, stopped: make(chan struct{})}
	if !taken.CompareAndSwap(false, true) {
		return p, nil
	}
	tf, err := tableflip.New(tableflip.Options{UpgradeTimeout: timeout})
	if err != nil {
		return nil, fmt.Errorf("upgrade: %w", err)
	}
	p.tf = tf
	// From the start: the old process may be told to stop while this
	// one starts.
	p.follow()
	return p, nil
}

// Inherited reports whether this process was started by an upgrade.
func (p *Process) Inherited() bool { return p.tf != nil && p.tf.HasParent() }

// Listen returns the TCP listener for addr that the old process passed
// on, or a new one. The address must be the same string as the old
// process listened on (":5280" is not "0.0.0.0:5280"), and its port
// not 0, to be passed on.
func (p *Process) Listen(addr string) (net.Listener, error) {
	if p.tf == nil {
		return net.Listen("tcp", addr)
	}
	return p.tf.Listen("tcp", addr)
}

// Ready says this process serves: a new process's parent now shuts down,
// and this one may itself be upgraded from now on. Sockets inherited and
// not listened on again (an address the new configuration dropped) are
// closed.
func (p *Process) Ready() error {
	if p.tf == nil {
		return nil
	}
	if err := p.tf.Ready(); err != nil {
		return fmt.Errorf("upgrade: %w", err)
	}
	return nil
}

// HandedOver is closed when a new process is ready: this one should
// shut down now, as on SIGTERM.
func (p *Process) HandedOver() <-chan struct{} {
	if p.tf == nil {
		return nil // never
	}
	return p.tf.Exit()
}

// Upgrade starts a new process of the binary at the path this one was
// started from, with the same arguments and environment, and waits until
// it is ready (nil; HandedOver is then closed) or has failed (it is
// killed if it still runs, and this process serves on).
func (p *Process) Upgrade() error {
	if p.tf == nil {
		return errors.New("upgrade: only the first server of a process can be upgraded")
	}
	pidNS, _ := os.Readlink("/proc/self/ns/pid")
	initName, _ := os.ReadFile("/proc/1/comm")
	if why := endsWithContainer(os.Getpid(), os.Getppid(), pidNS, strings.TrimSpace(string(initName)), os.Getenv("NOTIFY_SOCKET") != ""); why != "" {
		return errors.New("upgrade: " + why + ": replace the container instead")
	}
	w, err := p.releasePipe()
	if err != nil {
		return fmt.Errorf("upgrade: %w", err)
	}
	// A new process that fails costs two descriptors all the same:
	// tableflip (v1.2.3) keeps its ends of the pipes it passes to each
	// new process for readiness and names, and nothing here reaches them.
	if err := p.tf.Upgrade(); err != nil {
		return fmt.Errorf("upgrade: %w", err)
	}
	p.mu.Lock()
	p.released = w
	p.mu.Unlock()
	return nil
}

// releasePipe returns the write end of the pipe whose read end tableflip
// passes to the new process as releasedFile, made by the first upgrade
// and kept for the next ones: tableflip keeps its duplicate of a file
// added under a name, and adding one under that name again replaces it
// without closing it, a descriptor lost with each failed upgrade. Nothing
// is written to the pipe until a new process is ready, so one that failed
// leaves it as it was.
func (p *Process) releasePipe() (*os.File, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stopping {
		return nil, errors.New("this process stops")
	}
	if p.pipe != nil {
		return p.pipe, nil
	}
	r, w, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	// tableflip passes a duplicate; ours is not needed here.
	err = p.tf.AddFile(releasedFile, r)
	r.Close()
	if err != nil {
		w.Close()
		return nil, err
	}
	p.pipe = w
	return w, nil
}

// StopNewProcess tells a new process that an upgrade started, and that
// has not exited, to stop as on SIGTERM, and starts no new one from now
// on: this process stops for good. Stop, which kills a new process that
// is not ready yet, comes once it has had time to. A new process that is
// ready, and serves, stops too.
func (p *Process) StopNewProcess() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.stopping = true
	if p.pipe == nil {
		return nil // no new process was started
	}
	// A new process that has not read the pipe yet finds the line there.
	if _, err := io.WriteString(p.pipe, stopLine+"\n"); err != nil {
		return fmt.Errorf("upgrade: telling the new process to stop: %w", err)
	}
	return nil
}

// StopRequested is closed, in a process started by an upgrade, when the
// old process tells it to stop (see StopNewProcess).
func (p *Process) StopRequested() <-chan struct{} { return p.stopped }

// Stop ends upgrades: the process shuts down for good. A new process
// that is not ready yet is killed.
func (p *Process) Stop() {
	if p.tf != nil {
		p.tf.Stop()
	}
}

// ReleaseComponent tells the new process that this one closed its stream
// for the component jid, so that it connects at once if it stood by.
// Without a new process it does nothing.
func (p *Process) ReleaseComponent(_ context.Context, jid string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.released == nil {
		return nil
	}
	if _, err := io.WriteString(p.released, jid+"\n"); err != nil {
		return fmt.Errorf("upgrade: telling the new process: %w", err)
	}
	return nil
}

// OnComponentReleased makes a process started by an upgrade call fn with
// each component JID whose stream the old process closed. Call it before
// Ready: the old process closes its streams once this one is ready.
func (p *Process) OnComponentReleased(fn func(jid string)) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.onReleased = fn
}

// OnOldProcessGone makes a process started by an upgrade call fn once the
// old process has exited: whatever it wrote to the registry on its way
// out (the pushes waiting for redelivery) is there then. If it has gone
// already, fn is called at once.
func (p *Process) OnOldProcessGone(fn func()) {
	p.mu.Lock()
	gone := p.gone
	p.onGone = fn
	p.mu.Unlock()
	if gone {
		fn()
	}
}

// follow reads, in a process started by an upgrade, what the old process
// says through its pipe, until it exits.
func (p *Process) follow() {
	f, err := p.tf.File(releasedFile)
	if err != nil {
		p.logger.Warn("upgrade: the old process's pipe is unusable; a component standing by connects at its next retry, and a stop of the old one while this one starts kills this one", "err", err)
		return
	}
	if f == nil {
		return // not started by an upgrade
	}
	go func() {
		defer f.Close()
		s := bufio.NewScanner(f)
		for s.Scan() {
			line := strings.TrimSpace(s.Text())
			switch {
			case line == stopLine:
				p.mu.Lock()
				select {
				case <-p.stopped:
				default:
					close(p.stopped)
				}
				p.mu.Unlock()
			case line != "":
				p.mu.Lock()
				released := p.onReleased
				p.mu.Unlock()
				if released != nil {
					released(line)
				}
			}
		}
		if err := s.Err(); err != nil && !errors.Is(err, os.ErrClosed) {
			p.logger.Debug("upgrade: reading the old process's pipe", "err", err)
			return
		}
		p.mu.Lock()
		p.gone = true
		gone := p.onGone
		p.mu.Unlock()
		if gone != nil {
			gone()
		}
	}()
}

// initialPIDNamespace is how /proc/self/ns/pid names the first PID
// namespace, the host's (the kernel's PROC_PID_INIT_INO).
const initialPIDNamespace = "pid:[4026531836]"

// endsWithContainer says why this process, pid pid with parent ppid in
// the PID namespace pidNS (/proc/self/ns/pid; "" when unknown) whose PID
// 1 is named initName, cannot hand over to a new process: when it exits,
// what started it ends the container and kills the new process with it.
// It returns "" where an upgrade keeps the service up: on a host, or
// under a systemd that is PID 1 of its container and follows the new
// process as the service's main one (notify: a NOTIFY_SOCKET).
//
// Being PID 1 is not the only way to be a container's main process: under
// an init (docker run --init, tini, catatonit) the server is its child,
// and the init exits with it; in a pod that shares its PID namespace
// (Kubernetes' shareProcessNamespace) a pause process is PID 1 and the
// server's parent, the runtime, is outside the namespace (ppid 0), yet
// the runtime ends the container when the server exits. A NOTIFY_SOCKET
// alone proves no systemd follows it: podman passes the host's into a
// container (--sdnotify=container), whose init still exits with it.
func endsWithContainer(pid, ppid int, pidNS, initName string, notify bool) string {
	switch {
	case pid == 1:
		// Its exit ends the namespace, whoever else follows it.
		return "this process is PID 1, as a container's entry point is; the container would end with it"
	case ppid == 0:
		return "this process was started from outside its PID namespace, by a container runtime (a pod sharing its PID namespace); the container would end with it"
	case pidNS == "" || pidNS == initialPIDNamespace:
		return ""
	case notify && ppid == 1 && initName == "systemd":
		return ""
	}
	return "this process runs in a container's PID namespace, under an init or a shell (docker run --init, tini) that ends the container when it exits; the container would end with it"
}

// BinaryReplaced reports whether the file this process runs from has been
// replaced or removed since it started, as installing a new binary does:
// then an upgrade would run the new one. On Linux the kernel marks the
// link /proc/self/exe "(deleted)"; elsewhere it reports false.
func BinaryReplaced() bool {
	exe, err := os.Readlink("/proc/self/exe")
	return err == nil && strings.HasSuffix(exe, " (deleted)")
}
