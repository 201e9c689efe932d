package appserver_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/push-appserver/push-appserver/internal/appserver"
	"github.com/push-appserver/push-appserver/internal/push"
	"github.com/push-appserver/push-appserver/internal/push/webpush"
	"github.com/push-appserver/push-appserver/internal/registry/memory"
	"github.com/push-appserver/push-appserver/internal/reload"
	"github.com/push-appserver/push-appserver/internal/testutil/webpushmock"
)

// A WebPush "token" is a subscription: the URL we POST to and the keys
// we encrypt for, all of the registrant's choosing. A tokenless publish
// (fpush's, pushModule naming the app) or a publish-options one
// (MongooseIM's device_id) comes from any XMPP user, with no
// registration and none of the HTTP API's limits on registrations: taken
// as a token of a WebPush app, each would have us POST to whatever URL
// it names, a new one every time, retried and redelivered for minutes
// when the URL answers 5xx. Neither dialect has WebPush tokens; such a
// publish is refused as an unknown node, and nothing is sent. Pushes to
// registered WebPush subscriptions go out as before.
func TestTokenPushRefusedForWebPush(t *testing.T) {
	ctx := context.Background()
	mock, keyFile, pub := webpushmock.Start(t)
	b, err := webpush.New(webpush.Options{VAPIDKeyFile: keyFile, VAPIDSubject: "mailto:ops@example.org", CAPath: mock.CADir,
		Guard: webpush.Guard{AllowPrivate: true, Ports: []int{mock.Port}}}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	// As the server wires it: behind the backend a reload swaps.
	svc, err := appserver.New(memory.New(), []appserver.App{{Name: "web", Priority: push.PriorityAuto, Backend: reload.NewBackend(b)}},
		appserver.Options{RateLimit: time.Hour}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	sub, err := mock.Subscribe(pub)
	if err != nil {
		t.Fatal(err)
	}

	if err := svc.Push(ctx, appserver.PushRequest{Node: sub.JSON, Tokenless: true, TokenApp: "web", Source: "@example.net"}); !errors.Is(err, appserver.ErrNotFound) {
		t.Errorf("tokenless publish naming a WebPush subscription as its node: %v, want ErrNotFound", err)
	}
	if err := svc.PushToken(ctx, appserver.TokenPush{App: "web", Token: sub.JSON, Request: appserver.PushRequest{Node: "n", Source: "@example.net"}}); !errors.Is(err, appserver.ErrNotFound) {
		t.Errorf("publish-options device_id naming a WebPush subscription: %v, want ErrNotFound", err)
	}
	if n := len(mock.Messages()); n != 0 {
		t.Fatalf("%d requests reached the endpoint a stranger's publish named, want none", n)
	}

	r, err := svc.Register(ctx, appserver.Caller{}, "web", "browser-1", sub.JSON)
	if err != nil {
		t.Fatal(err)
	}
	if err := svc.Push(ctx, appserver.PushRequest{Node: r.Node, Secret: r.Secret}); err != nil {
		t.Fatalf("push to a registered WebPush subscription: %v", err)
	}
	if mock.Accepted() != 1 {
		t.Fatalf("registered subscription: %d pushes accepted, want 1", mock.Accepted())
	}
}
