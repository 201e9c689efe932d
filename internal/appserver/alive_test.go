package appserver

import (
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/push-appserver/push-appserver/internal/registry/memory"
)

// TestAlive: Alive does not return while any of the core's locks is held,
// and returns once it is let go; but not for the salt's lock, which a
// registration holds while it reads the salt from a registry that may
// hang.
func TestAlive(t *testing.T) {
	s, err := New(memory.New(), nil, Options{}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		mu   *sync.Mutex
	}{
		{"push outcomes", &s.status.mu},
		{"throttle", &s.throttle.mu},
		{"redelivery", &s.redeliver.mu},
		{"cache outage", &s.cache.outageMu},
		{"cache generation", &s.cache.gens[len(s.cache.gens)-1].mu},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.mu.Lock()
			done := make(chan struct{})
			go func() { s.Alive(); close(done) }()
			select {
			case <-done:
				t.Fatal("Alive returned while the lock was held")
			case <-time.After(50 * time.Millisecond):
			}
			tc.mu.Unlock()
			select {
			case <-done:
			case <-time.After(5 * time.Second):
				t.Fatal("Alive did not return once the lock was let go")
			}
		})
	}
	s.saltMu.Lock()
	defer s.saltMu.Unlock()
	done := make(chan struct{})
	go func() { s.Alive(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Alive waited for the salt's lock, which is held while the registry is read")
	}
}
