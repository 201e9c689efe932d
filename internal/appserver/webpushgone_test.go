package appserver_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/push-appserver/push-appserver/internal/appserver"
	"github.com/push-appserver/push-appserver/internal/push"
	"github.com/push-appserver/push-appserver/internal/push/webpush"
	"github.com/push-appserver/push-appserver/internal/registry"
	"github.com/push-appserver/push-appserver/internal/registry/memory"
	"github.com/push-appserver/push-appserver/internal/testutil/netfreeze"
	"github.com/push-appserver/push-appserver/internal/testutil/webpushmock"
)

// A UnifiedPush server behind a reverse proxy that lost its route
// answers 404 for every subscription on its host: none of their
// registrations is removed, and the user's server hears a failure to
// try again (wait), not that the node is gone, however well the app's
// pushes fare at another host. A dead subscription among a host's
// successes is removed as ever, and the user's server told so.
func TestWebPushGoneHeldPerHost(t *testing.T) {
	ctx := context.Background()
	mock, keyFile, pub := webpushmock.Start(t)
	// The broken host: the same mock, through a port of its own.
	proxy := netfreeze.Start(t, "127.0.0.1:"+strconv.Itoa(mock.Port))
	broken := "https://" + proxy.Addr()
	b, err := webpush.New(webpush.Options{VAPIDKeyFile: keyFile, VAPIDSubject: "mailto:ops@example.org", CAPath: mock.CADir,
		Guard: webpush.Guard{AllowPrivate: true, Ports: []int{mock.Port, proxy.Port()}}}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	store := memory.New()
	svc, err := appserver.New(store, []appserver.App{{Name: "web", Priority: push.PriorityAuto, Backend: b}},
		appserver.Options{RateLimit: time.Hour, Redelivery: -1}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	register := func(node, origin string) (registry.Registration, webpushmock.Subscription) {
		t.Helper()
		sub, err := mock.SubscribeAt(origin, pub)
		if err != nil {
			t.Fatal(err)
		}
		r, err := svc.Register(ctx, appserver.Caller{}, "web", node, sub.JSON)
		if err != nil {
			t.Fatal(err)
		}
		return r, sub
	}
	pushTo := func(r registry.Registration) error {
		return svc.Push(ctx, appserver.PushRequest{Node: r.Node, Secret: r.Secret})
	}

	// The healthy host: the mock's own origin.
	for i := range 5 {
		r, _ := register(fmt.Sprint("ok", i), mock.URL)
		if err := pushTo(r); err != nil {
			t.Fatal(err)
		}
	}
	var held []registry.Registration
	for i := range 20 {
		r, sub := register(fmt.Sprint("np", i), broken)
		mock.Fail(sub.ID, webpushmock.Fault{Status: 404})
		err := pushTo(r)
		if !errors.Is(err, appserver.ErrPushFailed) || errors.Is(err, appserver.ErrNotFound) || !strings.Contains(err.Error(), "404 Not Found") {
			t.Fatalf("push %d answered 404 at a host with no success: %v, want a failure to retry", i, err)
		}
		held = append(held, r)
	}
	for _, r := range held {
		if _, err := store.Get(ctx, r.Node); err != nil {
			t.Fatalf("registration %s at the host answering 404 to all: %v, want it kept", r.Node, err)
		}
	}

	dead, sub := register("dead", mock.URL)
	mock.Unsubscribe(sub.ID)
	if err := pushTo(dead); !errors.Is(err, appserver.ErrNotFound) {
		t.Fatalf("push to a dead subscription among successes: %v, want ErrNotFound", err)
	}
	if _, err := store.Get(ctx, dead.Node); !errors.Is(err, registry.ErrNotFound) {
		t.Fatalf("dead subscription among successes: Get = %v, want it removed", err)
	}
}
