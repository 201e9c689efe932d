package admin_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/push-appserver/push-appserver/internal/admin"
	"github.com/push-appserver/push-appserver/internal/appserver"
	"github.com/push-appserver/push-appserver/internal/push"
	"github.com/push-appserver/push-appserver/internal/registry"
	"github.com/push-appserver/push-appserver/internal/registry/postgres"
	"github.com/push-appserver/push-appserver/internal/registry/sqlite"
	"github.com/push-appserver/push-appserver/internal/testutil/pgtest"
)

var pg = pgtest.New()

func TestMain(m *testing.M) { os.Exit(pg.Run(m)) }

// sent remembers the tokens a push went to.
type sent struct {
	mu     sync.Mutex
	tokens []string
}

func (s *sent) Send(_ context.Context, n push.Notification) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.tokens = append(s.tokens, n.Token)
	return nil
}

func service(t *testing.T, store registry.Store) (*appserver.Service, *sent) {
	t.Helper()
	backend := &sent{}
	svc, err := appserver.New(store, []appserver.App{{Name: "fcm", Priority: push.PriorityHigh, Backend: backend}},
		appserver.Options{}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	return svc, backend
}

type stores struct {
	name     string
	src, dst func(t *testing.T) registry.Store
}

func sqliteStore(t *testing.T) registry.Store {
	s, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "registry.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func postgresStore(t *testing.T) registry.Store {
	s, err := postgres.Open(context.Background(), pg.DB(t), postgres.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

var alice = appserver.Account{Bare: "alice@example.org", Domain: "example.org"}

// A registry copied into another serves the same devices: a push with
// the secret the user's server holds goes through, an account may still
// change the registrations it made and nobody else may, a device
// registered by account and device id keeps its node, and the push
// outcomes come along.
func TestCopyServesTheSameDevices(t *testing.T) {
	for _, tt := range []stores{
		{"sqlite to postgres", sqliteStore, postgresStore},
		{"postgres to sqlite", postgresStore, sqliteStore},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			src := tt.src(t)
			old, _ := service(t, src)
			plain, err := old.Register(ctx, appserver.Caller{}, "fcm", "plain-node", "token-1")
			if err != nil {
				t.Fatal(err)
			}
			owned, err := old.Register(ctx, appserver.Caller{Account: alice}, "fcm", "alices-node", "token-2")
			if err != nil {
				t.Fatal(err)
			}
			device, err := old.RegisterDevice(ctx, "fcm", alice, "phone", "", "token-3")
			if err != nil {
				t.Fatal(err)
			}
			if err := old.Push(ctx, appserver.PushRequest{Node: plain.Node, Secret: plain.Secret}); err != nil {
				t.Fatal(err)
			}
			old.Close() // writes the push outcome

			dst := tt.dst(t)
			sum, err := admin.Copy(ctx, dst, src, false, nil)
			if err != nil {
				t.Fatal(err)
			}
			if sum.Total() != 3 || sum.Copied["fcm"] != 3 || sum.Bound != 2 || sum.New != 3 || sum.Salt != "copied" {
				t.Fatalf("summary %+v", sum)
			}

			svc, backend := service(t, dst)
			if err := svc.Push(ctx, appserver.PushRequest{Node: plain.Node, Secret: plain.Secret}); err != nil {
				t.Fatalf("push with the secret registered before the copy: %v", err)
			}
			if len(backend.tokens) != 1 || backend.tokens[0] != "token-1" {
				t.Fatalf("pushed to %v", backend.tokens)
			}
			r, err := svc.Register(ctx, appserver.Caller{Account: alice}, "fcm", "alices-node", "token-2b")
			if err != nil || r.Secret != owned.Secret {
				t.Fatalf("the owning account's new token: %v (secret kept: %v)", err, r.Secret == owned.Secret)
			}
			mallory := appserver.Account{Bare: "mallory@example.org", Domain: "example.org"}
			if _, err := svc.Register(ctx, appserver.Caller{Account: mallory}, "fcm", "alices-node", "token-m"); !errors.Is(err, appserver.ErrForbidden) {
				t.Fatalf("another account changed alice's registration: %v", err)
			}
			again, err := svc.RegisterDevice(ctx, "fcm", alice, "phone", "", "token-3b")
			if err != nil || again.Node != device.Node || again.Secret != device.Secret {
				t.Fatalf("the device registered again: %v, node %q secret kept %v; want node %q", err, again.Node, again.Secret == device.Secret, device.Node)
			}
			got, err := dst.Get(ctx, plain.Node)
			if err != nil {
				t.Fatal(err)
			}
			// PostgreSQL keeps microseconds.
			if d := got.Registered.Sub(plain.Registered).Abs(); got.LastSuccessfulPush.IsZero() || d >= time.Microsecond {
				t.Errorf("copied registration %+v lost its times (registered %v)", got, plain.Registered)
			}

			// Copied again, nothing is new; the devices' later changes
			// in the target (alice's new token, the device's) stay.
			if sum, err = admin.Copy(ctx, dst, src, false, nil); err != nil || sum.New != 0 || sum.Total() != 1 || sum.Kept != 2 || sum.Salt != "same" {
				t.Fatalf("second copy: %+v, %v", sum, err)
			}
		})
	}
}

// A target with a salt of its own takes no registration bound by the
// source's, and nothing of it; a dry run writes nothing.
func TestCopyRefusesAnotherSalt(t *testing.T) {
	ctx := context.Background()
	src := sqliteStore(t)
	old, _ := service(t, src)
	if _, err := old.Register(ctx, appserver.Caller{Account: alice}, "fcm", "alices-node", "token-2"); err != nil {
		t.Fatal(err)
	}
	if _, err := old.Register(ctx, appserver.Caller{}, "fcm", "plain-node", "token-1"); err != nil {
		t.Fatal(err)
	}

	dst := postgresStore(t)
	other, _ := service(t, dst)
	if _, err := other.Register(ctx, appserver.Caller{Account: alice}, "fcm", "other-node", "token-9"); err != nil {
		t.Fatal(err)
	}
	sum, err := admin.Copy(ctx, dst, src, true, nil)
	if err == nil || !errors.Is(err, admin.ErrSaltMismatch) {
		t.Fatalf("dry run into a registry with another salt: %+v, %v", sum, err)
	}
	if _, err := admin.Copy(ctx, dst, src, false, nil); !errors.Is(err, admin.ErrSaltMismatch) {
		t.Fatalf("copy into a registry with another salt: %v", err)
	}
	if n, _ := dst.Count(ctx); n != 1 {
		t.Errorf("the target holds %d registrations after a refused copy, want its 1", n)
	}

	// A dry run into an empty registry counts and writes nothing.
	empty := sqliteStore(t)
	sum, err = admin.Copy(ctx, empty, src, true, nil)
	if err != nil || sum.Total() != 2 || sum.Bound != 1 || sum.Salt != "copied" || sum.New != 2 {
		t.Fatalf("dry run: %+v, %v", sum, err)
	}
	if n, _ := empty.Count(ctx); n != 0 {
		t.Errorf("a dry run wrote %d registrations", n)
	}
	if _, err := empty.InstanceValue(ctx, appserver.SaltName, func() (string, error) { return "", errors.New("none") }); err == nil {
		t.Error("a dry run wrote the salt")
	}
}

// threePages is an SQLite registry of 2,345 registrations, three pages
// of Copy's, and what it holds.
func threePages(t *testing.T) (registry.Store, []registry.Registration) {
	t.Helper()
	src := sqliteStore(t)
	var rs []registry.Registration
	for i := range 2345 {
		rs = append(rs, registry.Registration{Node: fmt.Sprintf("node-%05d", i), Type: "fcm", Token: fmt.Sprint("t", i),
			Secret: fmt.Sprintf("%064x", i), Registered: time.Unix(1_800_000_000, 0)})
	}
	if _, err := src.Put(context.Background(), rs); err != nil {
		t.Fatal(err)
	}
	return src, rs
}

// Copy reads the source a page at a time, to its end.
func TestCopyEveryPage(t *testing.T) {
	ctx := context.Background()
	src, rs := threePages(t)
	dst := postgresStore(t)
	sum, err := admin.Copy(ctx, dst, src, false, nil)
	if err != nil || sum.Total() != 2345 || sum.New != 2345 || sum.Salt != "none" {
		t.Fatalf("%+v, %v", sum, err)
	}
	if r, err := dst.Get(ctx, "node-02344"); err != nil || r.Secret != rs[2344].Secret {
		t.Fatalf("the last registration: %+v, %v", r, err)
	}
}

// clockedPuts is a copy target whose writes take the times in took, one
// a page, on the fake clock.
type clockedPuts struct {
	registry.Store
	clock *fakeClock
	took  []time.Duration
	pages int
}

func (p *clockedPuts) PutRead(ctx context.Context, rs, read []registry.Registration) (int, []string, error) {
	p.clock.now = p.clock.now.Add(p.took[p.pages])
	p.pages++
	return p.Store.PutRead(ctx, rs, read)
}

// TestCopyPausesBetweenPages: Copy leaves the registry to a running
// server's writes between two pages, as Prune does between its batches:
// on SQLite the server waits for the write lock in a busy handler, and a
// page written at once after another takes the lock before it, page
// after page (importing 978,010 registrations beside a server, its
// registrations waited up to 3.5 s). The pause is as long as the page's
// write (10 ms at least), in which the busy handler looks again, and no
// longer: a fixed 150 ms after every page made `import registry` of
// 10,000,000 registrations take 34 minutes, 25 of them asleep.
func TestCopyPausesBetweenPages(t *testing.T) {
	ctx := context.Background()
	src, _ := threePages(t)
	c := &fakeClock{now: time.Unix(1_800_000_000, 0)}
	dst := &clockedPuts{Store: sqliteStore(t), clock: c, took: []time.Duration{2 * time.Millisecond, 60 * time.Millisecond, 3 * time.Second}}
	if _, err := admin.CopyWith(ctx, dst, src, false, nil, c); err != nil {
		t.Fatal(err)
	}
	if dst.pages != 3 {
		t.Fatalf("%d pages written, want 3", dst.pages)
	}
	want := []time.Duration{10 * time.Millisecond, 60 * time.Millisecond, time.Second}
	if !slices.Equal(c.pauses, want) {
		t.Fatalf("pauses after pages written in %v: %v, want %v", dst.took, c.pauses, want)
	}
}

// serverBetweenPages is a copy target on which a running server
// registers and deletes after the first page Copy writes.
type serverBetweenPages struct {
	registry.Store
	pages  int
	server func(ctx context.Context) error
}

func (s *serverBetweenPages) PutRead(ctx context.Context, rs, read []registry.Registration) (int, []string, error) {
	added, changed, err := s.Store.PutRead(ctx, rs, read)
	if s.pages++; err == nil && s.pages == 1 {
		err = s.server(ctx)
	}
	return added, changed, err
}

// TestCopyCountsNewFromWhatItWrote: the summary's new and replaced
// registrations are what the copy's own writes found, whatever a server
// running on the target does meanwhile. Counted as the target's count
// after less before, a server registering beside an import made it
// print -445 replaced.
func TestCopyCountsNewFromWhatItWrote(t *testing.T) {
	for _, tt := range []struct {
		name string
		dst  func(t *testing.T) registry.Store
	}{{"sqlite", sqliteStore}, {"postgres", postgresStore}} {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			src, rs := threePages(t)
			dst := tt.dst(t)
			// 100 of the source's nodes are in the target already, and
			// 300 others that the server deletes during the copy.
			held := slices.Clone(rs[:100])
			for i := range 300 {
				held = append(held, registry.Registration{Node: fmt.Sprintf("gone-%03d", i), Type: "fcm", Token: "t", Secret: "s", Registered: time.Now()})
			}
			if _, err := dst.Put(ctx, held); err != nil {
				t.Fatal(err)
			}
			w := &serverBetweenPages{Store: dst, server: func(ctx context.Context) error {
				// 500 new registrations, one of them a node of the
				// source's last page, which the copy then replaces.
				for i := range 500 {
					node := fmt.Sprintf("server-%03d", i)
					if i == 0 {
						node = rs[2100].Node
					}
					r := registry.Registration{Node: node, Type: "fcm", Token: "t", Secret: "s", Registered: time.Now()}
					if _, err := dst.Register(ctx, node, registry.Renew(r)); err != nil {
						return err
					}
				}
				for i := range 300 {
					if _, err := dst.Delete(ctx, fmt.Sprintf("gone-%03d", i), "fcm"); err != nil {
						return err
					}
				}
				return nil
			}}
			sum, err := admin.Copy(ctx, w, src, false, nil)
			if err != nil || w.pages != 3 {
				t.Fatalf("%+v in %d pages, %v", sum, w.pages, err)
			}
			if want := 2345 - 101; sum.Total() != 2345 || sum.New != want {
				t.Errorf("%d copied, %d of them new; want 2345, %d (101 replaced)", sum.Total(), sum.New, want)
			}
			var out strings.Builder
			sum.WriteTo(&out)
			if want := "2244 new in the target, 101 replaced one of the same node"; !strings.Contains(out.String(), want) {
				t.Errorf("summary %q does not say %q", out.String(), want)
			}
		})
	}
}

// BenchmarkCopy copies 20,000 registrations from SQLite into an empty
// PostgreSQL database.
func BenchmarkCopy(b *testing.B) {
	ctx := context.Background()
	src, err := sqlite.Open(ctx, filepath.Join(b.TempDir(), "registry.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer src.Close()
	const n = 20000
	var rs []registry.Registration
	for i := range n {
		rs = append(rs, registry.Registration{Node: fmt.Sprintf("%016x", uint64(i)*0x9e3779b97f4a7c15), Type: "fcm",
			Token: fmt.Sprintf("token-%0150d", i), Secret: fmt.Sprintf("%064x", i), Registered: time.Unix(1_800_000_000, 0),
			LastSuccessfulPush: time.Unix(1_800_000_100, 0)})
	}
	if _, err := src.Put(ctx, rs); err != nil {
		b.Fatal(err)
	}
	var total time.Duration
	for b.Loop() {
		b.StopTimer()
		dst, err := postgres.Open(ctx, pg.DB(b), postgres.Options{})
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		start := time.Now()
		if sum, err := admin.Copy(ctx, dst, src, false, nil); err != nil || sum.New != n {
			b.Fatalf("%+v, %v", sum, err)
		}
		total += time.Since(start)
		b.StopTimer()
		dst.Close()
		b.StartTimer()
	}
	b.ReportMetric(float64(n)*float64(b.N)/total.Seconds(), "registrations/s")
}

// A registration of the source whose device key is held here by another
// node (the device moved to another app here since: a new node) must not
// silently delete that node: its user's server pushes with it.
func TestCopyKeepsOtherNodeOfSameDevice(t *testing.T) {
	t.Run("sqlite", func(t *testing.T) { copyKeepsOtherNode(t, sqliteStore(t), sqliteStore(t)) })
	t.Run("postgres", func(t *testing.T) { copyKeepsOtherNode(t, sqliteStore(t), postgresStore(t)) })
}

func copyKeepsOtherNode(t *testing.T, src, dst registry.Store) {
	ctx := context.Background()
	for _, s := range []registry.Store{src, dst} {
		if _, err := s.InstanceValue(ctx, appserver.SaltName, func() (string, error) { return "salt", nil }); err != nil {
			t.Fatal(err)
		}
	}
	now := time.Now().UTC()
	if _, err := src.Put(ctx, []registry.Registration{{Node: "old-node", Type: "fcm", Token: "t1", Secret: "s1", Registered: now.Add(-time.Hour), DeviceKey: "K", Owner: "o"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := dst.Put(ctx, []registry.Registration{{Node: "new-node", Type: "fcm", Token: "t2", Secret: "s2", Registered: now, DeviceKey: "K", Owner: "o"}}); err != nil {
		t.Fatal(err)
	}
	sum, err := admin.Copy(ctx, dst.(admin.CopyTarget), src.(admin.CopySource), false, nil)
	t.Logf("copy: %+v, %v", sum, err)
	if _, gerr := dst.Get(ctx, "new-node"); gerr != nil && err == nil {
		var b strings.Builder
		sum.WriteTo(&b)
		t.Fatalf("copy succeeded and node new-node of the target is gone (%v); its summary: %s", gerr, b.String())
	}
}

// README's own steps: copy while the source still serves, then "stop its
// servers and run this again". A device that, between the two runs,
// unregistered and registered again (or moved to another app) has a new
// node on the source with its old device key; the target still holds the
// first run's copy of the old node. The second run must still bring over
// the registrations made on the source meanwhile.
func TestCopyRerunAfterDeviceMovedOnSource(t *testing.T) {
	ctx := context.Background()
	src, dst := sqliteStore(t), sqliteStore(t)
	now, old := copyKeyedDevice(t, src, dst)
	// On the source, meanwhile: the device re-registers under a new node
	// (same device key), and another user registers.
	if _, err := src.Delete(ctx, old.Node, old.Type); err != nil {
		t.Fatal(err)
	}
	moved := registry.Registration{Node: "a-new", Type: "fcm", Token: "t1", Secret: "s2", Registered: now, DeviceKey: "K", Owner: "o"}
	other := registry.Registration{Node: "c-other", Type: "fcm", Token: "t3", Secret: "s3", Registered: now}
	if _, err := src.Put(ctx, []registry.Registration{moved, other}); err != nil {
		t.Fatal(err)
	}
	sum, err := admin.Copy(ctx, dst.(admin.CopyTarget), src.(admin.CopySource), false, nil)
	t.Logf("second run: %+v, %v", sum, err)
	for _, node := range []string{"a-new", "c-other"} {
		if _, gerr := dst.Get(ctx, node); gerr != nil {
			t.Errorf("after the second run, node %s registered on the source is not in the target: %v (copy: %v)", node, gerr, err)
		}
	}
}

// A server stopped during a push service's outage hands the pushes it
// kept for redelivery to the registry, for the next server to take
// (README: "so no push is lost with the process"). Moving that registry
// with import registry, as README says (stop, copy, start on the new
// one), must bring them along, each of them, or the devices they were
// for are never woken; a dry run touches none; and a failed write into
// the target leaves them in the source.
func TestCopyTakesHeldPushesAlong(t *testing.T) {
	for _, tt := range []stores{
		{"sqlite to postgres", sqliteStore, postgresStore},
		{"postgres to sqlite", postgresStore, sqliteStore},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			src, dst := tt.src(t), tt.dst(t)
			holdPushes(t, src, "one", "two", "three")

			if sum, err := admin.Copy(ctx, dst, src, true, nil); err != nil || sum.Held != 0 {
				t.Fatalf("dry run: %+v, %v", sum, err)
			}
			if got, err := dst.TakeHeldPushes(ctx, 10); err != nil || len(got) != 0 {
				t.Fatalf("a dry run wrote %d pushes waiting for redelivery into the target (%v)", len(got), err)
			}
			if _, err := admin.Copy(ctx, failingKeep{dst}, src, false, nil); err == nil {
				t.Fatal("a copy whose target refused the pushes waiting for redelivery succeeded")
			}
			sum, err := admin.Copy(ctx, dst, src, false, nil)
			if err != nil {
				t.Fatal(err)
			}
			var out strings.Builder
			sum.WriteTo(&out)
			if sum.Held != 3 || !strings.Contains(out.String(), "3 pushes waiting for redelivery moved") {
				t.Errorf("summary %+v:\n%s", sum, out.String())
			}
			got, err := dst.TakeHeldPushes(ctx, 10)
			if err != nil {
				t.Fatal(err)
			}
			var pushes []string
			for _, h := range got {
				pushes = append(pushes, string(h.Push))
			}
			if strings.Join(pushes, ",") != "one,two,three" {
				t.Errorf("the target holds the pushes %q waiting for redelivery, want one, two and three in the order they failed", pushes)
			}
			// Moved, not copied: left in the source too, each would be
			// sent twice, by the servers of either registry.
			if left, err := src.TakeHeldPushes(ctx, 10); err != nil || len(left) != 0 {
				t.Errorf("the source still holds %d pushes waiting for redelivery after they moved (%v)", len(left), err)
			}
		})
	}
}

// With servers running on a PostgreSQL source, the pushes released
// there are theirs to send: the copy leaves them and says so.
func TestCopyLeavesHeldPushesToRunningServers(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	src, dst := postgresStore(t), sqliteStore(t)
	holdPushes(t, src, "one")
	followed := make(chan bool, 1)
	go src.(*postgres.Store).Follow(ctx, func(string) {}, func(live bool) {
		if live {
			select {
			case followed <- true:
			default:
			}
		}
	})
	<-followed
	sum, err := admin.Copy(ctx, dst, src, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	sum.WriteTo(&out)
	if sum.Held != 0 || sum.HeldLeftTo != 1 || !strings.Contains(out.String(), "left in the source, for the 1 servers running on it") {
		t.Errorf("summary %+v:\n%s", sum, out.String())
	}
	if got, err := src.TakeHeldPushes(ctx, 10); err != nil || len(got) != 1 {
		t.Errorf("the source holds %d pushes waiting for redelivery (%v), want the 1 its server is to send", len(got), err)
	}
}

// holdPushes registers a device in s and leaves one push for it waiting
// for redelivery per payload, released, as a server that stopped leaves
// them, failed in the order given.
func holdPushes(t *testing.T, s registry.Store, payloads ...string) {
	t.Helper()
	ctx := context.Background()
	now := time.Now().UTC().Truncate(time.Second)
	if _, err := s.Put(ctx, []registry.Registration{{Node: "n1", Type: "fcm", Token: "tok1", Secret: "s1", Registered: now}}); err != nil {
		t.Fatal(err)
	}
	var held []registry.HeldPush
	for i, p := range payloads {
		held = append(held, registry.HeldPush{Device: fmt.Sprint("d", i), FailedAt: now.Add(time.Duration(i) * time.Second), Push: []byte(p)})
	}
	if err := s.KeepPushes(ctx, "server-1", 10*time.Second, false, held, nil); err != nil {
		t.Fatal(err)
	}
	if err := s.ReleasePushes(ctx, "server-1"); err != nil {
		t.Fatal(err)
	}
}

// failingKeep is a target that refuses pushes waiting for redelivery.
type failingKeep struct{ registry.Store }

func (failingKeep) KeepPushes(context.Context, string, time.Duration, bool, []registry.HeldPush, []string) error {
	return errors.New("disk full")
}

// README (import from mod_push_appserver): running the import again
// leaves a registration removed here since removed, because the registry
// keeps the nodes each run wrote (imported_nodes). Moving that registry
// with import registry, as README says for SQLite → PostgreSQL, must take
// that list along, or the next run of the import into the new registry
// brings back the registration removed here (its token dead, its secret
// told gone), with the old token and secret. A dry run writes none of
// it; a node the target lists more recently keeps its time; and a list
// longer than a page goes whole.
func TestCopyTakesImportedNodesAlong(t *testing.T) {
	for _, tt := range []stores{
		{"sqlite to postgres", sqliteStore, postgresStore},
		{"postgres to sqlite", postgresStore, sqliteStore},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			src, dst := tt.src(t), tt.dst(t)
			at := time.Date(2026, 11, 25, 10, 0, 0, 123456789, time.UTC)
			gone := registry.Registration{Node: "gone", Type: "fcm", Token: "dead", Secret: "s1", Registered: at}
			kept := registry.Registration{Node: "kept", Type: "fcm", Token: "t2", Secret: "s2", Registered: at}
			if err := src.PutImported(ctx, []registry.Registration{gone, kept}); err != nil {
				t.Fatal(err)
			}
			// Its token dead: removed here.
			if _, err := src.Delete(ctx, gone.Node, gone.Type); err != nil {
				t.Fatal(err)
			}
			// More than a page of them.
			var more []registry.ImportedNode
			for i := range 1000 {
				more = append(more, registry.ImportedNode{Node: fmt.Sprintf("node-%04d", i), Registered: at})
			}
			if err := src.PutImportedNodes(ctx, more); err != nil {
				t.Fatal(err)
			}
			// Imported into the target later, with a newer record.
			later := at.Add(time.Hour)
			if err := dst.PutImportedNodes(ctx, []registry.ImportedNode{{Node: "kept", Registered: later}}); err != nil {
				t.Fatal(err)
			}

			if sum, err := admin.Copy(ctx, dst, src, true, nil); err != nil || sum.Imported != 1002 {
				t.Fatalf("dry run: %+v, %v; want 1002 imported nodes counted", sum, err)
			}
			if _, err := dst.ImportedAt(ctx, "gone"); !errors.Is(err, registry.ErrNotFound) {
				t.Fatalf("after a dry run, the target lists gone as imported (%v)", err)
			}
			sum, err := admin.Copy(ctx, dst, src, false, nil)
			if err != nil {
				t.Fatal(err)
			}
			var out strings.Builder
			sum.WriteTo(&out)
			if sum.Imported != 1002 || !strings.Contains(out.String(), "1002 nodes listed as imported from mod_push_appserver") {
				t.Errorf("summary %+v:\n%s", sum, out.String())
			}
			for node, want := range map[string]time.Time{"gone": at, "kept": later, "node-0999": at} {
				if got, err := dst.ImportedAt(ctx, node); err != nil || !got.Equal(want) {
					t.Errorf("after import registry, the target's imported_nodes has %s at %v (%v), want %v: a re-run of the mod_push_appserver import brings it back", node, got, err, want)
				}
			}
			if n := countImported(t, dst); n != 1002 {
				t.Errorf("the target lists %d imported nodes, want 1002", n)
			}
		})
	}
}

func countImported(t *testing.T, s registry.Store) int {
	t.Helper()
	n := 0
	for after := ""; ; {
		page, err := s.ImportedNodes(context.Background(), after, 100)
		if err != nil {
			t.Fatal(err)
		}
		if len(page) == 0 {
			return n
		}
		n += len(page)
		after = page[len(page)-1].Node
	}
}

// README's "run this again": between the runs a device's node b-old was
// renewed without its device key (an HTTP registration of the same node)
// and the device then registered by account and device id under a new
// node, a-new, which took the key. The target holds b-old with the key
// from the first run; the second run's page is [a-new (K), b-old (no
// key)], which settleDevices leaves to Put ("Written with this page: Put
// judges it"). The copy must go through.
func TestCopyRerunKeyMovedWithinPage(t *testing.T) {
	t.Run("sqlite", func(t *testing.T) { copyRerunKeyMovedWithinPage(t, sqliteStore(t)) })
	t.Run("postgres", func(t *testing.T) { copyRerunKeyMovedWithinPage(t, postgresStore(t)) })
}

func copyRerunKeyMovedWithinPage(t *testing.T, dst registry.Store) {
	ctx := context.Background()
	src := sqliteStore(t)
	now, old := copyKeyedDevice(t, src, dst)
	renewed := old
	renewed.DeviceKey, renewed.Renewed = "", now.Add(-time.Minute)
	moved := registry.Registration{Node: "a-new", Type: "fcm", Token: "t1", Secret: "s2", Registered: now, DeviceKey: "K", Owner: "o"}
	if _, err := src.Put(ctx, []registry.Registration{renewed}); err != nil {
		t.Fatal(err)
	}
	if _, err := src.Put(ctx, []registry.Registration{moved}); err != nil {
		t.Fatal(err)
	}
	sum, err := admin.Copy(ctx, dst.(admin.CopyTarget), src.(admin.CopySource), false, nil)
	if err != nil {
		t.Fatalf("second run: %v (%+v)", err, sum)
	}
	if r, err := dst.GetByDeviceKey(ctx, "K"); err != nil || r.Node != "a-new" || r.Secret != "s2" {
		t.Fatalf("device key K held by %+v %v after the second run, want a-new", r, err)
	}
}

// copyKeyedDevice registers on src, an hour before now, node b-old of a
// device known by its device key K, and runs the copy to dst once, as
// the first of the README's two runs.
func copyKeyedDevice(t *testing.T, src, dst registry.Store) (now time.Time, old registry.Registration) {
	t.Helper()
	ctx := context.Background()
	if _, err := src.InstanceValue(ctx, appserver.SaltName, func() (string, error) { return "salt", nil }); err != nil {
		t.Fatal(err)
	}
	now = time.Now().UTC().Truncate(time.Second)
	old = registry.Registration{Node: "b-old", Type: "fcm", Token: "t1", Secret: "s1", Registered: now.Add(-time.Hour), DeviceKey: "K", Owner: "o"}
	if _, err := src.Put(ctx, []registry.Registration{old}); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.Copy(ctx, dst.(admin.CopyTarget), src.(admin.CopySource), false, nil); err != nil {
		t.Fatal(err)
	}
	return now, old
}

// cancelAfterPut is a copy target whose first Put ends the copy's
// context once the page is written, as Ctrl-C during the pause does.
type cancelAfterPut struct {
	registry.Store
	cancel func()
	put    int
}

func (c *cancelAfterPut) PutRead(ctx context.Context, rs, read []registry.Registration) (int, []string, error) {
	added, changed, err := c.Store.PutRead(ctx, rs, read)
	c.put += len(rs)
	c.cancel()
	return added, changed, err
}

// TestCopyInterruptedInPauseCountsWrittenPage: an import interrupted in
// the pause after a page says it copied the registrations it wrote: the
// summary printed then is all the operator has to go by.
func TestCopyInterruptedInPauseCountsWrittenPage(t *testing.T) {
	src, _ := threePages(t)
	ctx, cancel := context.WithCancel(context.Background())
	dst := &cancelAfterPut{Store: sqliteStore(t), cancel: cancel}
	sum, err := admin.Copy(ctx, dst, src, false, nil)
	n, _ := dst.Store.Count(context.Background())
	if err == nil {
		t.Fatal("copy not interrupted")
	}
	if sum.Total() != n {
		t.Fatalf("summary says %d copied; the target holds %d (%v)", sum.Total(), n, err)
	}
}

// TestCopyKeepsNewerRegistrationOfSameNode guards a registry that has
// moved on since the source was written: a backup copied into the
// running registry with import registry (README: SOURCE may be "a
// backup"), or the SQLite file copied a second time after the servers
// already serve from the target. A device that registered a new token
// in the target since got a new secret, which its user's server now
// pushes with; the source's older registration of the node must not put
// the old token and secret back (every push would be refused
// item-not-found, and ejabberd disables push at once), and the summary
// says how many were kept.
func TestCopyKeepsNewerRegistrationOfSameNode(t *testing.T) {
	for _, tt := range []stores{
		{"sqlite to sqlite", sqliteStore, sqliteStore},
		{"sqlite to postgres", sqliteStore, postgresStore},
		{"postgres to sqlite", postgresStore, sqliteStore},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			backup := tt.src(t)
			old, _ := service(t, backup)
			first, err := old.Register(ctx, appserver.Caller{}, "fcm", "phone-node", "token-1")
			if err != nil {
				t.Fatal(err)
			}
			other, err := old.Register(ctx, appserver.Caller{}, "fcm", "other-node", "token-9")
			if err != nil {
				t.Fatal(err)
			}
			old.Close()

			live := tt.dst(t)
			if _, err := admin.Copy(ctx, live, backup, false, nil); err != nil {
				t.Fatal(err)
			}
			svc, _ := service(t, live)
			// Since the backup: the phone got a new token, and with it a
			// new secret, which its user's server now holds.
			moved, err := svc.Register(ctx, appserver.Caller{}, "fcm", "phone-node", "token-2")
			if err != nil {
				t.Fatal(err)
			}
			if moved.Secret == first.Secret {
				t.Fatal("a new token without the secret kept the secret")
			}
			svc.Close()

			sum, err := admin.Copy(ctx, live, backup, false, nil)
			if err != nil {
				t.Fatal(err)
			}
			var out strings.Builder
			sum.WriteTo(&out)

			svc, backend := service(t, live)
			if err := svc.Push(ctx, appserver.PushRequest{Node: "phone-node", Secret: moved.Secret}); err != nil {
				t.Fatalf("push with the secret the phone registered after the backup: %v (copy's summary: %s)", err, out.String())
			}
			if len(backend.tokens) != 1 || backend.tokens[0] != "token-2" {
				t.Fatalf("pushed to %v, want the token registered after the backup", backend.tokens)
			}
			if err := svc.Push(ctx, appserver.PushRequest{Node: other.Node, Secret: other.Secret}); err != nil {
				t.Fatalf("push to a node the copy left as it was: %v", err)
			}
			if sum.Total() != 1 || sum.Kept != 1 {
				t.Errorf("summary %+v; want 1 copied, 1 kept", sum)
			}
			if want := "1 not copied"; !strings.Contains(out.String(), want) {
				t.Errorf("summary %q does not say %q", out.String(), want)
			}
		})
	}
}

// A dry run changes nothing in the target, not even the node a device
// held there before it moved on the source: that node's user's server
// still pushes with its secret until the copy is run for real.
func TestCopyDryRunKeepsTargetsNodeOfMovedDevice(t *testing.T) {
	ctx := context.Background()
	src, dst := sqliteStore(t), sqliteStore(t)
	now, old := copyKeyedDevice(t, src, dst)
	if _, err := src.Delete(ctx, old.Node, old.Type); err != nil {
		t.Fatal(err)
	}
	moved := registry.Registration{Node: "a-new", Type: "fcm", Token: "t1", Secret: "s2", Registered: now, DeviceKey: "K", Owner: "o"}
	if _, err := src.Put(ctx, []registry.Registration{moved}); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.Copy(ctx, dst.(admin.CopyTarget), src.(admin.CopySource), true, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := dst.Get(ctx, old.Node); err != nil {
		t.Fatalf("a dry run deleted node %s from the target: %v", old.Node, err)
	}
	if _, err := dst.Get(ctx, moved.Node); err == nil {
		t.Fatalf("a dry run wrote node %s into the target", moved.Node)
	}
}

// A registration bound to a device alone (a device key, no owner) needs
// the source's salt as much as one bound to an account: into a target
// with a salt of its own, the copy is refused.
func TestCopyRefusesAnotherSaltForDeviceKeys(t *testing.T) {
	ctx := context.Background()
	src, dst := sqliteStore(t), sqliteStore(t)
	for s, salt := range map[registry.Store]string{src: "salt-a", dst: "salt-b"} {
		if _, err := s.InstanceValue(ctx, appserver.SaltName, func() (string, error) { return salt, nil }); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := src.Put(ctx, []registry.Registration{{Node: "n", Type: "fcm", Token: "t", Secret: "s", Registered: time.Now().UTC(), DeviceKey: "K"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.Copy(ctx, dst.(admin.CopyTarget), src.(admin.CopySource), false, nil); !errors.Is(err, admin.ErrSaltMismatch) {
		t.Fatalf("copy of a device-keyed registration into a registry with another salt: %v, want ErrSaltMismatch", err)
	}
	if n, _ := dst.Count(ctx); n != 0 {
		t.Errorf("the target holds %d registrations after a refused copy", n)
	}
}

// renewedBeforeRemoval is a copy target on which a running server
// renews node (registers it again at renewedAt) just before the copy
// removes it, once.
type renewedBeforeRemoval struct {
	registry.Store
	node    string
	renewal registry.Registration
	done    bool
}

func (s *renewedBeforeRemoval) renew(ctx context.Context, node string) error {
	if s.done || node != s.node {
		return nil
	}
	s.done = true
	_, err := s.Store.Register(ctx, node, registry.Renew(s.renewal))
	return err
}

func (s *renewedBeforeRemoval) Delete(ctx context.Context, node, typ string) (registry.Registration, error) {
	if err := s.renew(ctx, node); err != nil {
		return registry.Registration{}, err
	}
	return s.Store.Delete(ctx, node, typ)
}

func (s *renewedBeforeRemoval) DeleteRead(ctx context.Context, r registry.Registration) (registry.Registration, error) {
	if err := s.renew(ctx, r.Node); err != nil {
		return registry.Registration{}, err
	}
	return s.Store.DeleteRead(ctx, r)
}

// TestCopyKeepsDeviceRenewedDuringCopy: the target's node of a device
// whose source registration is newer goes, replaced by the source's; but
// one the device renews on the running target after the copy read it is
// newer than the source's and must stay, as it does when renewed before
// the read (TestCopyKeepsNewerRegistrationOfSameNode): its user's server
// pushes with it. Removed by node, it went, and the source's older
// registration came in its stead.
func TestCopyKeepsDeviceRenewedDuringCopy(t *testing.T) {
	ctx := context.Background()
	src, plain := sqliteStore(t), sqliteStore(t)
	for _, s := range []registry.Store{src, plain} {
		if _, err := s.InstanceValue(ctx, appserver.SaltName, func() (string, error) { return "salt", nil }); err != nil {
			t.Fatal(err)
		}
	}
	now := time.Now().UTC()
	if _, err := src.Put(ctx, []registry.Registration{{Node: "a-src", Type: "fcm", Token: "t1", Secret: "s1", Registered: now.Add(-time.Minute), DeviceKey: "K", Owner: "o"}}); err != nil {
		t.Fatal(err)
	}
	held := registry.Registration{Node: "b-dst", Type: "fcm", Token: "t0", Secret: "s0", Registered: now.Add(-time.Hour), DeviceKey: "K", Owner: "o"}
	if _, err := plain.Put(ctx, []registry.Registration{held}); err != nil {
		t.Fatal(err)
	}
	renewal := held
	renewal.Token, renewal.Registered = "t2", now
	dst := &renewedBeforeRemoval{Store: plain, node: "b-dst", renewal: renewal}
	sum, err := admin.Copy(ctx, dst, src.(admin.CopySource), false, nil)
	if !dst.done {
		t.Fatal("the copy removed no node of the device")
	}
	if r, gerr := plain.Get(ctx, "b-dst"); gerr != nil || r.Token != "t2" || r.Secret != "s0" {
		t.Fatalf("copy (%+v, %v) removed the device's node renewed on the target since it read it: %+v, %v", sum, err, r, gerr)
	}
	if err != nil {
		t.Fatalf("copy: %v", err)
	}
	if _, gerr := plain.Get(ctx, "a-src"); !errors.Is(gerr, registry.ErrNotFound) {
		t.Errorf("the source's older registration of the device was written beside the newer one: %v", gerr)
	}
}

// renewedBeforeWrite is a copy target on which a running server renews
// node (registers it again, as its device does) just before the copy
// writes its page, once.
type renewedBeforeWrite struct {
	registry.Store
	node    string
	renewal registry.Registration
	done    bool
}

func (s *renewedBeforeWrite) renew(ctx context.Context) error {
	if s.done {
		return nil
	}
	s.done = true
	_, err := s.Store.Register(ctx, s.node, registry.Renew(s.renewal))
	return err
}

func (s *renewedBeforeWrite) Put(ctx context.Context, rs []registry.Registration) (int, error) {
	if err := s.renew(ctx); err != nil {
		return 0, err
	}
	return s.Store.Put(ctx, rs)
}

func (s *renewedBeforeWrite) PutRead(ctx context.Context, rs, read []registry.Registration) (int, []string, error) {
	if err := s.renew(ctx); err != nil {
		return 0, nil, err
	}
	return s.Store.PutRead(ctx, rs, read)
}

// TestCopyKeepsNodeRenewedBeforeWrite: a node the copy read older on the
// target than on the source is replaced by the source's, but one its
// device renews on the running target between that read and the page's
// write is newer than the source's and must stay, as one renewed before
// the read does (TestCopyKeepsNewerRegistrationOfSameNode). Written
// over, the node went back to the source's older token (a device that
// moved on from it), and to the source's secret where the target's had
// another: its user's server, which pushes with the target's, had its
// pushes refused as unknown.
func TestCopyKeepsNodeRenewedBeforeWrite(t *testing.T) {
	for _, tt := range []struct {
		name string
		dst  func(t *testing.T) registry.Store
	}{{"sqlite", sqliteStore}, {"postgres", postgresStore}} {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			src, plain := sqliteStore(t), tt.dst(t)
			now := time.Now().UTC().Truncate(time.Microsecond)
			if _, err := src.Put(ctx, []registry.Registration{{Node: "n", Type: "fcm", Token: "t1", Secret: "s1", Registered: now.Add(-time.Minute)}}); err != nil {
				t.Fatal(err)
			}
			held := registry.Registration{Node: "n", Type: "fcm", Token: "t0", Secret: "s0", Registered: now.Add(-time.Hour)}
			if _, err := plain.Put(ctx, []registry.Registration{held}); err != nil {
				t.Fatal(err)
			}
			renewal := held
			renewal.Token, renewal.Registered = "t2", now
			dst := &renewedBeforeWrite{Store: plain, node: "n", renewal: renewal}
			sum, err := admin.Copy(ctx, dst, src.(admin.CopySource), false, nil)
			if err != nil {
				t.Fatalf("copy: %v", err)
			}
			if !dst.done {
				t.Fatal("the copy wrote no page")
			}
			if r, err := plain.Get(ctx, "n"); err != nil || r.Token != "t2" || r.Secret != "s0" {
				t.Fatalf("copy (%+v) wrote over the node renewed on the target since it read it: %+v, %v", sum, r, err)
			}
			if sum.Total() != 0 || sum.Kept != 1 {
				t.Errorf("summary %+v: want the node counted as kept, none copied", sum)
			}
		})
	}
}
