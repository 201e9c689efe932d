package appserver_test

import (
	"context"
	"io"
	"log/slog"
	"net/url"
	"testing"
	"time"

	"github.com/push-appserver/push-appserver/internal/appserver"
	"github.com/push-appserver/push-appserver/internal/push"
	"github.com/push-appserver/push-appserver/internal/registry/postgres"
	"github.com/push-appserver/push-appserver/internal/testutil/netfreeze"
)

// An unregistration whose caller set no deadline (the HTTP API's:
// a request's context ends only when its client hangs up) ends when
// PostgreSQL has gone silent (its host gone, its address moved by a
// failover), within the statement timeout and a margin, as a
// registration does, rather than when TCP gives up on the connection,
// many minutes later.
func TestUnregisterOnSilentPostgres(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	u, err := url.Parse(pg.DB(t))
	if err != nil {
		t.Fatal(err)
	}
	f := netfreeze.Start(t, u.Host)
	u.Host = f.Addr()
	store, err := postgres.Open(ctx, u.String(), postgres.Options{StatementTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	defer store.Close()
	svc, err := appserver.New(store, []appserver.App{{Name: "fcm", Priority: push.PriorityHigh, Backend: &scripted{answers: map[string]error{}}}},
		appserver.Options{}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := svc.Register(ctx, appserver.Caller{}, "fcm", "n1", "tok-1"); err != nil {
		t.Fatal(err)
	}
	f.Freeze()
	start := time.Now()
	done := make(chan error, 1)
	go func() {
		_, err := svc.Unregister(context.Background(), appserver.Caller{}, "fcm", "n1")
		done <- err
	}()
	select {
	case err := <-done:
		t.Logf("Unregister = %v after %v", err, time.Since(start).Round(time.Millisecond))
		if err == nil {
			t.Fatal("an unregistration answered as done on a silent database")
		}
	case <-time.After(15 * time.Second):
		t.Fatalf("Unregister still waits %v after PostgreSQL went silent (statement_timeout 1 s)", time.Since(start).Round(time.Second))
	}
}
