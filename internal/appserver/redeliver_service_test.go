package appserver_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/push-appserver/push-appserver/internal/appserver"
	"github.com/push-appserver/push-appserver/internal/push"
	"github.com/push-appserver/push-appserver/internal/registry"
	"github.com/push-appserver/push-appserver/internal/registry/memory"
)

// redeliveringService is newService with redelivery's waits in
// milliseconds and the service running.
func redeliveringService(t *testing.T, redelivery time.Duration) (*appserver.Service, registry.Store, *scripted) {
	t.Helper()
	store := memory.New()
	svc, b, _ := startRedelivering(t, store, redelivery)
	return svc, store, b
}

// startRedelivering starts a redelivering service over store; stop ends
// its Run, as a shutdown does.
func startRedelivering(t *testing.T, store registry.Store, redelivery time.Duration) (svc *appserver.Service, b *scripted, stop func()) {
	t.Helper()
	b = &scripted{answers: map[string]error{}}
	svc, err := appserver.New(store, testApps(b), appserver.Options{Redelivery: redelivery}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	if redelivery > 0 {
		svc.SetRedeliveryTiming(20*time.Millisecond, 5*time.Millisecond)
	}
	return svc, b, running(t, svc)
}

// running runs svc until the test ends; stop ends its Run sooner, as a
// shutdown does.
func running(t *testing.T, svc *appserver.Service) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { svc.Run(ctx); close(done) }()
	var once sync.Once
	stop = func() { once.Do(func() { cancel(); <-done; svc.Close() }) }
	t.Cleanup(stop)
	return stop
}

// sentTo counts the pushes the backend got for token.
func sentTo(b *scripted, token string) int {
	n := 0
	for _, s := range b.Sent() {
		if s.Token == token {
			n++
		}
	}
	return n
}

// waitStats waits until the service's redelivery stats satisfy ok.
func waitStats(t *testing.T, svc *appserver.Service, ok func(appserver.RedeliveryStats) bool) appserver.RedeliveryStats {
	t.Helper()
	var s appserver.RedeliveryStats
	eventually(t, func() bool { s = svc.RedeliveryStats(); return ok(s) }, func() string { return fmt.Sprintf("redelivery stats: %+v", s) })
	return s
}

// eventually waits up to 5 s for cond, and fails the test with what
// says when it does not come.
func eventually(t *testing.T, cond func() bool, what func() string) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal(what())
		}
	}
}

var outage = &push.TemporaryError{Reason: "503 ServiceUnavailable", Outage: true}

// TestRedelivery: a push the push service did not take is answered "try
// again later" and sent again once the service takes it: the user's XMPP
// server never tries again.
func TestRedelivery(t *testing.T) {
	ctx := context.Background()
	svc, store, b := redeliveringService(t, time.Minute)
	reg, _ := svc.Register(ctx, appserver.Caller{}, "fcm", "n1", "t1")
	b.set("t1", outage)
	if err := svc.Push(ctx, appserver.PushRequest{Node: "n1", Secret: reg.Secret}); !errors.Is(err, appserver.ErrPushFailed) {
		t.Fatalf("push during the outage: %v", err)
	}
	waitStats(t, svc, func(s appserver.RedeliveryStats) bool { return s.Kept == 1 && sentTo(b, "t1") >= 2 })
	b.set("t1", nil)
	s := waitStats(t, svc, func(s appserver.RedeliveryStats) bool { return s.Delivered == 1 })
	if s.Pending != 0 {
		t.Fatalf("%+v", s)
	}
	sent := sentTo(b, "t1")
	time.Sleep(100 * time.Millisecond)
	if sentTo(b, "t1") != sent {
		t.Fatal("sent again after it went through")
	}
	svc.Close()
	if r, _ := store.Get(ctx, "n1"); r.LastSuccessfulPush.IsZero() {
		t.Fatalf("the redelivered push's success was not recorded: %+v", r)
	}
}

// TestRedeliveryReadsTheRegistrationAgain: a device that registered a
// new token meanwhile gets the push at the new one, and one that
// unregistered gets nothing.
func TestRedeliveryReadsTheRegistrationAgain(t *testing.T) {
	ctx := context.Background()
	svc, _, b := redeliveringService(t, time.Minute)
	moved, _ := svc.Register(ctx, appserver.Caller{}, "fcm", "moved", "old-token")
	gone, _ := svc.Register(ctx, appserver.Caller{}, "fcm", "gone", "gone-token")
	b.set("old-token", outage)
	b.set("gone-token", outage)
	svc.Push(ctx, appserver.PushRequest{Node: "moved", Secret: moved.Secret})
	svc.Push(ctx, appserver.PushRequest{Node: "gone", Secret: gone.Secret})
	// The device itself, proving the node by its secret (a restore): the
	// secret stays, so its server's pushes, the held one too, are its.
	if _, err := svc.Register(ctx, appserver.Caller{Secret: moved.Secret}, "fcm", "moved", "new-token"); err != nil {
		t.Fatal(err)
	}
	if _, err := svc.Unregister(ctx, appserver.Caller{}, "fcm", "gone"); err != nil {
		t.Fatal(err)
	}
	s := waitStats(t, svc, func(s appserver.RedeliveryStats) bool { return s.Delivered == 1 && s.Gone == 1 })
	if s.Pending != 0 || sentTo(b, "new-token") != 1 || sentTo(b, "gone-token") != 1 {
		t.Fatalf("%+v; sent %+v", s, b.Sent())
	}
}

// TestRedeliveryEnds: a push that goes through ends the device's wait,
// a token that turns out dead ends it and its registration, and a
// device still failing when its time runs out is given up.
func TestRedeliveryEnds(t *testing.T) {
	ctx := context.Background()
	svc, store, b := redeliveringService(t, 300*time.Millisecond)
	woken, _ := svc.Register(ctx, appserver.Caller{}, "fcm", "woken", "woken-token")
	dead, _ := svc.Register(ctx, appserver.Caller{}, "fcm", "dead", "dead-token")
	down, _ := svc.Register(ctx, appserver.Caller{}, "fcm", "down", "down-token")
	for _, tok := range []string{"woken-token", "dead-token", "down-token"} {
		b.set(tok, outage)
	}
	svc.Push(ctx, appserver.PushRequest{Node: "woken", Secret: woken.Secret})
	svc.Push(ctx, appserver.PushRequest{Node: "dead", Secret: dead.Secret})
	svc.Push(ctx, appserver.PushRequest{Node: "down", Secret: down.Secret})

	b.set("woken-token", nil)
	if err := svc.Push(ctx, appserver.PushRequest{Node: "woken", Secret: woken.Secret}); err != nil {
		t.Fatal(err)
	}
	b.set("dead-token", &push.DeadTokenError{Since: time.Now().Add(time.Minute), Reason: "UNREGISTERED"})
	s := waitStats(t, svc, func(s appserver.RedeliveryStats) bool { return s.Pending == 0 })
	if s.Superseded != 1 || s.Gone != 1 || s.Expired != 1 || s.Delivered != 0 {
		t.Fatalf("%+v", s)
	}
	if _, err := store.Get(ctx, "dead"); !errors.Is(err, registry.ErrNotFound) {
		t.Fatalf("dead token's registration: %v", err)
	}
	if sentTo(b, "woken-token") != 2 || sentTo(b, "down-token") < 2 {
		t.Fatalf("sent: %+v", b.Sent())
	}
}

// TestRedeliveryOfTokenPushes: a tokenless push (the node is a device
// token) is kept by its app and token, and a VoIP push is not kept.
func TestRedeliveryOfTokenPushes(t *testing.T) {
	ctx := context.Background()
	svc, _, b := redeliveringService(t, time.Minute)
	b.set("ab12", outage)
	if err := svc.Push(ctx, appserver.PushRequest{Node: "ab12", Tokenless: true, TokenApp: "apns"}); !errors.Is(err, appserver.ErrPushFailed) {
		t.Fatalf("tokenless push: %v", err)
	}
	voip, _ := svc.Register(ctx, appserver.Caller{}, "voip", "call", "voip-token")
	b.set("voip-token", outage)
	svc.Push(ctx, appserver.PushRequest{Node: "call", Secret: voip.Secret})
	b.set("ab12", nil)
	s := waitStats(t, svc, func(s appserver.RedeliveryStats) bool { return s.Delivered == 1 })
	if s.Kept != 1 || sentTo(b, "voip-token") != 1 {
		t.Fatalf("%+v; sent %+v", s, b.Sent())
	}
}

// TestRedeliveryOff: with Redelivery negative nothing is kept.
func TestRedeliveryOff(t *testing.T) {
	ctx := context.Background()
	svc, _, b := redeliveringService(t, -1)
	reg, _ := svc.Register(ctx, appserver.Caller{}, "fcm", "n1", "t1")
	b.set("t1", outage)
	svc.Push(ctx, appserver.PushRequest{Node: "n1", Secret: reg.Secret})
	b.set("t1", nil)
	time.Sleep(100 * time.Millisecond)
	if s := svc.RedeliveryStats(); s != (appserver.RedeliveryStats{}) || sentTo(b, "t1") != 1 {
		t.Fatalf("%+v", s)
	}
}

// TestRedeliveryAcrossRestart: the pushes still waiting when a server
// stops are held in the registry, and the next server sends them; one
// whose device unregistered meanwhile is not sent.
func TestRedeliveryAcrossRestart(t *testing.T) {
	ctx := context.Background()
	store := memory.New()
	first, b1, stop := startRedelivering(t, store, time.Minute)
	a, _ := first.Register(ctx, appserver.Caller{}, "fcm", "a", "token-a")
	gone, _ := first.Register(ctx, appserver.Caller{}, "fcm", "gone", "token-gone")
	for _, tok := range []string{"token-a", "token-gone", "ab12"} {
		b1.set(tok, outage)
	}
	first.Push(ctx, appserver.PushRequest{Node: "a", Secret: a.Secret, MarkedHigh: true, Summary: &push.Summary{LastMessageSender: "bob@example.org", MessageCount: 2}})
	first.Push(ctx, appserver.PushRequest{Node: "gone", Secret: gone.Secret})
	first.Push(ctx, appserver.PushRequest{Node: "ab12", Tokenless: true, TokenApp: "apns"})
	if s := first.RedeliveryStats(); s.Kept != 3 {
		t.Fatalf("%+v", s)
	}
	stop()
	if s := first.RedeliveryStats(); s.Pending != 0 || s.Dropped != 0 {
		t.Fatalf("after the stop: %+v", s)
	}
	if _, err := first.Unregister(ctx, appserver.Caller{}, "fcm", "gone"); err != nil {
		t.Fatal(err)
	}

	second, b2, _ := startRedelivering(t, store, time.Minute)
	s := waitStats(t, second, func(s appserver.RedeliveryStats) bool { return s.Delivered == 2 && s.Gone == 1 })
	if s.Pending != 0 {
		t.Fatalf("%+v", s)
	}
	var toA push.Notification
	for _, n := range b2.Sent() {
		if n.Token == "token-a" {
			toA = n
		}
	}
	if toA.Node != "a" || toA.App != "fcm" || toA.Priority != push.PriorityHigh || toA.Summary == nil || toA.Summary.LastMessageSender != "bob@example.org" || toA.Summary.MessageCount != 2 {
		t.Fatalf("the held push as sent: %+v", toA)
	}
	if sentTo(b2, "ab12") != 1 || sentTo(b2, "token-gone") != 0 {
		t.Fatalf("sent: %+v", b2.Sent())
	}
}

// TestRedeliveryHandedToRunningInstance: an instance that stops hands
// its waiting pushes to one that keeps running on the same registry.
func TestRedeliveryHandedToRunningInstance(t *testing.T) {
	ctx := context.Background()
	store := memory.New()
	running, b, _ := startRedelivering(t, store, time.Minute)
	stopping, b1, stop := startRedelivering(t, store, time.Minute)
	reg, _ := stopping.Register(ctx, appserver.Caller{}, "fcm", "n1", "t1")
	b1.set("t1", outage)
	stopping.Push(ctx, appserver.PushRequest{Node: "n1", Secret: reg.Secret})
	// Once it has tried again, the running one has long made the take
	// of its start: what it gets now comes from polling.
	eventually(t, func() bool { return sentTo(b1, "t1") >= 2 }, func() string { return "the stopping instance never tried again" })
	stop()
	waitStats(t, running, func(s appserver.RedeliveryStats) bool { return s.Delivered == 1 })
	if sentTo(b, "t1") != 1 {
		t.Fatalf("sent: %+v", b.Sent())
	}
}

// TestTakeHeldSoon: told that another process has just held pushes, a
// running instance takes them at once rather than at its next look.
func TestTakeHeldSoon(t *testing.T) {
	ctx := context.Background()
	store := memory.New()
	b := &scripted{answers: map[string]error{}}
	taker, err := appserver.New(store, testApps(b), appserver.Options{Redelivery: time.Minute}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	taker.SetRedeliveryTiming(20*time.Millisecond, 5*time.Millisecond)
	taker.SetHeldPoll(time.Hour) // its start's take is made and done
	running(t, taker)
	stopping, b1, stop := startRedelivering(t, store, time.Minute)
	reg, _ := stopping.Register(ctx, appserver.Caller{}, "fcm", "n1", "t1")
	b1.set("t1", outage)
	stopping.Push(ctx, appserver.PushRequest{Node: "n1", Secret: reg.Secret})
	time.Sleep(50 * time.Millisecond)
	stop()
	time.Sleep(200 * time.Millisecond)
	if sentTo(b, "t1") != 0 {
		t.Fatal("taken before the next look without being told")
	}
	taker.TakeHeldSoon()
	waitStats(t, taker, func(s appserver.RedeliveryStats) bool { return s.Delivered == 1 })
}

// TestHandedOverPushSentAtOnce: README says pushes an instance held at
// its stop are taken "at once" by one still running: sent then, their
// wait spent at the server that held them, not after a fresh backoff's
// first wait (2.5–5 s in production; 0.5–1 s here).
func TestHandedOverPushSentAtOnce(t *testing.T) {
	ctx := context.Background()
	store := memory.New()
	b := &scripted{answers: map[string]error{}}
	taker, err := appserver.New(store, testApps(b), appserver.Options{Redelivery: time.Minute}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	taker.SetRedeliveryTiming(time.Second, 5*time.Millisecond)
	taker.SetHeldPoll(time.Hour) // its start's take is made and done
	running(t, taker)
	stopping, b1, stop := startRedelivering(t, store, time.Minute)
	reg, _ := stopping.Register(ctx, appserver.Caller{}, "fcm", "n1", "t1")
	b1.set("t1", outage)
	stopping.Push(ctx, appserver.PushRequest{Node: "n1", Secret: reg.Secret})
	eventually(t, func() bool { return sentTo(b1, "t1") >= 3 }, func() string { return "no attempts" })
	stop()
	told := time.Now()
	taker.TakeHeldSoon()
	waitStats(t, taker, func(s appserver.RedeliveryStats) bool { return s.Delivered == 1 })
	took := time.Since(told)
	t.Logf("handed-over push sent %s after the taker was told", took)
	if limit := 200 * time.Millisecond; took > limit {
		t.Fatalf("handed-over push sent %s after TakeHeldSoon, want within %s", took, limit)
	}
}

// TestHandedOverPushHonoursRetryAfter: a push whose service asked for
// time (Retry-After), at its first attempt or at a redelivery attempt, is
// handed over with it, and the instance that takes it sends it no sooner,
// though it sends other handed-over pushes at once.
func TestHandedOverPushHonoursRetryAfter(t *testing.T) {
	const after = time.Second
	asked := &push.TemporaryError{Reason: "FCM 503 UNAVAILABLE", RetryAfter: after, Outage: true}
	for _, tt := range []struct {
		name       string
		redelivery bool
	}{{"first attempt", false}, {"redelivery attempt", true}} {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			store := memory.New()
			var mu sync.Mutex
			var sentAt time.Time
			first := backendFunc(func(context.Context, push.Notification) error {
				mu.Lock()
				defer mu.Unlock()
				if sentAt.IsZero() {
					sentAt = time.Now()
				}
				return nil
			})
			taker, err := appserver.New(store, []appserver.App{{Name: "fcm", Priority: push.PriorityHigh, Backend: first}},
				appserver.Options{Redelivery: time.Minute}, slog.New(slog.DiscardHandler))
			if err != nil {
				t.Fatal(err)
			}
			taker.SetRedeliveryTiming(20*time.Millisecond, 5*time.Millisecond)
			taker.SetHeldPoll(time.Hour)
			running(t, taker)
			stopping, b1, stop := startRedelivering(t, store, time.Minute)
			reg, _ := stopping.Register(ctx, appserver.Caller{}, "fcm", "n1", "t1")
			failed := time.Now()
			if tt.redelivery {
				b1.set("t1", outage)
				stopping.Push(ctx, appserver.PushRequest{Node: "n1", Secret: reg.Secret})
				eventually(t, func() bool { return sentTo(b1, "t1") >= 2 }, func() string { return "no redelivery attempt" })
				failed = time.Now()
				b1.set("t1", asked)
				n := sentTo(b1, "t1")
				eventually(t, func() bool { return sentTo(b1, "t1") > n }, func() string { return "no attempt answered with Retry-After" })
			} else {
				b1.set("t1", asked)
				stopping.Push(ctx, appserver.PushRequest{Node: "n1", Secret: reg.Secret})
			}
			stop()
			taker.TakeHeldSoon()
			waitStats(t, taker, func(s appserver.RedeliveryStats) bool { return s.Delivered == 1 })
			mu.Lock()
			defer mu.Unlock()
			if took := sentAt.Sub(failed); took < after {
				t.Fatalf("handed-over push sent %s after its service asked for %s", took, after)
			}
		})
	}
}

// dyingStore is a registry that a server stops reaching when dead is
// set, as one whose process was killed: nothing it keeps is written any
// more, nor released.
type dyingStore struct {
	registry.Store
	dead    atomic.Bool
	written atomic.Int64 // pushes written
}

var errDead = errors.New("the process is dead")

func (d *dyingStore) KeepPushes(ctx context.Context, owner string, lease time.Duration, renew bool, put []registry.HeldPush, del []string) error {
	if d.dead.Load() {
		return errDead
	}
	err := d.Store.KeepPushes(ctx, owner, lease, renew, put, del)
	if err == nil {
		d.written.Add(int64(len(put)))
	}
	return err
}

func (d *dyingStore) ReleasePushes(ctx context.Context, owner string) error {
	if d.dead.Load() {
		return errDead
	}
	return d.Store.ReleasePushes(ctx, owner)
}

func (d *dyingStore) TakeHeldPushes(ctx context.Context, limit int) ([]registry.HeldPush, error) {
	if d.dead.Load() {
		return nil, errDead
	}
	return d.Store.TakeHeldPushes(ctx, limit)
}

// TestRedeliveryOutlivesItsServer: a waiting push is written to the
// registry as it is kept. Another instance leaves it alone while its
// server renews its lease; once that server stops reaching the registry
// (it died, or is cut off), the other takes and sends it when the lease
// has run out. The server cut off, back, finds its lease lost and lets
// the push go rather than send it again.
func TestRedeliveryOutlivesItsServer(t *testing.T) {
	ctx := context.Background()
	// Long beside the ticks (5 ms): a loaded machine must not let the
	// live server's lease run out.
	const lease = time.Second
	store := memory.New()
	dying := &dyingStore{Store: store}
	b1 := &scripted{answers: map[string]error{}}
	first, err := appserver.New(dying, testApps(b1), appserver.Options{Redelivery: time.Minute}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	first.SetRedeliveryTiming(20*time.Millisecond, 5*time.Millisecond)
	first.SetRedeliveryLease(lease)
	running(t, first)
	other, b, _ := startRedelivering(t, store, time.Minute)

	reg, _ := first.Register(ctx, appserver.Caller{}, "fcm", "n1", "t1")
	b1.set("t1", outage)
	first.Push(ctx, appserver.PushRequest{Node: "n1", Secret: reg.Secret})
	eventually(t, func() bool { return dying.written.Load() == 1 }, func() string { return "the waiting push was not written to the registry" })
	time.Sleep(2 * lease)
	if s := other.RedeliveryStats(); s.Pending != 0 || sentTo(b, "t1") != 0 {
		t.Fatalf("another instance took the push while its server renewed the lease: %+v", s)
	}

	dying.dead.Store(true)
	waitStats(t, other, func(s appserver.RedeliveryStats) bool { return s.Delivered == 1 })

	dying.dead.Store(false)
	waitStats(t, first, func(s appserver.RedeliveryStats) bool { return s.Pending == 0 })
	b1.set("t1", nil)
	time.Sleep(lease)
	if s := first.RedeliveryStats(); s.Pending != 0 || s.Delivered != 0 {
		t.Fatalf("the server back sent the push again: %+v", s)
	}
	if n := sentTo(b, "t1"); n != 1 {
		t.Fatalf("the other instance sent %d pushes", n)
	}
}

// TestLeaseRenewedWhileAttemptsRun: a server sending many waiting pushes
// to a push service that answers slowly still writes and renews its lease
// each tick, so no other instance takes the pushes it is sending.
func TestLeaseRenewedWhileAttemptsRun(t *testing.T) {
	store := memory.New()
	b := &scripted{answers: map[string]error{}}
	var slowly atomic.Bool
	first, err := appserver.New(store, []appserver.App{{Name: "fcm", Priority: push.PriorityHigh, Backend: backendFunc(func(ctx context.Context, n push.Notification) error {
		if slowly.Load() {
			time.Sleep(100 * time.Millisecond)
		}
		return b.Send(ctx, n)
	})}}, appserver.Options{Redelivery: time.Minute}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	first.SetRedeliveryTiming(20*time.Millisecond, 5*time.Millisecond)
	const lease = time.Second
	first.SetRedeliveryLease(lease)
	// 64 attempts at a time, 100 ms each: a round of them all takes
	// longer than the lease.
	const devices = 1000
	pushDuringOutage(t, first, b, devices)
	slowly.Store(true)
	running(t, first)
	other, b2, _ := startRedelivering(t, store, time.Minute)
	time.Sleep(4 * lease)
	if s := other.RedeliveryStats(); s.Pending != 0 || len(b2.Sent()) != 0 {
		t.Fatalf("another instance took pushes of a server busy sending them: %+v, %d sent", s, len(b2.Sent()))
	}
}

// TestSentAsStopBegins: a push that goes through just as the server
// stops is done, not handed to the next server to send again.
func TestSentAsStopBegins(t *testing.T) {
	ctx := context.Background()
	store := memory.New()
	var calls atomic.Int64
	svc, err := appserver.New(store, []appserver.App{{Name: "fcm", Priority: push.PriorityAuto, Backend: backendFunc(func(ctx context.Context, n push.Notification) error {
		if calls.Add(1) == 1 {
			return outage
		}
		// The attempt goes through as the stop begins.
		time.Sleep(100 * time.Millisecond)
		return nil
	})}}, appserver.Options{Redelivery: time.Minute}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	svc.SetRedeliveryTiming(20*time.Millisecond, 5*time.Millisecond)
	stop := running(t, svc)
	reg, _ := svc.Register(ctx, appserver.Caller{}, "fcm", "n1", "t1")
	svc.Push(ctx, appserver.PushRequest{Node: "n1", Secret: reg.Secret})
	eventually(t, func() bool { return calls.Load() == 2 }, func() string { return "never tried again" })
	stop()
	if s := svc.RedeliveryStats(); s.Delivered != 1 {
		t.Fatalf("%+v", s)
	}
	if held, err := store.TakeHeldPushes(ctx, 10); err != nil || len(held) != 0 {
		t.Fatalf("handed over after it went through: %d, %v", len(held), err)
	}
}

// TestHeldPushExpires: a push held longer than redelivery allows is not
// sent by the next server.
func TestHeldPushExpires(t *testing.T) {
	ctx := context.Background()
	store := memory.New()
	first, b1, stop := startRedelivering(t, store, 200*time.Millisecond)
	reg, _ := first.Register(ctx, appserver.Caller{}, "fcm", "n1", "t1")
	b1.set("t1", outage)
	first.Push(ctx, appserver.PushRequest{Node: "n1", Secret: reg.Secret})
	stop()
	time.Sleep(300 * time.Millisecond)
	second, b2, _ := startRedelivering(t, store, 200*time.Millisecond)
	waitStats(t, second, func(s appserver.RedeliveryStats) bool { return s.Expired == 1 })
	if sentTo(b2, "t1") != 0 {
		t.Fatalf("sent: %+v", b2.Sent())
	}
}

// slow is a backend that takes a millisecond to answer.
type slow struct{ sent atomic.Int64 }

func (b *slow) Send(ctx context.Context, n push.Notification) error {
	time.Sleep(time.Millisecond)
	b.sent.Add(1)
	return nil
}

// TestRedeliveryKeepsUpAfterAnOutage: once the push service is back,
// every device waiting is sent to within the next look for due pushes,
// not as many a look as may be under way at once.
func TestRedeliveryKeepsUpAfterAnOutage(t *testing.T) {
	store := memory.New()
	b := &scripted{answers: map[string]error{}}
	back := &slow{}
	var down atomic.Bool
	down.Store(true)
	svc, err := appserver.New(store, []appserver.App{{Name: "fcm", Priority: push.PriorityHigh, Backend: backendFunc(func(ctx context.Context, n push.Notification) error {
		if down.Load() {
			return b.Send(ctx, n)
		}
		return back.Send(ctx, n)
	})}}, appserver.Options{Redelivery: time.Minute}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	// Every device falls due within 20 ms; the service looks once a
	// second, as it does outside tests.
	svc.SetRedeliveryTiming(20*time.Millisecond, time.Second)
	const devices = 1000
	pushDuringOutage(t, svc, b, devices)
	down.Store(false)
	running(t, svc)
	// Taking as many a look as may run at once (64) would need 16 s.
	waitStats(t, svc, func(s appserver.RedeliveryStats) bool { return s.Delivered == devices })
}

// pushDuringOutage registers devices devices of app fcm on svc (nodes n0,
// n1, ..., tokens t0, t1, ...), has b fail each token's pushes as in an
// outage, and pushes to each once: each push is kept for redelivery.
func pushDuringOutage(t *testing.T, svc *appserver.Service, b *scripted, devices int) {
	t.Helper()
	ctx := context.Background()
	for i := range devices {
		tok := fmt.Sprintf("t%d", i)
		b.set(tok, outage)
		reg, err := svc.Register(ctx, appserver.Caller{}, "fcm", fmt.Sprintf("n%d", i), tok)
		if err != nil {
			t.Fatal(err)
		}
		svc.Push(ctx, appserver.PushRequest{Node: reg.Node, Secret: reg.Secret})
	}
}

type backendFunc func(ctx context.Context, n push.Notification) error

func (f backendFunc) Send(ctx context.Context, n push.Notification) error { return f(ctx, n) }

// TestRedeliveryAttemptKeepsItsPush: a push that fails while an attempt
// for the same device is under way does not change what that attempt
// sends.
func TestRedeliveryAttemptKeepsItsPush(t *testing.T) {
	ctx := context.Background()
	inFlight, release := make(chan struct{}), make(chan struct{})
	var calls atomic.Int64
	var seen atomic.Value
	backend := backendFunc(func(ctx context.Context, n push.Notification) error {
		if calls.Add(1) == 2 { // the first redelivery attempt
			close(inFlight)
			<-release
			seen.Store(n.Summary.LastMessageBody)
		}
		return outage
	})
	svc, err := appserver.New(memory.New(), []appserver.App{{Name: "fcm", Priority: push.PriorityAuto, Backend: backend}},
		appserver.Options{Redelivery: time.Minute}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	svc.SetRedeliveryTiming(20*time.Millisecond, 5*time.Millisecond)
	running(t, svc)

	reg, _ := svc.Register(ctx, appserver.Caller{}, "fcm", "n1", "t1")
	body := func(b string) *push.Summary { return &push.Summary{LastMessageBody: b, HasLastMessageBody: true} }
	svc.Push(ctx, appserver.PushRequest{Node: "n1", Secret: reg.Secret, Summary: body("first")})
	<-inFlight
	svc.Push(ctx, appserver.PushRequest{Node: "n1", Secret: reg.Secret, Summary: body("second")})
	close(release)
	eventually(t, func() bool { return seen.Load() != nil }, func() string { return "the attempt under way never ended" })
	if got := seen.Load(); got != "first" {
		t.Fatalf("the attempt under way sent %q", got)
	}
}

// refusingHold is a registry that cannot keep pushes, as a database that
// went away.
type refusingHold struct{ registry.Store }

func (refusingHold) KeepPushes(context.Context, string, time.Duration, bool, []registry.HeldPush, []string) error {
	return errors.New("connection refused")
}

// TestRedeliveryHoldRefused: pushes the registry cannot hold at a stop
// are counted as dropped and logged, not lost without a word.
func TestRedeliveryHoldRefused(t *testing.T) {
	ctx := context.Background()
	svc, b, stop := startRedelivering(t, refusingHold{memory.New()}, time.Minute)
	reg, _ := svc.Register(ctx, appserver.Caller{}, "fcm", "n1", "t1")
	b.set("t1", outage)
	svc.Push(ctx, appserver.PushRequest{Node: "n1", Secret: reg.Secret})
	stop()
	if s := svc.RedeliveryStats(); s.Dropped != 1 || s.Pending != 0 {
		t.Fatalf("%+v", s)
	}
	if d := svc.RedeliveryDrops(); d[appserver.RedeliveryDrop{App: "fcm", Reason: appserver.DropShutdown}] != 1 {
		t.Fatalf("drops by app: %v", d)
	}
}

// A tokenless push kept for redelivery is not sent once its token is on
// the block list (declared dead by a later push meanwhile).
func TestRedeliveryHonoursTokenBlock(t *testing.T) {
	ctx := context.Background()
	svc, _, b := redeliveringService(t, time.Minute)
	tp := appserver.TokenPush{App: "fcm", Token: "tk"}
	b.set("tk", outage)
	if err := svc.PushToken(ctx, tp); !errors.Is(err, appserver.ErrPushFailed) {
		t.Fatalf("push during the outage: %v", err)
	}
	b.set("tk", &push.DeadTokenError{Since: time.Now(), Reason: "Unregistered"})
	if err := svc.PushToken(ctx, tp); !errors.Is(err, appserver.ErrNotFound) {
		t.Fatalf("push to the dead token: %v", err)
	}
	sent := sentTo(b, "tk")
	b.set("tk", nil)
	s := waitStats(t, svc, func(s appserver.RedeliveryStats) bool { return s.Pending == 0 })
	if s.Delivered != 0 || sentTo(b, "tk") != sent {
		t.Fatalf("a blocked token was pushed to again: %+v, %d pushes after the block", s, sentTo(b, "tk")-sent)
	}
}

// README: "An FCM 429 without Retry-After waits a minute, as Google asks:
// the push is answered wait at once and sent again by redelivery." The
// service's wait (here 500 ms, redelivery's base 20 ms) must hold for the
// first redelivery too, not only from the second on.
func TestRedeliveryHonoursFirstRetryAfter(t *testing.T) {
	ctx := context.Background()
	svc, _, b := redeliveringService(t, time.Minute)
	reg, _ := svc.Register(ctx, appserver.Caller{}, "fcm", "n1", "t1")
	b.set("t1", &push.TemporaryError{Reason: "FCM 429 QUOTA_EXCEEDED", RetryAfter: 500 * time.Millisecond})
	start := time.Now()
	if err := svc.Push(ctx, appserver.PushRequest{Node: "n1", Secret: reg.Secret}); !errors.Is(err, appserver.ErrPushFailed) {
		t.Fatalf("push: %v", err)
	}
	time.Sleep(300 * time.Millisecond)
	if n := sentTo(b, "t1"); n > 1 {
		t.Fatalf("the service asked for 500 ms and got %d requests within %v", n, time.Since(start).Round(time.Millisecond))
	}
}

// An operator restarts with an app renamed by mistake ([apps.fcm] became
// [apps.android]) while a push of it waits for redelivery. The user's
// server was answered wait (an app left out is a mistake of ours that
// passes), and the operator puts the name back and restarts within the
// redelivery window: the push must still go out.
func TestHeldPushSurvivesAppLeftOutAtRestart(t *testing.T) {
	ctx := context.Background()
	store := memory.New()
	first, b1, stop := startRedelivering(t, store, time.Minute)
	reg, _ := first.Register(ctx, appserver.Caller{}, "fcm", "n1", "token-1")
	b1.set("token-1", outage)
	first.Push(ctx, appserver.PushRequest{Node: "n1", Secret: reg.Secret, MarkedHigh: true})
	if s := first.RedeliveryStats(); s.Kept != 1 {
		t.Fatalf("%+v", s)
	}
	stop()

	// Restarted with the app renamed.
	b2 := &scripted{answers: map[string]error{}}
	var logs bytes.Buffer
	renamed := []appserver.App{{Name: "android", Priority: push.PriorityHigh, Backend: b2}}
	second, err := appserver.New(store, renamed, appserver.Options{Redelivery: time.Minute}, slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	second.SetRedeliveryTiming(20*time.Millisecond, 5*time.Millisecond)
	stop2 := running(t, second)
	if err := second.Push(ctx, appserver.PushRequest{Node: "n1", Secret: reg.Secret}); !errors.Is(err, appserver.ErrPushFailed) {
		t.Fatalf("push to a registration of an app left out: %v", err)
	}
	time.Sleep(300 * time.Millisecond)
	s2 := second.RedeliveryStats()
	stop2()
	t.Logf("renamed-app server: redelivery %+v; log:\n%s", s2, logs.String())
	if !strings.Contains(logs.String(), "fcm") {
		t.Errorf("nothing logged about pushes to app %q, which is not configured", "fcm")
	}

	// Name put back, restarted again within the redelivery window.
	third, b3, _ := startRedelivering(t, store, time.Minute)
	eventually(t, func() bool { return sentTo(b3, "token-1") > 0 }, func() string {
		return fmt.Sprintf("the push held for app fcm was lost while the app was left out of the configuration: %+v", third.RedeliveryStats())
	})
}

// TestAttemptUnderWayAtStopNotSentAgain: a redelivery attempt whose
// request is already with the push service when the server stops is let
// finish, as the pushes of the component and the HTTP API are, rather
// than cut off and handed to the other server on the registry, which
// would wake the device a second time; and the lease on the pushes the
// stopping server holds is renewed while it waits, so that an attempt
// longer than what is left of the lease (an app's push_deadline of 10 s,
// as README's WebPush example sets, against the 10 s lease renewed every
// 3.3 s) does not let the other server take the push and send it too.
func TestAttemptUnderWayAtStopNotSentAgain(t *testing.T) {
	for _, tc := range []struct {
		name    string
		attempt time.Duration // how long the push service takes to answer
		lease   time.Duration // 0: the default
	}{
		{"within the lease", 300 * time.Millisecond, 0},
		// Renewed every third of it: a renewal a loaded machine makes
		// 200 ms late must not lose it, one never made must.
		{"outlasting the lease", 3 * time.Second, time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			store := memory.New()
			var reached atomic.Int64 // requests the push service got after the first, failed, push
			inFlight := make(chan struct{}, 4)
			var calls atomic.Int64
			slowOK := backendFunc(func(ctx context.Context, n push.Notification) error {
				if calls.Add(1) == 1 {
					return outage
				}
				reached.Add(1) // the request is with the push service
				inFlight <- struct{}{}
				select {
				case <-time.After(tc.attempt): // within the app's deadline
					return nil
				case <-ctx.Done():
					return ctx.Err() // we stopped reading its answer
				}
			})
			newSvc := func(b push.Backend) (*appserver.Service, func()) {
				svc, err := appserver.New(store, []appserver.App{{Name: "fcm", Priority: push.PriorityAuto, Backend: b, Deadline: 10 * time.Second}},
					appserver.Options{Redelivery: time.Minute, PushTimeout: 10 * time.Second}, slog.New(slog.NewTextHandler(io.Discard, nil)))
				if err != nil {
					t.Fatal(err)
				}
				svc.SetRedeliveryTiming(20*time.Millisecond, 5*time.Millisecond)
				svc.SetHeldPoll(50 * time.Millisecond)
				if tc.lease > 0 {
					svc.SetRedeliveryLease(tc.lease)
				}
				return svc, running(t, svc)
			}
			// The other server, running all along.
			other, _ := newSvc(backendFunc(func(ctx context.Context, n push.Notification) error {
				reached.Add(1)
				return nil
			}))
			first, stop := newSvc(slowOK)
			reg, _ := first.Register(ctx, appserver.Caller{}, "fcm", "n1", "t1")
			first.Push(ctx, appserver.PushRequest{Node: "n1", Secret: reg.Secret})
			<-inFlight
			stop()                             // SIGTERM while the attempt's request is with the push service
			time.Sleep(500 * time.Millisecond) // the other server's polls: 10
			if n := reached.Load(); n != 1 {
				t.Fatalf("the push service got the redelivered push %d times (first server %+v, other server %+v), want once", n, first.RedeliveryStats(), other.RedeliveryStats())
			}
		})
	}
}

// slowHold is a registry whose writes of waiting pushes take 4 s, as
// PostgreSQL under load does within its statement_timeout (5 s).
type slowHold struct{ registry.Store }

func (s slowHold) KeepPushes(ctx context.Context, owner string, lease time.Duration, renew bool, put []registry.HeldPush, del []string) error {
	select {
	case <-time.After(4 * time.Second):
	case <-ctx.Done():
		return ctx.Err()
	}
	return s.Store.KeepPushes(ctx, owner, lease, renew, put, del)
}

// TestHoldAtStopWithSlowRegistry: at a stop, the pushes waiting for
// redelivery are written within holdTimeout (10 s); a registry that
// takes 4 s to write them, well within that and within its own
// statement_timeout, keeps them for the next server.
func TestHoldAtStopWithSlowRegistry(t *testing.T) {
	ctx := context.Background()
	store := memory.New()
	svc, b, stop := startRedelivering(t, slowHold{store}, time.Minute)
	reg, _ := svc.Register(ctx, appserver.Caller{}, "fcm", "n1", "t1")
	b.set("t1", outage)
	svc.Push(ctx, appserver.PushRequest{Node: "n1", Secret: reg.Secret})
	start := time.Now()
	stop()
	held, err := store.TakeHeldPushes(ctx, 10)
	if s := svc.RedeliveryStats(); err != nil || len(held) != 1 || s.Dropped != 0 {
		t.Fatalf("after a stop of %v: %d held (%v), %+v; want the push held for the next server", time.Since(start).Round(time.Millisecond), len(held), err, s)
	}
}

// TestRedeliverySoonAfterServiceIsBack: a push kept through an outage of
// its app's push service goes out soon after the service takes pushes
// again (another device's push to the same app went through), not at the
// end of a backoff grown through the outage (up to redeliveryMaxWait,
// 60 s in production; 4 × base here).
func TestRedeliverySoonAfterServiceIsBack(t *testing.T) {
	ctx := context.Background()
	const base = 250 * time.Millisecond // maxWait 1 s
	b := &scripted{answers: map[string]error{}}
	svc, err := appserver.New(memory.New(), testApps(b), appserver.Options{Redelivery: time.Minute}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	svc.SetRedeliveryTiming(base, 5*time.Millisecond)
	running(t, svc)
	r1, _ := svc.Register(ctx, appserver.Caller{}, "fcm", "n1", "t1")
	r2, _ := svc.Register(ctx, appserver.Caller{}, "fcm", "n2", "t2")
	b.set("t1", outage)
	b.set("t2", outage)
	svc.Push(ctx, appserver.PushRequest{Node: "n1", Secret: r1.Secret})
	// The outage lasts until the backoff is at its cap.
	eventually(t, func() bool { return sentTo(b, "t1") >= 5 }, func() string { return "no attempts" })
	n := sentTo(b, "t1")
	eventually(t, func() bool { return sentTo(b, "t1") > n }, func() string { return "no further attempt" })
	// The service is back, just after an attempt at n1 failed.
	b.set("t1", nil)
	b.set("t2", nil)
	back := time.Now()
	// Pushed again until it is sent: a success while the attempt at n1
	// is still under way says nothing of its outcome, which is newer.
	waitStats(t, svc, func(s appserver.RedeliveryStats) bool {
		if err := svc.Push(ctx, appserver.PushRequest{Node: "n2", Secret: r2.Secret}); err != nil {
			t.Fatal(err)
		}
		return s.Delivered == 1
	})
	took := time.Since(back)
	t.Logf("kept push sent %s after the service took another push of its app", took)
	if took > base {
		t.Fatalf("kept push sent %s after the service was back, want within %s (the first retry's wait)", took, base)
	}
}

// stalled is a push service that takes every request and answers none:
// each push ends at its deadline.
type stalled struct{}

func (stalled) Send(ctx context.Context, _ push.Notification) error {
	<-ctx.Done()
	return ctx.Err()
}

// TestRedeliveryOfAppBackNotHeldByStalledApp: the APNS app's service
// stalls (each push ends at its push_deadline and is kept for
// redelivery) while the FCM app's had a short outage and is back. The
// FCM pushes kept during that outage go out soon after it is back, not
// behind the APNS pushes' attempts, each of which takes a whole deadline.
func TestRedeliveryOfAppBackNotHeldByStalledApp(t *testing.T) {
	const iosDevices, fcmDevices = 1000, 20
	const deadline = 300 * time.Millisecond
	ctx := context.Background()
	b := &scripted{answers: map[string]error{}}
	svc, err := appserver.New(memory.New(), []appserver.App{
		{Name: "ios", Priority: push.PriorityHigh, Backend: stalled{}, Deadline: deadline},
		{Name: "fcm", Priority: push.PriorityHigh, Backend: b},
	}, appserver.Options{Redelivery: time.Minute}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	svc.SetRedeliveryTiming(20*time.Millisecond, 5*time.Millisecond)
	running(t, svc)

	var wg sync.WaitGroup
	for i := range iosDevices {
		node := fmt.Sprint("ios-", i)
		reg, err := svc.Register(ctx, appserver.Caller{}, "ios", node, "t"+node)
		if err != nil {
			t.Fatal(err)
		}
		wg.Go(func() { svc.Push(ctx, appserver.PushRequest{Node: node, Secret: reg.Secret}) })
	}
	for i := range fcmDevices {
		node := fmt.Sprint("fcm-", i)
		reg, err := svc.Register(ctx, appserver.Caller{}, "fcm", node, "t"+node)
		if err != nil {
			t.Fatal(err)
		}
		b.set("t"+node, outage)
		wg.Go(func() { svc.Push(ctx, appserver.PushRequest{Node: node, Secret: reg.Secret}) })
	}
	wg.Wait()
	waitStats(t, svc, func(s appserver.RedeliveryStats) bool { return s.Kept == iosDevices+fcmDevices })
	for i := range fcmDevices {
		b.set(fmt.Sprint("tfcm-", i), nil)
	}
	back := time.Now()
	// Backoff here is 20-80 ms: with attempts of its own each FCM push
	// goes out within a few ticks (up to 0.4 s on a loaded machine);
	// behind the stalled app's, 64 at a time for 300 ms each, after
	// seconds (4.3 to 4.6 s measured). The bound is half the latter.
	const behind = iosDevices / 64 * deadline
	waitStats(t, svc, func(s appserver.RedeliveryStats) bool { return s.Delivered == fcmDevices })
	took := time.Since(back)
	t.Logf("%d FCM pushes redelivered %v after FCM was back (%d stalled APNS pushes waiting)", fcmDevices, took.Round(time.Millisecond), iosDevices)
	if took > behind/2 {
		t.Fatalf("the FCM pushes waited %v behind the stalled APNS app's redelivery attempts", took.Round(time.Millisecond))
	}
}

// gated is a push service that stalls until open is closed, then takes
// every push.
type gated struct {
	open chan struct{}
	mu   sync.Mutex
	sent map[string]int
}

func (g *gated) Send(ctx context.Context, n push.Notification) error {
	select {
	case <-g.open:
	case <-ctx.Done():
		return &push.TemporaryError{Reason: "request", Outage: true, Err: ctx.Err()}
	}
	g.mu.Lock()
	g.sent[n.Token]++
	g.mu.Unlock()
	return nil
}

// TestStallPushPastBoundHastenedWhenBack: the app's service stalls, so
// AppMaxInFlight pushes are with it; a push to another device fails past
// the bound and is kept. The service comes back and takes the stalled
// pushes: the kept push is one the stall made fail, and goes out at the
// loop's next tick, as a push failed by the outage itself does, not after
// its backoff.
func TestStallPushPastBoundHastenedWhenBack(t *testing.T) {
	ctx := context.Background()
	g := &gated{open: make(chan struct{}), sent: map[string]int{}}
	svc, err := appserver.New(memory.New(), []appserver.App{{Name: "fcm", Priority: push.PriorityHigh, Backend: g, Deadline: 4 * time.Second}},
		appserver.Options{Redelivery: time.Minute, PushTimeout: 30 * time.Second}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	// Not hastened, the kept push waits its first backoff, base/2 to
	// base; hastened, the loop's next tick. The bound is half the least
	// of the former, however long the stalled pushes take to end.
	const base = 10 * time.Second
	svc.SetRedeliveryTiming(base, 5*time.Millisecond)
	running(t, svc)
	var wg sync.WaitGroup
	fillApp(ctx, svc, &wg)
	r1, _ := svc.Register(ctx, appserver.Caller{}, "fcm", "n1", "t1")
	// The stalled pushes are all with the service, silent for longer than
	// half their deadline: stalled, not busy.
	time.Sleep(2500 * time.Millisecond)
	if err := svc.Push(ctx, appserver.PushRequest{Node: "n1", Secret: r1.Secret}); err == nil {
		t.Fatal("push past the bound went through")
	}
	back := time.Now()
	close(g.open)
	wg.Wait()
	for {
		g.mu.Lock()
		n := g.sent["t1"]
		g.mu.Unlock()
		if n > 0 {
			break
		}
		if time.Since(back) > 2*base {
			t.Fatal("kept push never sent")
		}
		time.Sleep(time.Millisecond)
	}
	took := time.Since(back)
	t.Logf("push failed past the bound during the stall sent %v after the service was back", took.Round(time.Millisecond))
	if took > base/4 {
		t.Fatalf("push kept during a stall (past AppMaxInFlight) sent %v after its service took pushes again: not hastened (Outage unset)", took.Round(time.Millisecond))
	}
}

// slowHealthy answers every push, successfully, after a fixed latency.
type slowHealthy struct{ latency time.Duration }

func (s slowHealthy) Send(ctx context.Context, _ push.Notification) error {
	select {
	case <-time.After(s.latency):
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// TestSlowHealthyServiceNotTakenForStalled: a healthy service answering
// every push in 1.5 s (FCM or APNS under load) has AppMaxInFlight pushes
// under way from a burst; 800 ms later, before any of them is answered,
// one more push arrives. The service answers everything it is given, so
// the push should be sent (holding its caller's place), not answered
// wait, which with redelivery off is a lost notification.
func TestSlowHealthyServiceNotTakenForStalled(t *testing.T) {
	ctx := context.Background()
	svc, err := appserver.New(memory.New(), []appserver.App{{Name: "fcm", Priority: push.PriorityHigh, Backend: slowHealthy{1500 * time.Millisecond}, Deadline: 20 * time.Second}},
		appserver.Options{Redelivery: -1, PushTimeout: 30 * time.Second}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	fillApp(ctx, svc, &wg)
	r1, _ := svc.Register(ctx, appserver.Caller{}, "fcm", "n1", "t1")
	time.Sleep(800 * time.Millisecond)
	if err := svc.Push(ctx, appserver.PushRequest{Node: "n1", Secret: r1.Secret}); err != nil {
		t.Fatalf("push to a healthy service answering in 1.5 s, past AppMaxInFlight 800 ms into a burst: %v", err)
	}
}

// refuseThenHang answers each push's first attempt 503 at once (a
// temporary error the retry helper retries) and then never again: an
// overloaded service that starts refusing and then stops answering. A
// push to a token beginning "ok" is answered at once, and one beginning
// "hold" is not answered at all, nor refused first; seen counts the
// pushes that reached it.
type refuseThenHang struct {
	mu      sync.Mutex
	seen    map[string]bool
	reached atomic.Int64
}

func (b *refuseThenHang) Send(ctx context.Context, n push.Notification) error {
	b.mu.Lock()
	b.seen[n.Token] = true
	b.mu.Unlock()
	b.reached.Add(1)
	switch {
	case strings.HasPrefix(n.Token, "ok"):
		return nil
	case strings.HasPrefix(n.Token, "hold"):
		<-ctx.Done()
		return &push.TemporaryError{Reason: "request", Outage: true, Err: ctx.Err()}
	}
	first := true
	return push.Retry(ctx, push.RetryPolicy{Budget: time.Second, Base: 10 * time.Millisecond}, func(ctx context.Context) error {
		if first {
			first = false
			return &push.TemporaryError{Reason: "503 TooManyRequests"}
		}
		<-ctx.Done()
		return &push.TemporaryError{Reason: "request", Outage: true, Err: ctx.Err()}
	})
}

func (b *refuseThenHang) sent(token string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.seen[token]
}

// TestStalledAfter503TakenForStalled: the service answered once, then
// stopped answering; AppMaxInFlight pushes are with it, some of which
// were refused 503 first, time out after their 1 s budget and are
// replaced by new ones, as a stream's publishes keep coming. No push has
// had an answer since, so a push past the bound should be refused at
// once, holding no caller's place, not sent. Retry hands back the
// earlier 503 for each timed-out push, which appFlow.note took for an
// answer.
//
// The bound is filled by pushes that stay with the service and by
// replacements counted in before the probe, not by pushes that follow
// one another: on a loaded machine some of those would be between two
// pushes at the probe's instant, and the probe sent, as it should be.
func TestStalledAfter503TakenForStalled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	b := &refuseThenHang{seen: map[string]bool{}}
	svc, err := appserver.New(memory.New(), []appserver.App{{Name: "fcm", Priority: push.PriorityHigh, Backend: b, Deadline: 30 * time.Second}},
		appserver.Options{Redelivery: -1, PushTimeout: 30 * time.Second}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	pushTo := func(wg *sync.WaitGroup, node string) {
		r, err := svc.Register(ctx, appserver.Caller{}, "fcm", node, node)
		if err != nil {
			t.Fatal(err)
		}
		wg.Go(func() { svc.Push(ctx, appserver.PushRequest{Node: node, Secret: r.Secret}) })
	}
	// One answer, at once: the service's usual answer time is short, and
	// half a second of silence makes it stalled.
	var answered sync.WaitGroup
	pushTo(&answered, "ok")
	answered.Wait()
	const refused = 16
	var timedOut sync.WaitGroup
	for i := range refused {
		pushTo(&timedOut, fmt.Sprint("refused-", i))
	}
	for i := range appserver.AppMaxInFlight - refused {
		pushTo(&wg, fmt.Sprint("hold-", i))
	}
	timedOut.Wait() // each after its 1 s budget, its error the 503
	for i := range refused {
		pushTo(&wg, fmt.Sprint("hold-more-", i))
	}
	eventually(t, func() bool { return b.reached.Load() == 1+refused+appserver.AppMaxInFlight }, func() string {
		return fmt.Sprintf("%d pushes reached the service, want %d", b.reached.Load(), 1+refused+appserver.AppMaxInFlight)
	})
	r, err := svc.Register(ctx, appserver.Caller{}, "fcm", "probe", "probe")
	if err != nil {
		t.Fatal(err)
	}
	err = svc.Push(ctx, appserver.PushRequest{Node: "probe", Secret: r.Secret})
	if err == nil || b.sent("probe") {
		t.Fatalf("push past AppMaxInFlight to a service silent for a second but for 503s: %v, sent %v; want refused at once, not sent (taken for busy)", err, b.sent("probe"))
	}
}

// fillApp registers AppMaxInFlight devices of app fcm and pushes to each
// on a goroutine of wg: the app's pushes under way at its service reach
// the bound.
func fillApp(ctx context.Context, svc *appserver.Service, wg *sync.WaitGroup) {
	for i := range appserver.AppMaxInFlight {
		node := fmt.Sprint("s", i)
		r, _ := svc.Register(ctx, appserver.Caller{}, "fcm", node, "t"+node)
		wg.Go(func() { svc.Push(ctx, appserver.PushRequest{Node: node, Secret: r.Secret}) })
	}
}

// TestRedeliveryRoomSharedAmongApps: the ios app's service is down long
// enough for its failed pushes to fill the room (four devices here);
// then one push of the fcm app, whose service is fine but for a moment,
// fails. It takes the place of the oldest ios push, and goes out when
// fcm takes pushes again: one app's outage does not cost another app
// its pushes.
func TestRedeliveryRoomSharedAmongApps(t *testing.T) {
	const room = 4
	ctx := context.Background()
	b := &scripted{answers: map[string]error{}}
	svc, err := appserver.New(memory.New(), []appserver.App{
		{Name: "ios", Priority: push.PriorityHigh, Backend: b},
		{Name: "fcm", Priority: push.PriorityHigh, Backend: b},
	}, appserver.Options{Redelivery: time.Minute}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	svc.SetRedeliveryTiming(20*time.Millisecond, 5*time.Millisecond)
	svc.SetRedeliveryRoom(room, 1<<20)
	running(t, svc)

	for i := range room + 1 {
		node := fmt.Sprint("ios-", i)
		reg, err := svc.Register(ctx, appserver.Caller{}, "ios", node, "t"+node)
		if err != nil {
			t.Fatal(err)
		}
		b.set("t"+node, outage)
		svc.Push(ctx, appserver.PushRequest{Node: node, Secret: reg.Secret})
	}
	// The ios app alone holds the whole room: its last push finds none.
	waitStats(t, svc, func(s appserver.RedeliveryStats) bool { return s.Kept == room && s.Dropped == 1 && s.Pending == room })
	noRoom := appserver.RedeliveryDrop{App: "ios", Reason: appserver.DropNoRoom}
	gavePlace := appserver.RedeliveryDrop{App: "ios", Reason: appserver.DropGavePlace}
	if d := svc.RedeliveryDrops(); d[noRoom] != 1 || d[gavePlace] != 0 {
		t.Fatalf("drops by app after the ios push found no room: %v", d)
	}

	reg, err := svc.Register(ctx, appserver.Caller{}, "fcm", "fcm-0", "tfcm-0")
	if err != nil {
		t.Fatal(err)
	}
	b.set("tfcm-0", outage)
	if err := svc.Push(ctx, appserver.PushRequest{Node: "fcm-0", Secret: reg.Secret}); !errors.Is(err, appserver.ErrPushFailed) {
		t.Fatalf("fcm push during its outage: %v", err)
	}
	if s := svc.RedeliveryStats(); s.Kept != room+1 || s.Pending != room || s.Dropped != 2 {
		t.Fatalf("the fcm push found no room beside the ios outage's: %+v", s)
	}
	// The push that gave its place is ios's, not the fcm push that took
	// it; fcm lost none, and shows so from the start.
	d := svc.RedeliveryDrops()
	fcmLost := 0
	for _, reason := range []appserver.DropReason{appserver.DropNoRoom, appserver.DropGavePlace, appserver.DropShutdown} {
		n, ok := d[appserver.RedeliveryDrop{App: "fcm", Reason: reason}]
		if !ok {
			t.Fatalf("no fcm %s count: %v", reason, d)
		}
		fcmLost += int(n)
	}
	if d[noRoom] != 1 || d[gavePlace] != 1 || fcmLost != 0 {
		t.Fatalf("drops by app after the fcm push took an ios push's place: %v", d)
	}
	b.set("tfcm-0", nil)
	waitStats(t, svc, func(s appserver.RedeliveryStats) bool { return s.Delivered == 1 && sentTo(b, "tfcm-0") >= 2 })
	if s := svc.RedeliveryStats(); s.Pending != room-1 {
		t.Fatalf("after the fcm push went out: %+v", s)
	}
	// The oldest ios push gave up its place; the others still wait. An
	// attempt at it under way when it did may still reach the service,
	// one at most.
	gaveUp, left := sentTo(b, "tios-0"), sentTo(b, "tios-3")
	eventually(t, func() bool { return sentTo(b, "tios-3") >= left+2 }, func() string { return "the ios pushes left are not tried again" })
	if sent := sentTo(b, "tios-0"); sent > gaveUp+1 {
		t.Fatalf("the ios push given up for the fcm push's place is still tried: sent %d times, %d when given up", sent, gaveUp)
	}
}

// TestRedeliveryNotToNodesNewOwner: a push held for redelivery goes out
// only while its node's registration has the secret it was sent with.
// Someone who knows only the node may register it afresh with a token of
// their own, and gets a new secret; the held push, message text and all,
// is then not theirs.
func TestRedeliveryNotToNodesNewOwner(t *testing.T) {
	ctx := context.Background()
	svc, _, b := redeliveringService(t, time.Minute)
	victim, _ := svc.Register(ctx, appserver.Caller{}, "fcm", "guessable-node", "victim-token")
	b.set("victim-token", outage)
	sum := &push.Summary{LastMessageSender: "juliet@example.org", LastMessageBody: "the secret plan", HasLastMessageBody: true}
	svc.Push(ctx, appserver.PushRequest{Node: "guessable-node", Secret: victim.Secret, Summary: sum})
	waitStats(t, svc, func(s appserver.RedeliveryStats) bool { return s.Kept == 1 })
	// Someone else takes the node over HTTP, without its secret.
	taken, err := svc.Register(ctx, appserver.Caller{}, "fcm", "guessable-node", "attacker-token")
	if err != nil {
		t.Fatal(err)
	}
	if taken.Secret == victim.Secret {
		t.Fatal("the taker learned the secret")
	}
	waitStats(t, svc, func(s appserver.RedeliveryStats) bool { return s.Pending == 0 && s.Delivered+s.Gone == 1 })
	for _, n := range b.Sent() {
		if n.Token == "attacker-token" {
			t.Fatalf("the victim's held push went to the new registrant's token: %+v (summary %+v)", n, n.Summary)
		}
	}
}

// TestRedeliveryAcrossRestartNotToNodesNewOwner: the same across a
// restart: the held push, taken from the registry by the next server,
// does not go to its node registered afresh (a new secret) meanwhile.
func TestRedeliveryAcrossRestartNotToNodesNewOwner(t *testing.T) {
	ctx := context.Background()
	store := memory.New()
	first, b1, stop := startRedelivering(t, store, time.Minute)
	victim, _ := first.Register(ctx, appserver.Caller{}, "fcm", "guessable-node", "victim-token")
	b1.set("victim-token", outage)
	first.Push(ctx, appserver.PushRequest{Node: "guessable-node", Secret: victim.Secret, MarkedHigh: true})
	stop()
	if _, err := first.Register(ctx, appserver.Caller{}, "fcm", "guessable-node", "attacker-token"); err != nil {
		t.Fatal(err)
	}
	second, b2, _ := startRedelivering(t, store, time.Minute)
	waitStats(t, second, func(s appserver.RedeliveryStats) bool { return s.Pending == 0 && s.Delivered+s.Gone == 1 })
	if n := sentTo(b2, "attacker-token"); n != 0 {
		t.Fatalf("the held push went to the node's new registrant %d times", n)
	}
}

// TestThrottledPushOfNodeMovedToAppUnknownHereKept: a push that waited for
// its throttle's window and then found its node registered again for an
// app this server is not configured with (another instance has it, or
// this one will after a restart) is kept for redelivery, as the same push
// is when it finds that at once, not dropped.
func TestThrottledPushOfNodeMovedToAppUnknownHereKept(t *testing.T) {
	ctx := context.Background()
	store := memory.New()
	b := &scripted{answers: map[string]error{}}
	svc, err := appserver.New(store, testApps(b), appserver.Options{Redelivery: time.Minute, RateLimit: 200 * time.Millisecond, CacheSize: -1},
		slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	svc.SetRedeliveryTiming(20*time.Millisecond, 5*time.Millisecond)
	stop := running(t, svc)
	reg, err := svc.Register(ctx, appserver.Caller{}, "fcm", "n1", "token-1")
	if err != nil {
		t.Fatal(err)
	}
	if err := svc.Push(ctx, appserver.PushRequest{Node: "n1", Secret: reg.Secret}); err != nil {
		t.Fatal(err)
	}
	// The next push waits for the window; meanwhile the device registers
	// again, for an app only another configuration has.
	moved := reg
	moved.Type, moved.Token = "android", "token-2"
	wctx := push.WithWaiting(ctx, push.WaitingFuncs{
		PauseFunc: func() {
			if _, err := store.Put(ctx, []registry.Registration{moved}); err != nil {
				t.Error(err)
			}
		},
		ResumeFunc: func(context.Context) error { return nil },
	})
	if err := svc.Push(wctx, appserver.PushRequest{Node: "n1", Secret: reg.Secret}); !errors.Is(err, appserver.ErrPushFailed) {
		t.Fatalf("push to a node moved to an app not configured here = %v, want ErrPushFailed", err)
	}
	if s := svc.RedeliveryStats(); s.Kept != 1 {
		t.Fatalf("the push was not kept for redelivery: %+v", s)
	}
	stop()

	// The server restarted with the app the device moved to.
	b2 := &scripted{answers: map[string]error{}}
	second, err := appserver.New(store, []appserver.App{{Name: "android", Priority: push.PriorityHigh, Backend: b2}},
		appserver.Options{Redelivery: time.Minute}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	second.SetRedeliveryTiming(20*time.Millisecond, 5*time.Millisecond)
	running(t, second)
	eventually(t, func() bool { return sentTo(b2, "token-2") > 0 }, func() string {
		return fmt.Sprintf("the push was lost: %+v", second.RedeliveryStats())
	})
}
