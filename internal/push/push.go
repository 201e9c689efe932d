// Package push is the contract between the app server core and the push
// services (APNS, FCM, log, ...). The core resolves who to wake and how
// urgently; a Backend only knows how to deliver one Notification and how to
// report what the push service said about it.
package push

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"sync/atomic"
	"time"
	"unicode/utf8"
)

// Priority is how urgently a device is woken. The core resolves "auto" before
// a Notification reaches a backend, so backends see only High, Silent or VoIP.
type Priority string

const (
	// PriorityHigh is a user-visible (alert) push.
	PriorityHigh Priority = "high"
	// PrioritySilent is a background push that wakes the app without UI.
	PrioritySilent Priority = "silent"
	// PriorityVoIP is an APNS VoIP push (PushKit).
	PriorityVoIP Priority = "voip"
	// PriorityAuto is High when the user's XMPP server marked the push as
	// important (a message body in the summary, or an explicit priority
	// marker) and Silent otherwise, as mod_push_appserver does.
	PriorityAuto Priority = "auto"
)

// ParsePriority accepts the configuration spellings of a priority.
func ParsePriority(s string) (Priority, error) {
	switch p := Priority(s); p {
	case PriorityHigh, PrioritySilent, PriorityVoIP, PriorityAuto:
		return p, nil
	}
	return "", fmt.Errorf("unknown priority %q (want high, silent, voip or auto)", s)
}

// Resolve turns PriorityAuto into High when the push is important and into
// Silent otherwise; other priorities stay as configured.
func (p Priority) Resolve(important bool) Priority {
	if p != PriorityAuto {
		return p
	}
	if important {
		return PriorityHigh
	}
	return PrioritySilent
}

// Summary is the XEP-0357 push summary (urn:xmpp:push:summary) the user's
// server sent along. Every field may be missing.
type Summary struct {
	MessageCount             int
	PendingSubscriptionCount int
	LastMessageSender        string
	LastMessageBody          string
	// HasLastMessageBody is true when the field was present at all, even
	// empty: servers send a dummy body to mark "important" stanzas.
	HasLastMessageBody bool
}

// Notification is one push to one device.
type Notification struct {
	// App is the name of the configured app (the registration's type).
	App   string
	Node  string
	Token string
	// Priority is already resolved: never PriorityAuto.
	Priority Priority
	// Summary is nil for pushes that came without one (HTTP API).
	Summary *Summary
	// Encrypted is set when the user's server sent the notification
	// encrypted for the device (tigase:push:encrypt:0): the backend
	// forwards ciphertext and IV as they came, for the app to decrypt.
	Encrypted *Encrypted
	// Account is the bare JID the device registered from, for apps that
	// need it in the payload to pick their key (Siskin); often "".
	Account string
	// Tigase says the registration came from Tigase's register-device
	// (Siskin, Stork): its app reads the payload a Tigase push component
	// sends, which names Account in every visible push, not only in
	// encrypted ones.
	Tigase bool
	// Sent is when the core handed the push to its backend, read from
	// the system's clock (monotonic reading included) once for the push,
	// which set the push's deadline from it: the backend times its first
	// attempt by it instead of reading the clock again. Zero when the
	// caller read none (a redelivery, send-test); the backend reads it.
	Sent time.Time
}

// Encrypted is a notification the user's server encrypted with a key the
// client gave it (AES-128-GCM in Tigase's and Prosody's implementations),
// both fields base64 as they arrived.
type Encrypted struct {
	Payload string
	IV      string
}

// ErrPayloadTooLarge is returned by backends for an encrypted
// notification whose payload exceeds what the push service takes (APNS
// and FCM: 4 KiB). The user's server encrypted too much, so retrying
// cannot help; text of our own choosing (a summary) is shortened to fit
// instead.
var ErrPayloadTooLarge = errors.New("push payload larger than the push service takes")

// Backend delivers notifications to one push service for one app. Send
// returns nil once the push service accepted the notification. A backend
// does its own retrying of transient failures within ctx's deadline and then
// reports what is left as a *TemporaryError; a token the service reports as
// gone is a *DeadTokenError. Send must be safe for concurrent use.
type Backend interface {
	Send(ctx context.Context, n Notification) error
}

// TokenValidator is implemented by backends that can tell a malformed device
// token at registration time (APNS tokens are hex, for example).
type TokenValidator interface {
	ValidateToken(token string) error
}

// TokenCanonicalizer is implemented by backends whose service takes one
// device under several spellings (APNS: hex in either case). The core
// throttles and blocks token pushes by the canonical spelling.
type TokenCanonicalizer interface {
	CanonicalToken(token string) string
}

// DeviceKeyer is implemented by backends whose tokens name a device along
// with more than the device (a WebPush subscription's keys): DeviceKey is
// what the per-device limit counts by, the same for every spelling and
// every key of one device. Not a token: it is never sent.
type DeviceKeyer interface {
	DeviceKey(token string) string
}

// EndpointTokens is implemented by backends whose token names where the
// push is sent, not only which device gets it: a WebPush subscription
// carries the URL we POST to. Such a token is only ever taken from a
// registration, never from a publish that names it (tokenless and
// publish-options pushes): any XMPP user may send one, and would have us
// send requests to any address, a new one each time.
type EndpointTokens interface {
	TokensNameEndpoints() bool
}

// TokensNameEndpoints says whether b's tokens name the address its
// pushes are sent to (EndpointTokens).
func TokensNameEndpoints(b Backend) bool {
	e, ok := b.(EndpointTokens)
	return ok && e.TokensNameEndpoints()
}

// SummaryTextCarrier is implemented by backends that say whether their
// pushes carry the summary's sender and body (include_summary). What
// waits for redelivery keeps that text only for a backend that carries
// it (or does not say): the user's messages are not written to the
// registry for pushes that will never show them.
type SummaryTextCarrier interface {
	CarriesSummaryText() bool
}

// CarriesSummaryText says whether b's pushes may carry the summary's
// sender and body: true unless b says otherwise.
func CarriesSummaryText(b Backend) bool {
	if c, ok := b.(SummaryTextCarrier); ok {
		return c.CarriesSummaryText()
	}
	return true
}

// WithoutSummaryText is s without its sender and body, keeping what
// decides a push's priority and what every push may carry (the message
// count). A summary without text is returned as it is.
func WithoutSummaryText(s *Summary) *Summary {
	if s == nil || s.LastMessageSender == "" && s.LastMessageBody == "" {
		return s
	}
	c := *s
	c.LastMessageSender, c.LastMessageBody = "", ""
	return &c
}

// DeadTokenError reports that the push service no longer knows the token.
// Since is when it became invalid (Apple's timestamp) or the time of the
// answer when the service gives none; the core removes the registration
// unless it was renewed after Since.
type DeadTokenError struct {
	Since  time.Time
	Reason string
	// Suspect says the answer is one a misconfigured app gets for every
	// token too (BadDeviceToken, SENDER_ID_MISMATCH, ...), taken for a
	// dead token by the app's Breaker: the core keeps a registration
	// whose token took a push since it was registered, since such a
	// token is not refused so unless the app's configuration changed.
	Suspect bool
}

func (e *DeadTokenError) Error() string {
	return fmt.Sprintf("push token is no longer valid (%s, since %s)", e.Reason, e.Since.UTC().Format(time.RFC3339))
}

// CredentialsRefusedError is a push service's answer to a credentials
// check (apns.Backend.CheckCredentials, fcm.Backend.CheckCredentials)
// that it does not take the app's credentials, or its APNS topic: every
// push of the app would fail the same way. Reason is the service's
// answer, Check what of the configuration to look at.
type CredentialsRefusedError struct {
	Reason string
	Check  string
	// Partial says the refusal is of what the push service holds for
	// some of the app's devices only: FCM's THIRD_PARTY_AUTH_ERROR, the
	// APNs or web push key of the Firebase project, refuses the pushes
	// to its iOS or web devices while its Android devices' go through.
	// It says nothing of the app's other pushes.
	Partial bool
}

func (e *CredentialsRefusedError) Error() string {
	return "push service refused our credentials: " + e.Reason + "; check " + e.Check
}

// UntilReconfigured turns a push's *CredentialsRefusedError, a push
// service refusing the app's credentials or configuration for a push
// (a revoked or mistyped key, a topic of another team), into a
// *TemporaryError, so that the push is kept and sent again as one to an
// app left out of the configuration is: the configuration is ours to
// mend, and one mended within the redelivery window must lose no push.
// A backend calls it on what its retries ended with, which do not retry
// the refusal themselves: another attempt within the push's seconds
// would be refused alike. Other errors are returned as they are.
func UntilReconfigured(err error) error {
	if err == nil {
		// Every push that went through comes here: no errors.As, whose
		// target would be allocated for it.
		return nil
	}
	var cr *CredentialsRefusedError
	if !errors.As(err, &cr) {
		return err
	}
	return &TemporaryError{Reason: "kept until the app's configuration is mended", Err: err}
}

// PanicError is a panic recovered where it happened, a push service
// client's own goroutine (its connection's read loop) for one: a bug,
// turned into the failure of what it hit. The core counts and logs it as
// a panic; Stack is where it happened.
type PanicError struct {
	Value any
	Stack []byte

	reported atomic.Bool
}

func (e *PanicError) Error() string { return fmt.Sprintf("panic: %v", e.Value) }

// Report reports true to its first caller only: a panic that failed
// several requests (every one on a connection) is one panic.
func (e *PanicError) Report() bool { return e.reported.CompareAndSwap(false, true) }

// TemporaryError reports a failure that may succeed later: rate limits,
// server errors, broken connections. RetryAfter is the service's hint, or 0.
//
// Outage says the push service as a whole failed (its 5xx, no connection,
// a request that timed out) rather than for this push's device (a 429 for
// the token, too many provider token updates) or for our configuration:
// another push's success through the same service then says the push may
// go through now (the core's redelivery sends it without waiting its
// backoff out). WebPush sets none: its pushes go to many services, and
// one service's answer says nothing of another's.
type TemporaryError struct {
	RetryAfter time.Duration
	Reason     string
	Err        error
	Outage     bool
}

func (e *TemporaryError) Error() string {
	msg := "temporary push failure: " + e.Reason
	if e.Err != nil {
		msg += ": " + e.Err.Error()
	}
	if e.RetryAfter > 0 {
		msg += fmt.Sprintf(" (retry after %s)", e.RetryAfter)
	}
	return msg
}

func (e *TemporaryError) Unwrap() error { return e.Err }

// IsDeadToken reports whether err says the token is dead, and since when.
func IsDeadToken(err error) (*DeadTokenError, bool) {
	var d *DeadTokenError
	ok := errors.As(err, &d)
	return d, ok
}

// IsTemporary reports whether err is a transient push failure.
func IsTemporary(err error) bool {
	var t *TemporaryError
	return errors.As(err, &t)
}

// RedactURL keeps a URL that carries a device token or subscription out
// of error text: net/http quotes the request's whole URL in its
// *url.Error, and errors end up in logs and in the registry's last error.
// It replaces that URL with shown and returns err.
func RedactURL(err error, shown string) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		ue.URL = shown
	}
	return err
}

// Fit returns what encode gives once fits accepts it, shortening texts
// for it: every text is cut to at most the same number of bytes (at a
// character boundary), the largest number that fits, so a long body
// gives way before a short sender does and no more is cut than must be.
// When nothing fits even with every text empty, that last result is
// returned as it is. A summary's sender and body are what a message's
// author wrote, and their encoding may grow (JSON writes each < as
// \u003c, six bytes), so a cut before encoding cannot promise the size
// after it: the cut is searched for, about a dozen encodings for texts
// of a few KiB, paid only by pushes that do not fit at once.
func Fit(encode func() []byte, fits func([]byte) bool, texts ...*string) []byte {
	out := encode()
	if fits(out) {
		return out
	}
	orig := make([]string, len(texts))
	longest := 0
	for i, t := range texts {
		orig[i] = *t
		longest = max(longest, len(*t))
	}
	capAt := func(n int) []byte {
		for i, t := range texts {
			*t = Truncate(orig[i], n)
		}
		return encode()
	}
	// Whatever the texts hold, all of them fail to fit (hi) and none of
	// them may (lo): search between.
	lo, hi := 0, longest
	if out = capAt(0); !fits(out) {
		return out
	}
	for hi-lo > 1 {
		mid := lo + (hi-lo)/2
		if fits(capAt(mid)) {
			lo = mid
		} else {
			hi = mid
		}
	}
	return capAt(lo)
}

// Truncate shortens s to at most n bytes without splitting a UTF-8
// sequence, for text a push service limits in size.
func Truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	if n <= 0 {
		return ""
	}
	// Cut before the rune that straddles byte n: s[n] is either the start
	// of the next rune (cut there) or inside one (back up to its start,
	// at most UTFMax-1 bytes away in valid UTF-8).
	for i := 0; i < utf8.UTFMax-1 && n > 0 && !utf8.RuneStart(s[n]); i++ {
		n--
	}
	return s[:n]
}
