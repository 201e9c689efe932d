package main

import (
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// getPage returns the status and body of a GET of the API page at addr.
func getPage(t *testing.T, addr, page string) (int, string) {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/push_appserver/v1/" + page)
	if err != nil {
		t.Fatalf("GET %s: %v", page, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestProbePages runs the binary with a component whose XMPP server is
// not there: the live page (the watchdog's check) says ALIVE, the ready
// page as before requires the component, and ready?require=http, for a
// load balancer in front of the HTTP API alone, does not.
func TestProbePages(t *testing.T) {
	bin := buildBinary(t)
	_, addr, config := minimalConfig(t)
	addAbsentComponent(t, config)
	s := startServer(t, bin, config)
	s.waitHealthy(t, addr)
	for _, tt := range []struct {
		page string
		code int
		body string
	}{
		{"live", 200, "ALIVE\n"},
		{"ready", 503, "NOT READY\ncomponent push.example.org: down\n"},
		{"ready?require=components", 503, "NOT READY\ncomponent push.example.org: down\n"},
		{"ready?require=http", 200, "READY\n"},
		{"ready?require=xmpp", 400, "ERROR\nrequire must be components or http"},
	} {
		if code, body := getPage(t, addr, tt.page); code != tt.code || body != tt.body {
			t.Errorf("%s: %d %q, want %d %q", tt.page, code, body, tt.code, tt.body)
		}
	}
	s.stop(t)
}

// TestShutdownDelay: with shutdown_delay, SIGTERM first takes the server
// out of readiness and serves everything else (a registration, the live
// and health pages) for that long, then stops cleanly, its PID file
// removed. Kubernetes removes a stopping pod from its Service's endpoints
// only as it signals it, and requests routed there meanwhile met closed
// listeners.
func TestShutdownDelay(t *testing.T) {
	bin := buildBinary(t)
	dir, addr, config := minimalConfig(t)
	// Long beside the few loopback requests made within it.
	const delay = 5 * time.Second
	text, _ := os.ReadFile(config)
	os.WriteFile(config, append([]byte(fmt.Sprintf("shutdown_delay = %q\n", delay)), text...), 0o600)
	s := startServer(t, bin, config)
	s.waitHealthy(t, addr)
	if code, body := getPage(t, addr, "ready?require=http"); code != 200 {
		t.Fatalf("ready before the stop: %d %q", code, body)
	}
	pidPath := filepath.Join(dir, "data", pidFileName)
	if pid, err := readPIDFile(pidPath); err != nil || pid != s.cmd.Process.Pid {
		t.Fatalf("PID file: %d %v, want %d", pid, err, s.cmd.Process.Pid)
	}
	signalled := time.Now()
	s.cmd.Process.Signal(syscall.SIGTERM)
	for deadline := time.Now().Add(delay); ; {
		code, body := getPage(t, addr, "ready?require=http")
		if code == 503 {
			if body != "NOT READY\nshutting down\n" {
				t.Fatalf("ready while stopping: %q", body)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("ready still %d %q after SIGTERM", code, body)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// A new connection for each, as a client the load balancer sends
	// meanwhile makes.
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := client.PostForm(s.base+"register", url.Values{"type": {"apns"}, "node": {"late"}, "token": {"t"}})
	if err != nil {
		t.Fatalf("register while stopping: %v", err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.HasPrefix(string(b), "OK\nlate\n") {
		t.Fatalf("register while stopping: %q", b)
	}
	if code, body := getPage(t, addr, "live"); code != 200 || body != "ALIVE\n" {
		t.Fatalf("live while stopping: %d %q", code, body)
	}
	if code, body := getPage(t, addr, "health"); code != 200 || !strings.HasPrefix(body, "RUNNING\n") {
		t.Fatalf("health while stopping: %d %q", code, body)
	}
	if err := s.cmd.Wait(); err != nil {
		t.Fatalf("exit: %v", err)
	}
	if took := time.Since(signalled); took < delay {
		t.Fatalf("stopped %v after SIGTERM, before shutdown_delay (%v)", took, delay)
	}
	if !strings.Contains(s.log.String(), "stopping after shutdown_delay") || !strings.Contains(s.log.String(), "stopped") {
		t.Fatalf("log:\n%s", s.log.String())
	}
	if _, err := os.Stat(pidPath); !os.IsNotExist(err) {
		t.Fatalf("PID file after the stop: %v", err)
	}
}
