package component_test

import (
	"context"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/push-appserver/push-appserver/internal/appserver"
	"github.com/push-appserver/push-appserver/internal/push"
	"github.com/push-appserver/push-appserver/internal/registry/memory"
	"github.com/push-appserver/push-appserver/internal/xmpp/component"
)

// buggy is the core with a bug that a push to node "bug" sets off.
type buggy struct{ *appserver.Service }

func (b buggy) Push(ctx context.Context, req appserver.PushRequest) error {
	if req.Node == "bug" {
		var found []string
		_ = found[len(req.Node)] // index out of range
	}
	return b.Service.Push(ctx, req)
}

// TestPanicAnsweredWait: an IQ whose handling panics is answered wait
// (ejabberd would delete the user's push session for any other type), the
// panic is counted, and the stream and the process go on: the next push
// is answered as usual, on the same stream.
func TestPanicAnsweredWait(t *testing.T) {
	b := &blocking{release: make(chan struct{}), fail: map[string]error{}}
	svc, err := appserver.New(memory.New(), []appserver.App{{Name: "apns", Priority: push.PriorityAuto, Backend: b}}, appserver.Options{}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	srv := newFakeServer(t, secret)
	var panics atomic.Int32
	conn := component.New(component.Options{
		Addr: srv.Addr(), JID: compJID, Secret: secret, MaxBackoff: 200 * time.Millisecond,
		DrainTimeout: 300 * time.Millisecond, Logger: slog.New(slog.DiscardHandler),
		OnPanic: func() { panics.Add(1) },
	}, buggy{svc})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { conn.Run(ctx); close(done) }()
	t.Cleanup(func() { close(b.release); cancel(); <-done })
	st := srv.accept(t)

	ok, _ := svc.Register(ctx, appserver.Caller{}, "apns", "ok", "tok")
	bug, _ := svc.Register(ctx, appserver.Caller{}, "apns", "bug", "tok2")
	st.send(t, publish("1", "bug", bug.Secret, true))
	if r := st.next(t); r.ID != "1" || r.Type != "error" || !strings.HasPrefix(r.Inner, "<error type='wait'><internal-server-error") {
		t.Fatalf("reply to the push that panicked: %+v", r)
	}
	if n := panics.Load(); n != 1 {
		t.Fatalf("%d panics counted", n)
	}
	st.send(t, publish("2", "ok", ok.Secret, true))
	if r := st.next(t); r.ID != "2" || r.Type != "result" {
		t.Fatalf("reply to the next push: %+v", r)
	}
	if srv.Connections() != 1 {
		t.Fatalf("%d connections: the stream was replaced", srv.Connections())
	}
}
