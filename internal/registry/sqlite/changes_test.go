package sqlite_test

import (
	"context"
	"database/sql"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/push-appserver/push-appserver/internal/registry"
	"github.com/push-appserver/push-appserver/internal/registry/sqlite"
)

// feed runs s.Follow and lets the test wait for what it reports.
type feed struct {
	last    string // the change expected last, which may come again
	changed chan string
	live    chan bool
	done    chan error
}

func follow(t *testing.T, s *sqlite.Store) *feed {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	f := &feed{changed: make(chan string, 64), live: make(chan bool, 64), done: make(chan error, 1)}
	go func() { f.done <- s.Follow(ctx, func(n string) { f.changed <- n }, func(l bool) { f.live <- l }) }()
	t.Cleanup(func() {
		cancel()
		if err := <-f.done; err != nil {
			t.Errorf("Follow: %v", err)
		}
	})
	f.expectLive(t, true)
	return f
}

func (f *feed) expectLive(t *testing.T, want bool) {
	t.Helper()
	select {
	case l := <-f.live:
		if l != want {
			t.Fatalf("live(%v), want live(%v)", l, want)
		}
	case n := <-f.changed:
		t.Fatalf("changed %q, want live(%v)", n, want)
	case <-time.After(10 * time.Second):
		t.Fatalf("no live(%v)", want)
	}
}

// expect waits for the next change and returns how long it took. One
// statement may log a node twice (a replace is a delete and an insert):
// repeats of the node expected last are skipped.
func (f *feed) expect(t *testing.T, want string) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		select {
		case n := <-f.changed:
			if n == f.last && n != want {
				continue
			}
			if n != want {
				t.Fatalf("changed %q, want %q", n, want)
			}
			f.last = n
			return time.Since(start)
		case l := <-f.live:
			t.Fatalf("live(%v), want change of %q", l, want)
		case <-time.After(10 * time.Second):
			t.Fatalf("no change announced for %q", want)
		}
	}
}

// Follow reports what another handle on the same file changes, and what
// any other writer of the file changes, within FollowInterval or so; push
// status, which a push does not read, is not reported, nor are renewals.
func TestFollowSeesOtherWriters(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "registry.db")
	a, b := open(t, path), open(t, path)
	defer a.Close()
	defer b.Close()
	f := follow(t, b)

	var slowest time.Duration
	took := func(d time.Duration) { slowest = max(slowest, d) }
	r1 := registry.Registration{Node: "n1", Type: "apns", Token: "t", Secret: "s", Registered: time.Now()}
	if _, err := register(a, r1); err != nil {
		t.Fatal(err)
	}
	took(f.expect(t, "n1"))
	if err := a.UpdatePushStatus(ctx, []registry.PushStatus{{Node: "n1", At: time.Now(), Success: true}, {Node: "n1", At: time.Now(), Reason: "x"}}); err != nil {
		t.Fatal(err)
	}
	// Had the status been logged, n1 would come first.
	if _, err := register(a, registry.Registration{Node: "n2", Type: "apns", Token: "t", Secret: "s", Registered: time.Now()}); err != nil {
		t.Fatal(err)
	}
	took(f.expect(t, "n2"))
	// A renewal changes nothing a follower caches and is not logged: had
	// it been, n1 would come before n4.
	if _, err := register(a, registry.Registration{Node: "n1", Type: "apns", Token: "t", Secret: "s", Registered: time.Now()}); err != nil {
		t.Fatal(err)
	}
	if _, err := register(a, registry.Registration{Node: "n4", Type: "apns", Token: "t", Secret: "s", Registered: time.Now()}); err != nil {
		t.Fatal(err)
	}
	took(f.expect(t, "n4"))
	r1.Token = "t2"
	if _, err := register(a, r1); err != nil {
		t.Fatal(err)
	}
	took(f.expect(t, "n1"))
	if _, err := a.Delete(ctx, "n1", "apns"); err != nil {
		t.Fatal(err)
	}
	took(f.expect(t, "n1"))
	// An import replaces what is there.
	if _, err := a.Put(ctx, []registry.Registration{{Node: "n2", Type: "fcm", Token: "t3", Secret: "s3", Registered: time.Now()}}); err != nil {
		t.Fatal(err)
	}
	took(f.expect(t, "n2"))

	// Someone else entirely, as the sqlite3 shell would: plain SQL,
	// no store, none of its pragmas.
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec(`UPDATE registrations SET secret = 'changed' WHERE node = 'n2'`); err != nil {
		t.Fatal(err)
	}
	took(f.expect(t, "n2"))
	if _, err := db.Exec(`UPDATE registrations SET node = 'n3' WHERE node = 'n2'`); err != nil {
		t.Fatal(err)
	}
	took(f.expect(t, "n2"))
	took(f.expect(t, "n3"))
	if _, err := db.Exec(`DELETE FROM registrations`); err != nil {
		t.Fatal(err)
	}
	took(f.expect(t, "n3"))
	took(f.expect(t, "n4"))
	t.Logf("slowest change seen after %v", slowest)
	if slowest > 4*sqlite.FollowInterval {
		t.Errorf("a change took %v to be seen, want about %v", slowest, sqlite.FollowInterval)
	}
	select {
	case n := <-f.changed:
		t.Fatalf("unexpected change of %q", n)
	case <-time.After(3 * sqlite.FollowInterval):
	}
}

// The changes of one commit, read in one poll, are reported each with
// its own node, whole and in the order they were made: the follower
// copies a poll's nodes into one string and cuts it at their ends.
func TestFollowManyChangesInOnePoll(t *testing.T) {
	path := filepath.Join(t.TempDir(), "registry.db")
	s := open(t, path)
	defer s.Close()
	f := follow(t, s)
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	nodes := []string{"a", "bb", "", "ñödé", strings.Repeat("x", 300), "c"}
	tx, err := db.Begin()
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range nodes {
		if _, err := tx.Exec(`INSERT INTO registrations (node, type, token, secret, registered) VALUES (?, 'apns', 't', 's', 1)`, n); err != nil {
			t.Fatal(err)
		}
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	for _, n := range nodes {
		f.expect(t, n)
	}
	select {
	case n := <-f.changed:
		t.Fatalf("unexpected change of %q", n)
	case <-time.After(2 * sqlite.FollowInterval):
	}
}

// A poll ends its read transaction before it reports what it read: one
// left open would keep every checkpoint from copying the log past it, and
// the log would grow without end.
func TestFollowEndsItsReads(t *testing.T) {
	path := filepath.Join(t.TempDir(), "registry.db")
	s := open(t, path)
	defer s.Close()
	f := follow(t, s)
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for _, n := range []string{"one", "two"} {
		if _, err := register(s, registry.Registration{Node: n, Type: "apns", Token: "t", Secret: "s", Registered: time.Now()}); err != nil {
			t.Fatal(err)
		}
		f.expect(t, n)
		var busy, logged, copied int
		if err := db.QueryRow(`PRAGMA wal_checkpoint(TRUNCATE)`).Scan(&busy, &logged, &copied); err != nil {
			t.Fatal(err)
		}
		if busy != 0 {
			t.Fatalf("after the poll that read %s, a checkpoint was blocked (busy %d, %d of %d frames copied)", n, busy, copied, logged)
		}
	}
}

// A follower that finds changes gone before it read them (pruned while it
// was stopped) says so by going live anew, so its caller forgets
// everything.
func TestFollowMissedChanges(t *testing.T) {
	path := filepath.Join(t.TempDir(), "registry.db")
	s := open(t, path)
	defer s.Close()
	f := follow(t, s)
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	// One commit that logs a change and loses it.
	if _, err := db.Exec(`BEGIN;
		INSERT INTO registrations (node, type, token, secret, registered) VALUES ('lost', 'apns', 't', 's', 1);
		DELETE FROM registration_changes;
		COMMIT`); err != nil {
		t.Fatal(err)
	}
	f.expectLive(t, false)
	f.expectLive(t, true)
	if _, err := register(s, registry.Registration{Node: "after", Type: "apns", Token: "t", Secret: "s", Registered: time.Now()}); err != nil {
		t.Fatal(err)
	}
	f.expect(t, "after")
}

// The follower prunes the log: what it saw goes once older than the
// retention, and a new follower starts after what is left.
func TestFollowPrunes(t *testing.T) {
	path := filepath.Join(t.TempDir(), "registry.db")
	s := open(t, path)
	defer s.Close()
	sqlite.SetRetention(s, time.Second)
	f := follow(t, s)
	for _, n := range []string{"p1", "p2"} {
		if _, err := register(s, registry.Registration{Node: n, Type: "apns", Token: "t", Secret: "s", Registered: time.Now()}); err != nil {
			t.Fatal(err)
		}
		f.expect(t, n)
	}
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	count := func() int {
		var n int
		if err := db.QueryRow(`SELECT COUNT(*) FROM registration_changes`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	if n := count(); n != 2 {
		t.Fatalf("%d changes logged, want 2", n)
	}
	deadline := time.Now().Add(10 * time.Second)
	for count() != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d changes still logged", count())
		}
		time.Sleep(100 * time.Millisecond)
	}
	// An emptied log does not restart the numbering: a second follower
	// does not mistake the next change for a gap.
	g := follow(t, s)
	if _, err := s.Delete(context.Background(), "p1", "apns"); err != nil {
		t.Fatal(err)
	}
	f.expect(t, "p1")
	g.expect(t, "p1")
}

// A prune that fails (the disk is full) does not end the feed: the
// follower goes on reporting changes, so the cache it keeps coherent
// stays on, and the prune is done once it can be.
func TestFollowOutlivesFailedPrune(t *testing.T) {
	path := filepath.Join(t.TempDir(), "registry.db")
	s := open(t, path)
	defer s.Close()
	sqlite.SetRetention(s, 100*time.Millisecond)
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	// Fails every prune, as a full disk fails its write.
	if _, err := db.Exec(`CREATE TRIGGER no_prune BEFORE DELETE ON registration_changes BEGIN SELECT RAISE(ABORT, 'disk full'); END`); err != nil {
		t.Fatal(err)
	}
	f := follow(t, s)
	for i := range 3 {
		n := fmt.Sprintf("n%d", i)
		if _, err := register(s, registry.Registration{Node: n, Type: "apns", Token: "t", Secret: "s", Registered: time.Now()}); err != nil {
			t.Fatal(err)
		}
		f.expect(t, n)
		time.Sleep(300 * time.Millisecond) // a prune or more in between
	}
	select {
	case l := <-f.live:
		t.Fatalf("live(%v) while prunes failed", l)
	default:
	}
	if _, err := db.Exec(`DROP TRIGGER no_prune`); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		var n int
		if err := db.QueryRow(`SELECT COUNT(*) FROM registration_changes`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d changes still logged after prunes could succeed again", n)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestFollowPrunesLargeLogInBatches: a change log grown large while no
// server followed it (an import, a prune with the server stopped) is
// pruned a batch at a time, each a statement of its own under the write
// lock, rather than in one that registrations wait for (1,000,000
// changes: a registration waited 3.3 s); the follower goes on until it
// is all gone.
func TestFollowPrunesLargeLogInBatches(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "registry.db")
	s := open(t, path)
	defer s.Close()
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	logged := 2*sqlite.ChangesPruneBatch + 5000
	if _, err := db.Exec(`WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM c WHERE i < ?)
		INSERT INTO registration_changes (node) SELECT printf('imported-%08d', i) FROM c`, logged); err != nil {
		t.Fatal(err)
	}
	count := func() int {
		var n int
		if err := db.QueryRow(`SELECT COUNT(*) FROM registration_changes`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	// One batch deletes a batch's worth, and says whether more are left.
	done, err := sqlite.PruneChanges(ctx, s, int64(logged))
	if err != nil || done {
		t.Fatalf("first batch: done %v, %v", done, err)
	}
	if n := count(); n != logged-sqlite.ChangesPruneBatch {
		t.Fatalf("%d of %d changes left after one batch, want %d", n, logged, logged-sqlite.ChangesPruneBatch)
	}
	// The follower takes the rest, a batch a poll.
	sqlite.SetRetention(s, time.Second)
	follow(t, s)
	deadline := time.Now().Add(20 * time.Second)
	for count() != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d changes still logged", count())
		}
		time.Sleep(100 * time.Millisecond)
	}
}
