package main

import (
	"fmt"
	"io"
	"time"

	"github.com/push-appserver/push-appserver/internal/admin"
)

// defaultProgressEvery is how often `registrations prune` and `import
// registry` say how far they have come: 10,000,000 registrations take
// them minutes, without a word until the summary otherwise.
const defaultProgressEvery = 5 * time.Second

// progressFlag defines the -progress flag of a command reading the whole
// registry.
func (f *flags) progressFlag() *time.Duration {
	return f.Duration("progress", defaultProgressEvery, "say on stderr how far it has come at most this often (a line each time); 0: never")
}

// progressLines writes, on w, a line saying how far a command reading
// the whole registry has come, at most once every `every`, so a run
// shorter than that prints none. Each report is a line of its own,
// terminal or not (no carriage return rewriting it): the command runs in
// a terminal as well as under cron or systemd-run, whose logs keep every
// byte. The lines go to stderr, the summary to stdout, which scripts read.
type progressLines struct {
	w      io.Writer
	prefix string        // the command's name, as its errors start
	every  time.Duration // 0: never
	now    func() time.Time
	last   time.Time // of the last line, or the command's start
}

func newProgressLines(w io.Writer, prefix string, every time.Duration) *progressLines {
	return &progressLines{w: w, prefix: prefix, every: every, now: time.Now, last: time.Now()}
}

// on tells whether the lines are wanted at all: a count taken only for
// them is not.
func (p *progressLines) on() bool { return p != nil && p.every > 0 }

// pass is the admin.Progress of one read of the registry, which holds
// total registrations (-1 when not known), whose done registrations are
// what did names ("deleted", "copied"); stage, when not "", says which
// read of a command that reads twice.
func (p *progressLines) pass(stage string, total int, did string) admin.Progress {
	if !p.on() {
		return nil
	}
	start := p.now()
	return func(read, done int) {
		t := p.now()
		if t.Sub(p.last) < p.every {
			return
		}
		p.last = t
		line := p.prefix + ": "
		if stage != "" {
			line += stage + ": "
		}
		elapsed := t.Sub(start)
		// A server registering beside the command can take read past
		// the count taken at the start.
		if total >= read {
			line += fmt.Sprintf("%d of %d registrations read (%d%%), %d %s in %s", read, total, percent(read, total), done, did, elapsed.Round(time.Second))
			if read > 0 && total > read {
				left := time.Duration(float64(elapsed) / float64(read) * float64(total-read))
				line += fmt.Sprintf(", about %s to go", left.Round(time.Second))
			}
		} else {
			line += fmt.Sprintf("%d registrations read, %d %s in %s", read, done, did, elapsed.Round(time.Second))
		}
		fmt.Fprintln(p.w, line)
	}
}

func percent(n, of int) int {
	if of == 0 {
		return 100
	}
	return int(int64(n) * 100 / int64(of))
}
