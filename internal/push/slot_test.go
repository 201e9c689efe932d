package push

import (
	"context"
	"testing"
	"time"
)

// heldIn fails the test unless p's pools hold the places given.
func heldIn(t *testing.T, p *Places, when string, fresh, resumed, waiting int) {
	t.Helper()
	if len(p.fresh) != fresh || len(p.resumed) != resumed || len(p.waiting) != waiting {
		t.Fatalf("%s: %d fresh, %d resumed, %d waiting held; want %d, %d and %d",
			when, len(p.fresh), len(p.resumed), len(p.waiting), fresh, resumed, waiting)
	}
}

// With places of their own for resumed pushes (the XMPP component's), a
// slot is held in one pool at a time: fresh until the push waits, waiting
// while it does, resumed after it, and released from whichever it holds,
// once. With no waiting place free, a push waits holding its slot; one
// waiting for a push service gives its slot up regardless.
func TestSlotSplitPlaces(t *testing.T) {
	p := NewSplitPlaces(1, 1, 1)
	bg := context.Background()
	var s Slot
	s.Init(bg, p)
	if err := s.Take(bg); err != nil {
		t.Fatal(err)
	}
	heldIn(t, p, "after Take", 1, 0, 0)
	s.Pause()
	heldIn(t, p, "after Pause", 0, 0, 1)
	if err := s.Resume(bg); err != nil {
		t.Fatal(err)
	}
	heldIn(t, p, "after Resume", 0, 1, 0)
	// Every waiting place taken: the push waits holding its slot.
	p.waiting <- struct{}{}
	s.Pause()
	heldIn(t, p, "after Pause past the bound", 0, 1, 1)
	if err := s.Resume(bg); err != nil {
		t.Fatal(err)
	}
	heldIn(t, p, "after Resume past the bound", 0, 1, 1)
	// Waiting for a push service, it holds nothing, bound or not.
	s.PauseElsewhere()
	heldIn(t, p, "after PauseElsewhere", 0, 0, 1)
	if err := s.Resume(bg); err != nil {
		t.Fatal(err)
	}
	heldIn(t, p, "after Resume from elsewhere", 0, 1, 1)
	s.Release() // the handler's own at the end
	s.Release() // and nothing more
	heldIn(t, p, "after Release", 0, 0, 1)
	<-p.waiting

	// With every resumed slot taken, Resume gives up when ctx ends, and
	// the push ends holding its waiting place, which Release gives back.
	s = Slot{}
	s.Init(bg, p)
	s.Take(bg)
	s.Pause()
	p.resumed <- struct{}{}
	done, cancel := context.WithCancel(bg)
	cancel()
	if err := s.Resume(done); err == nil {
		t.Fatal("Resume took a slot from a full pool")
	}
	heldIn(t, p, "after a failed Resume", 0, 1, 1)
	s.Release()
	heldIn(t, p, "after Release", 0, 1, 0)
}

// With one pool of working places (push-batch's), a push waiting on a
// timer trades its working place for a waiting one, or keeps it when none
// is free, and takes a working place again before it goes on, or ends
// holding its waiting place when its context ends first; Release then
// gives back whichever it holds. Take waits for a working place until its
// context ends.
func TestSlotSharedPlaces(t *testing.T) {
	p := NewPlaces(1, 1)
	bg := context.Background()
	done, cancel := context.WithCancel(bg)
	cancel()
	var a, b Slot
	a.Init(bg, p)
	b.Init(bg, p)
	places := func(when string, working, waiting int) {
		t.Helper()
		heldIn(t, p, when, working, working, waiting)
	}
	if err := a.Take(bg); err != nil {
		t.Fatal(err)
	}
	if err := b.Take(done); err == nil {
		t.Fatal("b took a working place held by a")
	}
	a.Pause()
	places("a waits", 0, 1)
	if err := b.Take(bg); err != nil {
		t.Fatal(err)
	}
	b.Pause()
	places("b waits holding its working place", 1, 1)
	if err := a.Resume(done); err == nil {
		t.Fatal("a resumed with no working place free")
	}
	places("a still waits", 1, 1)
	if err := b.Resume(done); err != nil {
		t.Fatalf("b, which kept its working place: %v", err)
	}
	b.Release()
	if err := a.Resume(bg); err != nil {
		t.Fatal(err)
	}
	places("a goes on", 1, 0)
	a.Release()
	places("all done", 0, 0)
}

// A push waiting on a push service someone else chose (Elsewhere) holds
// no place, even with every waiting place taken, and holds a working
// place again once the service answered.
func TestSlotElsewhere(t *testing.T) {
	withTakenSlot(t, func(t *testing.T, p *Places, s *Slot) {
		p.waiting <- struct{}{}
		Elsewhere(s.Context(), func() error {
			if n := len(p.fresh) + len(p.resumed); n != 0 {
				t.Errorf("%d working places held waiting on a push service", n)
			}
			return nil
		})
		if len(p.resumed) != 1 {
			t.Errorf("%d resumed working places held after the push service answered, want 1", len(p.resumed))
		}
		s.Release()
		heldIn(t, p, "after Release", 0, 0, 1)
	})
}

// A push with its app's push service (Leave) holds no place, through its
// retries' waits and a request Elsewhere too, and holds a resumed working
// place again once it Returns.
func TestSlotLeave(t *testing.T) {
	withTakenSlot(t, func(t *testing.T, p *Places, s *Slot) {
		ctx := s.Context()
		away := Leave(ctx)
		none := func(when string) {
			t.Helper()
			if n := len(p.fresh) + len(p.resumed) + len(p.waiting); n != 0 {
				t.Fatalf("%s: %d places held by a push with its push service", when, n)
			}
		}
		none("after Leave")
		if err := Wait(ctx, time.Millisecond); err != nil {
			t.Fatal(err)
		}
		none("after a retry's wait")
		Elsewhere(ctx, func() error { return nil })
		none("after a request elsewhere")
		away.Return()
		if len(p.resumed) != 1 || len(p.waiting) != 0 {
			t.Fatalf("after Return: %d resumed and %d waiting places held, want 1 and 0", len(p.resumed), len(p.waiting))
		}
		away.Return() // once only
		s.Release()
		heldIn(t, p, "after Release", 0, 0, 0)
	})
}

// withTakenSlot runs test with a slot that holds a fresh working place
// of places of either kind: one pool (push-batch's) or fresh and
// resumed apart (the component's), each with one place of every kind.
func withTakenSlot(t *testing.T, test func(t *testing.T, p *Places, s *Slot)) {
	for _, tt := range []struct {
		name string
		p    *Places
	}{
		{"shared", NewPlaces(1, 1)},
		{"split", NewSplitPlaces(1, 1, 1)},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var s Slot
			s.Init(context.Background(), tt.p)
			if err := s.Take(context.Background()); err != nil {
				t.Fatal(err)
			}
			test(t, tt.p, &s)
		})
	}
}

// A push that may as well not wait (WaitOrRefuse) is refused at once when
// no waiting place is free, keeping its working place, rather than
// waiting holding it; with a place free it waits in it.
func TestWaitOrRefuseWithoutWaitingPlace(t *testing.T) {
	p := NewPlaces(1, 1)
	bg := context.Background()
	var s Slot
	s.Init(bg, p)
	if err := s.Take(bg); err != nil {
		t.Fatal(err)
	}
	p.waiting <- struct{}{}
	start := time.Now()
	if err := WaitOrRefuse(s.Context(), time.Second); err != ErrNoWaitingPlace {
		t.Fatalf("WaitOrRefuse with no waiting place = %v after %v, want ErrNoWaitingPlace at once", err, time.Since(start))
	}
	heldIn(t, p, "after the refusal", 1, 1, 1) // fresh and resumed are one pool
	<-p.waiting
	if !s.TryPause() {
		t.Fatal("TryPause with a waiting place free: false")
	}
	heldIn(t, p, "after TryPause", 0, 0, 1)
}
