package logging

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// Limited writes one kind of log line at most a set number of times a
// second; the rest are counted and summed up in one line, so that a
// flood (bad publishes, a push service that fails every push, a bug that
// the same input sets off again and again) cannot fill the disk.
type Limited struct {
	logger    *slog.Logger
	now       func() time.Time
	level     slog.Level
	perSecond int
	msg       string // the line
	summary   string // the line that counts what was not written

	mu         sync.Mutex
	window     time.Time // start of the current second
	logged     int       // lines written in it
	suppressed int       // lines not written since the last summary
}

// NewLimited returns a log of lines msg at level, at most perSecond a
// second by the clock now; summary is the line that counts the others,
// written with the first line after them.
func NewLimited(logger *slog.Logger, now func() time.Time, level slog.Level, perSecond int, msg, summary string) *Limited {
	return &Limited{logger: logger, now: now, level: level, perSecond: perSecond, msg: msg, summary: summary}
}

// Log writes one line with args unless this second's share is used up.
func (l *Limited) Log(args ...any) {
	now := l.now()
	l.mu.Lock()
	summarized := 0
	if now.Sub(l.window) >= time.Second {
		summarized, l.suppressed = l.suppressed, 0
		l.window, l.logged = now, 0
	}
	ok := l.logged < l.perSecond
	if ok {
		l.logged++
	} else {
		l.suppressed++
	}
	l.mu.Unlock()
	// Written outside the lock: a log that blocks (a stalled journald)
	// must not stop the callers whose lines are not written.
	if summarized > 0 {
		l.logger.Log(context.Background(), l.level, l.summary, "count", summarized)
	}
	if ok {
		l.logger.Log(context.Background(), l.level, l.msg, args...)
	}
}
