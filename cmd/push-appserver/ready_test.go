package main

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/push-appserver/push-appserver/internal/testutil/prosody"
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
