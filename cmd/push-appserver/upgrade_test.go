package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/push-appserver/push-appserver/internal/testutil/daemon"
	"github.com/push-appserver/push-appserver/internal/testutil/sdnotify"
)

// TestFailedUpgradeServesOn: when the new process of an upgrade cannot
// start (here the configuration was broken after the server started), the
// old one serves on as if nothing happened, and says nothing to systemd;
// it still stops cleanly afterwards. (A successful upgrade behind real
// XMPP servers: TestUpgradeInPlace in internal/e2e.)
func TestFailedUpgradeServesOn(t *testing.T) {
	bin := buildBinary(t)
	_, addr, config := minimalConfig(t)
	sock := sdnotify.Listen(t)
	s := startServerEnv(t, bin, config, "NOTIFY_SOCKET="+sock.Path)
	if f := sdnotify.Fields(sock.Next(t, 20*time.Second)); f["READY"] != "1" {
		t.Fatalf("first message: %v", f)
	}
	s.waitHealthy(t, addr)

	if err := os.WriteFile(config, []byte("this is not TOML\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s.cmd.Process.Signal(syscall.SIGUSR2)
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(s.log.String(), "upgrade failed: this process serves on") {
		if time.Now().After(deadline) {
			t.Fatalf("no failed upgrade in the log:\n%s", s.log.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	sock.Quiet(t, 300*time.Millisecond)
	if lines, err := s.register("after-upgrade", strings.Repeat("ab", 32)); err != nil || lines[0] != "OK" {
		t.Fatalf("register after the failed upgrade: %q, %v", lines, err)
	}
	s.stop(t)
	if f := sdnotify.Fields(sock.Next(t, time.Second)); f["STOPPING"] != "1" {
		t.Fatalf("on SIGINT: %v", f)
	}
}

// TestStopDuringUpgrade: a server told to stop while the new process of
// an upgrade is still starting (here it waits for a component whose XMPP
// server is not there) takes that process down with it, rather than
// leave it to serve on its own.
func TestStopDuringUpgrade(t *testing.T) {
	bin := buildBinary(t)
	_, addr, config := minimalConfig(t)
	addAbsentComponent(t, config)
	s := startServer(t, bin, config)
	s.waitHealthy(t, addr)

	s.cmd.Process.Signal(syscall.SIGUSR2)
	var child int
	for deadline := time.Now().Add(20 * time.Second); child == 0; time.Sleep(20 * time.Millisecond) {
		if pids := startedPIDs(s.log.String()); len(pids) == 2 {
			child = pids[1]
		}
		if time.Now().After(deadline) {
			t.Fatalf("no new process started:\n%s", s.log.String())
		}
	}
	s.stop(t)
	if !daemon.WaitExited(child, 5*time.Second) {
		syscall.Kill(child, syscall.SIGKILL)
		t.Fatalf("the new process %d still runs after the old one stopped:\n%s", child, s.log.String())
	}
}

// TestReplacedBinaryNamed: after a new binary is installed, the status
// line systemd shows says so, and a reload (which applies the
// configuration, not the binary) says how to switch to it; with the
// binary as it was, neither says anything of it.
func TestReplacedBinaryNamed(t *testing.T) {
	built := buildBinary(t)
	dir, addr, config := minimalConfig(t)
	bin := filepath.Join(dir, "push-appserver")
	install := func() {
		b, err := os.ReadFile(built)
		if err != nil {
			t.Fatal(err)
		}
		// As install(1) does: a new file renamed over the old.
		if err := os.WriteFile(bin+".new", b, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(bin+".new", bin); err != nil {
			t.Fatal(err)
		}
	}
	install()
	sock := sdnotify.Listen(t)
	s := startServerEnv(t, bin, config, "NOTIFY_SOCKET="+sock.Path)
	if f := sdnotify.Fields(sock.Next(t, 20*time.Second)); f["READY"] != "1" || f["STATUS"] != "serving" {
		t.Fatalf("first message: %v", f)
	}
	s.waitHealthy(t, addr)
	const hint = "the binary was replaced since this process started"
	reload := func() map[string]string {
		t.Helper()
		s.cmd.Process.Signal(syscall.SIGHUP)
		if f := sdnotify.Fields(sock.Next(t, 10*time.Second)); f["RELOADING"] != "1" {
			t.Fatalf("on SIGHUP: %v", f)
		}
		return sdnotify.Fields(sock.Next(t, 10*time.Second))
	}
	if f := reload(); f["READY"] != "1" || f["STATUS"] != "serving" {
		t.Fatalf("after a reload with the binary as it was: %v", f)
	}
	if strings.Contains(s.log.String(), hint) {
		t.Fatalf("a replaced binary named, with the binary as it was:\n%s", s.log.String())
	}

	install()
	const status = "serving; a new binary is installed: SIGUSR2 switches to it"
	if f := sdnotify.Fields(sock.Next(t, 10*time.Second)); f["STATUS"] != status {
		t.Fatalf("status after the binary was replaced: %v", f)
	}
	if f := reload(); f["READY"] != "1" || f["STATUS"] != status {
		t.Fatalf("after a reload with the binary replaced: %v", f)
	}
	for deadline := time.Now().Add(10 * time.Second); !strings.Contains(s.log.String(), hint); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the reload does not name the replaced binary:\n%s", s.log.String())
		}
	}
	s.stop(t)
}

// TestWatchdogAcrossUpgrades: under a unit's WatchdogSec the server
// feeds systemd's watchdog, and after an upgrade the new process does
// (systemd named the old one in WATCHDOG_PID, which the new one
// inherits), also after a second upgrade.
func TestWatchdogAcrossUpgrades(t *testing.T) {
	bin := buildBinary(t)
	_, addr, config := minimalConfig(t)
	sock := sdnotify.Listen(t)
	// systemd sets WATCHDOG_PID to the process it starts: here the
	// shell, whose PID exec keeps.
	cmd := exec.Command("/bin/sh", "-c", `WATCHDOG_PID=$$ exec "$0" serve -config "$1"`, bin, config)
	cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+sock.Path, "WATCHDOG_USEC=400000")
	u := daemon.StartUpgradable(t, cmd, 20*time.Second)
	// next returns the next message that ok accepts, skipping others.
	next := func(ok func(sdnotify.Message) bool, within time.Duration, what string) sdnotify.Message {
		t.Helper()
		deadline := time.Now().Add(within)
		for time.Now().Before(deadline) {
			if m := sock.NextMessage(t, time.Until(deadline)+time.Second); ok(m) {
				return m
			}
		}
		t.Fatalf("no %s within %v", what, within)
		return sdnotify.Message{}
	}
	// fed checks that pid alone feeds the watchdog, every 200 ms.
	fed := func(pid int) {
		t.Helper()
		start, n := time.Now(), 0
		for time.Since(start) < time.Second {
			m := sock.NextMessage(t, time.Second)
			if m.Text != "WATCHDOG=1" {
				continue
			}
			if m.PID != pid {
				t.Fatalf("WATCHDOG=1 from %d, want %d, the main process", m.PID, pid)
			}
			n++
		}
		if n < 3 {
			t.Fatalf("%d WATCHDOG=1 from %d in a second, want about 5", n, pid)
		}
	}
	next(func(m sdnotify.Message) bool { return sdnotify.Fields(m.Text)["READY"] == "1" }, 20*time.Second, "READY=1")
	fed(u.PID)
	for round := range 2 {
		old := u.PID
		syscall.Kill(old, syscall.SIGUSR2)
		m := next(func(m sdnotify.Message) bool { return sdnotify.Fields(m.Text)["MAINPID"] != "" }, 20*time.Second, "MAINPID")
		u.PID, _ = strconv.Atoi(sdnotify.Fields(m.Text)["MAINPID"])
		if u.PID == old || m.PID != u.PID {
			t.Fatalf("upgrade %d: MAINPID=%d from %d; the old process was %d", round+1, u.PID, m.PID, old)
		}
		if !daemon.WaitExited(old, 20*time.Second) {
			t.Fatalf("upgrade %d: the old process did not exit", round+1)
		}
		// The new process reads the configuration again once the old
		// one has gone, and says READY=1 after it: it ends a reload the
		// old process announced (RELOADING=1) at the hand-over.
		next(func(m sdnotify.Message) bool { return m.PID == u.PID && sdnotify.Fields(m.Text)["READY"] == "1" }, 20*time.Second, "READY=1 after the new process's reload")
		sock.Drain(100 * time.Millisecond) // what the old process sent before it went
		fed(u.PID)
	}
	if lines, err := (&server{base: "http://" + addr + "/push_appserver/v1/"}).register("after", strings.Repeat("ab", 32)); err != nil || lines[0] != "OK" {
		t.Fatalf("register after the upgrades: %q, %v", lines, err)
	}
}

// startedPIDs are the processes a server's log says started, in order:
// after an upgrade, the old one and the new.
func startedPIDs(log string) []int {
	var pids []int
	for _, m := range regexp.MustCompile(`msg="starting push-appserver" .*pid=(\d+)`).FindAllStringSubmatch(log, -1) {
		pid, _ := strconv.Atoi(m[1])
		pids = append(pids, pid)
	}
	return pids
}

// TestUpgradeLogSaysNewProcessServesOn: after an upgrade in place that
// went well, the old process's log says it handed over, never that the
// new process "stops too", which is what it says when a stop came during
// the upgrade (and both processes end). Read after a routine SIGUSR2,
// that line tells the operator the service is going down while the new
// process serves on.
func TestUpgradeLogSaysNewProcessServesOn(t *testing.T) {
	bin := buildBinary(t)
	_, addr, config := minimalConfig(t)
	u := daemon.StartUpgradable(t, exec.Command(bin, "serve", "-config", config), 25*time.Second)
	s := &server{}
	s.waitHealthy(t, addr)
	const upgrades = 3
	for i := range upgrades {
		old := u.PID
		syscall.Kill(old, syscall.SIGUSR2)
		waitLogCount(t, u, `msg="starting push-appserver"`, i+2, 20*time.Second)
		pids := startedPIDs(u.Log())
		if !daemon.WaitExited(old, 20*time.Second) {
			t.Fatalf("upgrade %d: the old process %d still runs", i+1, old)
		}
		u.PID = pids[len(pids)-1]
		s.waitHealthy(t, addr)
	}
	if syscall.Kill(u.PID, 0) != nil {
		t.Fatalf("the process the last upgrade started, %d, is gone", u.PID)
	}
	log := u.Log()
	if n := strings.Count(log, "handing over to it"); n != upgrades {
		t.Fatalf("%d hand-overs in the log, want %d:\n%s", n, upgrades, log)
	}
	if strings.Contains(log, "stops too") {
		t.Errorf("an upgrade that went well is logged as one whose new process stops:\n%s", log)
	}
}
