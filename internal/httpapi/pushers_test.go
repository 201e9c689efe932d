package httpapi

import (
	"context"
	"sync"
	"testing"
	"time"
)

// Pushes run on the pushers already started when they are free, at most
// max at once; a push waits for a free one until its request's context
// ends; a pusher idle for its idle time ends.
func TestPushers(t *testing.T) {
	p := newPushers(2, 0, 50*time.Millisecond)
	live := func() int { return len(p.live) }
	slot := func() *slot { s := new(slot); s.init(context.Background(), p); return s }

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

// A push waiting on a timer trades its working place for a waiting one,
// or keeps it when none is free, and takes a working place again before
// it goes on, or ends holding its waiting place when its context ends
// first; the pusher then gives back whichever it holds.
func TestSlotPauseResume(t *testing.T) {
	p := newPushers(1, 1, time.Minute)
	bg := context.Background()
	var a, b slot
	a.init(bg, p)
	b.init(bg, p)
	places := func(want string, working, waiting int) {
		t.Helper()
		if len(p.working) != working || len(p.waiting) != waiting {
			t.Fatalf("%s: %d working and %d waiting places taken, want %d and %d", want, len(p.working), len(p.waiting), working, waiting)
		}
	}
	if err := a.take(bg, &p.working); err != nil {
		t.Fatal(err)
	}
	a.Pause()
	places("a waits", 0, 1)
	if err := b.take(bg, &p.working); err != nil {
		t.Fatal(err)
	}
	b.Pause()
	places("b waits holding its working place", 1, 1)
	done, cancel := context.WithCancel(bg)
	cancel()
	if err := a.Resume(done); err == nil {
		t.Fatal("a resumed with no working place free")
	}
	places("a still waits", 1, 1)
	if err := b.Resume(done); err != nil {
		t.Fatalf("b, which kept its working place: %v", err)
	}
	b.release()
	if err := a.Resume(bg); err != nil {
		t.Fatal(err)
	}
	places("a goes on", 1, 0)
	a.release()
	places("all done", 0, 0)
}

// jobFunc is a job made of a function.
type jobFunc func()

func (f jobFunc) do() { f() }
