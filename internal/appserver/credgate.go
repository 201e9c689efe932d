package appserver

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/push-appserver/push-appserver/internal/push"
)

// The credentials gate of an app.
//
// A push service that refuses an app's own credentials or configuration
// (*push.CredentialsRefusedError: a key revoked or mistyped, a topic of
// another team) refuses every push of the app alike until an operator
// mends it. Such pushes are kept for redelivery (push.UntilReconfigured),
// and each of them, tried again on its own backoff, was refused again:
// a thousand pushes held through a ten-minute window made some 16,000
// requests, and with APNS token auth each refusal signed a provider
// token, which Apple takes no more than once every 20 minutes.
//
// So once a push is refused for the app's credentials, the gate closes:
// the app's pushes, new and held, go to no push service, and are answered
// wait and kept as the refused one was, while one push at a time, a
// probe, tries the credentials at the redelivery's backoff (from
// redeliveryBase to redeliveryMaxWait). A probe the service takes opens
// the gate, and the held pushes fall due at once, sent as redelivery
// sends any (redeliveryConcurrency at a time). A reload of the app makes
// the next probe due at once (CredentialsChanged), and a check of the
// credentials the service passed opens the gate (CredentialsAccepted).

// credGate is an app's credentials gate; the zero value is open.
type credGate struct {
	// closed is read without the lock by every push: while the gate
	// is open, that is all a push costs it.
	closed atomic.Bool

	mu sync.Mutex
	// reason is the latest refusal's text, for the answer of the pushes
	// held meanwhile.
	reason string
	// next is when the next probe may go; probing says one is under way.
	next    time.Time
	probing bool
	wait    push.Backoff
}

// errHeld is the failure of a push the gate held: redeliverable, but no
// *push.CredentialsRefusedError, since the push service never saw it (a
// reload may have put new credentials in place that no push has tried
// yet, and the credentials gauge must not take a held push for their
// refusal).
func (g *credGate) errHeld() error {
	return &push.TemporaryError{Reason: "not sent while the push service refuses the app's credentials, " +
		"one push at a time trying them (" + g.reason + ")"}
}

// enter asks whether a push may go to the push service now: yes while the
// gate is open; while it is closed, as the probe if one is due (probe
// true), and otherwise not (held, the push's failure). The clock is read
// only while the gate is closed.
func (g *credGate) enter(now func() time.Time) (probe bool, held error) {
	if !g.closed.Load() {
		return false, nil
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	switch {
	case !g.closed.Load():
		return false, nil
	case g.probing || now().Before(g.next):
		return false, g.errHeld()
	}
	g.probing = true
	return true, nil
}

// probeDue reports whether the gate is closed with a probe due at now
// and none under way; the redelivery loop then takes one push of the app
// out for it.
func (g *credGate) probeDue(now time.Time) bool {
	if !g.closed.Load() {
		return false
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.closed.Load() && !g.probing && !now.Before(g.next)
}

// refused records a push refused for the app's credentials (err), the
// probe's or one sent while the gate was open, and reports whether the
// gate closed on it. wait is the backoff the probes start from.
func (g *credGate) refused(err error, probe bool, now time.Time, wait push.Backoff) (closed bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.reason = err.Error()
	switch {
	case probe:
		g.probing = false
		g.next = now.Add(g.wait.Next())
	case !g.closed.Load():
		g.wait = wait
		g.next = now.Add(g.wait.Next())
		g.closed.Store(true)
		return true
	}
	// Sent before the gate closed: the refusal that closed it says
	// the same.
	return false
}

// passed records a push the service took, or answered for its device
// (which it does only once it took the credentials), and reports whether
// that opened the gate. Only the probe's counts: a push sent before the
// gate closed says nothing of the refusal that closed it.
func (g *credGate) passed(probe bool) (opened bool) {
	if !probe {
		return false
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	g.probing = false
	return g.closed.Swap(false)
}

// probeEnded records a probe whose outcome says nothing of the
// credentials (the service's outage, a timeout, a push it refused for
// itself): the next probe waits its turn of the backoff.
func (g *credGate) probeEnded(now time.Time) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.probing = false
	if g.closed.Load() {
		g.next = now.Add(g.wait.Next())
	}
}

// probeNow makes the next probe due at now, its backoff starting over:
// the app's credentials may have changed (a reload).
func (g *credGate) probeNow(now time.Time) {
	if !g.closed.Load() {
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	g.wait.Reset()
	g.next = now
}

// open opens the gate, and reports whether it was closed: the service
// took the app's credentials outside a push (a check).
func (g *credGate) open() bool {
	if !g.closed.Load() {
		return false
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.closed.Swap(false)
}

// gateWait is the backoff of an app's probes: the redelivery's.
func (s *Service) gateWait() push.Backoff {
	if r := s.redeliver; r != nil {
		return push.Backoff{Base: r.base, Max: r.maxWait}
	}
	return push.Backoff{Base: redeliveryBase, Max: redeliveryMaxWait}
}

// sendGated is sendBounded behind app's credentials gate: a push the
// gate holds goes to no push service and fails at once as one to try
// again (see credGate).
func (s *Service) sendGated(ctx context.Context, app *App, n push.Notification, start time.Time) (end time.Time, err error) {
	probe, held := app.gate.enter(s.opts.Now)
	if held != nil {
		return time.Now(), held
	}
	end, err = s.sendBounded(ctx, app, n, start)
	if err != nil || probe {
		s.gateOutcome(app, probe, err, end.Sub(start))
	}
	return end, err
}

// gateOutcome tells app's gate what a push it let through, which took
// d, came to.
func (s *Service) gateOutcome(app *App, probe bool, err error, d time.Duration) {
	var cr *push.CredentialsRefusedError
	refused := errors.As(err, &cr)
	// A refusal for some of the app's devices alone (Partial: an FCM
	// app's iOS devices, say) holds none of its other pushes. The push
	// service gives it only once it took the app's own credentials
	// (FCM authenticates and authorizes the request before it asks
	// APNs for the device's platform key), so a probe refused so
	// proves them as one it answered for its device does.
	partial := refused && cr.Partial
	_, dead := push.IsDeadToken(err)
	switch {
	case refused && !partial:
		if app.gate.refused(err, probe, s.opts.Now(), s.gateWait()) {
			s.logger.Warn("holding the app's pushes while its push service refuses the app's credentials; one at a time tries them until it takes them, or a reload",
				"app", app.Name, "reason", cr.Reason, "check", cr.Check)
		}
	case !probe:
	case err == nil || dead || partial:
		if app.gate.passed(true) {
			why := "a push went through"
			if partial {
				why = "a push was refused for its device's platform key alone"
			}
			s.credentialsBack(app.Name, why)
			// The push that tried them is one held, whose success
			// the Observer's Pushed does not hear of: without this
			// the credentials stayed refused in the metrics until a
			// fresh push of the app came.
			if o, ok := s.opts.Observer.(CredentialsObserver); ok {
				o.CredentialsTaken(app.Name, d)
			}
		}
	default:
		app.gate.probeEnded(s.opts.Now())
	}
}

// credentialsBack releases the pushes of app held while its credentials
// were refused: they fall due at once.
func (s *Service) credentialsBack(app, why string) {
	n := s.redeliver.releaseApp(app)
	s.logger.Info("the push service takes the app's credentials again; the pushes held meanwhile are sent", "app", app, "why", why, "held", n)
}

// CredentialsChanged says app's credentials or options may have changed
// (a reload built it a new backend, or asked its push service again):
// while its pushes are held for a refusal of its credentials, the next
// probe goes at once rather than at its turn of the backoff.
func (s *Service) CredentialsChanged(app string) {
	if a, ok := s.apps[app]; ok {
		a.gate.probeNow(s.opts.Now())
	}
}

// CredentialsAccepted says app's push service took its credentials (a
// check of them passed): the pushes held for their refusal are released
// at once.
func (s *Service) CredentialsAccepted(app string) {
	if a, ok := s.apps[app]; ok && a.gate.open() {
		s.credentialsBack(app, "a check of the credentials passed")
	}
}

// gateQuota is how many of app's due pushes the redelivery loop may take
// out now, at most limit: all while its gate is open, the one probe when
// one is due, and none otherwise. Pushes not read yet (app "") have no
// gate.
func (s *Service) gateQuota(app string, limit int) int {
	a, ok := s.apps[app]
	if !ok || !a.gate.closed.Load() {
		return limit
	}
	if a.gate.probeDue(s.opts.Now()) {
		return 1
	}
	return 0
}
