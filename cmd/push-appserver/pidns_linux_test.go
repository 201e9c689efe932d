package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/push-appserver/push-appserver/internal/testutil/logbuf"
)

// startInPIDNamespace starts the binary serving config as the first
// process of a PID namespace of its own, as a container's main process
// is: its PID is 1 there, whatever it is here.
func startInPIDNamespace(t *testing.T, bin, config, addr string) *server {
	t.Helper()
	s := &server{log: &logbuf.Buffer{}}
	s.cmd = exec.Command(bin, "serve", "-config", config)
	s.cmd.Stdout, s.cmd.Stderr = s.log, s.log
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWPID}
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if s.cmd.ProcessState == nil {
			s.cmd.Process.Kill()
			s.cmd.Wait()
		}
		if t.Failed() {
			t.Logf("server log:\n%s", s.log.String())
		}
	})
	s.waitHealthy(t, addr)
	return s
}

// TestPIDFileOfAContainerStoppingBesideAnother: two containers on one
// data volume (a rolling update, the new pod started before the old one
// stops) both run as PID 1, so both write "1" into push-appserver.pid.
// The one that stops must leave the file of the one that serves on, or
// the reload command (kubectl exec POD -- push-appserver reload) finds
// no server in the pod that runs.
func TestPIDFileOfAContainerStoppingBesideAnother(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("this test starts servers in PID namespaces of their own, which takes root")
	}
	bin := buildBinary(t)
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	addrs := freePorts(t, 2)
	configs := make([]string, 2)
	for i := range configs {
		configs[i] = filepath.Join(dir, fmt.Sprintf("c%d.toml", i))
		if err := os.WriteFile(configs[i], []byte(fmt.Sprintf("data_dir = %q\n[http]\nlisten = %q\n", data, addrs[i])), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	pidPath := filepath.Join(data, pidFileName)
	// waitPIDFile waits for a PID file other than the one before
	// (another file, whatever it says).
	waitPIDFile := func(before os.FileInfo) os.FileInfo {
		t.Helper()
		for deadline := time.Now().Add(15 * time.Second); ; {
			if fi, err := os.Stat(pidPath); err == nil && (before == nil || !os.SameFile(fi, before)) {
				return fi
			}
			if time.Now().After(deadline) {
				t.Fatal("no PID file of the server started")
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	old := startInPIDNamespace(t, bin, configs[0], addrs[0])
	first := waitPIDFile(nil)
	if pid, err := readPIDFile(pidPath); err != nil || pid != 1 {
		t.Fatalf("PID file of a server in a PID namespace: %d %v, want 1", pid, err)
	}
	second := startInPIDNamespace(t, bin, configs[1], addrs[1])
	waitPIDFile(first)
	// Not refused, but said: the second server on one data directory.
	// Said before its PID file is written; the log is written behind.
	for deadline := time.Now().Add(5 * time.Second); !strings.Contains(second.log.String(), "another server serves with this data directory"); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the second server on one data directory says nothing of the first:\n%s", second.log.String())
		}
	}
	if strings.Contains(old.log.String(), "another server serves with this data directory") {
		t.Errorf("the first server on its data directory warns of another:\n%s", old.log.String())
	}
	old.stop(t)
	if _, err := os.Stat(pidPath); err != nil {
		t.Fatalf("the PID file of the server still running is gone with the one that stopped: %v", err)
	}
}
