package postgres

import "github.com/push-appserver/push-appserver/internal/registry/groupcommit"

// SetHooks makes the store's group-commit writer report to the test.
func SetHooks(s *Store, queued func(), batchStart func(first string), committed func(nodes []string)) {
	s.gc.Hooks = groupcommit.Hooks{Queued: queued, BatchStart: batchStart, Committed: committed}
}
