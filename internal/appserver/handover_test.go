package appserver_test

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/push-appserver/push-appserver/internal/appserver"
	"github.com/push-appserver/push-appserver/internal/push"
	"github.com/push-appserver/push-appserver/internal/registry/postgres"
)

// heard is a log handler that passes each record's message, with the
// time it was logged, to the test.
type heard chan slog.Record

func (h heard) Enabled(context.Context, slog.Level) bool { return true }
func (h heard) Handle(_ context.Context, r slog.Record) error {
	select {
	case h <- r:
	default:
	}
	return nil
}
func (h heard) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h heard) WithGroup(string) slog.Handler      { return h }

// await waits up to 10 s for a record whose message starts with prefix.
func (h heard) await(t *testing.T, prefix string) slog.Record {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		select {
		case r := <-h:
			if strings.HasPrefix(r.Message, prefix) {
				return r
			}
		case <-deadline:
			t.Fatalf("never logged %q", prefix)
		}
	}
}

// stamped is a backend that says when each push reached it.
type stamped struct {
	*scripted
	at chan time.Time
}

func (b stamped) Send(ctx context.Context, n push.Notification) error {
	err := b.scripted.Send(ctx, n)
	select {
	case b.at <- time.Now():
	default:
	}
	return err
}

// onRegistry makes a core on the PostgreSQL registry at dsn, not yet
// running: with redelivery on (a minute, its backoff and ticks short)
// unless redelivery is negative, and listening to the registry's
// change feed, as every instance sharing it does, when listen is set.
func onRegistry(t *testing.T, dsn string, apps []appserver.App, redelivery time.Duration, listen bool, logger *slog.Logger) *appserver.Service {
	t.Helper()
	store, err := postgres.Open(context.Background(), dsn, postgres.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	opts := appserver.Options{Redelivery: redelivery}
	if listen {
		opts.Changes = store
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	svc, err := appserver.New(store, apps, opts, logger)
	if err != nil {
		t.Fatal(err)
	}
	if redelivery > 0 {
		svc.SetRedeliveryTiming(20*time.Millisecond, 5*time.Millisecond)
	}
	return svc
}

// heldInRegistry counts the pushes released in the registry at dsn for
// any instance to take.
func heldInRegistry(t *testing.T, dsn string) int {
	return countIn(t, dsn, `SELECT count(*) FROM held_pushes WHERE owner IS NULL`)
}

// listening counts the instances listening on the registry at dsn.
func listening(t *testing.T, dsn string) int {
	return countIn(t, dsn, `SELECT count(*) FROM pg_stat_activity
		WHERE datname = current_database() AND application_name = 'push-appserver-listen'`)
}

// countIn runs query, a count, on the database at dsn.
func countIn(t *testing.T, dsn, query string) int {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var n int
	if err := conn.QueryRow(ctx, query).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// handOverVoIP has b, which has no voip app, hand over a push to a voip
// device registered through withVoIP, and waits until it did. It returns
// when b's hand-over was logged.
func handOverVoIP(t *testing.T, withVoIP, b *appserver.Service, bLog heard) time.Time {
	t.Helper()
	ctx := context.Background()
	reg, err := withVoIP.Register(ctx, appserver.Caller{}, "voip", "n1", "t1")
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Push(ctx, appserver.PushRequest{Node: "n1", Secret: reg.Secret}); err == nil {
		t.Fatal("B sent a push of an app it does not have")
	}
	return bLog.await(t, "pushes of apps this server does not have left in the registry").Time
}

// TestRedeliveryOffLeavesOthersHeldPushes guards the pushes that running
// instances leave in a shared registry for one another (handed over by
// one without their app, in a rolling change of the apps; or released at
// a stop). An instance started with redelivery off sends none of them,
// and must not delete them either while other instances run: one with
// redelivery on, and the app, sends them. Alone on the registry, it
// removes them at its start, as the README says: nothing would ever send
// or expire them.
func TestRedeliveryOffLeavesOthersHeldPushes(t *testing.T) {
	for _, tc := range []struct {
		name        string
		othersRun   bool
		wantHeld    int
		wantDecided string
	}{
		{"others running", true, 1, "pushes held for redelivery in the registry, if any, left to the other servers"},
		{"alone", false, 0, "pushes held for redelivery removed from the registry"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dsn := pg.DB(t)
			aBackend := &scripted{answers: map[string]error{}}
			// A has the voip app; it runs only at the end.
			a := onRegistry(t, dsn, []appserver.App{{Name: "voip", Priority: push.PriorityHigh, Backend: aBackend}}, time.Minute, false, nil)
			bLog := make(heard, 100)
			b := onRegistry(t, dsn, []appserver.App{{Name: "fcm", Priority: push.PriorityHigh, Backend: &scripted{answers: map[string]error{}}}},
				time.Minute, true, slog.New(bLog))
			// B looks for held pushes at its start only: taking the one
			// it handed over, to give it back, would hide it from the
			// count below for a moment.
			b.SetHeldPoll(time.Hour)
			stopB := running(t, b)
			handOverVoIP(t, a, b, bLog)
			if got := heldInRegistry(t, dsn); got != 1 {
				t.Fatalf("%d pushes in the registry after the hand-over, want 1", got)
			}
			if tc.othersRun {
				eventually(t, func() bool { return listening(t, dsn) == 1 }, func() string { return "B never listened" })
			} else {
				stopB()
				eventually(t, func() bool { return listening(t, dsn) == 0 }, func() string { return "B still listens after its stop" })
			}

			cLog := make(heard, 100)
			c := onRegistry(t, dsn, []appserver.App{{Name: "voip", Priority: push.PriorityHigh, Backend: &scripted{answers: map[string]error{}}}},
				-1, true, slog.New(cLog))
			running(t, c)
			// Left, or removed: the line says it once C decided.
			decided := cLog.await(t, "pushes held for redelivery ")
			if got := heldInRegistry(t, dsn); got != tc.wantHeld {
				t.Fatalf("%d pushes in the registry after an instance with redelivery off started, want %d (%s)", got, tc.wantHeld, decided.Message)
			}
			if !strings.HasPrefix(decided.Message, tc.wantDecided) {
				t.Fatalf("C logged %q, want %q", decided.Message, tc.wantDecided)
			}

			running(t, a)
			want := tc.wantHeld
			eventually(t, func() bool { return sentTo(aBackend, "t1") == want && a.RedeliveryStats().Pending == 0 },
				func() string { return "the push A, with redelivery on and the app, should send" })
		})
	}
}

// TestHandedOverPushTakenAtOnce guards the hand-over of a push to an app
// one instance does not have (a rolling change of the apps) to one that
// has it: the instance with the app hears of it through the registry and
// sends it within a tick, not at its next look for held pushes (10 s in
// production; an hour here, so that only the announcement can bring it).
// The instance that handed it over counts it so (handed_over): its kept
// pushes all end in an outcome.
func TestHandedOverPushTakenAtOnce(t *testing.T) {
	dsn := pg.DB(t)
	aBackend := stamped{&scripted{answers: map[string]error{}}, make(chan time.Time, 10)}
	a := onRegistry(t, dsn, []appserver.App{
		{Name: "fcm", Priority: push.PriorityHigh, Backend: aBackend},
		{Name: "voip", Priority: push.PriorityHigh, Backend: aBackend}, // added here only
	}, time.Minute, true, nil)
	a.SetHeldPoll(time.Hour)
	bLog := make(heard, 100)
	b := onRegistry(t, dsn, []appserver.App{{Name: "fcm", Priority: push.PriorityHigh, Backend: &scripted{answers: map[string]error{}}}},
		time.Minute, true, slog.New(bLog))
	b.SetHeldPoll(time.Hour)
	running(t, a)
	running(t, b)
	// Both feeds live (each cache is bypassed until its feed is), not
	// only both listening connections made: a connection shows in
	// pg_stat_activity before its LISTEN has run, and an announcement
	// sent before A's LISTEN never reaches A.
	eventually(t, func() bool {
		return listening(t, dsn) == 2 && !a.CacheStats().Bypassed && !b.CacheStats().Bypassed
	}, func() string { return "A and B never both listened" })

	handed := handOverVoIP(t, a, b, bLog)
	select {
	case sent := <-aBackend.at:
		t.Logf("handed over to sent: %v", sent.Sub(handed).Round(time.Millisecond))
	// Anything well short of the hour tells the announcement from the
	// look; a second or less on a quiet machine, seconds under load.
	case <-time.After(30 * time.Second):
		t.Fatalf("the push B handed over was not sent by A, which has the app, within 30 s: A holds %+v", a.RedeliveryStats())
	}
	if got := sentTo(aBackend.scripted, "t1"); got != 1 {
		t.Fatalf("A sent %d pushes to t1, want 1", got)
	}
	if got := waitStats(t, b, func(s appserver.RedeliveryStats) bool { return s.Pending == 0 }); got.Kept != 1 || got.HandedOver != 1 {
		t.Fatalf("B's redelivery: %+v, want the push it kept counted as handed over", got)
	}
	waitStats(t, a, func(s appserver.RedeliveryStats) bool { return s.Delivered == 1 && s.Pending == 0 })
}
