package appserver_test

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/push-appserver/push-appserver/internal/appserver"
	"github.com/push-appserver/push-appserver/internal/push"
	"github.com/push-appserver/push-appserver/internal/registry"
	"github.com/push-appserver/push-appserver/internal/registry/postgres"
)

// movesSeen is a PostgreSQL registry that tells the test what each move of
// held pushes took.
type movesSeen struct {
	*postgres.Store
	moved chan int
}

func (m *movesSeen) MoveHeldPushes(ctx context.Context, owner string, lease time.Duration, renew bool, limit int) ([]registry.HeldPush, error) {
	held, err := m.Store.MoveHeldPushes(ctx, owner, lease, renew, limit)
	if err == nil {
		m.moved <- len(held)
	}
	return held, err
}

// redeliveringOnPostgres starts a core with apps on the PostgreSQL
// registry at dsn, redelivering, its held pushes looked for every poll.
func redeliveringOnPostgres(t *testing.T, dsn string, apps []appserver.App, poll time.Duration, wrap func(*postgres.Store) registry.Store) (*appserver.Service, func()) {
	t.Helper()
	store, err := postgres.Open(context.Background(), dsn, postgres.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	var s registry.Store = store
	if wrap != nil {
		s = wrap(store)
	}
	svc, err := appserver.New(s, apps, appserver.Options{Redelivery: time.Minute}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	svc.SetRedeliveryTiming(20*time.Millisecond, 5*time.Millisecond)
	svc.SetHeldPoll(poll)
	return svc, running(t, svc)
}

// TestHeldPushOfAppUnknownToTakerLeftForOthers guards a rolling change
// of the apps: an app added on one instance and not yet on the other. A
// push to one of its devices that the first instance held at its stop (a
// restart, an upgrade) must not be taken by the other instance, which
// cannot send it and would keep it until its time ran out: it stays in the
// registry, and the instance that has the app, started again, sends it.
func TestHeldPushOfAppUnknownToTakerLeftForOthers(t *testing.T) {
	ctx := context.Background()
	dsn := pg.DB(t)
	withVoIP := func(b *scripted) []appserver.App {
		return []appserver.App{
			{Name: "fcm", Priority: push.PriorityHigh, Backend: b},
			{Name: "voip", Priority: push.PriorityHigh, Backend: b}, // added here only
		}
	}

	// B runs the configuration before the change: no voip app.
	bBackend := &scripted{answers: map[string]error{}}
	seen := &movesSeen{moved: make(chan int, 100)}
	b, _ := redeliveringOnPostgres(t, dsn, []appserver.App{{Name: "fcm", Priority: push.PriorityHigh, Backend: bBackend}},
		time.Hour, func(s *postgres.Store) registry.Store { seen.Store = s; return seen })
	if n := <-seen.moved; n != 0 { // its start's take
		t.Fatalf("B took %d held pushes at its start", n)
	}

	// A has the app, and its service fails: the push waits at A.
	aBackend := &scripted{answers: map[string]error{}}
	a, stopA := redeliveringOnPostgres(t, dsn, withVoIP(aBackend), time.Hour, nil)
	reg, err := a.Register(ctx, appserver.Caller{}, "voip", "n1", "t1")
	if err != nil {
		t.Fatal(err)
	}
	aBackend.set("t1", outage)
	if err := a.Push(ctx, appserver.PushRequest{Node: "n1", Secret: reg.Secret}); err == nil {
		t.Fatal("push during the outage went through")
	}
	waitStats(t, a, func(s appserver.RedeliveryStats) bool { return s.Pending == 1 })
	stopA() // restarted: its push goes to the registry

	// B is told, as it is through the feed, and looks.
	b.TakeHeldSoon()
	select {
	case <-seen.moved:
	case <-time.After(10 * time.Second):
		t.Fatal("B never looked for held pushes")
	}

	// A again, with its service back.
	a2Backend := &scripted{answers: map[string]error{}}
	a2, _ := redeliveringOnPostgres(t, dsn, withVoIP(a2Backend), 20*time.Millisecond, nil)
	deadline := time.Now().Add(10 * time.Second)
	for a2.RedeliveryStats().Delivered == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("the held voip push never reached the instance that has the app: B holds %+v", b.RedeliveryStats())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if got := sentTo(a2Backend, "t1"); got != 1 {
		t.Fatalf("A sent %d pushes to t1, want 1", got)
	}
	if got := len(bBackend.Sent()); got != 0 {
		t.Fatalf("B sent %d pushes", got)
	}
}

// TestPushOfAppUnknownHereSentByInstanceWithIt guards the other half of
// a rolling change of the apps: while an app is on one instance only, the
// user's server sends some of its pushes to the instance without it
// (ejabberd balances over both; behind Prosody the active one may be
// either). That instance answers wait and keeps the push, but cannot send
// it: it must hand it over through the registry to the instance that has
// the app, not keep it until its time runs out.
func TestPushOfAppUnknownHereSentByInstanceWithIt(t *testing.T) {
	ctx := context.Background()
	dsn := pg.DB(t)
	aBackend := &scripted{answers: map[string]error{}}
	a, _ := redeliveringOnPostgres(t, dsn, []appserver.App{
		{Name: "fcm", Priority: push.PriorityHigh, Backend: aBackend},
		{Name: "voip", Priority: push.PriorityHigh, Backend: aBackend}, // added here only
	}, 20*time.Millisecond, nil)
	bBackend := &scripted{answers: map[string]error{}}
	b, _ := redeliveringOnPostgres(t, dsn, []appserver.App{{Name: "fcm", Priority: push.PriorityHigh, Backend: bBackend}},
		20*time.Millisecond, nil)

	reg, err := a.Register(ctx, appserver.Caller{}, "voip", "n1", "t1")
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Push(ctx, appserver.PushRequest{Node: "n1", Secret: reg.Secret}); err == nil {
		t.Fatal("B sent a push of an app it does not have")
	}
	deadline := time.Now().Add(15 * time.Second)
	for sentTo(aBackend, "t1") == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("the push B could not send never reached A, which has the app: B holds %+v", b.RedeliveryStats())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if got := len(bBackend.Sent()); got != 0 {
		t.Fatalf("B sent %d pushes", got)
	}
	waitStats(t, b, func(s appserver.RedeliveryStats) bool { return s.Pending == 0 })
	if got := sentTo(aBackend, "t1"); got != 1 {
		t.Fatalf("A sent %d pushes to t1, want 1", got)
	}
}
