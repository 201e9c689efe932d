package appserver

import (
	"hash/maphash"
	"strings"
	"sync"
	"sync/atomic"
	"time"

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
type cache struct {
	shards    [16]cacheShard
	seed      maphash.Seed
	max       int // per shard
	ttl       time.Duration
	suspended atomic.Bool
}

type cacheShard struct {
	mu  sync.Mutex
	m   map[string]cacheEntry
	gen uint64 // bumped by every drop, so a read that raced a change is not cached
}

// cacheEntry is small enough for the map to hold it in its own slots
// (Go's maps allocate values over 128 bytes one by one), so an entry
// costs its strings and a slot: about 320 bytes with a 64-digit token
// and secret, against 500 for a whole registration.
type cacheEntry struct {
	t  registry.PushTarget
	at time.Time
}

func newCache(size int, ttl time.Duration) *cache {
	if size <= 0 {
		return nil
	}
	c := &cache{seed: maphash.MakeSeed(), max: max(1, size/16), ttl: ttl}
	for i := range c.shards {
		c.shards[i].m = make(map[string]cacheEntry)
	}
	return c
}

func (c *cache) shard(node string) *cacheShard {
	return &c.shards[maphash.String(c.seed, node)%uint64(len(c.shards))]
}

func (c *cache) get(node string, now time.Time) (registry.PushTarget, bool) {
	if c == nil || c.suspended.Load() {
		return registry.PushTarget{}, false
	}
	s := c.shard(node)
	s.mu.Lock()
	e, ok := s.m[node]
	s.mu.Unlock()
	if !ok || now.Sub(e.at) > c.ttl {
		return registry.PushTarget{}, false
	}
	return e.t, true
}

// generation returns the shard's generation, to pass to put after reading
// the database.
func (c *cache) generation(node string) uint64 {
	if c == nil {
		return 0
	}
	s := c.shard(node)
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.gen
}

func (c *cache) put(node string, t registry.PushTarget, gen uint64, now time.Time) {
	if c == nil || c.suspended.Load() {
		return
	}
	s := c.shard(node)
	s.mu.Lock()
	if s.gen != gen {
		s.mu.Unlock()
		return
	}
	if len(s.m) >= c.max {
		// Evict an arbitrary entry: map order is random, which is as good
		// as LRU for a cache whose misses cost one indexed read.
		for k := range s.m {
			delete(s.m, k)
			break
		}
	}
	// A copy: node may share the memory of the request it came in.
	s.m[strings.Clone(node)] = cacheEntry{t: t, at: now}
	s.mu.Unlock()
}

func (c *cache) drop(node string) {
	if c == nil {
		return
	}
	s := c.shard(node)
	s.mu.Lock()
	delete(s.m, node)
	s.gen++
	s.mu.Unlock()
}

// dropAll forgets every entry, and makes reads that raced it uncacheable.
func (c *cache) dropAll() {
	if c == nil {
		return
	}
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.Lock()
		clear(s.m)
		s.gen++
		s.mu.Unlock()
	}
}

// feedLive is told whether the change feed is listening. Going live drops
// everything before serving from the cache again; reads that started while
// suspended hold an older generation and are not cached.
func (c *cache) feedLive(live bool) {
	if c == nil {
		return
	}
	if !live {
		c.suspended.Store(true)
		c.dropAll()
		return
	}
	c.dropAll()
	c.suspended.Store(false)
}
