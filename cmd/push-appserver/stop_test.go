package main

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/push-appserver/push-appserver/internal/config"
	"github.com/push-appserver/push-appserver/internal/testutil/apnsmock"
	"github.com/push-appserver/push-appserver/internal/testutil/logbuf"
)

// serve, told to stop, closes the apps' connections to their push
// services once the pushes under way have ended: a process that runs it
// and goes on keeps none of them, nor their goroutines, where the
// clients would have kept them until they idled out (ten minutes).
func TestServeClosesBackendsAtStop(t *testing.T) {
	dir := t.TempDir()
	am, fm, keyFile, account := startMocks(t, dir)
	addr := freePort(t)
	path := filepath.Join(dir, "c.toml")
	text := fmt.Sprintf("data_dir = %q\nrate_limit = 0\n[http]\nlisten = %q\n%s[apps.android]\nkind = \"fcm\"\nservice_account_file = %q\nendpoint = %q\nca_path = %q\n",
		filepath.Join(dir, "data"), addr, am.AppConfig("ios", keyFile), account, fm.URL, fm.CADir)
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s := &server{log: &logbuf.Buffer{}}
	served := make(chan error, 1)
	go func() {
		served <- serve(ctx, cfg, s.log, signals{}, func(context.Context) (*config.Config, error) { return config.Load(path) })
	}()
	s.waitHealthy(t, addr)
	for _, app := range []struct{ typ, token string }{{"ios", strings.Repeat("0a", 32)}, {"android", "fcm-token"}} {
		reg := strings.Split(s.post(t, "register", url.Values{"type": {app.typ}, "node": {app.typ}, "token": {app.token}}), "\n")
		if reg[0] != "OK" || len(reg) != 3 {
			t.Fatalf("register %s: %q", app.typ, reg)
		}
		if got := s.post(t, "push", url.Values{"node": {app.typ}, "secret": {reg[2]}}); got != "OK\n"+app.typ {
			t.Fatalf("push %s: %q", app.typ, got)
		}
	}
	if am.OpenConnections() == 0 || fm.OpenConnections() == 0 {
		t.Fatalf("%d connections open to APNS and %d to FCM after a push to each", am.OpenConnections(), fm.OpenConnections())
	}
	cancel()
	if err := <-served; err != nil {
		t.Fatalf("serve: %v\n%s", err, s.log)
	}
	for deadline := time.Now().Add(10 * time.Second); am.OpenConnections()+fm.OpenConnections() > 0; {
		if time.Now().After(deadline) {
			t.Fatalf("after the stop, %d connections still open to APNS and %d to FCM", am.OpenConnections(), fm.OpenConnections())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A second SIGTERM during a stop ends the process at once: the first
// waits for a push its service holds (up to the shutdown's grace), and
// whoever signals again does not want to wait for it.
func TestSecondSignalEndsStop(t *testing.T) {
	am, _, keyFile, _ := startMocks(t, t.TempDir())
	s := startWithApps(t, am.AppConfig("ios", keyFile)+"push_deadline = \"30s\"\n")
	secret := s.registerTo(t, "ios", "n1", strings.Repeat("0a", 32))
	am.FailNext(apnsmock.Fault{Delay: time.Minute})
	go http.PostForm(s.base+"push", url.Values{"node": {"n1"}, "secret": {secret}})
	for deadline := time.Now().Add(10 * time.Second); am.PendingFaults() > 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the push never reached APNS")
		}
	}
	exited := make(chan struct{})
	go func() { s.cmd.Wait(); close(exited) }()

	s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-exited:
		t.Fatal("the server stopped without waiting for the push its service holds")
	case <-time.After(time.Second):
	}
	s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(3 * time.Second):
		t.Fatal("a second SIGTERM did not end the stop")
	}
	if ws, ok := s.cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGTERM {
		t.Fatalf("server exited with %v, want killed by SIGTERM", s.cmd.ProcessState)
	}
	if !strings.Contains(s.log.String(), "a second SIGINT or SIGTERM ends the process at once") {
		t.Errorf("the log does not say what a second signal does:\n%s", s.log)
	}
}

// TestStopJoinsReload: serve, told to stop during a reload, returns only
// once the reload has ended, and the reload applies nothing after the
// stop: a reload left running would swap a backend in after serve closed
// them, and keep it. Here the reload's read does not heed the stop (as
// one of a file on a mount that hangs): serve waits for it, saying so,
// and returns once it ended.
func TestStopJoinsReload(t *testing.T) {
	_, addr, path := minimalConfig(t)
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s := &server{log: &logbuf.Buffer{}}
	hup := make(chan os.Signal, 1)
	entered, release := make(chan struct{}), make(chan struct{})
	var returned atomic.Bool
	load := func(context.Context) (*config.Config, error) {
		close(entered)
		<-release
		returned.Store(true)
		return config.Load(path)
	}
	served := make(chan error, 1)
	go func() { served <- serve(ctx, cfg, s.log, signals{reload: hup}, load) }()
	s.waitHealthy(t, addr)
	hup <- syscall.SIGHUP
	select {
	case <-entered:
	case <-time.After(10 * time.Second):
		t.Fatal("SIGHUP started no reload")
	}
	cancel()
	for !strings.Contains(s.log.String(), "waiting for the reload under way to end") {
		select {
		case err := <-served:
			close(release)
			t.Fatalf("serve returned (%v) while the reload it started still ran:\n%s", err, s.log)
		case <-time.After(10 * time.Millisecond):
		}
	}
	close(release)
	if err := <-served; err != nil {
		t.Fatalf("serve: %v\n%s", err, s.log)
	}
	if !returned.Load() {
		t.Fatal("serve returned before the reload's read")
	}
	if strings.Contains(s.log.String(), "reload: ") {
		t.Errorf("the reload was applied after the stop:\n%s", s.log)
	}
}

// TestStopWithoutReloadSaysNoneUnderWay: a stop with no reload under way
// says nothing of one. The warning that the stop waits for a reload is
// for an operator whose stop takes longer because of it; written at every
// stop (and at every hand-over of an upgrade), it names a wait that
// never was, and a log alert on warnings fires at each restart.
func TestStopWithoutReloadSaysNoneUnderWay(t *testing.T) {
	_, addr, path := minimalConfig(t)
	for i := range 5 {
		cfg, err := config.Load(path)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		s := &server{log: &logbuf.Buffer{}}
		served := make(chan error, 1)
		go func() {
			served <- serve(ctx, cfg, s.log, signals{}, func(context.Context) (*config.Config, error) { return config.Load(path) })
		}()
		s.waitHealthy(t, addr)
		cancel()
		if err := <-served; err != nil {
			t.Fatalf("serve: %v\n%s", err, s.log)
		}
		if log := s.log.String(); strings.Contains(log, "reload under way") {
			t.Fatalf("stop %d, with no reload started, speaks of one under way:\n%s", i+1, log)
		}
	}
}
