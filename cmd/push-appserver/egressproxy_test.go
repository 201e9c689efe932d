package main

import (
	"net"
	"net/url"
	"strings"
	"testing"

	"github.com/push-appserver/push-appserver/internal/testutil/connectproxy"
)

// A server whose only way out is an egress proxy, named by HTTPS_PROXY
// as for any Go program, pushes through it: APNS is reached as
// example.com, a name only the proxy resolves.
func TestPushThroughEgressProxy(t *testing.T) {
	am, _, keyFile, _ := startMocks(t, t.TempDir())
	mockAddr := strings.TrimPrefix(am.URL, "https://")
	_, port, _ := net.SplitHostPort(mockAddr)
	name := net.JoinHostPort("example.com", port)
	proxy := connectproxy.Start(t, connectproxy.Options{User: "push", Password: "proxy-secret", Route: map[string]string{name: mockAddr}})

	app := strings.Replace(am.AppConfig("ios", keyFile), am.URL, "https://"+name, 1)
	s := startWithApps(t, app, "HTTPS_PROXY="+proxy.URL.String(), "NO_PROXY=")
	secret := s.registerTo(t, "ios", "n1", strings.Repeat("0a", 32))
	if got := s.post(t, "push", url.Values{"node": {"n1"}, "secret": {secret}}); got != "OK\nn1" {
		t.Fatalf("push: %q", got)
	}
	if got := proxy.Tunnels(); len(got) != 1 || got[0] != name {
		t.Fatalf("tunnels %q, want one to %s", got, name)
	}
	if am.Accepted() != 1 {
		t.Fatalf("APNS accepted %d pushes", am.Accepted())
	}
	if strings.Contains(s.log.String(), "proxy-secret") {
		t.Errorf("the proxy's password in the log:\n%s", s.log)
	}
}
