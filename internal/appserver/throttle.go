package appserver

import (
	"sync"
	"time"
)

// Decision is what the throttle says about one push.
type decision int

const (
	// Send now: the first push of a burst.
	sendNow decision = iota
	// Delay: send at the start of the next window, so the device still
	// wakes up after the last message of a burst.
	delaySend
	// Refuse: a push is already waiting for the next window.
	refuse
)

// Throttle limits pushes per key (node and priority) the way
// mod_push_appserver's zthrottle does: at most one push per distance, the
// first of a burst at once, one more at the start of the next window, and
// the ones in between refused. A push to the same device carries no data,
// so the delayed one stands in for all that were refused.
// Keys are comparable values rather than strings built per push, which
// would be an allocation for every push, throttled or not.
type throttler[K comparable] struct {
	distance time.Duration
	now      func() time.Time

	mu    sync.Mutex
	slots map[K]slot
}

type slot struct {
	last    time.Time // when the last push was (or will be) sent
	pending bool      // a delayed push is waiting for last
}

// newThrottler returns a throttle with the given distance; 0 disables it.
// now is the clock (time.Now outside tests).
func newThrottler[K comparable](distance time.Duration, now func() time.Time) *throttler[K] {
	return &throttler[K]{distance: distance, now: now, slots: make(map[K]slot)}
}

// admit decides about one push for key. For delaySend, wait is how long the
// caller must wait before sending, and it must call release(key) after it
// sent (or gave up).
func (t *throttler[K]) admit(key K) (d decision, wait time.Duration) {
	if t.distance <= 0 {
		return sendNow, 0
	}
	return t.admitAt(key, t.now())
}

// admitAt is admit at now, a time the caller read for more than this:
// reading the clock is a visible part of a push's cost.
func (t *throttler[K]) admitAt(key K, now time.Time) (d decision, wait time.Duration) {
	if t.distance <= 0 {
		return sendNow, 0
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	s, ok := t.slots[key]
	switch {
	case !ok:
		t.slots[key] = slot{last: now}
		return sendNow, 0
	case s.pending:
		return refuse, 0
	case now.Sub(s.last) > t.distance:
		t.slots[key] = slot{last: now}
		return sendNow, 0
	default:
		s.last = s.last.Add(t.distance)
		s.pending = true
		t.slots[key] = s
		return delaySend, s.last.Sub(now)
	}
}

// release ends the wait of a delayed push for key.
func (t *throttler[K]) release(key K) {
	t.mu.Lock()
	if s, ok := t.slots[key]; ok {
		s.pending = false
		t.slots[key] = s
	}
	t.mu.Unlock()
}

// abandon ends the wait of a delayed push for key that was not sent (its
// deadline came first, or the server stops): the window it took goes
// back, or every later push of the device would wait behind it.
func (t *throttler[K]) abandon(key K) {
	t.mu.Lock()
	if s, ok := t.slots[key]; ok && s.pending {
		s.last, s.pending = s.last.Add(-t.distance), false
		t.slots[key] = s
	}
	t.mu.Unlock()
}

// forget drops all state of keys for which f is true (an unregistered node).
func (t *throttler[K]) forget(f func(key K) bool) {
	t.mu.Lock()
	for k := range t.slots {
		if f(k) {
			delete(t.slots, k)
		}
	}
	t.mu.Unlock()
}

// sweep drops the keys whose window has passed, so memory follows the
// number of recently active devices, not of all devices ever pushed to.
func (t *throttler[K]) sweep() {
	if t.distance <= 0 {
		return
	}
	now := t.now()
	t.mu.Lock()
	for k, s := range t.slots {
		if !s.pending && now.Sub(s.last) > t.distance {
			delete(t.slots, k)
		}
	}
	t.mu.Unlock()
}

// size returns the number of keys held.
func (t *throttler[K]) size() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.slots)
}
