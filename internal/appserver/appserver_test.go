package appserver_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/push-appserver/push-appserver/internal/appserver"
	"github.com/push-appserver/push-appserver/internal/deadline"
	"github.com/push-appserver/push-appserver/internal/logging"
	"github.com/push-appserver/push-appserver/internal/push"
	"github.com/push-appserver/push-appserver/internal/registry"
	"github.com/push-appserver/push-appserver/internal/registry/memory"
	"github.com/push-appserver/push-appserver/internal/testutil/logbuf"
)

// scripted is a backend whose answer the test sets per token.
type scripted struct {
	mu      sync.Mutex
	answers map[string]error
	sent    []push.Notification
}

func (b *scripted) Send(ctx context.Context, n push.Notification) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.sent = append(b.sent, n)
	if b.answers[n.Token] == errPanic {
		var answer []string
		_ = answer[len(n.Token)] // a client's bug, set off by one answer
	}
	return b.answers[n.Token]
}

// errPanic, set as a token's answer, makes scripted panic instead.
var errPanic = errors.New("panic")

func (b *scripted) set(token string, err error) {
	b.mu.Lock()
	b.answers[token] = err
	b.mu.Unlock()
}

func (b *scripted) Sent() []push.Notification {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]push.Notification(nil), b.sent...)
}

type hexOnly struct{ *scripted }

func (hexOnly) ValidateToken(t string) error {
	if strings.Trim(t, "0123456789abcdef") != "" {
		return errors.New("not hex")
	}
	return nil
}

func newService(t *testing.T, rate time.Duration) (*appserver.Service, registry.Store, *scripted) {
	t.Helper()
	store := memory.New()
	b := &scripted{answers: map[string]error{}}
	svc, err := appserver.New(store, testApps(b), appserver.Options{RateLimit: rate}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	return svc, store, b
}

// newServiceAt is newService on a clock that reads *now, which the test
// moves, and with no rate limit.
func newServiceAt(t *testing.T, now *time.Time) (*appserver.Service, registry.Store, *scripted) {
	t.Helper()
	store := memory.New()
	b := &scripted{answers: map[string]error{}}
	svc, err := appserver.New(store, testApps(b), appserver.Options{Now: func() time.Time { return *now }}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	return svc, store, b
}

// testApps are the apps of the tests' services, all on b: apns (whose
// tokens must be hex), voip and fcm.
func testApps(b *scripted) []appserver.App {
	return []appserver.App{
		{Name: "apns", Priority: push.PriorityAuto, Backend: hexOnly{b}},
		{Name: "voip", Priority: push.PriorityVoIP, Backend: b},
		{Name: "fcm", Priority: push.PriorityHigh, Backend: b},
	}
}

var hex64 = regexp.MustCompile(`^[0-9a-f]{64}$`)

func TestRegister(t *testing.T) {
	ctx := context.Background()
	svc, store, _ := newService(t, 0)
	r1, err := svc.Register(ctx, appserver.Caller{}, "apns", "n1", "aa")
	if err != nil || !hex64.MatchString(r1.Secret) || r1.Registered.IsZero() {
		t.Fatalf("register: %+v %v", r1, err)
	}
	r2, err := svc.Register(ctx, appserver.Caller{}, "apns", "n1", "aa")
	if err != nil || r2.Secret != r1.Secret || r2.Token != "aa" || r2.Renewed.IsZero() {
		t.Fatalf("re-register: %+v %v", r2, err)
	}
	r2, err = svc.Register(ctx, appserver.Caller{Secret: r1.Secret}, "apns", "n1", "bb")
	if err != nil || r2.Secret != r1.Secret || r2.Token != "bb" {
		t.Fatalf("re-register with a new token and the secret: %+v %v", r2, err)
	}
	r3, err := svc.Register(ctx, appserver.Caller{}, "fcm", "n1", "cc")
	if err != nil || r3.Secret == r1.Secret || r3.Type != "fcm" {
		t.Fatalf("register under another type must start afresh: %+v %v", r3, err)
	}
	other, _ := svc.Register(ctx, appserver.Caller{}, "fcm", "n2", "cc")
	if other.Secret == r3.Secret {
		t.Fatal("two nodes share a secret")
	}

	for _, tt := range []struct {
		typ, node, token string
		want             error
	}{
		{"gcm", "n", "aa", appserver.ErrUnknownType},
		{"apns", "n", "XYZ", appserver.ErrInvalidToken},
		{"apns", "", "aa", appserver.ErrBadRequest},
		{"apns", strings.Repeat("n", 257), "aa", appserver.ErrBadRequest},
		{"fcm", "n", strings.Repeat("t", 4097), appserver.ErrInvalidToken},
		{"apns", "a\nb", "aa", appserver.ErrBadRequest},
		{"apns", "a\rb", "aa", appserver.ErrBadRequest},
		{"apns", "a\x00", "aa", appserver.ErrBadRequest},
		{"apns", "a\u0085", "aa", appserver.ErrBadRequest},
		{"apns", "a\xff", "aa", appserver.ErrBadRequest},
		{"apns\n", "n", "aa", appserver.ErrBadRequest},
		{"fcm", "n", "t\nu", appserver.ErrBadRequest},
	} {
		if _, err := svc.Register(ctx, appserver.Caller{}, tt.typ, tt.node, tt.token); !errors.Is(err, tt.want) {
			t.Errorf("Register(%q, %.10q, %.10q) = %v, want %v", tt.typ, tt.node, tt.token, err, tt.want)
		}
	}
	if n, _ := store.Count(ctx); n != 2 {
		t.Fatalf("%d registrations, want 2", n)
	}
}

var juliet = appserver.Account{Bare: "juliet@example.org", Domain: "example.org"}

func TestRegisterDevice(t *testing.T) {
	ctx := context.Background()
	svc, store, _ := newService(t, 0)
	a, err := svc.RegisterDevice(ctx, "fcm", juliet, "dev1", "", "tok1")
	if err != nil {
		t.Fatal(err)
	}
	b, err := svc.RegisterDevice(ctx, "fcm", juliet, "dev1", "", "tok2")
	if err != nil || b.Node != a.Node || b.Secret != a.Secret || b.Token != "tok2" {
		t.Fatalf("same account and device: %+v vs %+v (%v)", b, a, err)
	}
	c, _ := svc.RegisterDevice(ctx, "fcm", juliet, "dev2", "", "tok3")
	d, _ := svc.RegisterDevice(ctx, "fcm", appserver.Account{Bare: "romeo@example.org", Domain: "example.org"}, "dev1", "", "tok4")
	if c.Node == a.Node || d.Node == a.Node || c.Node == d.Node {
		t.Fatalf("distinct devices share a node: %s %s %s", a.Node, c.Node, d.Node)
	}
	stored, err := store.Get(ctx, a.Node)
	if err != nil || stored.Domain != "example.org" || !hex64.MatchString(stored.DeviceKey) {
		t.Fatalf("stored %+v %v", stored, err)
	}
	for _, v := range []string{stored.Node, stored.DeviceKey, stored.Domain} {
		if strings.Contains(v, "juliet") {
			t.Fatalf("registry holds the JID: %+v", stored)
		}
	}
	if _, err := svc.RegisterDevice(ctx, "fcm", appserver.Account{}, "dev", "", "t"); !errors.Is(err, appserver.ErrBadRequest) {
		t.Fatalf("empty account: %v", err)
	}
}

func TestPush(t *testing.T) {
	ctx := context.Background()
	svc, store, b := newService(t, 0)
	ios, _ := svc.Register(ctx, appserver.Caller{}, "apns", "ios", "aa")
	voip, _ := svc.Register(ctx, appserver.Caller{}, "voip", "voip", "vv")
	withBody := &push.Summary{MessageCount: 1, LastMessageBody: "New Message!", HasLastMessageBody: true}

	tests := []struct {
		name, node, secret string
		summary            *push.Summary
		want               error
		wantPrio           push.Priority
	}{
		{"auto with body is high", "ios", ios.Secret, withBody, nil, push.PriorityHigh},
		{"auto without body is silent", "ios", ios.Secret, &push.Summary{MessageCount: 1}, nil, push.PrioritySilent},
		{"auto without summary is silent", "ios", ios.Secret, nil, nil, push.PrioritySilent},
		{"fixed priority", "voip", voip.Secret, nil, nil, push.PriorityVoIP},
		{"unknown node", "nope", ios.Secret, nil, appserver.ErrNotFound, ""},
		{"wrong secret", "ios", voip.Secret, nil, appserver.ErrNotFound, ""},
		{"empty secret", "ios", "", nil, appserver.ErrNotFound, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := len(b.Sent())
			err := svc.Push(ctx, appserver.PushRequest{Node: tt.node, Secret: tt.secret, Summary: tt.summary})
			if !errors.Is(err, tt.want) {
				t.Fatalf("Push = %v, want %v", err, tt.want)
			}
			sent := b.Sent()[before:]
			if tt.want != nil {
				if len(sent) != 0 {
					t.Fatalf("failed push reached the backend: %+v", sent)
				}
				return
			}
			if len(sent) != 1 || sent[0].Priority != tt.wantPrio || sent[0].Node != tt.node || sent[0].Summary != tt.summary {
				t.Fatalf("backend got %+v", sent)
			}
		})
	}
	if err := svc.Close(); err != nil {
		t.Fatal(err)
	}
	r, _ := store.Get(ctx, "ios")
	if r.LastSuccessfulPush.IsZero() {
		t.Fatal("push status not recorded")
	}
}

// TestPushPriority covers every combination of what a push request
// carries with every configured priority: auto is an alert only when the
// user's server marked the push as important.
func TestPushPriority(t *testing.T) {
	ctx := context.Background()
	b := &scripted{answers: map[string]error{}}
	var apps []appserver.App
	for _, p := range []push.Priority{push.PriorityAuto, push.PriorityHigh, push.PrioritySilent, push.PriorityVoIP} {
		apps = append(apps, appserver.App{Name: string(p), Priority: p, Backend: b})
	}
	svc, err := appserver.New(memory.New(), apps, appserver.Options{}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	summaries := []struct {
		name      string
		s         *push.Summary
		important bool
	}{
		{"no summary (HTTP, ejabberd's empty notification)", nil, false},
		{"empty summary", &push.Summary{}, false},
		{"count and sender only", &push.Summary{MessageCount: 1, LastMessageSender: "juliet@example.org"}, false},
		{"empty body field", &push.Summary{MessageCount: 1, HasLastMessageBody: true}, true},
		{"body", &push.Summary{MessageCount: 1, LastMessageBody: "hi", HasLastMessageBody: true}, true},
	}
	for _, app := range apps {
		reg, err := svc.Register(ctx, appserver.Caller{}, app.Name, "node-"+app.Name, "tok-"+app.Name)
		if err != nil {
			t.Fatal(err)
		}
		for _, sm := range summaries {
			for _, marked := range []bool{false, true} {
				want := app.Priority
				if want == push.PriorityAuto {
					want = push.PrioritySilent
					if sm.important || marked {
						want = push.PriorityHigh
					}
				}
				t.Run(fmt.Sprintf("%s/%s/marked=%v", app.Name, sm.name, marked), func(t *testing.T) {
					before := len(b.Sent())
					req := appserver.PushRequest{Node: reg.Node, Secret: reg.Secret, Summary: sm.s, MarkedHigh: marked}
					if err := svc.Push(ctx, req); err != nil {
						t.Fatal(err)
					}
					sent := b.Sent()[before:]
					if len(sent) != 1 || sent[0].Priority != want {
						t.Fatalf("sent %+v, want priority %s", sent, want)
					}
				})
			}
		}
	}
}

func TestPushFailures(t *testing.T) {
	ctx := context.Background()
	svc, store, b := newService(t, 0)
	dead, _ := svc.Register(ctx, appserver.Caller{}, "fcm", "dead", "t-dead")
	renewed, _ := svc.Register(ctx, appserver.Caller{}, "fcm", "renewed", "t-renewed")
	flaky, _ := svc.Register(ctx, appserver.Caller{}, "fcm", "flaky", "t-flaky")

	b.set("t-dead", &push.DeadTokenError{Since: time.Now().Add(time.Minute), Reason: "Unregistered"})
	// The token died before the device registered again: keep it.
	b.set("t-renewed", &push.DeadTokenError{Since: time.Now().Add(-time.Hour), Reason: "Unregistered"})
	b.set("t-flaky", &push.TemporaryError{Reason: "503"})

	if err := svc.Push(ctx, appserver.PushRequest{Node: "dead", Secret: dead.Secret}); !errors.Is(err, appserver.ErrNotFound) {
		t.Fatalf("dead token push = %v, want ErrNotFound", err)
	}
	if _, err := store.Get(ctx, "dead"); !errors.Is(err, registry.ErrNotFound) {
		t.Fatalf("dead registration still there: %v", err)
	}
	if err := svc.Push(ctx, appserver.PushRequest{Node: "dead", Secret: dead.Secret}); !errors.Is(err, appserver.ErrNotFound) {
		t.Fatalf("later push = %v", err)
	}

	if err := svc.Push(ctx, appserver.PushRequest{Node: "renewed", Secret: renewed.Secret}); !errors.Is(err, appserver.ErrPushFailed) {
		t.Fatalf("renewed push = %v, want ErrPushFailed", err)
	}
	if _, err := store.Get(ctx, "renewed"); err != nil {
		t.Fatalf("registration renewed after the token's death was removed: %v", err)
	}

	err := svc.Push(ctx, appserver.PushRequest{Node: "flaky", Secret: flaky.Secret})
	if !errors.Is(err, appserver.ErrPushFailed) || !push.IsTemporary(err) {
		t.Fatalf("temporary failure = %v", err)
	}
	svc.Close()
	r, _ := store.Get(ctx, "flaky")
	if r.LastPushError.IsZero() || !strings.Contains(r.LastErrorReason, "503") {
		t.Fatalf("error not recorded: %+v", r)
	}
}

func TestPushThrottled(t *testing.T) {
	ctx := context.Background()
	const window = 500 * time.Millisecond
	svc, _, b := newService(t, window)
	r, _ := svc.Register(ctx, appserver.Caller{}, "fcm", "n", "t")
	start := time.Now()
	if err := svc.Push(ctx, appserver.PushRequest{Node: "n", Secret: r.Secret}); err != nil {
		t.Fatal(err)
	}
	// The second push of the burst waits for the next window; the ones
	// during that wait are refused at once.
	done := make(chan error, 1)
	waiting := make(chan struct{})
	wctx := push.WithWaiting(ctx, push.WaitingFuncs{
		PauseFunc:  func() { close(waiting) },
		ResumeFunc: func(context.Context) error { return nil },
	})
	go func() { done <- svc.Push(wctx, appserver.PushRequest{Node: "n", Secret: r.Secret}) }()
	<-waiting
	if err := svc.Push(ctx, appserver.PushRequest{Node: "n", Secret: r.Secret}); !errors.Is(err, appserver.ErrThrottled) {
		t.Fatalf("third push = %v, want ErrThrottled", err)
	}
	if err := <-done; err != nil {
		t.Fatalf("delayed push: %v", err)
	}
	if waited := time.Since(start); waited < window {
		t.Fatalf("delayed push went after %v, before the window ended", waited)
	}
	if n := len(b.Sent()); n != 2 {
		t.Fatalf("%d pushes sent, want 2", n)
	}
	// A silent push to the same node has its own window.
	svc2, _, _ := newService(t, window)
	r2, _ := svc2.Register(ctx, appserver.Caller{}, "apns", "m", "aa")
	if err := svc2.Push(ctx, appserver.PushRequest{Node: "m", Secret: r2.Secret, Summary: &push.Summary{HasLastMessageBody: true}}); err != nil {
		t.Fatal(err)
	}
	if err := svc2.Push(ctx, appserver.PushRequest{Node: "m", Secret: r2.Secret, Summary: &push.Summary{}}); err != nil {
		t.Fatalf("silent push throttled by a high one: %v", err)
	}
}

func TestUnregister(t *testing.T) {
	ctx := context.Background()
	svc, _, _ := newService(t, 0)
	r, _ := svc.Register(ctx, appserver.Caller{}, "fcm", "n", "t")
	if _, err := svc.Unregister(ctx, appserver.Caller{}, "apns", "n"); !errors.Is(err, appserver.ErrNotFound) {
		t.Fatalf("unregister with wrong type: %v", err)
	}
	got, err := svc.Unregister(ctx, appserver.Caller{}, "fcm", "n")
	if err != nil || got.Secret != r.Secret {
		t.Fatalf("unregister: %+v %v", got, err)
	}
	if err := svc.Push(ctx, appserver.PushRequest{Node: "n", Secret: r.Secret}); !errors.Is(err, appserver.ErrNotFound) {
		t.Fatalf("push after unregister: %v", err)
	}
}

// A device registered again after it was removed starts with no throttle
// window: the window belonged to the registration that is gone.
func TestUnregisterForgetsThrottle(t *testing.T) {
	ctx := context.Background()
	svc, _, b := newService(t, time.Hour)
	r, _ := svc.Register(ctx, appserver.Caller{}, "fcm", "n", "t")
	if err := svc.Push(ctx, appserver.PushRequest{Node: "n", Secret: r.Secret}); err != nil {
		t.Fatal(err)
	}
	if _, err := svc.Unregister(ctx, appserver.Caller{}, "fcm", "n"); err != nil {
		t.Fatal(err)
	}
	r, _ = svc.Register(ctx, appserver.Caller{}, "fcm", "n", "t")
	// Within the old window, the push would wait for its end.
	wctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	if err := svc.Push(wctx, appserver.PushRequest{Node: "n", Secret: r.Secret}); err != nil {
		t.Fatalf("push after registering again: %v", err)
	}
	if n := len(b.Sent()); n != 2 {
		t.Fatalf("%d pushes sent, want 2", n)
	}
}

func TestUnregisterToken(t *testing.T) {
	ctx := context.Background()
	svc, store, _ := newService(t, 0)
	svc.Register(ctx, appserver.Caller{}, "fcm", "a", "shared")
	svc.Register(ctx, appserver.Caller{}, "voip", "b", "shared")
	n, err := svc.UnregisterToken(ctx, "fcm", "shared", time.Now().Add(time.Second))
	if err != nil || n != 1 {
		t.Fatalf("UnregisterToken = %d, %v", n, err)
	}
	if _, err := store.Get(ctx, "b"); err != nil {
		t.Fatalf("other app's registration removed: %v", err)
	}
	if n, _ := svc.UnregisterToken(ctx, "voip", "shared", time.Now().Add(-time.Hour)); n != 0 {
		t.Fatalf("registration newer than the timestamp removed")
	}
}

// TestOnlyGoneIsNotFound: the adapters answer "cancel" (the user's server
// stops pushing, ejabberd at once) only for ErrNotFound, so nothing but a
// registration that is really gone may come back as ErrNotFound.
func TestOnlyGoneIsNotFound(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name     string
		answer   error
		wantGone bool
	}{
		{"token proven dead", &push.DeadTokenError{Since: time.Now().Add(time.Minute), Reason: "Unregistered"}, true},
		{"dead before the device registered again", &push.DeadTokenError{Since: time.Now().Add(-time.Hour), Reason: "Unregistered"}, false},
		{"service 503", &push.TemporaryError{Reason: "503 ServiceUnavailable"}, false},
		{"service 429", &push.TemporaryError{Reason: "429 TooManyRequests", RetryAfter: time.Minute}, false},
		{"app marked misconfigured", &push.TemporaryError{Reason: "app misconfigured"}, false},
		{"retry budget spent", fmt.Errorf("retrying: %w", context.DeadlineExceeded), false},
		{"unclassified rejection", errors.New("apns: 403 BadCertificate"), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			svc, _, b := newService(t, 0)
			reg, _ := svc.Register(ctx, appserver.Caller{}, "fcm", "n", "tok")
			b.set("tok", tt.answer)
			err := svc.Push(ctx, appserver.PushRequest{Node: "n", Secret: reg.Secret})
			if gone := errors.Is(err, appserver.ErrNotFound); gone != tt.wantGone || err == nil {
				t.Fatalf("Push = %v; gone %v, want %v", err, gone, tt.wantGone)
			}
			if !tt.wantGone && !errors.Is(err, appserver.ErrPushFailed) {
				t.Fatalf("Push = %v, want ErrPushFailed", err)
			}
		})
	}
	t.Run("app no longer configured", func(t *testing.T) {
		store := memory.New()
		old, _ := appserver.New(store, []appserver.App{{Name: "gone", Backend: &scripted{}}}, appserver.Options{}, slog.New(slog.DiscardHandler))
		reg, _ := old.Register(ctx, appserver.Caller{}, "gone", "n", "tok")
		svc, _ := appserver.New(store, []appserver.App{{Name: "other", Backend: &scripted{}}}, appserver.Options{}, slog.New(slog.DiscardHandler))
		if err := svc.Push(ctx, appserver.PushRequest{Node: "n", Secret: reg.Secret}); !errors.Is(err, appserver.ErrPushFailed) {
			t.Fatalf("Push = %v, want ErrPushFailed (our configuration, not the device)", err)
		}
	})
	t.Run("token dead, another node of it removed", func(t *testing.T) {
		// Two nodes share a token (an app with two accounts); the token
		// died between their registrations: the older node goes, the
		// pushed one stays and must not be called gone.
		now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
		store := memory.New()
		b := &scripted{answers: map[string]error{}}
		svc, _ := appserver.New(store, testApps(b), appserver.Options{Now: func() time.Time { return now }}, slog.New(slog.DiscardHandler))
		svc.Register(ctx, appserver.Caller{}, "fcm", "older", "tok")
		now = now.Add(time.Hour)
		reg, _ := svc.Register(ctx, appserver.Caller{}, "fcm", "n", "tok")
		b.set("tok", &push.DeadTokenError{Since: now.Add(-time.Minute), Reason: "Unregistered"})
		if err := svc.Push(ctx, appserver.PushRequest{Node: "n", Secret: reg.Secret}); !errors.Is(err, appserver.ErrPushFailed) {
			t.Fatalf("Push = %v, want ErrPushFailed (the node is still registered)", err)
		}
		if _, err := store.Get(ctx, "older"); !errors.Is(err, registry.ErrNotFound) {
			t.Fatalf("the older node of the dead token is still there: %v", err)
		}
	})
}

func TestDrain(t *testing.T) {
	ctx := context.Background()
	svc, _, b := newService(t, 0)
	reg, _ := svc.Register(ctx, appserver.Caller{}, "fcm", "n", "tok")
	svc.Drain()
	if err := svc.Push(ctx, appserver.PushRequest{Node: "n", Secret: reg.Secret}); !errors.Is(err, appserver.ErrUnavailable) {
		t.Fatalf("Push while draining = %v, want ErrUnavailable", err)
	}
	if n := len(b.Sent()); n != 0 {
		t.Fatalf("%d pushes sent while draining", n)
	}
}

// rejections records what the observer hears about rejected pushes.
type rejections struct {
	mu       sync.Mutex
	reasons  []appserver.RejectReason
	apps     []string
	failures []appserver.RegistrationFailure
	panics   []string
	// took holds the latency of each push that succeeded.
	took []time.Duration
}

func (r *rejections) Rejected(reason appserver.RejectReason) {
	r.mu.Lock()
	r.reasons = append(r.reasons, reason)
	r.mu.Unlock()
}

func (r *rejections) Registered(string, bool)     {}
func (r *rejections) Unregistered(string, string) {}

func (r *rejections) Panicked(where string) {
	r.mu.Lock()
	r.panics = append(r.panics, where)
	r.mu.Unlock()
}

func (r *rejections) RegistrationFailed(f appserver.RegistrationFailure) {
	r.mu.Lock()
	r.failures = append(r.failures, f)
	r.mu.Unlock()
}

func (r *rejections) Pushed(app string, o appserver.Outcome, d time.Duration) {
	r.mu.Lock()
	r.apps = append(r.apps, app+"/"+string(o))
	if o == appserver.OutcomeSuccess {
		r.took = append(r.took, d)
	}
	r.mu.Unlock()
}

// TestThrottleWaitIsNotLatency: the rate limit holds a device's second
// push of a burst back to its next window on purpose. The latency that
// the metrics and the PushAppserverPushesSlow alert read measures us
// and the push service, so that wait is left out of it, for pushes to
// a registration and to a token.
func TestThrottleWaitIsNotLatency(t *testing.T) {
	ctx := context.Background()
	obs := &rejections{}
	b := &scripted{answers: map[string]error{}}
	svc, err := appserver.New(memory.New(), testApps(b), appserver.Options{RateLimit: time.Second, Observer: obs}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	reg, err := svc.Register(ctx, appserver.Caller{}, "fcm", "n1", "tok")
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := svc.Push(ctx, appserver.PushRequest{Node: "n1", Secret: reg.Secret}); err != nil {
			t.Fatal(err)
		}
	}
	for range 2 {
		if err := svc.PushToken(ctx, appserver.TokenPush{App: "fcm", Token: "tok2"}); err != nil {
			t.Fatal(err)
		}
	}
	obs.mu.Lock()
	defer obs.mu.Unlock()
	if len(obs.took) != 4 {
		t.Fatalf("successes observed: %v", obs.took)
	}
	for _, d := range obs.took {
		if d > 500*time.Millisecond {
			t.Fatalf("latencies %v: the rate limit's wait (about a second) counted", obs.took)
		}
	}
}

func TestRejectionsLoggedAndCounted(t *testing.T) {
	ctx := context.Background()
	var logs strings.Builder
	var logMu sync.Mutex
	logger := slog.New(slog.NewTextHandler(writerFunc(func(p []byte) (int, error) {
		logMu.Lock()
		defer logMu.Unlock()
		return logs.Write(p)
	}), nil))
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var clockMu sync.Mutex
	obs := &rejections{}
	svc, err := appserver.New(memory.New(), []appserver.App{{Name: "fcm", Backend: &scripted{answers: map[string]error{}}}},
		appserver.Options{Observer: obs, Now: func() time.Time { clockMu.Lock(); defer clockMu.Unlock(); return now }}, logger)
	if err != nil {
		t.Fatal(err)
	}
	reg, _ := svc.Register(ctx, appserver.Caller{}, "fcm", "known", "tok-secret-token")
	svc.Push(ctx, appserver.PushRequest{Node: "unknown", Secret: "s1"})
	svc.Push(ctx, appserver.PushRequest{Node: "known", Secret: "wrong-secret-value"})
	svc.RejectMalformed("m", "no secret")
	logMu.Lock()
	out := logs.String()
	logMu.Unlock()
	for _, want := range []string{`msg="push rejected" node=unknown reason="unknown node"`, `node=known reason="wrong secret"`, `node=m reason="malformed: no secret"`} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %s:\n%s", want, out)
		}
	}
	for _, secret := range []string{"wrong-secret-value", "s1", reg.Secret, "tok-secret-token"} {
		if strings.Contains(out, secret) {
			t.Errorf("log shows secret or token %q:\n%s", secret, out)
		}
	}
	obs.mu.Lock()
	if got := fmt.Sprint(obs.reasons); got != "[not_found not_found malformed]" {
		t.Errorf("rejections counted %s", got)
	}
	// Nothing the metrics see tells a wrong secret from an unknown node.
	if got := fmt.Sprint(obs.apps); got != "[/not_found /not_found]" {
		t.Errorf("pushes observed as %s", got)
	}
	obs.mu.Unlock()

	// A flood: a bounded number of lines per second, then one summary.
	for range 1000 {
		svc.Push(ctx, appserver.PushRequest{Node: "flood", Secret: "x"})
	}
	clockMu.Lock()
	now = now.Add(time.Second)
	clockMu.Unlock()
	svc.Push(ctx, appserver.PushRequest{Node: "later", Secret: "x"})
	logMu.Lock()
	out = logs.String()
	logMu.Unlock()
	if n := strings.Count(out, "node=flood"); n > 10 {
		t.Errorf("%d log lines for a flood of 1000 rejections in one second", n)
	}
	if !strings.Contains(out, `msg="push rejections not logged (rate limit)" count=`) || !strings.Contains(out, "node=later") {
		t.Errorf("no summary line or no log after the flood:\n%s", out[len(out)-min(len(out), 600):])
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

func TestOwnerIsSaltedHash(t *testing.T) {
	ctx := context.Background()
	svc, store, _ := newService(t, 0)
	if _, err := svc.Register(ctx, appserver.Caller{Account: juliet}, "fcm", "jn", "t"); err != nil {
		t.Fatal(err)
	}
	r, _ := store.Get(ctx, "jn")
	plain := sha256.Sum256([]byte(juliet.Bare))
	if !hex64.MatchString(r.Owner) || strings.Contains(r.Owner, "juliet") || r.Owner == hex.EncodeToString(plain[:]) {
		t.Fatalf("owner stored as %q, want a salted hash", r.Owner)
	}
	if r.Domain != "example.org" {
		t.Fatalf("domain %q", r.Domain)
	}
	if _, err := svc.Register(ctx, appserver.Caller{}, "fcm", "jn", "t"); !errors.Is(err, appserver.ErrForbidden) {
		t.Fatalf("HTTP re-registration of a bound node: %v", err)
	}
}

// A node registered without an account (over HTTP, or imported) is bound
// to no account that names it without its secret: the device, which
// re-registers without an account, would be refused for good.
func TestUnboundNodeStaysUnbound(t *testing.T) {
	ctx := context.Background()
	mallory := appserver.Caller{Account: appserver.Account{Bare: "mallory@evil.example", Domain: "evil.example"}}
	for _, strict := range []bool{false, true} {
		store := memory.New()
		svc, _ := appserver.New(store, testApps(&scripted{answers: map[string]error{}}), appserver.Options{StrictRegistration: strict}, slog.New(slog.DiscardHandler))
		reg, err := svc.Register(ctx, appserver.Caller{}, "fcm", "device-node", "device-token")
		if err != nil {
			t.Fatal(err)
		}
		// Knowing the node, and maybe the token.
		svc.Register(ctx, mallory, "fcm", "device-node", "mallory-token")
		svc.Register(ctx, mallory, "fcm", "device-node", "device-token")
		svc.Register(ctx, mallory, "apns", "device-node", "ab12")
		if r, _ := store.Get(ctx, "device-node"); r.Owner != "" {
			t.Fatalf("strict %v: the node is bound now", strict)
		}
		again, err := svc.Register(ctx, appserver.Caller{}, "fcm", "device-node", "device-token")
		if err != nil {
			t.Fatalf("strict %v: the device cannot re-register its node: %v", strict, err)
		}
		if strict && again.Secret != reg.Secret {
			t.Fatal("strict: the secret changed")
		}
		// With the secret, an account may take it (the core allows it;
		// no command sends a secret today).
		if _, err := svc.Register(ctx, appserver.Caller{Account: juliet, Secret: again.Secret}, "fcm", "device-node", "device-token"); err != nil {
			t.Fatal(err)
		}
		if r, _ := store.Get(ctx, "device-node"); r.Owner == "" {
			t.Fatalf("strict %v: not bound with the secret given", strict)
		}
	}
}

// deadlines records the deadline each push reaches its backend with, and
// when.
type deadlines struct {
	mu   sync.Mutex
	left []time.Duration // deadline minus the time Send was called
	at   []time.Time     // when Send was called
}

func (d *deadlines) Send(ctx context.Context, n push.Notification) error {
	now := time.Now()
	dl, ok := ctx.Deadline()
	d.mu.Lock()
	defer d.mu.Unlock()
	d.at = append(d.at, now)
	if !ok {
		d.left = append(d.left, -1)
		return nil
	}
	d.left = append(d.left, dl.Sub(now))
	return nil
}

// A push reaches its backend bounded by the earlier of PushTimeout and the
// app's own deadline, and the app's deadline counts from the send, after
// any wait for the throttle's window.
func TestPushDeadline(t *testing.T) {
	ctx := context.Background()
	const window = 300 * time.Millisecond
	for _, tt := range []struct {
		name             string
		pushTimeout, app time.Duration
	}{
		{"app's earlier", 10 * time.Second, 2 * time.Second},
		{"push timeout earlier", time.Second, 5 * time.Second},
		{"app sets none", 3 * time.Second, 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			d := &deadlines{}
			svc, err := appserver.New(memory.New(), []appserver.App{{Name: "a", Priority: push.PriorityHigh, Backend: d, Deadline: tt.app}},
				appserver.Options{PushTimeout: tt.pushTimeout, RateLimit: window}, slog.New(slog.NewTextHandler(io.Discard, nil)))
			if err != nil {
				t.Fatal(err)
			}
			r, err := svc.Register(ctx, appserver.Caller{}, "a", "n", "t")
			if err != nil {
				t.Fatal(err)
			}
			// The second push waits for the throttle's next window,
			// what is left of it once the first push is answered.
			var started [2]time.Time
			for i := range started {
				started[i] = time.Now()
				if err := svc.Push(ctx, appserver.PushRequest{Node: "n", Secret: r.Secret}); err != nil {
					t.Fatal(err)
				}
			}
			d.mu.Lock()
			defer d.mu.Unlock()
			for i, left := range d.left {
				// PushTimeout counts from the push's start, before the
				// wait; the app's deadline from the send.
				want := tt.pushTimeout - d.at[i].Sub(started[i])
				if tt.app > 0 {
					want = min(want, tt.app)
				}
				// Pushes share deadlines rounded up to a slot.
				if left > want+deadline.Slot || left < want-window/2 {
					t.Errorf("push %d reached the backend with %v left, want %v", i, left, want)
				}
			}
		})
	}
	// A backend that carries its deadline (one a reload swaps) is asked
	// at each push: a longer one after a reload counts at once.
	t.Run("backend's own, changed", func(t *testing.T) {
		d := &reloadedDeadlines{deadlines: &deadlines{}}
		d.d.Store(int64(time.Second))
		svc, _ := appserver.New(memory.New(), []appserver.App{{Name: "a", Priority: push.PriorityHigh, Backend: d, Deadline: time.Second}},
			appserver.Options{PushTimeout: time.Minute}, slog.New(slog.DiscardHandler))
		r, _ := svc.Register(ctx, appserver.Caller{}, "a", "n", "t")
		d.d.Store(int64(6 * time.Second))
		if err := svc.Push(ctx, appserver.PushRequest{Node: "n", Secret: r.Secret}); err != nil {
			t.Fatal(err)
		}
		d.mu.Lock()
		defer d.mu.Unlock()
		if left := d.left[0]; left < 5*time.Second {
			t.Errorf("the push reached the backend with %v left, want the new 6 s", left)
		}
	})
}

// reloadedDeadlines is deadlines behind a backend that says its push
// deadline, as a reloadable one does.
type reloadedDeadlines struct {
	*deadlines
	d atomic.Int64
}

func (r *reloadedDeadlines) PushDeadline() time.Duration { return time.Duration(r.d.Load()) }

// brokenStore is a registry whose writes fail once broken is set, as on a
// full disk.
type brokenStore struct {
	*memory.Store
	broken atomic.Bool
}

func (s *brokenStore) Register(ctx context.Context, node string, decide registry.Decide) (registry.Registration, error) {
	if s.broken.Load() {
		return registry.Registration{}, errors.New("disk I/O error")
	}
	return s.Store.Register(ctx, node, decide)
}

// Every registration that stores nothing is counted once, by why: the
// client's mistake, a refusal, or the server's own failure.
func TestRegistrationFailuresCounted(t *testing.T) {
	ctx := context.Background()
	obs := &rejections{}
	store := &brokenStore{Store: memory.New()}
	svc, err := appserver.New(store, []appserver.App{{Name: "fcm", Backend: &scripted{answers: map[string]error{}}}},
		appserver.Options{Observer: obs, MaxRegistrationsPerDomain: 2}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	alice := appserver.Account{Bare: "alice@example.org", Domain: "example.org"}
	bob := appserver.Account{Bare: "bob@example.org", Domain: "example.org"}
	for _, tc := range []struct {
		name     string
		register func() error
		want     appserver.RegistrationFailure // "" for none
	}{
		{"stored", func() error {
			_, err := svc.Register(ctx, appserver.Caller{Account: alice}, "fcm", "n1", "tok")
			return err
		}, ""},
		{"unknown app", func() error { _, err := svc.Register(ctx, appserver.Caller{}, "gcm", "n2", "tok"); return err }, appserver.RegistrationInvalid},
		{"no node", func() error { _, err := svc.Register(ctx, appserver.Caller{}, "fcm", "", "tok"); return err }, appserver.RegistrationInvalid},
		{"device without account", func() error {
			_, err := svc.RegisterDevice(ctx, "fcm", appserver.Account{}, "dev", "", "tok")
			return err
		}, appserver.RegistrationInvalid},
		{"tigase, unknown app", func() error { _, err := svc.RegisterTigase(ctx, "gcm", alice, "tok"); return err }, appserver.RegistrationInvalid},
		{"another account's node", func() error {
			_, err := svc.Register(ctx, appserver.Caller{Account: bob}, "fcm", "n1", "tok-2")
			return err
		}, appserver.RegistrationForbidden},
		{"device, second of the domain", func() error { _, err := svc.RegisterDevice(ctx, "fcm", bob, "dev", "", "tok"); return err }, ""},
		{"over the domain's quota", func() error {
			_, err := svc.Register(ctx, appserver.Caller{Account: bob}, "fcm", "n3", "tok")
			return err
		}, appserver.RegistrationQuota},
		{"registry failing", func() error {
			store.broken.Store(true)
			defer store.broken.Store(false)
			_, err := svc.Register(ctx, appserver.Caller{}, "fcm", "n4", "tok")
			return err
		}, appserver.RegistrationError},
		{"device, registry failing", func() error {
			store.broken.Store(true)
			defer store.broken.Store(false)
			_, err := svc.RegisterDevice(ctx, "fcm", alice, "dev-2", "", "tok")
			return err
		}, appserver.RegistrationError},
	} {
		obs.mu.Lock()
		obs.failures = nil
		obs.mu.Unlock()
		err := tc.register()
		obs.mu.Lock()
		got := obs.failures
		obs.mu.Unlock()
		switch {
		case tc.want == "" && (err != nil || len(got) != 0):
			t.Errorf("%s: err %v, failures counted %v; want neither", tc.name, err, got)
		case tc.want != "" && (err == nil || len(got) != 1 || got[0] != tc.want):
			t.Errorf("%s: err %v, failures counted %v; want an error counted as %s", tc.name, err, got, tc.want)
		}
	}
}

// An account past AccountRegisterLimit stores and removes nothing, and
// each refusal is counted as limited; the limit is the account's, not its
// domain's.
func TestAccountRegisterLimitCounted(t *testing.T) {
	ctx := context.Background()
	obs := &rejections{}
	store := memory.New()
	svc, err := appserver.New(store, []appserver.App{{Name: "fcm", Backend: &scripted{answers: map[string]error{}}}},
		appserver.Options{Observer: obs, AccountRegisterLimit: 2}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	alice := appserver.Account{Bare: "alice@example.org", Domain: "example.org"}
	for _, node := range []string{"n1", "n2"} {
		if _, err := svc.Register(ctx, appserver.Caller{Account: alice}, "fcm", node, "tok"); err != nil {
			t.Fatal(err)
		}
	}
	_, err = svc.RegisterDevice(ctx, "fcm", alice, "phone", "", "tok")
	if !errors.Is(err, appserver.ErrLimited) {
		t.Fatalf("third registration in a minute: %v, want ErrLimited", err)
	}
	if _, err := svc.Unregister(ctx, appserver.Caller{Account: alice}, "fcm", "n1"); !errors.Is(err, appserver.ErrLimited) {
		t.Fatalf("unregistration past the limit: %v, want ErrLimited", err)
	}
	if n, _ := store.Count(ctx); n != 2 {
		t.Errorf("%d registrations stored, want 2", n)
	}
	obs.mu.Lock()
	got := obs.failures
	obs.mu.Unlock()
	// The unregistration too: the limit, http.register_limit's count
	// and the alert on both are of registrations and unregistrations.
	if len(got) != 2 || got[0] != appserver.RegistrationLimited || got[1] != appserver.RegistrationLimited {
		t.Errorf("failures counted %v, want two limited", got)
	}
	bob := appserver.Account{Bare: "bob@example.org", Domain: "example.org"}
	if _, err := svc.Register(ctx, appserver.Caller{Account: bob}, "fcm", "n3", "tok"); err != nil {
		t.Errorf("another account of the domain: %v", err)
	}
}

// A Tigase registration stores no secret. A caller that gives no secret
// either (an HTTP client, another account) proves nothing by it: it must
// not take the node over with its own token, nor remove it.
func TestEmptySecretIsNoProof(t *testing.T) {
	ctx := context.Background()
	mallory := appserver.Caller{Account: appserver.Account{Bare: "mallory@evil.example", Domain: "evil.example"}}
	for _, strict := range []bool{false, true} {
		store := memory.New()
		svc, _ := appserver.New(store, testApps(&scripted{answers: map[string]error{}}), appserver.Options{StrictRegistration: strict}, slog.New(slog.DiscardHandler))
		reg, err := svc.RegisterTigase(ctx, "fcm", juliet, "device-token")
		if err != nil || reg.Secret != "" {
			t.Fatalf("tigase registration: %+v %v", reg, err)
		}
		for _, c := range []appserver.Caller{{}, mallory} {
			if _, err := svc.Register(ctx, c, "fcm", reg.Node, "evil-token"); !errors.Is(err, appserver.ErrForbidden) {
				t.Errorf("strict %v: %+v re-registered a secretless node without proof: %v", strict, c.Account, err)
			}
			if _, err := svc.Unregister(ctx, c, "fcm", reg.Node); !errors.Is(err, appserver.ErrForbidden) {
				t.Errorf("strict %v: %+v unregistered a secretless node without proof: %v", strict, c.Account, err)
			}
		}
		if r, err := store.Get(ctx, reg.Node); err != nil || r.Token != "device-token" {
			t.Fatalf("strict %v: registration now %+v %v", strict, r, err)
		}
	}
}

// With StrictRegistration an unbound node is removed only with its
// secret, and a node of another type is not found (its existence is not
// revealed by a "forbidden").
func TestStrictUnregister(t *testing.T) {
	ctx := context.Background()
	store := memory.New()
	svc, _ := appserver.New(store, testApps(&scripted{answers: map[string]error{}}), appserver.Options{StrictRegistration: true}, slog.New(slog.DiscardHandler))
	reg, err := svc.Register(ctx, appserver.Caller{}, "fcm", "n", "t")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := svc.Unregister(ctx, appserver.Caller{}, "apns", "n"); !errors.Is(err, appserver.ErrNotFound) {
		t.Errorf("unregister under another type: %v, want ErrNotFound", err)
	}
	if _, err := svc.Unregister(ctx, appserver.Caller{}, "fcm", "n"); !errors.Is(err, appserver.ErrForbidden) {
		t.Errorf("strict unregister without the secret: %v, want ErrForbidden", err)
	}
	if _, err := svc.Unregister(ctx, appserver.Caller{Secret: "wrong"}, "fcm", "n"); !errors.Is(err, appserver.ErrForbidden) {
		t.Errorf("strict unregister with a wrong secret: %v, want ErrForbidden", err)
	}
	if _, err := store.Get(ctx, "n"); err != nil {
		t.Fatalf("registration gone: %v", err)
	}
	if _, err := svc.Unregister(ctx, appserver.Caller{Secret: reg.Secret}, "fcm", "n"); err != nil {
		t.Fatalf("strict unregister with the secret: %v", err)
	}
}

// The push a throttle delayed ends its wait: the pushes after it, once
// its window has passed, go out again. A slot left waiting would refuse
// every later push to the device (and sweep never drops a waiting slot).
func TestThrottleAfterDelayedPush(t *testing.T) {
	ctx := context.Background()
	const window = 100 * time.Millisecond
	svc, _, b := newService(t, window)
	r, _ := svc.Register(ctx, appserver.Caller{}, "fcm", "n", "t")
	for i := range 2 { // the first at once, the second delayed
		if err := svc.Push(ctx, appserver.PushRequest{Node: "n", Secret: r.Secret}); err != nil {
			t.Fatalf("push %d: %v", i+1, err)
		}
	}
	time.Sleep(3 * window)
	if err := svc.Push(ctx, appserver.PushRequest{Node: "n", Secret: r.Secret}); err != nil {
		t.Fatalf("push after the delayed one's window passed: %v", err)
	}
	if n := len(b.Sent()); n != 3 {
		t.Fatalf("%d pushes sent, want 3", n)
	}
}

// hookedStore runs before, once, at the start of the next Register.
type hookedStore struct {
	*memory.Store
	before func()
}

func (s *hookedStore) Register(ctx context.Context, node string, decide registry.Decide) (registry.Registration, error) {
	if f := s.before; f != nil {
		s.before = nil
		f()
	}
	return s.Store.Register(ctx, node, decide)
}

// A push that reads a registration while it is being replaced caches
// what it read; the replacement's write drops that entry again, so the
// pushes with the new secret are not refused as "item-not-found" (which
// makes ejabberd disable push) for as long as the cache keeps it.
func TestPushDuringRegistrationNotCachedStale(t *testing.T) {
	ctx := context.Background()
	store := &hookedStore{Store: memory.New()}
	b := &scripted{answers: map[string]error{}}
	svc, err := appserver.New(store, testApps(b), appserver.Options{}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	old, _ := svc.Register(ctx, appserver.Caller{}, "fcm", "n", "old-token")
	store.before = func() {
		if err := svc.Push(ctx, appserver.PushRequest{Node: "n", Secret: old.Secret}); err != nil {
			t.Errorf("push while registering: %v", err)
		}
	}
	// A new token without the secret: a new secret.
	reg, err := svc.Register(ctx, appserver.Caller{}, "fcm", "n", "new-token")
	if err != nil || reg.Secret == old.Secret {
		t.Fatalf("re-registration: %+v %v", reg, err)
	}
	if err := svc.Push(ctx, appserver.PushRequest{Node: "n", Secret: reg.Secret}); err != nil {
		t.Fatalf("push with the new secret after the registration: %v", err)
	}
	if got := b.Sent(); got[len(got)-1].Token != "new-token" {
		t.Fatalf("pushed to %+v", got[len(got)-1])
	}
}

// A node appears above debug as node_ref, the first 12 hex digits of its
// SHA-256, so that an operator can follow one device through the log: a
// push with a wrong secret to a registered node of any length allowed is
// logged with the ref its "registered device" line has.
func TestRejectNodeRefMatchesNode(t *testing.T) {
	var buf logbuf.Buffer
	logger := slog.New(logging.Redact(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo})))
	b := &scripted{answers: map[string]error{}}
	svc, err := appserver.New(memory.New(), testApps(b), appserver.Options{}, logger)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	node := strings.Repeat("n", 80)
	if _, err := svc.Register(ctx, appserver.Caller{}, "fcm", node, "tok"); err != nil {
		t.Fatal(err)
	}
	svc.Push(ctx, appserver.PushRequest{Node: node, Secret: "wrong"})
	ref := "node_ref=" + logging.Ref(node)
	t.Logf("log:\n%s", buf.String())
	for _, l := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
		if !strings.Contains(l, ref) {
			t.Errorf("a line without the node's ref %s: %s", ref, l)
		}
	}
}

// TestDeadTokenOfRenewedRegistrationLogged: a push the service refuses
// as to a dead token that the device registered again since is answered
// "wait", and its registration kept: the log says so, as it does for any
// other failed push, where before it said nothing above debug, and the
// token stays out of it.
func TestDeadTokenOfRenewedRegistrationLogged(t *testing.T) {
	var buf logbuf.Buffer
	logger := slog.New(logging.Redact(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo})))
	const token = "d1e5d1e5d1e5d1e5"
	b := &scripted{answers: map[string]error{token: &push.DeadTokenError{Since: time.Now().Add(-time.Hour), Reason: "Unregistered"}}}
	svc, err := appserver.New(memory.New(), testApps(b), appserver.Options{}, logger)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	reg, err := svc.Register(ctx, appserver.Caller{}, "fcm", "renewed", token)
	if err != nil {
		t.Fatal(err)
	}
	if err := svc.Push(ctx, appserver.PushRequest{Node: "renewed", Secret: reg.Secret}); !errors.Is(err, appserver.ErrPushFailed) {
		t.Fatalf("Push = %v, want ErrPushFailed", err)
	}
	var line string
	for l := range strings.Lines(buf.String()) {
		if strings.Contains(l, "level=WARN") && strings.Contains(l, "push failed") {
			line = l
		}
	}
	if !strings.Contains(line, "registered since") || !strings.Contains(line, "app=fcm") {
		t.Errorf("no line says why the push failed:\n%s", buf.String())
	}
	if strings.Contains(buf.String(), token) {
		t.Errorf("the token is in the log:\n%s", buf.String())
	}
}

// TestPushFailedForUnreadableRegistryLogged: a push that fails because
// its registration or the block list cannot be read is a failed push
// like one its service refused, and the log says why, as the alert on
// failed pushes tells the operator it will. A tokenless push's node,
// which may be a token, stays out of the line.
func TestPushFailedForUnreadableRegistryLogged(t *testing.T) {
	const token = "c0ffee00c0ffee00"
	for _, tc := range []struct {
		name string
		req  appserver.PushRequest
		// blocks: the block list is what cannot be read, not the
		// registrations.
		blocks bool
	}{
		{"registered", appserver.PushRequest{Node: "n1"}, false},
		{"tokenless", appserver.PushRequest{Node: token, Tokenless: true, TokenApp: "fcm"}, false},
		{"block list", appserver.PushRequest{Node: token, Tokenless: true, TokenApp: "fcm"}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var buf logbuf.Buffer
			store := &unreadableStore{Store: memory.New()}
			var reg registry.Store = store
			if tc.blocks {
				reg = unreadableBlocks{store.Store}
			}
			b := &scripted{answers: map[string]error{}}
			svc, err := appserver.New(reg, testApps(b), appserver.Options{CacheSize: -1}, slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelWarn})))
			if err != nil {
				t.Fatal(err)
			}
			ctx := context.Background()
			r, err := svc.Register(ctx, appserver.Caller{}, "fcm", "n1", "tok")
			if err != nil {
				t.Fatal(err)
			}
			store.down.Store(true)
			tc.req.Secret = r.Secret
			if err := svc.Push(ctx, tc.req); !errors.Is(err, appserver.ErrPushFailed) {
				t.Fatalf("push %q with the registry unreadable: %v", tc.req.Node, err)
			}
			log := buf.String()
			if !strings.Contains(log, "push failed") || !strings.Contains(log, "connection refused") {
				t.Errorf("push %q failed for an unreadable registry; log at warn:\n%s", tc.req.Node, log)
			}
			if strings.Contains(log, token) {
				t.Errorf("a tokenless push's node in the log:\n%s", log)
			}
		})
	}
}

// unreadableBlocks is a registry whose block list cannot be read.
type unreadableBlocks struct{ *memory.Store }

func (unreadableBlocks) GetBlockedToken(context.Context, string, string) (registry.BlockedToken, error) {
	return registry.BlockedToken{}, errors.New("dial tcp: connection refused")
}

// slowBackend answers once the system clock passed took since the push
// reached it, and notes when that was and the push's Sent.
type slowBackend struct {
	took time.Duration

	mu            sync.Mutex
	reached, sent time.Time
}

func (b *slowBackend) Send(_ context.Context, n push.Notification) error {
	reached := time.Now()
	b.mu.Lock()
	b.reached, b.sent = reached, n.Sent
	b.mu.Unlock()
	for time.Since(reached) < b.took {
	}
	return nil
}

// TestPushTimedByItsAnswer: a push's latency and its recorded success
// are read from the clock once the push service answered, not before it
// was asked (the clock is read once for both); with a clock of the
// caller's (Options.Now), the success is recorded at that clock's time.
// The backend gets the time the push went out as its Sent.
func TestPushTimedByItsAnswer(t *testing.T) {
	fake := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, tt := range []struct {
		name string
		now  func() time.Time
	}{
		{"system clock", nil},
		{"caller's clock", func() time.Time { return fake }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			store := memory.New()
			obs := &rejections{}
			b := &slowBackend{took: 20 * time.Millisecond}
			svc, err := appserver.New(store, []appserver.App{{Name: "fcm", Priority: push.PriorityHigh, Backend: b}},
				appserver.Options{Observer: obs, Now: tt.now}, slog.New(slog.DiscardHandler))
			if err != nil {
				t.Fatal(err)
			}
			r, err := svc.Register(ctx, appserver.Caller{}, "fcm", "n", "t")
			if err != nil {
				t.Fatal(err)
			}
			before := time.Now()
			if err := svc.Push(ctx, appserver.PushRequest{Node: "n", Secret: r.Secret}); err != nil {
				t.Fatal(err)
			}
			after := time.Now()
			if b.sent.Before(before) || b.sent.After(b.reached) {
				t.Errorf("the backend got Sent %v, want between Push's call at %v and the push reaching it at %v", b.sent, before, b.reached)
			}
			if err := svc.Close(); err != nil {
				t.Fatal(err)
			}
			if len(obs.took) != 1 || obs.took[0] < b.took {
				t.Errorf("latency %v, want at least the push service's %v", obs.took, b.took)
			}
			got, _ := store.Get(ctx, "n")
			answered := b.reached.Add(b.took)
			if tt.now != nil {
				if !got.LastSuccessfulPush.Equal(fake) {
					t.Errorf("success recorded at %v, want the caller's clock's %v", got.LastSuccessfulPush, fake)
				}
			} else if got.LastSuccessfulPush.Before(answered) || got.LastSuccessfulPush.After(after) {
				t.Errorf("success recorded at %v, want between the answer at %v and Push's return at %v", got.LastSuccessfulPush, answered, after)
			}
		})
	}
}

// slowRegistry reads registrations only once the system clock passed
// took since the read began, and notes when the last read ended.
type slowRegistry struct {
	registry.Store
	took time.Duration

	mu   sync.Mutex
	read time.Time
}

func (s *slowRegistry) Get(ctx context.Context, node string) (registry.Registration, error) {
	began := time.Now()
	r, err := s.Store.Get(ctx, node)
	for time.Since(began) < s.took {
	}
	s.mu.Lock()
	s.read = time.Now()
	s.mu.Unlock()
	return r, err
}

// TestPushSentAfterRegistryRead: a push whose registration was read from
// the registry, not the cache, goes out (Sent, from which its app's
// deadline counts) after the read, which took none of that deadline.
func TestPushSentAfterRegistryRead(t *testing.T) {
	ctx := context.Background()
	store := &slowRegistry{Store: memory.New(), took: 20 * time.Millisecond}
	b := &slowBackend{}
	svc, err := appserver.New(store, []appserver.App{{Name: "fcm", Priority: push.PriorityHigh, Backend: b, Deadline: time.Minute}},
		appserver.Options{}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	r, err := svc.Register(ctx, appserver.Caller{}, "fcm", "n", "t")
	if err != nil {
		t.Fatal(err)
	}
	if err := svc.Push(ctx, appserver.PushRequest{Node: "n", Secret: r.Secret}); err != nil {
		t.Fatal(err)
	}
	if store.read.IsZero() || b.sent.Before(store.read) {
		t.Fatalf("sent at %v, before the registration was read at %v", b.sent, store.read)
	}
}

// hexAnyCase is an app whose service takes a token's hex digits in
// either case as one device, as APNS does.
type hexAnyCase struct{ *scripted }

func (hexAnyCase) CanonicalToken(t string) string { return strings.ToLower(t) }

// Registering a node again with its token spelt in other case, for a
// service that takes hex in either case (APNS), is the same device
// renewing: it keeps the node's secret, with which the user's server
// pushes, and is not refused under StrictRegistration. A client that
// writes the token's digits in upper case after an update otherwise
// loses its pushes until it enables push again (or, strict, can never
// renew its node without sending the secret).
func TestRegisterSameTokenOtherCase(t *testing.T) {
	ctx := context.Background()
	for _, strict := range []bool{false, true} {
		b := &scripted{answers: map[string]error{}}
		svc, err := appserver.New(memory.New(), []appserver.App{{Name: "apns", Priority: push.PriorityAuto, Backend: hexAnyCase{b}}},
			appserver.Options{StrictRegistration: strict}, slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatal(err)
		}
		const lower = "0a1b2c3d4e5f0a1b2c3d4e5f0a1b2c3d4e5f0a1b2c3d4e5f0a1b2c3d4e5f0a1b"
		r1, err := svc.Register(ctx, appserver.Caller{}, "apns", "n1", lower)
		if err != nil {
			t.Fatal(err)
		}
		if err := svc.Push(ctx, appserver.PushRequest{Node: "n1", Secret: r1.Secret}); err != nil {
			t.Fatal(err)
		}
		r2, err := svc.Register(ctx, appserver.Caller{}, "apns", "n1", strings.ToUpper(lower))
		if err != nil || r2.Secret != r1.Secret {
			t.Errorf("strict=%v: the same token in upper case: secret kept %v, err %v; want the secret kept", strict, err == nil && r2.Secret == r1.Secret, err)
		}
		// Nor does it lose the proof that the token took a push: a
		// refusal a misconfigured app gets for every token keeps the
		// registration, and the push is answered wait.
		for _, tok := range []string{lower, strings.ToUpper(lower)} {
			b.set(tok, &push.DeadTokenError{Since: time.Now(), Reason: "BadDeviceToken", Suspect: true})
		}
		if err := svc.Push(ctx, appserver.PushRequest{Node: "n1", Secret: r1.Secret}); !errors.Is(err, appserver.ErrPushFailed) {
			t.Errorf("strict=%v: push with the secret the user's server has, refused as a misconfigured app is: %v, want ErrPushFailed (wait)", strict, err)
		}
	}
}
