package push

import (
	"log/slog"
	"strconv"
	"testing"
)

// What a Breaker remembers of the push services its pushes reached is
// bounded, whatever the number of services the subscriptions name.
func TestBreakerMemoryBounded(t *testing.T) {
	b := NewBreaker("web", BreakerOptions{}, slog.New(slog.DiscardHandler))
	for i := range 3 * maxProvenScopes {
		b.JudgeAt("https://s"+strconv.Itoa(i)+".example", nil)
	}
	if len(b.proven) > maxProvenScopes || len(b.since) > maxProvenScopes || len(b.scopes) > maxProvenScopes {
		t.Fatalf("remembers %d proven, %d tallies, %d windows: want at most %d each",
			len(b.proven), len(b.since), len(b.scopes), maxProvenScopes)
	}
}
