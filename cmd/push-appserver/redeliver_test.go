package main

import (
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/push-appserver/push-appserver/internal/testutil/apnsmock"
)

// TestRedeliveryAfterAPNSOutage runs the binary against the APNS mock
// answering 503 for a while: the push is answered "ERROR" (the user's
// server would hear "wait"). The server is restarted meanwhile, as an
// operator might do about failing pushes; once APNS takes pushes again
// the device gets the push all the same, once.
func TestRedeliveryAfterAPNSOutage(t *testing.T) {
	bin := buildBinary(t)
	dir := t.TempDir()
	am, _, keyFile, _ := startMocks(t, dir)
	addr := freePort(t)
	config := filepath.Join(dir, "c.toml")
	if err := os.WriteFile(config, fmt.Appendf(nil, "data_dir = %q\nrate_limit = 0\n[http]\nlisten = %q\n%spush_deadline = \"1s\"\n",
		filepath.Join(dir, "data"), addr, am.AppConfig("ios", keyFile)), 0o600); err != nil {
		t.Fatal(err)
	}
	s := startServer(t, bin, config)
	s.waitHealthy(t, addr)
	token := strings.Repeat("5e", 32)
	reg := strings.Split(s.post(t, "register", url.Values{"type": {"ios"}, "node": {"n1"}, "token": {token}}), "\n")
	if reg[0] != "OK" {
		t.Fatalf("register: %q", reg)
	}

	down := make([]apnsmock.Fault, 100)
	for i := range down {
		down[i] = apnsmock.Fault{Status: 503, Reason: "ServiceUnavailable"}
	}
	am.FailToken(token, down...)
	if got := s.post(t, "push", url.Values{"node": {"n1"}, "secret": {reg[2]}}); !strings.HasPrefix(got, "ERROR") {
		t.Fatalf("push while APNS answers 503: %q", got)
	}
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
	time.Sleep(time.Second)
	if n := am.Total(); n != 1 {
		t.Fatalf("APNS got %d requests after it took the push", n)
	}
	s.stop(t)
}
