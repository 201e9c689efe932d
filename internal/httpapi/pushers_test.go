package httpapi

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/push-appserver/push-appserver/internal/push"
)

// Pushes run on the pushers already started when they are free, at most
// as many at once as there are working places; a push waits for a free
// place until its request's context ends; a pusher idle for its idle time
// ends.
func TestPushers(t *testing.T) {
	p := newPushers(2, 0, 50*time.Millisecond)
	live := func() int { return int(p.live.Load()) }
	slot := func() *push.Slot { s := new(push.Slot); s.Init(context.Background(), p.places); return s }

	// One after the other: one pusher does them all. The pause lets it
	// get back to waiting for the next after closing done; without it,
	// a push may come first and, rightly, start a second.
	for range 20 {
		done := make(chan struct{})
		if err := p.run(context.Background(), slot(), jobFunc(func() { close(done) })); err != nil {
			t.Fatal(err)
		}
		<-done
		time.Sleep(5 * time.Millisecond)
	}
	if n := live(); n != 1 {
		t.Fatalf("%d pushers for pushes one after the other, want 1", n)
	}

	// Two blocked: a third waits, and gives up when its context ends.
	release := make(chan struct{})
	var wg sync.WaitGroup
	for range 2 {
		wg.Add(1)
		if err := p.run(context.Background(), slot(), jobFunc(func() { defer wg.Done(); <-release })); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	ran := false
	if err := p.run(ctx, slot(), jobFunc(func() { ran = true })); err == nil || ran || live() != 2 {
		t.Fatalf("third push: %v, ran %v, %d pushers; want it refused with two busy", err, ran, live())
	}
	close(release)
	wg.Wait()

	// Idle ones end.
	deadline := time.Now().Add(5 * time.Second)
	for live() > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d pushers still live after their idle time", live())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// jobFunc is a job made of a function.
type jobFunc func()

func (f jobFunc) do() { f() }
