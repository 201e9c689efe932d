package webpush

import (
	"bytes"
	"crypto/ecdh"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
)

// Limits on a subscription. Endpoints of the big push services are 150 to
// 500 bytes, a whole subscription rarely 700; these leave room for
// UnifiedPush distributors' own URLs while keeping the token within what
// the registry's (type, token) index takes (PostgreSQL's B-tree entries end
// at about 2700 bytes).
const (
	MaxEndpointLen     = 1536
	MaxSubscriptionLen = 2048
)

// Subscription is a browser's push subscription: where to send and whom to
// encrypt for.
type Subscription struct {
	// Endpoint is the push resource URL (https).
	Endpoint *url.URL
	// P256DH is the user agent's ECDH public key.
	P256DH *ecdh.PublicKey
	// Auth is the 16-byte authentication secret.
	Auth []byte
}

// subscriptionJSON is PushSubscription.toJSON() as browsers produce it.
type subscriptionJSON struct {
	Endpoint       string          `json:"endpoint"`
	ExpirationTime json.RawMessage `json:"expirationTime,omitempty"`
	Keys           struct {
		P256DH string `json:"p256dh"`
		Auth   string `json:"auth"`
	} `json:"keys"`
}

// ParseSubscription reads a subscription as a browser's
// PushSubscription.toJSON() gives it:
//
//	{"endpoint":"https://...","expirationTime":null,"keys":{"p256dh":"B...","auth":"..."}}
//
// The keys are base64url, with or without padding. It checks what can be
// checked without the network: an https URL with a host and no user
// information, a p256dh that is a point on P-256 in uncompressed form, a
// 16-byte auth secret, and the size limits. Where the endpoint may point
// is the sender's Guard's business, at connect time.
func ParseSubscription(token string) (Subscription, error) {
	if len(token) > MaxSubscriptionLen {
		return Subscription{}, fmt.Errorf("subscription longer than %d bytes", MaxSubscriptionLen)
	}
	var sj subscriptionJSON
	dec := json.NewDecoder(strings.NewReader(token))
	if err := dec.Decode(&sj); err != nil {
		return Subscription{}, fmt.Errorf("subscription is not PushSubscription JSON: %w", err)
	}
	// dec.More reports false before '}' and ']' as well as at the end.
	if strings.TrimLeft(token[dec.InputOffset():], " \t\r\n") != "" {
		return Subscription{}, errors.New("subscription: trailing data after the JSON object")
	}
	return newSubscription(sj.Endpoint, sj.Keys.P256DH, sj.Keys.Auth)
}

// SubscriptionJSON builds the token for a subscription given as its three
// parts (the XEP-0050 command's fields), after the same checks as
// ParseSubscription.
func SubscriptionJSON(endpoint, p256dh, auth string) (string, error) {
	if _, err := newSubscription(endpoint, p256dh, auth); err != nil {
		return "", err
	}
	var sj subscriptionJSON
	sj.Endpoint, sj.Keys.P256DH, sj.Keys.Auth = endpoint, p256dh, auth
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(sj); err != nil {
		return "", err
	}
	return strings.TrimSuffix(buf.String(), "\n"), nil
}

func newSubscription(endpoint, p256dh, auth string) (Subscription, error) {
	u, err := parseEndpoint(endpoint)
	if err != nil {
		return Subscription{}, err
	}
	rawKey, err := decodeB64URL(p256dh)
	if err != nil {
		return Subscription{}, fmt.Errorf("subscription keys.p256dh: %w", err)
	}
	if len(rawKey) != keyLen || rawKey[0] != 0x04 {
		return Subscription{}, fmt.Errorf("subscription keys.p256dh: want a 65-byte uncompressed P-256 point, got %d bytes", len(rawKey))
	}
	key, err := ecdh.P256().NewPublicKey(rawKey)
	if err != nil {
		return Subscription{}, fmt.Errorf("subscription keys.p256dh: %w", err)
	}
	authKey, err := decodeB64URL(auth)
	if err != nil {
		return Subscription{}, fmt.Errorf("subscription keys.auth: %w", err)
	}
	if len(authKey) != authLen {
		return Subscription{}, fmt.Errorf("subscription keys.auth: want 16 bytes, got %d", len(authKey))
	}
	return Subscription{Endpoint: u, P256DH: key, Auth: authKey}, nil
}

func parseEndpoint(endpoint string) (*url.URL, error) {
	switch {
	case endpoint == "":
		return nil, errors.New("subscription endpoint is missing")
	case len(endpoint) > MaxEndpointLen:
		return nil, fmt.Errorf("subscription endpoint longer than %d bytes", MaxEndpointLen)
	}
	u, err := url.Parse(endpoint)
	if err != nil {
		return nil, fmt.Errorf("subscription endpoint: %w", err)
	}
	switch {
	case u.Scheme != "https":
		return nil, errors.New("subscription endpoint must be an https URL")
	case u.Hostname() == "" || u.Opaque != "":
		return nil, errors.New("subscription endpoint has no host")
	case u.User != nil:
		return nil, errors.New("subscription endpoint must not carry user information")
	case u.Fragment != "":
		return nil, errors.New("subscription endpoint must not carry a fragment")
	}
	if p := u.Port(); p != "" {
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			return nil, fmt.Errorf("subscription endpoint: bad port %q", p)
		}
	}
	return u, nil
}

// decodeB64URL accepts base64url with or without padding, as browsers and
// the libraries that copy their keys around write it.
func decodeB64URL(s string) ([]byte, error) {
	if s == "" {
		return nil, errors.New("missing")
	}
	return base64.RawURLEncoding.Strict().DecodeString(strings.TrimRight(s, "="))
}
