package postgres

import (
	"context"
	"io/fs"
	"time"

	"github.com/push-appserver/push-appserver/internal/registry/groupcommit"
)

// SetHooks makes the store's group-commit writer report to the test.
func SetHooks(s *Store, queued func(), batchStart func(first string), committed func(nodes []string)) {
	s.gc.Hooks = groupcommit.Hooks{Queued: queued, BatchStart: batchStart, Committed: committed}
}

// Setting is the value of a run-time parameter on one of s's pooled
// connections.
func Setting(ctx context.Context, s *Store, name string) (string, error) {
	var v string
	err := s.pool.QueryRow(ctx, `SELECT current_setting($1)`, name).Scan(&v)
	return v, err
}

// SetProbes times the change feed's probes: after quiet for heartbeat,
// answered within wait.
func SetProbes(s *Store, heartbeat, wait time.Duration) { s.heartbeat, s.probeWait = heartbeat, wait }

// MigrateFrom brings s's schema up to the migrations in fsys (its
// migrations/*.sql).
func MigrateFrom(ctx context.Context, s *Store, fsys fs.FS) error { return s.migrateFrom(ctx, fsys) }

// Migrations are the migrations the package embeds, as Open applies them.
func Migrations() fs.FS { return migrations }
