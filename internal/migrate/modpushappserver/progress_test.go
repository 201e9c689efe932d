package modpushappserver

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

func TestProgress(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	var out bytes.Buffer
	p := newProgress(&out, 1000, clock)
	p.update(10) // too soon after the start: nothing
	if out.Len() != 0 {
		t.Fatalf("printed at once: %q", out.String())
	}
	now = now.Add(2 * time.Second)
	p.update(250) // 125/s, 750 left: 6 s
	if got := out.String(); !strings.Contains(got, "\r250/1000 records (25%), 125/s, ETA 6s") {
		t.Fatalf("progress line %q", got)
	}
	now = now.Add(100 * time.Millisecond)
	out.Reset()
	p.update(260) // within the interval: nothing
	if out.Len() != 0 {
		t.Fatalf("printed too often: %q", out.String())
	}
	now = now.Add(6 * time.Second)
	p.done(1000)
	if got := out.String(); !strings.Contains(got, "1000/1000 records (100%)") || !strings.HasSuffix(got, "\n") {
		t.Fatalf("final line %q", got)
	}
	q := newProgress(nil, 10, clock)
	q.update(5)
	q.done(10)
}
