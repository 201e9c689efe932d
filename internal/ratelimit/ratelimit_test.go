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
