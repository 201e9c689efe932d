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
	perWindow int           // lines a window
	every     time.Duration // the window, a second unless NewLimitedPer says
	msg       string        // the line
	summary   string        // the line that counts what was not written

	mu         sync.Mutex
	window     time.Time // start of the current window
	logged     int       // lines written in it
	suppressed int       // lines not written since the last summary
	// keys written in the current window (see LogKey).
	keys map[string]struct{}
	// armed is set while a timer will write the summary: a flood that
	// stops is followed by no line that would carry it. calls counts
	// the calls of Log, and armedAt is its count when the timer was set:
	// a flood that goes on carries the summary on its own lines.
	armed   bool
	calls   uint64
	armedAt uint64
}

// maxKeys bounds the keys LogKey lets past the limit in one second, and
// with them the lines a second: a key is one of a few known things (an
// app), but what a caller passes is no promise.
const maxKeys = 32

// NewLimited returns a log of lines msg at level, at most perSecond a
// second by the clock now; summary is the line that counts the others,
// written with the first line of a later second, or a second after the
// first of them if none came.
func NewLimited(logger *slog.Logger, now func() time.Time, level slog.Level, perSecond int, msg, summary string) *Limited {
	return NewLimitedPer(logger, now, level, perSecond, time.Second, msg, summary)
}

// NewLimitedPer is NewLimited for at most n lines in each window of
// length every, for a line that says the same thing as long as its
// cause lasts (a push served while the registry is away, which the
// registry's own loop already logs): a second's share would repeat it
// hundreds of times a minute.
func NewLimitedPer(logger *slog.Logger, now func() time.Time, level slog.Level, n int, every time.Duration, msg, summary string) *Limited {
	return &Limited{logger: logger, now: now, level: level, perWindow: n, every: every, msg: msg, summary: summary}
}

// Log writes one line with args unless this second's share is used up.
func (l *Limited) Log(args ...any) { l.log("", false, args) }

// LogKey is Log for a line of one of several sources (an app): the first
// line of a key in each second is written even once the second's share
// is used up, so that a flood from one source (a push service down for
// a busy app) does not hide the lines of another (a second app failing
// for another reason), which would then only be counted.
func (l *Limited) LogKey(key string, args ...any) { l.log(key, true, args) }

func (l *Limited) log(key string, keyed bool, args []any) {
	now := l.now()
	l.mu.Lock()
	l.calls++
	summarized := 0
	if now.Sub(l.window) >= l.every {
		summarized, l.suppressed = l.suppressed, 0
		l.window, l.logged = now, 0
		clear(l.keys)
	}
	_, seen := l.keys[key]
	ok := l.logged < l.perWindow || keyed && !seen && len(l.keys) < maxKeys
	if ok {
		l.logged++
		if keyed {
			if l.keys == nil {
				l.keys = map[string]struct{}{}
			}
			l.keys[key] = struct{}{}
		}
	} else {
		l.suppressed++
		if !l.armed {
			l.armed, l.armedAt = true, l.calls
			time.AfterFunc(l.every, l.flush)
		}
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

// flush writes the count of the lines not written since the last
// summary once a window has passed with no call of Log, whether or not a
// line of the kind came since: without it the count of a flood that
// stopped waited for the next such line, maybe for ever. While the
// flood goes on, its next window's first line carries the count, and
// flush only looks again a window later.
func (l *Limited) flush() {
	l.mu.Lock()
	if l.calls != l.armedAt {
		l.armedAt = l.calls
		l.mu.Unlock()
		time.AfterFunc(l.every, l.flush)
		return
	}
	n := l.suppressed
	l.suppressed, l.armed = 0, false
	l.mu.Unlock()
	if n > 0 {
		l.logger.Log(context.Background(), l.level, l.summary, "count", n)
	}
}
