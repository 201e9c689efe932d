package main

import (
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// A push over HTTP is answered however long push_timeout lets it take.
// check-config accepts any push_timeout above rate_limit, and the last
// push of a burst waits for the next rate_limit window before it goes
// out: with a window of 41 s the second push of a burst is sent 41 s
// after the first, and its client must then hear OK, not an empty reply
// (the HTTP server's write deadline of 40 s cut the answer off, though
// the push was sent, and a proxy that retries such requests sent it
// twice).
func TestPushAnsweredWithinPushTimeout(t *testing.T) {
	bin := buildBinary(t)
	dir, addr, cfg := minimalConfig(t)
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf("data_dir = %q\nrate_limit = \"41s\"\npush_timeout = \"50s\"\n[http]\nlisten = %q\n",
		filepath.Join(dir, "data"), addr)), 0o600); err != nil {
		t.Fatal(err)
	}
	s := startServer(t, bin, cfg)
	s.waitHealthy(t, addr)
	secret := s.registerTo(t, "apns", "n1", "ab12")
	if got := s.pushTo(t, "n1", secret); got != "OK\nn1" {
		t.Fatalf("first push: %q", got)
	}
	start := time.Now()
	// Waits for the next window, 41 s: s.post fails the test on an
	// empty reply.
	got := s.post(t, "push", url.Values{"node": {"n1"}, "secret": {secret}})
	if got != "OK\nn1" {
		t.Fatalf("second push of the burst, answered after %v: %q", time.Since(start).Round(time.Second), got)
	}
	// The log's line reaches us through the server's log queue and its
	// stderr, which may come after the answer did.
	s.waitFor(t, "the second push was never sent", func() bool {
		return strings.Count(s.log.String(), "push (log backend, not delivered)") >= 2
	})
	if n := strings.Count(s.log.String(), "push (log backend, not delivered)"); n != 2 {
		t.Errorf("%d pushes sent, want 2", n)
	}
}
