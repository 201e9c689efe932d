package sqlite

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/push-appserver/push-appserver/internal/registry/groupcommit"
)

// SetHooks makes the store's group-commit writer report to the test.
func SetHooks(s *Store, queued func(), batchStart func(first string), committed func(nodes []string)) {
	s.gc.Hooks = groupcommit.Hooks{Queued: queued, BatchStart: batchStart, Committed: committed}
}

// SetRetention sets how long the change log keeps a change.
func SetRetention(s *Store, d time.Duration) { s.retention = d }

// PruneChanges is one batch of the change log's prune, up to seq.
func PruneChanges(ctx context.Context, s *Store, seq int64) (done bool, err error) {
	return s.pruneChanges(ctx, seq)
}

// ChangesPruneBatch is how many changes one batch of the prune deletes.
const ChangesPruneBatch = pruneBatch

// WritePragma reports the write connection's setting of an integer
// pragma such as wal_autocheckpoint.
func WritePragma(s *Store, name string) (int, error) {
	var n int
	err := s.write.QueryRow(`PRAGMA ` + name).Scan(&n)
	return n, err
}

// ParseTarget is parseTarget, for its test.
var ParseTarget = parseTarget

const ReleasedPushes = releasedPushes

// CopyDir is where OpenCopy put s's copy.
func CopyDir(s *Store) string { return s.removeOnClose }

// SetBusyTimeout sets how long the writer's connection waits for a
// write lock held by another connection.
func SetBusyTimeout(s *Store, d time.Duration) error {
	_, err := s.write.Exec(fmt.Sprintf(`PRAGMA busy_timeout = %d`, d.Milliseconds()))
	return err
}

// SetLogSync makes the log syncer sync the log with sync, before any
// registration.
func SetLogSync(s *Store, sync func(f *os.File) error) { s.logs.syncFile = sync }
