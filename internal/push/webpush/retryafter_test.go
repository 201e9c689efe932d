package webpush

import (
	"net/http"
	"testing"
	"time"
)

// TestParseRetryAfter: a push service's Retry-After is taken in both of
// its forms (RFC 9110 10.2.3), delay-seconds and an HTTP date, so that a
// push service asking for a pause as a date gets it rather than the
// retries' own backoff; a date already past, or nonsense, asks for none.
func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	for _, c := range []struct {
		v    string
		want time.Duration
	}{
		{"", 0},
		{"120", 2 * time.Minute},
		{"0", 0},
		{"-5", 0},
		{now.Add(90 * time.Second).Format(http.TimeFormat), 90 * time.Second},
		{now.Add(-time.Hour).Format(http.TimeFormat), 0},
		{"soon", 0},
	} {
		if got := parseRetryAfter(c.v, now); got != c.want {
			t.Errorf("parseRetryAfter(%q) = %v, want %v", c.v, got, c.want)
		}
	}
}
