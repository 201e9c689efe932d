package webpush

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// VAPID tokens (RFC 8292) live 12 hours, half of the 24 hours a push
// service accepts at most, and are renewed when less than an hour is left,
// so clock skew between us and the push service cannot push exp past its
// limit nor let a token expire in flight.
const (
	vapidLifetime = 12 * time.Hour
	vapidRenew    = time.Hour
)

// GenerateVAPIDKey writes a new P-256 VAPID key to path (PKCS#8 PEM, mode
// 0600, refusing to overwrite) and returns its public key as clients need
// it for PushManager.subscribe's applicationServerKey: base64url of the
// uncompressed point.
func GenerateVAPIDKey(path string) (string, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", fmt.Errorf("vapid: generating key: %w", err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return "", fmt.Errorf("vapid: encoding key: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return "", fmt.Errorf("vapid: %w", err)
	}
	if err := pem.Encode(f, &pem.Block{Type: "PRIVATE KEY", Bytes: der}); err != nil {
		f.Close()
		os.Remove(path)
		return "", fmt.Errorf("vapid: writing %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		os.Remove(path)
		return "", fmt.Errorf("vapid: writing %s: %w", path, err)
	}
	return PublicKeyString(key)
}

// LoadVAPIDKey reads a P-256 private key from a PEM file: PKCS#8 (what
// vapid-keygen writes) or SEC 1 "EC PRIVATE KEY" (what openssl ecparam
// and most web-push libraries write).
func LoadVAPIDKey(path string) (*ecdsa.PrivateKey, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("vapid key: %w", err)
	}
	var block *pem.Block
	for {
		block, data = pem.Decode(data)
		if block == nil {
			return nil, fmt.Errorf("vapid key %s: no PRIVATE KEY or EC PRIVATE KEY PEM block", path)
		}
		if block.Type == "PRIVATE KEY" || block.Type == "EC PRIVATE KEY" {
			break
		}
	}
	var key any
	if block.Type == "EC PRIVATE KEY" {
		key, err = x509.ParseECPrivateKey(block.Bytes)
	} else {
		key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	}
	if err != nil {
		return nil, fmt.Errorf("vapid key %s: %w", path, err)
	}
	ek, ok := key.(*ecdsa.PrivateKey)
	if !ok || ek.Curve != elliptic.P256() {
		return nil, fmt.Errorf("vapid key %s: want a P-256 (prime256v1) key", path)
	}
	return ek, nil
}

// PublicKeyString is the key's public half as base64url of the
// uncompressed point, the form of the k parameter and of a client's
// applicationServerKey.
func PublicKeyString(key *ecdsa.PrivateKey) (string, error) {
	pub, err := key.PublicKey.ECDH()
	if err != nil {
		return "", fmt.Errorf("vapid: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(pub.Bytes()), nil
}

// CheckSubject checks a VAPID sub claim: RFC 8292 wants a mailto: or
// https: URI push service operators can reach us at.
func CheckSubject(sub string) error {
	u, err := url.Parse(sub)
	switch {
	case err != nil:
		return fmt.Errorf("vapid subject: %w", err)
	case u.Scheme == "mailto" && strings.Contains(u.Opaque, "@"):
		return nil
	case u.Scheme == "https" && u.Host != "":
		return nil
	}
	return errors.New("vapid subject must be a mailto: address or an https: URL")
}

// vapid signs the Authorization header for each push service origin and
// caches it until it nears expiry.
type vapid struct {
	key     *ecdsa.PrivateKey
	subject string
	k       string
	now     func() time.Time

	mu     sync.Mutex
	tokens map[string]vapidToken // by audience (origin)
}

type vapidToken struct {
	header string
	exp    time.Time
}

func newVAPID(key *ecdsa.PrivateKey, subject string, now func() time.Time) (*vapid, error) {
	k, err := PublicKeyString(key)
	if err != nil {
		return nil, err
	}
	return &vapid{key: key, subject: subject, k: k, now: now, tokens: map[string]vapidToken{}}, nil
}

// authorization returns "vapid t=<JWT>, k=<public key>" for the origin
// (scheme://host[:port]) of a push endpoint.
func (v *vapid) authorization(origin string) (string, error) {
	now := v.now()
	v.mu.Lock()
	defer v.mu.Unlock()
	if t, ok := v.tokens[origin]; ok && t.exp.Sub(now) > vapidRenew {
		return t.header, nil
	}
	exp := now.Add(vapidLifetime)
	jt := jwt.NewWithClaims(jwt.SigningMethodES256, jwt.MapClaims{"aud": origin, "exp": exp.Unix(), "sub": v.subject})
	signed, err := jt.SignedString(v.key)
	if err != nil {
		return "", fmt.Errorf("vapid: signing: %w", err)
	}
	h := "vapid t=" + signed + ", k=" + v.k
	// Push services are few; a map keyed by origin stays small, but an
	// attacker registering endpoints on many hosts must not grow it
	// without bound.
	if len(v.tokens) >= 1024 {
		clear(v.tokens)
	}
	v.tokens[origin] = vapidToken{header: h, exp: exp}
	return h, nil
}

// invalidate drops the cached token for origin, after a push service said
// it did not accept it.
func (v *vapid) invalidate(origin string) {
	v.mu.Lock()
	delete(v.tokens, origin)
	v.mu.Unlock()
}
