package push

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"
)

// SuspectTokenError is an answer that says the token is bad, but that a
// push service gives just the same for every token when the app itself is
// misconfigured: APNS BadDeviceToken for a production token sent to the
// sandbox, DeviceTokenNotForTopic for a wrong topic, FCM SENDER_ID_MISMATCH
// for another project's key. A backend returns it from its attempt and
// hands the outcome to its Breaker, which decides what it means.
type SuspectTokenError struct {
	Reason string // the service's answer, e.g. "BadDeviceToken"
	// Cause is the likely misconfiguration if most answers look like this,
	// for the operator: "sandbox/production mismatch?".
	Cause string
}

func (e *SuspectTokenError) Error() string {
	return "push service refused the token: " + e.Reason
}

// BreakerOptions tune a Breaker; the zero value gives the defaults.
type BreakerOptions struct {
	// Window is how far back answers count. Default one minute.
	Window time.Duration
	// MinAnswers is how many answers the window must hold before the app
	// can be judged misconfigured. Default 20.
	MinAnswers int
	// Now is the clock; time.Now when nil.
	Now func() time.Time
}

const breakerBuckets = 6

// Breaker keeps one app from wiping its registrations when the app, not
// the tokens, is wrong.
//
// A suspect answer is taken at its word (the token is dead) only where
// the app's configuration has proven itself: a push of the app has gone
// through since it was configured (the Breaker's, from NewBreaker or Fresh),
// to the same push service where the app reaches several (a WebPush
// app's origins). Before that, the answer may be ours: a production app
// left on the sandbox refuses every token, and a server with a few pushes
// an hour would otherwise lose a registration with each. Such a push is a
// temporary failure (the user's server hears "wait", nothing is deleted),
// and a warning names the likely cause.
//
// Once proven, suspect answers that are a minority of the recent answers
// of their push service, and of this configuration's last few dozen
// successes and refusals there since it proved itself (after a reload
// the recent answers are mostly the earlier configuration's), are dead
// tokens; once they are more than half of
// at least MinAnswers answers in the window (a key or setting that
// stopped working since), that service is marked refusing: suspect
// answers from it become temporary failures again, an error is logged
// once with the likely cause, and the mark clears by itself at a
// success once suspect answers are no more than half there again. Each
// push service is judged by its own answers: a WebPush subscription
// chooses its push service, so
// one that accepts everything (or one of an attacker's) must not outvote
// another that refuses our key, nor one that refuses everything mark the
// whole app. One Breaker per configuration of an app, shared by all of
// its pushes; safe for concurrent use.
type Breaker struct {
	// The app's answers and mark, shared with the Breakers Fresh makes
	// for its later configurations.
	*breakerState
	// proven holds the scopes with a success under this configuration;
	// provenAll is the scope "", the only one of APNS and FCM. Guarded
	// by mu.
	proven    map[string]struct{}
	provenAll bool
	// since and sinceAll count, per proven scope (sinceAll for ""), the
	// answers and refusals since it proved itself under this
	// configuration: while the window holds too few answers to judge, a
	// refusal is a dead token only if refusals are a minority of these.
	// One development build's success would otherwise prove a production
	// app left on the sandbox, and on a quiet server every user's token
	// after it would be taken as dead. Guarded by mu.
	since    map[string]*tally
	sinceAll tally
	// warned is when an unproven refusal was last logged.
	warned time.Time
}

type breakerState struct {
	app    string
	opts   BreakerOptions
	logger *slog.Logger

	mu sync.Mutex
	// all holds every answer of the app: the window of the scope "",
	// the only push service of APNS and FCM apps, and for the others
	// the whole against which the share of refusing services is
	// judged (Misconfigured). scopes holds the other scopes' windows.
	all    breakerWindow
	scopes map[string]*breakerWindow
	// tripped counts the windows marked refusing.
	tripped int
	// overflow judges the scopes new while scopes is full of marked
	// windows; always marked, never counted in tripped.
	overflow breakerWindow
}

// breakerWindow is one push service's recent answers and its mark.
type breakerWindow struct {
	buckets [breakerBuckets]breakerBucket
	tripped bool
	cause   string
}

// maxProvenScopes bounds the scopes a Breaker remembers (those proven,
// and the windows of answers): a WebPush app's subscriptions may name any
// number of push services. Past it the memory starts again, and each
// scope proves itself anew; a window marked refusing is kept.
const maxProvenScopes = 10_000

// tally is a scope's answers and refusals since it proved itself.
type tally struct{ answers, suspects int }

type breakerBucket struct {
	start            time.Time
	answers, suspect int
}

// NewBreaker returns a breaker for app, logging state changes to logger.
func NewBreaker(app string, opts BreakerOptions, logger *slog.Logger) *Breaker {
	if opts.Window <= 0 {
		opts.Window = time.Minute
	}
	if opts.MinAnswers <= 0 {
		opts.MinAnswers = 20
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &Breaker{breakerState: &breakerState{app: app, opts: opts, logger: logger,
		overflow: breakerWindow{tripped: true, cause: "too many push services refusing at once"}}}
}

// asSuspect is errors.As for a *SuspectTokenError, in a function of its
// own: the target errors.As takes escapes to the heap, and Judge, called
// for every push, would allocate it for a nil error too.
func asSuspect(err error) (*SuspectTokenError, bool) {
	var s *SuspectTokenError
	ok := errors.As(err, &s)
	return s, ok
}

// Judge is JudgeAt for an app that reaches one push service.
func (b *Breaker) Judge(err error) error { return b.JudgeAt("", err) }

// JudgeCtx is JudgeAt for a push sent under ctx. A redelivery attempt's
// refusal (see WithRedelivery) is judged but not counted again, neither
// in what the app heard since it proved itself nor in the window: a
// refused token tried again a dozen times in its redelivery window would
// otherwise outvote a quiet app's successes, and no refused token of the
// app would ever be removed; and a few such tokens would fill the window
// and judge the app on far fewer than MinAnswers pushes. It is judged as
// one refusal more than those counted, since its first attempt may not be
// among them (refused before the app proved itself, or before a reload).
func (b *Breaker) JudgeCtx(ctx context.Context, scope string, err error) error {
	return b.judge(scope, err, err != nil && IsRedelivery(ctx))
}

type redeliveryKey struct{}

// WithRedelivery returns a context that marks a push as one tried again
// after it failed, for the breaker (JudgeCtx).
func WithRedelivery(ctx context.Context) context.Context {
	return context.WithValue(ctx, redeliveryKey{}, true)
}

// IsRedelivery reports whether ctx marks a push tried again
// (WithRedelivery).
func IsRedelivery(ctx context.Context) bool {
	again, _ := ctx.Value(redeliveryKey{}).(bool)
	return again
}

// JudgeAt records the outcome of one push to the push service scope names
// ("" for the app's only one) and returns what the push should end with.
// nil and errors other than *SuspectTokenError pass unchanged; a suspect
// answer becomes a *DeadTokenError while the app has proven itself to
// scope and looks healthy, and a *TemporaryError otherwise.
func (b *Breaker) JudgeAt(scope string, err error) error { return b.judge(scope, err, false) }

// judge is JudgeAt; again says the push is a redelivery attempt, whose
// refusal is not counted (see JudgeCtx).
func (b *Breaker) judge(scope string, err error, again bool) error {
	var s *SuspectTokenError
	suspect := false
	if err != nil {
		s, suspect = asSuspect(err)
	}
	now := b.opts.Now()

	b.mu.Lock()
	if err == nil {
		b.prove(scope)
	}
	proven := b.isProven(scope)
	warn := suspect && !proven && now.Sub(b.warned) >= b.opts.Window
	if warn {
		b.warned = now
	}
	w := b.window(scope)
	// A transient failure (no connection, a timeout, a 5xx or 429) says
	// nothing of the tokens: counted as an answer, a network blip would
	// outvote the service's refusals.
	counted := (!suspect || !again) && (suspect || err == nil || !IsTemporary(err))
	if counted {
		b.all.add(b.opts, now, suspect)
		if w != &b.all {
			w.add(b.opts, now, suspect)
		}
	}
	var changed, tripped bool
	// Only a suspect answer can trip the breaker, and only a success can
	// clear it: a success on a healthy app, nearly every push, need not
	// sum the window.
	var answers, suspects int
	if suspect || w.tripped {
		answers, suspects = w.count(b.opts, now)
	}
	switch {
	case !w.tripped && suspect && answers >= b.opts.MinAnswers && 2*suspects > answers:
		w.tripped, w.cause, changed = true, s.Cause, true
		b.tripped++
	case w.tripped && !suspect && err == nil && 2*suspects <= answers && w != &b.overflow:
		w.tripped, w.cause, changed = false, "", true
		b.tripped--
	}
	tripped, cause := w.tripped, w.cause
	var record tally
	if changed && !tripped {
		// Answering normally again: judged afresh from here.
		*b.sinceProven(scope) = tally{}
	}
	if proven && !tripped {
		t := b.sinceProven(scope)
		// Successes and refusals only: a dead token's 410 or another
		// failure is no success of the configuration.
		if counted && (suspect || err == nil) {
			t.answers++
			if suspect {
				t.suspects++
			}
		}
		record = *t
		if !counted {
			// Judged as one refusal more: its first attempt may not be
			// among these (refused before the proof, or under an
			// earlier configuration). Kept only when it is taken for a
			// dead token, which ends its attempts: a refusal kept for
			// another attempt would be counted again with each.
			record.answers++
			record.suspects++
			if suspect && 2*record.suspects < record.answers {
				*t = record
			}
		}
		// A memory of MinAnswers answers or so, as the window's: months
		// of successes must not outvote a refusal that starts today.
		if t.answers >= 2*b.opts.MinAnswers {
			t.answers, t.suspects = t.answers/2, (t.suspects+1)/2
		}
	}
	b.mu.Unlock()

	if changed && tripped {
		b.logger.Error("app looks misconfigured: most of its pushes are refused for their token; keeping the registrations and answering 'wait' until pushes succeed again",
			"app", b.app, "service", scope, "answer", s.Reason, "likely_cause", cause, "refused", suspects, "answers", answers, "window", b.opts.Window)
	} else if changed {
		b.logger.Info("app answers normally again", "app", b.app, "service", scope)
	}
	if warn {
		b.logger.Warn("push service refuses a token, but no push of this app has gone through there since it was configured: keeping the registration and answering 'wait', since the configuration may be at fault",
			"app", b.app, "service", scope, "answer", s.Reason, "likely_cause", s.Cause)
	}
	if !suspect {
		return err
	}
	if tripped {
		return &TemporaryError{Reason: fmt.Sprintf("app looks misconfigured (%s, %s)", s.Reason, cause), Err: err}
	}
	if !proven {
		return &TemporaryError{Reason: fmt.Sprintf("refused (%s) before any push of the app went through: %s", s.Reason, s.Cause), Err: err}
	}
	if 2*record.suspects >= record.answers {
		// Not tripped (too few answers in the window, or the window
		// Fresh shares holds the earlier configuration's successes),
		// but refusals are no minority of what this configuration heard
		// since it proved itself: the configuration may be at fault.
		return &TemporaryError{Reason: fmt.Sprintf("refused (%s) as often as not since the app's configuration proved itself: %s", s.Reason, s.Cause), Err: err}
	}
	return &DeadTokenError{Since: now, Reason: s.Reason, Suspect: true}
}

// Fresh returns a Breaker for a new configuration of the app (a reload
// rebuilds its backend): it shares the app's recent answers and its mark,
// which the health page and the metrics read from any of them, but has
// proven nothing yet. Pushes of the old configuration still under way go
// on proving the old one only.
func (b *Breaker) Fresh() *Breaker {
	return &Breaker{breakerState: b.breakerState}
}

// prove records a success at scope; b.mu is held.
func (b *Breaker) prove(scope string) {
	if scope == "" {
		b.provenAll = true
		return
	}
	if _, ok := b.proven[scope]; ok {
		return
	}
	if b.proven == nil || len(b.proven) >= maxProvenScopes {
		b.proven = make(map[string]struct{})
	}
	b.proven[scope] = struct{}{}
}

// sinceProven returns scope's tally since it proved itself; b.mu is held.
func (b *Breaker) sinceProven(scope string) *tally {
	if scope == "" {
		return &b.sinceAll
	}
	if t, ok := b.since[scope]; ok {
		return t
	}
	if b.since == nil || len(b.since) >= maxProvenScopes {
		b.since = make(map[string]*tally)
	}
	t := &tally{}
	b.since[scope] = t
	return t
}

// isProven reports whether scope has seen a success; b.mu is held.
func (b *Breaker) isProven(scope string) bool {
	if scope == "" {
		return b.provenAll
	}
	_, ok := b.proven[scope]
	return ok
}

// window returns scope's window of answers, making it if need be; b.mu
// is held. An app of one push service judges by all of its answers.
func (b *Breaker) window(scope string) *breakerWindow {
	if scope == "" {
		return &b.all
	}
	if w, ok := b.scopes[scope]; ok {
		return w
	}
	if len(b.scopes) >= maxProvenScopes {
		// Forget the unmarked windows: at most a minute of their
		// answers, which their services give again.
		for k, w := range b.scopes {
			if !w.tripped {
				delete(b.scopes, k)
			}
		}
		if len(b.scopes) >= maxProvenScopes/2 {
			// Marked windows past half the bound: every mark is kept
			// (subscriptions choose their service, and dropping one
			// would let anyone with enough refusing services of their
			// own unmark a real one). New services share one window
			// that is always marked: their refusals keep the
			// registrations until marks clear.
			return &b.overflow
		}
	}
	if b.scopes == nil {
		b.scopes = make(map[string]*breakerWindow)
	}
	w := &breakerWindow{}
	b.scopes[scope] = w
	return w
}

// Misconfigured reports whether the app is marked misconfigured now, and
// the likely cause, for health checks, readiness and metrics: its only
// push service refuses it, or those that do gave most of its answers in
// the window (a WebPush app with one subscription at a service that
// refuses everything is not down).
func (b *Breaker) Misconfigured() (bool, string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.all.tripped {
		return true, b.all.cause
	}
	if b.tripped == 0 {
		return false, ""
	}
	now := b.opts.Now()
	all, _ := b.all.count(b.opts, now)
	refusing, cause := 0, ""
	// A key of ours that stopped working is refused by every service;
	// one refusing while as many others answer normally is that
	// service's doing, however many of the answers it gave.
	refusingScopes, normalScopes := 0, 0
	for _, w := range b.scopes {
		// A service too quiet to be marked, refusing most of what it
		// was sent, does not answer normally either.
		n, s := w.count(b.opts, now)
		switch {
		case n == 0:
		case w.tripped || 2*s > n:
			refusing += n
			if w.tripped {
				cause = w.cause
			}
			refusingScopes++
		default:
			normalScopes++
		}
	}
	if all >= b.opts.MinAnswers && 2*refusing > all && refusingScopes > normalScopes {
		return true, cause
	}
	return false, ""
}

// add counts one answer at now.
func (w *breakerWindow) add(opts BreakerOptions, now time.Time, suspect bool) {
	bk := w.bucket(opts, now)
	bk.answers++
	if suspect {
		bk.suspect++
	}
}

// bucket returns the bucket for now, recycling a stale one.
func (w *breakerWindow) bucket(opts BreakerOptions, now time.Time) *breakerBucket {
	width := opts.Window / breakerBuckets
	start := now.Truncate(width)
	bk := &w.buckets[(start.UnixNano()/int64(width))%breakerBuckets]
	if !bk.start.Equal(start) {
		*bk = breakerBucket{start: start}
	}
	return bk
}

// count sums the buckets still inside the window.
func (w *breakerWindow) count(opts BreakerOptions, now time.Time) (answers, suspects int) {
	for _, bk := range w.buckets {
		if now.Sub(bk.start) < opts.Window {
			answers += bk.answers
			suspects += bk.suspect
		}
	}
	return answers, suspects
}
