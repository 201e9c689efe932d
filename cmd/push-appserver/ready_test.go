package main

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/push-appserver/push-appserver/internal/testutil/prosody"
	"github.com/push-appserver/push-appserver/internal/testutil/xmppfake"
)

// waitReady polls the ready page until it answers code with a body
// containing want.
func waitReady(t *testing.T, addr string, code int, want string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	var last string
	for time.Now().Before(deadline) {
		resp, err := http.Get("http://" + addr + "/push_appserver/v1/ready")
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			last = fmt.Sprintf("%d %q", resp.StatusCode, b)
			if resp.StatusCode == code && strings.Contains(string(b), want) {
				return
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("ready page never answered %d %q; last %s", code, want, last)
}

// TestReadinessFollowsComponent runs the binary against a real Prosody:
// ready while the component is connected, 503 naming it while Prosody is
// down, ready again once it is back; liveness stays RUNNING throughout.
func TestReadinessFollowsComponent(t *testing.T) {
	bin := buildBinary(t)
	p := prosody.Start(t, prosody.Options{})
	addr := freePort(t)
	cfg := writeConfig(t, fmt.Sprintf("[http]\nlisten = %q\n[[component]]\njid = %q\naddress = %q\nsecret = %q\n",
		addr, p.ComponentJID, p.ComponentAddr, p.ComponentSecret))
	s := startServer(t, bin, cfg)
	s.waitHealthy(t, addr)
	waitReady(t, addr, 200, "READY")

	p.Stop()
	waitReady(t, addr, 503, "component "+p.ComponentJID+": down")
	s.waitHealthy(t, addr)

	p.Restart()
	waitReady(t, addr, 200, "READY")
	s.stop(t)
}

// A component stream whose server goes silent is replaced after the
// configured keepalive and half as long again, and counted in
// push_appserver_component_disconnects_total.
func TestSilentComponentReplaced(t *testing.T) {
	bin := buildBinary(t)
	const jid, secret = "push.example.org", "s3cret"
	srv, err := xmppfake.Listen(jid, secret)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	addr := freePort(t)
	cfg := writeConfig(t, fmt.Sprintf("[http]\nlisten = %q\n[[component]]\njid = %q\naddress = %q\nsecret = %q\nkeepalive = \"2s\"\n",
		addr, jid, srv.Addr(), secret))
	s := startServer(t, bin, cfg)
	s.waitHealthy(t, addr)
	first, err := srv.Accept(10 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	start := time.Now()
	const drops = `push_appserver_component_disconnects_total{jid="push.example.org"}`
	if got := metric(t, addr, drops); got != 0 {
		t.Fatalf("%s = %v while connected, want 0", drops, got)
	}
	// The fake server reads the ping and never answers.
	second, err := srv.Accept(10 * time.Second)
	if err != nil {
		t.Fatalf("the silent stream was not replaced: %v", err)
	}
	defer second.Close()
	if d := time.Since(start); d < 2*time.Second || d > 6*time.Second {
		t.Errorf("replaced %v after connecting, want about 3 s at a keepalive of 2 s", d)
	}
	if got := metric(t, addr, drops); got != 1 {
		t.Errorf("%s = %v after one silent stream, want 1", drops, got)
	}
	s.waitLog(t, "the XMPP server did not answer a ping")
	s.stop(t)
}
