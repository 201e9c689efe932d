package webpush_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/push-appserver/push-appserver/internal/push"
	"github.com/push-appserver/push-appserver/internal/push/webpush"
	"github.com/push-appserver/push-appserver/internal/testutil/netfreeze"
)

// TestSharedQuietShareCountedAsQuiet: a push refused because the quiet
// origins' share of the WebPush apps' shared bound is taken is counted
// under bound="quiet", as one refused by an app's quiet share is. It was
// counted as "process", which names the shared bound of all pushes: an
// operator then saw the apps' pushes fill the process's room, and would
// raise the descriptor limit, when push services that do not answer
// were what held the room of the quiet ones.
func TestSharedQuietShareCountedAsQuiet(t *testing.T) {
	hang, accepted := netfreeze.SilentAccepting(t)
	mock, keyFile, pub := startMock(t)
	shared := webpush.NewSharedBound(8) // a quarter of it, 2, for the quiet
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	backend := func() *webpush.Backend {
		b := newBackend(t, mock, keyFile, webpush.Options{PushDeadline: 10 * time.Second, MaxPushes: 64, Shared: shared,
			Guard: webpush.Guard{AllowPrivate: true, Ports: []int{mock.Port, hang}}})
		webpush.ResolveTo(b, "-example.net", "127.0.0.1")
		return b
	}
	send := func(b *webpush.Backend, host string) error {
		sub, err := mock.SubscribeAt(fmt.Sprintf("https://%s:%d", host, hang), pub)
		if err != nil {
			return err
		}
		return b.Send(ctx, push.Notification{Node: "n", Token: sub.JSON, Priority: push.PriorityHigh})
	}
	a, b := backend(), backend()
	// One push of each app to a site of its own that never answers:
	// each within its app's quiet share, together the process's.
	for _, p := range []struct {
		b    *webpush.Backend
		host string
	}{{a, "h.one-example.net"}, {b, "h.two-example.net"}} {
		go send(p.b, p.host)
		select {
		case <-accepted:
		case <-time.After(10 * time.Second):
			t.Fatal("a push to a hanging host did not connect")
		}
	}
	// The second app has room in its own quiet share, the process none.
	if err := send(b, "h.three-example.net"); !push.IsTemporary(err) {
		t.Fatalf("a push past the process's quiet share: %v, want a temporary failure", err)
	}
	if got := shared.Refused(); got[webpush.BusyQuiet] != 1 || got[webpush.BusyProcess] != 0 {
		t.Fatalf("refused by bound: %v, want one by %q", got, webpush.BusyQuiet)
	}
}
