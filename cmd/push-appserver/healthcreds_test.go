package main

import (
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
)

// health returns the server's health page.
func (s *server) health(t *testing.T) string {
	t.Helper()
	resp, err := http.Get(s.base + "health")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestHealthShowsRefusedCredentials: while an app's push service refuses
// its credentials (a revoked APNS key), every push of the app fails; the
// health page, which `systemctl status` follows, says the app is down
// rather than up, and up again once the service takes its pushes again.
func TestHealthShowsRefusedCredentials(t *testing.T) {
	am, _, keyFile, _ := startMocks(t, t.TempDir())
	s := startWithApps(t, am.AppConfig("ios", keyFile))
	s.waitFor(t, "the accepted credentials not in the metrics", func() bool {
		return s.credentials(t, "ios") == `push_appserver_app_credentials_accepted{app="ios"} 1`
	})
	if h := s.health(t); !strings.Contains(h, "app ios: up\n") {
		t.Fatalf("health with the credentials taken:\n%s", h)
	}
	secret := s.registerTo(t, "ios", "n1", strings.Repeat("0b", 32))
	push := func() string { return s.post(t, "push", url.Values{"node": {"n1"}, "secret": {secret}}) }

	am.Revoke(true)
	if got := push(); strings.HasPrefix(got, "OK") {
		t.Fatalf("push with a revoked key: %q", got)
	}
	s.waitFor(t, "the refusal not in the metrics", func() bool {
		return s.credentials(t, "ios") == `push_appserver_app_credentials_accepted{app="ios"} 0`
	})
	if h := s.health(t); !strings.Contains(h, "app ios: down") {
		t.Errorf("health while every push of the app is refused for its key:\n%s", h)
	}
	// The instance stays ready: every instance shares the app's
	// configuration, and a load balancer that took them all out would
	// refuse the registrations and other apps' pushes too.
	if r := s.get(t, "ready"); r != "READY\n" {
		t.Errorf("ready while the app's credentials are refused: %q", r)
	}

	am.Revoke(false)
	s.waitFor(t, "the held push not sent once the key is taken again", func() bool { return am.Accepted() >= 1 })
	// The mock counts the held push before the server has read its
	// answer; until then the app's other pushes still wait for it.
	s.waitFor(t, "the held push's success not in the metrics", func() bool {
		return s.credentials(t, "ios") == `push_appserver_app_credentials_accepted{app="ios"} 1`
	})
	if got := push(); got != "OK\nn1" {
		t.Fatalf("push once the key is taken again: %q", got)
	}
	s.waitFor(t, "the health page not up again", func() bool {
		return strings.Contains(s.health(t), "app ios: up\n")
	})
}

// TestCredentialsBackWhenHeldPushGoesThrough: once the push service takes
// the app's credentials again, the push held meanwhile, which tries them,
// goes through, and the credentials gauge (PushAppserverCredentialsRefused
// alerts on its 0) and the health page say so at once: before, they said
// refused until a new push of the app came, which for a quiet app could
// be hours of an alert for a refusal that was over.
func TestCredentialsBackWhenHeldPushGoesThrough(t *testing.T) {
	am, _, keyFile, _ := startMocks(t, t.TempDir())
	s := startWithApps(t, am.AppConfig("ios", keyFile))
	s.waitFor(t, "the accepted credentials not in the metrics", func() bool {
		return s.credentials(t, "ios") == `push_appserver_app_credentials_accepted{app="ios"} 1`
	})
	secret := s.registerTo(t, "ios", "n1", strings.Repeat("0b", 32))
	am.Revoke(true)
	if got := s.post(t, "push", url.Values{"node": {"n1"}, "secret": {secret}}); strings.HasPrefix(got, "OK") {
		t.Fatalf("push with a revoked key: %q", got)
	}
	s.waitFor(t, "the refusal not in the metrics", func() bool {
		return s.credentials(t, "ios") == `push_appserver_app_credentials_accepted{app="ios"} 0`
	})
	am.Revoke(false)
	s.waitFor(t, "the held push not sent once the key is taken again", func() bool { return am.Accepted() >= 1 })
	s.waitFor(t, "the gauge still 0 after the held push went through", func() bool {
		return s.credentials(t, "ios") == `push_appserver_app_credentials_accepted{app="ios"} 1`
	})
	if h := s.health(t); !strings.Contains(h, "app ios: up\n") {
		t.Errorf("health once the held push went through:\n%s", h)
	}
}
