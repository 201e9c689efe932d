package appserver

import (
	"hash/maphash"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/maypok86/otter/v2"

	"github.com/push-appserver/push-appserver/internal/registry"
)

// cache keeps what a push needs of recently pushed-to registrations
// (registry.PushTarget) in memory so the push path does not read the
// database for every push to the same device. Every change to a
// registration goes through Service, which drops the entry, so
// within one instance the cache is never stale. When others write the
// registry too (other instances, other processes on the same SQLite file),
// a ChangeFeed drops what they change; while the feed is down
// the cache is bypassed (suspended) and it starts empty when the feed is
// back, since changes in between were not announced. ttl bounds staleness
// should all of that fail.
//
// While suspended the cache still holds its entries, and keeps what
// pushes read meanwhile, but serves them only through held: when the
// registry cannot be read at all. A feed is lost mostly because the
// database is (a PostgreSQL restart or failover), and then every push
// would fail; a push to a device the cache held goes out instead, to the
// registration as it was when last read. What the cache held when the
// feed went down is kept apart for that (outage) until grace has passed,
// even once the entries themselves expire: a failover or a restart of the
// database often takes longer than ttl. Nobody can change a registration while
// nobody can write the registry; an instance cut off alone from a
// database others still write may push to a registration changed
// meanwhile, for grace at most.
//
// The entries live in an otter cache (W-TinyLFU): when it is full, a
// device pushed to once does not push out one pushed to often, which a
// cache that evicts by recency or at random does. Pushes to many devices
// each pushed to rarely (a busy group chat's members, a sweep over every
// device) would otherwise empty the cache of the devices that make most
// of the pushes.
type cache struct {
	c         *otter.Cache[string, registry.PushTarget]
	seed      maphash.Seed
	gens      [16]cacheGen
	suspended atomic.Bool

	hits, misses, stale atomic.Uint64

	// outage is what the cache held when the feed went down, and what
	// pushes read since, served by held until outageEnd; nil while the
	// feed is live. grace is how long it lasts.
	outageMu  sync.Mutex
	outage    map[string]registry.PushTarget
	outageEnd time.Time
	// outageWeight is what outage's entries weigh (targetWeight): at
	// most twice the cache's size.
	outageWeight int
	grace        time.Duration
	size         int // what the entries of c weigh at most (targetWeight)
	now          func() time.Time
}

// cacheGen is bumped by every drop of a node that hashes to it, so a read
// of the database that raced a change is not cached.
type cacheGen struct {
	mu  sync.Mutex
	gen uint64
}

// cacheClock is what the caches go by: now for the outage's grace, and
// elapsed, on the monotonic clock, for the entries' ttl. Otter keeps an
// entry's expiry as a number of nanoseconds, so a ttl counted on the wall
// clock would stretch by as much as NTP or an operator steps it back.
type cacheClock struct {
	now     func() time.Time
	elapsed func() time.Duration
}

// systemClock is the running server's cacheClock.
func systemClock() cacheClock {
	start := time.Now()
	return cacheClock{now: time.Now, elapsed: func() time.Duration { return time.Since(start) }}
}

// newCache returns a cache of up to size registrations, each trusted for
// ttl after it was read, and held for pushes the registry cannot be read
// for up to grace after the feed went down, by clock; nil (no cache)
// when size is 0 or less.
func newCache(size int, ttl, grace time.Duration, clock cacheClock) *cache {
	if size <= 0 {
		return nil
	}
	return &cache{seed: maphash.MakeSeed(), c: newOtter(size, ttl, clock.elapsed, targetWeight), grace: grace, size: size, now: clock.now}
}

// cacheUnit is how many bytes of a registration count as one of the
// cache's size: a registration with APNS's or FCM's tokens holds about
// 200 and counts one.
const cacheUnit = 512

// targetWeight is what the entry of node counts against the cache's size:
// one for each cacheUnit bytes it holds. A WebPush registration's token is
// its subscription, up to 4 KiB, and anyone may register: counted one
// each, a cache of 50,000 could hold 225 MB where the setting promises
// about 16.
func targetWeight(node string, t registry.PushTarget) uint32 {
	return uint32(1 + (len(node)+len(t.Type)+len(t.Token)+len(t.Secret)+len(t.Account))/cacheUnit)
}

// newOtter returns an otter cache of up to size entries, each trusted for
// ttl after it was written, by the clock elapsed, that starts no goroutine;
// with weigh, of entries weighing up to size in all.
func newOtter[K comparable, V any](size int, ttl time.Duration, elapsed func() time.Duration, weigh func(K, V) uint32) *otter.Cache[K, V] {
	o := &otter.Options[K, V]{
		MaximumSize:      size,
		ExpiryCalculator: otter.ExpiryCreating[K, V](ttl),
		// Maintenance (feeding reads and writes to the policy,
		// evicting, expiring) runs on the goroutine that set it off,
		// not on one started for it, which would wake another
		// processor after a miss.
		// Nothing we pass otter calls back into it, so running it
		// here cannot deadlock.
		Executor: func(fn func()) { fn() },
		// No clean-up goroutine ticking every second: an expired
		// entry is never served, and goes at the next maintenance.
		Clock: noTicks{elapsed},
	}
	if weigh != nil {
		o.MaximumSize, o.MaximumWeight, o.Weigher = 0, uint64(size), weigh
	}
	return otter.Must(o)
}

// noTicks is a clock without the periodic ticks otter would use to expire
// entries proactively.
type noTicks struct{ elapsed func() time.Duration }

func (c noTicks) NowNano() int64                    { return int64(c.elapsed()) }
func (noTicks) Tick(time.Duration) <-chan time.Time { return nil }

func (c *cache) gen(node string) *cacheGen {
	return &c.gens[maphash.String(c.seed, node)%uint64(len(c.gens))]
}

func (c *cache) get(node string) (registry.PushTarget, bool) {
	if c == nil {
		return registry.PushTarget{}, false
	}
	if !c.suspended.Load() {
		if t, ok := c.c.GetIfPresent(node); ok {
			return t, true
		}
	}
	return registry.PushTarget{}, false
}

// count counts a push that found its registration in the cache (hit) or
// read the registry. Only pushes whose secret matched are counted, and
// those the registry failed to answer: the counts of the others would
// tell a node that is registered (cached after the first) from one that
// is not.
func (c *cache) count(hit bool) {
	if c == nil {
		return
	}
	if hit {
		c.hits.Add(1)
	} else {
		c.misses.Add(1)
	}
}

// CacheStats is what the registration cache did so far.
type CacheStats struct {
	// Hits and Misses count the pushes that found their registration in
	// the cache and those that read the registry (also while the cache
	// is bypassed), of those with the right secret, tokenless ones and
	// those the registry failed to answer.
	Hits, Misses uint64
	// Stale counts the misses served from the cache all the same,
	// because the registry could not be read while the feed was down
	// (see held).
	Stale uint64
	// Entries is how many registrations it holds now, including expired
	// ones not yet dropped.
	Entries int
	// Bypassed is set while the change feed is down: every push reads
	// the registry (see cache).
	Bypassed bool
}

func (c *cache) stats() CacheStats {
	if c == nil {
		return CacheStats{}
	}
	return CacheStats{Hits: c.hits.Load(), Misses: c.misses.Load(), Stale: c.stale.Load(), Entries: c.c.EstimatedSize(), Bypassed: c.suspended.Load()}
}

// generation returns the node's generation, to pass to put after reading
// the database.
func (c *cache) generation(node string) uint64 {
	if c == nil {
		return 0
	}
	g := c.gen(node)
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.gen
}

// held returns what the cache holds for node while it is suspended and
// not dropped since: an entry not expired, else what it held when the
// feed went down or read since, for grace. For a push that could not read
// the registry. Nothing with a negative grace. It does not count the push
// as stale; served does.
func (c *cache) held(node string) (registry.PushTarget, bool) {
	if c == nil || c.grace < 0 || !c.suspended.Load() {
		return registry.PushTarget{}, false
	}
	if t, ok := c.c.GetIfPresent(node); ok {
		return t, true
	}
	c.outageMu.Lock()
	defer c.outageMu.Unlock()
	if c.outage == nil || !c.now().Before(c.outageEnd) {
		return registry.PushTarget{}, false
	}
	t, ok := c.outage[node]
	return t, ok
}

// served counts a push sent with what held returned.
func (c *cache) served() { c.stale.Add(1) }

// put caches t unless node was dropped since gen was taken. The check and
// the write are under the generation's lock, so a drop either comes
// before the check (and t is not cached) or invalidates after the write.
// While suspended, t is kept only for held.
func (c *cache) put(node string, t registry.PushTarget, gen uint64) {
	if c == nil {
		return
	}
	g := c.gen(node)
	g.mu.Lock()
	if g.gen == gen {
		// A copy: node may share the memory of the request it came in.
		node = strings.Clone(node)
		c.c.Set(node, t)
		if c.suspended.Load() {
			// Newer than what the outage kept, and to outlive the entry.
			c.outageMu.Lock()
			switch _, kept := c.outage[node]; {
			case c.outage == nil:
			case !c.now().Before(c.outageEnd):
				// Its grace is over: held serves nothing from it.
				c.outage, c.outageWeight = nil, 0
			case kept || c.outageWeight+int(targetWeight(node, t)) <= 2*c.size:
				// What the cache held when the feed went down
				// (up to size), and as much read since: a feed
				// that stays down (a pooler in transaction mode)
				// must not make it hold every node ever read.
				c.dropOutage(node)
				c.outage[node] = t
				c.outageWeight += int(targetWeight(node, t))
			}
			c.outageMu.Unlock()
		}
	}
	g.mu.Unlock()
}

func (c *cache) drop(node string) {
	if c == nil {
		return
	}
	g := c.gen(node)
	g.mu.Lock()
	g.gen++
	g.mu.Unlock()
	// Most drops find nothing: a registration drops its node before and
	// after its write, and the feed again, mostly of a device not pushed
	// to lately. Looking quietly costs a fraction of Invalidate, which
	// locks the key's bucket and publishes a write. An entry put before
	// the generation moved is seen here: put sets it under the lock just
	// taken. One expired is not seen, and never served.
	if _, ok := c.c.GetEntryQuietly(node); ok {
		c.c.Invalidate(node)
	}
	// Under outageMu, whether or not suspended: a feed going down now
	// either copied the entry before this (and it goes here) or finds it
	// invalidated.
	c.outageMu.Lock()
	c.dropOutage(node)
	c.outageMu.Unlock()
}

// dropOutage forgets what the outage holds of node. The caller holds
// outageMu.
func (c *cache) dropOutage(node string) {
	if t, ok := c.outage[node]; ok {
		c.outageWeight -= int(targetWeight(node, t))
		delete(c.outage, node)
	}
}

// dropAll forgets every entry, and makes reads that raced it uncacheable.
func (c *cache) dropAll() {
	if c == nil {
		return
	}
	for i := range c.gens {
		g := &c.gens[i]
		g.mu.Lock()
		g.gen++
		g.mu.Unlock()
	}
	c.c.InvalidateAll()
}

// feedLive is told whether the change feed is listening. Going down
// suspends the cache, which keeps its entries for held. Going live drops
// everything before serving from the cache again, since the changes in
// between were not announced; reads that started while suspended hold an
// older generation and are not cached.
func (c *cache) feedLive(live bool) {
	if c == nil {
		return
	}
	if !live {
		c.outageMu.Lock()
		defer c.outageMu.Unlock()
		if c.suspended.Swap(true) {
			return // down already: the outage keeps its start
		}
		c.outage = make(map[string]registry.PushTarget, c.c.EstimatedSize())
		c.outageWeight = 0
		for node, t := range c.c.All() {
			c.outage[node] = t
			c.outageWeight += int(targetWeight(node, t))
		}
		c.outageEnd = c.now().Add(c.grace)
		return
	}
	c.dropAll()
	c.outageMu.Lock()
	c.outage, c.outageWeight = nil, 0
	c.outageMu.Unlock()
	c.suspended.Store(false)
}
