package configcheck

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/push-appserver/push-appserver/internal/config"
)

// TestCertFileExpiryWarned guards check-config's warning of an APNS
// certificate in cert_file that expires within 30 days, found in a file
// that holds the key before the certificate (as openssl pkcs12 -nodes
// writes it): check-config run before every start must say so before
// the day every push of the app begins to fail.
func TestCertFileExpiryWarned(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "Apple Push Services: im.example.app"},
		NotBefore: now.Add(-365 * 24 * time.Hour), NotAfter: now.Add(5 * 24 * time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	pemData := append(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})...)
	path := filepath.Join(t.TempDir(), "push.pem")
	if err := os.WriteFile(path, pemData, 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := &config.Config{Database: config.Database{Driver: "postgres"}, Apps: map[string]*config.App{
		"ios": {Kind: config.KindAPNS, Topic: "im.example.app", CertFile: path, KeyFile: path},
	}}
	out := Check(context.Background(), cfg, Options{Now: func() time.Time { return now }})
	var found bool
	for _, f := range out {
		if f.Error {
			t.Errorf("an error: %v", f)
		}
		if strings.Contains(f.Text, "apps.ios.cert_file") && strings.Contains(f.Text, "expires on 2026-03-06") {
			found = true
		}
	}
	if !found {
		t.Errorf("no warning that apps.ios.cert_file's certificate expires on 2026-03-06: %v", out)
	}
}

// TestWritableLeavesNothing: the data directory's check writes a file
// and removes it, leaving the directory as it was.
func TestWritableLeavesNothing(t *testing.T) {
	dir := t.TempDir()
	if err := Writable(dir); err != nil {
		t.Fatal(err)
	}
	if left, err := os.ReadDir(dir); err != nil || len(left) != 0 {
		t.Fatalf("Writable left %d files in the directory (%v)", len(left), err)
	}
}
