package main

import (
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/push-appserver/push-appserver/internal/testutil/connectproxy"
)

// A server whose only way out is an egress proxy, named by HTTPS_PROXY
// as for any Go program, pushes through it: APNS is reached as
// example.com, a name only the proxy resolves.
func TestPushThroughEgressProxy(t *testing.T) {
	bin := buildBinary(t)
	dir := t.TempDir()
	am, _, keyFile, _ := startMocks(t, dir)
	mockAddr := strings.TrimPrefix(am.URL, "https://")
	_, port, _ := net.SplitHostPort(mockAddr)
	name := net.JoinHostPort("example.com", port)
	proxy := connectproxy.Start(t, connectproxy.Options{User: "push", Password: "proxy-secret", Route: map[string]string{name: mockAddr}})

	addr := freePort(t)
	config := filepath.Join(dir, "c.toml")
	app := strings.Replace(am.AppConfig("ios", keyFile), am.URL, "https://"+name, 1)
	text := fmt.Sprintf("data_dir = %q\nrate_limit = 0\n[http]\nlisten = %q\n%s", filepath.Join(dir, "data"), addr, app)
	if err := os.WriteFile(config, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	s := startServerEnv(t, bin, config, "HTTPS_PROXY="+proxy.URL.String(), "NO_PROXY=")
	s.waitHealthy(t, addr)
	reg := strings.Split(s.post(t, "register", url.Values{"type": {"ios"}, "node": {"n1"}, "token": {strings.Repeat("0a", 32)}}), "\n")
	if reg[0] != "OK" || len(reg) != 3 {
		t.Fatalf("register: %q", reg)
	}
	if got := s.post(t, "push", url.Values{"node": {"n1"}, "secret": {reg[2]}}); got != "OK\nn1" {
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
