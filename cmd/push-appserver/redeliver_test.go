package main

import (
	"bytes"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/push-appserver/push-appserver/internal/testutil/apnsmock"
	"github.com/push-appserver/push-appserver/internal/testutil/daemon"
)

// TestRedeliveryAfterAPNSOutage runs the binary against the APNS mock
// answering 503 for a while: the push is answered "ERROR" (the user's
// server would hear "wait"). The server is restarted meanwhile, as an
// operator might do about failing pushes; once APNS takes pushes again
// the device gets the push all the same, once.
func TestRedeliveryAfterAPNSOutage(t *testing.T) {
	bin := buildBinary(t)
	am, addr, config := apnsConfig(t)
	s := startServer(t, bin, config)
	s.waitHealthy(t, addr)
	token := pushDuringOutage(t, s, am)
	if am.Accepted() != 0 {
		t.Fatal("APNS accepted a push while answering 503")
	}
	s.stop(t)
	if !strings.Contains(s.log.String(), "kept in the registry") {
		t.Fatalf("the waiting push was not kept at the stop:\n%s", s.log.String())
	}
	am.Reset() // APNS is back
	s = startServer(t, bin, config)
	s.waitHealthy(t, addr)

	deadline := time.Now().Add(20 * time.Second)
	for am.Accepted() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the push never reached APNS once it was back")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if reqs := am.Requests(); len(reqs) != 1 || reqs[0].Token != token {
		t.Fatalf("APNS got %+v", reqs)
	}
	// The mock counts the push before the server has read its answer.
	for metric(t, addr, `push_appserver_redeliveries_total{outcome="delivered"}`) != 1 || metric(t, addr, "push_appserver_redelivery_pending") != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("delivered %v, pending %v", metric(t, addr, `push_appserver_redeliveries_total{outcome="delivered"}`), metric(t, addr, "push_appserver_redelivery_pending"))
		}
		time.Sleep(50 * time.Millisecond)
	}
	// Nothing was dropped, and the app's drops are exported from the
	// start, so that the first one shows as an increase.
	if d := metric(t, addr, `push_appserver_redelivery_dropped_total{app="ios",reason="no_room"}`); d != 0 {
		t.Fatalf("ios pushes dropped for want of room: %v", d)
	}
	time.Sleep(time.Second)
	if n := am.Total(); n != 1 {
		t.Fatalf("APNS got %d requests after it took the push", n)
	}
	s.stop(t)
}

// TestRedeliveryAfterCrash: a push waiting for redelivery outlives a
// server killed without a chance to hold it (SIGKILL, as the OOM killer
// or the watchdog would): it was written to the registry as it was kept,
// and the next server sends it once the dead one's lease has run out.
func TestRedeliveryAfterCrash(t *testing.T) {
	bin := buildBinary(t)
	am, addr, config := apnsConfig(t)
	s := startServer(t, bin, config)
	s.waitHealthy(t, addr)
	token := pushDuringOutage(t, s, am)
	killed := killKeeping(s, am)
	s = startServer(t, bin, config)
	s.waitHealthy(t, addr)
	sentOnceAfterKill(t, am, token, killed)
	s.stop(t)
}

// TestRedeliveryOfPushAnsweredJustBeforeKill guards the promise behind a
// push answered as failed for a temporary reason (an outage of the push
// service: the XMPP server hears wait and does not send it again): it is
// kept for redelivery in the registry before it is answered, so a server
// killed right after the answer (kill -9, the OOM killer) loses it not,
// and the next server sends it once the push service is back.
func TestRedeliveryOfPushAnsweredJustBeforeKill(t *testing.T) {
	bin := buildBinary(t)
	am, addr, config := apnsConfig(t)
	s := startServer(t, bin, config)
	s.waitHealthy(t, addr)
	token := pushDuringOutage(t, s, am)
	// Killed as soon as the answer came.
	s.cmd.Process.Kill()
	s.cmd.Wait()
	am.Reset()
	killed := time.Now()
	s = startServer(t, bin, config)
	s.waitHealthy(t, addr)
	sentOnceAfterKill(t, am, token, killed)
	s.stop(t)
}

// killKeeping kills s (kill -9) once the push it keeps for redelivery has
// been written to the registry, within a tick (a second) of being kept,
// and has APNS take pushes again. It returns when s died.
func killKeeping(s *server, am *apnsmock.Server) (killed time.Time) {
	time.Sleep(2500 * time.Millisecond)
	s.cmd.Process.Kill()
	s.cmd.Wait()
	am.Reset()
	return time.Now()
}

// sentOnceAfterKill waits for the push to token that a server killed at
// killed kept to reach APNS, sent by another, and checks that it came
// once: after the lease (10 s), a look for released pushes (every 10 s)
// and the first attempt's backoff (up to 5 s).
func sentOnceAfterKill(t *testing.T, am *apnsmock.Server, token string, killed time.Time) {
	t.Helper()
	for deadline := time.Now().Add(45 * time.Second); am.Accepted() == 0; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the push kept by the killed server never reached APNS")
		}
	}
	t.Logf("sent %v after the kill", time.Since(killed).Round(time.Millisecond))
	time.Sleep(500 * time.Millisecond)
	if reqs := am.Requests(); len(reqs) != 1 || reqs[0].Token != token {
		t.Fatalf("APNS got %+v", reqs)
	}
}

// TestRedeliveryCrossesUpgrade: a push waiting for redelivery when the
// server is upgraded in place passes through the registry to the new
// process, which takes it as soon as the old one has gone (it hears of
// it through the upgrade's pipe), not at its next look 10 s later, and
// sends it once APNS takes pushes again.
func TestRedeliveryCrossesUpgrade(t *testing.T) {
	bin := buildBinary(t)
	am, addr, config := apnsConfig(t)
	u := daemon.StartUpgradable(t, exec.Command(bin, "serve", "-config", config), 20*time.Second)
	s := &server{}
	s.waitHealthy(t, addr)
	pushDuringOutage(t, s, am)

	old := u.PID
	syscall.Kill(old, syscall.SIGUSR2)
	if !daemon.WaitExited(old, 20*time.Second) {
		t.Fatal("the old process did not exit after the upgrade")
	}
	gone := time.Now()
	pids := startedPIDs(u.Log())
	if len(pids) != 2 {
		t.Fatalf("%d processes started, want 2", len(pids))
	}
	u.PID = pids[1]
	for !strings.Contains(u.Log(), "pushes held for redelivery taken from the registry") {
		if time.Since(gone) > 5*time.Second {
			t.Fatal("the new process did not take the held push within 5 s of the old one's exit")
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("the new process took the held push %v after the old one exited", time.Since(gone).Round(time.Millisecond))
	am.Reset() // APNS is back
	for deadline := time.Now().Add(20 * time.Second); am.Accepted() == 0; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the push never reached APNS once it was back")
		}
	}
	time.Sleep(500 * time.Millisecond)
	if n := am.Total(); n != 1 {
		t.Fatalf("APNS got %d requests after it was back, want 1", n)
	}
}

// apnsConfig writes a configuration whose app ios pushes to an APNS mock
// with a deadline of a second, and returns the mock, the HTTP API's
// address and the file.
func apnsConfig(t *testing.T) (am *apnsmock.Server, addr, config string) {
	t.Helper()
	dir := t.TempDir()
	am, _, keyFile, _ := startMocks(t, dir)
	addr = freePort(t)
	config = filepath.Join(dir, "c.toml")
	if err := os.WriteFile(config, fmt.Appendf(nil, "data_dir = %q\nrate_limit = 0\n[http]\nlisten = %q\n%spush_deadline = \"1s\"\n",
		filepath.Join(dir, "data"), addr, am.AppConfig("ios", keyFile)), 0o600); err != nil {
		t.Fatal(err)
	}
	return am, addr, config
}

// pushDuringOutage registers node n1 of app ios, has APNS answer 503 to
// its token until am.Reset, and pushes to it once: the push fails, and
// is kept for redelivery. It returns the token.
func pushDuringOutage(t *testing.T, s *server, am *apnsmock.Server) string {
	t.Helper()
	token := strings.Repeat("5e", 32)
	reg := strings.Split(s.post(t, "register", url.Values{"type": {"ios"}, "node": {"n1"}, "token": {token}}), "\n")
	if reg[0] != "OK" {
		t.Fatalf("register: %q", reg)
	}
	down := make([]apnsmock.Fault, 1000)
	for i := range down {
		down[i] = apnsmock.Fault{Status: 503, Reason: "ServiceUnavailable"}
	}
	am.FailToken(token, down...)
	if got := s.post(t, "push", url.Values{"node": {"n1"}, "secret": {reg[2]}}); !strings.HasPrefix(got, "ERROR") {
		t.Fatalf("push while APNS answers 503: %q", got)
	}
	return token
}

// TestPushToAppLeftOutAnsweredJustBeforeKill: a push to a device whose
// app a restart left out of the configuration (renamed or removed by
// mistake) is kept for redelivery, as the README promises, in the
// registry before it is answered: killed right after its answer, the
// server loses it not, and the next start, with the app back, sends it.
func TestPushToAppLeftOutAnsweredJustBeforeKill(t *testing.T) {
	bin := buildBinary(t)
	am, addr, config := apnsConfig(t)
	withApp, err := os.ReadFile(config)
	if err != nil {
		t.Fatal(err)
	}
	s := startServer(t, bin, config)
	s.waitHealthy(t, addr)
	token := strings.Repeat("6f", 32)
	reg := strings.Split(s.post(t, "register", url.Values{"type": {"ios"}, "node": {"n1"}, "token": {token}}), "\n")
	if reg[0] != "OK" {
		t.Fatalf("register: %q", reg)
	}
	s.stop(t)
	// The app left out: data_dir and the listener alone.
	without := bytes.SplitN(withApp, []byte("[apps."), 2)[0]
	if err := os.WriteFile(config, without, 0o600); err != nil {
		t.Fatal(err)
	}
	s = startServer(t, bin, config)
	s.waitHealthy(t, addr)
	if got := s.post(t, "push", url.Values{"node": {"n1"}, "secret": {reg[2]}}); !strings.HasPrefix(got, "ERROR") {
		t.Fatalf("push to a device of an app left out: %q", got)
	}
	s.cmd.Process.Kill()
	s.cmd.Wait()
	killed := time.Now()
	if err := os.WriteFile(config, withApp, 0o600); err != nil {
		t.Fatal(err)
	}
	s = startServer(t, bin, config)
	s.waitHealthy(t, addr)
	sentOnceAfterKill(t, am, token, killed)
	s.stop(t)
}
