package modpushappserver

import (
	"fmt"
	"io"
	"time"
)

// progress writes "count/total, rate, ETA" on one terminal line, at most a
// few times a second.
type progress struct {
	w     io.Writer
	total int
	now   func() time.Time
	start time.Time
	last  time.Time
}

const progressEvery = 250 * time.Millisecond

func newProgress(w io.Writer, total int, now func() time.Time) *progress {
	t := now()
	return &progress{w: w, total: total, now: now, start: t, last: t}
}

func (p *progress) update(n int) {
	if p.w == nil {
		return
	}
	t := p.now()
	if t.Sub(p.last) < progressEvery {
		return
	}
	p.last = t
	p.print(n, t)
}

func (p *progress) print(n int, t time.Time) {
	elapsed := t.Sub(p.start).Seconds()
	rate := 0.0
	if elapsed > 0 {
		rate = float64(n) / elapsed
	}
	eta := "?"
	if rate > 0 && p.total >= n {
		eta = time.Duration(float64(p.total-n) / rate * float64(time.Second)).Round(time.Second).String()
	}
	pct := 100.0
	if p.total > 0 {
		pct = 100 * float64(n) / float64(p.total)
	}
	fmt.Fprintf(p.w, "\r%d/%d records (%.0f%%), %.0f/s, ETA %s\x1b[K", n, p.total, pct, rate, eta)
}

func (p *progress) done(n int) {
	if p.w == nil {
		return
	}
	p.print(n, p.now())
	fmt.Fprintln(p.w)
}
