// Package apns delivers pushes through Apple's APNS provider API: HTTP/2
// to api.push.apple.com (or the sandbox), authenticated by a provider token
// (ES256 JWT from a p8 key) or a TLS client certificate.
//
// It speaks the API on an HTTP/2 client (internal/h2client) rather than through
// github.com/sideshow/apns2: that library configures its transport through
// package-level variables and hides the clock its tokens are signed with,
// and what we need beyond one POST (a deadline per push, retries on
// GOAWAY and 5xx, a token refresh on ExpiredProviderToken, Apple's 410
// timestamp) would have to be wrapped around it anyway.
package apns

import (
	"context"
	"crypto/ecdsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"software.sslmate.com/src/go-pkcs12"

	"github.com/push-appserver/push-appserver/internal/push"
	"github.com/push-appserver/push-appserver/internal/push/h2client"
)

// Apple's hosts.
const (
	HostProduction = "https://api.push.apple.com"
	HostSandbox    = "https://api.sandbox.push.apple.com"
)

// Apple accepts a provider token for an hour and rejects refreshing it more
// than once in 20 minutes; 50 minutes sits between.
const tokenLifetime = 50 * time.Minute

// tokenUpdateInterval is how often Apple lets a provider replace its
// provider token ("no more than once every 20 minutes"; more often is
// answered 429 TooManyProviderTokenUpdates, and may get the team
// throttled). A token refused with 403 is signed anew at most this often:
// a key that is revoked or of another team is refused however fresh the
// token, and each push tried again during such a refusal would otherwise
// sign one.
const tokenUpdateInterval = 20 * time.Minute

// Options configure one app's APNS backend.
type Options struct {
	Topic    string // the app's bundle id; VoIP pushes go to Topic+".voip"
	Sandbox  bool   // use Apple's sandbox host
	Endpoint string // overrides the host (tests, proxies)
	CAPath   string // directory of PEM CA certificates to trust; system pool when empty

	// Certificate auth: CertFile and KeyFile (PEM), or PKCS12File with
	// KeyPassword.
	CertFile, KeyFile, PKCS12File, KeyPassword string
	// Token auth: the p8 key file, its key id and the team id.
	TokenKeyFile, KeyID, TeamID string

	// AlertTitle and AlertBody are the alert of high-priority pushes (the
	// seed's push_appserver_apns_push_alert is the body); an empty one is
	// left out.
	AlertTitle, AlertBody string
	Sound                 string        // sound of high-priority pushes; "" for none
	TTL                   time.Duration // apns-expiration = now + TTL; 0 leaves it to Apple
	MutableContent        bool          // mark alert pushes mutable-content so a notification extension can rewrite them
	Collapse              bool          // send apns-collapse-id so a device shows one notification for a burst
	IncludeSummary        bool          // let the payload carry the summary's sender and body (privacy: off by default)
	PushDeadline          time.Duration // how long one push may take with retries; 0 means push.DefaultPushDeadline

	// Breaker judges answers that may mean a dead token or a
	// misconfigured app; the wiring shares it with health and metrics. A
	// private one when nil.
	Breaker *push.Breaker

	// Now is the clock; time.Now when nil.
	Now func() time.Time
}

// Backend sends pushes for one app. It keeps one HTTP/2 connection pool.
type Backend struct {
	opts    Options
	client  *h2client.Client
	signer  *signer // nil with certificate auth
	breaker *push.Breaker
	logger  *slog.Logger
	// base is the endpoint's URL; addr, authority and path are its parts
	// as a request needs them, worked out once rather than from a URL per
	// push. path ends in "/3/device/": the token follows.
	base, addr, authority, path string
	// fixed holds, per priority, the request of a notification that
	// carries nothing of its own (no summary shown, not encrypted),
	// rendered once: most pushes are such, and rendering headers and JSON
	// was a visible part of a push's cost. Indexed by fixedSlot, which a
	// push finds by a switch rather than by hashing its priority in a
	// map. Read-only after New.
	fixed [fixedSlots]request
	// authed is fixed's header fields with the current provider token
	// added, remade when the token changes (every 20 minutes or so), so a
	// push copies no header map, and its connection sends the fields'
	// encoding of the push before.
	authed atomic.Pointer[authedFields]
	// onSystemClock is set when opts.Now is time.Now, as the caller left
	// it: a push's Sent then serves as the time of its first request.
	onSystemClock bool
	// certExpiry is when the client certificate in use expires; zero
	// with token auth.
	certExpiry time.Time
}

// CertificateExpiry is when the client certificate this backend pushes
// with expires (ok false with token auth): the one loaded, not the file,
// which may have been renewed since.
func (b *Backend) CertificateExpiry() (t time.Time, ok bool) {
	return b.certExpiry, !b.certExpiry.IsZero()
}

// authedFields are the fixed requests' header fields carrying one provider
// token.
type authedFields struct {
	auth   string
	fields [fixedSlots]*h2client.Fields
}

// fixedSlots is the number of priorities with a fixed request: high,
// silent and VoIP.
const fixedSlots = 3

// fixedSlot is p's index in Backend.fixed, false for a priority without a
// fixed request.
func fixedSlot(p push.Priority) (int, bool) {
	switch p {
	case push.PriorityHigh:
		return 0, true
	case push.PrioritySilent:
		return 1, true
	case push.PriorityVoIP:
		return 2, true
	}
	return 0, false
}

var _ push.Backend = (*Backend)(nil)

// New checks the credentials and returns a backend.
func New(opts Options, logger *slog.Logger) (*Backend, error) {
	if opts.Topic == "" {
		return nil, errors.New("apns: topic is required")
	}
	onSystemClock := opts.Now == nil
	if onSystemClock {
		opts.Now = time.Now
	}
	if opts.Breaker == nil {
		opts.Breaker = push.NewBreaker(opts.Topic, push.BreakerOptions{}, logger)
	}
	var certs []tls.Certificate
	b := &Backend{opts: opts, logger: logger, breaker: opts.Breaker, onSystemClock: onSystemClock}
	for _, p := range []push.Priority{push.PriorityHigh, push.PrioritySilent, push.PriorityVoIP} {
		slot, _ := fixedSlot(p)
		r := b.render(push.Notification{Priority: p})
		r.slot = slot
		r.header.Del("apns-expiration") // depends on the time of sending
		var err error
		if r.fields, err = h2client.NewFields(r.header); err != nil {
			return nil, fmt.Errorf("apns: %w", err)
		}
		b.fixed[slot] = r
	}
	switch {
	case opts.TokenKeyFile != "":
		key, err := loadP8(opts.TokenKeyFile)
		if err != nil {
			return nil, err
		}
		if opts.KeyID == "" || opts.TeamID == "" {
			return nil, errors.New("apns: token auth needs key id and team id")
		}
		b.signer = &signer{key: key, keyID: opts.KeyID, teamID: opts.TeamID, now: opts.Now}
	case opts.PKCS12File != "":
		data, err := os.ReadFile(opts.PKCS12File)
		if err != nil {
			return nil, fmt.Errorf("apns: %w", err)
		}
		key, cert, chain, err := pkcs12.DecodeChain(data, opts.KeyPassword)
		if err != nil {
			return nil, fmt.Errorf("apns: reading %s: %w", opts.PKCS12File, err)
		}
		c := tls.Certificate{Certificate: [][]byte{cert.Raw}, PrivateKey: key, Leaf: cert}
		for _, ca := range chain {
			c.Certificate = append(c.Certificate, ca.Raw)
		}
		certs = []tls.Certificate{c}
	case opts.CertFile != "":
		c, err := tls.LoadX509KeyPair(opts.CertFile, opts.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("apns: loading certificate: %w", err)
		}
		certs = []tls.Certificate{c}
	default:
		return nil, errors.New("apns: no credentials: a certificate or a p8 token key is required")
	}
	b.base = opts.Endpoint
	if b.base == "" {
		b.base = HostProduction
		if opts.Sandbox {
			b.base = HostSandbox
		}
	}
	u, err := url.Parse(b.base)
	if err != nil || u.Scheme != "https" || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("apns: endpoint %q is not an https URL without query", b.base)
	}
	b.authority, b.addr = u.Host, h2client.Addr(u)
	b.path = strings.TrimSuffix(u.EscapedPath(), "/") + "/3/device/"
	client, err := h2client.New(h2client.Options{CAPath: opts.CAPath, Certificates: certs})
	if err != nil {
		return nil, fmt.Errorf("apns: %w", err)
	}
	b.client = client
	if len(certs) > 0 && certs[0].Leaf != nil {
		b.certExpiry = certs[0].Leaf.NotAfter
	}
	return b, nil
}

func loadP8(path string) (*ecdsa.PrivateKey, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("apns: token key: %w", err)
	}
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, fmt.Errorf("apns: token key %s is not PEM", path)
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("apns: token key %s: %w", path, err)
	}
	ek, ok := k.(*ecdsa.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("apns: token key %s is not an ECDSA key", path)
	}
	return ek, nil
}

// ValidateToken accepts what APNS issues: hex, an even number of digits,
// 32 to 100 bytes.
func (b *Backend) ValidateToken(tok string) error {
	if len(tok)%2 != 0 || len(tok) < 64 || len(tok) > 200 {
		return fmt.Errorf("APNS token must be 64 to 200 hex digits, got %d characters", len(tok))
	}
	if _, err := hex.DecodeString(tok); err != nil {
		return errors.New("APNS token must be hex")
	}
	return nil
}

// Warm connects to APNS ahead of the first push (see h2client.Warm).
// With a certificate, the handshake proves that APNS takes it.
func (b *Backend) Warm(ctx context.Context) error { return b.client.Warm(ctx, b.addr) }

// checkToken, 64 zeros, is a device token APNS never issues: a push to
// it reaches no device.
const checkToken = "0000000000000000000000000000000000000000000000000000000000000000"

// CheckCredentials asks APNS whether it takes the app's provider token
// or certificate and its topic, with a background push to a device token
// no device has. Apple judges the provider token or certificate before
// the device token (a wrong key is answered InvalidProviderToken
// whatever the token), and the topic too as far as its answers show; its
// documentation lists the errors in no order. So BadDeviceToken means
// both were taken. It returns nil then, a
// *push.CredentialsRefusedError when Apple refused them, and another
// error when the answer tells neither (5xx, 429, the network). Its
// answer goes to no breaker, registration or count of pushes.
//
// A wrong environment (sandbox or production) shows with token auth only
// for a key restricted to one of them (BadEnvironmentKeyInToken): a
// provider token of a key for both is good in both, and both refuse the
// made-up token alike.
func (b *Backend) CheckCredentials(ctx context.Context) error {
	r := b.build(push.Notification{Priority: push.PrioritySilent})
	a, err := b.post(ctx, checkToken, r, time.Time{})
	if err == nil && a.status == http.StatusForbidden && b.signer != nil &&
		(a.reason == "ExpiredProviderToken" || a.reason == "InvalidProviderToken") && b.signer.invalidate(a.auth) {
		// As a push does: a provider token Apple calls stale (signed
		// before the host's clock was set right, say) is signed anew
		// and tried once more before it counts as a refusal, unless
		// one was signed anew after a refusal too recently.
		a, err = b.post(ctx, checkToken, r, time.Time{})
	}
	if err != nil {
		return err
	}
	reason := strings.TrimSpace(fmt.Sprintf("%d %s", a.status, a.reason))
	switch {
	case a.status == http.StatusOK, a.status == http.StatusGone,
		a.status == http.StatusBadRequest && a.reason == "BadDeviceToken":
		return nil
	case a.status == http.StatusForbidden,
		a.status == http.StatusBadRequest && (topicRefused(a.reason) || a.reason == "DeviceTokenNotForTopic"):
		return &push.CredentialsRefusedError{Reason: "APNS " + reason, Check: b.credentialsCause(a.reason)}
	case wrongEndpoint(a.status):
		return b.endpointRefused(a)
	}
	return fmt.Errorf("apns: %s to a push to no device tells nothing of the credentials", reason)
}

// wrongEndpoint reports whether status answers where the request went
// rather than what it carried: Apple's 404 BadPath (a :path other than
// /3/device/<token>) and 405 MethodNotAllowed (a :method other than
// POST), which we send only to an endpoint configured with a path, or
// to a front end that is not Apple's, whatever reason it gives.
func wrongEndpoint(status int) bool {
	return status == http.StatusNotFound || status == http.StatusMethodNotAllowed
}

// endpointRefused is a, an answer of wrongEndpoint, as a refusal of the
// app's configuration saying to check endpoint.
func (b *Backend) endpointRefused(a answer) error {
	return &push.CredentialsRefusedError{
		Reason: strings.TrimSpace(fmt.Sprintf("APNS %d %s", a.status, a.reason)),
		Check: "endpoint: pushes go to https://" + b.authority + b.path + "<token>, which is no APNS path; " +
			"leave endpoint out for Apple's hosts, or set it to the base URL of a front end that passes requests on to APNS as they are",
	}
}

// credentialsCause is what to check in the configuration when APNS
// refuses the app's credentials or topic for reason.
func (b *Backend) credentialsCause(reason string) string {
	switch reason {
	case "BadTopic", "TopicDisallowed", "MissingTopic", "DeviceTokenNotForTopic":
		return "topic (" + b.opts.Topic + ") is the app's bundle ID, an app of the key's team or the certificate's"
	case "ExpiredProviderToken":
		return "the clock of this host: the provider token carries its time"
	case "BadCertificateEnvironment":
		return "sandbox: the certificate is for the other environment than " + Environment(b.opts.Sandbox, b.opts.Endpoint)
	case "BadEnvironmentKeyInToken":
		// A team-scoped key may be restricted to the sandbox or to
		// production: its tokens are good in that one alone.
		return "sandbox: the p8 key is restricted to the other environment than " + Environment(b.opts.Sandbox, b.opts.Endpoint)
	}
	if b.signer != nil {
		return "key_id, team_id and token_key_file: the p8 key's ID, the team it belongs to, and the key itself (not revoked)"
	}
	return "the certificate (cert_file and key_file, or pkcs12_file): an APNs certificate of this app, not revoked or expired"
}

// CanonicalToken is the token in lower case: APNS takes hex in either.
// Every push asks for it (the per-device limit counts by it), and a
// token is nearly always in lower case already: strings.ToLower would
// find that out a byte at a time, some 800 instructions for 64 digits,
// where lowerASCII looks at eight at once.
func (b *Backend) CanonicalToken(tok string) string {
	if lowerASCII(tok) {
		return tok
	}
	return strings.ToLower(tok)
}

// lowerASCII reports whether s is ASCII without an upper-case letter, so
// that strings.ToLower would return it as it is.
func lowerASCII(s string) bool {
	const ones, high = 0x0101010101010101, 0x8080808080808080
	for ; len(s) >= 8; s = s[8:] {
		w := uint64(s[0]) | uint64(s[1])<<8 | uint64(s[2])<<16 | uint64(s[3])<<24 |
			uint64(s[4])<<32 | uint64(s[5])<<40 | uint64(s[6])<<48 | uint64(s[7])<<56
		// With every byte below 0x80, a byte's own high bit is set in
		// w+(0x80-'A') once it is 'A' or above, and in w+(0x80-'Z'-1)
		// once it is above 'Z'; no byte carries into the next.
		if w&high != 0 || (w+(0x80-'A')*ones)&^(w+(0x80-'Z'-1)*ones)&high != 0 {
			return false
		}
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c >= 0x80 || 'A' <= c && c <= 'Z' {
			return false
		}
	}
	return true
}

// answer is what APNS said to one request.
type answer struct {
	status     int
	reason     string
	timestamp  time.Time
	retryAfter time.Duration
	id         string // apns-id, Apple's name for the notification
	auth       string // the provider token sent, with token auth
}

// Send delivers n, retrying transient failures until the push deadline.
func (b *Backend) Send(ctx context.Context, n push.Notification) error {
	req := b.build(n)
	if max := maxPayload(n.Priority); len(req.payload) > max {
		if n.Encrypted == nil {
			// Of our making (an alert text configured too long): not
			// the user's server's to fix.
			return fmt.Errorf("apns: %d-byte payload, Apple takes %d", len(req.payload), max)
		}
		return fmt.Errorf("apns: %d-byte payload, Apple takes %d: %w", len(req.payload), max, push.ErrPayloadTooLarge)
	}
	refreshed := false
	// The first request is made at n.Sent, a moment ago; a later one,
	// after a wait or with a new provider token, reads the clock.
	at := n.Sent
	if !b.onSystemClock {
		at = time.Time{}
	}
	err := push.Retry(ctx, push.RetryPolicy{Budget: b.opts.PushDeadline, Start: n.Sent}, func(ctx context.Context) error {
		for {
			a, err := b.post(ctx, n.Token, req, at)
			at = time.Time{}
			switch {
			case err != nil:
				return err
			case a.status == http.StatusOK:
				if b.logger.Enabled(ctx, slog.LevelDebug) {
					// Not evaluated for nothing: Get canonicalises its
					// key into a new string on every push.
					b.logger.Debug("push sent", "node", n.Node, "push_type", req.header.Get("apns-push-type"), "apns_id", a.id)
				}
				return nil
			case a.status == http.StatusGone && (a.reason == "Unregistered" || a.reason == "ExpiredToken"):
				// Apple's word that the token is dead; a 410 without
				// it (a proxy, a wrong endpoint) proves nothing.
				since := a.timestamp
				if since.IsZero() {
					since = b.opts.Now()
				}
				return &push.DeadTokenError{Since: since, Reason: a.reason}
			case a.status == http.StatusBadRequest && a.reason == "BadDeviceToken":
				// Also what every token gets when the app talks to the
				// wrong environment: the breaker tells the two apart.
				return &push.SuspectTokenError{Reason: a.reason, Cause: b.envCause()}
			case a.status == http.StatusBadRequest && a.reason == "DeviceTokenNotForTopic":
				return &push.SuspectTokenError{Reason: a.reason, Cause: "wrong topic? the app sends to topic " + b.opts.Topic}
			case a.status == http.StatusForbidden && b.signer != nil && !refreshed &&
				(a.reason == "ExpiredProviderToken" || a.reason == "InvalidProviderToken") && b.signer.invalidate(a.auth):
				// Apple says our token is stale: sign a new one and try
				// again at once, but only once per push, and only while
				// the signer may sign anew (invalidate): otherwise the
				// same token would be refused the same way.
				refreshed = true
				continue
			case a.status == http.StatusForbidden || a.status == http.StatusBadRequest && topicRefused(a.reason):
				// Our key, certificate or topic, not the device's
				// token (a stale provider token was signed anew
				// above): every push of the app is refused alike
				// until the configuration is mended. Not retried now;
				// kept for later by UntilReconfigured below.
				b.logger.Debug("APNS rejected push", "node", n.Node, "status", a.status, "reason", a.reason)
				return &push.CredentialsRefusedError{Reason: strings.TrimSpace(fmt.Sprintf("APNS %d %s", a.status, a.reason)), Check: b.credentialsCause(a.reason)}
			case a.status == http.StatusBadRequest && a.reason == "IdleTimeout":
				// Apple lists it among the 400s, but it is the
				// connection's (it sat idle too long), not the push's
				// or its token's: sent again, it goes through.
				return &push.TemporaryError{Reason: "APNS 400 IdleTimeout"}
			case a.status == http.StatusTooManyRequests && a.reason == "TooManyRequests":
				// "Too many requests were made consecutively to the
				// same device token": another within the push's
				// seconds is what Apple asks us not to send. Not
				// retried here; kept for redelivery below.
				return &deviceThrottled{retryAfter: a.retryAfter}
			case a.status == http.StatusTooManyRequests || a.status >= 500:
				return &push.TemporaryError{Reason: fmt.Sprintf("APNS %d %s", a.status, a.reason), RetryAfter: a.retryAfter,
					Outage: a.status >= 500}
			case a.status == http.StatusRequestTimeout || a.status == http.StatusMisdirectedRequest:
				// Not Apple's word on the push: a front end that gave
				// up waiting for the request (408, RFC 9110 15.5.9),
				// or a connection that cannot serve the host (421,
				// 15.5.20). Both may be sent again; failed for good,
				// the push would be neither retried nor redelivered.
				return &push.TemporaryError{Reason: strings.TrimSpace(fmt.Sprintf("APNS %d %s", a.status, a.reason)), RetryAfter: a.retryAfter, Outage: true}
			case wrongEndpoint(a.status):
				// Where the push went, not the push: every push of the
				// app is answered so until endpoint is mended. Failed
				// for good, each would be lost; kept for later by
				// UntilReconfigured below, as a refused key is.
				b.logger.Debug("APNS rejected push", "node", n.Node, "status", a.status, "reason", a.reason)
				return b.endpointRefused(a)
			default:
				b.logger.Debug("APNS rejected push", "node", n.Node, "status", a.status, "reason", a.reason)
				return fmt.Errorf("apns: %d %s", a.status, a.reason)
			}
		}
	})
	if d, ok := err.(*deviceThrottled); ok {
		err = d.temporary()
	}
	return b.breaker.JudgeCtx(ctx, "", push.UntilReconfigured(err))
}

// DeviceThrottledWait is how long a push Apple refused with 429
// TooManyRequests (too many pushes to its device in a row) waits before
// it is sent again, unless Apple's Retry-After says longer. Apple names
// no figure; a minute is what Google asks for FCM's 429, and what the
// redelivery's backoff grows to.
const DeviceThrottledWait = time.Minute

// deviceThrottled is APNS's 429 TooManyRequests within a push's
// attempts: no *push.TemporaryError, so push.Retry does not try the
// device again at once; Send turns it into one after the retries.
type deviceThrottled struct{ retryAfter time.Duration }

func (d *deviceThrottled) Error() string { return "APNS 429 TooManyRequests" }

// temporary is the failure the push ends with: kept for redelivery, not
// before DeviceThrottledWait or Apple's Retry-After. No outage: another
// device's push going through says nothing of this one's.
func (d *deviceThrottled) temporary() *push.TemporaryError {
	return &push.TemporaryError{Reason: "APNS 429 TooManyRequests (too many pushes to this device in a row; not retried at once)",
		RetryAfter: max(d.retryAfter, DeviceThrottledWait)}
}

// topicRefused reports whether reason, of a 400, refuses the app's topic
// rather than anything of the push or its token.
func topicRefused(reason string) bool {
	return reason == "BadTopic" || reason == "TopicDisallowed" || reason == "MissingTopic"
}

// Environment names the APNS environment an app with these options sends
// to, for the startup log and check-config: a production build's tokens
// are refused by the sandbox (and the other way round) as BadDeviceToken.
func Environment(sandbox bool, endpoint string) string {
	switch {
	case endpoint != "":
		return "custom endpoint " + endpoint
	case sandbox:
		return "sandbox (" + HostSandbox + ")"
	}
	return "production (" + HostProduction + ")"
}

func (b *Backend) envCause() string {
	switch {
	case b.opts.Endpoint != "":
		return "sandbox/production mismatch? the app sends to " + b.opts.Endpoint
	case b.opts.Sandbox:
		return "sandbox/production mismatch? the app sends to Apple's sandbox (sandbox = true); App Store and TestFlight builds need sandbox = false"
	}
	return "sandbox/production mismatch? the app sends to Apple's production service (sandbox = false); development builds need sandbox = true"
}

// Misconfigured reports whether the app's answers say the app, not its
// tokens, is wrong, and the likely cause.
func (b *Backend) Misconfigured() (bool, string) { return b.breaker.Misconfigured() }

// request is a push ready to post: payload and headers are the same for
// every retry.
type request struct {
	payload []byte
	header  http.Header
	// fields, when set, marks header as one of fixed's, which nobody
	// may change: post sends fields, or authed's with the provider
	// token, instead, and extra's after them.
	fields *h2client.Fields
	extra  http.Header
	slot   int // fixed's index of this request, when fields is set
}

// build returns the request for n: the fixed one of its priority when n
// adds nothing to it, else a fresh rendering. The payload is always
// shared, and so is the header when fields is set.
func (b *Backend) build(n push.Notification) request {
	slot, ok := fixedSlot(n.Priority)
	if !ok || n.Encrypted != nil || (b.opts.IncludeSummary && n.Summary != nil) || tigaseFields(n) {
		return b.render(n)
	}
	r := b.fixed[slot]
	if b.opts.TTL > 0 {
		r.extra = http.Header{"Apns-Expiration": {b.expiration()}}
	}
	return r
}

// withAuth sets req's header fields to r's with the provider token auth.
func (b *Backend) withAuth(req *h2client.Request, r request, auth string) {
	if r.fields == nil {
		// A header of this push's own.
		r.header["Authorization"] = []string{auth}
		req.Header, req.Fields = r.header, nil
		return
	}
	if a := b.authed.Load(); a != nil && a.auth == auth {
		req.Header, req.Fields = r.extra, a.fields[r.slot]
		return
	}
	a := &authedFields{auth: auth}
	for i, f := range b.fixed {
		h := f.header.Clone()
		h["Authorization"] = []string{auth}
		fs, err := h2client.NewFields(h)
		if err != nil {
			// Not from a token we signed. Sent as this push's own
			// header, which Do refuses with the reason.
			own := r.header.Clone()
			own["Authorization"] = []string{auth}
			req.Header, req.Fields = own, nil
			return
		}
		a.fields[i] = fs
	}
	// Concurrent pushes may each make one after a new token; the last
	// stored wins, and every one of them is right for its token.
	b.authed.Store(a)
	req.Header, req.Fields = r.extra, a.fields[r.slot]
}

func (b *Backend) expiration() string {
	return strconv.FormatInt(b.opts.Now().Add(b.opts.TTL).Unix(), 10)
}

// render builds the headers and JSON payload of n.
func (b *Backend) render(n push.Notification) request {
	h := http.Header{}
	h.Set("content-type", "application/json")
	topic := b.opts.Topic
	aps := map[string]any{}
	// The alert's title and text, and those of them that came from the
	// summary, which are shortened should the payload not fit.
	var alert map[string]string
	var title, text string
	var texts []*string
	// Whether title and text came from the summary's sender and body.
	var fromSender, fromBody bool
	switch n.Priority {
	case push.PrioritySilent:
		h.Set("apns-push-type", "background")
		h.Set("apns-priority", "5")
		aps["content-available"] = 1
	case push.PriorityVoIP:
		h.Set("apns-push-type", "voip")
		h.Set("apns-priority", "10")
		topic += ".voip"
	default:
		h.Set("apns-push-type", "alert")
		h.Set("apns-priority", "10")
		title, text = b.opts.AlertTitle, b.opts.AlertBody
		if b.opts.IncludeSummary && n.Summary != nil {
			if n.Summary.LastMessageSender != "" {
				title, fromSender = n.Summary.LastMessageSender, true
				texts = append(texts, &title)
			}
			if n.Summary.LastMessageBody != "" {
				text, fromBody = push.Truncate(n.Summary.LastMessageBody, 2048), true
				texts = append(texts, &text)
			}
		}
		alert = map[string]string{}
		aps["alert"] = alert
		if b.opts.Sound != "" {
			aps["sound"] = b.opts.Sound
		}
		if b.opts.MutableContent {
			aps["mutable-content"] = 1
		}
	}
	h.Set("apns-topic", topic)
	if b.opts.TTL > 0 {
		h.Set("apns-expiration", b.expiration())
	}
	if b.opts.Collapse {
		h.Set("apns-collapse-id", "xmpp-push")
	}
	body := map[string]any{"aps": aps}
	// A background push is exactly {"aps":{"content-available":1}}: Apple
	// may drop background pushes that carry more.
	if n.Priority != push.PrioritySilent && b.opts.IncludeSummary && n.Summary != nil && n.Summary.MessageCount > 0 {
		body["message-count"] = n.Summary.MessageCount
	}
	tigase := tigaseFields(n)
	if tigase {
		// What Siskin's notification extension reads of a push that
		// is not encrypted (NotificationService.swift in
		// tigase/siskin-im), named as a Tigase push component names
		// them: without "account" it shows the alert as it came, with
		// it and no sender or body a notification of that account.
		// The bare JID is register-device's contract; the count goes
		// with the summary's text, under include_summary.
		body["account"] = n.Account
		if b.opts.IncludeSummary && n.Summary != nil && n.Summary.MessageCount > 0 {
			body["unread-messages"] = n.Summary.MessageCount
		}
		aps["mutable-content"] = 1
	}
	if e := n.Encrypted; e != nil {
		// What Siskin's notification extension reads to decrypt and show
		// the message (NotificationService.swift in tigase/siskin-im:
		// userInfo "account", "encrypted", "iv"); mutable-content makes
		// iOS run the extension.
		body["encrypted"], body["iv"] = e.Payload, e.IV
		if account, _, _ := strings.Cut(n.Account, " "); account != "" {
			body["account"] = account
		}
		if n.Priority != push.PrioritySilent && n.Priority != push.PriorityVoIP {
			aps["mutable-content"] = 1
		}
	}
	encode := func() []byte {
		if alert != nil {
			setOrDelete(alert, "title", title)
			setOrDelete(alert, "body", text)
		}
		if tigase {
			// The same text as the alert's, cut with it to fit.
			if fromSender {
				body["sender"] = title
			}
			if fromBody {
				body["body"] = text
			}
		}
		out, _ := json.Marshal(body)
		return out
	}
	max := maxPayload(n.Priority)
	payload := push.Fit(encode, func(b []byte) bool { return len(b) <= max }, texts...)
	return request{payload: payload, header: h}
}

// tigaseFields says whether n gets the fields of a Tigase push
// component's payload beside the alert: a visible push, not encrypted
// (an encrypted one names its account below), to a register-device
// registration. A background push stays bare.
func tigaseFields(n push.Notification) bool {
	return n.Tigase && n.Account != "" && n.Encrypted == nil && n.Priority == push.PriorityHigh
}

// setOrDelete sets m[k] to v, or deletes it when v is empty.
func setOrDelete(m map[string]string, k, v string) {
	if v == "" {
		delete(m, k)
	} else {
		m[k] = v
	}
}

// maxAnswer bounds what is read of an answer's body: Apple's are a
// small JSON object or empty.
const maxAnswer = 4096

// maxPayload is Apple's limit on a payload: 4 KiB, 5 KiB for VoIP.
func maxPayload(p push.Priority) int {
	if p == push.PriorityVoIP {
		return 5120
	}
	return 4096
}

// post makes one request of r to token, at now (zero: the clock's now).
func (b *Backend) post(ctx context.Context, token string, r request, now time.Time) (answer, error) {
	// The token is hex (ValidateToken), so the path needs no escaping.
	hook := push.AnswerHook(ctx)
	// A success's apns-id is read only for the debug log.
	req := h2client.Request{Method: http.MethodPost, Addr: b.addr, Authority: b.authority, Path: b.path, PathTail: token, Header: r.header, Body: r.payload,
		SkipSuccessFields: hook == nil && !b.logger.Enabled(ctx, slog.LevelDebug), Refused: goAwayRefuses}
	if r.fields != nil {
		req.Header, req.Fields = r.extra, r.fields
	}
	var auth string
	if b.signer != nil {
		var err error
		if auth, err = b.signer.authorization(now); err != nil {
			return answer{}, err
		}
		b.withAuth(&req, r, auth)
	}
	// Straight to our HTTP/2 client: http.Client would copy the headers
	// for redirects, which no push service sends and which must not
	// carry the provider token elsewhere anyway.
	resp, err := b.client.Do(ctx, &req)
	if err != nil {
		if status, reason := goAwayAnswer(err); status != 0 {
			// Apple refused the connection itself, as it does a
			// client certificate of the other environment or a
			// revoked one: its word on our credentials, taken as
			// the answer it names, not as an outage.
			return answer{status: status, reason: reason, auth: auth}, nil
		}
		return answer{}, &push.TemporaryError{Reason: "APNS request", Outage: true, Err: push.RedactURL(err, b.base+"/3/device/…")}
	}
	body := resp.Body[:min(len(resp.Body), maxAnswer)]
	if hook != nil {
		hook(push.Answer{Method: req.Method, URL: "https://" + req.Authority + req.Path + req.PathTail, Status: resp.StatusCode, Header: resp.Header(), Body: body})
	}
	a := answer{status: resp.StatusCode, id: resp.Get("apns-id"), auth: auth}
	// Mostly absent, and Atoi("") allocates its error.
	if v := resp.Get("retry-after"); v != "" {
		if s, err := strconv.Atoi(v); err == nil && s > 0 {
			a.retryAfter = time.Duration(s) * time.Second
		}
	}
	if resp.StatusCode != http.StatusOK {
		var answer struct {
			Reason    string `json:"reason"`
			Timestamp int64  `json:"timestamp"`
		}
		json.Unmarshal(body, &answer)
		a.reason = answer.Reason
		if answer.Timestamp > 0 {
			a.timestamp = time.UnixMilli(answer.Timestamp)
		}
	}
	return a, nil
}

// goAwayReason is the reason APNS names in a GOAWAY's debug data,
// {"reason":"..."}, with the status it answers that reason with on a
// stream, when the reason refuses the app's credentials or topic: APNS
// ends every connection of a client certificate it refuses with such a
// GOAWAY (BadCertificateEnvironment, BadCertificate) and answers no
// request on it. 0 for any other GOAWAY (Shutdown, IdleTimeout, none),
// whose requests go out again on a new connection.
func goAwayReason(debug string) (int, string) {
	if !strings.HasPrefix(debug, "{") {
		return 0, ""
	}
	var d struct {
		Reason string `json:"reason"`
	}
	if json.Unmarshal([]byte(debug), &d) != nil {
		return 0, ""
	}
	switch d.Reason {
	case "BadCertificate", "BadCertificateEnvironment", "Forbidden",
		"InvalidProviderToken", "ExpiredProviderToken", "MissingProviderToken", "BadEnvironmentKeyInToken":
		return http.StatusForbidden, d.Reason
	case "BadTopic", "TopicDisallowed", "MissingTopic":
		return http.StatusBadRequest, d.Reason
	}
	return 0, ""
}

// goAwayRefuses is h2client.Request.Refused for APNS: a GOAWAY that
// refuses the credentials ends the push's request at once.
func goAwayRefuses(debug string) bool {
	status, _ := goAwayReason(debug)
	return status != 0
}

// goAwayAnswer is the answer a request's failure err stands for when a
// GOAWAY refusing the app's credentials ended it (goAwayReason).
func goAwayAnswer(err error) (int, string) {
	debug, ok := h2client.GoAwayDebug(err)
	if !ok {
		return 0, ""
	}
	return goAwayReason(debug)
}

// signer makes and caches the provider token.
type signer struct {
	key           *ecdsa.PrivateKey
	keyID, teamID string
	now           func() time.Time

	mu     sync.Mutex
	token  string // the authorization header's value: "bearer " and the JWT
	issued time.Time
	// renewed is when a refused token was last dropped to be signed
	// anew (invalidate); zero before the first.
	renewed time.Time
}

// authorization returns the value of the authorization header for a
// request made at now (zero: the signer's clock's now).
func (s *signer) authorization(now time.Time) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if now.IsZero() {
		now = s.now()
	}
	if s.token != "" && now.Sub(s.issued) < tokenLifetime {
		return s.token, nil
	}
	t := jwt.NewWithClaims(jwt.SigningMethodES256, jwt.MapClaims{"iss": s.teamID, "iat": now.Unix()})
	t.Header["kid"] = s.keyID
	signed, err := t.SignedString(s.key)
	if err != nil {
		return "", fmt.Errorf("apns: signing provider token: %w", err)
	}
	s.token, s.issued = "bearer "+signed, now
	return s.token, nil
}

// invalidate drops the cached token, if it is still refused (the one
// sent), so that the next request signs a new one, and reports whether
// the next request carries another token than refused. The pushes in
// flight when Apple stops taking a token are all refused with it: each
// signing afresh would replace the one just signed. And a token refused
// is dropped at most once every tokenUpdateInterval: Apple answers
// TooManyProviderTokenUpdates to more than one new token in 20 minutes,
// and a key Apple refuses outright (revoked, another team's) is refused
// in every token it signs, so a new one for each push tried again during
// such a refusal would only add to the count. The first refusal still
// gets its new token at once, and so does one after this host's clock was
// set (clockStepped): a token signed before the clock was set right is
// good once signed again.
func (s *signer) invalidate(refused string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.token != refused {
		// Signed anew already (or to be, by the next request).
		return true
	}
	now := s.now()
	if !s.renewed.IsZero() && now.Sub(s.renewed) < tokenUpdateInterval && !clockStepped(s.renewed, now) {
		return false
	}
	s.token, s.renewed = "", now
	return true
}

// maxClockStep is how far this host's wall clock may move against its
// monotonic clock between two readings before it counts as set anew.
const maxClockStep = time.Minute

// clockStepped reports whether the wall clock was set (by NTP after a
// boot with the wrong time, say) between the readings then and now: the
// wall time between them differs from the monotonic time by more than
// maxClockStep. Tokens signed before are dated by the old clock, which
// is why Apple refused them, and the bound on signing anew would keep
// every push refused for up to 20 minutes after the clock was set right.
// Readings without a monotonic part (a test's clock) never step.
func clockStepped(then, now time.Time) bool {
	return stepped(now.Round(0).Sub(then.Round(0)), now.Sub(then))
}

// stepped reports whether wall, the wall clock's time between two
// readings, and mono, the monotonic clock's, differ by more than
// maxClockStep.
func stepped(wall, mono time.Duration) bool {
	d := wall - mono
	return d > maxClockStep || d < -maxClockStep
}

// Close closes the connections to APNS. A reload that replaced the
// backend calls it once the pushes under way on it have ended; otherwise
// they would stay open until they had idled for minutes.
func (b *Backend) Close() error { return b.client.Close() }

// CarriesSummaryText says whether pushes carry the summary's sender and
// body (include_summary).
func (b *Backend) CarriesSummaryText() bool { return b.opts.IncludeSummary }
