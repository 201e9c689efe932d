package main

import (
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/push-appserver/push-appserver/internal/testutil/pgtest"
)

// A failover seen from an instance whose address still leads to the
// standby (stale DNS, a load balancer not switched yet): it starts
// there, pushes to the registrations the standby holds, answers
// registrations with an error and says the registry is read-only; once
// the standby is promoted (the old primary gone), it registers again
// and says the registry is up, without a restart.
func TestFailoverToHotStandby(t *testing.T) {
	bin := buildBinary(t)
	primary := pgtest.New()
	t.Cleanup(primary.Stop)
	dsn := pgtest.DurableDSN(primary.DB(t))
	t.Setenv("PUSH_APPSERVER_DSN", dsn)
	addr, config := postgresConfig(t)
	s := startServer(t, bin, config)
	s.waitHealthy(t, addr)
	secret := s.registerTo(t, "apns", "n1", "ab12")
	s.stop(t)

	standby := primary.Standby(t)
	t.Setenv("PUSH_APPSERVER_DSN", standby.DSN(dsn))
	s = startServer(t, bin, config)
	s.waitHealthy(t, addr)
	wait := func(what string, ok func() bool) {
		t.Helper()
		for deadline := time.Now().Add(20 * time.Second); !ok(); time.Sleep(50 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("after 20 s: %s", what)
			}
		}
	}
	wait("the health page does not say the registry is read-only", func() bool {
		return strings.Contains(s.get(t, "health"), "registry: read-only\n")
	})
	if body := s.post(t, "push", url.Values{"node": {"n1"}, "secret": {secret}}); body != "OK\nn1" {
		t.Fatalf("push through the standby: %q", body)
	}
	if body := s.post(t, "register", url.Values{"type": {"apns"}, "node": {"n2"}, "token": {"cd34"}}); !strings.HasPrefix(body, "ERROR\n") {
		t.Fatalf("registration on the standby: %q", body)
	}

	primary.Down(t)
	standby.Promote(t)
	var last string
	wait("registrations still fail after the promotion", func() bool {
		last = s.post(t, "register", url.Values{"type": {"apns"}, "node": {"n2"}, "token": {"cd34"}})
		return strings.HasPrefix(last, "OK\n")
	})
	wait("the health page does not say the registry is up", func() bool {
		return strings.Contains(s.get(t, "health"), "registry: up\n")
	})
	if body := s.post(t, "push", url.Values{"node": {"n1"}, "secret": {secret}}); body != "OK\nn1" {
		t.Fatalf("push after the promotion: %q", body)
	}
	s.stop(t)
}
