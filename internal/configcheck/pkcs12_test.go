package configcheck

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"software.sslmate.com/src/go-pkcs12"

	"github.com/push-appserver/push-appserver/internal/config"
)

// writePKCS12 writes a PKCS#12 file holding a key and a self-signed
// certificate that expires at notAfter, encrypted with password.
func writePKCS12(t *testing.T, notAfter time.Time, password string) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "Apple Push Services: im.example.app"},
		NotBefore:    notAfter.Add(-365 * 24 * time.Hour),
		NotAfter:     notAfter,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pfx, err := pkcs12.Modern.Encode(key, cert, nil, password)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "push.p12")
	if err := os.WriteFile(path, pfx, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestPKCS12CertificateExpiryWarned guards check-config's warning of an
// APNS certificate that expires within 30 days or has expired, which the
// README promises for every certificate: an app whose certificate comes
// as a PKCS#12 export (pkcs12_file, what Keychain Access writes) must be
// warned of as one on cert_file is. Without it, check-config (which the
// unit runs before every start) said "configuration OK" up to the day
// every push of the app began to fail.
func TestPKCS12CertificateExpiryWarned(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	t.Setenv("TEST_P12_PASSWORD", "pw")
	for _, tt := range []struct {
		name     string
		notAfter time.Time
		want     string
	}{
		{"expiring", now.Add(5 * 24 * time.Hour), "expires on 2026-03-06"},
		{"expired", now.Add(-24 * time.Hour), "expired on 2026-02-28"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cfg := &config.Config{Database: config.Database{Driver: "postgres"}, Apps: map[string]*config.App{
				"ios": {Kind: config.KindAPNS, Topic: "im.example.app", PKCS12File: writePKCS12(t, tt.notAfter, "pw"), KeyPassword: "env:TEST_P12_PASSWORD"},
			}}
			out := Check(context.Background(), cfg, Options{Now: func() time.Time { return now }})
			var found bool
			for _, f := range out {
				if f.Error {
					t.Errorf("an error: %v", f)
				}
				if strings.Contains(f.Text, "apps.ios.pkcs12_file") && strings.Contains(f.Text, tt.want) {
					found = true
				}
			}
			if !found {
				t.Errorf("no warning that apps.ios.pkcs12_file's certificate %s: %v", tt.want, out)
			}
		})
	}
}

// TestPKCS12CertificateFarFromExpiryNotWarned: a certificate with more
// than 30 days left draws nothing.
func TestPKCS12CertificateFarFromExpiryNotWarned(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	cfg := &config.Config{Database: config.Database{Driver: "postgres"}, Apps: map[string]*config.App{
		"ios": {Kind: config.KindAPNS, Topic: "im.example.app", PKCS12File: writePKCS12(t, now.Add(90*24*time.Hour), ""), KeyPassword: ""},
	}}
	if out := Check(context.Background(), cfg, Options{Now: func() time.Time { return now }}); len(out) != 0 {
		t.Errorf("findings for a certificate 90 days from expiry: %v", out)
	}
}
