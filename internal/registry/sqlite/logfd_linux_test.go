package sqlite

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/push-appserver/push-appserver/internal/registry"
)

// Linux reports a failed writeback of a file's pages at the next fsync
// of each open file description, once: the descriptions that fsync sees
// it, the others no longer do. The writer's connection syncs the log
// itself (the commits of every other write, such as the push outcomes
// written after each push, and its checkpoints), beside the log syncer.
// Were the syncer's descriptor a copy of SQLite's, one description, a
// failed writeback that SQLite's sync saw first would leave the
// syncer's sync without an error: the batches whose frames were lost
// would be answered OK, the failure never noted, and every batch after
// them answered OK from behind the gap, lost to a power cut until the
// log restarts. So the syncer's descriptor is an open file description
// of its own. The test tells them apart by their status flags, which
// belong to the description.
func TestLogSyncerHasItsOwnOpenFileDescription(t *testing.T) {
	ctx := context.Background()
	s, err := Open(ctx, filepath.Join(t.TempDir(), "registry.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, node := range []string{"first", "second"} {
		r := registry.Registration{Node: node, Type: "apns", Token: "t-" + node, Secret: "s", Registered: time.Now()}
		if _, err := s.Register(ctx, node, registry.Renew(r)); err != nil {
			t.Fatal(err)
		}
	}
	var sqliteFD, syncerFD int
	if err := s.withRegWriter(ctx, func(w *regWriter) error {
		wf, _ := w.log()
		if wf == nil || w.logFile == nil {
			t.Fatal("the second registration's log was not handed to the syncer")
		}
		sqliteFD, syncerFD = int(wf.fd), int(w.logFile.Fd())
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	before, err := unix.FcntlInt(uintptr(sqliteFD), unix.F_GETFL, 0)
	if err != nil {
		t.Fatal(err)
	}
	// O_NONBLOCK changes nothing for a regular file's reads and writes.
	syncerFlags, err := unix.FcntlInt(uintptr(syncerFD), unix.F_GETFL, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := unix.FcntlInt(uintptr(syncerFD), unix.F_SETFL, syncerFlags^unix.O_NONBLOCK); err != nil {
		t.Fatal(err)
	}
	after, err := unix.FcntlInt(uintptr(sqliteFD), unix.F_GETFL, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := unix.FcntlInt(uintptr(syncerFD), unix.F_SETFL, syncerFlags); err != nil {
		t.Fatal(err)
	}
	if after != before {
		t.Fatal("the log syncer's descriptor shares SQLite's open file description: a failed writeback SQLite's sync saw is not reported to the syncer")
	}
}
