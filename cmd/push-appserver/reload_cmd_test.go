package main

import (
	"bytes"
	"crypto/tls"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/push-appserver/push-appserver/internal/testutil/daemon"
)

// servedNotAfter returns the expiry of the certificate the TLS listener
// at addr serves.
func servedNotAfter(t *testing.T, addr string) time.Time {
	t.Helper()
	c, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true}) // only the certificate is read
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.ConnectionState().PeerCertificates[0].NotAfter
}

// TestReloadCommand: the reload command makes the server the PID file in
// its data directory names reload, as SIGHUP does, without a kill command
// (a container image has none): a certificate renewed in place is served.
// It refuses a PID file whose process is no server (one that died left
// it, and its PID went to another process), signalling nothing, and says
// so when no server runs.
func TestReloadCommand(t *testing.T) {
	bin := buildBinary(t)
	dir := t.TempDir()
	certs := t.TempDir()
	first := time.Now().Add(30 * 24 * time.Hour).Truncate(time.Second)
	selfSigned(t, certs, first)
	addr := freePort(t)
	config := filepath.Join(dir, "c.toml")
	os.WriteFile(config, []byte(fmt.Sprintf("data_dir = %q\n[http]\nlisten = \"\"\ntls_listen = %q\ntls_cert_file = %q\ntls_key_file = %q\n",
		filepath.Join(dir, "data"), addr, filepath.Join(certs, "tls.crt"), filepath.Join(certs, "tls.key"))), 0o600)
	s := startServer(t, bin, config)
	pidPath := filepath.Join(dir, "data", pidFileName)
	waitPIDFile(t, pidPath, s.cmd.Process.Pid)
	if got := servedNotAfter(t, addr); !got.Equal(first) {
		t.Fatalf("served certificate expires %v, want %v", got, first)
	}

	renewed := first.Add(60 * 24 * time.Hour)
	selfSigned(t, certs, renewed)
	reload := func() (int, string, string) {
		var out, errb bytes.Buffer
		cmd := exec.Command(bin, "reload", "-config", config)
		cmd.Stdout, cmd.Stderr = &out, &errb
		err := cmd.Run()
		return cmd.ProcessState.ExitCode(), out.String(), fmt.Sprint(errb.String(), err)
	}
	if code, out, errs := reload(); code != 0 || !strings.Contains(out, "PID "+strconv.Itoa(s.cmd.Process.Pid)) {
		t.Fatalf("reload: exit %d\n%s%s", code, out, errs)
	}
	s.waitLog(t, "reload: applied")
	if got := servedNotAfter(t, addr); !got.Equal(renewed) {
		t.Fatalf("after the reload the served certificate expires %v, want %v (the renewed one)", got, renewed)
	}
	s.stop(t)
	if code, _, errs := reload(); code != 1 || !strings.Contains(errs, "no server runs") {
		t.Fatalf("reload with the server stopped: exit %d %s", code, errs)
	}

	// A PID file naming a process that is no server: this test's own,
	// which SIGHUP would end.
	os.WriteFile(pidPath, []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644)
	if code, _, errs := reload(); code != 1 || !strings.Contains(errs, "not running") {
		t.Fatalf("reload with a stale PID file: exit %d %s", code, errs)
	}
}

// TestReloadCommandAfterUpgrade: after an upgrade in place the PID file
// names the new process (the old one, leaving, does not remove it), and
// the reload command reaches it.
func TestReloadCommandAfterUpgrade(t *testing.T) {
	bin := buildBinary(t)
	dir, addr, config := minimalConfig(t)
	u := daemon.StartUpgradable(t, exec.Command(bin, "serve", "-config", config), 25*time.Second)
	s := &server{}
	s.waitHealthy(t, addr)
	old := u.PID
	syscall.Kill(old, syscall.SIGUSR2)
	waitLogCount(t, u, `msg="starting push-appserver"`, 2, 20*time.Second)
	if !daemon.WaitExited(old, 20*time.Second) {
		t.Fatalf("the old process %d still runs", old)
	}
	pids := startedPIDs(u.Log())
	u.PID = pids[len(pids)-1]
	if pid, err := readPIDFile(filepath.Join(dir, "data", pidFileName)); err != nil || pid != u.PID {
		t.Fatalf("PID file after the upgrade: %d %v, want the new process %d", pid, err, u.PID)
	}
	// The new process reads the configuration once the old one has
	// gone: one reload of its own before the command's.
	waitLogCount(t, u, `msg="reload: `, 1, 20*time.Second)
	out, err := exec.Command(bin, "reload", "-config", config).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "PID "+strconv.Itoa(u.PID)) {
		t.Fatalf("reload: %v\n%s", err, out)
	}
	waitLogCount(t, u, `msg="reload: `, 2, 20*time.Second)
}

// TestReloadCommandRefusesPIDOfAnotherServer: a server killed outright
// (SIGKILL, the OOM killer) leaves its PID file behind, and the PID in it
// may go to any later process, another server among them (an instance
// with a configuration of its own). The reload command refuses such a
// file, since the server that wrote it is gone, rather than signal
// whatever holds the PID now and report the reload as done.
func TestReloadCommandRefusesPIDOfAnotherServer(t *testing.T) {
	bin := buildBinary(t)
	dir, addr, config := minimalConfig(t)
	s := startServer(t, bin, config)
	s.waitHealthy(t, addr)
	pidPath := filepath.Join(dir, "data", pidFileName)
	waitPIDFile(t, pidPath, s.cmd.Process.Pid)
	s.cmd.Process.Kill()
	s.cmd.Wait()

	_, otherAddr, otherConfig := minimalConfig(t)
	other := startServer(t, bin, otherConfig)
	other.waitHealthy(t, otherAddr)
	// The dead server's PID went to the other one: the file is as the
	// dead server left it but for the number.
	if err := os.WriteFile(pidPath, []byte(strconv.Itoa(other.cmd.Process.Pid)+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	var out, errb bytes.Buffer
	cmd := exec.Command(bin, "reload", "-config", config)
	cmd.Stdout, cmd.Stderr = &out, &errb
	cmd.Run()
	if code := cmd.ProcessState.ExitCode(); code != 1 || strings.Contains(out.String(), "told the server") || !strings.Contains(errb.String(), "not running") {
		t.Fatalf("reload with the PID file of a dead server naming another server: exit %d\n%s%s", code, out.String(), errb.String())
	}
}

// waitPIDFile waits until the PID file at path names pid, as the server
// writes it once it serves.
func waitPIDFile(t *testing.T, path string, pid int) {
	t.Helper()
	for deadline := time.Now().Add(15 * time.Second); ; {
		if got, err := readPIDFile(path); err == nil && got == pid {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("no PID file once serving")
		}
		time.Sleep(20 * time.Millisecond)
	}
}
