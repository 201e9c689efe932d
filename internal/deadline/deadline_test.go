package deadline

import (
	"context"
	"errors"
	"runtime"
	"sync"
	"testing"
	"time"
)

type key struct{}

// Deadlines in one slot share a context that ends at the slot's end: no
// earlier than any of them, at most a Slot later. The operation's values
// stay its own.
func TestSharedSlots(t *testing.T) {
	var s Shared
	base := context.WithValue(context.Background(), key{}, "mine")
	// The start of a slot, so that the three below fall in one.
	at := time.Now().Add(50 * time.Millisecond).Truncate(Slot).Add(Slot)
	a, cancel := s.WithDeadline(base, at.Add(Slot/4))
	defer cancel()
	b, _ := s.WithDeadline(context.WithValue(context.Background(), key{}, "other"), at.Add(Slot/2))
	c, _ := s.WithDeadline(base, at.Add(Slot+1))
	if a.Done() != b.Done() {
		t.Fatal("two deadlines in one slot have contexts of their own")
	}
	if a.Done() == c.Done() {
		t.Fatal("deadlines in two slots share a context")
	}
	for _, tc := range []struct {
		ctx       context.Context
		asked     time.Time
		value     string
		wantsSlot time.Time
	}{{a, at.Add(Slot / 4), "mine", at.Add(Slot)}, {b, at.Add(Slot / 2), "other", at.Add(Slot)}, {c, at.Add(Slot + 1), "mine", at.Add(2 * Slot)}} {
		d, ok := tc.ctx.Deadline()
		if !ok || d.Before(tc.asked) || !d.Equal(tc.wantsSlot) {
			t.Errorf("deadline %v (%v) for %v, want %v", d, ok, tc.asked, tc.wantsSlot)
		}
		if v := tc.ctx.Value(key{}); v != tc.value {
			t.Errorf("value %v, want %v", v, tc.value)
		}
	}
	if a.Err() != nil {
		t.Fatalf("ended before its deadline: %v", a.Err())
	}
	select {
	case <-c.Done():
	case <-time.After(time.Until(at) + time.Second):
		t.Fatal("a shared context did not end")
	}
	if time.Now().Before(at.Add(2*Slot)) || !errors.Is(c.Err(), context.DeadlineExceeded) || !errors.Is(context.Cause(c), context.DeadlineExceeded) {
		t.Fatalf("ended at %v (slot end %v): %v, cause %v", time.Now(), at.Add(2*Slot), c.Err(), context.Cause(c))
	}
	if !errors.Is(a.Err(), context.DeadlineExceeded) {
		t.Fatalf("the earlier slot: %v", a.Err())
	}
}

// A context that can be canceled gets a deadline of its own, which its
// cancellation ends.
func TestCancelableParent(t *testing.T) {
	var s Shared
	parent, stop := context.WithCancel(context.Background())
	ctx, cancel := s.WithDeadline(parent, time.Now().Add(time.Hour))
	defer cancel()
	other, _ := s.WithDeadline(context.Background(), time.Now().Add(time.Hour))
	stop()
	select {
	case <-ctx.Done():
	case <-time.After(time.Second):
		t.Fatal("canceling the parent did not end the context")
	}
	if other.Err() != nil {
		t.Fatal("canceling one parent ended another push's context")
	}
}

// Contexts made from a shared one end with it, and need no goroutine
// each to notice: they find the slot's context through Value. So do
// those made from an operation's own context with values (a component
// push's), which Value looks through to the slot's.
func TestDerivedContexts(t *testing.T) {
	for _, tc := range []struct {
		name   string
		parent context.Context
	}{
		{"background", context.Background()},
		{"with values", context.WithValue(context.Background(), key{}, "mine")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var s Shared
			ctx, _ := s.WithDeadline(tc.parent, time.Now().Add(200*time.Millisecond))
			before := runtime.NumGoroutine()
			var derived []context.Context
			for range 100 {
				d, cancel := context.WithCancel(ctx)
				defer cancel()
				derived = append(derived, d)
			}
			if n := runtime.NumGoroutine() - before; n > 10 {
				t.Fatalf("100 derived contexts started %d goroutines", n)
			}
			for _, d := range derived {
				select {
				case <-d.Done():
				case <-time.After(5 * time.Second):
					t.Fatal("a derived context outlived the slot")
				}
			}
		})
	}
}

// A slot is let go with its last user: its timer stopped, so it does not
// wake the process at its end, and forgotten. A later deadline in the same
// slot gets a context of its own.
func TestRelease(t *testing.T) {
	var s Shared
	at := time.Now().Add(time.Hour)
	a, cancelA := s.WithDeadline(context.Background(), at)
	b, cancelB := s.WithDeadline(context.Background(), at)
	cancelA()
	if a.Err() != nil || b.Err() != nil {
		t.Fatal("a slot ended while one of its users was under way")
	}
	cancelB()
	if !errors.Is(b.Err(), context.Canceled) {
		t.Fatalf("the slot's context after its last user: %v", b.Err())
	}
	s.mu.Lock()
	n := len(s.slots)
	s.mu.Unlock()
	if n != 0 {
		t.Fatalf("%d slots kept after their users", n)
	}
	c, cancelC := s.WithDeadline(context.Background(), at)
	defer cancelC()
	if c.Err() != nil || c.Done() == b.Done() {
		t.Fatal("a deadline after the slot was let go got its ended context")
	}
}

// Operations that start and end together never get a context that was
// let go, and nothing is kept once they are over.
func TestConcurrentUsers(t *testing.T) {
	var s Shared
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for i := range 2000 {
				ctx, cancel := s.WithDeadline(context.Background(), time.Now().Add(time.Second+time.Duration(i%3)*Slot))
				if err := ctx.Err(); err != nil {
					t.Errorf("got an ended context: %v", err)
				}
				cancel()
			}
		})
	}
	wg.Wait()
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.slots) != 0 {
		t.Fatalf("%d slots kept after every user ended", len(s.slots))
	}
}

// An operation without values of its own gets the slot's context itself:
// no allocation once the slot is there.
func TestBackgroundParentAllocatesNothing(t *testing.T) {
	var s Shared
	at := time.Now().Add(time.Hour)
	keep, cancel := s.WithDeadline(context.Background(), at) // the slot stays while this is under way
	defer cancel()
	allocs := testing.AllocsPerRun(100, func() {
		ctx, cancel := s.WithDeadline(context.Background(), at)
		if ctx.Done() != keep.Done() {
			t.Fatal("two deadlines in one slot have contexts of their own")
		}
		cancel()
	})
	if allocs != 0 {
		t.Fatalf("%v allocations a deadline, want 0", allocs)
	}
}

// roomy is an operation's context with a Room, as a push's is.
type roomy struct {
	context.Context
	room Room
}

func (r *roomy) DeadlineRoom() *Room { return &r.room }

// An operation whose context has a Room takes it for its first deadline:
// no allocation once the slot is there. A second deadline of the same
// operation gets a context of its own, and the first stays as it was.
func TestRoomAllocatesNothing(t *testing.T) {
	var s Shared
	at := time.Now().Add(time.Hour)
	keep, cancel := s.WithDeadline(context.Background(), at) // the slot stays while this is under way
	defer cancel()
	ops := make([]roomy, 101)
	for i := range ops {
		ops[i].Context = context.WithValue(context.Background(), key{}, i)
	}
	n := 0
	allocs := testing.AllocsPerRun(100, func() {
		ctx, cancel := s.WithDeadline(&ops[n], at)
		if ctx.Done() != keep.Done() || ctx.Value(key{}) != n {
			t.Fatal("not the slot's end, or not the operation's values")
		}
		cancel()
		n++
	})
	if allocs != 0 {
		t.Fatalf("%v allocations a deadline, want 0", allocs)
	}

	op := &roomy{Context: context.WithValue(context.Background(), key{}, "mine")}
	first, cancel1 := s.WithDeadline(op, at)
	defer cancel1()
	second, cancel2 := s.WithDeadline(op, at.Add(time.Hour))
	defer cancel2()
	want, _ := keep.Deadline()
	d1, _ := first.Deadline()
	d2, _ := second.Deadline()
	if !d1.Equal(want) || !d2.After(want) || first.Value(key{}) != "mine" || second.Value(key{}) != "mine" {
		t.Fatalf("deadlines %v and %v, want %v and a later one, with the operation's values", d1, d2, want)
	}
}
