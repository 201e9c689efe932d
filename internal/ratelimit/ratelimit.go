// Package ratelimit bounds how often each of many callers may act: a
// token bucket per key (a client address, an XMPP account), in bounded
// memory. It guards registrations, where each new node is a row and
// nothing else stops one caller from filling the registry.
package ratelimit

import (
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// MaxKeys bounds the keys a Limiter tracks (about 150 bytes each). When
// it is reached, keys whose bucket has filled again are forgotten, since
// a new bucket would be the same; beyond it, new keys share one bucket.
const MaxKeys = 65536

// Limiter allows each key perMinute actions a minute, as many at once.
// Its zero value is not usable; a nil *Limiter allows everything.
type Limiter[K comparable] struct {
	every      rate.Limit // tokens a second
	burst      int
	now        func() time.Time
	overflowed func() // see New; called under mu

	mu        sync.Mutex
	keys      map[K]*rate.Limiter
	shared    *rate.Limiter // the keys beyond MaxKeys
	lastSweep time.Time
	warned    bool
}

// New returns a limiter of perMinute actions a minute per key, or nil,
// which allows everything, when perMinute is not positive. overflowed,
// if not nil, is called once, the first time keys beyond MaxKeys have to
// share a bucket.
func New[K comparable](perMinute int, overflowed func()) *Limiter[K] {
	if perMinute <= 0 {
		return nil
	}
	l := &Limiter[K]{
		every:      rate.Limit(float64(perMinute) / 60),
		burst:      perMinute,
		now:        time.Now,
		overflowed: overflowed,
		keys:       map[K]*rate.Limiter{},
	}
	l.shared = rate.NewLimiter(l.every, l.burst)
	return l
}

// Allow takes a token from key's bucket. When there is none it returns
// false and how long until there is.
func (l *Limiter[K]) Allow(key K) (bool, time.Duration) {
	if l == nil {
		return true, 0
	}
	now := l.now()
	b := l.bucket(key, now)
	if b.AllowN(now, 1) {
		return true, 0
	}
	missing := 1 - b.TokensAt(now)
	return false, time.Duration(missing / float64(l.every) * float64(time.Second))
}

// bucket returns key's bucket, made full when new.
func (l *Limiter[K]) bucket(key K, now time.Time) *rate.Limiter {
	l.mu.Lock()
	defer l.mu.Unlock()
	if b, ok := l.keys[key]; ok {
		return b
	}
	if len(l.keys) >= MaxKeys && now.Sub(l.lastSweep) >= time.Second {
		l.lastSweep = now
		l.sweep(now)
	}
	if len(l.keys) >= MaxKeys {
		if !l.warned && l.overflowed != nil {
			l.overflowed()
		}
		l.warned = true
		return l.shared
	}
	b := rate.NewLimiter(l.every, l.burst)
	l.keys[key] = b
	return b
}

// sweep forgets the keys whose bucket is full again.
func (l *Limiter[K]) sweep(now time.Time) {
	full := float64(l.burst)
	for k, b := range l.keys {
		if b.TokensAt(now) >= full {
			delete(l.keys, k)
		}
	}
}
