package webpush

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

func TestGenerateAndLoadVAPIDKey(t *testing.T) {
	path := filepath.Join(t.TempDir(), "vapid.pem")
	pub, err := GenerateVAPIDKey(path)
	if err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(path)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode %v, %v", st.Mode(), err)
	}
	raw, err := base64.RawURLEncoding.DecodeString(pub)
	if err != nil || len(raw) != 65 || raw[0] != 4 {
		t.Fatalf("public key %q is not a base64url uncompressed point", pub)
	}
	key, err := LoadVAPIDKey(path)
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := PublicKeyString(key); got != pub {
		t.Fatalf("loaded key's public half %s, printed %s", got, pub)
	}
	if _, err := GenerateVAPIDKey(path); err == nil {
		t.Fatal("an existing key file was overwritten")
	}

	// SEC 1, as openssl ecparam -genkey writes it.
	sec1 := filepath.Join(t.TempDir(), "sec1.pem")
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, _ := x509.MarshalECPrivateKey(k)
	os.WriteFile(sec1, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}), 0o600)
	if _, err := LoadVAPIDKey(sec1); err != nil {
		t.Fatal(err)
	}
	// Not P-256.
	p384 := filepath.Join(t.TempDir(), "p384.pem")
	k384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	der, _ = x509.MarshalPKCS8PrivateKey(k384)
	os.WriteFile(p384, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600)
	if _, err := LoadVAPIDKey(p384); err == nil || !strings.Contains(err.Error(), "P-256") {
		t.Fatalf("P-384 key: %v", err)
	}
	garbage := filepath.Join(t.TempDir(), "garbage")
	os.WriteFile(garbage, []byte("not a key"), 0o600)
	if _, err := LoadVAPIDKey(garbage); err == nil {
		t.Fatal("garbage loaded")
	}
}

func TestCheckSubject(t *testing.T) {
	for sub, ok := range map[string]bool{
		"mailto:ops@example.org":       true,
		"https://push.example.org/ops": true,
		"ops@example.org":              false,
		"mailto:":                      false,
		"http://example.org":           false,
		"":                             false,
	} {
		if err := CheckSubject(sub); (err == nil) != ok {
			t.Errorf("CheckSubject(%q) = %v", sub, err)
		}
	}
}

// TestVAPIDToken: the header carries an ES256 JWT for the endpoint's
// origin, valid at most 24 hours, with our subject, and our public key;
// it is reused until near expiry and signed afresh after.
func TestVAPIDToken(t *testing.T) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	clock := now
	v, err := newVAPID(key, "mailto:ops@example.org", func() time.Time { return clock })
	if err != nil {
		t.Fatal(err)
	}
	h, err := v.authorization("https://push.example.org")
	if err != nil {
		t.Fatal(err)
	}
	tok, k, ok := strings.Cut(strings.TrimPrefix(h, "vapid t="), ", k=")
	if !ok || !strings.HasPrefix(h, "vapid t=") {
		t.Fatalf("header %q", h)
	}
	if want, _ := PublicKeyString(key); k != want {
		t.Fatalf("k=%s, want %s", k, want)
	}
	var claims jwt.RegisteredClaims
	_, err = jwt.ParseWithClaims(tok, &claims, func(*jwt.Token) (any, error) { return &key.PublicKey, nil },
		jwt.WithValidMethods([]string{"ES256"}), jwt.WithTimeFunc(func() time.Time { return now }))
	if err != nil {
		t.Fatal(err)
	}
	if len(claims.Audience) != 1 || claims.Audience[0] != "https://push.example.org" || claims.Subject != "mailto:ops@example.org" {
		t.Fatalf("claims %+v", claims)
	}
	if life := claims.ExpiresAt.Sub(now); life <= 0 || life > 24*time.Hour {
		t.Fatalf("exp %v after now", life)
	}
	clock = now.Add(time.Hour)
	if h2, _ := v.authorization("https://push.example.org"); h2 != h {
		t.Fatal("token not reused within its life")
	}
	if h3, _ := v.authorization("https://other.example.org"); h3 == h {
		t.Fatal("one token for two origins")
	}
	clock = now.Add(vapidLifetime - vapidRenew + time.Second)
	if h4, _ := v.authorization("https://push.example.org"); h4 == h {
		t.Fatal("token reused past its renewal")
	}
}

// The VAPID audience is the endpoint's origin in its one RFC 6454 form.
func TestOriginOf(t *testing.T) {
	for _, tt := range []struct{ endpoint, want string }{
		{"https://push.example.net/wpush/v2/x", "https://push.example.net"},
		{"https://Push.Example.NET:443/x", "https://push.example.net"},
		{"https://push.example.net:8443/x", "https://push.example.net:8443"},
		{"https://[2001:DB8::1]:443/x", "https://[2001:db8::1]"},
		{"https://[2001:db8::1]:8443/x", "https://[2001:db8::1]:8443"},
	} {
		u, err := url.Parse(tt.endpoint)
		if err != nil {
			t.Fatal(err)
		}
		if got := originOf(u); got != tt.want {
			t.Errorf("originOf(%s) = %s, want %s", tt.endpoint, got, tt.want)
		}
	}
}
