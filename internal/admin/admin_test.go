package admin_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/push-appserver/push-appserver/internal/admin"
	"github.com/push-appserver/push-appserver/internal/registry"
	"github.com/push-appserver/push-appserver/internal/registry/memory"
	"github.com/push-appserver/push-appserver/internal/registry/sqlite"
)

// Prune deletes every idle registration and none renewed since, a window
// of the registry at a time, each window following the one before.
func TestPrune(t *testing.T) {
	ctx := context.Background()
	s := memory.New()
	old := time.Now().Add(-400 * 24 * time.Hour)
	var rs []registry.Registration
	for i := range 4400 {
		rs = append(rs, registry.Registration{Node: fmt.Sprintf("idle-%04d", i), Type: "fcm", Token: "t", Secret: "s", Registered: old})
	}
	rs = append(rs, registry.Registration{Node: "active", Type: "fcm", Token: "t", Secret: "s", Registered: time.Now()})
	if _, err := s.Put(ctx, rs); err != nil {
		t.Fatal(err)
	}
	w := &watched{Store: s}
	n, err := admin.Prune(ctx, w, "", time.Now().Add(-180*24*time.Hour), nil)
	if err != nil || n["fcm"] != 4400 {
		t.Fatalf("pruned %v, %v; want 4400", n, err)
	}
	if _, err := s.Get(ctx, "active"); err != nil {
		t.Fatalf("an active registration pruned: %v", err)
	}
	// Each window follows the one before, where the store said it ended,
	// not the start: the registrations in use it passed are not read
	// again.
	if want := append([]string{""}, w.next[:len(w.next)-1]...); len(w.after) != 3 || !slices.Equal(w.after, want) || w.next[2] != "" {
		t.Errorf("windows after %q ending at %q, want after %q and the last at the end", w.after, w.next, want)
	}
}

// fakeClock is a clock that moves only when told: by a window's
// statement (scripted) and by Prune's pauses, which it records.
type fakeClock struct {
	now    time.Time
	pauses []time.Duration
}

func (c *fakeClock) Now() time.Time { return c.now }

func (c *fakeClock) Sleep(ctx context.Context, d time.Duration) error {
	c.pauses = append(c.pauses, d)
	c.now = c.now.Add(d)
	return ctx.Err()
}

// window is what one scripted DeleteIdle does: how long it takes and
// how many it removes.
type window struct {
	took    time.Duration
	removed int
}

// scripted is a store whose DeleteIdle goes through windows, one a call,
// moving the clock on by each window's time.
type scripted struct {
	admin.Store
	clock   *fakeClock
	windows []window
	calls   int
}

func (s *scripted) DeleteIdle(_ context.Context, _ time.Time, _, _ string, _ int) ([]registry.Registration, string, error) {
	w := s.windows[s.calls]
	s.calls++
	s.clock.now = s.clock.now.Add(w.took)
	removed := make([]registry.Registration, w.removed)
	for i := range removed {
		removed[i].Type = "fcm"
	}
	next := fmt.Sprint("node-", s.calls)
	if s.calls == len(s.windows) {
		next = ""
	}
	return removed, next, nil
}

// TestPrunePausesAsLongAsTheLockWasHeld: after a window that deleted
// something, Prune pauses as long as the window's statement took, at
// least 10 ms and at most 1 s, so that a running server's registration
// waiting in SQLite's busy handler looks in while the lock is free (its
// looks are at most 10 ms apart in its first 18 ms of waiting, and never
// further apart than it has waited), and the prune, which a fixed 150 ms
// after every window made take ten times its statements' time, takes
// about twice. A window that deleted nothing took no write lock: no
// pause after it, nor after the last window.
func TestPrunePausesAsLongAsTheLockWasHeld(t *testing.T) {
	ms := time.Millisecond
	for _, tt := range []struct {
		name    string
		windows []window
		pauses  []time.Duration
	}{
		{"short statements pause the floor", []window{{2 * ms, 40}, {7 * ms, 40}, {3 * ms, 1}}, []time.Duration{10 * ms, 10 * ms}},
		{"longer statements pause as long", []window{{60 * ms, 2000}, {25 * ms, 500}, {1, 0}}, []time.Duration{60 * ms, 25 * ms}},
		{"a slow statement pauses at most a second", []window{{3 * time.Second, 2000}, {1, 0}}, []time.Duration{time.Second}},
		{"no pause after a window with none deleted", []window{{3 * ms, 0}, {5 * ms, 0}, {30 * ms, 7}, {2 * ms, 0}, {2 * ms, 0}}, []time.Duration{30 * ms}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := &fakeClock{now: time.Unix(1_800_000_000, 0)}
			s := &scripted{clock: c, windows: tt.windows}
			n, err := admin.PruneWith(context.Background(), s, "", time.Now(), nil, c)
			want := 0
			for _, w := range tt.windows {
				want += w.removed
			}
			if err != nil || n["fcm"] != want || s.calls != len(tt.windows) {
				t.Fatalf("pruned %v in %d windows, %v; want %d in %d", n, s.calls, err, want, len(tt.windows))
			}
			if !slices.Equal(c.pauses, tt.pauses) {
				t.Errorf("paused %v, want %v", c.pauses, tt.pauses)
			}
		})
	}
}

// A window with none idle deleted nothing and took no write lock: Prune
// goes on to the next at once, so a large registry with few idle
// registrations is read through in the time its statements take, not in
// 150 ms a window.
func TestPruneNoPauseAfterEmptyWindow(t *testing.T) {
	ctx := context.Background()
	s := memory.New()
	var rs []registry.Registration
	for i := range 20000 {
		rs = append(rs, registry.Registration{Node: fmt.Sprintf("active-%05d", i), Type: "fcm", Token: "t", Secret: "s", Registered: time.Now()})
	}
	rs = append(rs, registry.Registration{Node: "zz-idle", Type: "fcm", Token: "t", Secret: "s", Registered: time.Now().Add(-400 * 24 * time.Hour)})
	if _, err := s.Put(ctx, rs); err != nil {
		t.Fatal(err)
	}
	w := &watched{Store: s}
	start := time.Now()
	n, err := admin.Prune(ctx, w, "", time.Now().Add(-180*24*time.Hour), nil)
	took := time.Since(start)
	if err != nil || n["fcm"] != 1 {
		t.Fatalf("pruned %v, %v; want the one idle", n, err)
	}
	// Eleven windows: ten pauses would be 1.5 s at least.
	if len(w.after) != 11 || took > time.Second {
		t.Errorf("%d windows in %v, want 11 without pauses", len(w.after), took)
	}
}

// watched records what Prune asks of a store.
type watched struct {
	admin.Store
	took  time.Duration // in DeleteIdle
	after []string      // DeleteIdle's after, call by call
	next  []string      // where each call's window ended
}

func (s *watched) DeleteIdle(ctx context.Context, before time.Time, typ, after string, limit int) ([]registry.Registration, string, error) {
	start := time.Now()
	removed, next, err := s.Store.DeleteIdle(ctx, before, typ, after, limit)
	s.took += time.Since(start)
	s.after, s.next = append(s.after, after), append(s.next, next)
	return removed, next, err
}

// BenchmarkPrune prunes a SQLite registry of 300,000 registrations of
// which every tenth is idle, scattered in node order among the others
// (half renewed lately, half pushed to lately); each round puts the idle
// ones back first. About half of a round is Prune's pauses between
// batches: statement-ms is the time its statements took.
func BenchmarkPrune(b *testing.B) {
	ctx := context.Background()
	s, err := sqlite.Open(ctx, filepath.Join(b.TempDir(), "registry.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	const n = 300000
	old, recent := time.Unix(1_700_000_000, 0), time.Now()
	var idle, rs []registry.Registration
	for i := range n {
		r := registry.Registration{Node: fmt.Sprintf("%016x", uint64(i)*0x9e3779b97f4a7c15), Type: "fcm",
			Token: fmt.Sprintf("token-%0150d", i), Secret: fmt.Sprintf("%064x", i), Registered: old}
		switch {
		case i%10 == 0:
			idle = append(idle, r)
		case i%2 == 0:
			r.Renewed = recent
		default:
			r.LastSuccessfulPush = recent
		}
		rs = append(rs, r)
	}
	if _, err := s.Put(ctx, rs); err != nil {
		b.Fatal(err)
	}
	ts := &watched{Store: s}
	for b.Loop() {
		b.StopTimer()
		if _, err := s.Put(ctx, idle); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		if got, err := admin.Prune(ctx, ts, "", recent.Add(-time.Hour), nil); err != nil || got["fcm"] != len(idle) {
			b.Fatalf("pruned %v, %v; want %d", got, err, len(idle))
		}
	}
	b.ReportMetric(float64(ts.took.Milliseconds())/float64(b.N), "statement-ms/op")
}

// TestPrinterTableStreams: the table of `registrations list` reaches its
// output as it is printed, a page of rows at a time, rather than all at
// the end: a tabwriter holds every row until flushed, and with 1,000,000
// registrations the command printed nothing for 10 s and peaked at 870 MB.
func TestPrinterTableStreams(t *testing.T) {
	var out bytes.Buffer
	p := &admin.Printer{W: &out}
	const rows = 20000
	for i := range rows {
		r := registry.Registration{Node: fmt.Sprintf("node-%08d", i), Type: "apns", Token: fmt.Sprintf("%064x", i), Registered: time.Unix(1700000000, 0)}
		if err := p.Print(r); err != nil {
			t.Fatal(err)
		}
	}
	before := out.Len()
	if err := p.Flush(); err != nil {
		t.Fatal(err)
	}
	if held := out.Len() - before; held > out.Len()/10 {
		t.Errorf("%d of %d bytes held back until Flush: the table is buffered whole", held, out.Len())
	}
}

// pagesRead is a store that notes, at each page read, how much of the
// list's output was written before it.
type pagesRead struct {
	admin.Store
	out    *bytes.Buffer
	before []int
}

func (p *pagesRead) List(ctx context.Context, after string, limit int) ([]registry.Registration, error) {
	p.before = append(p.before, p.out.Len())
	return p.Store.List(ctx, after, limit)
}

// TestListFilteredShowsMatchesPageByPage: `registrations list` with a
// filter matched as the registry is read (-type) writes the rows a page
// of the registry matched before it reads the next page. The table was
// written every thousand printed rows: for a domain with 10,000
// registrations among 10,000,000 the first line came after 3.7 s, and
// for one with fewer than a thousand nothing came until the whole
// registry was read, 44 s later.
func TestListFilteredShowsMatchesPageByPage(t *testing.T) {
	ctx := context.Background()
	s := memory.New()
	var rs []registry.Registration
	for i := range 3500 {
		r := registry.Registration{Node: fmt.Sprintf("node-%05d", i), Type: "fcm", Token: "t", Secret: "s", Registered: time.Unix(1_800_000_000, 0)}
		if i == 7 {
			r.Type = "rare"
		}
		rs = append(rs, r)
	}
	if _, err := s.Put(ctx, rs); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	w := &pagesRead{Store: s, out: &out}
	if err := admin.List(ctx, w, admin.Filter{Type: "rare"}, &admin.Printer{W: &out}); err != nil {
		t.Fatal(err)
	}
	if len(w.before) < 2 {
		t.Fatalf("%d pages read, want more than one", len(w.before))
	}
	if w.before[1] == 0 {
		t.Fatalf("nothing written before the second page was read (%v bytes before each page read); the match is on the first", w.before)
	}
	if !bytes.Contains(out.Bytes(), []byte("node-00007")) || bytes.Count(out.Bytes(), []byte("\n")) != 2 {
		t.Fatalf("output:\n%s\nwant the header and node-00007", out.String())
	}
}

// domainOnly is a store whose whole-registry listing fails: what is
// read of it goes through ListDomain.
type domainOnly struct {
	admin.Store
	pages int
}

func (d *domainOnly) List(ctx context.Context, after string, limit int) ([]registry.Registration, error) {
	return nil, errors.New("read the whole registry")
}

func (d *domainOnly) ListDomain(ctx context.Context, domain, after string, limit int) ([]registry.Registration, error) {
	d.pages++
	return d.Store.ListDomain(ctx, domain, after, limit)
}

// TestListDomainThroughItsIndex: `registrations list -domain D` reads
// the domain's registrations through the store's ListDomain (its index)
// rather than the whole registry, page after page, and -type still
// narrows them: a domain of 1,000 among 200,000 registrations took
// 1.1 s on SQLite read whole.
func TestListDomainThroughItsIndex(t *testing.T) {
	ctx := context.Background()
	s := memory.New()
	var rs []registry.Registration
	for i := range 5000 {
		r := registry.Registration{Node: fmt.Sprintf("node-%05d", i), Type: "fcm", Token: "t", Secret: "s", Registered: time.Unix(1_800_000_000, 0)}
		if i%2 == 0 {
			r.Domain = "example.org"
		}
		if i%4 == 0 {
			r.Type = "apns"
		}
		rs = append(rs, r)
	}
	if _, err := s.Put(ctx, rs); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		f    admin.Filter
		rows int
	}{
		{admin.Filter{Domain: "example.org"}, 2500},
		{admin.Filter{Domain: "example.org", Type: "apns"}, 1250},
		{admin.Filter{Domain: "example.org", Type: "webpush"}, 0},
		{admin.Filter{Domain: "nowhere.org"}, 0},
	} {
		var out bytes.Buffer
		d := &domainOnly{Store: s}
		if err := admin.List(ctx, d, tt.f, &admin.Printer{W: &out, JSON: true}); err != nil {
			t.Fatalf("%+v: %v", tt.f, err)
		}
		if got := bytes.Count(out.Bytes(), []byte("\n")); got != tt.rows {
			t.Errorf("%+v: %d rows, want %d", tt.f, got, tt.rows)
		}
		// 2,500 rows of the domain: two full pages and a last one.
		if tt.f.Domain == "example.org" && d.pages != 3 {
			t.Errorf("%+v: %d pages read, want 3", tt.f, d.pages)
		}
	}
}

// Prune of one type deletes the idle registrations of that type only:
// `registrations prune -type apns` leaves the idle registrations of the
// other apps, which their users' servers still push to.
func TestPruneOnlyTheType(t *testing.T) {
	ctx := context.Background()
	s := memory.New()
	old := time.Now().Add(-400 * 24 * time.Hour)
	if _, err := s.Put(ctx, []registry.Registration{
		{Node: "idle-apns", Type: "apns", Token: "t1", Secret: "s", Registered: old},
		{Node: "idle-fcm", Type: "fcm", Token: "t2", Secret: "s", Registered: old},
	}); err != nil {
		t.Fatal(err)
	}
	n, err := admin.Prune(ctx, s, "apns", time.Now().Add(-180*24*time.Hour), nil)
	if err != nil || n["apns"] != 1 || n["fcm"] != 0 {
		t.Fatalf("pruned %v, %v; want apns 1 only", n, err)
	}
	if _, err := s.Get(ctx, "idle-fcm"); err != nil {
		t.Fatalf("prune of type apns deleted a registration of type fcm: %v", err)
	}
	if _, err := s.Get(ctx, "idle-apns"); err == nil {
		t.Fatal("the idle apns registration is still there")
	}
}

// The table of registrations shows the reason of a registration's last
// push error beside its time: "BadDeviceToken" or "Unregistered" tells
// the operator what the time alone does not.
func TestPrinterShowsLastErrorReason(t *testing.T) {
	var out bytes.Buffer
	p := &admin.Printer{W: &out}
	r := registry.Registration{Node: "n", Type: "apns", Token: "t", Secret: "s", Registered: time.Unix(1_800_000_000, 0),
		LastPushError: time.Unix(1_800_000_100, 0), LastErrorReason: "BadDeviceToken"}
	if err := p.Print(r); err != nil {
		t.Fatal(err)
	}
	if err := p.Flush(); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "BadDeviceToken") {
		t.Fatalf("the table lacks the last error's reason:\n%s", out.String())
	}
}
