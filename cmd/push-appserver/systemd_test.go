package main

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/push-appserver/push-appserver/internal/httpapi"
	"github.com/push-appserver/push-appserver/internal/testutil/sdnotify"
)

// TestSystemdNotify runs the binary as systemd runs a Type=notify unit:
// it says READY=1 only once the HTTP API answers, brackets a SIGHUP
// reload with RELOADING=1 and READY=1, and says STOPPING=1 on SIGTERM
// before it exits cleanly.
func TestSystemdNotify(t *testing.T) {
	bin := buildBinary(t)
	_, addr, config := minimalConfig(t)
	sock := sdnotify.Listen(t)
	s := startServerEnv(t, bin, config, "NOTIFY_SOCKET="+sock.Path)

	f := sdnotify.Fields(sock.Next(t, 20*time.Second))
	if f["READY"] != "1" || f["STATUS"] != "serving" {
		t.Fatalf("first message: %v", f)
	}
	// Ready means ready: the API answers at once, without retrying.
	resp, err := http.Get("http://" + addr + "/push_appserver/v1/ready")
	if err != nil {
		t.Fatalf("READY=1 sent before the API listens: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("ready page after READY=1: %s", resp.Status)
	}

	s.cmd.Process.Signal(syscall.SIGHUP)
	if f := sdnotify.Fields(sock.Next(t, 10*time.Second)); f["RELOADING"] != "1" || f["MONOTONIC_USEC"] == "" {
		t.Fatalf("on SIGHUP: %v", f)
	}
	if f := sdnotify.Fields(sock.Next(t, 10*time.Second)); f["READY"] != "1" {
		t.Fatalf("after the reload: %v", f)
	}

	s.stopWith(t, syscall.SIGTERM)
	if f := sdnotify.Fields(sock.Next(t, time.Second)); f["STOPPING"] != "1" || !strings.HasPrefix(f["STATUS"], "stopping") {
		t.Fatalf("on SIGTERM: %v", f)
	}
}

// TestSystemdStatusNamesWhatIsDown: the status line systemd shows names
// a component whose XMPP server is not there, as the health page does.
func TestSystemdStatusNamesWhatIsDown(t *testing.T) {
	bin := buildBinary(t)
	_, _, config := minimalConfig(t)
	addAbsentComponent(t, config)
	sock := sdnotify.Listen(t)
	startServerEnv(t, bin, config, "NOTIFY_SOCKET="+sock.Path)
	msg := sdnotify.Fields(sock.Next(t, 20*time.Second))
	if msg["READY"] != "1" || msg["STATUS"] != "serving; down: component push.example.org" {
		t.Fatalf("first message: %v", msg)
	}
}

// TestSystemdNotReadyWhenStartFails: a server that cannot listen on
// every address it is given exits without ever saying READY=1, so
// systemd fails the start rather than report a server that is not there.
func TestSystemdNotReadyWhenStartFails(t *testing.T) {
	bin := buildBinary(t)
	_, _, config := minimalConfig(t)
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	// The metrics listener is the last to start.
	body, err := os.ReadFile(config)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(config, append([]byte(fmt.Sprintf("metrics_listen = %q\n", taken.Addr().String())), body...), 0o600); err != nil {
		t.Fatal(err)
	}
	sock := sdnotify.Listen(t)
	s := startServerEnv(t, bin, config, "NOTIFY_SOCKET="+sock.Path)
	done := make(chan error, 1)
	go func() { done <- s.cmd.Wait() }()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("server started on an address in use")
		}
	case <-time.After(20 * time.Second):
		t.Fatal("server did not exit")
	}
	sock.Quiet(t, 200*time.Millisecond)
}

// The status line names what the health page calls down: a component
// standing by for another instance is not.
func TestServiceStatusStandingBy(t *testing.T) {
	yes, no := func() bool { return true }, func() bool { return false }
	checks := []httpapi.Check{
		{Name: "component a.example.org", OK: no, StandingBy: yes},
		{Name: "component b.example.org", OK: no, StandingBy: no},
		{Name: "registry", OK: yes, HealthOnly: true},
	}
	if got, want := serviceStatus(checks, false), "serving; down: component b.example.org"; got != want {
		t.Fatalf("status %q, want %q", got, want)
	}
}
