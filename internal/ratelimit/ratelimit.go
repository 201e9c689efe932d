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
	overflowed func() // see Options; called under mu
	group      func(K) (K, bool)
	perGroup   int
	groupFull  func(K) // see Options; called under mu

	mu        sync.Mutex
	keys      map[K]*rate.Limiter
	shared    *rate.Limiter // the keys beyond MaxKeys
	groups    map[K]*group  // by Options.Group's name, while it has keys
	lastSweep time.Time
	warned    bool
}

// group is what a Limiter knows of a group of keys: how many of them
// have a bucket, and the one its keys beyond Options.PerGroup share.
type group struct {
	n      int
	shared *rate.Limiter
}

// Options tune a Limiter beyond its rate; the zero value is usable.
type Options[K comparable] struct {
	// Overflowed, if not nil, is called once, the first time keys
	// beyond MaxKeys have to share a bucket.
	Overflowed func()
	// Group, if not nil, names the group a key belongs to, and false
	// for a key in none. No group's keys hold more than PerGroup of the
	// MaxKeys buckets: beyond that, the group's new keys share one
	// bucket of its own. So keys that are one caller's to choose (the
	// /64s of an IPv6 /48, 65,536 of them) cannot take every bucket and
	// send everyone else's new keys to the bucket beyond MaxKeys.
	Group    func(K) (K, bool)
	PerGroup int
	// GroupFull, if not nil, is called with a group's name each time
	// its keys start to share a bucket.
	GroupFull func(K)
	// Now is the clock; time.Now when nil.
	Now func() time.Time
}

// New returns a limiter of perMinute actions a minute per key, or nil,
// which allows everything, when perMinute is not positive. overflowed,
// if not nil, is called once, the first time keys beyond MaxKeys have to
// share a bucket.
func New[K comparable](perMinute int, overflowed func()) *Limiter[K] {
	return NewWith(perMinute, Options[K]{Overflowed: overflowed})
}

// NewWith is New with options.
func NewWith[K comparable](perMinute int, o Options[K]) *Limiter[K] {
	if perMinute <= 0 {
		return nil
	}
	l := &Limiter[K]{
		every:      rate.Limit(float64(perMinute) / 60),
		burst:      perMinute,
		now:        o.Now,
		overflowed: o.Overflowed,
		keys:       map[K]*rate.Limiter{},
	}
	if l.now == nil {
		l.now = time.Now
	}
	if o.Group != nil && o.PerGroup > 0 {
		l.group, l.perGroup, l.groupFull = o.Group, o.PerGroup, o.GroupFull
		l.groups = map[K]*group{}
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
	// Only a new key pays for its group: a known one is found above.
	var gname K
	grouped := false
	if l.group != nil {
		gname, grouped = l.group(key)
	}
	groupAtCap := func() bool {
		g := l.groups[gname]
		return grouped && g != nil && g.n >= l.perGroup
	}
	if (len(l.keys) >= MaxKeys || groupAtCap()) && now.Sub(l.lastSweep) >= time.Second {
		l.lastSweep = now
		l.sweep(now)
	}
	if groupAtCap() {
		g := l.groups[gname]
		if g.shared == nil {
			g.shared = rate.NewLimiter(l.every, l.burst)
			if l.groupFull != nil {
				l.groupFull(gname)
			}
		}
		return g.shared
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
	if grouped {
		g := l.groups[gname]
		if g == nil {
			g = &group{}
			l.groups[gname] = g
		}
		g.n++
	}
	return b
}

// sweep forgets the keys whose bucket is full again, and the groups left
// with no key and a full shared bucket (or none): a new one would be
// the same.
func (l *Limiter[K]) sweep(now time.Time) {
	full := float64(l.burst)
	for k, b := range l.keys {
		if b.TokensAt(now) >= full {
			delete(l.keys, k)
			if l.group == nil {
				continue
			}
			if gname, ok := l.group(k); ok {
				if g := l.groups[gname]; g != nil {
					g.n--
				}
			}
		}
	}
	for gname, g := range l.groups {
		if g.shared != nil && g.shared.TokensAt(now) >= full {
			g.shared = nil
		}
		if g.n <= 0 && g.shared == nil {
			delete(l.groups, gname)
		}
	}
}
