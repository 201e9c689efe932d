package daemon

import (
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"time"
)

// Process is a server a test package started and stops when its tests end.
type Process struct {
	cmd    *exec.Cmd
	exited chan struct{}
}

// Start starts cmd in a process group of its own and watches for its exit.
func Start(cmd *exec.Cmd) (*Process, error) {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Setpgid = true
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &Process{cmd: cmd, exited: make(chan struct{})}
	go func() { cmd.Wait(); close(p.exited) }()
	return p, nil
}

// Exited is closed once the process has exited.
func (p *Process) Exited() <-chan struct{} { return p.exited }

// Stop sends sig (the server's own clean, fast shutdown), and kills the
// process when it has not exited 30 s later.
func (p *Process) Stop(sig os.Signal) {
	_ = p.cmd.Process.Signal(sig)
	select {
	case <-p.exited:
	case <-time.After(30 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.exited
	}
}

// OnFreePort runs launch with a free loopback port, and again with another
// one, up to four times in all, while it fails: another process may take
// the port between our pick and the server's bind. launch must leave
// nothing running when it fails.
func OnFreePort(launch func(port int) error) error {
	var err error
	for range 4 {
		port, perr := FreePort()
		if perr != nil {
			return perr
		}
		if err = launch(port); err == nil {
			return nil
		}
	}
	return err
}

// OwnAs hands dir to the named system user when we run as root, for a
// server that must not run as root, and returns the user's credential (nil
// when we are not root). Without such a user it says which package to
// install.
func OwnAs(dir, userName, pkg string) (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	uid, gid, ok := ServiceUser(userName)
	if !ok {
		return nil, fmt.Errorf("running as root and no %s user (install Debian's %s: `make test-deps`)", userName, pkg)
	}
	if err := os.Chown(dir, uid, gid); err != nil {
		return nil, err
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
}
