// Package logpush is the push backend that sends nothing: it logs each push
// it would have sent and keeps the most recent ones in memory. It lets the
// server run, and be tried end to end, without any push credentials.
package logpush

import (
	"context"
	"log/slog"
	"sync"

	"github.com/push-appserver/push-appserver/internal/push"
)

// keep bounds the in-memory history so a long-running server does not grow.
const keep = 10000

// Backend records notifications instead of delivering them.
type Backend struct {
	logger *slog.Logger

	mu    sync.Mutex
	sent  []push.Notification
	total int
}

// New returns a log backend that logs through logger.
func New(logger *slog.Logger) *Backend {
	return &Backend{logger: logger}
}

// Send logs n and records it. It never fails.
func (b *Backend) Send(ctx context.Context, n push.Notification) error {
	b.mu.Lock()
	if len(b.sent) == keep {
		// Drop the oldest half at once so appends stay amortised O(1).
		b.sent = append(b.sent[:0], b.sent[keep/2:]...)
	}
	b.sent = append(b.sent, n)
	b.total++
	b.mu.Unlock()
	b.logger.LogAttrs(ctx, slog.LevelInfo, "push (log backend, not delivered)",
		slog.String("node", n.Node), slog.String("priority", string(n.Priority)))
	b.logger.LogAttrs(ctx, slog.LevelDebug, "push token", slog.String("node", n.Node), slog.String("token", n.Token))
	return nil
}

// Sent returns a copy of the most recent notifications, oldest first.
func (b *Backend) Sent() []push.Notification {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]push.Notification(nil), b.sent...)
}

// Total returns how many notifications were sent since New.
func (b *Backend) Total() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.total
}
