package appserver

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/push-appserver/push-appserver/internal/registry"
)

// push looks node up the way Service.lookup does, caching it on a miss,
// counts it as Push does a push with the right secret, and reports
// whether it was a hit.
func (c *cache) push(node string) bool {
	if _, ok := c.get(node); ok {
		c.count(true)
		return true
	}
	c.put(node, registry.PushTarget{Type: "apns", Token: "t-" + node, Secret: "s"}, c.generation(node))
	c.count(false)
	return false
}

// A full cache must keep the devices pushed to often when many devices
// are each pushed to once (a large group chat, a sweep over every
// device): evicting at random or by recency would empty it of them.
func TestCacheKeepsFrequentDevicesThroughAScan(t *testing.T) {
	const size = 1000
	c := newCache(size, time.Hour, time.Hour, systemClock())
	hot := make([]string, size/2)
	for i := range hot {
		hot[i] = fmt.Sprintf("hot-%d", i)
	}
	for range 5 {
		for _, n := range hot {
			c.push(n)
		}
	}
	for i := range 20 * size {
		c.push(fmt.Sprintf("cold-%d", i))
	}
	hits := 0
	for _, n := range hot {
		if _, ok := c.get(n); ok {
			hits++
		}
	}
	if hits < len(hot)*9/10 {
		t.Errorf("after a scan of %d devices pushed to once, %d of %d frequent devices are cached; want at least 90%%", 20*size, hits, len(hot))
	}
	if n := c.stats().Entries; n > size {
		t.Errorf("cache holds %d entries; want at most %d", n, size)
	}
}

func TestCacheEntriesExpire(t *testing.T) {
	clock := &fakeClock{t: time.Unix(1_700_000_000, 0)}
	c := newCache(100, time.Minute, time.Hour, clock.cacheClock())
	c.push("n")
	clock.advance(59 * time.Second)
	if !c.push("n") {
		t.Fatal("entry gone before its ttl")
	}
	clock.advance(2 * time.Second)
	if c.push("n") {
		t.Fatal("entry trusted after its ttl")
	}
}

// An entry's ttl runs on the monotonic clock: stepping the wall clock
// back (NTP correcting a clock that ran fast) must not keep an entry
// trusted past its ttl, nor stepping it forward end it early.
func TestCacheTTLIgnoresWallClockSteps(t *testing.T) {
	for _, step := range []time.Duration{-24 * time.Hour, 24 * time.Hour} {
		clock := &fakeClock{t: time.Unix(1_700_000_000, 0)}
		c := newCache(100, time.Minute, time.Hour, clock.cacheClock())
		c.push("n")
		clock.step(step)
		clock.advance(59 * time.Second)
		if !c.push("n") {
			t.Fatalf("wall clock stepped by %v: entry gone before its ttl", step)
		}
		clock.advance(2 * time.Second)
		if c.push("n") {
			t.Fatalf("wall clock stepped by %v: entry trusted after its ttl", step)
		}
	}
}

// A read of the registry that raced a change must not be cached, and a
// change must drop what is cached.
func TestCacheDrops(t *testing.T) {
	target := registry.PushTarget{Type: "apns", Token: "old"}
	for _, tc := range []struct {
		name string
		// change runs between taking the generation and putting what
		// was read.
		change func(c *cache)
	}{
		{"drop of the node", func(c *cache) { c.drop("n") }},
		{"drop of everything", func(c *cache) { c.dropAll() }},
		{"feed lost and back", func(c *cache) { c.feedLive(false); c.feedLive(true) }},
	} {
		t.Run(tc.name+" during the read", func(t *testing.T) {
			c := newCache(100, time.Hour, time.Hour, systemClock())
			gen := c.generation("n")
			tc.change(c)
			c.put("n", target, gen)
			if _, ok := c.get("n"); ok {
				t.Error("a read that raced a change was cached")
			}
		})
		t.Run(tc.name+" after the read", func(t *testing.T) {
			c := newCache(100, time.Hour, time.Hour, systemClock())
			c.put("n", target, c.generation("n"))
			tc.change(c)
			if _, ok := c.get("n"); ok {
				t.Error("entry still cached after the change")
			}
		})
	}
	t.Run("other nodes stay", func(t *testing.T) {
		c := newCache(100, time.Hour, time.Hour, systemClock())
		c.push("a")
		c.push("b")
		c.drop("a")
		if _, ok := c.get("b"); !ok {
			t.Error("dropping a dropped b")
		}
	})
}

func TestCacheBypassedWhileFeedDown(t *testing.T) {
	c := newCache(100, time.Hour, time.Hour, systemClock())
	c.feedLive(false)
	c.push("n")
	if c.push("n") {
		t.Fatal("served from the cache while the feed is down")
	}
	c.feedLive(true)
	if c.push("n") {
		t.Fatal("an entry put while the feed was down survived it")
	}
	if !c.push("n") {
		t.Fatal("not cached once the feed is back")
	}
	if s := c.stats(); s.Hits != 1 || s.Misses != 3 || s.Entries != 1 {
		t.Errorf("stats = %+v; want 1 hit, 3 misses, 1 entry", s)
	}
}

// While the feed is down the cache serves nothing, but held returns what
// it had of a node, or read since, for a push that cannot read the
// registry: past the entries' ttl, until the outage's grace has passed,
// and never a node changed meanwhile or an older value than it read.
func TestCacheHoldsWhileFeedDown(t *testing.T) {
	clock := &fakeClock{t: time.Unix(1_700_000_000, 0)}
	c := newCache(100, time.Minute, 5*time.Minute, clock.cacheClock())
	for _, n := range []string{"a", "b", "c"} {
		c.push(n)
	}
	if _, ok := c.held("a"); ok {
		t.Fatal("held returned an entry while the feed is live")
	}
	c.feedLive(false)
	if _, ok := c.get("a"); ok {
		t.Fatal("served from the cache while the feed is down")
	}
	if got, ok := c.held("a"); !ok || got.Token != "t-a" {
		t.Fatalf("held(a) = %+v, %v; want what was cached before the feed went down", got, ok)
	}
	clock.advance(30 * time.Second)
	c.put("d", registry.PushTarget{Type: "apns", Token: "t-d"}, c.generation("d"))
	c.put("c", registry.PushTarget{Type: "apns", Token: "t-c2"}, c.generation("c"))
	if got, ok := c.held("d"); !ok || got.Token != "t-d" {
		t.Fatalf("held(d) = %+v, %v; want what was read while the feed was down", got, ok)
	}
	c.drop("b")
	if _, ok := c.held("b"); ok {
		t.Error("held returned a dropped node")
	}
	// Past the entries' ttl, within the outage's grace.
	clock.advance(3 * time.Minute)
	if got, ok := c.held("a"); !ok || got.Token != "t-a" {
		t.Errorf("held(a) = %+v, %v past the ttl; want it held for the outage", got, ok)
	}
	if got, ok := c.held("c"); !ok || got.Token != "t-c2" {
		t.Errorf("held(c) = %+v, %v; want what was read last, not what the outage began with", got, ok)
	}
	if _, ok := c.held("b"); ok {
		t.Error("held returned a dropped node past the ttl")
	}
	// A second live(false) does not start the outage again.
	c.put("f", registry.PushTarget{Type: "apns", Token: "t-f"}, c.generation("f"))
	c.feedLive(false)
	clock.advance(2 * time.Minute)
	for _, n := range []string{"a", "c", "d", "f"} {
		if _, ok := c.held(n); ok {
			t.Errorf("held(%s) past the outage's grace", n)
		}
	}
	c.feedLive(true)
	c.push("e")
	if _, ok := c.get("e"); !ok {
		t.Error("not cached once the feed is back")
	}
	if _, ok := c.held("e"); ok {
		t.Error("held returned an entry while the feed is live")
	}
	c.feedLive(false)
	if _, ok := c.held("a"); ok {
		t.Error("a new outage holds what an earlier one did")
	}
	if _, ok := c.held("e"); !ok {
		t.Error("a new outage does not hold what the cache had")
	}
}

// A feed that stays down does not make held keep every node read since:
// at most what the cache held and as many again; and nothing once the
// outage's grace has passed.
func TestCacheOutageBounded(t *testing.T) {
	clock := &fakeClock{t: time.Unix(1_700_000_000, 0)}
	const size = 100
	c := newCache(size, time.Minute, 5*time.Minute, clock.cacheClock())
	for i := range size {
		c.push(fmt.Sprint("before-", i))
	}
	c.feedLive(false)
	for i := range 100 * size {
		c.push(fmt.Sprint("since-", i))
	}
	if n := len(c.outage); n > 2*size {
		t.Errorf("the outage holds %d nodes, cache size %d", n, size)
	}
	if _, ok := c.held("since-0"); !ok {
		t.Error("a node read during the outage is not held")
	}
	if _, ok := c.held("before-0"); !ok {
		t.Error("a node cached before the outage is not held")
	}
	clock.advance(6 * time.Minute)
	c.push("after-grace")
	if c.outage != nil {
		t.Errorf("the outage holds %d nodes past its grace", len(c.outage))
	}
}

// The cache's size counts registrations of the usual few hundred bytes:
// a WebPush registration's token is its subscription, up to 4 KiB, and
// anyone may register, so such entries count as the bytes they hold, in
// the cache and in what it holds for an outage. Counted one each, a
// cache of 50,000 could hold 225 MB where the setting promises about 16.
func TestCacheBoundedInBytes(t *testing.T) {
	const size = 400
	clock := &fakeClock{t: time.Unix(1_700_000_000, 0)}
	c := newCache(size, time.Hour, time.Hour, clock.cacheClock())
	target := func(i int, token string) (string, registry.PushTarget) {
		return fmt.Sprint("node-", i), registry.PushTarget{Type: "webpush", Token: token, Secret: strings.Repeat("5", 64)}
	}
	held := func() (n int) {
		for node, t := range c.c.All() {
			n += len(node) + len(t.Token)
		}
		return n
	}
	// Registrations of the usual size: size of them fit.
	for i := range size {
		node, tt := target(i, strings.Repeat("a", 64))
		c.put(node, tt, c.generation(node))
	}
	c.c.CleanUp()
	if n := c.stats().Entries; n != size {
		t.Fatalf("%d registrations of 64-byte tokens cached, want %d", n, size)
	}
	// Subscriptions of 4 KiB: about an eighth as many.
	big := strings.Repeat("w", 4096)
	for i := range 4 * size {
		node, tt := target(size+i, big)
		c.put(node, tt, c.generation(node))
	}
	c.c.CleanUp()
	if n := held(); n > size*cacheUnit*2 {
		t.Errorf("the cache holds %d KiB of %d-entry size; want at most %d KiB", n>>10, size, size*cacheUnit*2>>10)
	}
	// And what it holds for an outage, from the cache and read since.
	c.feedLive(false)
	for i := range 4 * size {
		node, tt := target(10*size+i, big)
		c.put(node, tt, c.generation(node))
	}
	c.outageMu.Lock()
	n := 0
	for node, t := range c.outage {
		n += len(node) + len(t.Token)
	}
	c.outageMu.Unlock()
	if n > 2*size*cacheUnit*2 {
		t.Errorf("the outage holds %d KiB of a %d-entry cache; want at most %d KiB", n>>10, size, 2*size*cacheUnit*2>>10)
	}
}

// With a negative grace nothing is held: a push the registry cannot be
// read for fails.
func TestCacheHoldsNothingWithoutGrace(t *testing.T) {
	c := newCache(100, time.Hour, -1, systemClock())
	c.push("a")
	c.feedLive(false)
	c.put("b", registry.PushTarget{Type: "apns", Token: "t-b"}, c.generation("b"))
	for _, n := range []string{"a", "b"} {
		if _, ok := c.held(n); ok {
			t.Errorf("held(%s) with the grace off", n)
		}
	}
}

// A node dropped while the feed goes down is not held: the outage's copy
// is taken either before the drop, which then removes the node from it,
// or after, when the node is gone from the cache already.
func TestCacheDropRacesFeedLoss(t *testing.T) {
	c := newCache(100, time.Hour, time.Hour, systemClock())
	for i := range 2000 {
		c.feedLive(true)
		c.push("n")
		c.push("other")
		var wg sync.WaitGroup
		wg.Go(func() { c.feedLive(false) })
		wg.Go(func() { c.drop("n") })
		wg.Wait()
		if _, ok := c.held("n"); ok {
			t.Fatalf("round %d: a node dropped as the feed went down is held", i)
		}
		if _, ok := c.held("other"); !ok {
			t.Fatalf("round %d: a node not dropped is not held", i)
		}
	}
}

func TestCacheOff(t *testing.T) {
	c := newCache(0, time.Hour, time.Hour, systemClock())
	if c != nil {
		t.Fatal("size 0 made a cache")
	}
	for range 2 {
		if c.push("n") {
			t.Error("a hit without a cache")
		}
	}
	if s := c.stats(); s != (CacheStats{}) {
		t.Errorf("stats = %+v; want zero", s)
	}
}
