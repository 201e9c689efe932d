package ratelimit

import "time"

// SetClock makes the limiter read the time from now.
func (l *Limiter[K]) SetClock(now func() time.Time) { l.now = now }

// Tracked returns how many keys have a bucket of their own.
func (l *Limiter[K]) Tracked() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.keys)
}

// Groups returns how many groups the limiter knows.
func (l *Limiter[K]) Groups() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.groups)
}
