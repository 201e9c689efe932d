package main

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/push-appserver/push-appserver/internal/registry/sqlite"
	"github.com/push-appserver/push-appserver/internal/testutil/apnsmock"
)

// waitPushedOnce waits until the registry records a successful push to
// node (the status is written behind the push).
func waitPushedOnce(t *testing.T, db, node string) {
	t.Helper()
	store, err := sqlite.Open(context.Background(), db)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		r, err := store.Get(context.Background(), node)
		if err != nil {
			t.Fatal(err)
		}
		if !r.LastSuccessfulPush.IsZero() {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the push to %s was never recorded", node)
		}
	}
}

// TestEnvironmentSwitchKeepsDevicesThatWorked guards the registrations
// of devices whose token took pushes, when a reload points a production
// APNS app at the sandbox by mistake and a developer's sandbox device
// gets a few pushes through there: Apple then answers BadDeviceToken for
// every production token, which says nothing against a token that took a
// push since it was registered (a token Apple stopped taking is answered
// 410 Unregistered). Those answers are the configuration's fault, so the
// registration is kept and the user's server hears wait, however many
// pushes the developer's device got.
func TestEnvironmentSwitchKeepsDevicesThatWorked(t *testing.T) {
	bin := buildBinary(t)
	dir := t.TempDir()
	am, _, keyFile, _ := startMocks(t, dir)
	addr := freePort(t)
	db := filepath.Join(dir, "data", "registry.db")
	config := filepath.Join(dir, "c.toml")
	write := func(sandbox bool) {
		os.WriteFile(config, fmt.Appendf(nil, `data_dir = %q
rate_limit = 0
[http]
listen = %q
%ssandbox = %v
push_deadline = "3s"
`, filepath.Join(dir, "data"), addr, am.AppConfig("ios", keyFile), sandbox), 0o600)
	}
	write(false)
	s := startServer(t, bin, config)
	s.waitHealthy(t, addr)

	// Three users of the production app, each pushed to once.
	users := []string{"user-1", "user-2", "user-3"}
	token := func(i int) string { return fmt.Sprintf("%064x", 0xa0+i) }
	secrets := map[string]string{}
	for i, node := range users {
		secrets[node] = s.registerTo(t, "ios", node, token(i))
		if got := s.pushTo(t, node, secrets[node]); got != "OK\n"+node {
			t.Fatalf("push to %s: %q", node, got)
		}
	}
	for _, node := range users {
		waitPushedOnce(t, db, node)
	}

	// The mistake: the app now talks to the sandbox, which refuses
	// every production token.
	write(true)
	applied := strings.Count(s.log.String(), "reload: applied")
	s.cmd.Process.Signal(syscall.SIGHUP)
	for deadline := time.Now().Add(20 * time.Second); strings.Count(s.log.String(), "reload: applied") == applied; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("reload not applied:\n%s", s.log.String())
		}
	}
	for i := range users {
		bad := make([]apnsmock.Fault, 20)
		for j := range bad {
			bad[j] = apnsmock.Fault{Status: 400, Reason: "BadDeviceToken"}
		}
		am.FailToken(token(i), bad...)
	}
	// A developer's phone, its token of the sandbox, takes a few pushes.
	dev := s.registerTo(t, "ios", "developer", strings.Repeat("d", 64))
	for range 5 {
		if got := s.pushTo(t, "developer", dev); got != "OK\ndeveloper" {
			t.Fatalf("push to the developer's sandbox token: %q", got)
		}
	}
	for _, node := range users {
		if got := s.pushTo(t, node, secrets[node]); got != "ERROR\nInternal server error!" {
			t.Errorf("push to %s, whose token took a push before the reload: %q, want the wait of an internal error", node, got)
		}
	}
	s.stop(t)
	if left := survivors(t, db, users); left != len(users) {
		t.Errorf("%d of %d registrations left after the app was pointed at the wrong environment", left, len(users))
	}
}

// pushTo pushes to node over the HTTP API and returns the answer.
func (s *server) pushTo(t *testing.T, node, secret string) string {
	t.Helper()
	return s.post(t, "push", url.Values{"node": {node}, "secret": {secret}})
}
