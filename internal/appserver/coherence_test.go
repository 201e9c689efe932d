package appserver_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/push-appserver/push-appserver/internal/appserver"
	"github.com/push-appserver/push-appserver/internal/push"
	"github.com/push-appserver/push-appserver/internal/registry/postgres"
	"github.com/push-appserver/push-appserver/internal/testutil/logbuf"
	"github.com/push-appserver/push-appserver/internal/testutil/pgtest"
)

var pg = pgtest.New()

func TestMain(m *testing.M) { os.Exit(pg.Run(m)) }

// tap passes the store's change feed to the core and lets the test see it:
// every event goes to the channels, and onLost runs while the feed is down,
// before it reconnects.
type tap struct {
	*postgres.Store
	changed chan string
	live    chan bool
	onLost  func()
}

func (f *tap) Follow(ctx context.Context, changed func(string), live func(bool)) error {
	return f.Store.Follow(ctx, func(n string) {
		changed(n)
		f.changed <- n
	}, func(l bool) {
		live(l)
		if !l && f.onLost != nil && ctx.Err() == nil {
			f.onLost()
			f.onLost = nil
		}
		f.live <- l
	})
}

func (f *tap) waitLive(t *testing.T, want bool) {
	t.Helper()
	for {
		select {
		case l := <-f.live:
			if l == want {
				return
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("feed never live(%v)", want)
		}
	}
}

type instance struct {
	svc     *appserver.Service
	feed    *tap
	backend *scripted
	log     *logbuf.Buffer
}

func startInstance(t *testing.T, ctx context.Context, dsn string) *instance {
	t.Helper()
	store, err := postgres.Open(ctx, dsn, postgres.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	in := &instance{feed: &tap{Store: store, changed: make(chan string, 100), live: make(chan bool, 100)}, backend: &scripted{answers: map[string]error{}}, log: &logbuf.Buffer{}}
	in.svc, err = appserver.New(store, []appserver.App{{Name: "fcm", Priority: push.PriorityHigh, Backend: in.backend}},
		appserver.Options{Changes: in.feed, CacheTTL: time.Hour}, slog.New(slog.NewTextHandler(in.log, nil)))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { in.svc.Run(ctx); close(done) }()
	t.Cleanup(func() { <-done })
	in.feed.waitLive(t, true)
	return in
}

// pushToken pushes through in and returns the token the backend was given.
func (in *instance) pushToken(t *testing.T, node, secret string) string {
	t.Helper()
	before := len(in.backend.Sent())
	if err := in.svc.Push(context.Background(), appserver.PushRequest{Node: node, Secret: secret}); err != nil {
		t.Fatalf("push: %v", err)
	}
	sent := in.backend.Sent()
	if len(sent) != before+1 {
		t.Fatalf("%d pushes sent, want 1", len(sent)-before)
	}
	return sent[len(sent)-1].Token
}

// Two cores on one PostgreSQL, each caching registrations for an hour: what
// one changes, the other never serves from its cache, at once (the write
// returns after PostgreSQL delivered the change to the listeners), and
// after losing its feed it forgets everything.
func TestCacheCoherenceAcrossInstances(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	dsn := pg.DB(t)
	a, b := startInstance(t, ctx, dsn), startInstance(t, ctx, dsn)

	r, err := a.svc.Register(ctx, appserver.Caller{}, "fcm", "n1", "tok-1")
	if err != nil {
		t.Fatal(err)
	}
	if tok := b.pushToken(t, "n1", r.Secret); tok != "tok-1" {
		t.Fatalf("push via B used %q", tok)
	}
	a.pushToken(t, "n1", r.Secret) // now cached on both

	if _, err := b.svc.Unregister(ctx, appserver.Caller{}, "fcm", "n1"); err != nil {
		t.Fatal(err)
	}
	if err := a.svc.Push(ctx, appserver.PushRequest{Node: "n1", Secret: r.Secret}); !errors.Is(err, appserver.ErrNotFound) {
		t.Fatalf("push via A after unregister on B = %v, want ErrNotFound", err)
	}

	if r, err = a.svc.Register(ctx, appserver.Caller{}, "fcm", "n1", "tok-2"); err != nil {
		t.Fatal(err)
	}
	if tok := b.pushToken(t, "n1", r.Secret); tok != "tok-2" {
		t.Fatalf("push via B used %q", tok)
	}
	if _, err := a.svc.Register(ctx, appserver.Caller{Secret: r.Secret}, "fcm", "n1", "tok-3"); err != nil {
		t.Fatal(err)
	}
	if tok := b.pushToken(t, "n1", r.Secret); tok != "tok-3" {
		t.Fatalf("push via B after re-registration on A used %q, want the new token", tok)
	}

	// B loses its feed; while it is down A renews the token, unannounced
	// to B. When the feed is back, B must not serve its cached copy.
	// A's feed was cut too, and may not be back yet: its registration is
	// stored then, but answered ErrUnconfirmed until A hears its own
	// change again, so A tries until it is confirmed, as a client would.
	b.feed.onLost = func() {
		deadline := time.Now().Add(30 * time.Second)
		for {
			_, err := a.svc.Register(ctx, appserver.Caller{Secret: r.Secret}, "fcm", "n1", "tok-4")
			if err == nil {
				return
			}
			if !errors.Is(err, appserver.ErrUnconfirmed) || time.Now().After(deadline) {
				t.Error(err)
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	if n := pg.Terminate(t, dsn, "push-appserver-listen"); n != 2 {
		t.Fatalf("terminated %d listeners, want 2", n)
	}
	b.feed.waitLive(t, false)
	b.feed.waitLive(t, true)
	if tok := b.pushToken(t, "n1", r.Secret); tok != "tok-4" {
		t.Fatalf("push via B after its feed was lost used %q, want tok-4", tok)
	}
}

// The throttle is per instance, as the README says: a device gets at most
// one push per window from each instance sharing the registry.
func TestThrottlePerInstance(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	dsn := pg.DB(t)
	var in [2]*instance
	for i := range in {
		store, err := postgres.Open(ctx, dsn, postgres.Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { store.Close() })
		in[i] = &instance{backend: &scripted{answers: map[string]error{}}}
		in[i].svc, err = appserver.New(store, []appserver.App{{Name: "fcm", Priority: push.PriorityHigh, Backend: in[i].backend}},
			appserver.Options{RateLimit: time.Hour}, slog.New(slog.NewTextHandler(io.Discard, nil)))
		if err != nil {
			t.Fatal(err)
		}
	}
	r, err := in[0].svc.Register(ctx, appserver.Caller{}, "fcm", "n1", "tok")
	if err != nil {
		t.Fatal(err)
	}
	req := appserver.PushRequest{Node: "n1", Secret: r.Secret}
	if err := in[0].svc.Push(ctx, req); err != nil {
		t.Fatalf("first push via A = %v", err)
	}
	if err := in[1].svc.Push(ctx, req); err != nil {
		t.Fatalf("first push via B within A's window = %v: the README says the limit is per instance", err)
	}
	// Within one instance the window holds: the next push waits for it
	// (an hour), so it has not gone when its caller gives up.
	short, stop := context.WithTimeout(ctx, 200*time.Millisecond)
	defer stop()
	if err := in[1].svc.Push(short, req); !errors.Is(err, appserver.ErrThrottled) {
		t.Fatalf("second push via B = %v, want throttled", err)
	}
	if a, b := len(in[0].backend.Sent()), len(in[1].backend.Sent()); a != 1 || b != 1 {
		t.Fatalf("sent %d via A and %d via B, want one each", a, b)
	}
}

// While PostgreSQL is down, a push to a device read in the last ttl goes
// out to the registration as it was, its secret still checked; a push to
// one not read since, or with a wrong secret, fails as the database does, and nothing is served
// from the cache once the feed is back but the database is readable.
func TestPushesWhileDatabaseDown(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// Durable: Down is a crash, which loses what was not.
	in := startInstance(t, ctx, pgtest.DurableDSN(pg.DB(t)))
	r1, err := in.svc.Register(ctx, appserver.Caller{}, "fcm", "n1", "tok-1")
	if err != nil {
		t.Fatal(err)
	}
	r2, err := in.svc.Register(ctx, appserver.Caller{}, "fcm", "n2", "tok-2")
	if err != nil {
		t.Fatal(err)
	}
	// The feed announces this instance's own writes too, and drops them.
	for range 2 {
		<-in.feed.changed
	}
	in.pushToken(t, "n1", r1.Secret)
	// A tokenless push: its node is a device token, known to be no
	// registered node once pushed to.
	tokenless := func(token string) error {
		return in.svc.Push(ctx, appserver.PushRequest{Node: token, Tokenless: true, TokenApp: "fcm"})
	}
	if err := tokenless("device-token-1"); err != nil {
		t.Fatalf("tokenless push: %v", err)
	}

	pg.Down(t)
	in.feed.waitLive(t, false)
	if tok := in.pushToken(t, "n1", r1.Secret); tok != "tok-1" {
		t.Fatalf("push while the database is down used %q", tok)
	}
	if err := tokenless("device-token-1"); err != nil {
		t.Errorf("tokenless push to a token pushed to before, while the database is down: %v", err)
	}
	if err := tokenless("device-token-2"); !errors.Is(err, appserver.ErrPushFailed) {
		t.Errorf("tokenless push to a token not pushed to before, while the database is down = %v, want ErrPushFailed", err)
	}
	// Answered as a push to a node not cached is, so that the answers
	// tell no one which nodes are registered.
	if err := in.svc.Push(ctx, appserver.PushRequest{Node: "n1", Secret: "wrong"}); !errors.Is(err, appserver.ErrPushFailed) {
		t.Fatalf("push with a wrong secret while the database is down = %v, want ErrPushFailed", err)
	}
	if err := in.svc.Push(ctx, appserver.PushRequest{Node: "n2", Secret: r2.Secret}); !errors.Is(err, appserver.ErrPushFailed) {
		t.Fatalf("push to a device not cached while the database is down = %v, want ErrPushFailed", err)
	}
	// A push service's refusal: its outcome waits for the database. Its
	// reason holds what PostgreSQL refuses in text.
	in.backend.set("tok-1", errors.New("refused\x00 \xff"))
	refusedAt := time.Now()
	if err := in.svc.Push(ctx, appserver.PushRequest{Node: "n1", Secret: r1.Secret}); !errors.Is(err, appserver.ErrPushFailed) {
		t.Fatalf("push refused by its push service while the database is down = %v, want ErrPushFailed", err)
	}
	in.backend.set("tok-1", nil)
	if s := in.svc.CacheStats(); s.Stale != 3 {
		t.Errorf("stale lookups = %d, want 3 (two pushes, the tokenless one)", s.Stale)
	}
	// Pushes that go through while the registry is away say so once a
	// minute, not each: an outage of PostgreSQL made them hundreds of
	// the log's lines a minute.
	if n := strings.Count(in.log.String(), "pushing to the registration as cached"); n != 1 {
		t.Errorf("%d lines of pushes served as cached, want 1 a minute", n)
	}
	// The write-behind tries once a second; let it be refused.
	for deadline := time.Now().Add(5 * time.Second); in.svc.StatusStats().Pending == 0 || time.Since(refusedAt) < 1500*time.Millisecond; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the refused push's outcome not pending")
		}
	}
	pg.Up(t)
	in.feed.waitLive(t, true)
	// The outcome held through the outage is written once the database
	// is back.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		r, err := in.feed.Store.Get(ctx, "n1")
		if err == nil && r.LastPushError.After(refusedAt) {
			if want := "refused  \uFFFD"; r.LastErrorReason != want {
				t.Errorf("reason written %q, want %q", r.LastErrorReason, want)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the outcome of a push during the outage not written 10 s after the database is back: %+v, %v", r, err)
		}
	}
	// The row is visible once the store commits, a moment before the
	// write-behind counts the write done: wait for that, not a snapshot.
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		s := in.svc.StatusStats()
		if s.Dropped != 0 {
			t.Fatalf("write-behind after the outage: %+v, want nothing dropped", s)
		}
		if s.Pending == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("write-behind after the outage: %+v, want nothing pending or dropped", s)
		}
	}
	// The pushes kept during the outage (n2's, n1's refused one) go
	// out again on their own backoff: let them end first, so that none
	// is counted among the sends of the pushes below.
	waitStats(t, in.svc, func(s appserver.RedeliveryStats) bool { return s.Pending == 0 })
	in.pushToken(t, "n2", r2.Secret)
	before := in.svc.CacheStats().Stale
	in.pushToken(t, "n1", r1.Secret)
	if s := in.svc.CacheStats(); s.Stale != before {
		t.Errorf("a push served from what the cache held once the database was back")
	}
}

// TestThrottledPushUsesTokenOfItsSend: a push held by B's throttle for its
// window (the last of a burst) goes out after A changed the device's token
// and was answered. README: "right after the answer no instance pushes to
// a removed device or an old token".
func TestThrottledPushUsesTokenOfItsSend(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	dsn := pg.DB(t)
	a := startInstance(t, ctx, dsn)
	store, err := postgres.Open(ctx, dsn, postgres.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	b := &instance{feed: &tap{Store: store, changed: make(chan string, 100), live: make(chan bool, 100)}, backend: &scripted{answers: map[string]error{}}}
	b.svc, err = appserver.New(store, []appserver.App{{Name: "fcm", Priority: push.PriorityHigh, Backend: b.backend}},
		appserver.Options{Changes: b.feed, CacheTTL: time.Hour, RateLimit: 2 * time.Second}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { b.svc.Run(ctx); close(done) }()
	t.Cleanup(func() { <-done })
	b.feed.waitLive(t, true)

	r, err := a.svc.Register(ctx, appserver.Caller{}, "fcm", "n1", "tok-1")
	if err != nil {
		t.Fatal(err)
	}
	if tok := b.pushToken(t, "n1", r.Secret); tok != "tok-1" {
		t.Fatalf("first push via B used %q", tok)
	}
	second := make(chan error, 1)
	go func() { second <- b.svc.Push(ctx, appserver.PushRequest{Node: "n1", Secret: r.Secret}) }()
	time.Sleep(300 * time.Millisecond) // the second push waits for B's next window
	if _, err := a.svc.Register(ctx, appserver.Caller{Secret: r.Secret}, "fcm", "n1", "tok-2"); err != nil {
		t.Fatal(err)
	}
	answered := time.Now()
	if err := <-second; err != nil {
		t.Fatalf("second push: %v", err)
	}
	sent := b.backend.Sent()
	if last := sent[len(sent)-1]; last.Token != "tok-2" {
		t.Fatalf("B pushed to %q %v after A's change to tok-2 was answered", last.Token, time.Since(answered).Round(time.Millisecond))
	}
}

// TestUncachedInstanceHearsReleases: with the registration cache off
// (registration_cache = 0), an instance on PostgreSQL must still hear
// what the others announce through it: pushes held at a stop (taken "at
// once"), a component released (a Prosody standby connects "at once").
func TestUncachedInstanceHearsReleases(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	dsn := pg.DB(t)
	store, err := postgres.Open(ctx, dsn, postgres.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	svc, err := appserver.New(store, []appserver.App{{Name: "fcm", Priority: push.PriorityHigh, Backend: &scripted{answers: map[string]error{}}}},
		appserver.Options{Changes: store, CacheSize: -1, Redelivery: time.Minute}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	released := make(chan string, 1)
	store.OnComponentReleased(func(jid string) { released <- jid }) // as serve.go wires it
	done := make(chan struct{})
	go func() { svc.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	time.Sleep(time.Second)

	other, err := postgres.Open(ctx, dsn, postgres.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { other.Close() })
	if err := other.ReleaseComponent(ctx, "push.example.org"); err != nil {
		t.Fatal(err)
	}
	select {
	case <-released:
	case <-time.After(3 * time.Second):
		t.Fatal("the uncached instance never heard that another released the component")
	}
}

// slowTap is a change feed whose instance takes a while to drop what it
// cached (its ack follows then).
type slowTap struct {
	*postgres.Store
	delay time.Duration
}

func (f slowTap) Follow(ctx context.Context, changed func(string), live func(bool)) error {
	return f.Store.Follow(ctx, func(n string) { time.Sleep(f.delay); changed(n) }, live)
}

// TestUncachedWriterWaitsForOthers: a change made through an instance
// whose cache is off is answered only once the other listening instances
// dropped their copy, as through any other instance.
var cacheA = -1

func TestUncachedWriterWaitsForOthers(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	dsn := pg.DB(t)
	open := func() *postgres.Store {
		s, err := postgres.Open(ctx, dsn, postgres.Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	}
	run := func(svc *appserver.Service) {
		done := make(chan struct{})
		go func() { svc.Run(ctx); close(done) }()
		t.Cleanup(func() { cancel(); <-done })
	}
	sa := open()
	a, err := appserver.New(sa, []appserver.App{{Name: "fcm", Priority: push.PriorityHigh, Backend: &scripted{answers: map[string]error{}}}},
		appserver.Options{Changes: sa, CacheSize: cacheA}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	run(a)
	sb := open()
	bBackend := &scripted{answers: map[string]error{}}
	b, err := appserver.New(sb, []appserver.App{{Name: "fcm", Priority: push.PriorityHigh, Backend: bBackend}},
		appserver.Options{Changes: slowTap{sb, 300 * time.Millisecond}, CacheTTL: time.Hour}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	run(b)
	time.Sleep(time.Second) // both listening

	r, err := a.Register(ctx, appserver.Caller{}, "fcm", "n1", "tok-1")
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond)
	if err := b.Push(ctx, appserver.PushRequest{Node: "n1", Secret: r.Secret}); err != nil {
		t.Fatal(err) // cached on B now
	}
	if _, err := a.Register(ctx, appserver.Caller{Secret: r.Secret}, "fcm", "n1", "tok-2"); err != nil {
		t.Fatal(err)
	}
	if err := b.Push(ctx, appserver.PushRequest{Node: "n1", Secret: r.Secret}); err != nil {
		t.Fatal(err)
	}
	sent := bBackend.Sent()
	if tok := sent[len(sent)-1].Token; tok != "tok-2" {
		t.Fatalf("B pushed to %q right after A's change to tok-2 was answered", tok)
	}
}
