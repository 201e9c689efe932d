package postgres_test

import (
	"context"
	"testing"
	"time"

	"github.com/push-appserver/push-appserver/internal/registry/postgres"
)

// A DBA's idle_session_timeout on the database (or the role) ends every
// session that waits for a statement longer than that. The change feed's
// LISTEN connection waits for notifications, not statements, and the
// store must keep it: ended, it takes the feed down, so every instance
// drops its cache and answers the registrations it was writing meanwhile
// as unconfirmed, again at every timeout while nobody writes.
func TestFeedSurvivesIdleSessionTimeout(t *testing.T) {
	ctx := context.Background()
	dsn := pg.DB(t)
	setOnDB(t, dsn, "idle_session_timeout = '500ms'")
	s := open(t, dsn)
	// Six times the timeout, with nothing written: the feed stays.
	feedStaysLive(t, s, 3*time.Second, "idle_session_timeout ended its connection")
	// And the pool's connections, idle as long, still serve.
	if _, err := s.Count(ctx); err != nil {
		t.Fatalf("a read after the pool was idle past idle_session_timeout: %v", err)
	}
}

// feedStaysLive follows s's change feed until the test ends, waits for it
// to go live, and fails if it goes down within stay; why says what would
// have taken it down.
func feedStaysLive(t *testing.T, s *postgres.Store, stay time.Duration, why string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	live := make(chan bool, 64)
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.Follow(ctx, func(string) {}, func(l bool) { live <- l })
	}()
	t.Cleanup(func() { cancel(); <-done })
	select {
	case <-live:
	case <-time.After(10 * time.Second):
		t.Fatal("the change feed never went live")
	}
	select {
	case <-live:
		t.Fatalf("the change feed went down: %s", why)
	case <-time.After(stay):
	}
}
