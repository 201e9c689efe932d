package webpush_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/push-appserver/push-appserver/internal/push"
	"github.com/push-appserver/push-appserver/internal/push/webpush"
	"github.com/push-appserver/push-appserver/internal/reload"
	"github.com/push-appserver/push-appserver/internal/testutil/logbuf"
	"github.com/push-appserver/push-appserver/internal/testutil/netfreeze"
	"github.com/push-appserver/push-appserver/internal/testutil/webpushmock"
)

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// setup starts a mock, writes a VAPID key and returns a backend allowed to
// reach the mock on loopback, and the key's public half.
func setup(t testing.TB, opts webpush.Options) (*webpushmock.Server, *webpush.Backend, string) {
	t.Helper()
	mock, keyFile, pub := startMock(t)
	if opts.Guard.Ports == nil {
		opts.Guard = webpush.Guard{AllowPrivate: true, Ports: []int{mock.Port}}
	}
	return mock, newBackend(t, mock, keyFile, opts), pub
}

// startMock starts a mock and writes a VAPID key, returning its file and
// public half.
func startMock(t testing.TB) (*webpushmock.Server, string, string) {
	t.Helper()
	return webpushmock.Start(t)
}

// newBackend makes a backend signing with keyFile and trusting the mock.
func newBackend(t testing.TB, mock *webpushmock.Server, keyFile string, opts webpush.Options) *webpush.Backend {
	t.Helper()
	opts.VAPIDKeyFile = keyFile
	if opts.VAPIDSubject == "" {
		opts.VAPIDSubject = "mailto:ops@example.org"
	}
	opts.CAPath = mock.CADir
	b, err := webpush.New(opts, quiet())
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func subscribe(t testing.TB, mock *webpushmock.Server, pub string) webpushmock.Subscription {
	t.Helper()
	sub, err := mock.Subscribe(pub)
	if err != nil {
		t.Fatal(err)
	}
	return sub
}

func summary() *push.Summary {
	return &push.Summary{MessageCount: 3, LastMessageSender: "juliet@example.org", LastMessageBody: "wherefore art thou", HasLastMessageBody: true}
}

// TestSendPayloadAndHeaders: what the service worker gets, and the RFC
// 8030 headers, for alert and silent pushes with and without the summary.
func TestSendPayloadAndHeaders(t *testing.T) {
	cases := []struct {
		name    string
		opts    webpush.Options
		prio    push.Priority
		want    webpush.Payload
		urgency string
		ttl     string
		topic   string
	}{
		{"alert with summary", webpush.Options{IncludeSummary: true, Collapse: true}, push.PriorityHigh,
			webpush.Payload{Node: "n1", MessageCount: 3, LastMessageSender: "juliet@example.org", LastMessageBody: "wherefore art thou"}, "high", "86400", "xmpp-push"},
		{"alert without summary", webpush.Options{TTL: time.Hour}, push.PriorityHigh,
			webpush.Payload{Node: "n1", MessageCount: 3}, "high", "3600", ""},
		{"silent", webpush.Options{}, push.PrioritySilent,
			webpush.Payload{Node: "n1", MessageCount: 3}, "normal", "86400", ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			mock, b, pub := setup(t, c.opts)
			sub := subscribe(t, mock, pub)
			if err := b.Send(context.Background(), push.Notification{App: "web", Node: "n1", Token: sub.JSON, Priority: c.prio, Summary: summary()}); err != nil {
				t.Fatal(err)
			}
			ms := mock.Messages()
			if len(ms) != 1 || ms[0].Status != 201 {
				t.Fatalf("mock saw %+v", ms)
			}
			m := ms[0]
			var got webpush.Payload
			if err := json.Unmarshal(m.Plaintext, &got); err != nil {
				t.Fatalf("payload %q: %v", m.Plaintext, err)
			}
			if got != c.want {
				t.Errorf("payload %+v, want %+v", got, c.want)
			}
			if m.Header.Get("Urgency") != c.urgency || m.Header.Get("TTL") != c.ttl || m.Header.Get("Topic") != c.topic {
				t.Errorf("headers Urgency=%q TTL=%q Topic=%q", m.Header.Get("Urgency"), m.Header.Get("TTL"), m.Header.Get("Topic"))
			}
			if m.Proto != "HTTP/2.0" {
				t.Errorf("protocol %s, want HTTP/2.0", m.Proto)
			}
		})
	}
}

// TestSendLongBodyFits: a body too long for one record is shortened, not
// refused.
func TestSendLongBodyFits(t *testing.T) {
	mock, b, pub := setup(t, webpush.Options{IncludeSummary: true})
	sub := subscribe(t, mock, pub)
	s := summary()
	long := make([]byte, 10000)
	for i := range long {
		long[i] = '\x01' // JSON escapes each to six bytes
	}
	s.LastMessageBody = string(long)
	if err := b.Send(context.Background(), push.Notification{Node: "n1", Token: sub.JSON, Priority: push.PriorityHigh, Summary: s}); err != nil {
		t.Fatal(err)
	}
	if mock.Accepted() != 1 {
		t.Fatal("not accepted")
	}
}

// TestSendShortenedAfter413: a push service that takes less than RFC
// 8030's 4,096 bytes (Mozilla's, bridging Firefox on Android and iOS to
// FCM and APNS) refuses a long summary with 413: the push goes again
// without its text, and wakes the device.
func TestSendShortenedAfter413(t *testing.T) {
	mock, b, pub := setup(t, webpush.Options{IncludeSummary: true})
	sub := subscribe(t, mock, pub)
	mock.SetMaxBody(3015)
	s := summary()
	s.LastMessageBody = strings.Repeat("<b>", 1000)
	if err := b.Send(context.Background(), push.Notification{Node: "n1", Token: sub.JSON, Priority: push.PriorityHigh, Summary: s}); err != nil {
		t.Fatalf("Send = %v, want the push sent without its text", err)
	}
	// The text unpadded may go between, when padding made it longer.
	ms := mock.Messages()
	last := ms[len(ms)-1]
	if len(ms) > 3 || last.Status != 201 {
		t.Fatalf("%d requests, the last answered %d", len(ms), last.Status)
	}
	var got webpush.Payload
	if err := json.Unmarshal(last.Plaintext, &got); err != nil || got.Node != "n1" || got.MessageCount != 3 || got.LastMessageBody != "" || got.LastMessageSender != "" {
		t.Fatalf("last payload %s, %v", last.Plaintext, err)
	}
}

// TestSendAnswers: each push service answer becomes the error the core
// acts on, with the retries it allows.
func TestSendAnswers(t *testing.T) {
	cases := []struct {
		name     string
		faults   []webpushmock.Fault
		gone     bool
		check    func(error) bool
		requests int
	}{
		{"202 accepted", []webpushmock.Fault{{Status: 202}}, false, func(err error) bool { return err == nil }, 1},
		{"404 dead", []webpushmock.Fault{{Status: 404}}, false, isDead, 1},
		{"410 dead", nil, true, isDead, 1},
		{"413 no retry", []webpushmock.Fault{{Status: 413}}, false, func(err error) bool {
			return err != nil && !push.IsTemporary(err) && !isDead(err)
		}, 1},
		{"429 then ok", []webpushmock.Fault{{Status: 429, RetryAfter: "1"}}, false, func(err error) bool { return err == nil }, 2},
		// ntfy's "no subscriber lately" (code 50701): the device has
		// not been connected for hours, and seconds will not change
		// that. Nor is its subscription dead: it subscribes again
		// when it connects.
		{"507 no retry, not dead", []webpushmock.Fault{{Status: 507}, {Status: 507}}, false, func(err error) bool {
			return err != nil && !push.IsTemporary(err) && !isDead(err)
		}, 1},
		{"500, 503 then ok", []webpushmock.Fault{{Status: 500}, {Status: 503}}, false, func(err error) bool { return err == nil }, 3},
		{"400 refresh then ok", []webpushmock.Fault{{Status: 400}}, false, func(err error) bool { return err == nil }, 2},
		{"400 twice refused for this subscription", []webpushmock.Fault{{Status: 400}, {Status: 400}}, false, isDead, 2},
		{"401 refresh then ok", []webpushmock.Fault{{Status: 401}}, false, func(err error) bool { return err == nil }, 2},
		{"403 twice refused for this subscription", []webpushmock.Fault{{Status: 403}, {Status: 403}}, false, isDead, 2},
		// The redirect leads back to the subscription itself, which would
		// accept the push: only not following it fails the push.
		{"307 not followed", []webpushmock.Fault{{Status: 307, Location: "self"}}, false, func(err error) bool {
			return err != nil && !push.IsTemporary(err) && !isDead(err)
		}, 1},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			mock, b, pub := setup(t, webpush.Options{})
			// A push goes through first: the app's key and subject have
			// proven themselves at this push service.
			for range 2 {
				if err := b.Send(context.Background(), push.Notification{Node: "n0", Token: subscribe(t, mock, pub).JSON}); err != nil {
					t.Fatal(err)
				}
			}
			sub := subscribe(t, mock, pub)
			for i, f := range c.faults {
				if f.Location == "self" {
					c.faults[i].Location = sub.Endpoint
				}
			}
			mock.Fail(sub.ID, c.faults...)
			if c.gone {
				mock.Unsubscribe(sub.ID)
			}
			err := b.Send(context.Background(), push.Notification{Node: "n1", Token: sub.JSON, Priority: push.PriorityHigh})
			if !c.check(err) {
				t.Fatalf("Send = %v", err)
			}
			ms := mock.Messages()[2:]
			if len(ms) != c.requests {
				t.Fatalf("%d requests, want %d", len(ms), c.requests)
			}
			if ms[0].Status == 401 && ms[0].Header.Get("Authorization") == ms[1].Header.Get("Authorization") {
				t.Fatal("the refused VAPID token was sent again, not signed afresh")
			}
		})
	}
}

func isDead(err error) bool { _, ok := push.IsDeadToken(err); return ok }

// TestSendRefusedByUnprovenService: a push service where no push of the
// app has gone through refuses our VAPID token (Apple's refuses a subject
// at localhost that others take): the subscription is kept, however
// well the app fares at other push services.
func TestSendRefusedByUnprovenService(t *testing.T) {
	mock, keyFile, pub := startMock(t)
	// The other push service is the mock behind a port of its own.
	proxy := netfreeze.Start(t, "127.0.0.1:"+strconv.Itoa(mock.Port))
	b := newBackend(t, mock, keyFile, webpush.Options{Guard: webpush.Guard{AllowPrivate: true, Ports: []int{mock.Port, proxy.Port()}}})
	for range 30 {
		if err := b.Send(context.Background(), push.Notification{Node: "n0", Token: subscribe(t, mock, pub).JSON}); err != nil {
			t.Fatal(err)
		}
	}
	other, err := mock.SubscribeAt("https://"+proxy.Addr(), pub)
	if err != nil {
		t.Fatal(err)
	}
	mock.Fail(other.ID, webpushmock.Fault{Status: 403}, webpushmock.Fault{Status: 403})
	err = b.Send(context.Background(), push.Notification{Node: "n1", Token: other.JSON, Priority: push.PriorityHigh})
	if !push.IsTemporary(err) {
		t.Fatalf("Send = %v, want a temporary failure (nothing proven at that service)", err)
	}
}

// TestSendJudgedByEachService: a proven push service that starts refusing
// every push of ours (403) while another keeps accepting more (a
// UnifiedPush distributor that checks no VAPID token, or an endpoint of
// an attacker's) is judged by its own answers: past the breaker's
// threshold its refusals keep the subscriptions.
func TestSendJudgedByEachService(t *testing.T) {
	mock, keyFile, pub := startMock(t)
	proxy := netfreeze.Start(t, "127.0.0.1:"+strconv.Itoa(mock.Port))
	breaker := push.NewBreaker("web", push.BreakerOptions{MinAnswers: 6}, quiet())
	b := newBackend(t, mock, keyFile, webpush.Options{Breaker: breaker, Guard: webpush.Guard{AllowPrivate: true, Ports: []int{mock.Port, proxy.Port()}}})
	send := func(s webpushmock.Subscription) error {
		return b.Send(context.Background(), push.Notification{Node: "n1", Token: s.JSON, Priority: push.PriorityHigh})
	}
	other, err := mock.SubscribeAt("https://"+proxy.Addr(), pub)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []webpushmock.Subscription{subscribe(t, mock, pub), other} {
		if err := send(s); err != nil {
			t.Fatal(err)
		}
	}
	dead := 0
	for range 20 {
		s := subscribe(t, mock, pub)
		mock.Fail(s.ID, webpushmock.Fault{Status: 403}, webpushmock.Fault{Status: 403})
		if isDead(send(s)) {
			dead++
		}
		for range 2 {
			if err := send(other); err != nil {
				t.Fatal(err)
			}
		}
	}
	if dead > 6 {
		t.Fatalf("%d of 20 subscriptions at a service refusing every push of ours taken as dead", dead)
	}
}

// TestConnectionsBounded: subscriptions choose their push service, so one
// who registers endpoints at many hosts of a wildcard domain (one server
// behind them) has us connect to each. Past MaxConnections the idle
// connections are closed, not kept for IdleConnTimeout.
func TestConnectionsBounded(t *testing.T) {
	const origins, limit = 120, 40
	mock, b, pub := setup(t, webpush.Options{MaxConnections: limit})
	webpush.ResolveExampleTo(b, "127.0.0.1")
	before := openFDs(t)
	for i := range origins {
		sub, err := mock.SubscribeAt(fmt.Sprintf("https://h%d.example.com:%d", i, mock.Port), pub)
		if err != nil {
			t.Fatal(err)
		}
		if err := b.Send(context.Background(), push.Notification{Node: "n1", Token: sub.JSON, Priority: push.PriorityHigh}); err != nil {
			t.Fatal(err)
		}
	}
	// Each connection is two descriptors here, ours and the mock's; the
	// mock closes its side a moment after ours.
	deadline := time.Now().Add(5 * time.Second)
	for {
		held := (openFDs(t) - before) / 2
		if held <= limit+1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d connections open after pushes to %d push services, with a limit of %d", held, origins, limit)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func openFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// TestPushesUnderWayBounded: pushes to a push service that answered and
// then stops answering, holding the connection, are bounded, at that
// service and in all: one more fails at once, as a temporary failure,
// while a push to another service still goes through until the bound of
// all is reached.
func TestPushesUnderWayBounded(t *testing.T) {
	mock, keyFile, pub := startMock(t)
	// The service answers through a proxy, whose connection then goes
	// silent.
	proxy := netfreeze.Start(t, strings.TrimPrefix(mock.URL, "https://"))
	hang := netfreeze.Silent(t)
	b := newBackend(t, mock, keyFile, webpush.Options{PushDeadline: 3 * time.Second, MaxPushes: 3, MaxPushesPerService: 2,
		Guard: webpush.Guard{AllowPrivate: true, Ports: []int{mock.Port, proxy.Port(), hang}}})
	send := func(s webpushmock.Subscription) error {
		return b.Send(context.Background(), push.Notification{Node: "n", Token: s.JSON, Priority: push.PriorityHigh})
	}
	hanging, err := mock.SubscribeAt("https://127.0.0.1:"+strconv.Itoa(proxy.Port()), pub)
	if err != nil {
		t.Fatal(err)
	}
	if err := send(hanging); err != nil {
		t.Fatal(err)
	}
	proxy.Freeze()
	for range 2 {
		go send(hanging)
	}
	waitUnderWay(t, b, 2)
	start := time.Now()
	if err := send(hanging); !push.IsTemporary(err) || time.Since(start) > time.Second {
		t.Fatalf("a third push to the hanging service: %v after %v, want a temporary failure at once", err, time.Since(start))
	}
	healthy := subscribe(t, mock, pub)
	if err := send(healthy); err != nil {
		t.Fatalf("a push to another service: %v", err)
	}
	// Another service that takes the connection and says nothing.
	other, err := mock.SubscribeAt("https://localhost:"+strconv.Itoa(hang), pub)
	if err != nil {
		t.Fatal(err)
	}
	go send(other)
	waitUnderWay(t, b, 3)
	if err := send(healthy); !push.IsTemporary(err) {
		t.Fatalf("a push past the bound of all: %v, want a temporary failure", err)
	}
}

// waitUnderWay waits until b has n pushes under way.
func waitUnderWay(t *testing.T, b *webpush.Backend, n int) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(time.Millisecond) {
		if all, _ := webpush.UnderWay(b); all >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("never %d pushes under way", n)
		}
	}
}

// TestSendRetriesEndAtDeadline: a service that keeps failing gets retries
// until the push deadline, then the core sees a temporary error.
func TestSendRetriesEndAtDeadline(t *testing.T) {
	mock, b, pub := setup(t, webpush.Options{PushDeadline: 2 * time.Second})
	sub := subscribe(t, mock, pub)
	faults := make([]webpushmock.Fault, 100)
	for i := range faults {
		faults[i] = webpushmock.Fault{Status: 503}
	}
	mock.Fail(sub.ID, faults...)
	err := b.Send(context.Background(), push.Notification{Node: "n1", Token: sub.JSON, Priority: push.PriorityHigh})
	if !push.IsTemporary(err) {
		t.Fatalf("Send = %v, want a temporary error", err)
	}
	if n := len(mock.Messages()); n < 2 || n >= 100 {
		t.Fatalf("%d requests", n)
	}
}

// TestSendWrongKey: the push service refuses our VAPID token for
// subscriptions made for another application server key. Now and then
// that is such a subscription, which can never work for us (dead); for
// most pushes it is our key that changed, and the breaker keeps the
// registrations (temporary failure) until pushes succeed again.
func TestSendWrongKey(t *testing.T) {
	mock, keyFile, pub := startMock(t)
	breaker := push.NewBreaker("web", push.BreakerOptions{MinAnswers: 6}, quiet())
	b := newBackend(t, mock, keyFile, webpush.Options{Breaker: breaker, Guard: webpush.Guard{AllowPrivate: true, Ports: []int{mock.Port}}})
	other, err := webpush.GenerateVAPIDKey(filepath.Join(t.TempDir(), "other.pem"))
	if err != nil {
		t.Fatal(err)
	}
	good := subscribe(t, mock, pub)
	send := func(s webpushmock.Subscription) error {
		return b.Send(context.Background(), push.Notification{Node: "n1", Token: s.JSON, Priority: push.PriorityHigh})
	}
	for range 3 {
		if err := send(good); err != nil {
			t.Fatal(err)
		}
	}
	if err := send(subscribe(t, mock, other)); !isDead(err) {
		t.Fatalf("one subscription for another key: %v, want dead", err)
	}
	var err2 error
	for range 3 {
		err2 = send(subscribe(t, mock, other))
	}
	if isDead(err2) || !push.IsTemporary(err2) {
		t.Fatalf("most pushes refused: %v, want temporary (keep the registration)", err2)
	}
	if bad, _ := breaker.Misconfigured(); !bad {
		t.Fatal("breaker not tripped")
	}
}

// TestSendReusesConnection: many pushes to one push service share one
// HTTP/2 connection.
func TestSendReusesConnection(t *testing.T) {
	mock, b, pub := setup(t, webpush.Options{})
	sub := subscribe(t, mock, pub)
	n := push.Notification{Node: "n1", Token: sub.JSON, Priority: push.PriorityHigh}
	if err := b.Send(context.Background(), n); err != nil {
		t.Fatal(err)
	}
	errs := make(chan error, 20)
	for range 20 {
		go func() { errs <- b.Send(context.Background(), n) }()
	}
	for range 20 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if c := mock.Connections(); c != 1 {
		t.Fatalf("%d connections for 21 pushes, want 1", c)
	}
}

// BenchmarkSend: pushes with a summary, encrypted and sent over one
// pooled HTTP/2 connection to the mock, which decrypts each.
func BenchmarkSend(b *testing.B) {
	mock, be, pub := setup(b, webpush.Options{IncludeSummary: true})
	sub := subscribe(b, mock, pub)
	n := push.Notification{Node: "n1", Token: sub.JSON, Priority: push.PriorityHigh, Summary: summary()}
	// One push first, as a running server has sent before: a service
	// that has not answered lately takes only a share of the pushes
	// under way (see underway.go), and 128 at once to it are refused.
	if err := be.Send(context.Background(), n); err != nil {
		b.Fatal(err)
	}
	b.SetParallelism(64)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := be.Send(context.Background(), n); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "pushes/s")
}

// A connection to a push service that goes silent without closing (a NAT
// that forgot it) is found by the HTTP/2 health check and left: the next
// push goes out on a new connection instead of waiting for its deadline
// on the dead one.
func TestSilentConnectionLeft(t *testing.T) {
	mock, keyFile, pub := startMock(t)
	proxy := netfreeze.Start(t, "127.0.0.1:"+strconv.Itoa(mock.Port))
	b := newBackend(t, mock, keyFile, webpush.Options{PushDeadline: 2 * time.Second,
		Guard: webpush.Guard{AllowPrivate: true, Ports: []int{proxy.Port()}}})
	webpush.SetPings(b, 200*time.Millisecond, 300*time.Millisecond)
	sub, err := mock.SubscribeAt("https://"+proxy.Addr(), pub)
	if err != nil {
		t.Fatal(err)
	}
	n := push.Notification{Node: "n1", Token: sub.JSON, Priority: push.PriorityHigh}
	if err := b.Send(context.Background(), n); err != nil {
		t.Fatal(err)
	}
	proxy.Freeze()
	time.Sleep(time.Second)
	start := time.Now()
	if err := b.Send(context.Background(), n); err != nil {
		t.Fatalf("push after the connection went silent: %v", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("push after the connection went silent took %v", d)
	}
	if c := proxy.Connections(); c != 2 {
		t.Errorf("%d connections, want 2: the silent one left, a new one for the push", c)
	}
}

// TestRefusalsDoNotFloodLog: a subscription chooses its push service, so
// anyone who registers one at a server of their own that answers every
// push with, say, 418 must not get one warn line per push into the log.
func TestRefusalsDoNotFloodLog(t *testing.T) {
	mock, keyFile, pub := startMock(t)
	var buf logbuf.Buffer
	b, err := webpush.New(webpush.Options{VAPIDKeyFile: keyFile, VAPIDSubject: "mailto:ops@example.org", CAPath: mock.CADir,
		Guard: webpush.Guard{AllowPrivate: true, Ports: []int{mock.Port}}},
		slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo})))
	if err != nil {
		t.Fatal(err)
	}
	sub := subscribe(t, mock, pub)
	const n = 100
	faults := make([]webpushmock.Fault, n)
	for i := range faults {
		faults[i] = webpushmock.Fault{Status: 418}
	}
	mock.Fail(sub.ID, faults...)
	for i := 0; i < n; i++ {
		if err := b.Send(context.Background(), push.Notification{Node: "n", Token: sub.JSON}); err == nil {
			t.Fatal("push accepted")
		}
	}
	lines := strings.Count(buf.String(), "push service rejected push")
	t.Logf("first line: %.200s", buf.String())
	if lines > 20 {
		t.Errorf("%d refused pushes wrote %d warn lines, no rate limit", n, lines)
	}
}

// The operator replaces vapid_key_file by mistake (vapid-keygen over the
// old file) and reloads. One browser subscribes afresh with the new public
// key and its push goes through; the ten subscriptions made for the old
// key are refused (403). On a quiet server (under 20 pushes a minute)
// they must be kept all the same, so that putting the old key back
// helps.
func TestReplacedVAPIDKeyQuietServer(t *testing.T) {
	mock, _, oldPub := startMock(t)
	guard := webpush.Guard{AllowPrivate: true, Ports: []int{mock.Port}}
	breaker := push.NewBreaker("web", push.BreakerOptions{}, quiet())
	// The subscriptions worked with the old key (long ago: nothing of
	// it is in the breaker's minute).
	var subs []webpushmock.Subscription
	for range 10 {
		subs = append(subs, subscribe(t, mock, oldPub))
	}
	send := func(b *webpush.Backend, s webpushmock.Subscription) error {
		return b.Send(context.Background(), push.Notification{Node: "n", Token: s.JSON, Priority: push.PriorityHigh})
	}
	// Key replaced, reloaded: a new backend with a fresh breaker, as
	// cmd/push-appserver's BuildApp makes it.
	newKeyFile := filepath.Join(t.TempDir(), "vapid.pem")
	newPub, err := webpush.GenerateVAPIDKey(newKeyFile)
	if err != nil {
		t.Fatal(err)
	}
	nb := newBackend(t, mock, newKeyFile, webpush.Options{Breaker: breaker.Fresh(), Guard: guard})
	if err := send(nb, subscribe(t, mock, newPub)); err != nil {
		t.Fatal(err)
	}
	deleted := 0
	for _, s := range subs {
		if isDead(send(nb, s)) {
			deleted++
		}
	}
	if deleted > 0 {
		t.Fatalf("%d of 10 subscriptions made for the replaced key declared dead (deleted) while refusals were 10 of 11 answers", deleted)
	}
}

// The bound on a WebPush app's connections (MaxConnections, half the
// descriptor reserve) is per backend, and a reload builds a new backend
// while the old one is closed only push_timeout and a second later: the
// old one's idle connections must go at the swap, or a few reloads in
// that time would let subscriptions at many origins hold a multiple of
// the bound, the descriptors it leaves APNS, FCM, the registry and the
// component.
func TestReloadKeepsWebPushWithinItsBound(t *testing.T) {
	const origins, limit, reloads = 40, 40, 3
	mock, keyFile, pub := startMock(t)
	build := func() *webpush.Backend {
		b := newBackend(t, mock, keyFile, webpush.Options{MaxConnections: limit, Guard: webpush.Guard{AllowPrivate: true, Ports: []int{mock.Port}}})
		webpush.ResolveExampleTo(b, "127.0.0.1")
		return b
	}
	subs := make([]string, origins)
	for i := range subs {
		s, err := mock.SubscribeAt(fmt.Sprintf("https://h%d.example.com:%d", i, mock.Port), pub)
		if err != nil {
			t.Fatal(err)
		}
		subs[i] = s.JSON
	}
	before := openFDs(t)
	sw := reload.NewBackend(build())
	for r := 0; r <= reloads; r++ {
		if r > 0 {
			sw.Swap(build(), 16*time.Second) // push_timeout (15 s default) + 1 s
		}
		for _, tok := range subs {
			if err := sw.Send(context.Background(), push.Notification{Node: "n", Token: tok, Priority: push.PriorityHigh}); err != nil {
				t.Fatal(err)
			}
		}
	}
	// Each connection is two descriptors here, ours and the mock's; the
	// mock closes its side a moment after ours.
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		held := (openFDs(t) - before) / 2
		if held <= limit+1+reloads { // a connection each old backend was handing back as it was swapped out: closed at its retirement
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d connections to push services open after %d reloads, with a bound of %d", held, reloads, limit)
		}
	}
}

// One subscription endpoint, spelled as URLs and JSON allow, with any
// keys: one device.
func TestDeviceKeySpellings(t *testing.T) {
	_, b, _ := setup(t, webpush.Options{})
	const key, auth = "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4", "BTBZMqHH6r4Tts7J_aSIgg"
	spell := func(endpoint, k string) string {
		s, err := webpush.SubscriptionJSON(endpoint, k, auth)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	base := spell("https://push.example/p/abc", key)
	want := b.DeviceKey(base)
	for _, v := range []string{
		spell("https://PUSH.example/p/abc", key),
		spell("https://push.example:443/p/abc", key),
		spell("HTTPS://push.example/p/abc", key),
		spell("https://push.example/p/%61bc", key),
		spell("https://push.example./p/abc", key),
		strings.Replace(base, `"endpoint":`, `"endpoint" :`, 1),
		spell("https://push.example/p/abc", key+"="),
	} {
		if got := b.DeviceKey(v); got != want {
			t.Errorf("DeviceKey(%s) = %q, want %q", v, got, want)
		}
	}
}

// Apps sharing a bound hold it together: while one app's pushes fill it,
// another's push is refused as a temporary failure, and once they are
// answered it goes.
func TestSharedBoundAcrossApps(t *testing.T) {
	mock, keyFile, pub := startMock(t)
	mock.SetLatency(300 * time.Millisecond)
	shared := webpush.NewSharedBound(2)
	opts := webpush.Options{Guard: webpush.Guard{AllowPrivate: true, Ports: []int{mock.Port}}, Shared: shared}
	a, b := newBackend(t, mock, keyFile, opts), newBackend(t, mock, keyFile, opts)
	sub, err := mock.Subscribe(pub)
	if err != nil {
		t.Fatal(err)
	}
	n := push.Notification{Node: "n1", Token: sub.JSON, Priority: push.PriorityHigh}
	// Answered once, the service is no quiet one, whose pushes would
	// take only a quarter of the bound.
	if err := a.Send(context.Background(), n); err != nil {
		t.Fatal(err)
	}
	errs := make(chan error, 2)
	for range 2 {
		go func() { errs <- a.Send(context.Background(), n) }()
	}
	for deadline := time.Now().Add(5 * time.Second); webpush.InFlight(shared) < 2; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the first app's two pushes never held the bound")
		}
	}
	var tmp *push.TemporaryError
	if err := b.Send(context.Background(), n); !errors.As(err, &tmp) {
		t.Fatalf("the other app's push while the bound is full: %v, want a temporary failure", err)
	}
	for range 2 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Send(context.Background(), n); err != nil {
		t.Fatalf("the other app's push once the bound is free: %v", err)
	}
}

// TestSend408TriedAgain: a 408 Request Timeout (RFC 9110 15.5.9: the
// server, or a proxy before it such as a UnifiedPush distributor's,
// gave up waiting for the request) says nothing against the push or the
// subscription: the push goes out again within its deadline, as after a
// 5xx, and is not dropped as refused.
func TestSend408TriedAgain(t *testing.T) {
	mock, b, pub := setup(t, webpush.Options{})
	sub := subscribe(t, mock, pub)
	mock.Fail(sub.ID, webpushmock.Fault{Status: 408})
	if err := b.Send(context.Background(), push.Notification{Node: "n1", Token: sub.JSON, Priority: push.PriorityHigh}); err != nil {
		t.Fatalf("push after a 408: %v, want it sent again and taken", err)
	}
	if n := len(mock.Messages()); n != 2 || mock.Accepted() != 1 {
		t.Fatalf("%d requests, %d accepted; want the push sent again once", n, mock.Accepted())
	}
}

// TestSendClockOffKeepsSubscriptions: a host clock that went half a day
// wrong while the server ran (a virtual machine resumed after a night
// suspended, whose clock NTP has not yet set right) makes every VAPID
// token we sign one the push services refuse, however often it is
// signed anew. Those refusals are our clock's, not the subscriptions':
// they must keep every subscription (a temporary failure, held for
// redelivery once the clock is right), even at a push service where
// the app had proven itself.
func TestSendClockOffKeepsSubscriptions(t *testing.T) {
	var offset atomic.Int64
	clock := func() time.Time { return time.Now().Add(time.Duration(offset.Load())) }
	mock, keyFile, pub := startMock(t)
	breaker := push.NewBreaker("web", push.BreakerOptions{Now: clock}, quiet())
	b := newBackend(t, mock, keyFile, webpush.Options{Breaker: breaker, Now: clock, Guard: webpush.Guard{AllowPrivate: true, Ports: []int{mock.Port}}})
	send := func(s webpushmock.Subscription) error {
		return b.Send(context.Background(), push.Notification{Node: "n", Token: s.JSON, Priority: push.PriorityHigh})
	}
	var subs []webpushmock.Subscription
	for range 30 {
		s := subscribe(t, mock, pub)
		subs = append(subs, s)
		if err := send(s); err != nil {
			t.Fatal(err)
		}
	}
	// The clock is 13 hours behind now; the token signed before has
	// expired by the push service's clock, which refuses it once.
	offset.Store(int64(-13 * time.Hour))
	mock.FailNext(webpushmock.Fault{Status: http.StatusUnauthorized})
	dead := 0
	for _, s := range subs {
		err := send(s)
		if isDead(err) {
			dead++
		} else if !push.IsTemporary(err) {
			t.Fatalf("push with the clock 13 h behind: %v, want a temporary failure", err)
		}
	}
	if dead > 0 {
		t.Fatalf("%d of %d working subscriptions taken as dead while our clock was 13 hours behind", dead, len(subs))
	}
	// The clock set right again: the pushes go through.
	offset.Store(0)
	if err := send(subs[0]); err != nil {
		t.Fatalf("push once the clock is right: %v", err)
	}
}

// TestSummaryTextPadded: with include_summary the payload carries the
// sender's JID and the message body, and the push service, which cannot
// read it, still sees each message's length. Payloads with text are
// padded to a multiple of 512 bytes, so messages of different lengths
// look alike to it (a long one tells its length to within 512 bytes),
// and the device still reads exactly the text. Without include_summary
// nothing is padded: the payload carries no text.
func TestSummaryTextPadded(t *testing.T) {
	sizes := func(t *testing.T, opts webpush.Options, bodies ...string) []int {
		t.Helper()
		mock, b, pub := setup(t, opts)
		sub := subscribe(t, mock, pub)
		var out []int
		for i, body := range bodies {
			s := summary()
			s.LastMessageBody = body
			if err := b.Send(context.Background(), push.Notification{Node: "n1", Token: sub.JSON, Priority: push.PriorityHigh, Summary: s}); err != nil {
				t.Fatal(err)
			}
			m := mock.Messages()[i]
			var got webpush.Payload
			if err := json.Unmarshal(m.Plaintext, &got); err != nil {
				t.Fatalf("payload %q: %v", m.Plaintext, err)
			}
			if want := opts.IncludeSummary && got.LastMessageBody != body || !opts.IncludeSummary && got.LastMessageBody != ""; want {
				t.Errorf("the device read the body %q, sent %q", got.LastMessageBody, body)
			}
			out = append(out, m.Size)
		}
		return out
	}
	short, longer, long := "ok", strings.Repeat("x", 300), strings.Repeat("x", 700)
	t.Run("include_summary", func(t *testing.T) {
		got := sizes(t, webpush.Options{IncludeSummary: true}, short, longer, long)
		if got[0] != got[1] {
			t.Errorf("bodies of %d and %d bytes came to the push service as %d and %d bytes: it tells them apart", len(short), len(longer), got[0], got[1])
		}
		// 86 bytes of header, 1 of delimiter and 16 of tag around a
		// multiple of 512.
		for _, n := range got {
			if (n-86-1-16)%512 != 0 {
				t.Errorf("a message of %d bytes, not padded to a multiple of 512: %v", n, got)
			}
		}
		if got[2] <= got[1] {
			t.Errorf("a body too long for the first size is not padded to the next: %v", got)
		}
	})
	t.Run("without include_summary", func(t *testing.T) {
		got := sizes(t, webpush.Options{}, short, longer)
		if got[0] != got[1] || (got[0]-86-1-16)%512 == 0 {
			t.Errorf("payloads without text came as %v bytes: padded, or not alike", got)
		}
	})
}
