package component_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/push-appserver/push-appserver/internal/appserver"
	"github.com/push-appserver/push-appserver/internal/push"
	"github.com/push-appserver/push-appserver/internal/push/apns"
	"github.com/push-appserver/push-appserver/internal/push/webpush"
	"github.com/push-appserver/push-appserver/internal/registry/memory"
	"github.com/push-appserver/push-appserver/internal/testutil/apnsmock"
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

// TestUnansweringAPNSHoldsNoConnection: two apps on one component
// connection. The APNS app's service takes requests and answers none (an
// Apple incident, a black-holed route), or cannot be reached in a way
// that hangs (a firewall that drops, a TLS handshake never answered), and
// twice as many of its pushes as the connection has slots are under way.
// A push to the healthy app on the same connection must not wait for
// their deadline: a push with its app's push service holds no slot,
// whether it waits for an answer or for a connection.
func TestUnansweringAPNSHoldsNoConnection(t *testing.T) {
	const slots = 8
	const budget = 3 * time.Second
	p8, pub, err := apnsmock.TokenKey()
	if err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(t.TempDir(), "key.p8")
	os.WriteFile(keyFile, p8, 0o600)
	for _, tc := range []struct {
		name     string
		endpoint func(t *testing.T) (url, caDir string)
	}{
		{"answers nothing", func(t *testing.T) (string, string) {
			mock, err := apnsmock.New(apnsmock.Config{TokenKey: pub, KeyID: "K1", TeamID: "T1", Topic: "im.example.app", Latency: time.Minute})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(mock.Close)
			return mock.URL, mock.CADir
		}},
		{"cannot be reached", func(t *testing.T) (string, string) {
			return "https://127.0.0.1:" + strconv.Itoa(netfreeze.Silent(t)), t.TempDir()
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			endpoint, caDir := tc.endpoint(t)
			logger := slog.New(slog.DiscardHandler)
			ios, err := apns.New(apns.Options{
				Topic: "im.example.app", Endpoint: endpoint, CAPath: caDir,
				TokenKeyFile: keyFile, KeyID: "K1", TeamID: "T1", PushDeadline: budget,
			}, logger)
			if err != nil {
				t.Fatal(err)
			}
			const iosPushes = 2 * slots
			counted := &entered{Backend: ios, at: iosPushes, reached: make(chan struct{})}
			svc, err := appserver.New(memory.New(), []appserver.App{
				{Name: "ios", Priority: push.PriorityHigh, Backend: counted},
				{Name: "android", Priority: push.PriorityHigh, Backend: nopBackend{}},
			}, appserver.Options{PushTimeout: 15 * time.Second, Redelivery: -1}, logger)
			if err != nil {
				t.Fatal(err)
			}
			st := serveWith(t, svc, slots, logger)
			reg := func(app, node, token string) string {
				r, err := svc.Register(context.Background(), appserver.Caller{}, app, node, token)
				if err != nil {
					t.Fatal(err)
				}
				return r.Secret
			}
			for i := range iosPushes {
				node := fmt.Sprint("ios-", i)
				st.send(t, publish(node, node, reg("ios", node, strings.Repeat("0a", 32)), true))
			}
			victim := reg("android", "android-1", "fcm-token")
			select {
			case <-counted.reached:
			case <-time.After(budget):
				// Holding the slots, the later half waits for the
				// first's deadline before it reaches the push service.
				t.Fatalf("only %d of %d pushes to the APNS app reached it: those with it hold the slots", counted.n.Load(), iosPushes)
			}
			// Normally a few ms; held up, it waits for the APNS
			// pushes' deadline.
			if took := androidPushTook(t, st, victim); took > time.Second {
				t.Fatalf("healthy app's push answered after %v: %d pushes to an APNS that %s held every slot of the connection (%d slots, push_deadline %v)", took.Round(time.Millisecond), iosPushes, tc.name, slots, budget)
			}
		})
	}
}

// stalled is a push service that takes every request and answers none:
// each push ends at its deadline.
type stalled struct{}

func (stalled) Send(ctx context.Context, _ push.Notification) error {
	<-ctx.Done()
	return ctx.Err()
}

// TestStalledAppPushesBounded: pushes with their app's push service hold
// no slot, so the reader goes on reading while a stalled service keeps
// them; what bounds them is the app's bound. A flood of publishes to an
// app whose service answers nothing keeps that many under way, each a
// goroutine, and the rest are answered wait at once.
func TestStalledAppPushesBounded(t *testing.T) {
	const slots, publishes = 8, 3 * appserver.AppMaxInFlight
	const places = slots + slots + component.WaitingPerSlot*slots // fresh, resumed, waiting
	logger := slog.New(slog.DiscardHandler)
	svc, err := appserver.New(memory.New(), []appserver.App{{Name: "ios", Priority: push.PriorityHigh, Backend: stalled{}, Deadline: 5 * time.Second}},
		appserver.Options{PushTimeout: 15 * time.Second}, logger)
	if err != nil {
		t.Fatal(err)
	}
	st, conn := serveConn(t, svc, slots, logger)
	flood := floodOf(t, svc, "ios", publishes)
	sent := make(chan error, 1)
	go func() { sent <- st.Send(flood) }()
	// Those past the bound are answered at once; the others at their
	// deadline, after the test.
	for range publishes - appserver.AppMaxInFlight {
		if r := st.next(t); r.Type != "error" || !strings.Contains(r.Inner, "internal-server-error") || !strings.Contains(r.Inner, "wait") {
			t.Fatalf("push past the bound: %+v", r)
		}
	}
	if err := <-sent; err != nil {
		t.Fatal(err)
	}
	peak := conn.HandlingPeak()
	t.Logf("at most %d IQs handled at once for %d publishes to a stalled app (%d with its service, %d places)", peak, publishes, appserver.AppMaxInFlight, places)
	if peak > appserver.AppMaxInFlight+places {
		t.Fatalf("%d IQs handled at once for %d publishes to a stalled app: pushes with their service are not bounded (%d, and %d places)", peak, publishes, appserver.AppMaxInFlight, places)
	}
}

// busy is a healthy push service that answers every push after 100 ms.
type busy struct{}

func (busy) Send(ctx context.Context, _ push.Notification) error {
	select {
	case <-time.After(100 * time.Millisecond):
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// TestBurstToHealthyBusyAppServed: a healthy service answering in 100 ms,
// a burst of 3,000 publishes (a large group chat, a broadcast) on one
// stream with the default 256 slots. More pushes than AppMaxInFlight are
// with the service at once, and those past it are sent holding their
// slot, so the reader stops as it always did: none is answered wait,
// which with redelivery off would lose it.
func TestBurstToHealthyBusyAppServed(t *testing.T) {
	const slots, publishes = 256, 3000
	logger := slog.New(slog.DiscardHandler)
	svc, err := appserver.New(memory.New(), []appserver.App{{Name: "ios", Priority: push.PriorityHigh, Backend: busy{}}},
		appserver.Options{PushTimeout: 15 * time.Second, Redelivery: -1}, logger)
	if err != nil {
		t.Fatal(err)
	}
	st, _ := serveConn(t, svc, slots, logger)
	flood := floodOf(t, svc, "ios", publishes)
	start := time.Now()
	sent := make(chan error, 1)
	go func() { sent <- st.Send(flood) }()
	waits := 0
	for range publishes {
		if r := st.next(t); r.Type != "result" {
			waits++
		}
	}
	if err := <-sent; err != nil {
		t.Fatal(err)
	}
	t.Logf("%d publishes answered in %v, %d of them with an error", publishes, time.Since(start).Round(time.Millisecond), waits)
	if waits > 0 {
		t.Fatalf("%d of %d pushes to a healthy app answering in 100 ms answered wait (with redelivery off: lost)", waits, publishes)
	}
}

// floodOf registers n devices of app and returns a publish for each, in
// one string to write at once.
func floodOf(t *testing.T, svc *appserver.Service, app string, n int) string {
	t.Helper()
	var flood strings.Builder
	for i := range n {
		node := fmt.Sprint("n", i)
		r, err := svc.Register(context.Background(), appserver.Caller{}, app, node, fmt.Sprint("tok-", i))
		if err != nil {
			t.Fatal(err)
		}
		flood.WriteString(publish(node, node, r.Secret, true))
	}
	return flood.String()
}

// androidPushTook publishes to node android-1 of the healthy app on st
// and returns how long its answer, a result, took.
func androidPushTook(t *testing.T, st *stream, victim string) time.Duration {
	t.Helper()
	start := time.Now()
	st.send(t, publish("android-1", "android-1", victim, true))
	for {
		r := st.next(t)
		if r.ID != "android-1" {
			continue
		}
		took := time.Since(start)
		if r.Type != "result" {
			t.Fatalf("android push: %+v", r)
		}
		t.Logf("android push answered after %v", took.Round(time.Millisecond))
		return took
	}
}
