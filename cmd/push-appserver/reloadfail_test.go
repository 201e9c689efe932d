package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/push-appserver/push-appserver/internal/testutil/sdnotify"
)

// TestFailedReloadShowsBeyondTheLog guards what an operator sees of a
// reload that applied nothing (a file that does not load) or not all it
// was asked to (a key that does not load): besides the log line,
// push_appserver_config_last_reload_successful is 0 and systemd's status
// line says so, until a reload applies its file in full. Otherwise the
// reload looked done to every tool (systemctl, the status line, the
// metrics) while the server ran on the old settings.
func TestFailedReloadShowsBeyondTheLog(t *testing.T) {
	bin := buildBinary(t)
	dir := t.TempDir()
	am, _, keyFile, _ := startMocks(t, dir)
	addr := freePort(t)
	config := filepath.Join(dir, "c.toml")
	good := fmt.Appendf(nil, "data_dir = %q\nrate_limit = 0\n[http]\nlisten = %q\n%s", filepath.Join(dir, "data"), addr, am.AppConfig("ios", keyFile))
	os.WriteFile(config, good, 0o600)
	sock := sdnotify.Listen(t)
	s := startServerEnv(t, bin, config, "NOTIFY_SOCKET="+sock.Path)
	if f := sdnotify.Fields(sock.Next(t, 20*time.Second)); f["READY"] != "1" {
		t.Fatalf("first message: %v", f)
	}
	const series = "push_appserver_config_last_reload_successful"
	if v := metric(t, addr, series); v != 1 {
		t.Fatalf("%s = %v at start, want 1", series, v)
	}
	// waitStatus waits for the status line to say want (or, with
	// absent, to stop saying it).
	waitStatus := func(want string, absent bool) {
		t.Helper()
		for deadline := time.Now().Add(20 * time.Second); ; {
			left := time.Until(deadline)
			if left <= 0 {
				t.Fatalf("the status line never said %q (absent %v)", want, absent)
			}
			f := sdnotify.Fields(sock.Next(t, left))
			if st, ok := f["STATUS"]; ok && strings.Contains(st, want) != absent {
				return
			}
		}
	}
	reload := func(text []byte, logged string) {
		t.Helper()
		n := strings.Count(s.log.String(), logged)
		os.WriteFile(config, text, 0o600)
		s.cmd.Process.Signal(syscall.SIGHUP)
		for deadline := time.Now().Add(20 * time.Second); strings.Count(s.log.String(), logged) == n; time.Sleep(20 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("log never showed %q", logged)
			}
		}
	}

	// wantMetric waits for the metric to say want: the reload logs what
	// it did before the server notes whether it failed.
	wantMetric := func(want float64, after string) {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); metric(t, addr, series) != want; time.Sleep(20 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Errorf("%s = %v after %s, want %v", series, metric(t, addr, series), after, want)
				return
			}
		}
	}

	// A typo: nothing applied.
	reload(append(append([]byte(nil), good...), "push_deadline = \"soon\"\n"...), "configuration not reloaded")
	wantMetric(0, "a reload whose file has problems")
	waitStatus("last reload failed", false)

	// Fixed: applied in full.
	reload(append(append([]byte(nil), good...), "push_deadline = \"4s\"\n"...), "reload: applied")
	wantMetric(1, "a reload applied in full")
	waitStatus("last reload failed", true)

	// A key that does not load: the file loads, the app keeps its old
	// backend.
	broken := filepath.Join(dir, "broken.p8")
	os.WriteFile(broken, []byte("-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n"), 0o600)
	reload(fmt.Appendf(nil, "data_dir = %q\nrate_limit = 0\n[http]\nlisten = %q\n%s", filepath.Join(dir, "data"), addr, am.AppConfig("ios", broken)), "not applied, the running setting stays")
	wantMetric(0, "a reload that left a broken key unapplied")
	waitStatus("last reload failed", false)
	s.stop(t)
}
