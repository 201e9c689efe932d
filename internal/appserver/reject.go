package appserver

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/push-appserver/push-appserver/internal/push"
)

// RejectReason is why a push was refused before any push service was
// asked, as counted in metrics. An unknown node and a wrong secret are one
// reason, so that whoever can read the counters cannot tell which nodes
// exist; the log, which only the operator reads, tells them apart.
type RejectReason string

const (
	RejectNotFound  RejectReason = "not_found"
	RejectMalformed RejectReason = "malformed"
)

// Why a push was rejected, in the log.
const (
	RejectUnknownNode = "unknown node"
	RejectWrongSecret = "wrong secret"
)

// logLimit is how many lines a limitedLog writes per second at most; the
// rest are counted and summed up in one line, so that a flood of bad
// publishes, or a push service that fails every push, cannot fill the disk.
const logLimit = 10

// limitedLog writes one kind of log line, rate-limited.
type limitedLog struct {
	logger  *slog.Logger
	now     func() time.Time
	level   slog.Level
	msg     string // the line
	summary string // the line that counts what was not written

	mu         sync.Mutex
	window     time.Time // start of the current second
	logged     int       // lines written in it
	suppressed int       // lines not written since the last summary
}

func newLimitedLog(logger *slog.Logger, now func() time.Time, level slog.Level, msg, summary string) *limitedLog {
	return &limitedLog{logger: logger, now: now, level: level, msg: msg, summary: summary}
}

// log writes one line with args unless this second's share is used up.
func (l *limitedLog) log(args ...any) {
	now := l.now()
	l.mu.Lock()
	if now.Sub(l.window) >= time.Second {
		if l.suppressed > 0 {
			l.logger.Log(context.Background(), l.level, l.summary, "count", l.suppressed)
			l.suppressed = 0
		}
		l.window, l.logged = now, 0
	}
	ok := l.logged < logLimit
	if ok {
		l.logged++
	} else {
		l.suppressed++
	}
	l.mu.Unlock()
	if ok {
		l.logger.Log(context.Background(), l.level, l.msg, args...)
	}
}

// rejected logs one rejection at info. Never the secret or token: node and
// reason are enough to find a client or server that is set up wrong.
func (s *Service) rejected(node, reason string) {
	s.rejects.log("node", push.Truncate(node, 64), "reason", reason)
}

// reject records a push refused for reason (RejectUnknownNode or
// RejectWrongSecret).
func (s *Service) reject(node, reason string, start time.Time) {
	s.opts.Observer.Pushed("", OutcomeNotFound, time.Since(start))
	s.opts.Observer.Rejected(RejectNotFound)
	s.rejected(node, reason)
}

// RejectMalformed records a push request an adapter could not read (no
// node, no secret, broken form); why says what was wrong with it. node may
// be empty.
func (s *Service) RejectMalformed(node, why string) {
	s.opts.Observer.Rejected(RejectMalformed)
	s.rejected(node, "malformed: "+why)
}
