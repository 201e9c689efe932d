package ratelimit_test

import (
	"testing"
	"time"

	"github.com/push-appserver/push-appserver/internal/ratelimit"
)

func TestBucketPerKey(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	l := ratelimit.New[string](3, nil)
	l.SetClock(func() time.Time { return now })
	for i := range 3 {
		if ok, _ := l.Allow("a"); !ok {
			t.Fatalf("action %d of a burst of 3 refused", i+1)
		}
	}
	ok, wait := l.Allow("a")
	if ok {
		t.Fatal("fourth action within the burst allowed")
	}
	// 3 a minute: one every 20 s.
	if wait < 19*time.Second || wait > 20*time.Second {
		t.Errorf("wait = %v, want about 20s", wait)
	}
	if ok, _ := l.Allow("b"); !ok {
		t.Error("another key refused")
	}
	now = now.Add(20 * time.Second)
	if ok, _ := l.Allow("a"); !ok {
		t.Error("refused after the bucket gained a token")
	}
	if ok, _ := l.Allow("a"); ok {
		t.Error("allowed a second action on one token")
	}
}

func TestKeysBeyondMaxShareABucket(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	overflows := 0
	l := ratelimit.New[int](2, func() { overflows++ })
	l.SetClock(func() time.Time { return now })
	for i := range ratelimit.MaxKeys {
		if ok, _ := l.Allow(i); !ok {
			t.Fatalf("key %d refused", i)
		}
	}
	for i := ratelimit.MaxKeys; i < ratelimit.MaxKeys+2; i++ {
		if ok, _ := l.Allow(i); !ok {
			t.Fatalf("key %d refused while the shared bucket had tokens", i)
		}
	}
	if ok, _ := l.Allow(ratelimit.MaxKeys + 2); ok {
		t.Fatal("a new key beyond the tracked ones got past an empty shared bucket")
	}
	if overflows != 1 {
		t.Errorf("told of the overflow %d times, want once", overflows)
	}
	// A tracked key keeps its own bucket meanwhile.
	if ok, _ := l.Allow(0); !ok {
		t.Fatal("a tracked key refused with a token left")
	}
	// Once the tracked keys' buckets are full again they are forgotten,
	// and a new key gets a bucket of its own.
	now = now.Add(time.Minute)
	if ok, _ := l.Allow(ratelimit.MaxKeys + 3); !ok {
		t.Fatal("new key refused after the sweep")
	}
	if n := l.Tracked(); n != 1 {
		t.Errorf("%d keys tracked after the sweep, want 1", n)
	}
}

func TestOff(t *testing.T) {
	l := ratelimit.New[string](0, nil)
	for range 1000 {
		if ok, _ := l.Allow("a"); !ok {
			t.Fatal("refused with the limit off")
		}
	}
}

// TestGroupHoldsAtMostPerGroup guards Options.PerGroup: the keys of one
// group (here the high 16 bits, as the /64s of a /48) hold no more
// buckets than that, however many of them act, so that every other key
// still gets a bucket of its own; beyond it they share their group's
// bucket, not anyone else's, until a sweep forgets their full buckets.
func TestGroupHoldsAtMostPerGroup(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	var full []uint32
	l := ratelimit.NewWith(2, ratelimit.Options[uint32]{
		Group:     func(k uint32) (uint32, bool) { return k >> 16, k>>16 != 0xffff },
		PerGroup:  64,
		GroupFull: func(g uint32) { full = append(full, g) },
		Now:       func() time.Time { return now },
	})
	// Group 1 acts from each of its 65,536 keys: the first 64 get
	// buckets, the rest share one of 2 tokens.
	allowed := 0
	for k := range uint32(1 << 16) {
		if ok, _ := l.Allow(1<<16 | k); ok {
			allowed++
		}
	}
	if n := l.Tracked(); n != 64 {
		t.Errorf("one group holds %d buckets, want 64", n)
	}
	if allowed != 64+2 {
		t.Errorf("one group's 65,536 keys were allowed %d actions, want 64 of their own and 2 shared", allowed)
	}
	if len(full) != 1 || full[0] != 1 {
		t.Errorf("told of full groups %v, want [1] once", full)
	}
	// Keys of other groups, and keys in none, have buckets of their own.
	for _, k := range []uint32{2<<16 | 1, 2<<16 | 2, 0xffff<<16 | 1, 0xffff<<16 | 2, 0xffff<<16 | 3} {
		for i := range 2 {
			if ok, _ := l.Allow(k); !ok {
				t.Fatalf("key %#x refused action %d of its own 2 while group 1 is full", k, i+1)
			}
		}
	}
	// A minute on, the buckets are full again; the next new key of
	// group 1 makes a sweep forget them, and gets one of its own.
	now = now.Add(time.Minute)
	if ok, _ := l.Allow(1<<16 | 0xffff); !ok {
		t.Fatal("a new key of group 1 refused after its buckets filled again")
	}
	if n, g := l.Tracked(), l.Groups(); n != 1 || g != 1 {
		t.Errorf("after the sweep %d buckets and %d groups tracked, want 1 and 1", n, g)
	}
}

// BenchmarkAllow is the cost of an action: of a key with a bucket, and
// of new keys, 256 to a group, without and with groups of 64.
func BenchmarkAllow(b *testing.B) {
	for _, tt := range []struct {
		name string
		o    ratelimit.Options[uint32]
	}{
		{"ungrouped", ratelimit.Options[uint32]{}},
		{"grouped", ratelimit.Options[uint32]{Group: func(k uint32) (uint32, bool) { return k >> 8, true }, PerGroup: 64}},
	} {
		b.Run(tt.name+"/same key", func(b *testing.B) {
			l := ratelimit.NewWith(1<<30, tt.o)
			for b.Loop() {
				l.Allow(1)
			}
		})
		b.Run(tt.name+"/new keys", func(b *testing.B) {
			l := ratelimit.NewWith(60, tt.o)
			var k uint32
			for b.Loop() {
				l.Allow(k % (1 << 20))
				k++
			}
		})
	}
}

// TestSweepAtMostOnceASecond guards the pace of the sweeps: once
// MaxKeys keys have buckets, each new key would otherwise scan them all,
// under the lock every caller takes, so a flood of new keys costs one
// scan a second and not one per key; the next sweep after that second
// still forgets the buckets that filled again.
func TestSweepAtMostOnceASecond(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	// 120 a minute: a bucket short of one token is full again in half a
	// second.
	l := ratelimit.New[int](120, nil)
	l.SetClock(func() time.Time { return now })
	for i := range ratelimit.MaxKeys {
		if ok, _ := l.Allow(i); !ok {
			t.Fatalf("key %d refused", i)
		}
	}
	// The first new key beyond them sweeps: nothing is full yet.
	l.Allow(ratelimit.MaxKeys)
	if n := l.Tracked(); n != ratelimit.MaxKeys {
		t.Fatalf("%d keys tracked after a sweep with no full bucket, want %d", n, ratelimit.MaxKeys)
	}
	// Within the second every bucket fills again, but no sweep runs.
	now = now.Add(600 * time.Millisecond)
	l.Allow(ratelimit.MaxKeys + 1)
	if n := l.Tracked(); n != ratelimit.MaxKeys {
		t.Errorf("%d keys tracked after a new key within a second of the last sweep, want %d (no sweep)", n, ratelimit.MaxKeys)
	}
	// A second after the last sweep the next new key sweeps again.
	now = now.Add(400 * time.Millisecond)
	l.Allow(ratelimit.MaxKeys + 2)
	if n := l.Tracked(); n != 1 {
		t.Errorf("%d keys tracked after the sweep a second later, want 1", n)
	}
}

// TestGroupSharedBucketOutlivesSweeps guards what a sweep does to a
// group's shared bucket: kept, with the group, for as long as it is not
// full again, even once the group's own buckets are forgotten, so that a
// group's keys beyond PerGroup get no fresh burst at each sweep; and the
// group forgotten once that bucket is full too, so that groups seen once
// do not pile up.
func TestGroupSharedBucketOutlivesSweeps(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	// 2 a minute: a token every 30 s.
	l := ratelimit.NewWith(2, ratelimit.Options[uint32]{
		Group:    func(k uint32) (uint32, bool) { return k >> 16, true },
		PerGroup: 4,
		Now:      func() time.Time { return now },
	})
	allow := func(k uint32) bool {
		ok, _ := l.Allow(k)
		return ok
	}
	g1 := uint32(1 << 16)
	for k := range uint32(4) {
		if !allow(g1 | k) {
			t.Fatalf("key %d of group 1 refused its own bucket", k)
		}
	}
	if !allow(g1|4) || !allow(g1|5) {
		t.Fatal("group 1's shared bucket refused its first 2 actions")
	}
	if allow(g1 | 6) {
		t.Fatal("group 1's empty shared bucket allowed an action")
	}
	// 30 s on, the own buckets are full and the shared one holds one
	// token. A new key of group 1 sweeps: the own buckets go, the shared
	// one stays.
	now = now.Add(30 * time.Second)
	for k := uint32(7); k < 11; k++ {
		if !allow(g1 | k) {
			t.Fatalf("key %d of group 1 refused a bucket of its own after the sweep", k)
		}
	}
	if !allow(g1 | 11) {
		t.Fatal("group 1's shared bucket refused the token it had got back")
	}
	if allow(g1 | 12) {
		t.Fatal("group 1's shared bucket allowed a second action 30 s after it was emptied: a sweep gave the group a fresh one")
	}
	// Minutes on, every bucket of group 1 is full again; the next sweep
	// (group 2 reaching its cap) forgets group 1 altogether.
	now = now.Add(5 * time.Minute)
	g2 := uint32(2 << 16)
	for k := range uint32(5) {
		allow(g2 | k)
	}
	if n := l.Groups(); n != 1 {
		t.Errorf("%d groups known after group 1's buckets all filled again, want 1 (group 2)", n)
	}
}
