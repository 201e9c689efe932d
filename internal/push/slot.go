package push

import (
	"context"
	"sync/atomic"
)

// Places bound the pushes an input (the XMPP component's connection,
// push-batch) has under way: working places for the pushes doing work,
// and waiting places for those that only wait on a timer. Each push holds
// one through its Slot.
//
// A push waiting on a timer (a throttle window, a retry's backoff; see
// Wait) does no work, and holding a working place meanwhile it would hold
// up fresh pushes: whoever can ask for pushes to nodes of their own
// (anyone may register some) would hold every place for a window by
// asking for two pushes of each. It trades its working place for a
// waiting one instead (Pause). A waiting push is still a goroutine, with
// the stack its push grew (several KiB), so the waiting places are
// bounded too: with none free, a push waits holding its working place, as
// all did before there were waiting places.
//
// A push waiting for a push service someone else chose (Elsewhere) gives
// its working place up whatever the bound (PauseElsewhere): its backend
// bounds such requests itself, and a few endpoints that never answer
// would otherwise fill the waiting places and then hold every working
// place. So does a push with its app's push service (Leave), for its
// whole request, waits included: the core bounds those per app, and an
// APNS or FCM service that stalls would otherwise hold every working
// place until its pushes' deadline.
type Places struct {
	// fresh are the working places of pushes that have not waited yet,
	// resumed those of pushes back from a wait: the same pool, or one of
	// their own (NewSplitPlaces).
	fresh, resumed, waiting chan struct{}
}

// NewPlaces returns places of which at most working pushes hold a working
// place, and at most waiting more a waiting one. A push back from a wait
// takes a working place again as a fresh one does.
func NewPlaces(working, waiting int) *Places {
	w := make(chan struct{}, working)
	return &Places{fresh: w, resumed: w, waiting: make(chan struct{}, waiting)}
}

// NewSplitPlaces is NewPlaces with working places of their own for the
// pushes back from a wait, resumed of them: those then never queue in
// front of fresh ones, nor fresh ones in front of them.
func NewSplitPlaces(fresh, resumed, waiting int) *Places {
	return &Places{
		fresh:   make(chan struct{}, fresh),
		resumed: make(chan struct{}, resumed),
		waiting: make(chan struct{}, waiting),
	}
}

// Slot is one push's place among Places, and the push's context, which
// carries the slot for Wait and Elsewhere (it is their Bounded). A slot
// takes a fresh working place (Take), trades it for a waiting one while
// the push waits on a timer (Pause) or gives it up while the push waits
// on a push service someone else chose (PauseElsewhere), takes a resumed
// working place again before the push goes on (Resume), holds none for
// the push's whole request to its push service (Leave, then Return), and
// gives back whatever it holds once the push is done (Release).
//
// The zero Slot is ready for Init. A caller keeps it in memory it has for
// the push anyway: the slot and its context then cost no allocation.
// Calls for one push are one after the other, but Release may come from
// another goroutine than the push's.
type Slot struct {
	held atomic.Pointer[chan struct{}] // &p.fresh, &p.resumed, &p.waiting or nil
	p    *Places
	// left is set from Leave to Return: the push holds no place, and
	// its waits take none. Of the push's calls alone, as they are one
	// after the other.
	left bool
	ctx  WaitingContext // the push's context, carrying the slot
}

// Init makes s, holding nothing, the slot of a push under ctx among p.
func (s *Slot) Init(ctx context.Context, p *Places) {
	s.p, s.left = p, false
	s.ctx = WaitingContext{Context: ctx, Waiting: s}
}

// Context is the push's context: Init's, carrying s.
func (s *Slot) Context() context.Context { return &s.ctx }

// Take waits for a fresh working place until ctx ends, and holds it.
func (s *Slot) Take(ctx context.Context) error {
	if done := ctx.Done(); done == nil {
		// A plain send: a select costs the XMPP component's reader,
		// which takes a place for every IQ, a few hundred
		// instructions more.
		s.p.fresh <- struct{}{}
	} else {
		select {
		case s.p.fresh <- struct{}{}:
		case <-done:
			return ctx.Err()
		}
	}
	s.held.Store(&s.p.fresh)
	return nil
}

// Pause trades the working place held for a waiting one; with none free,
// the push waits holding its working place.
func (s *Slot) Pause() {
	held := s.held.Load()
	if s.left || held == nil || held == &s.p.waiting {
		return
	}
	select {
	case s.p.waiting <- struct{}{}:
		s.held.Store(&s.p.waiting)
		<-*held
	default:
	}
}

// TryPause is Pause that, with no waiting place free, keeps the working
// place and reports false rather than letting the push wait holding it:
// a push that may as well not wait (a throttle's delayed push, which the
// throttle may refuse instead) then ends at once (see WaitOrRefuse).
func (s *Slot) TryPause() bool {
	held := s.held.Load()
	if s.left || held == nil || held == &s.p.waiting {
		return true
	}
	select {
	case s.p.waiting <- struct{}{}:
		s.held.Store(&s.p.waiting)
		<-*held
		return true
	default:
		return false
	}
}

// PauseElsewhere gives the place held back outright (see Places).
func (s *Slot) PauseElsewhere() { s.Release() }

// Resume takes a resumed working place for a push that gave its own up,
// and then gives its waiting place, if any, back. Should ctx end first,
// the push ends holding what it held, and Release gives it back.
func (s *Slot) Resume(ctx context.Context) error {
	held := s.held.Load()
	if held == &s.p.fresh || held == &s.p.resumed {
		return nil // it waited holding its working place
	}
	if s.left {
		return nil // with its push service still: Return takes one
	}
	select {
	case s.p.resumed <- struct{}{}:
		s.held.Store(&s.p.resumed)
		if held != nil {
			<-*held
		}
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Leave gives the place held back for the push's whole request to its
// push service: until Return, Pause, PauseElsewhere and Resume neither
// take nor give one (see Places).
func (s *Slot) Leave() {
	s.Release()
	s.left = true
}

// Return takes a resumed working place for a push that Left, waiting for
// one as long as it takes: places are held only by pushes that end within
// their deadline, or by answers the writer takes or fails within its own.
func (s *Slot) Return() {
	if !s.left {
		return
	}
	s.left = false
	s.p.resumed <- struct{}{}
	s.held.Store(&s.p.resumed)
}

// Release gives back whatever s holds, if anything.
func (s *Slot) Release() {
	if held := s.held.Swap(nil); held != nil {
		<-*held
	}
}
