// Package logpush is the push backend that sends nothing: it logs each push
// it would have sent. It lets the server run, and be tried end to end,
// without any push credentials.
package logpush

import (
	"context"
	"log/slog"

	"github.com/push-appserver/push-appserver/internal/push"
)

// Backend logs notifications instead of delivering them.
type Backend struct {
	logger *slog.Logger
}

// New returns a log backend that logs through logger.
func New(logger *slog.Logger) *Backend {
	return &Backend{logger: logger}
}

// Send logs n. It never fails. The token is logged only at debug level, like
// every token and secret.
func (b *Backend) Send(ctx context.Context, n push.Notification) error {
	b.logger.LogAttrs(ctx, slog.LevelInfo, "push (log backend, not delivered)",
		slog.String("node", n.Node), slog.String("priority", string(n.Priority)))
	b.logger.LogAttrs(ctx, slog.LevelDebug, "push token", slog.String("node", n.Node), slog.String("token", n.Token))
	return nil
}

// CarriesSummaryText: the log backend shows no summary text.
func (b *Backend) CarriesSummaryText() bool { return false }
