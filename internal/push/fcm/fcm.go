// Package fcm delivers pushes to Android devices through Firebase Cloud
// Messaging's HTTP v1 API, authenticated with a service account's OAuth2
// access tokens.
//
// golang.org/x/oauth2/google turns the service-account key into access
// tokens (signed JWT assertion, caching until shortly before expiry): that
// is the whole of what the Firebase Admin SDK would add for sending, at a
// fraction of its dependencies. The v1 send call is one JSON POST.
package fcm

import (
	"context"
	"encoding/json"
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

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/google"

	"github.com/push-appserver/push-appserver/internal/push"
	"github.com/push-appserver/push-appserver/internal/push/h2client"
)

// DefaultEndpoint is Google's FCM API.
const DefaultEndpoint = "https://fcm.googleapis.com"

const scope = "https://www.googleapis.com/auth/firebase.messaging"

// DefaultPriority is android.priority when the configuration sets none:
// chat apps need the device woken at once.
const DefaultPriority = "high"

// Options configure one app's FCM backend.
type Options struct {
	ServiceAccountFile string // Google service-account key (JSON)
	ProjectID          string // overrides the key's project_id
	Endpoint           string // overrides DefaultEndpoint (tests, proxies)
	TokenURL           string // overrides the key's token_uri
	CAPath             string // directory of PEM CA certificates to trust; system pool when empty

	// Priority is android.priority: "high" (default; wakes the device from
	// doze, as chat apps need) or "normal".
	Priority string
	// TTL is android.ttl; 0 leaves FCM's default (4 weeks).
	TTL         time.Duration
	CollapseKey string
	// NotificationTitle and NotificationBody, when set, add a visible
	// notification; without them messages are data-only and the app
	// decides what to show.
	NotificationTitle, NotificationBody string
	// IncludeSummary lets the data carry the summary's sender and body
	// (privacy: off by default).
	IncludeSummary bool
	PushDeadline   time.Duration // how long one push may take with retries; 0 means push.DefaultPushDeadline
	// Breaker judges answers that may mean a dead token or a
	// misconfigured app; the wiring shares it with health and metrics. A
	// private one when nil.
	Breaker *push.Breaker
}

// Backend sends pushes for one FCM project.
type Backend struct {
	opts    Options
	sendURL string
	// The send request's target, parsed once from sendURL.
	addr, authority, path string
	client                *h2client.Client
	breaker               *push.Breaker
	// android is every message's android object, the same for each push
	// but for the notification, which silent pushes leave out.
	android, silentAndroid *android
	// authed is the request header with the access token it carries.
	authed atomic.Pointer[authedHeader]
	conf   func(ctx context.Context) oauth2.TokenSource
	ctx    context.Context // carries the HTTP client for token requests
	logger *slog.Logger

	// token is the access token in use while it is valid, read without
	// a lock by every push.
	token atomic.Pointer[heldToken]
	mu    sync.Mutex
	fetch *tokenFetch // the fetch under way, if any
	// closed is set by Close: a renewal that fails on the closed
	// connections is no news for the operator.
	closed atomic.Bool
	// renewFailed is when the last fetch failed: a renewal ahead of
	// expiry is not tried again before renewRetry has passed.
	renewFailed time.Time
}

// heldToken is an access token in use and when to fetch its successor.
type heldToken struct {
	t *oauth2.Token
	// renewAt is when a new token is fetched in the background, while
	// this one is still sent: minutes before it expires.
	renewAt time.Time
}

const (
	// renewAhead is how long before its expiry an access token is
	// renewed (at most half its life), in the background: Google's
	// tokens last an hour, and one fetched only once it had expired
	// (or in its last 10 s, as oauth2's caching source does) held
	// every push of that moment for the token endpoint's round trip,
	// and failed them all while the endpoint was slow or away, though
	// the token in use had time left.
	renewAhead = 5 * time.Minute
	// expiryMargin is how long before its expiry a token is no longer
	// sent: a push must reach FCM before it expires (one that does not
	// is refused with 401 and sent again with a new token).
	expiryMargin = 3 * time.Second
	// renewRetry spaces renewals ahead of expiry that failed, so that
	// an unreachable token endpoint is not asked at every push.
	renewRetry = 10 * time.Second
)

// usable reports whether h may still be sent.
func (h *heldToken) usable(now time.Time) bool {
	return h.t.Expiry.IsZero() || now.Before(h.t.Expiry.Add(-expiryMargin))
}

var _ push.Backend = (*Backend)(nil)

// New reads the service account and returns a backend. It does not fetch
// a token yet.
func New(opts Options, logger *slog.Logger) (*Backend, error) {
	data, err := os.ReadFile(opts.ServiceAccountFile)
	if err != nil {
		return nil, fmt.Errorf("fcm: service account: %w", err)
	}
	var sa struct {
		ProjectID string `json:"project_id"`
	}
	if err := json.Unmarshal(data, &sa); err != nil {
		return nil, fmt.Errorf("fcm: service account %s: %w", opts.ServiceAccountFile, err)
	}
	jc, err := google.JWTConfigFromJSON(data, scope)
	if err != nil {
		return nil, fmt.Errorf("fcm: service account %s: %w", opts.ServiceAccountFile, err)
	}
	if opts.TokenURL != "" {
		jc.TokenURL = opts.TokenURL
		jc.Audience = opts.TokenURL
	}
	if opts.ProjectID == "" {
		opts.ProjectID = sa.ProjectID
	}
	if opts.ProjectID == "" {
		return nil, errors.New("fcm: no project id in the service account or the options")
	}
	if opts.Endpoint == "" {
		opts.Endpoint = DefaultEndpoint
	}
	switch opts.Priority {
	case "":
		opts.Priority = DefaultPriority
	case "high", "normal":
	default:
		return nil, fmt.Errorf("fcm: priority %q (want high or normal)", opts.Priority)
	}
	h2, err := h2client.New(h2client.Options{CAPath: opts.CAPath})
	if err != nil {
		return nil, fmt.Errorf("fcm: %w", err)
	}
	if opts.Breaker == nil {
		opts.Breaker = push.NewBreaker(opts.ProjectID, push.BreakerOptions{}, logger)
	}
	b := &Backend{
		opts:    opts,
		sendURL: strings.TrimSuffix(opts.Endpoint, "/") + "/v1/projects/" + url.PathEscape(opts.ProjectID) + "/messages:send",
		client:  h2,
		breaker: opts.Breaker,
		conf:    jc.TokenSource,
		// Token requests go over the same HTTP/2 client, through
		// net/http's: they are rare, and oauth2 wants an http.Client.
		ctx:    context.WithValue(context.Background(), oauth2.HTTPClient, &http.Client{Transport: h2.HTTP().Transport, Timeout: 10 * time.Second}),
		logger: logger,
	}
	u, err := url.Parse(b.sendURL)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("fcm: endpoint %q: want an https:// URL", opts.Endpoint)
	}
	b.addr, b.authority, b.path = h2client.Addr(u), u.Host, u.EscapedPath()
	b.silentAndroid = &android{Priority: strings.ToUpper(opts.Priority), CollapseKey: opts.CollapseKey}
	if opts.TTL > 0 {
		b.silentAndroid.TTL = strconv.FormatInt(int64(opts.TTL/time.Second), 10) + "s"
	}
	b.android = b.silentAndroid
	if opts.NotificationTitle != "" || opts.NotificationBody != "" {
		a := *b.silentAndroid
		a.Notification = &notification{Title: opts.NotificationTitle, Body: opts.NotificationBody}
		b.android = &a
	}
	return b, nil
}

// authedHeader is the send request's header fields for one access token.
type authedHeader struct {
	token  string
	fields *h2client.Fields
}

// fields returns the request's header fields carrying tok, made once per
// token, so that the connection sends their encoding of the push before.
func (b *Backend) fields(tok string) (*h2client.Fields, error) {
	if a := b.authed.Load(); a != nil && a.token == tok {
		return a.fields, nil
	}
	fs, err := h2client.NewFields(http.Header{"Content-Type": {"application/json"}, "Authorization": {"Bearer " + tok}})
	if err != nil {
		return nil, fmt.Errorf("the access token cannot be sent: %w", err)
	}
	// Concurrent pushes may each make one after a new token; the last
	// stored wins, and every one of them is right for its token.
	b.authed.Store(&authedHeader{token: tok, fields: fs})
	return fs, nil
}

// ValidateToken accepts what FCM issues: printable ASCII without spaces.
func (b *Backend) ValidateToken(tok string) error {
	if len(tok) > 4096 {
		return errors.New("FCM token longer than 4096 bytes")
	}
	for i := 0; i < len(tok); i++ {
		if tok[i] <= ' ' || tok[i] > '~' {
			return errors.New("FCM token must be printable ASCII without spaces")
		}
	}
	return nil
}

// accessToken returns the access token to send, fetching one when the
// last has expired. refused, when not empty, is one FCM just answered 401
// to: a new one is fetched even if it has not expired, unless another
// push already did (the pushes in flight are all refused together).
// A token near its expiry is renewed in the background while it is
// still sent (renewAhead).
//
// One fetch at a time, which every push needing a token waits for, each
// no longer than its deadline (ctx): the token source takes no context,
// and a slow token endpoint held a push, and those behind it, for its
// HTTP client's 10 s; a fetch of each push's own would pile up while
// the endpoint is away.
func (b *Backend) accessToken(ctx context.Context, refused string) (string, error) {
	if h := b.token.Load(); h != nil && h.t.AccessToken != refused {
		now := time.Now()
		if h.usable(now) {
			if !h.renewAt.IsZero() && now.After(h.renewAt) {
				b.renew(now)
			}
			return h.t.AccessToken, nil
		}
	}
	b.mu.Lock()
	h := b.token.Load()
	if h != nil && h.t.AccessToken != refused && h.usable(time.Now()) {
		// A fetch ended between the look above and the lock: its token
		// serves, and another fetch would only ask the endpoint again.
		b.mu.Unlock()
		return h.t.AccessToken, nil
	}
	if refused != "" && h != nil && h.t.AccessToken == refused {
		// Each fetch asks the token endpoint anew (fetchToken), so the
		// one under way, if any, brings another token than the refused
		// one: the push waits for it.
		b.token.Store(nil)
	}
	f := b.startFetch(false)
	b.mu.Unlock()

	select {
	case <-f.done:
	case <-ctx.Done():
		return "", &push.TemporaryError{Reason: "FCM access token", Outage: true, Err: ctx.Err()}
	}
	if f.err != nil {
		// Google refusing the service account (invalid_grant, a deleted
		// key) will not heal by retrying; anything else (network, 5xx,
		// a busy endpoint's 429 or 408) may.
		if refusedGrant(f.err) {
			return "", fmt.Errorf("fcm: access token: %w", f.err)
		}
		return "", &push.TemporaryError{Reason: "FCM access token", Outage: true, Err: f.err}
	}
	return f.t.AccessToken, nil
}

// refusedGrant reports whether err, a token fetch's, is Google refusing
// the service account rather than a failure that may pass.
func refusedGrant(err error) bool {
	var re *oauth2.RetrieveError
	return errors.As(err, &re) && re.Response != nil && re.Response.StatusCode >= 400 && re.Response.StatusCode < 500 &&
		re.Response.StatusCode != http.StatusTooManyRequests && re.Response.StatusCode != http.StatusRequestTimeout
}

// renew starts a fetch of the next access token in the background,
// unless one is under way or the last failed less than renewRetry ago.
func (b *Backend) renew(now time.Time) {
	b.mu.Lock()
	if b.fetch == nil && now.Sub(b.renewFailed) >= renewRetry {
		b.startFetch(true)
	}
	b.mu.Unlock()
}

// startFetch returns the fetch under way, starting one if there is none.
// b.mu is held.
func (b *Backend) startFetch(ahead bool) *tokenFetch {
	if b.fetch == nil {
		b.fetch = &tokenFetch{done: make(chan struct{}), ahead: ahead}
		go b.fetchToken(b.fetch)
	}
	return b.fetch
}

// Warm fetches an access token and connects to FCM ahead of the first
// push: a service account Google refuses shows at start (a
// *push.CredentialsRefusedError), and the first push needs neither round
// trip.
func (b *Backend) Warm(ctx context.Context) error {
	if _, err := b.accessToken(ctx, ""); err != nil {
		return refusedKey(err)
	}
	return b.client.Warm(ctx, b.addr)
}

// refusedKey is err, accessToken's, as a *push.CredentialsRefusedError
// when it is Google refusing the service account's key rather than a
// failure that may pass.
func refusedKey(err error) error {
	var temporary *push.TemporaryError
	if errors.As(err, &temporary) {
		return err
	}
	return &push.CredentialsRefusedError{Reason: err.Error(), Check: "service_account_file: a key of the service account Google still takes (not deleted or disabled)"}
}

// CheckToken is the registration token CheckCredentials sends to, one
// FCM never issues: its tokens hold no '.'.
const CheckToken = "push-appserver.credentials-check"

// CheckCredentials asks FCM whether the service account may send to the
// project, with a validate_only send, which FCM checks as a send and
// delivers to nobody, to a token no device has: FCM refuses the account
// and the project (401, 403, 404 NOT_FOUND) before it judges the token,
// so an answer about the token means both were taken. It returns nil
// then, a *push.CredentialsRefusedError when FCM or Google's token
// endpoint refused them, and another error when the answer tells neither
// (5xx, 429, the network). Its answer goes to no breaker, registration
// or count of pushes.
func (b *Backend) CheckCredentials(ctx context.Context) error {
	status, ferr, _, _, _, err := b.post(ctx, []byte(`{"validate_only":true,"message":{"token":"`+CheckToken+`"}}`), "")
	switch {
	case err != nil:
		return refusedKey(err)
	case status == http.StatusOK, ferr.code() == "UNREGISTERED",
		status == http.StatusBadRequest && isTokenProblem(ferr):
		return nil
	case status == http.StatusUnauthorized, status == http.StatusForbidden,
		status == http.StatusNotFound && ferr.Error.Status != "":
		return b.refused(status, ferr)
	case wrongEndpoint(status, ferr):
		return b.endpointRefused(status)
	}
	return fmt.Errorf("fcm: %d %s to a validate_only send tells nothing of the credentials", status, ferr.code())
}

// wrongEndpoint reports whether status, with ferr, answers where the
// request went rather than what it carried: a 404 without FCM's error
// (FCM's own NOT_FOUND names the project or the token), from a wrong
// path or host, or a proxy; or a 405, which FCM gives no POST to its
// send path.
func wrongEndpoint(status int, ferr *fcmError) bool {
	return status == http.StatusNotFound && ferr.Error.Status == "" || status == http.StatusMethodNotAllowed
}

// endpointRefused is status, an answer of wrongEndpoint, as a refusal
// of the app's configuration saying to check endpoint.
func (b *Backend) endpointRefused(status int) error {
	return &push.CredentialsRefusedError{
		Reason: fmt.Sprintf("FCM %d %s without an FCM error", status, http.StatusText(status)),
		Check: "endpoint: pushes go to " + b.sendURL + ", which is no FCM send path; " +
			"leave endpoint out for Google's " + DefaultEndpoint + ", or set it to the base URL of a front end that passes requests on to FCM as they are",
	}
}

// refused is FCM's answer status with ferr, a refusal of the app's
// credentials or project, as a *push.CredentialsRefusedError saying what
// to check.
func (b *Backend) refused(status int, ferr *fcmError) error {
	check := "project_id (" + b.opts.ProjectID + ") is the Firebase project of the service account in service_account_file, " +
		"and the account has a role that may send (Firebase Cloud Messaging API Admin)"
	partial := false
	switch {
	case ferr.code() == "THIRD_PARTY_AUTH_ERROR":
		check = "the APNs key or certificate, or the web push key, that the Firebase project " + b.opts.ProjectID + " holds for the app (Cloud Messaging settings)"
		// Those keys are the iOS and web devices' alone: the app's
		// Android devices are still pushed to.
		partial = true
	case status == http.StatusUnauthorized:
		check = "service_account_file: a key of the service account Google still takes (not deleted or disabled)"
	}
	return &push.CredentialsRefusedError{Reason: strings.TrimSpace(fmt.Sprintf("FCM %d %s: %s", status, ferr.code(), ferr.Error.Message)), Check: check, Partial: partial}
}

// tokenFetch is one fetch of an access token; t and err are set before
// done is closed.
type tokenFetch struct {
	done  chan struct{}
	ahead bool // a renewal ahead of expiry, which no push waits for
	t     *oauth2.Token
	err   error
}

// fetchToken runs f and keeps its token for the pushes that follow. It
// asks the token endpoint anew each time, from a source of its own: a
// source kept would hand out its cached token until oauth2 judges it
// expired, the refused one or the one renewed ahead of expiry.
func (b *Backend) fetchToken(f *tokenFetch) {
	start := time.Now()
	f.t, f.err = b.conf(b.ctx).Token()
	b.mu.Lock()
	if b.fetch == f {
		b.fetch = nil
	}
	if f.err == nil {
		h := &heldToken{t: f.t}
		if !f.t.Expiry.IsZero() {
			h.renewAt = f.t.Expiry.Add(-min(renewAhead, f.t.Expiry.Sub(start)/2))
		}
		b.token.Store(h)
		b.renewFailed = time.Time{}
	} else {
		b.renewFailed = time.Now()
	}
	b.mu.Unlock()
	close(f.done)
	if f.err != nil && f.ahead && !b.closed.Load() {
		// No push saw this failure: the operator must, before the
		// token in use expires and every push fails.
		h := b.token.Load()
		until := "now"
		if h != nil {
			until = h.t.Expiry.UTC().Format(time.RFC3339)
		}
		b.logger.Warn("FCM access token renewal failed; retrying while the current token lasts",
			"project", b.opts.ProjectID, "expires", until, "refused", refusedGrant(f.err), "error", f.err)
	}
}

type fcmError struct {
	Error struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
		Status  string `json:"status"`
		Details []struct {
			Type            string `json:"@type"`
			ErrorCode       string `json:"errorCode"`
			FieldViolations []struct {
				Field string `json:"field"`
			} `json:"fieldViolations"`
		} `json:"details"`
	} `json:"error"`
}

func (e *fcmError) code() string {
	for _, d := range e.Error.Details {
		if d.ErrorCode != "" {
			return d.ErrorCode
		}
	}
	return e.Error.Status
}

// Send delivers n, retrying transient failures until the push deadline.
func (b *Backend) Send(ctx context.Context, n push.Notification) error {
	body := b.build(n)
	if size := dataSize(body); size > maxData {
		if n.Encrypted == nil {
			return fmt.Errorf("fcm: %d bytes of data, FCM takes %d", size, maxData)
		}
		return fmt.Errorf("fcm: %d bytes of data, FCM takes %d: %w", size, maxData, push.ErrPayloadTooLarge)
	}
	refreshed := false
	err := push.Retry(ctx, push.RetryPolicy{Budget: b.opts.PushDeadline, Start: n.Sent}, func(ctx context.Context) error {
		refused := ""
		for {
			status, ferr, name, retryAfter, tok, err := b.post(ctx, body, refused)
			switch {
			case err != nil:
				// Google refusing the service account's key is ours
				// to mend, as FCM refusing its access token is.
				return refusedKey(err)
			case status == http.StatusOK:
				if b.logger.Enabled(ctx, slog.LevelDebug) {
					// The arguments are boxed even for a disabled level.
					b.logger.Debug("push sent", "node", n.Node, "priority", n.Priority, "message", name)
				}
				return nil
			case ferr.code() == "UNREGISTERED":
				return &push.DeadTokenError{Since: time.Now(), Reason: "UNREGISTERED"}
			case status == http.StatusNotFound && ferr.Error.Status != "":
				// FCM's NOT_FOUND without UNREGISTERED (judged above) is
				// about the project in the URL: a project_id that names
				// no Firebase project, as CheckCredentials takes it.
				// Dropped as a refusal of this push, every push of the
				// app would be lost until the configuration is mended.
				b.logger.Debug("FCM rejected push", "node", n.Node, "status", status, "code", ferr.code(), "message", ferr.Error.Message)
				return b.refused(status, ferr)
			case wrongEndpoint(status, ferr):
				// Where the push went, not the push: every push of the
				// app is answered so until endpoint is mended. Failed
				// for good, each would be lost; kept for later by
				// UntilReconfigured below, as a refused account is.
				b.logger.Debug("FCM rejected push", "node", n.Node, "status", status, "message", ferr.Error.Message)
				return b.endpointRefused(status)
			case ferr.code() == "SENDER_ID_MISMATCH":
				return &push.SuspectTokenError{Reason: "SENDER_ID_MISMATCH",
					Cause: "service account of another Firebase project than the app's? (project " + b.opts.ProjectID + ")"}
			case status == http.StatusBadRequest && isTokenProblem(ferr):
				return &push.SuspectTokenError{Reason: "INVALID_ARGUMENT: " + ferr.Error.Message,
					Cause: "tokens of another Firebase project than " + b.opts.ProjectID + "?"}
			case status == http.StatusUnauthorized && ferr.code() != "THIRD_PARTY_AUTH_ERROR" && !refreshed:
				// Our access token was revoked or expired early: fetch
				// a new one and try again at once, once per push.
				refreshed, refused = true, tok
				continue
			case status == http.StatusUnauthorized || status == http.StatusForbidden:
				// Our service account, its role or the project's keys
				// for other services (THIRD_PARTY_AUTH_ERROR), not the
				// device's token (SENDER_ID_MISMATCH is judged above; a
				// revoked access token was fetched anew): refused alike
				// until the configuration is mended. Not retried now;
				// kept for later by UntilReconfigured below.
				b.logger.Debug("FCM rejected push", "node", n.Node, "status", status, "code", ferr.code(), "message", ferr.Error.Message)
				return b.refused(status, ferr)
			case status == http.StatusTooManyRequests || status >= 500:
				if retryAfter == 0 && status == http.StatusTooManyRequests {
					// FCM's ErrorCode reference: back off "with a
					// minimum initial delay of 1 minute".
					retryAfter = time.Minute
				}
				return &push.TemporaryError{Reason: fmt.Sprintf("FCM %d %s", status, ferr.code()), RetryAfter: retryAfter,
					Outage: status >= 500}
			case status == http.StatusRequestTimeout || status == http.StatusMisdirectedRequest:
				// Not FCM's word on the message: a front end that gave
				// up waiting for the request (408, RFC 9110 15.5.9; the
				// token endpoint's is retried too), or a connection
				// that cannot serve the host (421, 15.5.20). Both may
				// be sent again; failed for good, the push would be
				// neither retried nor redelivered.
				return &push.TemporaryError{Reason: strings.TrimSpace(fmt.Sprintf("FCM %d %s", status, ferr.code())), RetryAfter: retryAfter, Outage: true}
			default:
				b.logger.Debug("FCM rejected push", "node", n.Node, "status", status, "code", ferr.code(), "message", ferr.Error.Message)
				return fmt.Errorf("fcm: %d %s: %s", status, ferr.code(), ferr.Error.Message)
			}
		}
	})
	return b.breaker.JudgeCtx(ctx, "", push.UntilReconfigured(err))
}

// Misconfigured reports whether the app's answers say the app, not its
// tokens, is wrong, and the likely cause.
func (b *Backend) Misconfigured() (bool, string) { return b.breaker.Misconfigured() }

// isTokenProblem tells an INVALID_ARGUMENT about the registration token
// (the token is dead) from one about the message (our bug).
func isTokenProblem(e *fcmError) bool {
	m := strings.ToLower(e.Error.Message)
	if strings.Contains(m, "registration token") || strings.Contains(m, "message.token") {
		return true
	}
	// FCM often says only "Request contains an invalid argument." and
	// names the field in a google.rpc.BadRequest detail.
	for _, d := range e.Error.Details {
		for _, v := range d.FieldViolations {
			if v.Field == "message.token" {
				return true
			}
		}
	}
	return false
}

// maxData is FCM's limit on a message's data, as dataSize counts it.
const maxData = 4096

// FCM counts more of the data against maxData than its keys and values,
// which its documentation names: a message whose data has one pair is
// taken with up to 4,051 bytes of key and value, one of two pairs up to
// 4,045, one of three up to 4,039 (measured against the HTTP v1 API),
// and one above is refused with a bare INVALID_ARGUMENT, which loses the
// push. dataPair and dataFixed are what dataSize adds for each pair and
// once: a little more per pair than those measurements show, for the
// longer lengths of long values.
const (
	dataPair  = 8
	dataFixed = 39
)

// maxAnswer bounds the part of an answer that is decoded and shown.
const maxAnswer = 16 << 10

// dataSize is what FCM counts against maxData in a built message. The
// data is part of the body, and counts no more than the body's length
// and what the pairs add beside their JSON: a body well below maxData is
// counted by its length, without decoding it again.
func dataSize(body []byte) int {
	if len(body) <= maxData-64 {
		return len(body)
	}
	var m struct {
		Message struct {
			Data map[string]string `json:"data"`
		} `json:"message"`
	}
	json.Unmarshal(body, &m)
	if len(m.Message.Data) == 0 {
		return 0
	}
	n := dataFixed
	for k, v := range m.Message.Data {
		n += len(k) + len(v) + dataPair
	}
	return n
}

// message is the body of a send request. Structs rather than maps: the
// encoder then neither sorts keys nor boxes values, and building a silent
// push's body takes 2 allocations instead of 28.
type message struct {
	Message struct {
		Token   string   `json:"token"`
		Data    data     `json:"data"`
		Android *android `json:"android"`
	} `json:"message"`
}

// data is the message's data: strings only, as FCM requires. The pointers
// are keys sent even when empty.
type data struct {
	Node              string  `json:"node"`
	MessageCount      string  `json:"message-count,omitempty"`
	LastMessageSender string  `json:"last-message-sender,omitempty"`
	LastMessageBody   *string `json:"last-message-body,omitempty"`
	// Forwarded as they came, for the app to decrypt; the same keys
	// Siskin reads on iOS.
	Encrypted *string `json:"encrypted,omitempty"`
	IV        *string `json:"iv,omitempty"`
	// The account (and channel) the push is for, as the client knows
	// it: Siskin's bare JID, or p2's fingerprints, without which
	// Conversations drops the push.
	Account string `json:"account,omitempty"`
	Channel string `json:"channel,omitempty"`
}

type android struct {
	Priority     string        `json:"priority"`
	TTL          string        `json:"ttl,omitempty"`
	CollapseKey  string        `json:"collapse_key,omitempty"`
	Notification *notification `json:"notification,omitempty"`
}

type notification struct {
	Title string `json:"title"`
	Body  string `json:"body"`
}

func (b *Backend) build(n push.Notification) []byte {
	var m message
	var texts []*string // the summary's, shortened should the data not fit
	m.Message.Token = n.Token
	d := &m.Message.Data
	d.Node = n.Node
	if b.opts.IncludeSummary && n.Summary != nil {
		if n.Summary.MessageCount > 0 {
			d.MessageCount = strconv.Itoa(n.Summary.MessageCount)
		}
		d.LastMessageSender = n.Summary.LastMessageSender
		texts = append(texts, &d.LastMessageSender)
		if n.Summary.HasLastMessageBody {
			body := push.Truncate(n.Summary.LastMessageBody, 2048)
			d.LastMessageBody = &body
			texts = append(texts, d.LastMessageBody)
		}
	}
	d.Account, d.Channel, _ = strings.Cut(n.Account, " ")
	if e := n.Encrypted; e != nil {
		d.Encrypted, d.IV = &e.Payload, &e.IV
	}
	// Silent pushes are data messages only: the app wakes and decides.
	m.Message.Android = b.android
	if n.Priority == push.PrioritySilent {
		m.Message.Android = b.silentAndroid
	}
	return push.Fit(func() []byte {
		out, _ := json.Marshal(&m)
		return out
	}, func(b []byte) bool { return dataSize(b) <= maxData }, texts...)
}

// post sends body once with an access token; refused is a token FCM
// refused for this push, tok the one sent.
func (b *Backend) post(ctx context.Context, body []byte, refused string) (status int, ferr *fcmError, name string, retryAfter time.Duration, tok string, err error) {
	ferr = &fcmError{}
	tok, err = b.accessToken(ctx, refused)
	if err != nil {
		return 0, ferr, "", 0, "", err
	}
	// Straight to our HTTP/2 client, as APNS requests go: http.Client
	// and the http.Request and http.Response around a request were a
	// sixth of a push's CPU.
	fields, err := b.fields(tok)
	if err != nil {
		return 0, ferr, "", 0, tok, &push.TemporaryError{Reason: "FCM access token", Outage: true, Err: err}
	}
	hook := push.AnswerHook(ctx)
	// A success is read from its body alone.
	req := h2client.Request{Method: http.MethodPost, Addr: b.addr, Authority: b.authority, Path: b.path, Fields: fields, Body: body,
		SkipSuccessFields: hook == nil}
	resp, err := b.client.Do(ctx, &req)
	if err != nil {
		return 0, ferr, "", 0, tok, &push.TemporaryError{Reason: "FCM request", Outage: true, Err: err}
	}
	answer := resp.Body[:min(len(resp.Body), maxAnswer)]
	if hook != nil {
		hook(push.Answer{Method: req.Method, URL: b.sendURL, Status: resp.StatusCode, Header: resp.Header(), Body: answer})
	}
	// Mostly absent, and Atoi("") allocates its error.
	if v := resp.Get("retry-after"); v != "" {
		retryAfter = parseRetryAfter(v, time.Now())
	}
	if resp.StatusCode != http.StatusOK {
		json.Unmarshal(answer, ferr)
	} else if b.logger.Enabled(ctx, slog.LevelDebug) {
		// The message's name is FCM's id for it, for the debug log.
		var ok struct {
			Name string `json:"name"`
		}
		json.Unmarshal(answer, &ok)
		name = ok.Name
	}
	return resp.StatusCode, ferr, name, retryAfter, tok, nil
}

// parseRetryAfter reads Retry-After as seconds or as an HTTP date, both
// of which RFC 9110 (10.2.3) allows: a date read as nothing had a 503
// sent again at once, several times within the push's deadline, and
// redelivery not told to wait.
func parseRetryAfter(v string, now time.Time) time.Duration {
	if s, err := strconv.Atoi(v); err == nil {
		return time.Duration(max(s, 0)) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}

// Close closes the connections to FCM and its token endpoint. A reload
// that replaced the backend calls it once the pushes under way on it
// have ended; otherwise they would stay open until they had idled for
// minutes.
func (b *Backend) Close() error {
	b.closed.Store(true)
	return b.client.Close()
}

// CarriesSummaryText says whether pushes carry the summary's sender and
// body (include_summary).
func (b *Backend) CarriesSummaryText() bool { return b.opts.IncludeSummary }
