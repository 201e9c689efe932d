package sqlite

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	lib "modernc.org/sqlite/lib"

	"github.com/push-appserver/push-appserver/internal/registry"
)

// After a sync of the log fails, the failed batch's frames may never
// reach the disk (Linux drops the pages a failed fsync did not write and
// reports nothing at the next one), and the frames committed after them
// are on disk past a gap. A recovery then stops at the gap and serves
// the pages of the commits before it from the log, over the newer ones a
// checkpoint copied into the registry: the registry reads as of the last
// commit before the failure. So a registration committed after the
// failure is on disk only once the log that holds the gap is gone from
// the disk too; its truncation is a change of the file's size, on disk
// only once the log is synced. That holds for a registration stored
// alone too: a batch whose own commit fails (its sync fails too, or the
// disk is full) is stored again one registration at a time, after the
// same gap.
//
// The test keeps, as the disk, what the log held at each sync, except
// for the bytes the failed sync was to write, which keep what they held
// before it as long as the file still holds what was written then. It
// cuts the power as soon as the registration after the failure is
// answered.
func TestRegistrationAfterFailedSyncSurvivesPowerCut(t *testing.T) {
	for _, tc := range []struct {
		name string
		// alone makes SQLite's own sync of the log fail once, in the
		// commit of the batch after the failed sync.
		alone bool
	}{
		{"in a batch", false},
		{"stored alone", true},
	} {
		t.Run(tc.name, func(t *testing.T) { registerAfterFailedSyncAndCutPower(t, tc.alone) })
	}
}

func registerAfterFailedSyncAndCutPower(t *testing.T, alone bool) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "registry.db")
	s, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	var (
		mu        sync.Mutex
		durable   []byte // the log on disk
		failedNow []byte // the log as the failed sync found it
		failedOld []byte // the log on disk then
		failRoot  bool   // SQLite's next sync of the log fails
	)
	snapshot := func() {
		now, err := os.ReadFile(path + "-wal")
		if err != nil {
			panic(err)
		}
		disk := bytes.Clone(now)
		for i := range disk {
			if i < len(failedNow) && failedNow[i] == now[i] {
				// Written before the failed sync and not since:
				// what the disk held then.
				if i < len(failedOld) {
					disk[i] = failedOld[i]
				} else {
					disk[i] = 0
				}
			}
		}
		durable = disk
	}
	hookRootLogSync(t, s, func(sync func() int32) int32 {
		mu.Lock()
		defer mu.Unlock()
		if failRoot {
			failRoot = false
			return lib.SQLITE_IOERR_FSYNC
		}
		snapshot()
		return sync()
	})
	failed := errors.New("I/O error")
	fail := false
	s.logs.syncFile = func(f *os.File) error {
		mu.Lock()
		defer mu.Unlock()
		if fail {
			fail = false
			now, err := os.ReadFile(path + "-wal")
			if err != nil {
				panic(err)
			}
			failedNow, failedOld = now, durable
			return failed
		}
		snapshot()
		return f.Sync()
	}

	reg := func(node string) error {
		r := registry.Registration{Node: node, Type: "apns", Token: "t-" + node, Secret: "s", Registered: time.Now()}
		_, err := s.Register(ctx, node, registry.Renew(r))
		return err
	}
	var busy, logFrames, done int
	if err := s.write.QueryRowContext(ctx, "PRAGMA wal_checkpoint(TRUNCATE)").Scan(&busy, &logFrames, &done); err != nil || busy != 0 {
		t.Fatalf("checkpoint: busy %d (%v)", busy, err)
	}
	const n = 5
	for i := range n {
		if err := reg(fmt.Sprintf("before-%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	mu.Lock()
	fail = true
	mu.Unlock()
	if err := reg("failed"); !errors.Is(err, failed) {
		t.Fatalf("registration whose log failed to sync: %v, want %v", err, failed)
	}
	mu.Lock()
	failRoot = alone
	mu.Unlock()
	if err := reg("after"); err != nil {
		t.Fatalf("registration after a failed sync: %v", err)
	}
	mu.Lock()
	tried := !failRoot
	mu.Unlock()
	if !tried {
		t.Fatal("the batch after the failed sync did not sync the log in its commit")
	}

	// The power is cut: the registry's file as it is, the log as last
	// synced.
	crashDir := t.TempDir()
	db, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	wal := bytes.Clone(durable)
	mu.Unlock()
	if err := os.WriteFile(filepath.Join(crashDir, "registry.db"), db, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(crashDir, "registry.db-wal"), wal, 0o600); err != nil {
		t.Fatal(err)
	}
	after, err := Open(ctx, filepath.Join(crashDir, "registry.db"))
	if err != nil {
		t.Fatalf("registry after a power cut: %v", err)
	}
	defer after.Close()
	for _, node := range []string{"before-0", fmt.Sprintf("before-%d", n-1), "after"} {
		if _, err := after.Get(ctx, node); err != nil {
			t.Errorf("%s, answered, after a power cut: %v", node, err)
		}
	}
	var ok string
	if err := after.read.QueryRowContext(ctx, `PRAGMA integrity_check`).Scan(&ok); err != nil || ok != "ok" {
		t.Errorf("integrity_check after the power cut: %q (%v)", ok, err)
	}
}
