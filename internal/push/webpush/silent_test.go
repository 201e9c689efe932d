package webpush_test

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/push-appserver/push-appserver/internal/push"
	"github.com/push-appserver/push-appserver/internal/push/webpush"
	"github.com/push-appserver/push-appserver/internal/testutil/netfreeze"
)

// TestSilentConnectionLeftWithinDeadline: a connection to a push service
// that goes silent while pushes go out on it (a NAT or firewall that
// forgot it) is found and left soon enough that the push sent on it
// goes out on a new connection within its deadline, the default 5 s,
// as APNS and FCM pushes do; not only after the health check of quiet
// connections (30 s and 10 s more), with every push to that service
// until then answered "wait" and held.
func TestSilentConnectionLeftWithinDeadline(t *testing.T) {
	mock, keyFile, pub := startMock(t)
	proxy := netfreeze.Start(t, "127.0.0.1:"+strconv.Itoa(mock.Port))
	b := newBackend(t, mock, keyFile, webpush.Options{PushDeadline: push.DefaultPushDeadline,
		Guard: webpush.Guard{AllowPrivate: true, Ports: []int{proxy.Port()}}})
	sub, err := mock.SubscribeAt("https://"+proxy.Addr(), pub)
	if err != nil {
		t.Fatal(err)
	}
	n := push.Notification{Node: "n1", Token: sub.JSON, Priority: push.PriorityHigh}
	if err := b.Send(context.Background(), n); err != nil {
		t.Fatal(err)
	}
	proxy.Freeze()
	start := time.Now()
	if err := b.Send(context.Background(), n); err != nil {
		t.Fatalf("push as the connection went silent: %v after %s (%d connections), want it sent on a new one", err, time.Since(start), proxy.Connections())
	}
	t.Logf("sent after %s", time.Since(start))
}
