package postgres_test

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/push-appserver/push-appserver/internal/registry"
	"github.com/push-appserver/push-appserver/internal/registry/postgres"
	"github.com/push-appserver/push-appserver/internal/registry/storetest"
	"github.com/push-appserver/push-appserver/internal/testutil/pgtest"
)

var pg = pgtest.New()

func TestMain(m *testing.M) { os.Exit(pg.Run(m)) }

func open(t *testing.T, dsn string) *postgres.Store {
	t.Helper()
	s, err := postgres.Open(context.Background(), dsn, postgres.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestStore(t *testing.T) {
	storetest.Run(t, func(t *testing.T) registry.Store { return open(t, pg.DB(t)) })
}

// Instances starting together migrate once; one reopening finds the schema.
func TestMigrateConcurrentlyAndReopen(t *testing.T) {
	dsn := pg.DB(t)
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			s, err := postgres.Open(context.Background(), dsn, postgres.Options{})
			if err != nil {
				t.Error(err)
				return
			}
			s.Close()
		})
	}
	wg.Wait()
	s := open(t, dsn)
	if _, err := register(s, registry.Registration{Node: "n", Type: "a", Token: "t", Secret: "s", Registered: time.Now()}); err != nil {
		t.Fatal(err)
	}
}

// Registrations' pages keep room for the updates of push outcomes, which
// are then HOT (no new index entries, no dead index tuples).
func TestRegistrationsFillfactor(t *testing.T) {
	dsn := pg.DB(t)
	open(t, dsn)
	conn, err := pgx.Connect(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var opts []string
	if err := conn.QueryRow(context.Background(), `SELECT coalesce(reloptions, '{}') FROM pg_class WHERE relname = 'registrations'`).Scan(&opts); err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(opts, "fillfactor=85") {
		t.Fatalf("registrations' options %v, want fillfactor=85", opts)
	}
}

func TestBadDSNKeepsPasswordOut(t *testing.T) {
	_, err := postgres.Open(context.Background(), "postgres://u:hunter2@127.0.0.1:%zz/db", postgres.Options{})
	if err == nil {
		t.Fatal("bad DSN accepted")
	}
	if got := err.Error(); strings.Contains(got, "hunter2") {
		t.Fatalf("error shows the password: %s", got)
	}
}

// Several instances write behind push outcomes for the same nodes, each
// batch in its own order: whatever the interleaving, every node ends with
// the latest time of each kind and the reason that came with it.
func TestPushStatusFromSeveralInstances(t *testing.T) {
	ctx := context.Background()
	dsn := pg.DB(t)
	const instances, nodes, batches = 4, 50, 20
	stores := make([]*postgres.Store, instances)
	for i := range stores {
		stores[i] = open(t, dsn)
	}
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for n := range nodes {
		if _, err := register(stores[0], registry.Registration{Node: fmt.Sprintf("n%02d", n), Type: "a", Token: "t", Secret: "s", Registered: base}); err != nil {
			t.Fatal(err)
		}
	}
	// Instance i, batch b writes time (b*instances+i) seconds: the global
	// latest is written by some instance in its last batch, but the
	// instances finish in any order.
	var wg sync.WaitGroup
	for i, s := range stores {
		wg.Go(func() {
			for b := range batches {
				at := base.Add(time.Duration(b*instances+i) * time.Second)
				var batch []registry.PushStatus
				for k := range nodes {
					n := (k*7 + i*13 + b) % nodes // a different order per instance and batch
					batch = append(batch,
						registry.PushStatus{Node: fmt.Sprintf("n%02d", n), At: at, Success: true},
						registry.PushStatus{Node: fmt.Sprintf("n%02d", n), At: at, Reason: fmt.Sprintf("r%d", b*instances+i)})
				}
				if err := s.UpdatePushStatus(ctx, batch); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	want := base.Add(time.Duration((batches-1)*instances+instances-1) * time.Second)
	for n := range nodes {
		r, err := stores[1].Get(ctx, fmt.Sprintf("n%02d", n))
		if err != nil {
			t.Fatal(err)
		}
		if !r.LastSuccessfulPush.Equal(want) || !r.LastPushError.Equal(want) || r.LastErrorReason != fmt.Sprintf("r%d", (batches-1)*instances+instances-1) {
			t.Fatalf("%s: success %v error %v %q, want %v", r.Node, r.LastSuccessfulPush, r.LastPushError, r.LastErrorReason, want)
		}
	}
}

// Follow announces changes made through any connection, and says when it
// lost the feed and when it is back.
func TestFollow(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	dsn := pg.DB(t)
	a, b := open(t, dsn), open(t, dsn)
	changed := make(chan string, 16)
	live := make(chan bool, 16)
	done := make(chan struct{})
	go func() {
		defer close(done)
		b.Follow(ctx, func(n string) { changed <- n }, func(l bool) { live <- l })
	}()
	expect := func(want bool) {
		t.Helper()
		select {
		case l := <-live:
			if l != want {
				t.Fatalf("live(%v), want live(%v)", l, want)
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("no live(%v)", want)
		}
	}
	node := func(want string) {
		t.Helper()
		select {
		case n := <-changed:
			if n != want {
				t.Fatalf("changed %q, want %q", n, want)
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("no change announced for %q", want)
		}
	}
	expect(true)
	reg := registry.Registration{Node: "n1", Type: "a", Token: "t", Secret: "s", Registered: time.Now()}
	if _, err := register(a, reg); err != nil {
		t.Fatal(err)
	}
	node("n1")
	// A renewal changes nothing cached: no announcement, so the next one
	// is n2's.
	if _, err := register(a, registry.Registration{Node: "n1", Type: "a", Token: "t", Secret: "s", Registered: time.Now()}); err != nil {
		t.Fatal(err)
	}
	if _, err := register(a, registry.Registration{Node: "n2", Type: "a", Token: "t", Secret: "s", Registered: time.Now()}); err != nil {
		t.Fatal(err)
	}
	node("n2")
	// Push status is not what a push reads: no announcement. The next
	// change is what must arrive.
	if err := a.UpdatePushStatus(ctx, []registry.PushStatus{{Node: "n1", At: time.Now(), Success: true}}); err != nil {
		t.Fatal(err)
	}
	reg.Token = "t2"
	if _, err := register(a, reg); err != nil {
		t.Fatal(err)
	}
	node("n1")
	if n := pg.Terminate(t, dsn, "push-appserver-listen"); n != 1 {
		t.Fatalf("terminated %d listeners", n)
	}
	expect(false)
	expect(true)
	if _, err := a.Delete(ctx, "n1", "a"); err != nil {
		t.Fatal(err)
	}
	node("n1")
	cancel()
	<-done
}

func register(s *postgres.Store, r registry.Registration) (registry.Registration, error) {
	return s.Register(context.Background(), r.Node, registry.Renew(r))
}

// Instances creating the same node at once end with one registration and
// one secret, which every one of them answers.
func TestConcurrentCreateAcrossInstances(t *testing.T) {
	dsn := pg.DB(t)
	const n = 6
	secrets := make([]string, n)
	var start, wg sync.WaitGroup
	start.Add(1)
	for i := range n {
		s := open(t, dsn)
		wg.Go(func() {
			start.Wait()
			r, err := register(s, registry.Registration{Node: "same", Type: "a", Token: "t", Secret: fmt.Sprintf("sec-%d", i), Registered: time.Now()})
			if err != nil {
				t.Error(err)
			}
			secrets[i] = r.Secret
		})
	}
	start.Done()
	wg.Wait()
	stored, err := open(t, dsn).Get(context.Background(), "same")
	if err != nil {
		t.Fatal(err)
	}
	for i, s := range secrets {
		if s != stored.Secret {
			t.Fatalf("instance %d answered secret %q, stored %q", i, s, stored.Secret)
		}
	}
}

// follow runs s.Follow until the test ends and returns once it listens.
func follow(t *testing.T, s *postgres.Store) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	live := make(chan bool, 16)
	done := make(chan struct{})
	go func() { defer close(done); s.Follow(ctx, func(string) {}, func(l bool) { live <- l }) }()
	t.Cleanup(func() { cancel(); <-done })
	select {
	case <-live:
	case <-time.After(30 * time.Second):
		t.Fatal("Follow never listened")
	}
}

// A write through a followed store waits for the other listening
// instances to confirm the change, but never longer than a second: an
// instance that listens and never answers (hung) delays writes by that
// much and blocks nothing.
func TestWriteBarrier(t *testing.T) {
	dsn := pg.DB(t)
	a, b := open(t, dsn), open(t, dsn)
	follow(t, a)
	timed := func(node string) time.Duration {
		t.Helper()
		start := time.Now()
		if _, err := register(a, registry.Registration{Node: node, Type: "a", Token: "t", Secret: "s", Registered: time.Now()}); err != nil {
			t.Fatal(err)
		}
		return time.Since(start)
	}
	if d := timed("alone"); d > 500*time.Millisecond {
		t.Fatalf("write with no other instance took %v", d)
	}
	follow(t, b)
	if d := timed("with-b"); d > 500*time.Millisecond {
		t.Fatalf("write with an answering instance took %v", d)
	}
	// A listener that never acknowledges, as a hung instance's.
	hung, err := pgx.Connect(context.Background(), dsn+"&application_name=push-appserver-listen")
	if err != nil {
		t.Fatal(err)
	}
	defer hung.Close(context.Background())
	if _, err := hung.Exec(context.Background(), "LISTEN "+postgres.Channel); err != nil {
		t.Fatal(err)
	}
	if d := timed("hung"); d < 900*time.Millisecond || d > 5*time.Second {
		t.Fatalf("write with a hung instance took %v, want about a second", d)
	}
	// A renewal is announced to nobody, so it waits for nobody.
	if d := timed("hung"); d > 500*time.Millisecond {
		t.Fatalf("renewal with a hung instance took %v: it waited for an answer to an announcement never made", d)
	}
	// Registrations at once are committed together and each waits; the
	// waits overlap, and none holds up the commits of the others.
	start := time.Now()
	var wg sync.WaitGroup
	took := make([]time.Duration, 20)
	for i := range took {
		wg.Go(func() {
			took[i] = timed(fmt.Sprint("many-", i))
		})
	}
	wg.Wait()
	if d := time.Since(start); d > 1800*time.Millisecond {
		t.Fatalf("20 writes at once with a hung instance took %v, want about a second", d)
	}
	for i, d := range took {
		if d < 900*time.Millisecond {
			t.Fatalf("write %d of 20 at once took %v, want about a second: it did not wait", i, d)
		}
	}
	// Renewals at once, committed together, wait for nobody either.
	start = time.Now()
	for i := range took {
		wg.Go(func() { timed(fmt.Sprint("many-", i)) })
	}
	wg.Wait()
	if d := time.Since(start); d > 500*time.Millisecond {
		t.Fatalf("20 renewals at once with a hung instance took %v: they waited for answers to announcements never made", d)
	}
	if _, err := a.Delete(context.Background(), "hung", "a"); err != nil {
		t.Fatal(err)
	}
}

// A component released through one store is announced to every followed
// one.
func TestComponentReleased(t *testing.T) {
	dsn := pg.DB(t)
	a, b := open(t, dsn), open(t, dsn)
	got := make(chan string, 4)
	b.OnComponentReleased(func(jid string) { got <- jid })
	follow(t, b)
	if err := a.ReleaseComponent(context.Background(), "push.example.org"); err != nil {
		t.Fatal(err)
	}
	select {
	case jid := <-got:
		if jid != "push.example.org" {
			t.Fatalf("released %q", jid)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("release not announced")
	}
}

// Pushes released through one store are announced to every followed one,
// once committed, and can be taken then.
func TestPushesHeldAnnounced(t *testing.T) {
	dsn := pg.DB(t)
	a, b := open(t, dsn), open(t, dsn)
	held := make(chan []string, 4)
	b.OnPushesHeld(func(apps []string) { held <- apps })
	follow(t, b)
	ctx := context.Background()
	if err := a.KeepPushes(ctx, "a", time.Hour, false, []registry.HeldPush{{Device: "d", FailedAt: time.Now(), Push: []byte(`{"app":"apns"}`)}}, nil); err != nil {
		t.Fatal(err)
	}
	if err := a.ReleasePushes(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	select {
	case apps := <-held:
		if apps != nil {
			t.Fatalf("released pushes announced for apps %q, want for any instance", apps)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("held pushes not announced")
	}
	if got, err := b.TakeHeldPushes(context.Background(), 10); err != nil || len(got) != 1 {
		t.Fatalf("taken once announced: %v, %v", got, err)
	}
}

// TestPushesHandedOverAnnounced guards the hand-over of pushes to apps an
// instance does not have: once their rows are back in the registry, the
// other instances hear of it with the apps named (so that those with one
// of them take the pushes at once, not at their next look, 10 s later),
// and a hand-over that gave nothing back says nothing.
func TestPushesHandedOverAnnounced(t *testing.T) {
	dsn := pg.DB(t)
	a, b := open(t, dsn), open(t, dsn)
	held := make(chan []string, 4)
	b.OnPushesHeld(func(apps []string) { held <- apps })
	follow(t, b)
	ctx := context.Background()
	if err := a.KeepPushes(ctx, "a", time.Hour, false, []registry.HeldPush{{Device: "d", FailedAt: time.Now(), Push: []byte(`{"app":"voip"}`)}}, nil); err != nil {
		t.Fatal(err)
	}
	// Nothing of a's under these names: no rows back, no announcement.
	if err := a.HandOverPushes(ctx, "a", []string{"other"}, []string{"voip"}); err != nil {
		t.Fatal(err)
	}
	if err := a.HandOverPushes(ctx, "a", []string{"d"}, []string{"voip"}); err != nil {
		t.Fatal(err)
	}
	select {
	case apps := <-held:
		if !slices.Equal(apps, []string{"voip"}) {
			t.Fatalf("hand-over announced for apps %q, want [voip] (an empty hand-over announced?)", apps)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("handed-over pushes not announced")
	}
	if got, err := b.TakeHeldPushes(ctx, 10); err != nil || len(got) != 1 {
		t.Fatalf("taken once announced: %v, %v", got, err)
	}
}

// TestOtherServers: a store counts the servers running on the registry
// beside it (each listening for its changes), never its own listening
// connection, so that a server with redelivery off can tell the held
// pushes of running servers from those left by stopped ones.
func TestOtherServers(t *testing.T) {
	ctx := context.Background()
	dsn := pg.DB(t)
	a, b := open(t, dsn), open(t, dsn)
	count := func(s *postgres.Store) int {
		t.Helper()
		n, err := s.OtherServers(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	if n := count(a); n != 0 {
		t.Fatalf("%d other servers, none listening", n)
	}
	follow(t, a)
	if n := count(a); n != 0 {
		t.Fatalf("a counts %d other servers, alone but for its own listening connection", n)
	}
	if n := count(b); n != 1 {
		t.Fatalf("b counts %d other servers, want 1 (a)", n)
	}
	follow(t, b)
	if n := count(a); n != 1 {
		t.Fatalf("a counts %d other servers, want 1 (b)", n)
	}
}

// TestHeldPushAgeOnDatabaseClock: a held push's age goes through the
// database's clock, whatever the writer's says the time is: a writer whose
// clock is a day behind, whose push failed 5 minutes ago by it, hands over
// a push 5 minutes old, not a day and 5 minutes.
func TestHeldPushAgeOnDatabaseClock(t *testing.T) {
	ctx := context.Background()
	s := open(t, pg.DB(t))
	skewed := time.Now().Add(-24*time.Hour - 5*time.Minute).Round(0)
	if err := s.KeepPushes(ctx, "w", time.Hour, false, []registry.HeldPush{{Device: "d", FailedAt: skewed, Age: 5 * time.Minute, Push: []byte("p")}}, nil); err != nil {
		t.Fatal(err)
	}
	if err := s.ReleasePushes(ctx, "w"); err != nil {
		t.Fatal(err)
	}
	got, err := s.TakeHeldPushes(ctx, 10)
	if err != nil || len(got) != 1 {
		t.Fatalf("%v, %v", got, err)
	}
	if age := got[0].Age; age < 5*time.Minute || age > 6*time.Minute {
		t.Fatalf("age %v, want 5 minutes", age)
	}
}
