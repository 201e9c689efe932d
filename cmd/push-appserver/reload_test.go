package main

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/push-appserver/push-appserver/internal/testutil/apnsmock"
	gopkcs12 "software.sslmate.com/src/go-pkcs12"
)

// waitLog waits until the server's log contains want.
func (s *server) waitLog(t *testing.T, want string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(s.log.String(), want) {
		if time.Now().After(deadline) {
			t.Fatalf("log never showed %q", want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestSIGHUPReload runs the binary, changes its configuration and sends
// SIGHUP: a new APNS key and the log level apply at once, a broken key is
// refused and the running one kept, a new listen address is named as
// needing a restart, and the process lives on.
func TestSIGHUPReload(t *testing.T) {
	bin := buildBinary(t)
	dir := t.TempDir()
	m := renewedKey(t, dir)
	os.WriteFile(filepath.Join(dir, "garbage.p8"), []byte("-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n"), 0o600)
	addr := freePort(t)
	config := filepath.Join(dir, "c.toml")
	write := func(logLevel, listen, keyFile, keyID string) {
		os.WriteFile(config, []byte(fmt.Sprintf(`data_dir = %q
rate_limit = 0
log_level = %q
[http]
listen = %q
%spush_deadline = "3s"
`, filepath.Join(dir, "data"), logLevel, listen, m.AppConfigKey("ios", keyFile, keyID))), 0o600)
	}
	write("info", addr, filepath.Join(dir, "old.p8"), "K1")
	s := startServer(t, bin, config)
	s.waitHealthy(t, addr)
	token := strings.Repeat("0c", 32)
	body := s.post(t, "register", url.Values{"type": {"ios"}, "node": {"n1"}, "token": {token}})
	secret := strings.Split(body, "\n")[2]
	push := func() string { return s.post(t, "push", url.Values{"node": {"n1"}, "secret": {secret}}) }
	if got := push(); !strings.HasPrefix(got, "ERROR") {
		t.Fatalf("push with the key the service does not know: %q", got)
	}

	write("debug", addr, filepath.Join(dir, "new.p8"), "K2")
	s.cmd.Process.Signal(syscall.SIGHUP)
	s.waitLog(t, "reload: applied")
	if !strings.Contains(s.log.String(), "log_level debug") || !strings.Contains(s.log.String(), "apps.ios") {
		t.Fatalf("reload log:\n%s", s.log.String())
	}
	if got := push(); got != "OK\nn1" {
		t.Fatalf("push after reloading the key: %q", got)
	}

	// A broken key and a new listen address: the key is refused, the
	// running one stays; the address waits for a restart.
	write("debug", freePort(t), filepath.Join(dir, "garbage.p8"), "K2")
	s.cmd.Process.Signal(syscall.SIGHUP)
	s.waitLog(t, "takes effect only after a restart")
	s.waitLog(t, "not applied, the running setting stays")
	if !strings.Contains(s.log.String(), "http.listen") {
		t.Fatalf("restart-only change not named:\n%s", s.log.String())
	}
	if got := push(); got != "OK\nn1" {
		t.Fatalf("push after a refused reload: %q", got)
	}

	// A configuration that does not load changes nothing either.
	os.WriteFile(config, []byte("rate_limit = \"soon\"\n"), 0o600)
	s.cmd.Process.Signal(syscall.SIGHUP)
	s.waitLog(t, "configuration not reloaded")
	if got := push(); got != "OK\nn1" {
		t.Fatalf("push after a broken config: %q", got)
	}

	// A reload rebuilds the app, which may now talk to another
	// environment or topic: until a push goes through again, a refused
	// token is not taken against the device.
	applied := strings.Count(s.log.String(), "reload: applied")
	// The key renewed in place (an unchanged app keeps its backend).
	newKey, err := os.ReadFile(filepath.Join(dir, "new.p8"))
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "new.p8"), append(newKey, '\n'), 0o600)
	write("debug", addr, filepath.Join(dir, "new.p8"), "K2")
	s.cmd.Process.Signal(syscall.SIGHUP)
	for deadline := time.Now().Add(20 * time.Second); strings.Count(s.log.String(), "reload: applied") == applied; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the last reload was not applied")
		}
	}
	m.FailToken(token, apnsmock.Fault{Status: 400, Reason: "BadDeviceToken"})
	if got := push(); !strings.HasPrefix(got, "ERROR") {
		t.Fatalf("push refused for its token: %q", got)
	}
	if got := push(); got != "OK\nn1" {
		t.Fatalf("push after a refusal before the reloaded app proved itself: %q (registration deleted?)", got)
	}
	s.stop(t)
}

// A renewed APNS certificate written over the old one before its key is
// refused by the reload, and the app pushes with the old certificate on:
// the expiry metric must say when that one expires, or the alert clears
// while the certificate in use runs out (and with it every iOS push).
func TestReloadAPNSCertificateExpiryMetricIsTheOneInUse(t *testing.T) {
	bin := buildBinary(t)
	dir := t.TempDir()
	m, certFile, keyFile := certAPNS(t, dir)
	addr := freePort(t)
	config := filepath.Join(dir, "c.toml")
	os.WriteFile(config, fmt.Appendf(nil, `data_dir = %q
rate_limit = 0
[http]
listen = %q
[apps.ios]
kind = "apns"
topic = "im.example.app"
cert_file = %q
key_file = %q
endpoint = %q
ca_path = %q
`, filepath.Join(dir, "data"), addr, certFile, keyFile, m.URL, m.CADir), 0o600)
	s := startServer(t, bin, config)
	s.waitHealthy(t, addr)
	secret := s.registerTo(t, "ios", "n1", strings.Repeat("0c", 32))
	push := func() string { return s.post(t, "push", url.Values{"node": {"n1"}, "secret": {secret}}) }
	if got := push(); got != "OK\nn1" {
		t.Fatalf("push: %q", got)
	}
	const series = `push_appserver_certificate_expiry_seconds{certificate="apps.ios.cert_file"}`
	before := metric(t, addr, series)
	if before <= 0 || before > (24*time.Hour).Seconds() {
		t.Fatalf("%s = %v at start, want under a day", series, before)
	}
	// The renewal, half done: a certificate valid for 90 days over the
	// old one, its key still to come.
	newCert, _ := selfSigned(t, t.TempDir(), time.Now().Add(90*24*time.Hour))
	b, _ := os.ReadFile(newCert)
	os.WriteFile(certFile, b, 0o600)
	s.cmd.Process.Signal(syscall.SIGHUP)
	s.waitLog(t, "reload: not applied")
	if got := push(); got != "OK\nn1" {
		t.Fatalf("push with the old certificate after the refused reload: %q", got)
	}
	if v := metric(t, addr, series); v > before+60 {
		t.Errorf("%s = %.0f s (%.0f days) while the app pushes with a certificate expiring in %.0f s", series, v, v/86400, before)
	}
}

// A configuration file caught empty (an editor or a configuration tool
// truncates it before writing it anew) is no configuration of defaults to
// apply: the reload changes nothing and says why.
func TestReloadOfEmptyFileChangesNothing(t *testing.T) {
	bin := buildBinary(t)
	dir := t.TempDir()
	addr := freePort(t)
	config := filepath.Join(dir, "c.toml")
	os.WriteFile(config, fmt.Appendf(nil, "data_dir = %q\nlog_level = \"debug\"\n[http]\nlisten = %q\n", filepath.Join(dir, "data"), addr), 0o600)
	s := startServer(t, bin, config)
	s.waitHealthy(t, addr)
	os.WriteFile(config, nil, 0o600)
	s.cmd.Process.Signal(syscall.SIGHUP)
	s.waitLog(t, "configuration not reloaded")
	if log := s.log.String(); !strings.Contains(log, "is empty") || strings.Contains(log, "reload: applied") {
		t.Fatalf("a reload of an empty file:\n%s", log)
	}
}

// TestStopDuringHungReload: a reload whose file cannot be read (a
// network mount that stopped answering; here a FIFO nobody writes to)
// holds up neither a further SIGHUP nor a stop, which finishes as it
// would without the reload.
func TestStopDuringHungReload(t *testing.T) {
	bin := buildBinary(t)
	_, addr, config := minimalConfig(t)
	s := startServer(t, bin, config)
	s.waitHealthy(t, addr)
	if err := os.Remove(config); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(config, 0o600); err != nil {
		t.Fatal(err)
	}
	s.cmd.Process.Signal(syscall.SIGHUP)
	s.waitLog(t, "reloading the configuration")
	s.cmd.Process.Signal(syscall.SIGHUP)
	s.waitLog(t, "a reload is under way")
	s.stop(t)
	if !strings.Contains(s.log.String(), "shutting down") {
		t.Fatalf("no orderly stop:\n%s", s.log.String())
	}
}

// TestReloadToAPNSCertificateExportsItsExpiry: an APNS app switched by a
// reload from a token key to a certificate pushes with that certificate
// from then on, and its expiry is exported as for one configured at
// start, so that PushAppserverCertificateExpiring can fire. On the token
// key the app exports no expiry at all.
func TestReloadToAPNSCertificateExportsItsExpiry(t *testing.T) {
	bin := buildBinary(t)
	dir := t.TempDir()
	m, certFile, keyFile := certAPNS(t, dir)
	p8, _, _ := apnsmock.TokenKey()
	p8File := filepath.Join(dir, "k.p8")
	os.WriteFile(p8File, p8, 0o600)
	addr := freePort(t)
	config := filepath.Join(dir, "c.toml")
	head := fmt.Sprintf(`data_dir = %q
rate_limit = 0
[http]
listen = %q
[apps.ios]
kind = "apns"
topic = "im.example.app"
endpoint = %q
ca_path = %q
`, filepath.Join(dir, "data"), addr, m.URL, m.CADir)
	os.WriteFile(config, []byte(head+fmt.Sprintf("token_key_file = %q\nkey_id = \"K1\"\nteam_id = \"T1\"\n", p8File)), 0o600)
	s := startServer(t, bin, config)
	s.waitHealthy(t, addr)
	secret := s.registerTo(t, "ios", "n1", strings.Repeat("0c", 32))
	const series = `push_appserver_certificate_expiry_seconds{certificate="apps.ios.cert_file"}`
	if v := metric(t, addr, series); v != -1 {
		t.Errorf("%s = %v on a token key; want no series", series, v)
	}

	os.WriteFile(config, []byte(head+fmt.Sprintf("cert_file = %q\nkey_file = %q\n", certFile, keyFile)), 0o600)
	s.cmd.Process.Signal(syscall.SIGHUP)
	s.waitLog(t, "reload: applied")
	if got := s.post(t, "push", url.Values{"node": {"n1"}, "secret": {secret}}); got != "OK\nn1" {
		t.Fatalf("push with the certificate after the reload: %q", got)
	}
	if v := metric(t, addr, series); v <= 0 || v > (24*time.Hour).Seconds() {
		t.Errorf("%s = %v after the reload to a certificate expiring within a day; want its expiry\n%s", series, v, s.log.String())
	}
	s.stop(t)
}

// TestPKCS12AppExportsItsExpiry: an APNS app on a PKCS#12 file exports
// its certificate's expiry too, under the name an app's certificate has
// whichever file it came from.
func TestPKCS12AppExportsItsExpiry(t *testing.T) {
	bin := buildBinary(t)
	dir := t.TempDir()
	m, certFile, keyFile := certAPNS(t, dir)
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(cert.Certificate[0])
	p12, err := gopkcs12.Modern.Encode(cert.PrivateKey, leaf, nil, "s3cret")
	if err != nil {
		t.Fatal(err)
	}
	p12File := filepath.Join(dir, "push.p12")
	os.WriteFile(p12File, p12, 0o600)
	addr := freePort(t)
	config := filepath.Join(dir, "c.toml")
	os.WriteFile(config, fmt.Appendf(nil, "data_dir = %q\nrate_limit = 0\n[http]\nlisten = %q\n[apps.ios]\nkind = \"apns\"\ntopic = \"im.example.app\"\nendpoint = %q\nca_path = %q\npkcs12_file = %q\nkey_password = \"s3cret\"\n",
		filepath.Join(dir, "data"), addr, m.URL, m.CADir, p12File), 0o600)
	s := startServer(t, bin, config)
	s.waitHealthy(t, addr)
	const series = `push_appserver_certificate_expiry_seconds{certificate="apps.ios.cert_file"}`
	if v := metric(t, addr, series); v <= 0 || v > (24*time.Hour).Seconds() {
		t.Errorf("%s = %v for an app on a certificate expiring within a day; want its expiry", series, v)
	}
	s.stop(t)
}

// certAPNS starts an APNS mock for im.example.app that takes the client
// certificate it writes into dir (push.pem, its key push.key), closed
// when the test ends.
func certAPNS(t *testing.T, dir string) (m *apnsmock.Server, certFile, keyFile string) {
	t.Helper()
	pool, certPEM, keyPEM, err := apnsmock.ClientCert()
	if err != nil {
		t.Fatal(err)
	}
	m, err = apnsmock.New(apnsmock.Config{ClientCAs: pool, Topic: "im.example.app"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Close)
	certFile, keyFile = filepath.Join(dir, "push.pem"), filepath.Join(dir, "push.key")
	if err := os.WriteFile(certFile, certPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, keyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	return m, certFile, keyFile
}

// renewedKey writes two APNS token keys into dir, old.p8 (key ID K1) and
// its renewal new.p8 (K2), and starts an APNS mock that takes only the
// new one, closed when the test ends.
func renewedKey(t *testing.T, dir string) *apnsmock.Server {
	t.Helper()
	oldKey, _, _ := apnsmock.TokenKey()
	newKey, newPub, _ := apnsmock.TokenKey()
	os.WriteFile(filepath.Join(dir, "old.p8"), oldKey, 0o600)
	os.WriteFile(filepath.Join(dir, "new.p8"), newKey, 0o600)
	m, err := apnsmock.New(apnsmock.Config{TokenKey: newPub, KeyID: "K2", TeamID: "T1", Topic: "im.example.app"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Close)
	return m
}
