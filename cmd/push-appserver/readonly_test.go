package main

import (
	"context"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/push-appserver/push-appserver/internal/testutil/pgtest"
)

// A registry that answers reads but refuses every write (SQLSTATE
// 25006: a DBA's default_transaction_read_only during maintenance, or
// an address still leading to the old primary, now a standby) fails
// every registration while pushes go on: the health page says so,
// `registry: read-only`, rather than `registry: up`, and `up` again once
// the database takes writes.
func TestHealthSaysRegistryReadOnly(t *testing.T) {
	bin := buildBinary(t)
	// A server of its own: the test turns the whole server read-only.
	own := pgtest.New()
	t.Cleanup(own.Stop)
	dsn := own.DB(t)
	t.Setenv("PUSH_APPSERVER_DSN", dsn)
	addr, config := postgresConfig(t)
	s := startServer(t, bin, config)
	s.waitHealthy(t, addr)
	secret := s.registerTo(t, "apns", "n1", "ab12")
	if h := s.get(t, "health"); !strings.Contains(h, "registry: up\n") {
		t.Fatalf("health before: %q", h)
	}

	ctx := context.Background()
	c, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(ctx) }) // after the cleanup below
	set := func(value string) {
		t.Helper()
		for _, q := range []string{`ALTER SYSTEM SET default_transaction_read_only = ` + value, `SELECT pg_reload_conf()`} {
			if _, err := c.Exec(ctx, q); err != nil {
				t.Fatal(err)
			}
		}
	}
	set("on")
	t.Cleanup(func() { set("off") })
	waitUntil := func(what string, ok func() bool) {
		t.Helper()
		for deadline := time.Now().Add(15 * time.Second); !ok(); time.Sleep(50 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("15 s after the database turned read-only: %s", what)
			}
		}
	}
	waitUntil("registrations still stored", func() bool {
		return strings.HasPrefix(s.post(t, "register", url.Values{"type": {"apns"}, "node": {"n2"}, "token": {"cd34"}}), "ERROR\n")
	})
	if body := s.post(t, "push", url.Values{"node": {"n1"}, "secret": {secret}}); body != "OK\nn1" {
		t.Fatalf("push while the registry is read-only: %q", body)
	}
	var health string
	waitUntil("the health page still does not say the registry is read-only", func() bool {
		health = s.get(t, "health")
		return strings.Contains(health, "registry: read-only\n")
	})
	set("off")
	waitUntil("the health page does not say the registry is up again", func() bool {
		return strings.Contains(s.get(t, "health"), "registry: up\n")
	})
	if body := s.post(t, "register", url.Values{"type": {"apns"}, "node": {"n2"}, "token": {"cd34"}}); !strings.HasPrefix(body, "OK\n") {
		t.Fatalf("registration once the database takes writes again: %q", body)
	}
	s.stop(t)
}
