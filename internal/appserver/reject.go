package appserver

import (
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

// rejectLogLimit is how many rejections are logged per second at most; the
// rest are counted and summed up in one line, so that a flood of bad
// publishes cannot fill the disk.
const rejectLogLimit = 10

// rejectLog logs rejected pushes at info, rate-limited.
type rejectLog struct {
	logger *slog.Logger
	now    func() time.Time

	mu         sync.Mutex
	window     time.Time // start of the current second
	logged     int       // lines written in it
	suppressed int       // lines not written since the last summary
}

func newRejectLog(logger *slog.Logger, now func() time.Time) *rejectLog {
	return &rejectLog{logger: logger, now: now}
}

// log writes one rejection unless this second's share is used up. Never
// the secret or token: node and reason are enough to find a client or
// server that is set up wrong.
func (l *rejectLog) log(node, reason string) {
	now := l.now()
	l.mu.Lock()
	if now.Sub(l.window) >= time.Second {
		if l.suppressed > 0 {
			l.logger.Info("push rejections not logged (rate limit)", "count", l.suppressed)
			l.suppressed = 0
		}
		l.window, l.logged = now, 0
	}
	ok := l.logged < rejectLogLimit
	if ok {
		l.logged++
	} else {
		l.suppressed++
	}
	l.mu.Unlock()
	if ok {
		l.logger.Info("push rejected", "node", push.Truncate(node, 64), "reason", reason)
	}
}

// reject records a push refused for reason (RejectUnknownNode or
// RejectWrongSecret).
func (s *Service) reject(node, reason string, start time.Time) {
	s.opts.Observer.Pushed("", OutcomeNotFound, time.Since(start))
	s.opts.Observer.Rejected(RejectNotFound)
	s.rejects.log(node, reason)
}

// RejectMalformed records a push request an adapter could not read (no
// node, no secret, broken form); why says what was wrong with it. node may
// be empty.
func (s *Service) RejectMalformed(node, why string) {
	s.opts.Observer.Rejected(RejectMalformed)
	s.rejects.log(node, "malformed: "+why)
}
