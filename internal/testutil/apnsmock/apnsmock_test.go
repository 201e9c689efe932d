package apnsmock

import (
	"crypto/ecdsa"
	"crypto/tls"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// The mock checks every provider token as Apple does, though it verifies
// a token's signature once: a token signed by another key is refused
// after a good one was seen, and a good one seen before is refused once
// it is older than an hour.
func TestProviderTokens(t *testing.T) {
	key, err := ecdsaKey()
	if err != nil {
		t.Fatal(err)
	}
	other, err := ecdsaKey()
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	now := time.Now()
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	m, err := New(Config{TokenKey: &key.PublicKey, KeyID: "KEY", TeamID: "TEAM", Topic: "im.example", Now: clock})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: m.CAPool}, ForceAttemptHTTP2: true}}
	token := func(k *ecdsa.PrivateKey, kid, team string) string {
		j := jwt.NewWithClaims(jwt.SigningMethodES256, jwt.RegisteredClaims{Issuer: team, IssuedAt: jwt.NewNumericDate(clock())})
		j.Header["kid"] = kid
		s, err := j.SignedString(k)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	push := func(bearer string) string {
		req, _ := http.NewRequest("POST", m.URL+"/3/device/"+strings.Repeat("ab", 32), strings.NewReader(`{"aps":{"content-available":1}}`))
		req.Header.Set("authorization", "bearer "+bearer)
		req.Header.Set("apns-topic", "im.example")
		req.Header.Set("apns-push-type", "background")
		req.Header.Set("apns-priority", "5")
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode == http.StatusOK {
			return "ok"
		}
		return string(body)
	}
	good := token(key, "KEY", "TEAM")
	for _, tc := range []struct {
		name, bearer, want string
	}{
		{"good", good, "ok"},
		{"good again", good, "ok"},
		{"signed by another key", token(other, "KEY", "TEAM"), "InvalidProviderToken"},
		{"another key id", token(key, "OTHER", "TEAM"), "InvalidProviderToken"},
		{"another team", token(key, "KEY", "OTHER"), "InvalidProviderToken"},
		{"tampered signature", good[:len(good)-4] + "AAAA", "InvalidProviderToken"},
		{"good after the bad ones", good, "ok"},
	} {
		if got := push(tc.bearer); !strings.Contains(got, tc.want) {
			t.Errorf("%s: %q, want %q", tc.name, got, tc.want)
		}
	}
	mu.Lock()
	now = now.Add(61 * time.Minute)
	mu.Unlock()
	if got := push(good); !strings.Contains(got, "ExpiredProviderToken") {
		t.Errorf("good, an hour later: %q, want ExpiredProviderToken", got)
	}
}
