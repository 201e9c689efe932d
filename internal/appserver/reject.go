package appserver

import (
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

// logLimit is how many lines each of the core's rate-limited logs
// writes per second at most (see logging.Limited).
const logLimit = 10

// rejected logs one rejection at info. Never the secret or token: node and
// reason are enough to find a client or server that is set up wrong.
func (s *Service) rejected(node, reason string) {
	s.rejects.Log("node", loggedNode(node), "reason", reason)
}

// loggedNode is node as the log gets it: whole, so that its node_ref
// above debug is the one its registration's lines have, unless it is too
// long to have been registered (anyone can push to any node), when its
// start is enough.
func loggedNode(node string) string {
	if len(node) > MaxNodeLen {
		return push.Truncate(node, MaxNodeLen)
	}
	return node
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
