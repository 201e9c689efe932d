package main

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"database/sql"
	"encoding/pem"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/push-appserver/push-appserver/internal/testutil/apnsmock"
	"github.com/push-appserver/push-appserver/internal/testutil/oldregistry"
)

func TestSubcommandHelp(t *testing.T) {
	own := map[string][]string{
		"serve":         {"-config", "-pprof"},
		"reload":        {"-config", "-pid", "kubectl exec"},
		"check-config":  {"-config"},
		"import":        {"-config", "-type-map", "-dry-run"},
		"registrations": {"list", "show", "delete", "count"},
		"backup":        {"-config", "FILE", "pg_dump", "restore"},
		"restore":       {"-config", "FILE", "replaced"},
		"send-test":     {"-app", "-token", "-token-file", "-config"},
		"version":       {},
		"vapid-keygen":  {"-out"},
		"init":          {"-jid", "-domain", "-address", "-dir"},
	}
	for _, c := range commands() {
		t.Run(c.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			if code := run([]string{c.name, "-h"}, &out, &errb); code != 0 {
				t.Fatalf("%s -h: exit %d\n%s", c.name, code, errb.String())
			}
			want, ok := own[c.name]
			if !ok {
				t.Fatalf("no expectation for %s", c.name)
			}
			for _, w := range want {
				if !strings.Contains(out.String(), w) {
					t.Errorf("%s -h lacks %s:\n%s", c.name, w, out.String())
				}
			}
			// Only its own flags: serve's -pprof nowhere else, import's
			// -type-map nowhere else.
			if c.name != "serve" && strings.Contains(out.String(), "-pprof") {
				t.Errorf("%s -h lists serve's flags:\n%s", c.name, out.String())
			}
			if c.name != "import" && strings.Contains(out.String(), "-type-map") {
				t.Errorf("%s -h lists import's flags:\n%s", c.name, out.String())
			}
		})
	}
}

func TestVersion(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run([]string{"version"}, &out, &errb); code != 0 {
		t.Fatalf("exit %d", code)
	}
	for _, w := range []string{"push-appserver ", "commit ", "go1.", "built "} {
		if !strings.Contains(out.String(), w) {
			t.Errorf("version output lacks %q:\n%s", w, out.String())
		}
	}
}

func writeConfig(t *testing.T, text string) string {
	t.Helper()
	dir := t.TempDir()
	path := filepath.Join(dir, "push-appserver.toml")
	text = fmt.Sprintf("data_dir = %q\n", filepath.Join(dir, "data")) + text
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// The files were written by mod_push_appserver.
const realFileStore = "../../internal/migrate/modpushappserver/testdata/filestore"

func TestImportCommand(t *testing.T) {
	cfg := writeConfig(t, "[apps.ios]\nkind = \"log\"\n")
	var out, errb bytes.Buffer
	// Without renaming, apns is no app here: nothing is imported.
	if code := run([]string{"import", "mod_push_appserver", "-config", cfg, "-dry-run", realFileStore}, &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	if !strings.Contains(out.String(), "0 imported") || !strings.Contains(errb.String(), `type "apns" is not a configured app`) {
		t.Fatalf("stdout:\n%s\nstderr:\n%s", out.String(), errb.String())
	}
	out.Reset()
	errb.Reset()
	// Flags after the path work too.
	if code := run([]string{"import", "-config", cfg, "mod_push_appserver", realFileStore, "-type-map", "apns=ios"}, &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	if !strings.Contains(out.String(), "3 record(s) read") || !strings.Contains(out.String(), "2 imported") || !strings.Contains(out.String(), "skipped 1: empty token") {
		t.Fatalf("stdout:\n%s", out.String())
	}
	out.Reset()
	if code := run([]string{"import", "-config", cfg, "-type-map", "apns=ios", "mod_push_appserver", realFileStore}, &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	if !strings.Contains(out.String(), "0 imported, 0 updated, 2 unchanged") {
		t.Fatalf("re-run:\n%s", out.String())
	}
	if code := run([]string{"import", "-config", cfg, "mod_push_appserver", "/nonexistent"}, &out, &errb); code != 1 {
		t.Fatalf("missing path: exit %d", code)
	}
	if code := run([]string{"import", "-config", cfg, "something_else", realFileStore}, &out, &errb); code != 2 {
		t.Fatalf("unknown source kind: exit %d", code)
	}
}

func selfSigned(t *testing.T, dir string, notAfter time.Time) (certFile, keyFile string) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), DNSNames: []string{"localhost"}, NotBefore: notAfter.Add(-48 * time.Hour), NotAfter: notAfter}
	der, _ := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	kder, _ := x509.MarshalECPrivateKey(key)
	certFile, keyFile = filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600)
	return certFile, keyFile
}

func TestCheckConfigFindings(t *testing.T) {
	dir := t.TempDir()
	p8, _, _ := apnsmock.TokenKey()
	os.WriteFile(filepath.Join(dir, "good.p8"), p8, 0o600)
	os.WriteFile(filepath.Join(dir, "garbage.p8"), []byte("-----BEGIN PRIVATE KEY-----\nZ2FyYmFnZQ==\n-----END PRIVATE KEY-----\n"), 0o600)
	apnsApp := func(keyFile string) string {
		return fmt.Sprintf("[apps.apns]\nkind = \"apns\"\ntopic = \"im.example.app\"\ntoken_key_file = %q\nkey_id = \"K1\"\nteam_id = \"T1\"\n", keyFile)
	}
	check := func(text string) (int, string, string) {
		t.Helper()
		path := filepath.Join(t.TempDir(), "c.toml")
		os.WriteFile(path, []byte(text), 0o600)
		var out, errb bytes.Buffer
		code := run([]string{"check-config", "-config", path}, &out, &errb)
		return code, out.String(), errb.String()
	}
	data := fmt.Sprintf("data_dir = %q\n", filepath.Join(dir, "data"))

	if code, out, errs := check(data + apnsApp(filepath.Join(dir, "good.p8"))); code != 0 || !strings.Contains(out, "configuration OK") {
		t.Fatalf("good config: %d\n%s\n%s", code, out, errs)
	}
	// A p8 key that is not a key fails here, not only at serve.
	if code, _, errs := check(data + apnsApp(filepath.Join(dir, "garbage.p8"))); code != 1 || !strings.Contains(errs, "error: apps.apns: apns: token key") {
		t.Fatalf("garbage p8 key: %d\n%s", code, errs)
	}
	// A seed option overriding the file's own setting is pointed out.
	if code, out, _ := check(data + "push_appserver_apns_topic = \"other.app\"\n" + apnsApp(filepath.Join(dir, "good.p8"))); code != 0 ||
		!strings.Contains(out, "warning: push_appserver_apns_topic overrides apps.apns.topic") {
		t.Fatalf("shadowed setting: %d\n%s", code, out)
	}
	// A proxy list that lets every client name itself.
	if code, out, _ := check(data + "[http]\ntrusted_proxies = [\"0.0.0.0/0\"]\n"); code != 0 ||
		!strings.Contains(out, "warning: http.trusted_proxies: 0.0.0.0/0 trusts every address") {
		t.Fatalf("trusting every address: %d\n%s", code, out)
	}
	// A seed option that alone creates an app is named as the cause.
	if code, _, errs := check(data + "push_appserver_fcm_push_priority = \"high\"\n"); code != 1 ||
		!strings.Contains(errs, "exists only because push_appserver_fcm_push_priority is set") {
		t.Fatalf("seed-made app: %d\n%s", code, errs)
	}
	// A data directory that cannot be created.
	os.WriteFile(filepath.Join(dir, "file"), nil, 0o600)
	if code, _, errs := check(fmt.Sprintf("data_dir = %q\n", filepath.Join(dir, "file", "data"))); code != 1 || !strings.Contains(errs, "error: data_dir") {
		t.Fatalf("data dir under a file: %d\n%s", code, errs)
	}
	// A certificate that expires soon, and one that has expired.
	cert, key := selfSigned(t, t.TempDir(), time.Now().Add(10*24*time.Hour))
	tlsCfg := func(cert, key string) string {
		return data + fmt.Sprintf("[http]\ntls_listen = \"127.0.0.1:0\"\ntls_cert_file = %q\ntls_key_file = %q\n", cert, key)
	}
	if code, out, _ := check(tlsCfg(cert, key)); code != 0 || !strings.Contains(out, "warning: http.tls_cert_file: the certificate expires") {
		t.Fatalf("expiring certificate: %d\n%s", code, out)
	}
	// Expired: a warning too, since the unit runs check-config before
	// every start and the server serves on (its other apps, the registry).
	cert, key = selfSigned(t, t.TempDir(), time.Now().Add(-time.Hour))
	if code, out, _ := check(tlsCfg(cert, key)); code != 0 || !strings.Contains(out, "warning: http.tls_cert_file: the certificate expired") {
		t.Fatalf("expired certificate: %d\n%s", code, out)
	}
	// Registrations whose app is gone.
	cfgPath := writeConfig(t, "[apps.ios]\nkind = \"log\"\n")
	var out, errb bytes.Buffer
	if code := run([]string{"import", "-config", cfgPath, "-type-map", "apns=ios", "mod_push_appserver", realFileStore}, &out, &errb); code != 0 {
		t.Fatalf("import: %s", errb.String())
	}
	text, _ := os.ReadFile(cfgPath)
	os.WriteFile(cfgPath, []byte(strings.Replace(string(text), "[apps.ios]", "[apps.android]", 1)), 0o600)
	out.Reset()
	if code := run([]string{"check-config", "-config", cfgPath}, &out, &errb); code != 0 || !strings.Contains(out.String(), `2 registration(s) of type "ios", but no app "ios"`) {
		t.Fatalf("orphaned registrations: %d\n%s", code, out.String())
	}
}

// README: the dry run "reads the store and writes nothing". Run before
// the server's first start (as the steps say), it must not create the
// registry: made by root, the server's user could not open it.
func TestImportDryRunWritesNothing(t *testing.T) {
	cfg := writeConfig(t, "")
	dataDir := filepath.Join(filepath.Dir(cfg), "data")
	os.MkdirAll(dataDir, 0o700)
	var out, errb bytes.Buffer
	if code := run([]string{"import", "mod_push_appserver", "-config", cfg, "-dry-run", realFileStore}, &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	if !strings.Contains(out.String(), "2 imported") {
		t.Fatalf("stdout:\n%s", out.String())
	}
	if entries, _ := os.ReadDir(dataDir); len(entries) > 0 {
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		t.Fatalf("the dry run wrote into the data directory: %v", names)
	}
}

// import registry reads its source: a backup of an older version (or
// another server's live registry) must not be migrated or re-moded by it.
func TestImportRegistryLeavesSourceAlone(t *testing.T) {
	cfg := writeConfig(t, "")
	src := filepath.Join(t.TempDir(), "old.db")
	oldregistry.Write(t, src, "../../internal/registry/sqlite/migrations", 5,
		`INSERT INTO registrations (node, type, token, secret, registered) VALUES ('n', 'apns', 't', 's', 1)`)
	os.Chmod(src, 0o640)
	var out, errb bytes.Buffer
	code := run([]string{"import", "registry", "-config", cfg, "-dry-run", src}, &out, &errb)
	t.Logf("exit %d\n%s%s", code, out.String(), errb.String())
	db, _ := sql.Open("sqlite", src+"?mode=ro")
	defer db.Close()
	var v int
	db.QueryRow(`PRAGMA user_version`).Scan(&v)
	st, _ := os.Stat(src)
	if v != 5 || st.Mode().Perm() != 0o640 {
		t.Fatalf("a dry run of import registry changed its source: schema version %d (was 5), mode %v (was 0640)", v, st.Mode().Perm())
	}
}

// The imports that read a copy of an SQLite registry (a dry run's
// target, import registry's source) work where there is no temporary
// directory to write in: the container image's root is scratch, without
// /tmp, and Kubernetes mounts it read-only. The copy goes in the data
// directory then, which the server's user can write, and is gone after.
func TestImportWithoutTempDir(t *testing.T) {
	cfg := writeConfig(t, "[apps.ios]\nkind = \"log\"\n")
	dataDir := filepath.Join(filepath.Dir(cfg), "data")
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		t.Fatal(err)
	}
	var out, errb bytes.Buffer
	// The registry exists, as once the server has run.
	if code := run([]string{"import", "mod_push_appserver", "-config", cfg, realFileStore}, &out, &errb); code != 0 {
		t.Fatalf("import: %s", errb.String())
	}
	backup := filepath.Join(t.TempDir(), "backup.db")
	if code := run([]string{"backup", "-config", cfg, backup}, &out, &errb); code != 0 {
		t.Fatalf("backup: %s", errb.String())
	}
	t.Setenv("TMPDIR", filepath.Join(t.TempDir(), "missing"))
	for _, args := range [][]string{
		{"import", "mod_push_appserver", "-config", cfg, "-dry-run", realFileStore},
		{"import", "registry", "-config", cfg, "-dry-run", backup},
		{"import", "registry", "-config", cfg, backup},
	} {
		out.Reset()
		errb.Reset()
		if code := run(args, &out, &errb); code != 0 {
			t.Fatalf("%v without a temporary directory: exit %d\n%s%s", args, code, out.String(), errb.String())
		}
	}
	entries, err := os.ReadDir(dataDir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), "push-appserver-copy-") {
			t.Fatalf("a copy was left in the data directory: %s", e.Name())
		}
	}
}

// A TLS key that does not go with the certificate (a renewal that
// replaced one of the two) fails check-config, which the unit runs
// before serve, as it fails serve.
func TestCheckConfigTLSKeyMismatch(t *testing.T) {
	cert, _ := selfSigned(t, t.TempDir(), time.Now().Add(365*24*time.Hour))
	_, otherKey := selfSigned(t, t.TempDir(), time.Now().Add(365*24*time.Hour))
	path := writeConfig(t, fmt.Sprintf("[http]\nlisten = \"\"\ntls_listen = \"127.0.0.1:0\"\ntls_cert_file = %q\ntls_key_file = %q\n", cert, otherKey))
	var out, errb bytes.Buffer
	if code := run([]string{"check-config", "-config", path}, &out, &errb); code == 0 || !strings.Contains(out.String()+errb.String(), "http.tls_key_file") {
		t.Fatalf("check-config with a key of another certificate: exit %d\n%s%s", code, out.String(), errb.String())
	}
}
