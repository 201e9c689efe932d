// Package deadline gives many short operations their deadlines without a
// timer each.
//
// A push runs under a deadline, and context.WithDeadline for each one
// starts and stops a runtime timer and allocates the context, its timer
// and its Done channel: about 3 % of a push's CPU. Pushes whose deadlines
// fall within the same Slot share one context instead, which ends at the
// slot's end, so a deadline is at most a Slot later than asked. That is
// nothing against the seconds a push may take, and what a deadline is for
// (that no push waits for ever) holds. Sharing needs pushes under way
// together: at a few hundred a second a push mostly has a slot of its
// own, as it had a timer of its own before.
package deadline

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// Slot is the width of the slots deadlines are rounded up to.
const Slot = 10 * time.Millisecond

// Shared hands out the shared contexts. The zero value is ready to use.
type Shared struct {
	cur atomic.Pointer[slot] // the slot asked for last: mostly the next one's too

	mu    sync.Mutex
	slots map[int64]*slot
}

// A slot's context is canceled, and its timer stopped, as soon as no
// operation uses it any more: a slot left to its timer would wake an
// idle process at its end, and with a push now and then every push would
// cost a wake-up five seconds later.
type slot struct {
	n       int64 // ends at n*Slot since the Unix epoch
	ctx     context.Context
	cancel  context.CancelFunc
	users   atomic.Int64 // operations using ctx; -1 once let go
	release func()       // what their WithDeadline returned as cancel: one for all of them
}

// WithDeadline returns ctx ending by deadline, as context.WithDeadline
// does. When ctx can never be canceled (it carries only values), the
// context returned shares its end with the other ones under way whose
// deadline falls in the same slot; otherwise ctx's cancellation must
// reach the result, and it is context.WithDeadline's.
//
// Unlike context.WithDeadline's, cancel must be called exactly once, when
// the operation is over (defer it): it counts the slot's users, and the
// context may stay alive after it for the other users of its slot.
func (s *Shared) WithDeadline(ctx context.Context, deadline time.Time) (context.Context, context.CancelFunc) {
	if ctx.Done() != nil {
		return context.WithDeadline(ctx, deadline)
	}
	c := s.acquire(deadline)
	if ctx == context.Background() {
		// No values of its own (an HTTP push's): the slot's context
		// serves as it is, without a sharedCtx made for it.
		return c.ctx, c.release
	}
	if r, ok := ctx.(Roomy); ok {
		if room := r.DeadlineRoom(); room.ctx.slot == nil {
			room.ctx = sharedCtx{ctx, c.ctx}
			return &room.ctx, c.release
		}
	}
	return sharedCtx{ctx, c.ctx}, c.release
}

// Room is memory an operation keeps (in what it has for itself anyway)
// for the first context WithDeadline makes of its own: a sharedCtx
// returned as a context.Context is otherwise boxed, an allocation an
// operation. Once taken it is never written again, so the context stays
// as it was for whoever still holds it; a later one is boxed as before.
// The zero Room is ready. Its size counts: a push's IQ is read into
// one allocation with its Room, near the top of its size class.
type Room struct {
	ctx sharedCtx // taken once its slot is set
}

// Roomy is a context that carries a Room for the contexts made from it.
// Its Room serves one operation's calls, one after the other.
type Roomy interface {
	DeadlineRoom() *Room
}

// acquire returns the slot deadline falls in, counted as used once more.
func (s *Shared) acquire(deadline time.Time) *slot {
	n := (deadline.UnixNano() + int64(Slot) - 1) / int64(Slot)
	if c := s.cur.Load(); c != nil && c.n == n && c.use() {
		return c
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.slots[n]
	if c == nil || !c.use() {
		ctx, cancel := context.WithDeadline(context.Background(), time.Unix(0, n*int64(Slot)))
		c = &slot{n: n, ctx: ctx, cancel: cancel}
		c.users.Store(1)
		c.release = func() { s.release(c) }
		if s.slots == nil {
			s.slots = map[int64]*slot{}
		}
		s.slots[n] = c
	}
	s.cur.Store(c)
	return c
}

// use counts one more user of c, unless c was let go.
func (c *slot) use() bool {
	for {
		u := c.users.Load()
		if u < 0 {
			return false
		}
		if c.users.CompareAndSwap(u, u+1) {
			return true
		}
	}
}

// release counts one user of c fewer, and lets c go after the last.
func (s *Shared) release(c *slot) {
	if c.users.Add(-1) != 0 || !c.users.CompareAndSwap(0, -1) {
		return
	}
	s.mu.Lock()
	if s.slots[c.n] == c {
		delete(s.slots, c.n)
	}
	s.mu.Unlock()
	c.cancel()
}

// sharedCtx is an operation's own context, which only carries values,
// ended by a slot's.
type sharedCtx struct {
	context.Context // the operation's own: its values
	slot            context.Context
}

func (c sharedCtx) Deadline() (time.Time, bool) { return c.slot.Deadline() }
func (c sharedCtx) Done() <-chan struct{}       { return c.slot.Done() }
func (c sharedCtx) Err() error                  { return c.slot.Err() }

// Value looks in the operation's values first, then in the slot's:
// context's own key for the context that cancels, which lets a context
// made from this one be canceled with the slot's without a goroutine to
// watch it, and context.Cause find why it ended.
func (c sharedCtx) Value(key any) any {
	if v := c.Context.Value(key); v != nil {
		return v
	}
	return c.slot.Value(key)
}
