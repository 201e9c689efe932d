package sqlite

import (
	"context"
	"fmt"
	"path/filepath"
)

// minLogPages is the fewest pages the write-ahead log grows to before it
// is copied into the registry, however little room the disk has left:
// below it, each commit of a few registrations would pay a checkpoint.
const minLogPages = 16

// fitLog keeps the write-ahead log within the room its disk has left:
// where that is less than the log may grow to (walCheckpoint pages) and
// what copying it into the registry's file then adds to that file, the
// log is copied, and its room reused, sooner. Otherwise, on a disk with
// less than about 80 MB free, the log took all of it: every commit after
// it failed, and the log could not be copied either, as the registry's
// file could not grow to take its pages, so nothing was stored again
// until room was freed by hand, however little the registrations needed.
//
// It sets the writer's wal_autocheckpoint, which the next commit
// acts on, and is called after a commit, when the writer's connection
// is free. Where the room is short, it sets it every time: a connection
// the pool opened anew starts with walCheckpoint.
func (s *Store) fitLog(ctx context.Context) {
	room, ok := freeBytes(filepath.Dir(s.path))
	if !ok {
		return
	}
	// The log may grow by as many pages as it holds at most, and a
	// checkpoint may grow the file by as many.
	pages := int64(walCheckpoint)
	if room < 2*pages*s.pageSize {
		pages = max(room/(2*s.pageSize), minLogPages)
	}
	if pages == walCheckpoint && s.logPages.Load() == walCheckpoint {
		return
	}
	if _, err := s.write.ExecContext(ctx, fmt.Sprintf("PRAGMA wal_autocheckpoint(%d)", pages)); err == nil {
		s.logPages.Store(pages)
	}
}
