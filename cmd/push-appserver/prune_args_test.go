package main

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

// -idle in days counts whole days of 24 hours: "180d" prunes what has
// been idle for 180 days, not for some other span.
func TestParseIdleDays(t *testing.T) {
	for in, want := range map[string]time.Duration{"7d": 7 * 24 * time.Hour, "180d": 180 * 24 * time.Hour, "200h": 200 * time.Hour} {
		if got, err := parseIdle(in); err != nil || got != want {
			t.Errorf("parseIdle(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
}

// registrations prune has no -domain: given one, it refuses rather than
// prune the idle registrations of every domain.
func TestPruneRefusesDomain(t *testing.T) {
	cfg := writeConfig(t, "")
	var out, errb bytes.Buffer
	code := run([]string{"registrations", "-config", cfg, "-domain", "example.org", "-idle", "30d", "-yes", "prune"}, &out, &errb)
	if code != 2 || !strings.Contains(errb.String(), "-domain is not supported") {
		t.Fatalf("prune -domain: exit %d, stdout %q, stderr %q; want a usage error", code, out.String(), errb.String())
	}
}
