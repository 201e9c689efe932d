package logging

import (
	"strings"
	"time"
)

// RepeatEvery is how often Repeats lets through a failure that repeats
// the one last logged.
const RepeatEvery = time.Minute

// Repeats decides which attempts of a loop that retries something gone
// (an XMPP server down, a database away), about once a second, to log:
// the first failure, one that fails otherwise than the last logged, and
// one a minute while the same failure repeats, which counts the attempts
// not logged since. A line each attempt says nothing new, and for an
// outage of hours fills the journal with it. Not safe for concurrent use:
// it belongs to the loop.
type Repeats struct {
	last     string    // the error last logged, without its digits
	loggedAt time.Time // when
	repeated int       // attempts failed since then, not logged
	failing  bool
}

// Failed records an attempt that failed with err at now, and says
// whether to log it and how many attempts failed unlogged before it.
// Errors that differ in their digits alone (a local port) are one
// failure.
func (r *Repeats) Failed(err string, now time.Time) (notLogged int, log bool) {
	kind := strings.Map(func(c rune) rune {
		if c >= '0' && c <= '9' {
			return -1
		}
		return c
	}, err)
	if r.failing && kind == r.last && now.Sub(r.loggedAt) < RepeatEvery {
		r.repeated++
		return 0, false
	}
	n := r.repeated
	r.last, r.loggedAt, r.repeated, r.failing = kind, now, 0, true
	return n, true
}

// Ended records that an attempt succeeded, and says whether any failed
// before it (an end worth logging) and how many of them were not logged.
// The next failure is logged at once.
func (r *Repeats) Ended() (notLogged int, wasFailing bool) {
	n, was := r.repeated, r.failing
	*r = Repeats{}
	return n, was
}
