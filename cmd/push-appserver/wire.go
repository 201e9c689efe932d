package main

import (
	"context"
	"fmt"
	"log/slog"
	"sync"

	"github.com/push-appserver/push-appserver/internal/appserver"
	"github.com/push-appserver/push-appserver/internal/config"
	"github.com/push-appserver/push-appserver/internal/httpapi"
	"github.com/push-appserver/push-appserver/internal/metrics"
	"github.com/push-appserver/push-appserver/internal/push"
)

// newBackend builds the push backend for an app of kind apns or fcm.
func newBackend(ctx context.Context, name string, a *config.App, logger *slog.Logger) (push.Backend, error) {
	return nil, fmt.Errorf("kind %q is not available in this build", a.Kind)
}

// startComponents connects every configured XMPP component and returns the
// health checks for them.
func startComponents(ctx context.Context, wg *sync.WaitGroup, cfg *config.Config, svc *appserver.Service, m *metrics.Metrics, logger *slog.Logger) (func() []httpapi.Check, error) {
	return func() []httpapi.Check { return nil }, nil
}
