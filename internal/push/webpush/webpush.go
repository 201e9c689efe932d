// Package webpush delivers pushes to web browsers and UnifiedPush
// distributors through the Web Push protocol: RFC 8030 requests to the
// subscription's endpoint, the payload encrypted as RFC 8291 says
// (aes128gcm), the sender identified by a VAPID token (RFC 8292). It owns
// the subscription format (PushSubscription.toJSON()), the VAPID key file,
// and the guard that keeps client-chosen endpoints from reaching into our
// own network.
//
// The cryptography is built on the standard library (crypto/ecdh,
// crypto/hkdf, crypto/aes, crypto/cipher): RFC 8291 is about a hundred
// lines on top of it, while the Go web-push libraries bring their own
// HTTP clients (no dial hook for the address guard, no HTTP/2 pool of
// ours) and an unpinned crypto surface for the same few calls. The VAPID
// JWT is signed with golang-jwt, which the APNS backend already uses.
package webpush

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/push-appserver/push-appserver/internal/push"
	"github.com/push-appserver/push-appserver/internal/push/h2client"
)

// DefaultTTL is how long a push service keeps an undelivered message when
// the app sets no ttl: a day, after which a wake-up has lost its point.
const DefaultTTL = 24 * time.Hour

// DefaultTopic is the RFC 8030 Topic sent when collapsing is on: a newer
// push replaces one the push service still holds for the subscription.
const DefaultTopic = "xmpp-push"

// maxAnswer caps how much of a push service's answer we read.
const maxAnswer = 4096

// Options configure one app's WebPush backend.
type Options struct {
	VAPIDKeyFile string // PEM P-256 private key (vapid-keygen writes one)
	VAPIDSubject string // mailto: or https: contact for push service operators
	// TTL is the RFC 8030 TTL; 0 means DefaultTTL.
	TTL time.Duration
	// Collapse sends Topic: DefaultTopic so a push service holds at most
	// one undelivered wake-up per subscription.
	Collapse bool
	// IncludeSummary lets the payload carry the summary's sender and body
	// (encrypted end to end, but off by default all the same).
	IncludeSummary bool
	PushDeadline   time.Duration // default 10 s
	CAPath         string        // directory of PEM CA certificates to trust; system pool when empty
	Guard          Guard
	// Breaker judges 400, 401 and 403 answers: the push service refuses our
	// VAPID token or key for the subscription, which is a subscription made
	// for another key when it happens now and then, and our key or claims
	// being wrong when it happens to most pushes. The wiring shares it with
	// health and metrics; a private one when nil.
	Breaker *push.Breaker
	// Gone judges 404 and 410 answers, per push service: a dead
	// subscription among the service's successes, or the service
	// answering so for every subscription (see GoneGuard). The wiring
	// keeps it across reloads and counts what it holds; a private one
	// when nil.
	Gone *GoneGuard

	// MaxPushes bounds the pushes under way at once (DefaultMaxPushes
	// when 0), MaxPushesPerService those at one push service's site,
	// its registrable domain (DefaultMaxPushesPerService when 0); push
	// services that have not answered lately take a quarter of
	// MaxPushes at most (see underway.go). A push past a bound fails at
	// once as a temporary failure (the user's server hears wait).
	MaxPushes, MaxPushesPerService int

	// Shared, when set, bounds the pushes under way of every app that
	// holds it together: the process's descriptors that WebPush may
	// take, which an app that pushes nothing leaves to the others.
	Shared *SharedBound

	// MaxConnections is how many connections to push services may be
	// open before the idle ones are closed; DefaultMaxConnections when 0.
	MaxConnections int

	// Now is the clock; time.Now when nil.
	Now func() time.Time
}

// DefaultMaxConnections bounds the connections a WebPush app keeps open.
// Subscriptions choose their push service, and HTTP/2's idle connections
// are bounded by no MaxIdleConns: one who registers endpoints at many
// hosts (a wildcard domain, one server behind them) and pushes to each
// would otherwise hold a connection and its buffers open to every one of
// them for IdleConnTimeout, and run the process out of file descriptors.
// Real apps reach a few big push services and some UnifiedPush servers.
const DefaultMaxConnections = 1024

// The bounds of the pushes under way. A push waits on its push service
// without holding a slot of the XMPP connection it came from (see
// push.Elsewhere), since subscriptions choose their service, and one that
// never answers would otherwise stop every push on the connection; these
// bound what such a service can hold instead: a tenth of a second each,
// 256 pushes to one service make 2,560 a second. One service is one site
// (registrable domain), and those that do not answer share a quarter of
// the bound of all (see underway.go).
const (
	DefaultMaxPushes           = 1024
	DefaultMaxPushesPerService = 256
)

// Backend sends pushes for one app to every push service its subscriptions
// name, over one pooled client.
type Backend struct {
	opts    Options
	vapid   *vapid
	client  *http.Client
	logger  *slog.Logger
	limits  limits
	flights flights
}

var _ push.Backend = (*Backend)(nil)
var _ push.TokenValidator = (*Backend)(nil)

// New loads the VAPID key and returns a backend.
func New(opts Options, logger *slog.Logger) (*Backend, error) {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.PushDeadline <= 0 {
		opts.PushDeadline = push.DefaultPushDeadline
	}
	if opts.TTL <= 0 {
		opts.TTL = DefaultTTL
	}
	if opts.MaxConnections <= 0 {
		opts.MaxConnections = DefaultMaxConnections
	}
	if opts.MaxPushes <= 0 {
		opts.MaxPushes = DefaultMaxPushes
	}
	if opts.MaxPushesPerService <= 0 {
		opts.MaxPushesPerService = DefaultMaxPushesPerService
	}
	if err := CheckSubject(opts.VAPIDSubject); err != nil {
		return nil, err
	}
	key, err := LoadVAPIDKey(opts.VAPIDKeyFile)
	if err != nil {
		return nil, err
	}
	v, err := newVAPID(key, opts.VAPIDSubject, opts.Now)
	if err != nil {
		return nil, err
	}
	tlsConfig := &tls.Config{MinVersion: tls.VersionTLS12}
	if opts.CAPath != "" {
		pool, err := h2client.LoadCAs(opts.CAPath)
		if err != nil {
			return nil, fmt.Errorf("webpush: %w", err)
		}
		tlsConfig.RootCAs = pool
	}
	if opts.Breaker == nil {
		opts.Breaker = push.NewBreaker("webpush", push.BreakerOptions{}, logger)
	}
	if opts.Gone == nil {
		opts.Gone = NewGoneGuard("webpush", GoneOptions{Now: opts.Now}, logger)
	}
	// The public key is what web clients subscribe with; operators look
	// for it here when setting a client up.
	logger.Info("webpush app ready", "vapid_public_key", v.k, "vapid_subject", opts.VAPIDSubject)
	b := &Backend{opts: opts, vapid: v, logger: logger, limits: newLimits(opts.MaxPushes, opts.MaxPushesPerService, opts.Shared)}
	dialer := &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second, ControlContext: b.opts.Guard.control}
	tr := &http.Transport{
		Proxy:                  nil,
		TLSClientConfig:        tlsConfig,
		ForceAttemptHTTP2:      true,
		TLSHandshakeTimeout:    10 * time.Second,
		ResponseHeaderTimeout:  30 * time.Second,
		MaxIdleConnsPerHost:    16,
		IdleConnTimeout:        5 * time.Minute,
		MaxResponseHeaderBytes: 16 << 10,
		// A connection the network dropped without a word (a NAT
		// that forgot it) would take every push to that service
		// down with it, each at its deadline, until TCP gave up
		// many minutes later. Pinged after pingAfter without a
		// frame, it goes pingTimeout later: soon enough for the
		// push that found it dead to go out again on a new one
		// within its deadline, as the APNS and FCM connections do
		// (net/http pings by the connection's quiet alone, not
		// only while pushes wait as those do).
		HTTP2: &http.HTTP2Config{SendPingTimeout: pingAfter, PingTimeout: pingTimeout},
	}
	var open atomic.Int64
	tr.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		if open.Load() >= int64(b.opts.MaxConnections) {
			// The busy connections stay; the big services' are rarely
			// idle for long, and a push to one whose was closed dials
			// it again.
			tr.CloseIdleConnections()
		}
		c, err := dialer.DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		open.Add(1)
		return &countedConn{Conn: c, open: &open}, nil
	}
	b.client = &http.Client{
		// net/http's transport: one pool per origin, HTTP/2 where the push
		// service offers it (the big ones do), HTTP/1.1 otherwise (some
		// UnifiedPush distributors). No proxy from the environment: a proxy
		// would connect for us and the guard would see only the proxy.
		Transport: tr,
		// A push service answers; it does not redirect. Following a
		// redirect would let an endpoint send us anywhere.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	return b, nil
}

// countedConn counts itself out of open when it closes.
type countedConn struct {
	net.Conn
	open *atomic.Int64
	once sync.Once
}

func (c *countedConn) Close() error {
	c.once.Do(func() { c.open.Add(-1) })
	return c.Conn.Close()
}

// The HTTP/2 health check of the connections to push services. With
// 30 s and 10 s, a connection gone silent failed every push to its
// service, each at its deadline (5 s by default), for 30 to 40 s. An
// idle connection is pinged every pingAfter until it is closed
// (IdleConnTimeout): 150 pings at most, a few bytes each, for an origin
// we stopped pushing to. pingAfter plus pingTimeout leaves a push that
// found the connection dead 2 s of its default 5 to go out on a new one.
const (
	pingAfter   = 2 * time.Second
	pingTimeout = time.Second
)

// ValidateToken checks a subscription at registration: its JSON, keys and
// URL, and the guard's scheme, port and host rules. The addresses it
// resolves to are checked when we connect.
func (b *Backend) ValidateToken(token string) error {
	s, err := ParseSubscription(token)
	if err != nil {
		return err
	}
	return b.opts.Guard.CheckURL(s.Endpoint)
}

// DeviceKey is the subscription's endpoint, as the push service names
// it: scheme and host in lower case, without the default port, its path
// with unreserved bytes unescaped. The keys are the registrant's to
// choose and name no device; a token that does not parse is its own key.
func (b *Backend) DeviceKey(token string) string {
	s, err := ParseSubscription(token)
	if err != nil {
		return token
	}
	u := *s.Endpoint
	if h := u.Hostname(); strings.HasSuffix(h, ".") {
		u.Host = strings.Replace(u.Host, h, strings.TrimSuffix(h, "."), 1)
	}
	path := u.EscapedPath()
	if p, err := url.PathUnescape(path); err == nil {
		path = (&url.URL{Path: p}).EscapedPath()
	}
	q := ""
	if u.RawQuery != "" || u.ForceQuery {
		q = "?" + u.RawQuery
	}
	return originOf(&u) + path + q
}

// Payload is the JSON a service worker receives in the push event
// (event.data.json()).
type Payload struct {
	Node              string `json:"node"`
	MessageCount      int    `json:"message-count,omitempty"`
	LastMessageSender string `json:"last-message-sender,omitempty"`
	LastMessageBody   string `json:"last-message-body,omitempty"`
}

// payload builds the plaintext; the summary's texts are shortened until
// everything fits the one record RFC 8291 allows.
func (b *Backend) payload(n push.Notification) []byte {
	p := Payload{Node: n.Node}
	if n.Summary != nil {
		p.MessageCount = n.Summary.MessageCount
		if b.opts.IncludeSummary {
			p.LastMessageSender = push.Truncate(n.Summary.LastMessageSender, 512)
			p.LastMessageBody = push.Truncate(n.Summary.LastMessageBody, 2048)
		}
	}
	return push.Fit(func() []byte {
		out, _ := json.Marshal(p)
		return out
	}, func(b []byte) bool { return len(b) <= MaxPlaintext }, &p.LastMessageBody, &p.LastMessageSender)
}

// textPadding is the multiple of bytes a payload that carries the
// summary's text is padded to: most messages then come out the same
// size, and a long one tells its length to within 512 bytes only.
const textPadding = 512

// retryPadding is the finer multiple a payload that carries the
// summary's text is padded to when the service refused it padded to
// textPadding (413): every plaintext that fits a 3,015-byte body
// unpadded (Mozilla's bridge to FCM) fits it so padded too, and the
// service still learns the text's length to within 32 bytes only.
const retryPadding = 32

// padRetryTo is padTo with retryPadding, for the push sent again after
// its padded payload was refused as too large.
func (b *Backend) padRetryTo(n int) int {
	if !b.opts.IncludeSummary {
		return n
	}
	return min((n+retryPadding-1)/retryPadding*retryPadding, MaxPlaintext)
}

// padTo is the length a payload of n bytes is padded to before it is
// encrypted. The push service sees each message's length, and with
// include_summary that would tell it the length of the sender's JID and
// of the message body inside. Without it a payload carries no text, and
// its length tells nothing worth the bytes.
func (b *Backend) padTo(n int) int {
	if !b.opts.IncludeSummary {
		return n
	}
	return min((n+textPadding-1)/textPadding*textPadding, MaxPlaintext)
}

// urgency maps the push's priority onto RFC 8030 Urgency: an alert may
// wake a device on battery, a silent push waits for a normal moment.
func urgency(p push.Priority) string {
	if p == push.PrioritySilent {
		return "normal"
	}
	return "high"
}

// Send delivers n, retrying transient failures until the push deadline.
func (b *Backend) Send(ctx context.Context, n push.Notification) error {
	sub, err := ParseSubscription(n.Token)
	if err != nil {
		return fmt.Errorf("webpush: stored subscription: %w", err)
	}
	if err := b.opts.Guard.CheckURL(sub.Endpoint); err != nil {
		return err
	}
	plain := b.payload(n)
	body, err := EncryptPadded(plain, sub, b.padTo(len(plain)))
	if err != nil {
		return err
	}
	origin := originOf(sub.Endpoint)
	t, refused := b.flights.take(origin, siteOf(sub.Endpoint), b.opts.Now(), b.limits)
	if refused != "" {
		// Not the service's answer: nothing for the breaker to judge.
		b.opts.Shared.count(refused)
		return &push.TemporaryError{Reason: busyReason(refused, origin)}
	}
	defer func() { b.flights.done(t, b.opts.Now()) }()
	if b.opts.Shared != nil {
		if refused := b.opts.Shared.take(t.quiet); refused != "" {
			b.opts.Shared.count(refused)
			if refused == BusyQuiet {
				return &push.TemporaryError{Reason: busyReason(refused, origin)}
			}
			return &push.TemporaryError{Reason: "too many WebPush pushes under way"}
		}
		defer b.opts.Shared.done(t.quiet)
	}
	// A service that failed pushes and never took one gets each push
	// once, and again a minute later at the soonest: it may be anyone's
	// server, named by a stranger's subscriptions, that we would
	// otherwise hit again and again.
	unproven := b.opts.Gone.Unproven(origin)
	refreshed, repadded, shortened, misdirected := false, false, false, false
	err = push.Retry(ctx, push.RetryPolicy{Budget: b.opts.PushDeadline, Start: n.Sent}, func(ctx context.Context) error {
		err := b.attempt(ctx, sub, origin, n, &body, &refreshed, &repadded, &shortened, &misdirected)
		if unproven && push.IsTemporary(err) {
			return onceUnproven(err, origin)
		}
		return err
	})
	if c, ok := err.(*clockDisputed); ok {
		// Not retried within the push's seconds: the clocks will not
		// agree sooner. Temporary, so the breaker counts it for no
		// subscription and the push waits for redelivery.
		err = c.temporary()
	}
	// The breaker hears every answer (a 404 is one that does not
	// refuse our key); the guard judges the service's 404 and 410 as
	// they came, not a refusal the breaker took for a dead token.
	judged := b.opts.Breaker.JudgeCtx(ctx, origin, err)
	if _, gone := asDead(err); err == nil || gone {
		judged = b.opts.Gone.Judge(ctx, origin, err)
	} else {
		b.opts.Gone.failed(origin)
	}
	if unproven && push.IsTemporary(judged) {
		// A 404 held by the guard, or a refusal the breaker would
		// have retried: tried again as rarely.
		return onceUnproven(judged, origin)
	}
	return judged
}

// unprovenRetryAfter is how long a push to a service that has answered
// none with success (see GoneGuard.Unproven) waits before it is tried
// again: at most about ten requests for a push over the default 10
// minutes of redelivery, where retries within the push and redelivery's
// own backoff made about a hundred, and still every push of a
// self-hosted distributor that was down when the server started goes
// out once it is back.
const unprovenRetryAfter = time.Minute

// onceUnproven is err, a failure that may pass, for a push to a service
// that has answered none with success: temporary still, so the push is
// kept for redelivery, but with a Retry-After longer than any push's
// deadline, so that it is not retried within the push and redelivery
// tries it no sooner than unprovenRetryAfter.
func onceUnproven(err error, origin string) error {
	var te *push.TemporaryError
	if errors.As(err, &te) && te.RetryAfter >= unprovenRetryAfter {
		// Waits as long already (the service's Retry-After, or this
		// function's own once the breaker passed it on).
		return err
	}
	return &push.TemporaryError{Reason: origin + " has answered no push with success: tried again in a minute", Err: err, RetryAfter: unprovenRetryAfter}
}

// attempt makes one request of the push n to sub (up to three, when a
// summary too large for the service is sent again padded finer, then
// without its text) and says what came of it as Send's retries take it.
func (b *Backend) attempt(ctx context.Context, sub Subscription, origin string, n push.Notification, body *[]byte, refreshed, repadded, shortened, misdirected *bool) error {
	status, retryAfter, date, err := b.post(ctx, sub, origin, *body, n.Priority, *misdirected)
	if status == http.StatusRequestEntityTooLarge && !*shortened && n.Summary != nil && b.opts.IncludeSummary {
		// RFC 8030 has services take 4,096 bytes, and ours fit
		// them, but some take less: Mozilla's, for Firefox on
		// Android and iOS, bridges to FCM and APNS and refuses
		// what their 4 KiB would not hold. The wake-up matters,
		// the summary's text less: send it once more without.
		//
		// But the padding may be what took it past the service's
		// limit (Mozilla's bridge to FCM takes about 3,015 bytes of
		// body, and 2,700 bytes of plaintext padded to 3,072 pass
		// it): the same text padded to a finer multiple goes first,
		// so that the padding never costs the device a text that
		// fits. Not unpadded: any service could then learn each
		// message's exact length by refusing its padded payload.
		if !*repadded {
			*repadded = true
			if plain := b.payload(n); b.padRetryTo(len(plain)) < b.padTo(len(plain)) {
				if short, encErr := EncryptPadded(plain, sub, b.padRetryTo(len(plain))); encErr == nil {
					*body = short
					status, retryAfter, date, err = b.post(ctx, sub, origin, *body, n.Priority, *misdirected)
				}
			}
		}
		if status == http.StatusRequestEntityTooLarge {
			*shortened = true
			if short, encErr := Encrypt(b.payload(withoutText(n)), sub); encErr == nil {
				*body = short
				status, retryAfter, date, err = b.post(ctx, sub, origin, *body, n.Priority, *misdirected)
			}
		}
	}
	switch {
	case err != nil:
		if errors.Is(err, ErrRefused) {
			return err
		}
		return &push.TemporaryError{Reason: "request failed", Err: err}
	case status >= 200 && status < 300:
		return nil
	case status == http.StatusNotFound || status == http.StatusGone:
		return &push.DeadTokenError{Since: b.opts.Now(), Reason: strconv.Itoa(status) + " " + http.StatusText(status)}
	case status == http.StatusInsufficientStorage:
		// ntfy's answer (code 50701) for a UnifiedPush topic no
		// device has subscribed to for hours: a device that has
		// not connected since. Not a dead subscription (the
		// device subscribes again when it connects, and fetches
		// its messages then), but nothing a retry within the
		// push's seconds, or a redelivery within minutes, would
		// change: ntfy would only count each against us.
		return fmt.Errorf("webpush: %d %s from %s: no device subscribed there lately", status, http.StatusText(status), origin)
	case status == http.StatusTooManyRequests || status == http.StatusRequestTimeout || status == http.StatusNotAcceptable || status >= 500:
		// 408: the service, or a proxy before it, gave up waiting
		// for the request (RFC 9110 15.5.9), which may be repeated.
		// 406: Microsoft's push service (WNS, Edge's subscriptions)
		// throttles with it, X-WNS-Status: appthrottled and a
		// Retry-After, where RFC 8030 services answer 429; RFC 8030
		// gives it no other meaning for a push, and we send no
		// Accept a service could find unacceptable. Failed for good,
		// the push was dropped for the service's passing limit.
		return &push.TemporaryError{Reason: strconv.Itoa(status) + " " + http.StatusText(status), RetryAfter: retryAfter}
	case status == http.StatusMisdirectedRequest:
		// The connection cannot serve the endpoint's host (RFC 9110
		// 15.5.20: a front end behind a shared address, a certificate
		// that covers more names than the server does): the request
		// may be sent again over another connection, and the pool
		// would hand out the same one, so the attempts that follow
		// retire it. Failed for good instead, the push was dropped.
		*misdirected = true
		return &push.TemporaryError{Reason: strconv.Itoa(status) + " " + http.StatusText(status), RetryAfter: retryAfter}
	case (status == http.StatusBadRequest || status == http.StatusUnauthorized || status == http.StatusForbidden) && !*refreshed:
		// A token signed a moment before a key change or with a clock
		// the service disputes: sign afresh once before giving up.
		b.vapid.invalidate(origin)
		*refreshed = true
		return &push.TemporaryError{Reason: strconv.Itoa(status) + " " + http.StatusText(status)}
	case (status == http.StatusBadRequest || status == http.StatusUnauthorized || status == http.StatusForbidden) && clockOff(date, b.opts.Now()):
		// Refused again, by a service whose clock is far from ours:
		// our token's exp, read on its clock, may be past or too
		// far ahead (a host resumed after hours suspended, or one
		// NTP has not set right yet). Every subscription would be
		// refused alike, so this says nothing of this one: kept,
		// and sent again once the clocks agree.
		return &clockDisputed{status: status, origin: origin, off: b.opts.Now().Sub(date)}
	case status == http.StatusBadRequest || status == http.StatusUnauthorized || status == http.StatusForbidden:
		return &push.SuspectTokenError{Reason: fmt.Sprintf("%d %s from %s", status, http.StatusText(status), origin),
			Cause: "VAPID key replaced (vapid_key_file), or vapid_subject refused?"}
	case status == http.StatusRequestEntityTooLarge:
		return fmt.Errorf("webpush: %d payload too large", status)
	}
	// The core logs the failure, at most 10 lines a second: the
	// subscription chose this service, which may be anyone's.
	b.logger.Debug("push service rejected push", "node", n.Node, "origin", origin, "status", status)
	return fmt.Errorf("webpush: %d %s from %s", status, http.StatusText(status), origin)
}

// withoutText is n with its summary's sender and body left out.
func withoutText(n push.Notification) push.Notification {
	sum := *n.Summary
	sum.LastMessageSender, sum.LastMessageBody = "", ""
	n.Summary = &sum
	return n
}

// originOf is the push service's origin (RFC 6454) as the VAPID token's
// audience names it: lower case, without the default port. A service
// may refuse a token for "https://Push.example:443" that it takes for
// "https://push.example".
func originOf(u *url.URL) string {
	host, port := strings.ToLower(u.Hostname()), u.Port()
	if port == "" || port == "443" {
		if strings.Contains(host, ":") {
			host = "[" + host + "]"
		}
		return "https://" + host
	}
	return "https://" + net.JoinHostPort(host, port)
}

// maxClockOff is how far the push service's clock (its answer's Date)
// may be from ours before a refusal of a token signed afresh is taken for
// our clock's doing rather than the subscription's. A token is valid for
// vapidLifetime by our clock, which services take while it ends within a
// day of theirs; a host on NTP is within a second, so a gap of an hour
// is a clock gone wrong on one side.
const maxClockOff = time.Hour

// clockOff reports whether date, a push service's answer's Date (zero
// when it sent none), is more than maxClockOff from now, ours.
func clockOff(date, now time.Time) bool {
	if date.IsZero() {
		return false
	}
	d := now.Sub(date)
	return d > maxClockOff || d < -maxClockOff
}

// clockDisputed is a push service's refusal of a token signed afresh
// while its clock is off ours by off (positive: ours ahead).
type clockDisputed struct {
	status int
	origin string
	off    time.Duration
}

func (c *clockDisputed) Error() string { return c.temporary().Error() }

func (c *clockDisputed) temporary() *push.TemporaryError {
	return &push.TemporaryError{Reason: fmt.Sprintf("%d %s from %s, whose clock is %s off ours: our VAPID token's expiry may be what it refuses; check this host's clock",
		c.status, http.StatusText(c.status), c.origin, c.off.Round(time.Second))}
}

// post sends one push; date is the answer's Date, zero when it had none.
// closeConn retires the connection it goes out on once it is answered.
func (b *Backend) post(ctx context.Context, sub Subscription, origin string, body []byte, prio push.Priority, closeConn bool) (status int, retryAfter time.Duration, date time.Time, err error) {
	auth, err := b.vapid.authorization(origin)
	if err != nil {
		return 0, 0, time.Time{}, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, sub.Endpoint.String(), bytes.NewReader(body))
	if err != nil {
		return 0, 0, time.Time{}, err
	}
	req.Header.Set("Content-Type", "application/octet-stream")
	req.Header.Set("Content-Encoding", "aes128gcm")
	req.Header.Set("TTL", strconv.FormatInt(int64(b.opts.TTL/time.Second), 10))
	req.Header.Set("Urgency", urgency(prio))
	if b.opts.Collapse {
		req.Header.Set("Topic", DefaultTopic)
	}
	req.Header.Set("Authorization", auth)
	// On HTTP/2 too: the transport takes no other request on it.
	req.Close = closeConn
	var resp *http.Response
	err = push.Elsewhere(ctx, func() error {
		var err error
		if resp, err = b.client.Do(req); err == nil {
			b.flights.answered(origin, b.opts.Now())
			push.DiscardBody(ctx, resp, maxAnswer)
			resp.Body.Close()
		}
		return err
	})
	if err != nil {
		// The endpoint's path is the subscription: keep it out of logs.
		return 0, 0, time.Time{}, push.RedactURL(err, origin+"/…")
	}
	if resp.StatusCode >= 400 {
		// Only a refusal's is read: a success's would cost a parse.
		date, _ = http.ParseTime(resp.Header.Get("Date"))
	}
	return resp.StatusCode, parseRetryAfter(resp.Header.Get("Retry-After"), b.opts.Now()), date, nil
}

// parseRetryAfter reads Retry-After as seconds or an HTTP date.
func parseRetryAfter(v string, now time.Time) time.Duration {
	if v == "" {
		return 0
	}
	if s, err := strconv.Atoi(v); err == nil && s > 0 {
		return time.Duration(s) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}

// Close closes the idle connections to push services. A reload that
// replaced the backend calls it once the pushes under way on it have
// ended, when every connection is idle; otherwise they would stay open
// for IdleConnTimeout.
func (b *Backend) Close() error {
	b.client.CloseIdleConnections()
	return nil
}

// CloseIdleConnections closes the idle connections at once: a reload
// calls it as it swaps the backend out, since no push takes it after.
func (b *Backend) CloseIdleConnections() { b.client.CloseIdleConnections() }

// TokensNameEndpoints is true: a subscription is the URL we POST to
// (push.EndpointTokens).
func (b *Backend) TokensNameEndpoints() bool { return true }

// CarriesSummaryText says whether pushes carry the summary's sender and
// body (include_summary).
func (b *Backend) CarriesSummaryText() bool { return b.opts.IncludeSummary }
