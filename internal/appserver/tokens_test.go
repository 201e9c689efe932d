package appserver_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/push-appserver/push-appserver/internal/appserver"
	"github.com/push-appserver/push-appserver/internal/push"
	"github.com/push-appserver/push-appserver/internal/push/apns"
	"github.com/push-appserver/push-appserver/internal/registry"
	"github.com/push-appserver/push-appserver/internal/registry/memory"
	"github.com/push-appserver/push-appserver/internal/registry/sqlite"
	"github.com/push-appserver/push-appserver/internal/testutil/apnsmock"
	"github.com/push-appserver/push-appserver/internal/testutil/fakeclock"
)

func newTokenService(t *testing.T, store registry.Store, rate time.Duration, now func() time.Time) (*appserver.Service, *scripted) {
	t.Helper()
	b := &scripted{answers: map[string]error{}}
	svc, err := appserver.New(store, []appserver.App{
		{Name: "apns", Priority: push.PriorityAuto, Backend: hexOnly{b}},
		{Name: "fcm", Priority: push.PriorityHigh, Backend: b},
	}, appserver.Options{RateLimit: rate, TokenBlock: 24 * time.Hour, Now: now}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	return svc, b
}

// fpush's tokenless pushes: the publish's node is the device token and
// publish-options name the app in pushModule (fpush
// fpush/src/xmpp/message_loop.rs, parse_token_and_module_id).
func TestTokenless(t *testing.T) {
	ctx := context.Background()
	store := memory.New()
	svc, b := newTokenService(t, store, 0, nil)
	tokenless := func(node, secret, app string) error {
		return svc.Push(ctx, appserver.PushRequest{Node: node, Secret: secret, Tokenless: true, TokenApp: app})
	}
	if err := tokenless("ab12", "", "apns"); err != nil {
		t.Fatalf("tokenless push: %v", err)
	}
	if got := b.Sent(); len(got) != 1 || got[0].Token != "ab12" || got[0].App != "apns" || got[0].Node != "" {
		t.Fatalf("sent %+v: want the node as the token, and no node in the notification", got)
	}
	// A registered node is still a registration: its secret counts. A
	// wrong one never reaches the registration's token; it is a push
	// to the node as a token, as to a node nobody registered, so that
	// its answer does not tell the two apart.
	reg, _ := svc.Register(ctx, appserver.Caller{}, "apns", "cd34", "ef56")
	if err := tokenless("cd34", "wrong", "apns"); err != nil || b.Sent()[1].Token != "cd34" {
		t.Fatalf("registered node with a wrong secret: %v, sent %+v; want a push to the node as a token", err, b.Sent())
	}
	if err := tokenless("cd34", reg.Secret, "apns"); err != nil || b.Sent()[2].Token != "ef56" {
		t.Fatalf("registered node: %v, sent %+v", err, b.Sent())
	}
	if err := tokenless("not a token", "", "apns"); !errors.Is(err, appserver.ErrNotFound) {
		t.Fatalf("node shaped unlike an APNS token = %v, want ErrNotFound", err)
	}
	if err := tokenless("ab12", "", "nope"); !errors.Is(err, appserver.ErrUnknownType) {
		t.Fatalf("unknown app = %v, want ErrUnknownType", err)
	}
	// No app named and none to default to: an unknown node like any
	// other, not an app that may be configured later.
	if err := tokenless("ab12", "", ""); !errors.Is(err, appserver.ErrNotFound) {
		t.Fatalf("no app = %v, want ErrNotFound", err)
	}
	if err := svc.Push(ctx, appserver.PushRequest{Node: "ab12"}); !errors.Is(err, appserver.ErrNotFound) {
		t.Fatalf("the same publish without tokenless = %v, want ErrNotFound", err)
	}
	if n := len(b.Sent()); n != 3 {
		t.Fatalf("%d pushes sent, want 3", n)
	}
}

// A token the push service declared dead is refused until the block ends,
// then tried again; success lifts the block.
func TestTokenBlockList(t *testing.T) {
	ctx := context.Background()
	store := memory.New()
	clk := fakeclock.New(time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC))
	svc, b := newTokenService(t, store, 0, clk.Now)
	push1 := func() error {
		return svc.PushToken(ctx, appserver.TokenPush{App: "fcm", Token: "dead-token", Request: appserver.PushRequest{Node: "n"}})
	}
	b.set("dead-token", &push.DeadTokenError{Since: clk.Now(), Reason: "UNREGISTERED"})
	if err := push1(); !errors.Is(err, appserver.ErrNotFound) {
		t.Fatalf("dead token = %v, want ErrNotFound", err)
	}
	blocked, err := store.GetBlockedToken(ctx, "fcm", "dead-token")
	if err != nil || !blocked.Until.Equal(clk.Now().Add(24*time.Hour)) || blocked.Reason != "UNREGISTERED" {
		t.Fatalf("block list entry %+v, %v", blocked, err)
	}
	if err := push1(); !errors.Is(err, appserver.ErrNotFound) || len(b.Sent()) != 1 {
		t.Fatalf("blocked token = %v after %d sends; want ErrNotFound and no send", err, len(b.Sent()))
	}
	clk.Advance(25 * time.Hour)
	b.set("dead-token", nil)
	if err := push1(); err != nil || len(b.Sent()) != 2 {
		t.Fatalf("after the block = %v, %d sends", err, len(b.Sent()))
	}
	if _, err := store.GetBlockedToken(ctx, "fcm", "dead-token"); !errors.Is(err, registry.ErrNotFound) {
		t.Fatalf("a successful push left the block: %v", err)
	}
}

// Tokens are throttled as nodes are: per token and priority.
func TestTokenThrottle(t *testing.T) {
	ctx := context.Background()
	svc, b := newTokenService(t, memory.New(), time.Hour, nil)
	send := func(ctx context.Context, token string, silent bool) error {
		return svc.PushToken(ctx, appserver.TokenPush{App: "fcm", Token: token, Silent: silent})
	}
	if err := send(ctx, "t1", false); err != nil {
		t.Fatal(err)
	}
	// The second push of a burst waits for the next window (an hour).
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if err := send(short, "t1", false); !errors.Is(err, appserver.ErrThrottled) {
		t.Fatalf("second push to t1 = %v, want ErrThrottled", err)
	}
	if err := send(ctx, "t2", false); err != nil {
		t.Fatalf("another token is throttled too: %v", err)
	}
	if err := send(ctx, "t1", true); err != nil {
		t.Fatalf("a silent push to t1 (its own window): %v", err)
	}
	got := b.Sent()
	if len(got) != 3 || got[2].Priority != push.PrioritySilent {
		t.Fatalf("sent %+v", got)
	}
}

// The block list lives in the registry, so a restart does not forget it
// (fpush keeps it in memory and loses it): a real SQLite file, closed and
// opened again by a new service.
func TestTokenBlockSurvivesRestart(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "registry.db")
	store, err := sqlite.Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	svc, b := newTokenService(t, store, 0, nil)
	b.set("ab12", &push.DeadTokenError{Since: time.Now(), Reason: "Unregistered"})
	req := appserver.PushRequest{Node: "ab12", Tokenless: true, TokenApp: "apns"}
	if err := svc.Push(ctx, req); !errors.Is(err, appserver.ErrNotFound) {
		t.Fatalf("dead token = %v", err)
	}
	svc.Close()
	store.Close()

	store, err = sqlite.Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	svc, b = newTokenService(t, store, 0, nil)
	if err := svc.Push(ctx, req); !errors.Is(err, appserver.ErrNotFound) {
		t.Fatalf("after a restart the blocked token = %v, want ErrNotFound", err)
	}
	if n := len(b.Sent()); n != 0 {
		t.Fatalf("after a restart the blocked token went to the push service %d times", n)
	}
}

// BenchmarkTokenlessPush measures a tokenless push with the SQLite
// registry: the registration lookup that misses and the block-list read.
func BenchmarkTokenlessPush(b *testing.B) {
	ctx := context.Background()
	store, err := sqlite.Open(ctx, filepath.Join(b.TempDir(), "registry.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer store.Close()
	svc, err := appserver.New(store, []appserver.App{{Name: "fcm", Priority: push.PriorityHigh, Backend: nopBackend{}}},
		appserver.Options{}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		b.Fatal(err)
	}
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := svc.Push(ctx, appserver.PushRequest{Node: "fcm-token", Tokenless: true, TokenApp: "fcm"}); err != nil {
				b.Fatal(err)
			}
		}
	})
}

type nopBackend struct{}

func (nopBackend) Send(context.Context, push.Notification) error { return nil }

// countingStore counts the registry reads a push makes.
type countingStore struct {
	registry.Store
	gets, blockReads atomic.Int32
}

func (c *countingStore) Get(ctx context.Context, node string) (registry.Registration, error) {
	c.gets.Add(1)
	return c.Store.Get(ctx, node)
}

func (c *countingStore) GetBlockedToken(ctx context.Context, typ, token string) (registry.BlockedToken, error) {
	c.blockReads.Add(1)
	return c.Store.GetBlockedToken(ctx, typ, token)
}

// Tokenless pushes to a device token read the registry and the block list
// once, not once each (Monal pushes this way); the token registered as a
// node later is a registration at once. An ordinary push to an unknown
// node keeps reading the registry.
func TestTokenlessPushesReadOnce(t *testing.T) {
	ctx := context.Background()
	store := &countingStore{Store: memory.New()}
	svc, b := newTokenService(t, store, 0, nil)
	tokenless := func(node, secret string) error {
		return svc.Push(ctx, appserver.PushRequest{Node: node, Secret: secret, Tokenless: true, TokenApp: "apns"})
	}
	for range 3 {
		if err := tokenless("ab12", ""); err != nil {
			t.Fatal(err)
		}
	}
	if g, r := store.gets.Load(), store.blockReads.Load(); g != 1 || r != 1 || len(b.Sent()) != 3 {
		t.Fatalf("3 tokenless pushes: %d registry reads, %d block list reads, %d sent; want 1, 1, 3", g, r, len(b.Sent()))
	}
	reg, err := svc.Register(ctx, appserver.Caller{}, "apns", "ab12", "cd34")
	if err != nil {
		t.Fatal(err)
	}
	if err := tokenless("ab12", "wrong"); err != nil || b.Sent()[3].Token != "ab12" {
		t.Fatalf("the token registered as a node, wrong secret: %v, sent %+v; want a push to the node as a token", err, b.Sent())
	}
	if err := tokenless("ab12", reg.Secret); err != nil || b.Sent()[4].Token != "cd34" {
		t.Fatalf("the token registered as a node: %v, sent %+v", err, b.Sent())
	}
	before := store.gets.Load()
	for range 2 {
		if err := svc.Push(ctx, appserver.PushRequest{Node: "unknown", Secret: "s"}); !errors.Is(err, appserver.ErrNotFound) {
			t.Fatal(err)
		}
	}
	if n := store.gets.Load() - before; n != 2 {
		t.Fatalf("2 pushes to an unknown node read the registry %d times, want 2", n)
	}
}

// A dead answer blocks the token at once for this instance's later pushes,
// without reading the block list again.
func TestTokenBlockCached(t *testing.T) {
	ctx := context.Background()
	store := &countingStore{Store: memory.New()}
	svc, b := newTokenService(t, store, 0, nil)
	send := func() error {
		return svc.PushToken(ctx, appserver.TokenPush{App: "fcm", Token: "dead-token"})
	}
	if err := send(); err != nil {
		t.Fatal(err)
	}
	b.set("dead-token", &push.DeadTokenError{Since: time.Now(), Reason: "UNREGISTERED"})
	if err := send(); !errors.Is(err, appserver.ErrNotFound) {
		t.Fatalf("dead answer = %v, want ErrNotFound", err)
	}
	if err := send(); !errors.Is(err, appserver.ErrNotFound) || len(b.Sent()) != 2 {
		t.Fatalf("blocked token = %v after %d sends; want ErrNotFound and no send", err, len(b.Sent()))
	}
	if n := store.blockReads.Load(); n != 1 {
		t.Fatalf("block list read %d times, want once", n)
	}
}

// BenchmarkPush measures a push to a registered device whose
// registration is in the cache: the push path without the registry.
func BenchmarkPush(b *testing.B) {
	ctx := context.Background()
	svc, err := appserver.New(memory.New(), []appserver.App{{Name: "fcm", Priority: push.PriorityHigh, Backend: nopBackend{}}},
		appserver.Options{}, slog.New(slog.DiscardHandler))
	if err != nil {
		b.Fatal(err)
	}
	r, err := svc.Register(ctx, appserver.Caller{}, "fcm", "node", "token")
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := svc.Push(ctx, appserver.PushRequest{Node: r.Node, Secret: r.Secret}); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// MongooseIM's silent publish option makes a push silent, except to a
// VoIP app: a call sent as a background push to the app's normal topic
// would not ring.
func TestSilentOptionKeepsVoIP(t *testing.T) {
	ctx := context.Background()
	svc, _, b := newService(t, 0)
	if err := svc.PushToken(ctx, appserver.TokenPush{App: "voip", Token: "call-token", Silent: true}); err != nil {
		t.Fatal(err)
	}
	if err := svc.PushToken(ctx, appserver.TokenPush{App: "fcm", Token: "fcm-token", Silent: true}); err != nil {
		t.Fatal(err)
	}
	got := b.Sent()
	if len(got) != 2 || got[0].Priority != push.PriorityVoIP || got[1].Priority != push.PrioritySilent {
		t.Fatalf("sent %+v; want the call as VoIP and the fcm push silent", got)
	}
}

// refusedUsersGone registers n users whose production tokens the mock
// refuses BadDeviceToken, as the sandbox does, pushes to each, and returns
// how many were answered not-found (IQ cancel/item-not-found) or lost
// their registration.
func refusedUsersGone(t *testing.T, svc *appserver.Service, store registry.Store, m *apnsmock.Server, n int) int {
	t.Helper()
	ctx := context.Background()
	gone := 0
	for i := range n {
		tok := fmt.Sprintf("%064x", i+1)
		m.FailToken(tok, apnsmock.Fault{Status: 400, Reason: "BadDeviceToken"})
		node := fmt.Sprint("user-", i)
		reg, _ := svc.Register(ctx, appserver.Caller{}, "ios", node, tok)
		err := svc.Push(ctx, appserver.PushRequest{Node: node, Secret: reg.Secret})
		_, getErr := store.Get(ctx, node)
		if errors.Is(err, appserver.ErrNotFound) || errors.Is(getErr, registry.ErrNotFound) {
			gone++
			t.Logf("%s: push answered %v (IQ cancel/item-not-found); registration deleted: %v", node, err, errors.Is(getErr, registry.ErrNotFound))
		}
	}
	return gone
}

// A production app left on sandbox = true, through the core (the mock
// plays Apple's sandbox: it takes the developer's token and answers
// BadDeviceToken to every App Store token). After the developer's one push
// went through, the users' pushes must be answered wait and their
// registrations kept, not item-not-found (cancel: ejabberd deletes the
// push session) with the registrations deleted.
func TestSandboxMismatchKeepsProductionDevices(t *testing.T) {
	ctx := context.Background()
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	b, m := realAPNS(t, true)
	store := memory.New()
	svc, err := appserver.New(store, []appserver.App{{Name: "ios", Priority: push.PriorityAuto, Backend: b}}, appserver.Options{}, quiet)
	if err != nil {
		t.Fatal(err)
	}
	dev, _ := svc.Register(ctx, appserver.Caller{}, "ios", "developer", fmt.Sprintf("%064x", 999))
	if err := svc.Push(ctx, appserver.PushRequest{Node: "developer", Secret: dev.Secret}); err != nil {
		t.Fatal(err)
	}
	gone := refusedUsersGone(t, svc, store, m, 5)
	if gone > 0 {
		t.Fatalf("%d of 5 production devices deleted and told cancel, on a production app left on the sandbox", gone)
	}
}

// judgedBackend refuses the tokens in dead the way APNS refuses a token
// not of its environment (BadDeviceToken), takes every other, and hands
// each outcome to a real breaker, as the APNS backend does.
type judgedBackend struct {
	breaker *push.Breaker
	dead    map[string]bool
	mu      sync.Mutex
	sent    map[string]int
}

func (b *judgedBackend) Send(ctx context.Context, n push.Notification) error {
	b.mu.Lock()
	b.sent[n.Token]++
	b.mu.Unlock()
	if b.dead[n.Token] {
		return b.breaker.JudgeCtx(ctx, "", &push.SuspectTokenError{Reason: "BadDeviceToken", Cause: "sandbox/production mismatch?"})
	}
	return b.breaker.JudgeCtx(ctx, "", nil)
}

// A quiet, healthy app: one device's token is refused for good (a
// development build's token on the production app), every other device's
// pushes go through. Its first push after the app proved itself is
// answered wait (one success, one refusal: refusals are no minority) and
// kept for redelivery. Its attempts must not count as more refusals of
// the app: a dozen of them would outvote the other devices' successes,
// and the token would never be taken as dead, however many devices the
// app reaches meanwhile.
func TestRefusedTokenRetriedDoesNotOutvoteQuietApp(t *testing.T) {
	ctx := context.Background()
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	b := &judgedBackend{breaker: push.NewBreaker("ios", push.BreakerOptions{Window: 500 * time.Millisecond}, quiet), dead: map[string]bool{"dead": true}, sent: map[string]int{}}
	store := memory.New()
	svc, err := appserver.New(store, []appserver.App{{Name: "ios", Priority: push.PriorityHigh, Backend: b}}, appserver.Options{Redelivery: time.Minute}, quiet)
	if err != nil {
		t.Fatal(err)
	}
	// Time runs 120 times faster than in production: redelivery's first
	// wait 20 ms (2.5 s), the breaker's window 500 ms (one minute).
	svc.SetRedeliveryTiming(20*time.Millisecond, 5*time.Millisecond)
	running(t, svc)
	d, _ := svc.Register(ctx, appserver.Caller{}, "ios", "dev-build", "dead")
	push1 := func(i int) error {
		node := fmt.Sprint("user-", i)
		r, _ := svc.Register(ctx, appserver.Caller{}, "ios", node, fmt.Sprint("tok-", i))
		return svc.Push(ctx, appserver.PushRequest{Node: node, Secret: r.Secret})
	}
	if err := push1(0); err != nil {
		t.Fatal(err)
	}
	t.Logf("first push to the refused token: %v", svc.Push(ctx, appserver.PushRequest{Node: "dev-build", Secret: d.Secret}))
	// Ten other devices pushed meanwhile, fewer than the redelivery attempts: a quiet app.
	for i := 1; i <= 10; i++ {
		time.Sleep(150 * time.Millisecond)
		if err := push1(i); err != nil {
			t.Fatal(err)
		}
	}
	err = svc.Push(ctx, appserver.PushRequest{Node: "dev-build", Secret: d.Secret})
	_, getErr := store.Get(ctx, "dev-build")
	b.mu.Lock()
	attempts := b.sent["dead"]
	b.mu.Unlock()
	if getErr == nil {
		t.Fatalf("after 11 devices' successes and one device refused, its push is answered %v and its registration kept; the refused token was sent %d times", err, attempts)
	}
}

// realAPNS is the real APNS backend against the mock, of the sandbox
// when sandbox is set (which the mock does not tell apart).
func realAPNS(t *testing.T, sandbox bool) (*apns.Backend, *apnsmock.Server) {
	t.Helper()
	p8, pub, _ := apnsmock.TokenKey()
	keyFile := filepath.Join(t.TempDir(), "key.p8")
	if err := os.WriteFile(keyFile, p8, 0o600); err != nil {
		t.Fatal(err)
	}
	m, err := apnsmock.New(apnsmock.Config{TokenKey: pub, KeyID: "K1", TeamID: "T1", Topic: "im.example.app"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Close)
	b, err := apns.New(apns.Options{Topic: "im.example.app", Sandbox: sandbox, Endpoint: m.URL, CAPath: m.CADir,
		TokenKeyFile: keyFile, KeyID: "K1", TeamID: "T1"}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	return b, m
}

// A stranger's tokenless pushes to one device are throttled per token.
// An APNS token is hex, and APNS takes it in either case (the APNS
// backend's ValidateToken accepts both): the same device named in upper
// case, or with any one letter's case changed, must share the window.
func TestTokenlessThrottleCaseVariants(t *testing.T) {
	ctx := context.Background()
	b, m := realAPNS(t, false)
	svc, err := appserver.New(memory.New(), []appserver.App{{Name: "ios", Priority: push.PriorityAuto, Backend: b}},
		appserver.Options{RateLimit: time.Hour}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	device := strings.Repeat("ab", 32)
	variants := []string{device, strings.ToUpper(device), "A" + device[1:], "aB" + device[2:], "Ab" + device[2:]}
	sent := 0
	for _, tok := range variants {
		short, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
		err := svc.Push(short, appserver.PushRequest{Node: tok, Tokenless: true, TokenApp: "ios"})
		cancel()
		if err == nil {
			sent++
		} else if !errors.Is(err, appserver.ErrThrottled) {
			t.Fatalf("%s: %v", tok, err)
		}
	}
	if sent > 1 {
		t.Fatalf("rate_limit = 1h, yet %d of %d tokenless pushes to one device (its token in other case) reached APNS at once (%d requests at the mock)", sent, len(variants), m.Total())
	}
}

// The block list is per token string too: a token APNS declared dead
// (410) is asked again when named in another case.
func TestTokenlessBlockCaseVariants(t *testing.T) {
	ctx := context.Background()
	b, m := realAPNS(t, false)
	svc, err := appserver.New(memory.New(), []appserver.App{{Name: "ios", Priority: push.PriorityAuto, Backend: b}},
		appserver.Options{}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	dead := strings.Repeat("cd", 32)
	m.FailToken(dead, apnsmock.Fault{Status: 410, Reason: "Unregistered"})
	if err := svc.Push(ctx, appserver.PushRequest{Node: dead, Tokenless: true, TokenApp: "ios"}); !errors.Is(err, appserver.ErrNotFound) {
		t.Fatalf("dead token = %v", err)
	}
	before := m.Total()
	svc.Push(ctx, appserver.PushRequest{Node: strings.ToUpper(dead), Tokenless: true, TokenApp: "ios"})
	if m.Total() != before {
		t.Fatalf("a blocked (dead) token named in upper case went to APNS again (%d requests, was %d)", m.Total(), before)
	}
}

// refusingMadeUp answers like APNS through a real breaker: a made-up
// token (prefix "f") is refused BadDeviceToken, the token "down" meets a
// 503, every other token is taken.
type refusingMadeUp struct{ breaker *push.Breaker }

func (b *refusingMadeUp) Send(ctx context.Context, n push.Notification) error {
	switch {
	case strings.HasPrefix(n.Token, "f"):
		return b.breaker.JudgeCtx(ctx, "", &push.SuspectTokenError{Reason: "BadDeviceToken", Cause: "sandbox/production mismatch?"})
	case n.Token == "down":
		return &push.TemporaryError{Reason: "503 ServiceUnavailable"}
	}
	return b.breaker.JudgeCtx(ctx, "", nil)
}

// Anyone on the XMPP network can send tokenless publishes. Made-up
// APNS-shaped tokens are refused BadDeviceToken; once such refusals
// outnumber the app's successes the breaker answers them as temporary
// failures, and each such push is kept for redelivery, in the room
// (65,536 devices, 32 MB) the registered devices' failed pushes need
// during an APNS incident. Like pushes whose sender proved nothing
// (unread pushes), they must take at most half of it, so that a few
// thousand publishes with 4 KB summaries leave room for a real device's
// push.
func TestStrangersTokenlessPushesFillRedelivery(t *testing.T) {
	ctx := context.Background()
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	b := &refusingMadeUp{breaker: push.NewBreaker("ios", push.BreakerOptions{}, quiet)}
	svc, err := appserver.New(memory.New(), []appserver.App{{Name: "ios", Priority: push.PriorityAuto, Backend: b}},
		appserver.Options{}, quiet)
	if err != nil {
		t.Fatal(err)
	}
	// The app proves itself with a real device's push.
	ok, _ := svc.Register(ctx, appserver.Caller{}, "ios", "alice-phone", strings.Repeat("0", 64))
	if err := svc.Push(ctx, appserver.PushRequest{Node: "alice-phone", Secret: ok.Secret}); err != nil {
		t.Fatal(err)
	}
	// The stranger: distinct made-up tokens, 4 KB sender and body each
	// (xep0357 keeps 4096 bytes of each field).
	big := strings.Repeat("x", 4096)
	kept := 0
	for i := range 4000 {
		tok := "f" + strings.Repeat("0", 55) + hex8(i)
		err := svc.Push(ctx, appserver.PushRequest{Node: tok, Tokenless: true, TokenApp: "ios",
			Summary: &push.Summary{MessageCount: 1, LastMessageSender: big, LastMessageBody: big, HasLastMessageBody: true}})
		if errors.Is(err, appserver.ErrPushFailed) {
			kept++
		}
	}
	// Then small ones, for the bytes the big ones left.
	for i := range 100 {
		tok := "f" + strings.Repeat("1", 55) + hex8(i)
		if err := svc.Push(ctx, appserver.PushRequest{Node: tok, Tokenless: true, TokenApp: "ios"}); errors.Is(err, appserver.ErrPushFailed) {
			kept++
		}
	}
	t.Logf("stranger's publishes answered as temporary failures: %d; redelivery %+v", kept, svc.RedeliveryStats())
	// APNS has an incident: a registered device's push fails with 503.
	reg, _ := svc.Register(ctx, appserver.Caller{}, "ios", "bob-phone", "down")
	before := svc.RedeliveryStats()
	if err := svc.Push(ctx, appserver.PushRequest{Node: "bob-phone", Secret: reg.Secret}); !errors.Is(err, appserver.ErrPushFailed) {
		t.Fatalf("push to bob = %v", err)
	}
	after := svc.RedeliveryStats()
	if after.Dropped > before.Dropped {
		t.Fatalf("a registered device's failed push was dropped, not kept for redelivery: the room is held by %d pushes of a stranger's made-up tokens (%+v)", before.Pending, after)
	}
}

func hex8(i int) string {
	const digits = "0123456789abcdef"
	var b [8]byte
	for j := 7; j >= 0; j-- {
		b[j] = digits[i&15]
		i >>= 4
	}
	return string(b[:])
}

// A production app left on the sandbox: every user's token is refused
// (BadDeviceToken), only a development build's goes through. Pushes
// refused before that one success are answered wait and kept; their
// redelivery attempts after it are counted nowhere, and judged against
// one success and no refusal: every user's registration is removed.
func TestRedeliveryOfPushesRefusedBeforeProofKeepsRegistrations(t *testing.T) {
	if gone := redeliveredRefusalsGone(t, 3, 1); gone > 0 {
		t.Fatalf("%d of 3 users' registrations removed on a development build's one success", gone)
	}
}

// TestSandboxMismatchKeepsProductionDevices, with a network blip between
// the developer's push and the users': the pushes the blip failed reached
// no APNS, and must not count as answers that outvote its refusals.
func TestNetworkBlipThenSandboxMismatchKeepsProductionDevices(t *testing.T) {
	ctx := context.Background()
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	b, m := realAPNS(t, true)
	store := memory.New()
	svc, err := appserver.New(store, []appserver.App{{Name: "ios", Priority: push.PriorityAuto, Backend: b}}, appserver.Options{PushTimeout: 500 * time.Millisecond, RateLimit: -1}, quiet)
	if err != nil {
		t.Fatal(err)
	}
	m.GoAwayEvery(1) // the connection goes after each answer
	dev, _ := svc.Register(ctx, appserver.Caller{}, "ios", "developer", fmt.Sprintf("%064x", 999))
	if err := svc.Push(ctx, appserver.PushRequest{Node: "developer", Secret: dev.Secret}); err != nil {
		t.Fatal(err)
	}
	// The network resets every connection for a moment: 25 users'
	// pushes fail (wait) without reaching APNS.
	m.ResetConnections(true)
	var wg sync.WaitGroup
	for i := range 25 {
		node := fmt.Sprint("blip-", i)
		reg, _ := svc.Register(ctx, appserver.Caller{}, "ios", node, fmt.Sprintf("%064x", 1000+i))
		wg.Go(func() {
			if err := svc.Push(ctx, appserver.PushRequest{Node: node, Secret: reg.Secret}); !errors.Is(err, appserver.ErrPushFailed) {
				t.Errorf("push during the blip: %v", err)
			}
		})
	}
	wg.Wait()
	m.ResetConnections(false)
	gone := refusedUsersGone(t, svc, store, m, 5)
	if gone > 0 {
		t.Fatalf("%d of 5 production devices deleted and told cancel, on a production app left on the sandbox, after a network blip", gone)
	}
}

// TestRedeliveryOfPushesRefusedBeforeProofKeepsRegistrations with two
// development builds' successes rather than one: each redelivery attempt
// of a push refused before the proof is counted nowhere, and judged
// against two successes and its own one refusal, a minority: every
// user's registration is removed, one redelivery after another.
func TestRedeliveryAfterTwoSuccessesKeepsRegistrations(t *testing.T) {
	// Fresh pushes of theirs after the two successes: the first is a
	// minority refusal (1 of 3) and taken for dead, the next ones are
	// no minority (2 of 4, ...) and answered wait.
	if gone := redeliveredRefusalsGone(t, 5, 2); gone > 1 {
		t.Fatalf("%d of 5 users' registrations removed on two development builds' successes; fresh pushes of theirs would have lost one", gone)
	}
}

// redeliveredRefusalsGone is a production app left on the sandbox:
// users' pushes, each refused (BadDeviceToken) before any success, wait
// for redelivery; then devBuilds development builds' pushes go through,
// and once every user's push was sent again at least once it returns how
// many of the users' registrations are gone.
func redeliveredRefusalsGone(t *testing.T, users, devBuilds int) int {
	t.Helper()
	ctx := context.Background()
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	dead := map[string]bool{}
	for i := range users {
		dead[fmt.Sprint("prod-", i)] = true
	}
	b := &judgedBackend{breaker: push.NewBreaker("ios", push.BreakerOptions{Window: 500 * time.Millisecond}, quiet), dead: dead, sent: map[string]int{}}
	store := memory.New()
	svc, err := appserver.New(store, []appserver.App{{Name: "ios", Priority: push.PriorityHigh, Backend: b}}, appserver.Options{Redelivery: time.Minute}, quiet)
	if err != nil {
		t.Fatal(err)
	}
	svc.SetRedeliveryTiming(20*time.Millisecond, 5*time.Millisecond)
	running(t, svc)
	for i := range users {
		r, _ := svc.Register(ctx, appserver.Caller{}, "ios", fmt.Sprint("user-", i), fmt.Sprint("prod-", i))
		if err := svc.Push(ctx, appserver.PushRequest{Node: r.Node, Secret: r.Secret}); err == nil {
			t.Fatalf("user %d's push before any success: %v", i, err)
		}
	}
	for i := range devBuilds {
		dev, _ := svc.Register(ctx, appserver.Caller{}, "ios", fmt.Sprint("dev-build-", i), fmt.Sprint("dev-", i))
		if err := svc.Push(ctx, appserver.PushRequest{Node: dev.Node, Secret: dev.Secret}); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, func() bool {
		b.mu.Lock()
		defer b.mu.Unlock()
		for i := range users {
			if b.sent[fmt.Sprint("prod-", i)] < 2 {
				return false
			}
		}
		return true
	}, func() string { return "no redelivery attempts" })
	time.Sleep(100 * time.Millisecond)
	gone := 0
	for i := range users {
		if _, err := store.Get(ctx, fmt.Sprint("user-", i)); err != nil {
			gone++
		}
	}
	return gone
}

// TestTokenlessDeviceNotTakenByRegisteringItsToken: a device on
// tokenless push (its node is its token, its publishes carry no secret)
// keeps its pushes when someone who knows the token registers it as a
// node of their own over HTTP: a publish without a secret to that node is
// still a push to the token, not a wrong secret answered item-not-found,
// which would end the push session for good.
func TestTokenlessDeviceNotTakenByRegisteringItsToken(t *testing.T) {
	ctx := context.Background()
	store := memory.New()
	svc, b := newTokenService(t, store, 0, nil)
	const victim = "a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90"
	publish := func() error {
		return svc.Push(ctx, appserver.PushRequest{Node: victim, Tokenless: true, TokenApp: "apns"})
	}
	if err := publish(); err != nil {
		t.Fatalf("tokenless push before: %v", err)
	}
	if _, err := svc.Register(ctx, appserver.Caller{}, "apns", victim, "ffff0000"); err != nil {
		t.Fatal(err)
	}
	if err := publish(); err != nil {
		t.Fatalf("the user's server's tokenless publish after a stranger registered the token as a node: %v (answered cancel/item-not-found)", err)
	}
	if got := b.Sent(); got[len(got)-1].Token != victim {
		t.Fatalf("last push went to %q", got[len(got)-1].Token)
	}
}

// TestTokenBlockFromClockAhead: a block written while the clock was a year
// ahead (set right since, by NTP) ends more than token_block from now.
// No block is that long, so it is taken as ended, as a lease that long is
// lapsed: the token is tried again rather than refused for a year.
func TestTokenBlockFromClockAhead(t *testing.T) {
	ctx := context.Background()
	store := memory.New()
	clk := fakeclock.New(time.Date(2027, 5, 1, 12, 0, 0, 0, time.UTC))
	svc, b := newTokenService(t, store, 0, clk.Now)
	push1 := func() error {
		return svc.PushToken(ctx, appserver.TokenPush{App: "fcm", Token: "tok", Request: appserver.PushRequest{Node: "n"}})
	}
	b.set("tok", &push.DeadTokenError{Since: clk.Now(), Reason: "UNREGISTERED"})
	if err := push1(); !errors.Is(err, appserver.ErrNotFound) {
		t.Fatalf("dead token = %v, want ErrNotFound", err)
	}
	// The clock set back a year; 25 hours go by, past token_block (24 h).
	clk.Advance(-365*24*time.Hour + 25*time.Hour)
	b.set("tok", nil)
	if err := push1(); err != nil || len(b.Sent()) != 2 {
		t.Fatalf("a day past the block, with the clock set back a year: %v, %d sends; want it tried again", err, len(b.Sent()))
	}
	if _, err := store.GetBlockedToken(ctx, "fcm", "tok"); !errors.Is(err, registry.ErrNotFound) {
		t.Fatalf("a successful push left the block: %v", err)
	}
}
