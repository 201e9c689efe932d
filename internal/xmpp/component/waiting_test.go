package component_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/push-appserver/push-appserver/internal/appserver"
	"github.com/push-appserver/push-appserver/internal/push"
	"github.com/push-appserver/push-appserver/internal/push/apns"
	"github.com/push-appserver/push-appserver/internal/registry/memory"
	"github.com/push-appserver/push-appserver/internal/testutil/apnsmock"
	"github.com/push-appserver/push-appserver/internal/testutil/logcore"
	"github.com/push-appserver/push-appserver/internal/testutil/xmppfake"
	"github.com/push-appserver/push-appserver/internal/xmpp/component"
)

// entered counts the pushes that reached the real backend and tells when
// a number of them did.
type entered struct {
	push.Backend
	n       atomic.Int64
	at      int64
	reached chan struct{}
}

func (e *entered) Send(ctx context.Context, n push.Notification) error {
	if e.n.Add(1) == e.at {
		close(e.reached)
	}
	return e.Backend.Send(ctx, n)
}

// TestFreshPushNotHeldUp: a push to a healthy device is answered in its
// normal time while 110 pushes wait for their throttle window and 80
// retry against a token APNS answers 503 for. With only 64 in-flight slots,
// either group alone would hold every slot if waiting counted as work;
// together they are within the 192 that may wait without one.
func TestFreshPushNotHeldUp(t *testing.T) {
	const delayed, retrying, slots = 110, 80, 64
	p8, pub, err := apnsmock.TokenKey()
	if err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(t.TempDir(), "key.p8")
	os.WriteFile(keyFile, p8, 0o600)
	mock, err := apnsmock.New(apnsmock.Config{TokenKey: pub, KeyID: "K1", TeamID: "T1", Topic: "im.example.app"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(mock.Close)
	logger := slog.New(slog.DiscardHandler)
	// Long enough that every waiting push still waits when the fresh one
	// comes, short enough that the test ends soon after.
	const budget = 6 * time.Second
	backend, err := apns.New(apns.Options{
		Topic: "im.example.app", Endpoint: mock.URL, CAPath: mock.CADir,
		TokenKeyFile: keyFile, KeyID: "K1", TeamID: "T1", PushDeadline: budget,
	}, logger)
	if err != nil {
		t.Fatal(err)
	}
	counted := &entered{Backend: backend, at: delayed + retrying, reached: make(chan struct{})}
	svc, err := appserver.New(memory.New(), []appserver.App{{Name: "apns", Priority: push.PriorityHigh, Backend: counted}},
		appserver.Options{RateLimit: time.Minute, PushTimeout: budget}, logger)
	if err != nil {
		t.Fatal(err)
	}
	st := serveWith(t, svc, slots, logger)

	good, bad := strings.Repeat("0a", 32), strings.Repeat("0b", 32)
	faults := make([]apnsmock.Fault, 100*retrying)
	for i := range faults {
		faults[i] = apnsmock.Fault{Status: 503, Reason: "ServiceUnavailable"}
	}
	mock.FailToken(bad, faults...)
	reg := func(node, token string) string {
		r, err := svc.Register(context.Background(), appserver.Caller{}, "apns", node, token)
		if err != nil {
			t.Fatal(err)
		}
		return r.Secret
	}
	secrets := make([]string, delayed)
	for i := range delayed {
		secrets[i] = reg(fmt.Sprint("d", i), good)
		st.send(t, publish(fmt.Sprint("first-", i), fmt.Sprint("d", i), secrets[i], true))
	}
	for range delayed {
		if r := st.next(t); r.Type != "result" {
			t.Fatalf("first push: %+v", r)
		}
	}
	// The second push to each device waits a minute for its window.
	for i := range delayed {
		st.send(t, publish(fmt.Sprint("second-", i), fmt.Sprint("d", i), secrets[i], true))
	}
	for i := range retrying {
		st.send(t, publish(fmt.Sprint("retry-", i), fmt.Sprint("r", i), reg(fmt.Sprint("r", i), bad), true))
	}
	select {
	case <-counted.reached: // every retrying push is under way
	case <-time.After(budget):
		t.Fatalf("only %d of %d pushes reached the backend: waiting pushes hold the slots", counted.n.Load(), delayed+retrying)
	}

	freshSecret := reg("fresh", good)
	start := time.Now()
	st.send(t, publish("fresh", "fresh", freshSecret, true))
	for {
		r := st.next(t)
		if r.ID != "fresh" {
			continue
		}
		took := time.Since(start)
		t.Logf("fresh push answered in %v with %d throttle-delayed and %d retrying pushes pending", took, delayed, retrying)
		if r.Type != "result" {
			t.Fatalf("fresh push: %+v", r)
		}
		// Normally a few ms; held up, it waits for a retry budget
		// (6 s) or a throttle window (1 min). Generous for a loaded
		// machine.
		if took > 2*time.Second {
			t.Fatalf("fresh push took %v", took)
		}
		return
	}
}

// serveWith runs a component with slots in-flight slots in front of svc
// against a fake XMPP server until the test ends, and returns the stream
// it connected on.
func serveWith(t *testing.T, svc *appserver.Service, slots int, logger *slog.Logger) *stream {
	t.Helper()
	st, _ := serveConn(t, svc, slots, logger)
	return st
}

// serveConn is serveWith that returns the component too.
func serveConn(t *testing.T, svc *appserver.Service, slots int, logger *slog.Logger) (*stream, *component.Conn) {
	t.Helper()
	srv := newFakeServer(t, secret)
	conn := component.New(component.Options{Addr: srv.Addr(), JID: compJID, Secret: secret, MaxInFlight: slots, Logger: logger}, svc)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- conn.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return srv.accept(t), conn
}

// nopBackend accepts every push.
type nopBackend struct{}

func (nopBackend) Send(context.Context, push.Notification) error { return nil }

// TestWorkersEndAfterWaitingBurst: each push waiting on a timer (here its
// throttle window; an APNS or FCM incident's retry backoff does the same)
// holds a worker goroutine; once the burst is answered, the workers past
// what the slots can use end instead of staying parked for the session.
func TestWorkersEndAfterWaitingBurst(t *testing.T) {
	const slots, devices = 8, 2000
	logger := slog.New(slog.DiscardHandler)
	svc, err := appserver.New(memory.New(), []appserver.App{{Name: "fcm", Priority: push.PriorityHigh, Backend: nopBackend{}}},
		appserver.Options{RateLimit: time.Second, PushTimeout: 5 * time.Second}, logger)
	if err != nil {
		t.Fatal(err)
	}
	st := serveWith(t, svc, slots, logger)
	secrets := make([]string, devices)
	for i := range devices {
		r, err := svc.Register(context.Background(), appserver.Caller{}, "fcm", fmt.Sprint("d", i), "tok")
		if err != nil {
			t.Fatal(err)
		}
		secrets[i] = r.Secret
	}
	for i := range devices {
		st.send(t, publish(fmt.Sprint("first-", i), fmt.Sprint("d", i), secrets[i], true))
	}
	for range devices {
		st.next(t)
	}
	runtime.GC()
	before := runtime.NumGoroutine()
	for i := range devices {
		st.send(t, publish(fmt.Sprint("second-", i), fmt.Sprint("d", i), secrets[i], true))
	}
	for range devices {
		if r := st.next(t); !sentOrThrottled(r) {
			t.Fatalf("second push: %+v", r)
		}
	}
	// Every push is answered; the session is idle from here on, and the
	// workers past what it keeps end as they finish.
	after := runtime.NumGoroutine()
	for deadline := time.Now().Add(10 * time.Second); after-before > 2*slots+1 && time.Now().Before(deadline); after = runtime.NumGoroutine() {
		time.Sleep(10 * time.Millisecond)
	}
	t.Logf("goroutines: %d before the burst, %d idle afterwards", before, after)
	if after-before > 2*slots+1 {
		t.Errorf("%d goroutines left parked by an idle session 10 s after %d waiting pushes (%d slots)", after-before, devices, slots)
	}
}

// BenchmarkPublish sends publishes, 100 at a time, through a component
// connection to the real core on the log backend, and reads the answers
// as bytes: what the component costs a push besides its push service.
func BenchmarkPublish(b *testing.B) {
	const batch = 100
	svc := logcore.New(b, appserver.Options{})
	srv, err := xmppfake.Listen(compJID, secret)
	if err != nil {
		b.Fatal(err)
	}
	defer srv.Close()
	conn := component.New(component.Options{Addr: srv.Addr(), JID: compJID, Secret: secret, Logger: slog.New(slog.DiscardHandler)}, svc)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- conn.Run(ctx) }()
	defer func() { cancel(); <-done }()
	st, err := srv.Accept(10 * time.Second)
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	var out strings.Builder
	for i := range batch {
		node := fmt.Sprint("n", i)
		r, err := svc.Register(context.Background(), appserver.Caller{}, "fcm", node, "tok-"+node)
		if err != nil {
			b.Fatal(err)
		}
		out.WriteString(publish(fmt.Sprint(i), node, r.Secret, true))
	}
	publishes := out.String()
	const answered = `type='result'`
	buf := make([]byte, 64<<10)
	b.ReportAllocs()
	for b.Loop() {
		if err := st.Send(publishes); err != nil {
			b.Fatal(err)
		}
		// Each answer is whole in one write of the component's, but
		// writes may come split or together.
		var pending []byte
		for n := 0; n < batch; {
			st.Conn.SetReadDeadline(time.Now().Add(10 * time.Second))
			k, err := st.Conn.Read(buf)
			if err != nil {
				b.Fatal(err)
			}
			pending = append(pending, buf[:k]...)
			n += bytes.Count(pending, []byte(answered))
			if i := bytes.LastIndex(pending, []byte(answered)); i >= 0 {
				pending = pending[i+len(answered):]
			}
			if len(pending) > len(answered) {
				pending = pending[len(pending)-len(answered):]
			}
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N*batch)/b.Elapsed().Seconds(), "pushes/s")
}

// TestPausedPushesBounded: a push waiting for its throttle window gives
// its in-flight slot up, but it is still a goroutine; whoever can send
// publishes for many nodes of their own keeps one waiting per node per
// window. Past 3 × max_in_flight such pushes, one is refused as the
// throttle's others are (wait, service-unavailable) rather than wait
// holding its slot.
func TestPausedPushesBounded(t *testing.T) {
	const slots, nodes, window = 2, 200, 3 * time.Second
	const places = slots + slots + component.WaitingPerSlot*slots // fresh, resumed, waiting
	logger := slog.New(slog.DiscardHandler)
	svc, err := appserver.New(memory.New(), []appserver.App{{Name: "fcm", Priority: push.PriorityHigh, Backend: nopBackend{}}},
		appserver.Options{RateLimit: window, PushTimeout: 30 * time.Second}, logger)
	if err != nil {
		t.Fatal(err)
	}
	st, conn := serveConn(t, svc, slots, logger)

	var first, second strings.Builder
	for i := range nodes {
		node := fmt.Sprint("n", i)
		r, err := svc.Register(context.Background(), appserver.Caller{}, "fcm", node, "tok")
		if err != nil {
			t.Fatal(err)
		}
		first.WriteString(publish(fmt.Sprint("first-", i), node, r.Secret, true))
		second.WriteString(publish(fmt.Sprint("second-", i), node, r.Secret, true))
	}
	// No node's window begins before sent, so no second push goes to
	// its push service before sent+window: until then every IQ handled
	// holds a place (a waiting push its waiting one), none being with
	// the push service without one, as a push is from Leave to Return.
	sent := time.Now()
	st.send(t, first.String())
	for range nodes {
		if r := st.next(t); r.Type != "result" {
			t.Fatalf("first push: %+v", r)
		}
	}
	for conn.Handling() > 0 {
		time.Sleep(time.Millisecond) // the handlers of the answers read return
	}
	// Each second push waits for its node's window. The component stops
	// reading them while past the bound: written aside.
	written := make(chan error, 1)
	go func() { written <- st.Send(second.String()) }()
	var peak, samples int64
	for time.Since(sent) < window/2 {
		peak = max(peak, conn.Handling())
		samples++
		time.Sleep(time.Millisecond)
	}
	if samples == 0 {
		t.Fatalf("the first pushes took more than %v: no time left to look at the second ones before their windows", window/2)
	}
	for range nodes {
		if r := st.next(t); !sentOrThrottled(r) {
			t.Fatalf("second push: %+v", r)
		}
	}
	if err := <-written; err != nil {
		t.Fatal(err)
	}
	t.Logf("at most %d IQs handled at once for %d pushes waiting for their window (%d places, %d looks)", peak, nodes, places, samples)
	if peak > places {
		t.Fatalf("%d IQs handled at once for %d waiting pushes: waiting pushes are not bounded (%d places)", peak, nodes, places)
	}
}

// sentOrThrottled reports whether r answers a push as sent, or as refused
// by the throttle: a delayed push finding no place to wait without its
// slot is refused.
func sentOrThrottled(r reply) bool {
	return r.Type == "result" || r.Type == "error" && strings.Contains(r.Inner, "<error type='wait'><service-unavailable")
}
