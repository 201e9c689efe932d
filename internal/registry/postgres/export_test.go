package postgres

// SetHooks makes the store's group-commit writer report to the test.
func SetHooks(s *Store, queued func(), batchStart func(first string), committed func(nodes []string)) {
	s.gc.hooks = testHooks{queued: queued, batchStart: batchStart, committed: committed}
}
