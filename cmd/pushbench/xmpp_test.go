package main

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/push-appserver/push-appserver/internal/appserver"
	"github.com/push-appserver/push-appserver/internal/registry/memory"
	"github.com/push-appserver/push-appserver/internal/testutil/xmppfake"
	"github.com/push-appserver/push-appserver/internal/xmpp/component"
)

// The benchmark's side of the stream routes the component's keep-alive
// pings back, as a real server does: a phase without publishes (a long
// registration phase) must not cost the benchmark its stream.
func TestStreamRoutesPingsBack(t *testing.T) {
	const jid, secret = "push.bench", "bench-secret"
	srv, err := xmppfake.Listen(jid, secret)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	svc, err := appserver.New(memory.New(), nil, appserver.Options{}, logger)
	if err != nil {
		t.Fatal(err)
	}
	const keepAlive = 200 * time.Millisecond
	conn := component.New(component.Options{Addr: srv.Addr(), JID: jid, Secret: secret, KeepAlive: keepAlive,
		DrainTimeout: 100 * time.Millisecond, Logger: logger}, svc)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { conn.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	fs, err := srv.Accept(10 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	st := newStream(fs, jid)
	defer st.Close()
	time.Sleep(20 * keepAlive)
	if n := srv.Handshakes(); n != 1 || !conn.Connected() {
		t.Fatalf("%d handshakes, connected %v: the quiet stream was replaced", n, conn.Connected())
	}
}
