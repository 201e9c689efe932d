package sqlite_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/push-appserver/push-appserver/internal/registry"
	"github.com/push-appserver/push-appserver/internal/registry/sqlite"
)

// A registration is answered only once the log holding it is synced: a
// sync that fails is the registration's error. The failed batch's frames
// stay in the log, and Linux may have dropped their pages without a word
// at the next fsync: a recovery would stop there and lose every commit
// after it. So the next registration is answered only once the whole log
// is copied into the registry, and the log emptied; after that the
// writer leaves the log's sync to the syncer again.
func TestRegistrationWaitsForItsLogSync(t *testing.T) {
	path := filepath.Join(t.TempDir(), "registry.db")
	s := open(t, path)
	reg := func(node string) error {
		_, err := register(s, registry.Registration{Node: node, Type: "apns", Token: "ab", Secret: "secret-" + node, Registered: time.Now()})
		return err
	}
	// The first commit on a log syncs it itself (it may be the one that
	// created it, whose directory must be synced too).
	if err := reg("first"); err != nil {
		t.Fatal(err)
	}
	failed := errors.New("I/O error")
	syncs := 0
	sqlite.SetLogSync(s, func(f *os.File) error {
		syncs++
		if syncs == 1 {
			return failed
		}
		return f.Sync()
	})
	if err := reg("second"); !errors.Is(err, failed) {
		t.Fatalf("registration whose log failed to sync: %v, want %v", err, failed)
	}
	if syncs != 1 {
		t.Fatalf("log synced %d times by the syncer, want 1", syncs)
	}
	if err := reg("third"); err != nil {
		t.Fatalf("registration after a failed sync of the log: %v", err)
	}
	if syncs != 1 {
		t.Fatalf("log synced %d times by the syncer after it failed, want no more", syncs)
	}
	st, err := os.Stat(path + "-wal")
	if err != nil {
		t.Fatal(err)
	}
	if st.Size() != 0 {
		t.Fatalf("log after the registration that followed a failed sync: %d bytes, want it copied into the registry and emptied", st.Size())
	}
	if err := reg("fourth"); err != nil {
		t.Fatal(err)
	}
	if syncs != 2 {
		t.Fatalf("log synced %d times by the syncer once emptied, want 2: its sync left to the syncer again", syncs)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = open(t, path)
	for _, node := range []string{"third", "fourth"} {
		if _, err := s.Get(context.Background(), node); err != nil {
			t.Fatalf("registration %s answered after a failed sync, after a reopen: %v", node, err)
		}
	}
}

// While the log of one batch is being synced, the writer commits the
// next: the disk's latency is no longer the writer's. The second
// registration is in the registry (readers see it) while the first is
// still waiting for its sync, and neither is answered before its log is
// synced.
func TestNextBatchCommitsWhileLogSyncs(t *testing.T) {
	ctx := context.Background()
	s := open(t, filepath.Join(t.TempDir(), "registry.db"))
	reg := func(node string) error {
		_, err := register(s, registry.Registration{Node: node, Type: "apns", Token: "ab", Secret: "secret-" + node, Registered: time.Now()})
		return err
	}
	if err := reg("first"); err != nil {
		t.Fatal(err)
	}
	syncing := make(chan struct{}, 2)
	release := make(chan struct{})
	sqlite.SetLogSync(s, func(f *os.File) error {
		syncing <- struct{}{}
		<-release
		return f.Sync()
	})
	answered := make(chan error, 2)
	go func() { answered <- reg("second") }()
	select {
	case <-syncing:
	case err := <-answered:
		t.Fatalf("registration answered (%v) before its log was synced", err)
	case <-time.After(10 * time.Second):
		t.Fatal("the log of the registration's batch was never handed to the syncer")
	}
	go func() { answered <- reg("third") }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := s.Get(ctx, "third"); err == nil {
			break
		} else if !errors.Is(err, registry.ErrNotFound) || time.Now().After(deadline) {
			t.Fatalf("second batch not committed while the first one's log was syncing: %v", err)
		}
		time.Sleep(time.Millisecond)
	}
	select {
	case err := <-answered:
		t.Fatalf("registration answered (%v) while the log was still syncing", err)
	default:
	}
	close(release)
	for range 2 {
		if err := <-answered; err != nil {
			t.Fatal(err)
		}
	}
}
