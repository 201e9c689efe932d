package push

import (
	"context"
	"errors"
	"time"

	"github.com/push-appserver/push-appserver/internal/deadline"
)

// Waiting is how a caller that bounds concurrent pushes (the XMPP
// component's in-flight slots) learns that a push only waits on a timer: a
// throttle window or a retry's backoff.
type Waiting interface {
	// Pause gives the push's slot back.
	Pause()
	// Resume takes one again before the push does work; it fails only
	// when ctx ends first, and the push then ends without one.
	Resume(ctx context.Context) error
}

// Bounded is a Waiting that bounds the pushes whose Pause gives their
// slot up, and lets one past its bound wait holding it. Elsewhere calls
// PauseElsewhere instead, which gives the slot up whatever the bound: the
// backend that asks a push service someone else chose bounds those
// requests itself, and a few endpoints that never answer would otherwise
// take every place Pause has and then hold the slots.
type Bounded interface {
	Waiting
	PauseElsewhere()
}

// WaitingFuncs is a Waiting made of two functions.
type WaitingFuncs struct {
	PauseFunc  func()
	ResumeFunc func(ctx context.Context) error
}

func (w WaitingFuncs) Pause()                           { w.PauseFunc() }
func (w WaitingFuncs) Resume(ctx context.Context) error { return w.ResumeFunc(ctx) }

type waitingKey struct{}

// WithWaiting returns ctx carrying w, for Wait to call.
func WithWaiting(ctx context.Context, w Waiting) context.Context {
	return &WaitingContext{Context: ctx, Waiting: w}
}

// WaitingContext is a context carrying a Waiting, as WithWaiting's. A
// caller that makes a Waiting for every push can embed one in it, and
// have the Waiting and its context in one allocation instead of two.
type WaitingContext struct {
	context.Context
	Waiting Waiting
	room    deadline.Room
}

// DeadlineRoom makes c a deadline.Roomy: the push's deadline, set on c,
// takes memory that c's own holder keeps for the push (see Slot).
func (c *WaitingContext) DeadlineRoom() *deadline.Room { return &c.room }

var _ deadline.Roomy = (*WaitingContext)(nil)

func (c *WaitingContext) Value(key any) any {
	switch key {
	case waitingKey{}:
		return c.Waiting
	case ownKey{}:
		return c
	}
	return c.Context.Value(key)
}

// ownKey asks a context that carries a value of this package (a
// WaitingContext, an answer hook's) for itself: Detach finds them all
// with one walk of the context chain instead of one walk each.
type ownKey struct{}

// Wait sleeps for d unless ctx ends first, without holding the caller's
// concurrency slot meanwhile (see Waiting). Backends wait between retries
// with it, so that pushes waiting to retry do not hold up fresh ones.
func Wait(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	w, hooked := ctx.Value(waitingKey{}).(Waiting)
	if hooked {
		w.Pause()
	}
	t := time.NewTimer(d)
	var err error
	select {
	case <-t.C:
	case <-ctx.Done():
		t.Stop()
		err = ctx.Err()
	}
	if hooked {
		if rerr := w.Resume(ctx); err == nil {
			err = rerr
		}
	}
	return err
}

// ErrNoWaitingPlace is WaitOrRefuse's answer when every place to wait
// without a working place is taken.
var ErrNoWaitingPlace = errors.New("no place left to wait")

// tryPauser is a Waiting that can tell when it has no place to wait in
// without holding its working place (a Slot).
type tryPauser interface {
	TryPause() bool
}

// WaitOrRefuse is Wait for a push that may as well not be sent (a
// throttle's delayed push, which stands for pushes already refused): when
// ctx's Waiting has no place left to wait without its working place, it
// returns ErrNoWaitingPlace at once rather than waiting holding that
// place. Held, such waits stop the input the push came from (the XMPP
// component's reader) until they end, and with it every other sender's
// pushes: whoever can ask for two pushes within the throttle's window at
// each of a few thousand nodes of their own would stop it for a window
// at a time.
func WaitOrRefuse(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	if p, ok := ctx.Value(waitingKey{}).(tryPauser); ok && !p.TryPause() {
		return ErrNoWaitingPlace
	}
	// Paused already, Wait's Pause keeps the waiting place.
	return Wait(ctx, d)
}

// Paused is a push that traded its working place for a waiting one
// (Pause), until Resume.
type Paused struct{ w Waiting }

// Pause trades ctx's working place for a waiting one, as Wait does, for
// a wait that does no work but is not on a timer: the write of a push
// kept for redelivery, which the push's answer waits for, done by
// another goroutine. A push answered late so would otherwise hold a
// working place of the XMPP connection meanwhile, and pushes failing
// during an outage of one push service, with a registry slow to write,
// would hold up every other app's pushes on it. Without a Waiting in
// ctx it gives nothing up.
func Pause(ctx context.Context) Paused {
	w, _ := ctx.Value(waitingKey{}).(Waiting)
	if w != nil {
		w.Pause()
	}
	return Paused{w}
}

// Resume takes a working place again (see Waiting.Resume).
func (p Paused) Resume(ctx context.Context) {
	if p.w != nil {
		p.w.Resume(ctx)
	}
}

// Elsewhere runs fn, a push's request to a service that someone else
// chose and that may take its time (a WebPush subscription names its
// push service), without holding ctx's concurrency slot meanwhile: a
// few pushes to an endpoint that never answers would otherwise hold every
// slot of the XMPP connection, and every other user's pushes with them.
// The caller bounds such requests itself. The slot is taken again before
// Elsewhere returns fn's error; should ctx end first, the push goes on
// without one, since what remains is to say how it went.
func Elsewhere(ctx context.Context, fn func() error) error {
	w, hooked := ctx.Value(waitingKey{}).(Waiting)
	if b, ok := w.(Bounded); ok {
		b.PauseElsewhere()
	} else if hooked {
		w.Pause()
	}
	err := fn()
	if hooked {
		w.Resume(ctx)
	}
	return err
}

// Detach returns the context of a push asked for under ctx that is to
// outlive it (its caller may hang up): one that never ends, carrying the
// values of this package that ctx carries (a Waiting, an answer hook),
// which are all a push reads. context.WithoutCancel would carry every
// value, but its Value allocates at each lookup, and a push looks up a
// few. A request's context chain is long (net/http's, ours), so Detach
// walks it once for all of them rather than once for each.
func Detach(ctx context.Context) context.Context {
	var (
		w                Waiting
		hook             func(Answer)
		sawWait, sawHook bool
	)
	// The first of each kind met is the innermost, the one Value finds.
walk:
	for c := ctx; !sawWait || !sawHook; {
		switch o := c.Value(ownKey{}).(type) {
		case *WaitingContext:
			if !sawWait {
				w, sawWait = o.Waiting, true
			}
			c = o.Context
		case *hookContext:
			if !sawHook {
				hook, sawHook = o.fn, true
			}
			c = o.Context
		default:
			break walk
		}
	}
	out := context.Background()
	if w != nil {
		out = WithWaiting(out, w)
	}
	if hook != nil {
		out = WithAnswerHook(out, hook)
	}
	return out
}

// leaver is a Waiting whose push can leave its place for the whole of
// its request to its push service (a Slot).
type leaver interface {
	Leave()
	Return()
}

// Leave gives up ctx's working place while the push is with its push
// service, its retries and their waits included, until the Return of
// what it returns: an APNS or FCM service that takes requests and answers
// none would otherwise have its pushes hold every place of the XMPP
// connection they came from until their deadline, and every other app's
// pushes with them. Meanwhile Wait and Elsewhere take no place either.
// The caller bounds such pushes itself (the core: so many an app).
// Without a Slot in ctx it gives nothing up.
func Leave(ctx context.Context) Away {
	l, _ := ctx.Value(waitingKey{}).(leaver)
	if l != nil {
		l.Leave()
	}
	return Away{l}
}

// Away is a push that Left its place: a value, not a function, so that
// it costs the push no allocation, and the context is searched once.
type Away struct{ l leaver }

// Return takes a working place again once the push service answered,
// waiting for one even when the push's context has ended: what remains
// (recording the outcome, answering) holds a place as the rest of the
// push did, so that answers the XMPP server does not read stop the
// reader again rather than pile up in goroutines.
func (a Away) Return() {
	if a.l != nil {
		a.l.Return()
	}
}
