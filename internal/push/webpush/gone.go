package webpush

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/push-appserver/push-appserver/internal/logging"
	"github.com/push-appserver/push-appserver/internal/push"
)

// GoneOptions tune a GoneGuard; the zero value gives the defaults.
type GoneOptions struct {
	// Window is how far back a push service's answers count, and how
	// recent its last success must be. Default DefaultGoneWindow.
	Window time.Duration
	// MaxHosts bounds the push services remembered. Default
	// DefaultGoneMaxHosts.
	MaxHosts int
	// Now is the clock; time.Now when nil.
	Now func() time.Time
}

// DefaultGoneWindow is how long a success vouches for a push service's
// 404 and 410 answers: longer than the redelivery's backoff, so that a
// dead subscription at a quiet UnifiedPush server whose push was held is
// removed on a later attempt once another subscription there took one.
const DefaultGoneWindow = 10 * time.Minute

// DefaultGoneMaxHosts bounds the push services a GoneGuard remembers:
// subscriptions choose them, any number. A service forgotten is judged
// as one never heard from, whose 404 and 410 answers are held: the bound
// can only delay removals, never cause one.
const DefaultGoneMaxHosts = 10_000

const goneBuckets = 10

// UnprovenFailures is how many pushes a push service (origin) may fail
// before it has answered any with success, after which each push to it
// is sent once, and tried again no sooner than a minute later (see
// Unproven).
const UnprovenFailures = 10

// GoneGuard keeps a WebPush app from deleting registrations on 404 and
// 410 answers that its push service gives for every subscription: a
// self-hosted UnifiedPush distributor (ntfy, NextPush, a Gotify bridge)
// behind a reverse proxy that lost its route, or moved away from its
// host, answers 404 to every push, though nothing is wrong with the
// subscriptions. APNS and FCM have the Breaker for their like; its
// judgement is by app, and a WebPush app's subscriptions span many push
// services, so this one judges each push service (origin) by its own
// answers.
//
// A 404 or 410 is taken for a dead subscription only when the push
// service vouches for itself: it answered a push with success within the
// window, no 404 or 410 came between that success and this one, and 404
// and 410 answers are no majority of its successes and gone answers in
// the window. Otherwise the push is a temporary failure (the registration
// is kept, the user's server hears "wait", the push is sent again later)
// and counted (Held). Dead subscriptions come one at a time among a
// service's successes; a misconfigured service's 404s come in a row, of
// which at most the first is taken at its word. A push held because
// another 404 came just before it is judged again when it is sent
// again, after the service's next success.
//
// One GoneGuard per app, kept across reloads (a route is not ours to
// configure); safe for concurrent use.
type GoneGuard struct {
	app  string
	opts GoneOptions
	// holding and resumed log the changes of a service's state, a few
	// lines a second at most: the services are anyone's to choose.
	holding, resumed *logging.Limited

	mu    sync.Mutex
	hosts map[string]*goneHost

	held atomic.Uint64
}

// goneHost is what one push service answered lately.
type goneHost struct {
	lastSuccess, lastAnswer time.Time
	// sinceSuccess counts the 404 and 410 answers since the last
	// success, redeliveries apart.
	sinceSuccess int
	// holding is set while its 404 and 410 answers are held, for the log.
	holding bool
	// unprovenFails counts the pushes it failed while it had answered
	// none with success (see Unproven).
	unprovenFails int
	buckets       [goneBuckets]goneBucket
}

type goneBucket struct {
	slot      int64 // the bucket's start, in bucket widths since the epoch
	ok, gones int32
}

// NewGoneGuard returns a guard for app, logging to logger.
func NewGoneGuard(app string, opts GoneOptions, logger *slog.Logger) *GoneGuard {
	if opts.Window <= 0 {
		opts.Window = DefaultGoneWindow
	}
	opts.Window = max(opts.Window, goneBuckets) // a bucket at least a nanosecond wide
	if opts.MaxHosts <= 0 {
		opts.MaxHosts = DefaultGoneMaxHosts
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	logger = logger.With("app", app)
	return &GoneGuard{app: app, opts: opts,
		holding: logging.NewLimited(logger, opts.Now, slog.LevelWarn, 2,
			"push service answers 404/410 (subscription gone) while it answers no push with success: keeping its registrations and answering 'wait' until it answers successes again; a misconfigured reverse proxy or a moved UnifiedPush server answers so for every subscription",
			"more push services answering 404/410 without successes, not logged"),
		resumed: logging.NewLimited(logger, opts.Now, slog.LevelInfo, 2,
			"push service answers with success again: its 404/410 answers remove registrations again",
			"more push services answering with success again, not logged"),
	}
}

// Held returns how many pushes had their 404 or 410 answer held since
// the guard was made.
func (g *GoneGuard) Held() uint64 { return g.held.Load() }

// asDead is push.IsDeadToken in a function of its own: the target of
// errors.As escapes to the heap, and Judge runs for every push.
func asDead(err error) (*push.DeadTokenError, bool) {
	var d *push.DeadTokenError
	ok := errors.As(err, &d)
	return d, ok
}

// Judge records the outcome of one push to the push service origin and
// returns what the push ends with: err as it is, except a
// *push.DeadTokenError that the service's answers do not vouch for,
// which becomes a *push.TemporaryError. A redelivery's 404 or 410 (ctx
// marked by push.WithRedelivery) is judged but not counted again: one
// held subscription sent again a dozen times would otherwise outvote the
// service's successes.
func (g *GoneGuard) Judge(ctx context.Context, origin string, err error) error {
	var dead *push.DeadTokenError
	if err != nil {
		var ok bool
		if dead, ok = asDead(err); !ok {
			// Neither success nor gone: a failure says nothing of
			// whether the service knows its subscriptions, only
			// (Unproven) whether it is a push service at all.
			g.failed(origin)
			return err
		}
	}
	now := g.opts.Now()
	again := dead != nil && push.IsRedelivery(ctx)

	g.mu.Lock()
	h := g.host(origin, now)
	h.lastAnswer = now
	if dead != nil && h.lastSuccess.IsZero() {
		h.unprovenFails++
	}
	if dead == nil {
		resumed := h.holding
		h.lastSuccess, h.sinceSuccess, h.holding = now, 0, false
		h.bucket(g.opts, now).ok++
		g.mu.Unlock()
		if resumed {
			g.resumed.Log("service", origin)
		}
		return nil
	}
	ok, gones := h.count(g.opts, now)
	if !again {
		// Judged with itself; a redelivery's first attempt is among
		// the window's, while it is recent.
		gones++
	}
	vouched := !h.lastSuccess.IsZero() && now.Sub(h.lastSuccess) < g.opts.Window &&
		h.sinceSuccess == 0 && gones <= ok
	if !again {
		h.sinceSuccess++
		h.bucket(g.opts, now).gones++
	}
	started := !vouched && !h.holding
	if !vouched {
		h.holding = true
	}
	last := h.lastSuccess
	g.mu.Unlock()

	if vouched {
		return err
	}
	g.held.Add(1)
	if started {
		args := []any{"service", origin, "answer", dead.Reason, "successes", ok, "gone", gones, "window", g.opts.Window}
		if !last.IsZero() {
			args = append(args, "last_success", last.UTC().Format(time.RFC3339))
		}
		g.holding.Log(args...)
	}
	// Not wrapping dead: the core would find it and remove the
	// registration all the same.
	return &push.TemporaryError{
		Reason: fmt.Sprintf("kept: %s from %s, which has not vouched for its 404/410 answers with successes lately", dead.Reason, origin),
	}
}

// failed records a push to origin that failed without a 404 or 410.
func (g *GoneGuard) failed(origin string) {
	now := g.opts.Now()
	g.mu.Lock()
	defer g.mu.Unlock()
	h := g.host(origin, now)
	h.lastAnswer = now
	if h.lastSuccess.IsZero() {
		h.unprovenFails++
	}
}

// Unproven reports whether origin has failed UnprovenFailures pushes or
// more and answered none with success since it is remembered. Its
// subscriptions' endpoints are anyone's choice, and nothing says it is a
// push service rather than a third party's web server that a stranger
// registered subscriptions at: retried and redelivered, one push would
// be dozens of requests to it (8 within a 5 s push deadline at 5xx
// answers, about a hundred over 10 minutes of redelivery), where now
// about ten. A push service that answers a success once is judged as
// before.
func (g *GoneGuard) Unproven(origin string) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	h, ok := g.hosts[origin]
	return ok && h.lastSuccess.IsZero() && h.unprovenFails >= UnprovenFailures
}

// host returns origin's record, making it if need be; g.mu is held.
func (g *GoneGuard) host(origin string, now time.Time) *goneHost {
	if h, ok := g.hosts[origin]; ok {
		return h
	}
	if len(g.hosts) >= g.opts.MaxHosts {
		// Forget the services quiet for a window, whose answers no
		// longer count; then, if that is not enough, all of them.
		// Either way a service forgotten has its 404s held until it
		// answers a success again: nothing is removed for it.
		for k, h := range g.hosts {
			if now.Sub(h.lastAnswer) >= g.opts.Window {
				delete(g.hosts, k)
			}
		}
		if len(g.hosts) >= g.opts.MaxHosts {
			clear(g.hosts)
		}
	}
	if g.hosts == nil {
		g.hosts = make(map[string]*goneHost)
	}
	h := &goneHost{}
	g.hosts[origin] = h
	return h
}

// bucket returns the bucket for now, recycling a stale one.
func (h *goneHost) bucket(opts GoneOptions, now time.Time) *goneBucket {
	width := int64(opts.Window / goneBuckets)
	slot := now.UnixNano() / width
	bk := &h.buckets[slot%goneBuckets]
	if bk.slot != slot {
		*bk = goneBucket{slot: slot}
	}
	return bk
}

// count sums the buckets inside the window.
func (h *goneHost) count(opts GoneOptions, now time.Time) (ok, gones int) {
	width := int64(opts.Window / goneBuckets)
	slot := now.UnixNano() / width
	for _, bk := range h.buckets {
		if slot-bk.slot < goneBuckets {
			ok += int(bk.ok)
			gones += int(bk.gones)
		}
	}
	return ok, gones
}
