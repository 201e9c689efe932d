package appserver_test

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/push-appserver/push-appserver/internal/appserver"
	"github.com/push-appserver/push-appserver/internal/registry"
	"github.com/push-appserver/push-appserver/internal/registry/memory"
	"github.com/push-appserver/push-appserver/internal/testutil/fakeclock"
	"github.com/push-appserver/push-appserver/internal/testutil/logbuf"
)

// readOnlyHold is a registry that refuses to keep pushes while refuse is
// set, as PostgreSQL does once it is read-only (a standby behind a stale
// address, default_transaction_read_only).
type readOnlyHold struct {
	registry.Store
	refuse *atomic.Bool
}

func (s readOnlyHold) KeepPushes(ctx context.Context, owner string, lease time.Duration, renew bool, put []registry.HeldPush, del []string) error {
	if s.refuse.Load() {
		return errors.New("ERROR: cannot execute INSERT in a read-only transaction (SQLSTATE 25006)")
	}
	return s.Store.KeepPushes(ctx, owner, lease, renew, put, del)
}

// heldFileService starts a service redelivering for a minute over store,
// keeping at a stop what the registry refuses in file, on clock; it
// returns the service, its push service, the stop and its log.
func heldFileService(t *testing.T, store registry.Store, file string, clock *fakeclock.Clock) (*appserver.Service, *scripted, func(), *logbuf.Buffer) {
	t.Helper()
	b := &scripted{answers: map[string]error{}}
	log := &logbuf.Buffer{}
	svc, err := appserver.New(store, testApps(b), appserver.Options{Redelivery: time.Minute, HeldFile: file, Now: clock.Now},
		slog.New(slog.NewTextHandler(log, nil)))
	if err != nil {
		t.Fatal(err)
	}
	svc.SetRedeliveryTiming(20*time.Millisecond, 5*time.Millisecond)
	return svc, b, running(t, svc), log
}

// pushFailing registers node with token and pushes to it while its push
// service is out: the push waits for redelivery.
func pushFailing(t *testing.T, svc *appserver.Service, b *scripted, node, token string) {
	t.Helper()
	ctx := context.Background()
	reg, err := svc.Register(ctx, appserver.Caller{}, "fcm", node, token)
	if err != nil {
		t.Fatal(err)
	}
	b.set(token, outage)
	if err := svc.Push(ctx, appserver.PushRequest{Node: node, Secret: reg.Secret}); !errors.Is(err, appserver.ErrPushFailed) {
		t.Fatalf("push during the outage: %v", err)
	}
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// TestHeldFileKeepsPushesTheRegistryRefused guards what a stop does when
// the registry refuses writes: the waiting pushes go to a file of mode
// 0600 (they carry tokens) rather than being dropped, the next start
// sends them, and the file stays until the registry holds them.
func TestHeldFileKeepsPushesTheRegistryRefused(t *testing.T) {
	file := filepath.Join(t.TempDir(), "data", "held-pushes.json")
	refuse := &atomic.Bool{}
	refuse.Store(true)
	store := readOnlyHold{memory.New(), refuse}
	clock := fakeclock.New(time.Now())

	svc, b, stop, log := heldFileService(t, store, file, clock)
	pushFailing(t, svc, b, "n1", "t1")
	pushFailing(t, svc, b, "n2", "t2")
	stop()
	if s := svc.RedeliveryStats(); s.Dropped != 0 {
		t.Fatalf("pushes kept in the file counted as dropped: %+v\n%s", s, log)
	}
	fi, err := os.Stat(file)
	if err != nil {
		t.Fatalf("no held file after a stop the registry refused: %v\n%s", err, log)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("held file mode %v, want 0600", fi.Mode().Perm())
	}

	// The next start, the registry still read-only and the push
	// service still out: the pushes are tried at once, and the file
	// stays, since nothing but it holds them.
	svc, b, stop, log = heldFileService(t, store, file, clock)
	b.set("t1", outage)
	b.set("t2", outage)
	eventually(t, func() bool { return sentTo(b, "t1") == 1 && sentTo(b, "t2") == 1 }, func() string {
		return "the pushes of the held file were not tried at the start:\n" + log.String()
	})
	waitStats(t, svc, func(s appserver.RedeliveryStats) bool { return s.Pending == 2 })
	if !exists(file) {
		t.Fatal("the held file was removed while only it held its pushes")
	}
	// The registry takes writes: the pushes are written there, and the
	// file goes.
	refuse.Store(false)
	eventually(t, func() bool { return !exists(file) }, func() string {
		return "the held file stays once the registry holds its pushes:\n" + log.String()
	})
	b.set("t1", nil)
	b.set("t2", nil)
	clock.Advance(time.Second) // past the backoff, within the window
	waitStats(t, svc, func(s appserver.RedeliveryStats) bool { return s.Delivered == 2 && s.Pending == 0 })
	stop()
	if exists(file) {
		t.Fatal("a held file after a stop with nothing waiting")
	}
}

// TestHeldFileExpiredWhileStopped guards the deadlines of the file's
// pushes: one whose window passed while the server was stopped is
// dropped, with its own reason, and never sent; one still within its
// window is sent.
func TestHeldFileExpiredWhileStopped(t *testing.T) {
	file := filepath.Join(t.TempDir(), "held-pushes.json")
	refuse := &atomic.Bool{}
	refuse.Store(true)
	store := readOnlyHold{memory.New(), refuse}
	clock := fakeclock.New(time.Now())

	svc, b, stop, _ := heldFileService(t, store, file, clock)
	pushFailing(t, svc, b, "old", "t-old")
	clock.Advance(50 * time.Second)
	pushFailing(t, svc, b, "new", "t-new")
	stop()
	clock.Advance(30 * time.Second) // old's minute has passed, not new's

	refuse.Store(false)
	svc, b, stop, log := heldFileService(t, store, file, clock)
	waitStats(t, svc, func(s appserver.RedeliveryStats) bool { return s.Delivered == 1 && s.Pending == 0 })
	eventually(t, func() bool { return !exists(file) }, func() string { return "the held file stays:\n" + log.String() })
	stop()
	if n := sentTo(b, "t-old"); n != 0 {
		t.Fatalf("a push whose window passed while stopped was sent %d times", n)
	}
	if n := sentTo(b, "t-new"); n != 1 {
		t.Fatalf("the push within its window was sent %d times", n)
	}
	d := svc.RedeliveryDrops()
	if d[appserver.RedeliveryDrop{App: "fcm", Reason: appserver.DropExpiredStopped}] != 1 || svc.RedeliveryStats().Dropped != 1 {
		t.Fatalf("drops: %v", d)
	}
	if !strings.Contains(log.String(), "expired_while_stopped=1") {
		t.Fatalf("the log does not say a push expired while stopped:\n%s", log)
	}
}

// TestUnreadableHeldFileSetAside guards the start against a held file it
// cannot read: the log says so as an error, the file is renamed aside as
// it was (never deleted), and the server serves.
func TestUnreadableHeldFileSetAside(t *testing.T) {
	for _, tc := range []struct{ name, content string }{
		{"not JSON", "\x00\x01garbage"},
		{"cut short", `{"version":1,"written":"2025-01-01T00:00:00Z","pushes":[` + "\n" + `{"failed":"2025-01-01T00:00:00Z","dead`},
		{"another version", `{"version":2,"pushes":[]}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			file := filepath.Join(dir, "held-pushes.json")
			if err := os.WriteFile(file, []byte(tc.content), 0o600); err != nil {
				t.Fatal(err)
			}
			svc, b, stop, log := heldFileService(t, memory.New(), file, fakeclock.New(time.Now()))
			eventually(t, func() bool { return !exists(file) }, func() string { return "the unreadable file stays where it was:\n" + log.String() })
			aside, _ := filepath.Glob(file + ".unreadable-*")
			if len(aside) != 1 {
				t.Fatalf("set aside as %v", aside)
			}
			if got, err := os.ReadFile(aside[0]); err != nil || string(got) != tc.content {
				t.Fatalf("the file set aside holds %q (%v)", got, err)
			}
			// Logged once the file is set aside, so waited for.
			eventually(t, func() bool {
				return strings.Contains(log.String(), "level=ERROR") && strings.Contains(log.String(), "cannot be read")
			}, func() string { return "no error in the log:\n" + log.String() })
			ctx := context.Background()
			reg, err := svc.Register(ctx, appserver.Caller{}, "fcm", "n1", "t1")
			if err != nil {
				t.Fatal(err)
			}
			if err := svc.Push(ctx, appserver.PushRequest{Node: "n1", Secret: reg.Secret}); err != nil || sentTo(b, "t1") != 1 {
				t.Fatalf("push after the start: %v", err)
			}
			stop()
		})
	}
}

// TestHeldFileRemovedWithRedeliveryOff: a server with redelivery off
// never sends the file's pushes, which carry tokens; it removes the file.
func TestHeldFileRemovedWithRedeliveryOff(t *testing.T) {
	file := filepath.Join(t.TempDir(), "held-pushes.json")
	refuse := &atomic.Bool{}
	refuse.Store(true)
	store := readOnlyHold{memory.New(), refuse}
	svc, b, stop, _ := heldFileService(t, store, file, fakeclock.New(time.Now()))
	pushFailing(t, svc, b, "n1", "t1")
	stop()
	if !exists(file) {
		t.Fatal("no held file")
	}
	off, err := appserver.New(store, testApps(b), appserver.Options{Redelivery: -1, HeldFile: file}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	running(t, off)
	eventually(t, func() bool { return !exists(file) }, func() string { return "the held file stays with redelivery off" })
}
