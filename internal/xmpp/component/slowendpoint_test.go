package component_test

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"testing"
	"time"

	"github.com/push-appserver/push-appserver/internal/appserver"
	"github.com/push-appserver/push-appserver/internal/push"
	"github.com/push-appserver/push-appserver/internal/push/webpush"
	"github.com/push-appserver/push-appserver/internal/registry/memory"
	"github.com/push-appserver/push-appserver/internal/testutil/netfreeze"
	"github.com/push-appserver/push-appserver/internal/testutil/webpushmock"
	"github.com/push-appserver/push-appserver/internal/xmpp/component"
)

// TestSlowWebPushEndpointHoldsNoConnection: a WebPush endpoint is chosen
// by whoever registers. One user registers a few subscriptions at an
// endpoint that accepts connections and never answers, and publishes to
// them (any XMPP user can send publishes to the component). Those pushes
// may fail at their deadline, but a push to another user's device on the
// same connection must not wait for them, even when they are more than
// may wait on a timer without a slot (the WebPush backend bounds them).
func TestSlowWebPushEndpointHoldsNoConnection(t *testing.T) {
	const slots = 8
	const deadline = 3 * time.Second
	// An endpoint that takes the connection and says nothing.
	hangPort := netfreeze.Silent(t)
	mock, keyFile, pub := webpushmock.Start(t)
	logger := slog.New(slog.DiscardHandler)
	web, err := webpush.New(webpush.Options{VAPIDKeyFile: keyFile, VAPIDSubject: "mailto:ops@example.org", CAPath: mock.CADir,
		PushDeadline: deadline, Guard: webpush.Guard{AllowPrivate: true, Ports: []int{mock.Port, hangPort}}}, logger)
	if err != nil {
		t.Fatal(err)
	}
	svc, err := appserver.New(memory.New(), []appserver.App{{Name: "web", Priority: push.PriorityHigh, Backend: web}},
		appserver.Options{RateLimit: time.Minute, PushTimeout: 15 * time.Second}, logger)
	if err != nil {
		t.Fatal(err)
	}
	st := serveWith(t, svc, slots, logger)

	bad, err := mock.SubscribeAt("https://127.0.0.1:"+strconv.Itoa(hangPort), pub)
	if err != nil {
		t.Fatal(err)
	}
	good, err := mock.Subscribe(pub)
	if err != nil {
		t.Fatal(err)
	}
	reg := func(node, token string) string {
		r, err := svc.Register(context.Background(), appserver.Caller{}, "web", node, token)
		if err != nil {
			t.Fatal(err)
		}
		return r.Secret
	}
	const attackers = slots + component.WaitingPerSlot*slots + 1
	for i := range attackers {
		node := fmt.Sprint("attacker-", i)
		st.send(t, publish(node, node, reg(node, bad.JSON), true))
	}
	time.Sleep(200 * time.Millisecond)
	victim := reg("victim", good.JSON)
	start := time.Now()
	st.send(t, publish("victim", "victim", victim, true))
	for {
		r := st.next(t)
		if r.ID != "victim" {
			continue
		}
		took := time.Since(start)
		if r.Type != "result" {
			t.Fatalf("victim's push: %+v", r)
		}
		if took > time.Second {
			t.Fatalf("victim's push answered after %v: %d pushes to one hanging endpoint held every slot of the connection", took.Round(time.Millisecond), attackers)
		}
		return
	}
}
