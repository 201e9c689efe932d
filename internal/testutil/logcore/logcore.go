// Package logcore builds the real core for tests of its adapters: an
// in-memory registry and the apps "apns" (priority auto) and "fcm"
// (priority high) on the log backend, which accepts every push. Fuzz
// targets use it to run inputs through everything but a push service.
package logcore

import (
	"log/slog"
	"testing"

	"github.com/push-appserver/push-appserver/internal/appserver"
	"github.com/push-appserver/push-appserver/internal/push"
	"github.com/push-appserver/push-appserver/internal/push/logpush"
	"github.com/push-appserver/push-appserver/internal/registry/memory"
)

// New returns the core with opts; its logs are discarded.
func New(tb testing.TB, opts appserver.Options) *appserver.Service {
	tb.Helper()
	logger := slog.New(slog.DiscardHandler)
	b := logpush.New(logger)
	svc, err := appserver.New(memory.New(), []appserver.App{
		{Name: "apns", Priority: push.PriorityAuto, Backend: b},
		{Name: "fcm", Priority: push.PriorityHigh, Backend: b},
	}, opts, logger)
	if err != nil {
		tb.Fatal(err)
	}
	return svc
}
