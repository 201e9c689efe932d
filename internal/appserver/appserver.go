// Package appserver is the core of the push app server: it registers and
// unregisters devices, checks and throttles pushes, hands them to the push
// backend of the registration's app, and removes registrations whose tokens
// a push service reports dead. The XMPP component, the ad-hoc commands and
// the HTTP API are thin adapters over Service; nothing here knows XML or
// HTTP.
package appserver

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/maphash"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/push-appserver/push-appserver/internal/deadline"
	"github.com/push-appserver/push-appserver/internal/logging"
	"github.com/push-appserver/push-appserver/internal/push"
	"github.com/push-appserver/push-appserver/internal/ratelimit"
	"github.com/push-appserver/push-appserver/internal/registry"
)

// Limits on registration input, so a client cannot fill the registry with
// huge records.
const (
	MaxNodeLen  = 256
	MaxTokenLen = 4096
	MaxTypeLen  = 64
)

// App is one configured push target. A registration's type names it.
type App struct {
	Name     string
	Priority push.Priority
	Backend  push.Backend
	// Deadline is how long the backend gives one push, retries included
	// (the app's push_deadline); 0 when it sets none. The service sets
	// it on the context it sends with, when it ends before PushTimeout,
	// so the backend finds it there and starts no timer of its own. A
	// Backend that is a PushDeadliner (one a reload swaps, with its
	// deadline) is asked at each push instead.
	Deadline time.Duration

	deadliner PushDeadliner // Backend, when it is one
	// canonical is Backend, when it is one: the device limit goes by
	// the spelling the push service takes as one device.
	canonical push.TokenCanonicalizer
	// devicer is Backend, when it names a device apart from its token
	// (WebPush: by its subscription's endpoint); it comes before
	// canonical.
	devicer push.DeviceKeyer
	// inFlight counts the app's pushes with its push service (see
	// sendBounded).
	inFlight *atomic.Int64
	// flow tells a busy app's stalled from its slow (see sendBounded).
	flow *appFlow
	// gate holds the app's pushes back while its push service refuses
	// its credentials (see credGate).
	gate *credGate
}

// appFlow is what sendBounded knows of an app's push service: when it
// last answered, how long its answers take, and when its pushes last
// began to be under way. Its moments are readings of the monotonic clock
// (elapsed): on the wall clock, a step back by NTP or an operator's date
// would make a silence look that much shorter, and hide a stall as long.
type appFlow struct {
	elapsed            func() time.Duration // the monotonic clock: time since a fixed moment
	answered, busyFrom atomic.Int64         // readings of elapsed, ns
	latency            atomic.Int64         // a moving average of its answers' time, ns; 0 before the first
}

// newAppFlow returns the flow of an app on the clock elapsed.
func newAppFlow(elapsed func() time.Duration) *appFlow {
	return &appFlow{elapsed: elapsed}
}

// busy records that the app's pushes began to be under way now.
func (f *appFlow) busy() { f.busyFrom.Store(int64(f.elapsed())) }

// note records that the service answered now a push sent at start and
// done at end (readings with their monotonic part, as time.Now gives:
// only their difference counts), unless err says it did not (the
// deadline or the caller ended the wait; Retry says so even when it
// hands back an earlier attempt's answer).
func (f *appFlow) note(err error, start, end time.Time) {
	if err != nil && (errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled)) {
		return
	}
	f.answered.Store(int64(f.elapsed()))
	// Racing updates lose one another's sample now and then: an
	// estimate, not an account.
	took := int64(end.Sub(start))
	if old := f.latency.Load(); old > 0 {
		took = old + (took-old)/8
	}
	f.latency.Store(max(took, 1))
}

// answeringWithin is the least silence that makes a service stalled
// rather than busy (see stalled).
const answeringWithin = 500 * time.Millisecond

// stalled reports whether the service has gone silent: neither an answer
// nor the start of its pushes' being under way for three of its usual
// answer times, at least answeringWithin and at most half the push
// deadline (half the deadline before its first answer). A service that
// answers in 1.5 s under load is busy, its burst's answers due, not
// stalled; one silent for half the deadline is stalled however slow it
// was, so the pushes past the bound that hold their caller's place meanwhile
// (one wave, at most the input's places) are not held longer than that.
func (f *appFlow) stalled(deadline time.Duration) bool {
	limit := max(deadline/2, answeringWithin)
	if lat := time.Duration(f.latency.Load()); lat > 0 {
		limit = min(max(3*lat, answeringWithin), limit)
	}
	now := int64(f.elapsed())
	return now-f.answered.Load() > int64(limit) && now-f.busyFrom.Load() > int64(limit)
}

// AppMaxInFlight bounds the pushes of one app with its push service at
// once, from every input together. Such a push holds no place of the
// input it came from (see sendBounded), so these are what a service that
// stalls can hold: a goroutine each, about 8 KiB. At APNS's and FCM's
// usual 20-50 ms an answer they carry 20,000-50,000 pushes a second an
// app, about what the whole server does in the benchmark (21,000 a
// second over XEP-0357). A constant, not an option: a deployment that
// needs more would measure it first, and a lower bound only turns
// ordinary bursts into pushes that hold their caller's place (see
// sendBounded).
const AppMaxInFlight = 1024

// sendBounded sends n through app's backend holding none of the caller's
// places meanwhile (push.Leave), at most AppMaxInFlight pushes of the app
// at once: an APNS or FCM service that takes requests and answers none
// would otherwise hold every place of the XMPP connection until its
// pushes' deadline, and every other app's pushes on it with them. Past
// the bound, a push to a service that has gone silent (appFlow.stalled)
// fails at once as one the service did not take (answered wait, kept for
// redelivery), and one to a service that is busy is sent holding its
// caller's place, as every push was before. It takes a place again before it
// returns (Away.Return), and only then counts the push out, so the
// pushes holding no place stay within the bound.
//
// start is when the push goes out, which the caller read for its
// deadline, and which the backend gets as n.Sent; end is when the service
// answered (or sendBounded gave up), on the system's clock with its
// monotonic reading, for the caller to time the push by: reading the
// clock is a visible part of a push's cost.
func (s *Service) sendBounded(ctx context.Context, app *App, n push.Notification, start time.Time) (end time.Time, err error) {
	n.Sent = start
	f := app.flow
	v := app.inFlight.Add(1)
	if v > AppMaxInFlight {
		app.inFlight.Add(-1)
		if f.stalled(app.deadline()) {
			return time.Now(), &push.TemporaryError{Reason: "too many pushes under way at the app's push service", Outage: true}
		}
		// Busy, not stalled: sent holding the caller's place, as every
		// push was before, so that its input stops reading rather than
		// turning a burst into pushes answered wait. Bounded by the
		// input's places, not counted here: it waits for no other push.
		err := s.send(ctx, app.Backend, n)
		end := time.Now()
		f.note(err, start, end)
		return end, err
	}
	if v == 1 {
		f.busy()
	}
	away := push.Leave(ctx)
	err = s.send(ctx, app.Backend, n) // which recovers a panic
	end = time.Now()
	f.note(err, start, end)
	away.Return()
	app.inFlight.Add(-1)
	return end, err
}

// PushDeadliner is a Backend whose push deadline may change while the
// service runs.
type PushDeadliner interface {
	PushDeadline() time.Duration
}

// canonicalToken is the device token names, as the app's push service
// names it: what the per-device limit counts by.
func (a *App) canonicalToken(token string) string {
	if a.devicer != nil {
		return a.devicer.DeviceKey(token)
	}
	if a.canonical != nil {
		return a.canonical.CanonicalToken(token)
	}
	return token
}

// sameToken reports whether a and b name one device token of the app's
// push service: the same string, or spellings its service takes as one
// (APNS: hex in either case). A WebPush subscription's keys are part of
// its token, so its device key (the endpoint alone) is not asked.
func (a *App) sameToken(x, y string) bool {
	return x == y || a.canonical != nil && a.canonical.CanonicalToken(x) == a.canonical.CanonicalToken(y)
}

// tokenName is token as sameToken compares it: one string for the
// spellings the app's push service takes as one.
func (a *App) tokenName(token string) string {
	if a.canonical != nil {
		return a.canonical.CanonicalToken(token)
	}
	return token
}

// deadline is the app's push deadline now.
func (a *App) deadline() time.Duration {
	if a.deadliner != nil {
		return a.deadliner.PushDeadline()
	}
	return a.Deadline
}

// Observer is told about what the service does, for metrics. A nil Observer
// in Options is replaced by one that does nothing.
type Observer interface {
	Registered(app string, renewed bool)
	Unregistered(app string, reason string)
	Pushed(app string, outcome Outcome, d time.Duration)
	// Rejected counts a push refused before any push service was asked.
	Rejected(reason RejectReason)
	// RegistrationFailed counts a registration that stored nothing, or
	// (RegistrationUnconfirmed) a change answered as failed though stored.
	RegistrationFailed(reason RegistrationFailure)
	// Panicked counts a panic recovered where it would have ended the
	// process: "push_service" for an app's backend sending a push.
	Panicked(where string)
}

// CredentialsObserver is an Observer that is told, besides, of each push
// a push service refused for the app's own credentials or configuration
// (*push.CredentialsRefusedError: a key revoked or mistyped, a topic of
// another team). A check of the credentials at start or reload says
// nothing of a key revoked later; the pushes it fails do.
type CredentialsObserver interface {
	CredentialsRefused(app string)
	// CredentialsTaken: a push held while the app's credentials were
	// refused, let through to try them, went through (it took d): the
	// refusal is over. It is no fresh push, which Pushed would tell.
	CredentialsTaken(app string, d time.Duration)
}

// credentialsRefused tells the Observer, if it listens, that err, of a
// push of app, refused the app's credentials (not Partial).
func (s *Service) credentialsRefused(app string, err error) {
	o, ok := s.opts.Observer.(CredentialsObserver)
	if !ok {
		return
	}
	// A refusal for some of the app's devices alone (Partial: FCM's
	// THIRD_PARTY_AUTH_ERROR for its iOS devices) says nothing of the
	// app's credentials, which its other devices' pushes go on taking:
	// told, the gauge would read refused, then accepted, at every such
	// push that follows another's, with a log line each time.
	if cr := (*push.CredentialsRefusedError)(nil); errors.As(err, &cr) && !cr.Partial {
		o.CredentialsRefused(app)
	}
}

// Outcome classifies a push for metrics and logs.
type Outcome string

const (
	OutcomeSuccess   Outcome = "success"
	OutcomeNotFound  Outcome = "not_found"
	OutcomeThrottled Outcome = "throttled"
	OutcomeDeadToken Outcome = "dead_token"
	OutcomeFailed    Outcome = "failed"

	// OutcomeDeviceThrottled: refused by RateLimitPerToken, the device
	// having had its pushes of the window through other nodes.
	OutcomeDeviceThrottled Outcome = "throttled_device"

	// OutcomeTooLarge: a notification the user's server encrypted
	// larger than the push service takes (push.ErrPayloadTooLarge),
	// not sent; a failure of its own, since the user's server is the
	// one to mend it.
	OutcomeTooLarge Outcome = "too_large"
)

// failedOutcome is the outcome of a push that failed with err, neither
// dead token nor success.
func failedOutcome(err error) Outcome {
	if errors.Is(err, push.ErrPayloadTooLarge) {
		return OutcomeTooLarge
	}
	return OutcomeFailed
}

// DefaultOutageGrace is how long the registrations cached when the
// registry's change feed went down keep serving pushes the registry
// cannot be read for: longer than a database's failover or restart
// usually takes, short enough that a registration changed where this
// instance cannot see it is not pushed to for long.
const DefaultOutageGrace = 10 * time.Minute

// DefaultCacheSize is how many registrations the push path keeps in
// memory unless configured: about 16 MB.
const DefaultCacheSize = 50000

// DefaultPushTimeout bounds one push from lookup to the push service's
// answer when the configuration sets no push_timeout.
const DefaultPushTimeout = 15 * time.Second

// DefaultAccountRegisterLimit is the configuration's default for
// Options.AccountRegisterLimit: a client registers when it connects, so
// even an account with many devices on flaky networks stays far below
// it.
const DefaultAccountRegisterLimit = 60

// DefaultMaxBlockedTokens is the configuration's default for
// Options.MaxBlockedTokens: far more than the dead tokens that tokenless
// clients' servers go on pushing to within a week, and at a few hundred
// bytes a row (token, index and all), some tens of megabytes.
const DefaultMaxBlockedTokens = 100000

// Options tune the service; the zero value is usable.
type Options struct {
	// RateLimit is the throttle distance per node and priority (the seed's
	// push_appserver_rate_limit); 0 disables throttling.
	RateLimit time.Duration
	// RateLimitPerToken bounds the pushes to one device (an app and a
	// device token) that one source (PushRequest.Source) asks for per
	// RateLimit window, whatever nodes they come through; 0 means no
	// bound. See deviceLimiter.
	RateLimitPerToken int
	// PushTimeout bounds one push from lookup to the push service's
	// answer, retries included. Default 15 s.
	PushTimeout time.Duration
	// FlushInterval is how often push outcomes are written. Default 1 s.
	FlushInterval time.Duration
	Observer      Observer
	// CacheSize is how many registrations the push path keeps in memory;
	// 0 means DefaultCacheSize, a negative value turns the cache off
	// (for registries shared by several instances without CacheTTL).
	CacheSize int
	// CacheTTL bounds how long a cached registration is trusted. Default
	// one minute.
	CacheTTL time.Duration
	// OutageGrace is how long, once the change feed is down, what the
	// cache held then serves the pushes for which the registry cannot be
	// read (see cache). 0 means DefaultOutageGrace; a negative value
	// turns that off, and such pushes fail.
	OutageGrace time.Duration
	// StrictRegistration refuses, over HTTP and from other accounts, a new
	// token or type for a registered node and its unregistration unless the
	// caller gives the node's secret. Off, a new token without the secret
	// gets a new secret, and anyone who names an unbound node may remove it
	// (mod_push_appserver's API).
	StrictRegistration bool
	// MaxRegistrationsPerDomain caps the registrations made from one XMPP
	// domain, so one domain cannot fill the registry; renewals are always
	// allowed. 0 means no cap. Registrations over HTTP carry no domain and
	// are not counted.
	MaxRegistrationsPerDomain int
	// AccountRegisterLimit bounds the registrations and unregistrations
	// of one XMPP account to this many a minute, as many at once, so
	// that one account of a public server cannot fill the registry at
	// the speed its server lets it send. 0 means no bound. Requests over
	// HTTP carry no account; the HTTP API bounds them by address.
	AccountRegisterLimit int
	// TokenBlock is how long a device token a push service declared dead
	// is refused to tokenless pushes. Default 7 days.
	TokenBlock time.Duration
	// MaxBlockedTokens caps the rows of the block list of dead tokens
	// (TokenBlock); 0 means no cap. See trimBlockedTokens.
	MaxBlockedTokens int
	// Redelivery is how long a push that failed for a reason that may
	// pass is tried again (see redeliver.go), counted from the device's
	// latest failed push. 0 means DefaultRedelivery; a negative value
	// turns redelivery off.
	Redelivery time.Duration
	// HeldFile is the file, in the data directory, that keeps the pushes
	// waiting for redelivery at a stop when the registry refuses them,
	// for the next start to send (see redeliver_file.go); "" for none,
	// and they are dropped then.
	HeldFile string
	// Changes, when the registry has other writers, tells the cache what
	// they change; the cache is bypassed until it is listening.
	Changes ChangeFeed
	// Now is the clock; time.Now when nil.
	Now func() time.Time
}

// ChangeFeed reports registrations changed by other writers of the
// registry: other instances sharing it (the PostgreSQL store's
// LISTEN/NOTIFY), or other processes writing the same file (the SQLite
// store's change log). Follow runs until ctx is done: it calls changed for
// every changed node, live(true) once it listens, and live(false) when it
// stopped listening and may miss changes until the next live(true). An
// error return comes after live(false); the service follows again.
type ChangeFeed interface {
	Follow(ctx context.Context, changed func(node string), live func(bool)) error
}

// Service is the app server core. Its methods are safe for concurrent use.
type Service struct {
	store    registry.Store
	pushGet  func(ctx context.Context, node string) (registry.PushTarget, error) // see pushReader
	apps     map[string]App
	opts     Options
	logger   *slog.Logger
	throttle *throttler[throttleKey]
	status   *statusWriter
	cache    *cache
	blocks   *blockCache // what tokenless pushes read of the block list
	// deadlines gives pushes their deadlines without a timer each.
	deadlines deadline.Shared

	rejects  *logging.Limited
	failures *logging.Limited // push service failures, so an app that fails every push cannot flood the log
	stale    *logging.Limited // pushes sent with what the cache held, the registry unreadable
	limited  *logging.Limited // registrations past AccountRegisterLimit: an account flooding us must not flood the log
	panics   *logging.Limited // push service clients that panicked, one stack a second
	draining atomic.Bool
	// redeliver keeps failed pushes to send again; nil when off.
	redeliver *redeliveries

	// devices bounds the pushes to each device from each source
	// (RateLimitPerToken); nil when off. deviceLimited logs what it
	// refuses: a device pushed to through many nodes, which may be
	// someone's doing.
	devices       *deviceLimiter
	deviceLimited *logging.Limited

	saltMu sync.Mutex
	salt   string

	// accounts bounds each account's registrations (AccountRegisterLimit),
	// keyed by a hash of its bare JID: a JID may be 3 KB long.
	accounts    *ratelimit.Limiter[uint64]
	accountSeed maphash.Seed
	// tokenSeed seeds tokenHash.
	tokenSeed maphash.Seed

	// blockSources bounds the dead tokens each push source puts on the
	// block list, keyed by a hash of the source (sourceSeed);
	// blockRefused logs what it refuses. blocked counts the blocks
	// written since the start, for trimBlockedTokens.
	blockSources *ratelimit.Limiter[uint64]
	sourceSeed   maphash.Seed
	blockRefused *logging.Limited
	blocked      atomic.Int64

	// onSystemClock is set when opts.Now is time.Now, as the caller left
	// it: a push's own readings of the clock then serve for its times
	// too (see outcomeTime).
	onSystemClock bool
}

// New returns a service over store for the given apps.
func New(store registry.Store, apps []App, opts Options, logger *slog.Logger) (*Service, error) {
	if opts.PushTimeout <= 0 {
		opts.PushTimeout = DefaultPushTimeout
	}
	if opts.TokenBlock <= 0 {
		opts.TokenBlock = 7 * 24 * time.Hour
	}
	if opts.FlushInterval <= 0 {
		opts.FlushInterval = time.Second
	}
	onSystemClock := opts.Now == nil
	if onSystemClock {
		opts.Now = time.Now
	}
	if opts.Observer == nil {
		opts.Observer = nopObserver{}
	}
	if opts.CacheSize == 0 {
		opts.CacheSize = DefaultCacheSize
	}
	if opts.CacheTTL <= 0 {
		opts.CacheTTL = time.Minute
	}
	if opts.OutageGrace == 0 {
		opts.OutageGrace = DefaultOutageGrace
	}
	if opts.Redelivery == 0 {
		opts.Redelivery = DefaultRedelivery
	}
	m := make(map[string]App, len(apps))
	// The apps' flows share one monotonic clock (see appFlow).
	flowClock := systemClock().elapsed
	for _, a := range apps {
		if a.Name == "" || a.Backend == nil {
			return nil, fmt.Errorf("app %q: name and backend are required", a.Name)
		}
		if _, dup := m[a.Name]; dup {
			return nil, fmt.Errorf("app %q configured twice", a.Name)
		}
		if a.Priority == "" {
			a.Priority = push.PriorityAuto
		}
		a.deadliner, _ = a.Backend.(PushDeadliner)
		a.canonical, _ = a.Backend.(push.TokenCanonicalizer)
		a.devicer, _ = a.Backend.(push.DeviceKeyer)
		a.inFlight = new(atomic.Int64)
		a.flow = newAppFlow(flowClock)
		a.gate = new(credGate)
		m[a.Name] = a
	}
	svc := &Service{
		store:    store,
		apps:     m,
		opts:     opts,
		logger:   logger,
		throttle: newThrottler[throttleKey](opts.RateLimit, opts.Now),
		status:   newStatusWriter(store, logger),
		cache:    newCache(opts.CacheSize, opts.CacheTTL, opts.OutageGrace, systemClock()),
		blocks:   newBlockCache(opts.CacheSize, opts.CacheTTL, systemClock()),
		rejects:  logging.NewLimited(logger, opts.Now, slog.LevelInfo, logLimit, "push rejected", "push rejections not logged (rate limit)"),
		failures: logging.NewLimited(logger, opts.Now, slog.LevelWarn, logLimit, "push failed", "push failures not logged (rate limit)"),
		// One a minute: the line repeats the registry's outage, which
		// its own loop logs, for pushes that go through.
		stale:   logging.NewLimitedPer(logger, opts.Now, slog.LevelWarn, 1, time.Minute, "registry unreadable; pushing to the registration as cached", "pushes to cached registrations not logged (rate limit)"),
		limited: logging.NewLimited(logger, opts.Now, slog.LevelInfo, logLimit, "registration refused: the account's limit is reached", "registrations refused by the account limit not logged (rate limit)"),
		panics:  logging.NewLimited(logger, opts.Now, slog.LevelError, 1, "the push service's client panicked; the push failed and the server goes on", "panics of push service clients not logged (rate limit)"),
		accounts: ratelimit.New[uint64](opts.AccountRegisterLimit, func() {
			logger.Warn("more XMPP accounts registering than the registration limit tracks; the newest share one limit", "accounts", ratelimit.MaxKeys)
		}),
		accountSeed: maphash.MakeSeed(),
		tokenSeed:   maphash.MakeSeed(),
		blockSources: ratelimit.NewWith(blocksPerSource, ratelimit.Options[uint64]{Now: opts.Now, Overflowed: func() {
			logger.Warn("more push sources blocking dead tokens than the block list's limit per source tracks; the newest share one limit", "sources", ratelimit.MaxKeys)
		}}),
		sourceSeed:    maphash.MakeSeed(),
		blockRefused:  logging.NewLimited(logger, opts.Now, slog.LevelInfo, logLimit, "dead token not blocked: its source blocked as many as it may this minute", "tokens not blocked by the limit per source not logged (rate limit)"),
		onSystemClock: onSystemClock,
	}
	if opts.Redelivery > 0 {
		svc.redeliver = newRedeliveries(opts.Redelivery, opts.Now, opts.HeldFile)
	}
	svc.devices = newDeviceLimiter(opts.RateLimit, opts.RateLimitPerToken, maxLimitedDevices, opts.Now, func() {
		logger.Warn("more devices and sources pushing to them within rate_limit than rate_limit_per_token tracks; the pushes of the others are not counted until some windows end", "devices", maxLimitedDevices)
	})
	svc.deviceLimited = logging.NewLimited(logger, opts.Now, slog.LevelInfo, logLimit, "push refused: the device had rate_limit_per_token pushes from this source in this window, through other nodes", "pushes refused by rate_limit_per_token not logged (rate limit)")
	svc.pushGet = func(ctx context.Context, node string) (registry.PushTarget, error) {
		r, err := store.Get(ctx, node)
		return r.Target(), err
	}
	if p, ok := store.(pushReader); ok {
		svc.pushGet = p.GetPushTarget
	}
	if opts.Changes != nil {
		// Nothing is cached until Run follows the feed.
		svc.cache.feedLive(false)
	}
	if h, ok := opts.Changes.(heldFeed); ok {
		h.OnPushesHeld(func(apps []string) { svc.TakeHeldSoon(apps...) })
	}
	return svc, nil
}

// heldFeed is a change feed that also says when another instance left
// pushes waiting for redelivery in the registry: released at its stop
// (apps nil), or handed over for the instances that have one of apps.
type heldFeed interface {
	OnPushesHeld(fn func(apps []string))
}

// Run writes push outcomes behind and sweeps throttle state until ctx is
// done. Call Close afterwards to write what is still pending.
func (s *Service) Run(ctx context.Context) {
	go func() {
		t := time.NewTicker(time.Minute)
		defer t.Stop()
		for i := 1; ; i++ {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				s.throttle.sweep()
				s.devices.sweep()
				if i%60 == 0 {
					s.purgeBlockedTokens(ctx)
					s.trimBlockedTokens(ctx)
				}
			}
		}
	}()
	// With redelivery off, whether to leave the registry's held pushes to
	// other servers is decided before this one listens, which would
	// count it among them.
	dropHeld := s.redeliver == nil && !s.othersRun(ctx)
	if s.opts.Changes != nil {
		// Followed with the cache off too: the feed carries what this
		// instance must hear and say besides (its acks, whose count
		// makes its own writes wait for the others; pushes held at
		// another's stop; components released; the registry back).
		go s.follow(ctx)
	}
	var redelivery sync.WaitGroup
	if s.redeliver != nil {
		// Waited for: its last act writes to the registry, which Close
		// may close after Run returns.
		redelivery.Go(func() { s.redeliverLoop(ctx) })
	} else if dropHeld {
		// Redelivery off: what a server with it on left in the registry
		// is never sent from here, and would stay there, with its
		// summary and tokens, for good.
		redelivery.Go(func() { s.dropHeld(ctx) })
	}
	if s.redeliver == nil {
		s.removeHeldFileOff()
	}
	s.status.run(ctx, s.opts.FlushInterval)
	redelivery.Wait()
}

// serverCounter is a registry that knows how many servers other than
// this one run on it (PostgreSQL: each listens for its changes).
type serverCounter interface {
	OtherServers(ctx context.Context) (int, error)
}

// othersRunTimeout bounds the count of the other servers at the start,
// which the change feed waits for.
const othersRunTimeout = 5 * time.Second

// othersRun reports whether other servers run on the registry, or may:
// their pushes held there for redelivery are theirs, released at a stop
// or handed over by one without their app, and one with redelivery on
// sends them (or ends them once their time ran out). A server with
// redelivery off leaves them alone then (see dropHeld).
func (s *Service) othersRun(ctx context.Context) bool {
	c, ok := s.store.(serverCounter)
	if !ok {
		return false
	}
	cctx, cancel := context.WithTimeout(ctx, othersRunTimeout)
	defer cancel()
	others, err := c.OtherServers(cctx)
	if err != nil {
		if ctx.Err() != nil {
			return true
		}
		s.logger.Warn("counting the other servers on the registry; the pushes held there for redelivery are left to them", "err", err)
		return true
	}
	if others > 0 {
		s.logger.Info("pushes held for redelivery in the registry, if any, left to the other servers running on it: redelivery is off here", "servers", others)
	}
	return others > 0
}

// dropHeld removes the pushes left in the registry for redelivery (by a
// server that had it on and stopped) when this one has it off and runs
// alone on the registry.
func (s *Service) dropHeld(ctx context.Context) {
	n := 0
	for {
		held, err := s.store.TakeHeldPushes(ctx, 1000)
		n += len(held)
		if err != nil || len(held) < 1000 {
			if err != nil && ctx.Err() == nil {
				s.logger.Warn("removing the pushes held for redelivery, which is off", "err", err)
			}
			break
		}
	}
	if n > 0 {
		s.logger.Info("pushes held for redelivery removed from the registry: redelivery is off", "pushes", n)
	}
}

// changed forgets what the push path keeps of node's registration, which
// changed or went: its cached push target, and the success last written
// for it (a node registered afresh starts without outcomes).
func (s *Service) changed(node string) {
	s.cache.drop(node)
	s.status.forget(node)
}

// feedLive hears whether the change feed listens. That it listens again
// after a loss is the first sign that the registry answers again: the
// pushes kept because it could not be read need wait no longer.
func (s *Service) feedLive(live bool) {
	s.cache.feedLive(live)
	if live {
		s.redeliver.registryBack()
	}
}

// follow keeps the cache on the change feed until ctx is done. A feed
// that fails is followed again after a backoff; the cache is bypassed
// meanwhile (Follow calls live(false) before it returns).
func (s *Service) follow(ctx context.Context) {
	backoff := push.Backoff{Base: 100 * time.Millisecond, Max: 10 * time.Second}
	for {
		start := time.Now()
		err := s.opts.Changes.Follow(ctx, s.changed, s.feedLive)
		if ctx.Err() != nil {
			return
		}
		if time.Since(start) > backoff.Max {
			backoff.Reset() // it had been following for a while
		}
		wait := backoff.Next()
		s.logger.Warn("registration change feed failed; cache bypassed until it is back", "err", err, "retry_in", wait)
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
	}
}

// Close writes pending push outcomes. It does not close the store.
func (s *Service) Close() error {
	s.status.close(context.Background())
	return nil
}

// StatusStats reports on the write-behind of push outcomes.
func (s *Service) StatusStats() StatusStats { return s.status.stats() }

// UnregisterToken removes the registrations of app typ with the given token
// unless they were registered or renewed after when: a device that
// re-registered after the push service declared its token dead is alive.
func (s *Service) UnregisterToken(ctx context.Context, typ, token string, when time.Time) (int, error) {
	removed, err := s.unregisterToken(ctx, typ, token, when)
	return len(removed), err
}

// unregisterToken is UnregisterToken, returning the registrations removed.
func (s *Service) unregisterToken(ctx context.Context, typ, token string, when time.Time) ([]registry.Registration, error) {
	removed, err := s.store.DeleteToken(ctx, typ, token, when)
	if err != nil {
		return nil, fmt.Errorf("removing dead token: %w", err)
	}
	for _, r := range removed {
		s.removedDead(typ, r.Node, r.Secret, when)
	}
	return removed, nil
}

// removedDead notes node's registration of app, with secret, removed
// for its token, which the push service declared dead at when.
func (s *Service) removedDead(typ, node, secret string, when time.Time) {
	s.changed(node)
	s.forgetThrottle(node)
	s.redeliver.forget(node, secret)
	s.opts.Observer.Unregistered(typ, "dead_token")
	s.logger.Info("removed registration with dead token", "app", typ, "node", node, "since", when.UTC().Format(time.RFC3339))
}

// PushRequest is one push as an adapter received it.
type PushRequest struct {
	Node   string
	Secret string
	// Summary is the XEP-0357 summary the user's server sent; nil when the
	// publish carried none, and always for the HTTP API.
	Summary *push.Summary
	// MarkedHigh is set when the request itself asks for an alert
	// (tigase:push:priority:0 "high", as Prosody's
	// mod_cloud_notify_priority_tag and Tigase send).
	MarkedHigh bool
	// Encrypted is the notification the user's server encrypted for the
	// device (tigase:push:encrypt:0), passed on as it came.
	Encrypted *push.Encrypted
	// Tokenless: when Node is not a registered node, it is taken as a
	// device token of app TokenApp (fpush's tokenless pushes); see
	// PushToken.
	Tokenless bool
	TokenApp  string
	// Source is who asked for the push, as the adapter can vouch for it:
	// the domain of a publish's sender (the user's XMPP server, which
	// its stream to ours authenticated), the address of an HTTP client
	// (an IPv6 client's /64). RateLimitPerToken counts each source's
	// pushes to a device apart, so that one source cannot spend the
	// budget of another. Short: it is hashed on every push.
	Source string
}

// Important reports whether the user's server marked the push as one the
// user should see: a summary with a last-message-body (any value, even
// empty: servers put a placeholder there for important stanzas) or the
// explicit priority marker. Priority auto sends an alert for these and a
// silent push for everything else, as mod_push_appserver does: receipts,
// chat states, ejabberd's empty notifications, HTTP pushes.
func (r PushRequest) Important() bool {
	return r.MarkedHigh || (r.Summary != nil && r.Summary.HasLastMessageBody)
}

// Drain makes every push that arrives from now on fail with ErrUnavailable
// at once, while pushes already under way finish: adapters answer those
// "try again later" during a shutdown instead of leaving them unanswered.
func (s *Service) Drain() { s.draining.Store(true) }

// Push wakes the device registered as req.Node, if req.Secret matches. It
// returns after the push service answered.
func (s *Service) Push(ctx context.Context, req PushRequest) error {
	start := time.Now()
	node := req.Node
	if s.draining.Load() {
		s.opts.Observer.Pushed("", OutcomeFailed, time.Since(start))
		return ErrUnavailable
	}
	if !utf8.ValidString(node) || strings.IndexByte(node, 0) >= 0 {
		// No one can have registered it (Register refuses it), and
		// PostgreSQL cannot even look it up: its error would make the
		// push look like one the registry failed to read.
		s.reject(node, RejectUnknownNode, start)
		return ErrNotFound
	}
	deadline := start.Add(s.opts.PushTimeout)
	t, hit, matched, err := s.lookup(ctx, node, deadline, req.Tokenless, &req.Secret)
	if errors.Is(err, registry.ErrNotFound) && req.Tokenless {
		s.cache.count(hit)
		return s.pushTokenless(ctx, req, start, deadline)
	}
	if errors.Is(err, registry.ErrNotFound) {
		s.reject(node, RejectUnknownNode, start)
		return ErrNotFound
	}
	if err != nil {
		s.cache.count(hit) // a miss, of any node alike
		s.opts.Observer.Pushed("", OutcomeFailed, time.Since(start))
		// Counted as failed like a push the service refused, so it is
		// logged as one: the alert on failed pushes sends the operator
		// here. A node that may be a token stays out of the log.
		logged := loggedNode(node)
		if req.Tokenless {
			logged = ""
		}
		// Keyed apart from every app (no app is named ""): the
		// registry failing is a problem of its own.
		s.failures.LogKey("", "node", logged, "err", fmt.Errorf("reading the registration: %w", err))
		// The registry, not the caller, failed: send it once the
		// registration can be read. Tokenless pushes are not kept: the
		// read decides whether their node is a token at all.
		if ctx.Err() == nil && !req.Tokenless {
			s.redeliver.keepUnread(node, unreadPush{secret: req.Secret, important: req.Important()},
				push.Notification{Node: node, Summary: s.keptSummary("", req.Summary), Encrypted: req.Encrypted})
			s.redeliver.awaitWritten(context.WithoutCancel(ctx))
		}
		return fmt.Errorf("%w: looking up node: %w", ErrPushFailed, err)
	}
	if !matched {
		if req.Tokenless {
			// A tokenless publish carries no secret: its node is a
			// device token, whoever registered a node of that name
			// (anyone may, over HTTP). Pushing to the node as a token
			// wakes only the device whose token it is, as any
			// tokenless publish may. One with a secret that is not
			// the registration's goes the same way, as it would to
			// a node nobody registered: answered not found here, it
			// told anyone who can reach the component which nodes
			// are registered (an unknown node's answer is that of a
			// push to the node as a token, a result or wait).
			s.cache.count(hit)
			return s.pushTokenless(ctx, req, start, deadline)
		}
		s.reject(node, RejectWrongSecret, start)
		return ErrNotFound
	}
	s.cache.count(hit)
	app, ok := s.apps[t.Type]
	if !ok {
		return s.appNotHere(ctx, req, t.Type, start)
	}
	prio := app.Priority.Resolve(req.Important())

	waited, at, err := s.admit(ctx, throttleKey{node: node, prio: prio}, t.Type, start, deadline)
	if err != nil {
		return err
	}
	start = start.Add(waited)
	if waited > 0 {
		// The push waited for its window: the registration may have
		// changed or gone meanwhile (here or on another instance), and
		// its change was answered. Read it again (from the cache, which
		// every change drops) so no push goes out with what it left.
		t2, _, _, err := s.lookup(ctx, node, deadline, false, nil)
		switch {
		case errors.Is(err, registry.ErrNotFound):
			s.reject(node, RejectUnknownNode, start)
			return ErrNotFound
		case err == nil && subtle.ConstantTimeCompare([]byte(req.Secret), []byte(t2.Secret)) != 1:
			s.reject(node, RejectWrongSecret, start)
			return ErrNotFound
		case err == nil:
			if t2.Type != t.Type {
				a, ok := s.apps[t2.Type]
				if !ok {
					return s.appNotHere(ctx, req, t2.Type, start)
				}
				app, prio = a, a.Priority.Resolve(req.Important())
			}
			t = t2
		}
	}
	if err := s.admitDevice(t.Type, app.canonicalToken(t.Token), node, req.Source, start, at); err != nil {
		return err
	}
	// The backend's own deadline counts from here, after any wait for
	// the throttle's window. Setting the earlier of the two here gives a
	// push one timer, not two: the backend finds it and sets none.
	// When the push did not wait, a reading of a moment ago serves: the
	// throttle's of the system clock, else the push's start, when the
	// registration came from the cache (microseconds ago, no wait for
	// the registry between).
	var sent time.Time
	switch {
	case waited > 0:
	case !at.IsZero() && s.onSystemClock:
		sent = at
	case hit:
		sent = start
	}
	if sent.IsZero() {
		sent = time.Now()
	}
	if dl := app.deadline(); dl > 0 {
		if d := sent.Add(dl); d.Before(deadline) {
			deadline = d
		}
	}
	ctx, cancel := s.deadlines.WithDeadline(ctx, deadline)
	defer cancel()

	n := push.Notification{App: t.Type, Node: node, Token: t.Token, Priority: prio, Summary: req.Summary, Encrypted: req.Encrypted, Account: t.Account, Tigase: tigaseTarget(t)}
	end, err := s.sendGated(ctx, &app, n, sent)
	now := s.outcomeTime(end)
	if err != nil {
		err = s.doubtDead(ctx, node, t.Token, err)
	}
	if err == nil {
		s.status.addSuccess(node, t.Token, app.canonical, now)
		s.redeliver.settled(redeliveryKey{node: node})
		s.redeliver.took(t.Type)
		s.opts.Observer.Pushed(t.Type, OutcomeSuccess, end.Sub(start))
		return nil
	}
	s.status.add(registry.PushStatus{Node: node, At: now, Reason: storedReason(err.Error())})
	if dead, ok := push.IsDeadToken(err); ok {
		s.opts.Observer.Pushed(t.Type, OutcomeDeadToken, end.Sub(start))
		if s.unregisterDead(context.WithoutCancel(ctx), t.Type, t.Token, node, dead) {
			// The node is gone now; say so, so the user's server stops.
			return fmt.Errorf("%w: %w", ErrNotFound, err)
		}
		if s.tokenReplaced(context.WithoutCancel(ctx), t.Type, node, t.Token) {
			// The device registered a new token while the push was on
			// its way to the old one: redelivery, which reads the
			// registration again, takes the push there. Dropped, the
			// message that caused it would wake no one.
			n.Summary = s.keptSummary(t.Type, n.Summary)
			s.redeliver.keepChecked(redeliveryKey{node: node}, n, t.Secret, nil)
			s.redeliver.awaitWritten(context.WithoutCancel(ctx))
		}
		return fmt.Errorf("%w: %w", ErrPushFailed, err)
	}
	s.opts.Observer.Pushed(t.Type, failedOutcome(err), end.Sub(start))
	s.credentialsRefused(t.Type, err)
	s.failures.LogKey(t.Type, "app", t.Type, "node", node, "err", err)
	if redeliverable(err) {
		n.Summary = s.keptSummary(t.Type, n.Summary)
		s.redeliver.keepChecked(redeliveryKey{node: node}, n, t.Secret, err)
		// Answered once the registry holds it: the user's server,
		// told to wait, does not send it again.
		s.redeliver.awaitWritten(context.WithoutCancel(ctx))
	}
	return fmt.Errorf("%w: %w", ErrPushFailed, err)
}

// appNotHere fails a push to a device registered for app, which this
// server is not configured with, and keeps it: it is sent once the app
// is back (a restart that fixes the configuration takes it from the
// registry), or by another instance that has it.
func (s *Service) appNotHere(ctx context.Context, req PushRequest, app string, start time.Time) error {
	s.opts.Observer.Pushed(app, OutcomeFailed, time.Since(start))
	err := fmt.Errorf("%w: app %q is not configured", ErrPushFailed, app)
	s.failures.LogKey(app, "app", app, "node", req.Node, "err", err)
	s.redeliver.keepUnread(req.Node, unreadPush{secret: req.Secret, important: req.Important()},
		push.Notification{Node: req.Node, Summary: s.keptSummary("", req.Summary), Encrypted: req.Encrypted})
	// Answered once the registry holds it, as a push kept for its push
	// service's failure is: told to wait, the user's server does not send
	// it again, and a server killed before its loop's next write lost it.
	s.redeliver.awaitWritten(context.WithoutCancel(ctx))
	return err
}

// outcomeTime is when a push that the service answered at end (read from
// the system's clock) is recorded as done: end itself, unless the service
// runs on a clock of its own (Options.Now, the tests'), which then says.
func (s *Service) outcomeTime(end time.Time) time.Time {
	if s.onSystemClock {
		return end.UTC()
	}
	return s.opts.Now().UTC()
}

// pushTokenless pushes to req.Node as a device token of req.TokenApp:
// a tokenless push whose node is registered as no node.
//
// A function of its own so that Push has one defer: the compiler runs a
// function's defers inline at each return only while returns times
// defers stay at 15 or fewer, and otherwise records them at run time and
// finds them again by unwinding the stack when the function returns.
func (s *Service) pushTokenless(ctx context.Context, req PushRequest, start, deadline time.Time) error {
	ctx, cancel := s.deadlines.WithDeadline(ctx, deadline)
	defer cancel()
	return s.pushToken(ctx, TokenPush{App: req.TokenApp, Token: req.Node, Request: req}, start)
}

// admit waits (until deadline at most, unless it is zero) for the
// throttle's window for key, or refuses the push with ErrThrottled. It
// returns how long it waited, which the caller leaves out of the push's
// latency: that measures us and the push service, and the alert on it
// would otherwise fire on every burst of messages to one device. at is
// when the window let the push go, for admitDevice; zero while the
// throttle is off.
func (s *Service) admit(ctx context.Context, key throttleKey, app string, start, deadline time.Time) (waited time.Duration, at time.Time, err error) {
	if s.opts.RateLimit <= 0 {
		return 0, time.Time{}, nil
	}
	now := s.opts.Now()
	switch d, wait := s.throttle.admitAt(key, now); d {
	case refuse:
		s.opts.Observer.Pushed(app, OutcomeThrottled, time.Since(start))
		return 0, time.Time{}, ErrThrottled
	case delaySend:
		if !deadline.IsZero() {
			var cancel context.CancelFunc
			ctx, cancel = s.deadlines.WithDeadline(ctx, deadline)
			defer cancel()
		}
		// push.WaitOrRefuse: a push waiting for its window does no
		// work, so it does not hold the adapter's concurrency slot
		// meanwhile; with no place to wait without it, the push is
		// refused as the throttle's others are, rather than stop the
		// adapter, and every other sender's pushes, for the window.
		began := time.Now()
		if err := push.WaitOrRefuse(ctx, wait); err != nil {
			s.throttle.abandon(key)
			s.opts.Observer.Pushed(app, OutcomeThrottled, time.Since(start))
			return 0, time.Time{}, fmt.Errorf("%w: %w", ErrThrottled, err)
		}
		s.throttle.release(key)
		return time.Since(began), now.Add(wait), nil
	}
	return 0, now, nil
}

// admitDevice counts a push to token of app that source asked for, let
// go by the throttle at at, against RateLimitPerToken, or refuses it with
// ErrThrottled, answered as the throttle's own refusals are: the device
// had its pushes from that source, and the user's server keeps the
// session. node is the push's, for the log ("" for a tokenless push,
// whose node is the token).
func (s *Service) admitDevice(app, token, node, source string, start, at time.Time) error {
	if s.devices.admit(app, token, source, at) {
		return nil
	}
	s.opts.Observer.Pushed(app, OutcomeDeviceThrottled, time.Since(start))
	s.deviceLimited.Log("app", app, "node", loggedNode(node), "source", source)
	return ErrThrottled
}

// pushReader is a store that can read what a push needs of a
// registration for less than the whole of it (SQLite: fewer columns, and
// not the push outcomes, which it keeps in a table of their own).
type pushReader interface {
	GetPushTarget(ctx context.Context, node string) (registry.PushTarget, error)
}

// heldReadTimeout bounds the read of a registration the cache holds while
// its feed is down (see cache.held): a database that does not answer
// within it is taken as unreadable, so the push still has its time to go
// out when the database hangs rather than refuses.
const heldReadTimeout = time.Second

// lookup reads what a push to node needs through the cache, asking the
// store by deadline when it must. An unknown node is cached only with
// keepAbsent (tokenless pushes, whose node is a device token): otherwise
// a registration another writer made a moment ago, which the change feed
// has yet to announce, is found at once.
//
// When the store cannot be read while the change feed is down, what the
// cache held of the node is used instead (see cache): the push goes out
// rather than fail with the database, if secret (when not nil) matches.
//
// A registration read is cached only when secret is nil (nothing to
// check) or matches it, an empty secret included, or with keepAbsent,
// which caches an unknown node too:
// the cache's size, on /metrics, must not tell a registered node from an
// unknown one to someone who knows no secret.
//
// matched says whether secret is nil or matches the registration
// returned, compared here once rather than again by the caller: a
// secret's compare in constant time is about 450 instructions.
func (s *Service) lookup(ctx context.Context, node string, deadline time.Time, keepAbsent bool, secret *string) (t registry.PushTarget, hit, matched bool, err error) {
	if t, ok := s.cache.get(node); ok {
		if t == (registry.PushTarget{}) {
			// Kept for a node known not to be registered: no
			// registration has an empty type.
			return t, true, false, registry.ErrNotFound
		}
		matched := secretMatches(secret, t)
		if matched || keepAbsent {
			return t, true, matched, nil
		}
		// A wrong secret reads the registry, as a push to a node the
		// cache does not hold does: answered from memory, it would come
		// back a read sooner than one to an unknown node (a round trip
		// on PostgreSQL), and that time would tell a registered node
		// from an unknown one to someone who knows no secret. The read
		// also finds a secret another instance wrote a moment ago,
		// before its change feed dropped the entry here. Not for a
		// tokenless push (keepAbsent): an unknown node is answered
		// from the cache too, as one known not to be registered.
	}
	held, holding := s.cache.held(node)
	// An entry for a node known not to be registered is of use only to
	// tokenless pushes, as in get.
	holding = holding && (keepAbsent || held != (registry.PushTarget{}))
	heldMatched := holding && held != (registry.PushTarget{}) && secretMatches(secret, held)
	if holding && !keepAbsent && held != (registry.PushTarget{}) && !heldMatched {
		// Not held for a wrong secret: the push takes the path of one to
		// a node the cache does not hold, its answer (the registry
		// failed, not "not found") and its time (the whole read, not
		// heldReadTimeout), which would otherwise tell a registered
		// node from an unknown one to someone who knows no secret. It
		// is kept unread like that one, and checked again once the
		// registry can be read. A tokenless push (keepAbsent) is
		// served from what is held either way, as for an unknown node
		// held as such: a wrong secret makes it a push to its node as
		// a token, as a node held as unknown does (see Push).
		holding = false
	}
	readBy := deadline
	if holding {
		if by := time.Now().Add(heldReadTimeout); by.Before(readBy) {
			readBy = by
		}
	}
	readCtx, cancel := s.deadlines.WithDeadline(ctx, readBy)
	defer cancel()
	gen := s.cache.generation(node)
	t, err = s.pushGet(readCtx, node)
	switch {
	case err == nil:
		// A tokenless push (keepAbsent) caches what it read whatever
		// its secret: it caches a node registered as none too, and
		// the cache's size must not tell the two apart.
		matched = secretMatches(secret, t)
		if matched || keepAbsent {
			s.cache.put(node, t, gen)
		}
	case errors.Is(err, registry.ErrNotFound):
		if keepAbsent && len(node) <= MaxNodeLen {
			// A tokenless push's node is the device token,
			// registered as no node: every push to it would read
			// the registry for nothing. A registration of it drops
			// the entry like any other change. Not for a node
			// longer than any registered over the API: a stranger
			// names it, and the cache would keep as many of them
			// as it holds registrations, 4 KiB each at worst.
			s.cache.put(node, registry.PushTarget{}, gen)
		}
	case holding && ctx.Err() == nil && time.Now().Before(deadline):
		s.cache.served()
		s.stale.Log("node", loggedNode(node), "err", err)
		if held == (registry.PushTarget{}) {
			return held, false, false, registry.ErrNotFound
		}
		return held, false, heldMatched, nil
	}
	return t, false, matched, err
}

// secretMatches says whether secret is nil (nothing to check) or, in
// constant time, the secret of t.
func secretMatches(secret *string, t registry.PushTarget) bool {
	return secret == nil || subtle.ConstantTimeCompare([]byte(*secret), []byte(t.Secret)) == 1
}

// CacheStats reports what the registration cache did so far; all zero
// when it is off.
func (s *Service) CacheStats() CacheStats { return s.cache.stats() }

// throttleKey is what the throttle counts pushes per: a device and a
// priority, so that a silent push does not hold up an alert.
//
// A tokenless push's device is its app and a hash of its token (see
// tokenHash): the publish names the token, which may be 4 KiB long (an
// FCM or WebPush token), and a key holding it would have the server keep
// 4 KiB for every token a stranger names, until the window passes.
type throttleKey struct {
	node  string // a registered device, or
	app   string // a tokenless push's device (app "" for a registered one)
	token uint64
	prio  push.Priority
}

func (s *Service) forgetThrottle(node string) {
	s.throttle.forget(func(k throttleKey) bool { return k.node == node && k.app == "" })
}

// tokenHash is what the push path keeps of a tokenless push's token in
// place of the token: 64 bits, with a secret seed, so that nobody can
// pick tokens that share a throttle window or a block-list entry with
// someone else's.
func (s *Service) tokenHash(token string) uint64 { return maphash.String(s.tokenSeed, token) }

// keptSummary is what of sum a push of app keeps while it waits for
// redelivery, and so what the registry holds of it: the sender and body
// only when the app's pushes carry them (include_summary), or, for a
// push whose app is not known yet, when one app's do. The wait is
// written to the registry, and the user's messages have no business
// there when no push will show them.
func (s *Service) keptSummary(app string, sum *push.Summary) *push.Summary {
	if sum == nil || sum.LastMessageSender == "" && sum.LastMessageBody == "" {
		return sum
	}
	if a, ok := s.apps[app]; ok {
		if push.CarriesSummaryText(a.Backend) {
			return sum
		}
		return push.WithoutSummaryText(sum)
	}
	for _, a := range s.apps {
		if push.CarriesSummaryText(a.Backend) {
			return sum
		}
	}
	return push.WithoutSummaryText(sum)
}

// storedReason makes a push service's reason fit the registry's text
// columns: PostgreSQL refuses a NUL byte and invalid UTF-8, and one such
// reason would fail every outcome written in the same batch. The reasons
// are what push services answered, which nothing here controls.
func storedReason(s string) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	s = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, s)
	return push.Truncate(s, 200)
}

func randomHex(n int) (string, error) {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("reading random bytes: %w", err)
	}
	return hex.EncodeToString(b), nil
}

type nopObserver struct{}

func (nopObserver) Registered(string, bool)                {}
func (nopObserver) Unregistered(string, string)            {}
func (nopObserver) Pushed(string, Outcome, time.Duration)  {}
func (nopObserver) Rejected(RejectReason)                  {}
func (nopObserver) RegistrationFailed(RegistrationFailure) {}
func (nopObserver) Panicked(string)                        {}
