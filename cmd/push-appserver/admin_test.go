package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/push-appserver/push-appserver/internal/registry"
	"github.com/push-appserver/push-appserver/internal/registry/sqlite"
)

// Secrets of the real mod_push_appserver files in realFileStore.
const (
	secretE429 = "6862fc0175dd9c61f168aa8920d2c591a3c4bc628307486dec045df407ad5bd4"
	secretLua  = "b6d37d82bc2e0722658895883746d25fd595544874141a7bfc8c22aa04e5c555"
)

// importedBesideServer starts the binary with log apps apns and fcm,
// imports mod_push_appserver's files into its registry with the CLI as a
// second process would, and returns the server and a function that runs a
// CLI command on the same configuration (its output, errors, exit code).
func importedBesideServer(t *testing.T) (*server, func(args ...string) (string, string, int)) {
	t.Helper()
	bin := buildBinary(t)
	addr := freePort(t)
	cfg := writeConfig(t, fmt.Sprintf("rate_limit = 0\n[http]\nlisten = %q\n[apps.apns]\nkind = \"log\"\n[apps.fcm]\nkind = \"log\"\n", addr))
	s := startServer(t, bin, cfg)
	s.waitHealthy(t, addr)
	cli := func(args ...string) (string, string, int) {
		t.Helper()
		var out, errb bytes.Buffer
		code := run(append(args[:1:1], append([]string{"-config", cfg}, args[1:]...)...), &out, &errb)
		return out.String(), errb.String(), code
	}
	if out, errs, code := cli("import", "mod_push_appserver", realFileStore); code != 0 || !strings.Contains(out, "2 imported") {
		t.Fatalf("import: %d\n%s\n%s", code, out, errs)
	}
	return s, cli
}

// TestAdminBesideRunningServer imports mod_push_appserver's files and
// manages registrations with the CLI while the real binary serves the same
// registry, and pushes through the server with the imported secrets.
func TestAdminBesideRunningServer(t *testing.T) {
	s, cli := importedBesideServer(t)
	// The running server pushes with what mod_push_appserver stored.
	if body := s.post(t, "push", url.Values{"node": {"api02806ed711aa-e429"}, "secret": {secretE429}}); body != "OK\napi02806ed711aa-e429" {
		t.Fatalf("push with an imported secret: %q", body)
	}
	body := s.post(t, "register", url.Values{"type": {"fcm"}, "node": {"zz-fcm"}, "token": {"fcm-token"}})
	if !strings.HasPrefix(body, "OK\n") {
		t.Fatalf("register: %q", body)
	}
	fcmSecret := strings.Split(body, "\n")[2]

	out, _, code := cli("registrations", "list")
	if code != 0 {
		t.Fatalf("list: %d", code)
	}
	for _, want := range []string{"api02806ed711aa-e429", "ft-lua-0000-01e94d1c", "zz-fcm", "NODE"} {
		if !strings.Contains(out, want) {
			t.Errorf("list lacks %s:\n%s", want, out)
		}
	}
	for _, secret := range []string{secretE429, secretLua, fcmSecret} {
		if strings.Contains(out, secret) {
			t.Fatalf("list shows a secret without -show-secrets:\n%s", out)
		}
	}
	out, _, _ = cli("registrations", "list", "-show-secrets")
	if !strings.Contains(out, secretE429) || !strings.Contains(out, fcmSecret) {
		t.Fatalf("list -show-secrets:\n%s", out)
	}

	out, _, _ = cli("registrations", "list", "-type", "fcm", "-json")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	var v map[string]any
	if len(lines) != 1 || json.Unmarshal([]byte(lines[0]), &v) != nil || v["node"] != "zz-fcm" || v["token"] != "fcm-token" || v["secret"] != nil {
		t.Fatalf("list -type fcm -json:\n%s", out)
	}
	if out, _, _ := cli("registrations", "count"); strings.TrimSpace(out) != "3" {
		t.Fatalf("count: %q", out)
	}
	if out, _, _ := cli("registrations", "count", "-type", "apns"); strings.TrimSpace(out) != "2" {
		t.Fatalf("count -type apns: %q", out)
	}
	out, _, code = cli("registrations", "show", "ft-lua-0000-01e94d1c")
	if code != 0 || !strings.Contains(out, "2026-11-25T02:14:00Z") || strings.Contains(out, secretLua) || !strings.Contains(out, "hidden") {
		t.Fatalf("show: %d\n%s", code, out)
	}
	if out, _, _ := cli("registrations", "show", "-json", "-show-secrets", "ft-lua-0000-01e94d1c"); !strings.Contains(out, secretLua) {
		t.Fatalf("show -show-secrets:\n%s", out)
	}
	if _, errs, code := cli("registrations", "show", "nonexistent"); code != 1 || !strings.Contains(errs, "no registration") {
		t.Fatalf("show unknown: %d %s", code, errs)
	}

	// Deleting a registration the server has not cached takes effect at
	// once.
	if out, errs, code := cli("registrations", "delete", "ft-lua-0000-01e94d1c"); code != 0 || !strings.Contains(out, "deleted") {
		t.Fatalf("delete: %d %s %s", code, out, errs)
	}
	if body := s.post(t, "push", url.Values{"node": {"ft-lua-0000-01e94d1c"}, "secret": {secretLua}}); !strings.HasPrefix(body, "ERROR") {
		t.Fatalf("push after delete: %q", body)
	}
	if out, _, _ := cli("registrations", "count"); strings.TrimSpace(out) != "2" {
		t.Fatalf("count after delete: %q", out)
	}
	if _, _, code := cli("registrations", "delete", "ft-lua-0000-01e94d1c"); code != 1 {
		t.Fatalf("second delete: exit %d", code)
	}
	if _, _, code := cli("registrations", "frobnicate"); code != 2 {
		t.Fatalf("unknown verb: exit %d", code)
	}
	s.stop(t)
	for _, secret := range []string{secretE429, secretLua, fcmSecret} {
		if strings.Contains(s.log.String(), secret) {
			t.Fatal("a secret is in the server's log")
		}
	}
}

// TestDeleteByAnotherProcess: a registration the running server has
// cached, deleted by the CLI as a process of its own, is refused at once
// (the SQLite store's change feed), not after the cache's minute.
func TestDeleteByAnotherProcess(t *testing.T) {
	bin := buildBinary(t)
	addr := freePort(t)
	cfg := writeConfig(t, fmt.Sprintf("rate_limit = 0\n[http]\nlisten = %q\n[apps.fcm]\nkind = \"log\"\n", addr))
	s := startServer(t, bin, cfg)
	s.waitHealthy(t, addr)
	body := s.post(t, "register", url.Values{"type": {"fcm"}, "node": {"cached"}, "token": {"fcm-token"}})
	if !strings.HasPrefix(body, "OK\n") {
		t.Fatalf("register: %q", body)
	}
	push := url.Values{"node": {"cached"}, "secret": {strings.Split(body, "\n")[2]}}
	for range 2 {
		if body := s.post(t, "push", push); body != "OK\ncached" {
			t.Fatalf("push: %q", body)
		}
	}
	// The first push read the registry, the second found the cache.
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{
		`push_appserver_registration_cache_lookups_total{result="hit"} 1` + "\n",
		`push_appserver_registration_cache_lookups_total{result="miss"} 1` + "\n",
		`push_appserver_registration_cache_entries 1` + "\n",
	} {
		if !strings.Contains(string(metrics), want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	out, err := exec.Command(bin, "registrations", "delete", "-config", cfg, "cached").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "deleted") {
		t.Fatalf("registrations delete: %v\n%s", err, out)
	}
	deleted := time.Now()
	for {
		body := s.post(t, "push", push)
		if body == "ERROR\nNode or secret not found!" {
			t.Logf("refused %v after the delete", time.Since(deleted).Round(time.Millisecond))
			break
		}
		if body != "OK\ncached" {
			t.Fatalf("push after delete: %q", body)
		}
		if time.Since(deleted) > time.Second {
			t.Fatal("a registration deleted by another process is still pushed to a second later")
		}
		time.Sleep(20 * time.Millisecond)
	}
	// The server's own writes still go through the cache as before.
	body = s.post(t, "register", url.Values{"type": {"fcm"}, "node": {"cached"}, "token": {"fcm-token-2"}})
	if !strings.HasPrefix(body, "OK\n") {
		t.Fatalf("register again: %q", body)
	}
	push.Set("secret", strings.Split(body, "\n")[2])
	if body := s.post(t, "push", push); body != "OK\ncached" {
		t.Fatalf("push after registering again: %q", body)
	}
	s.stop(t)
}

// TestMetricsRegistrationsAndExpiry: the registrations gauge counts what
// the registry holds per app, and a certificate 10 days from expiry is
// exported and warned about in the log.
func TestMetricsRegistrationsAndExpiry(t *testing.T) {
	bin := buildBinary(t)
	ports := freePorts(t, 2)
	addr := ports[0]
	cert, key := selfSigned(t, t.TempDir(), time.Now().Add(10*24*time.Hour))
	cfg := writeConfig(t, fmt.Sprintf("[http]\nlisten = %q\ntls_listen = %q\ntls_cert_file = %q\ntls_key_file = %q\n[apps.apns]\nkind = \"log\"\n[apps.fcm]\nkind = \"log\"\n",
		addr, ports[1], cert, key))
	var out, errb bytes.Buffer
	if code := run([]string{"import", "-config", cfg, "mod_push_appserver", realFileStore}, &out, &errb); code != 0 {
		t.Fatalf("import: %s", errb.String())
	}
	s := startServer(t, bin, cfg)
	s.waitHealthy(t, addr)
	// The gauge's first count runs beside the server's start, so it may
	// come a moment after the server answers.
	wants := []string{`push_appserver_registrations{app="apns"} 2`, `push_appserver_registrations{app="fcm"} 0`}
	var metrics string
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		resp, err := http.Get("http://" + addr + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		metrics = string(b)
		if strings.Contains(metrics, "push_appserver_registrations{") || time.Now().After(deadline) {
			break
		}
	}
	for _, want := range wants {
		if !strings.Contains(metrics, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	expiry := func(metrics string) float64 {
		t.Helper()
		m := regexp.MustCompile(`push_appserver_certificate_expiry_seconds\{certificate="http.tls_cert_file"\} (\S+)`).FindStringSubmatch(metrics)
		if m == nil {
			t.Fatalf("no expiry metric:\n%s", metrics)
		}
		secs, _ := strconv.ParseFloat(m[1], 64)
		return secs
	}
	if secs := expiry(metrics); secs < 9*86400 || secs > 10*86400 {
		t.Fatalf("expiry %.0f s, want about 10 days", secs)
	}
	s.waitLog(t, "certificate expires soon")

	// Renewed into another file and reloaded: the metric follows.
	cert2, key2 := selfSigned(t, t.TempDir(), time.Now().Add(90*24*time.Hour))
	text, _ := os.ReadFile(cfg)
	os.WriteFile(cfg, []byte(strings.NewReplacer(cert, cert2, key, key2).Replace(string(text))), 0o600)
	s.cmd.Process.Signal(syscall.SIGHUP)
	s.waitLog(t, "reload: applied")
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if secs := expiry(string(b)); secs < 89*86400 {
		t.Fatalf("expiry %.0f s after the renewed certificate was reloaded, want about 90 days", secs)
	}
	s.stop(t)
}

// A backup made while the server registers holds every registration
// answered before it started, and restored it serves their pushes with
// their secrets. Restore refuses while the server runs, and keeps the
// registry it replaces. With PostgreSQL both commands point at
// PostgreSQL's own tools and write nothing.
func TestBackupAndRestore(t *testing.T) {
	bin := buildBinary(t)
	dir, addr, cfg := minimalConfig(t)
	db := filepath.Join(dir, "data", "registry.db")
	s := startServer(t, bin, cfg)
	s.waitHealthy(t, addr)
	before := map[string]string{} // node: secret
	for i := range 100 {
		node := fmt.Sprintf("before-%d", i)
		lines, err := s.register(node, fmt.Sprintf("%064x", i))
		if err != nil || len(lines) != 3 || lines[0] != "OK" {
			t.Fatalf("register %s: %q, %v", node, lines, err)
		}
		before[node] = lines[2]
	}
	// Registrations go on while the backup is made.
	stop := make(chan struct{})
	wait := clients(4, stop, func(g, i int) bool {
		if _, err := s.register(fmt.Sprintf("during-%d-%d", g, i), "ab"); err != nil {
			t.Error(err)
			return false
		}
		return true
	})
	backup := filepath.Join(t.TempDir(), "backup.db")
	out, err := exec.Command(bin, "backup", "-config", cfg, backup).CombinedOutput()
	close(stop)
	wait()
	if err != nil || !regexp.MustCompile(`^wrote .*backup\.db: [0-9]+ registrations of `+regexp.QuoteMeta(db)+`\n$`).Match(out) {
		t.Fatalf("backup: %v\n%s", err, out)
	}
	// Without the server's configuration: no registry there, and none
	// made to back up.
	elsewhere := t.TempDir()
	cmd := exec.Command(bin, "backup", filepath.Join(elsewhere, "b.db"))
	cmd.Dir = elsewhere
	if out, err := cmd.CombinedOutput(); err == nil || !strings.Contains(string(out), "no registry at") {
		t.Errorf("a backup where no registry is: %v\n%s", err, out)
	}
	if _, err := os.Stat(filepath.Join(elsewhere, "data")); err == nil {
		t.Error("a backup where no registry is made one")
	}
	if out, err := exec.Command(bin, "backup", "-config", cfg, backup).CombinedOutput(); err == nil || !strings.Contains(string(out), "file exists") {
		t.Errorf("a second backup to the same file: %v\n%s", err, out)
	}
	if out, err := exec.Command(bin, "restore", "-config", cfg, backup).CombinedOutput(); err == nil || !strings.Contains(string(out), "is the server running?") {
		t.Errorf("restore while the server runs: %v\n%s", err, out)
	}
	if body := s.post(t, "push", url.Values{"node": {"before-1"}, "secret": {before["before-1"]}}); body != "OK\nbefore-1" {
		t.Fatalf("push after a refused restore: %q", body)
	}
	lines, err := s.register("after-backup", "cd")
	if err != nil || len(lines) != 3 || lines[0] != "OK" {
		t.Fatalf("register after the backup: %q, %v", lines, err)
	}
	afterSecret := lines[2]
	s.stop(t)
	out, err = exec.Command(bin, "registrations", "count", "-config", cfg).Output()
	if err != nil {
		t.Fatal(err)
	}
	registered, err := strconv.Atoi(strings.TrimSpace(string(out)))
	if err != nil {
		t.Fatal(err)
	}

	out, err = exec.Command(bin, "restore", "-config", cfg, backup).CombinedOutput()
	m := regexp.MustCompile(`^restored .*backup\.db: ([0-9]+) registrations, into ` + regexp.QuoteMeta(db) + `\nthe registry it replaced is at (.*)\n$`).FindSubmatch(out)
	if err != nil || m == nil {
		t.Fatalf("restore: %v\n%s", err, out)
	}
	if got, _ := strconv.Atoi(string(m[1])); got < len(before) || got >= registered {
		t.Errorf("restored %d registrations; want the %d made before the backup, and fewer than the %d held at the stop", got, len(before), registered)
	}
	if _, err := os.Stat(string(m[2])); err != nil {
		t.Errorf("the registry replaced is not kept: %v", err)
	}
	s = startServer(t, bin, cfg)
	s.waitHealthy(t, addr)
	for node, secret := range before {
		if body := s.post(t, "push", url.Values{"node": {node}, "secret": {secret}}); body != "OK\n"+node {
			t.Fatalf("push to %s after the restore: %q", node, body)
		}
	}
	if body := s.post(t, "push", url.Values{"node": {"after-backup"}, "secret": {afterSecret}}); !strings.HasPrefix(body, "ERROR\n") {
		t.Errorf("push to a device registered after the backup, after the restore: %q", body)
	}
	s.stop(t)

	t.Setenv("PUSH_APPSERVER_DSN", "postgres://nobody@127.0.0.1:1/none")
	_, pgConfig := postgresConfig(t)
	pgBackup := filepath.Join(t.TempDir(), "pg.db")
	if out, err := exec.Command(bin, "backup", "-config", pgConfig, pgBackup).CombinedOutput(); err == nil || !strings.Contains(string(out), "pg_dump") {
		t.Errorf("backup of a PostgreSQL registry: %v\n%s", err, out)
	}
	if _, err := os.Stat(pgBackup); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("backup of a PostgreSQL registry wrote a file: %v", err)
	}
	if out, err := exec.Command(bin, "restore", "-config", pgConfig, db).CombinedOutput(); err == nil || !strings.Contains(string(out), "pg_restore") {
		t.Errorf("restore of a PostgreSQL registry: %v\n%s", err, out)
	}
}

// TestPruneBesideRunningServer: registrations idle for -idle (here the two
// imported from mod_push_appserver's files, registered on 2026-11-25) are
// counted, and deleted only with -yes; one pushed to since, and one just
// registered, stay. The running server refuses pushes to what was deleted.
func TestPruneBesideRunningServer(t *testing.T) {
	s, cli := importedBesideServer(t)
	if body := s.post(t, "register", url.Values{"type": {"fcm"}, "node": {"fresh"}, "token": {"fcm-token"}}); !strings.HasPrefix(body, "OK\n") {
		t.Fatalf("register: %q", body)
	}
	// A push to one imported registration is a sign of life, once the
	// server has written its outcome.
	if body := s.post(t, "push", url.Values{"node": {"api02806ed711aa-e429"}, "secret": {secretE429}}); body != "OK\napi02806ed711aa-e429" {
		t.Fatalf("push: %q", body)
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		out, _, _ := cli("registrations", "show", "-json", "api02806ed711aa-e429")
		if strings.Contains(out, `"last_successful_push"`) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the push's outcome not written: %s", out)
		}
	}

	for _, idle := range []string{"", "3d", "100h", "soon"} {
		if _, errs, code := cli("registrations", "prune", "-idle", idle); code != 2 || !strings.Contains(errs, "-idle") {
			t.Errorf("prune -idle %q: exit %d, %q; want a usage error", idle, code, errs)
		}
	}
	out, errs, code := cli("registrations", "prune", "-idle", "7d")
	if code != 0 || !strings.HasPrefix(out, "1 registrations idle since ") || !strings.Contains(out, "  apns\t1\n") || !strings.Contains(out, "-yes") {
		t.Fatalf("prune without -yes: %d\n%s\n%s", code, out, errs)
	}
	if out, _, _ := cli("registrations", "count"); strings.TrimSpace(out) != "3" {
		t.Fatalf("count after prune without -yes: %q, want 3: nothing deleted", out)
	}
	out, errs, code = cli("registrations", "prune", "-idle", "7d", "-yes")
	if code != 0 || !strings.HasPrefix(out, "1 registrations deleted, idle since ") || !strings.Contains(out, "  apns\t1\n") {
		t.Fatalf("prune -yes: %d\n%s\n%s", code, out, errs)
	}
	if _, _, code := cli("registrations", "show", "ft-lua-0000-01e94d1c"); code != 1 {
		t.Fatalf("the idle registration is still there")
	}
	if body := s.post(t, "push", url.Values{"node": {"ft-lua-0000-01e94d1c"}, "secret": {secretLua}}); !strings.HasPrefix(body, "ERROR") {
		t.Fatalf("push to a pruned registration: %q", body)
	}
	for _, node := range []string{"api02806ed711aa-e429", "fresh"} {
		if _, _, code := cli("registrations", "show", node); code != 0 {
			t.Errorf("%s pruned though it was not idle", node)
		}
	}
	if out, _, _ := cli("registrations", "prune", "-idle", "7d", "-yes"); !strings.HasPrefix(out, "0 registrations deleted") {
		t.Errorf("a second prune: %q", out)
	}
	s.stop(t)
}

// TestRegistryCommandsWithoutComponentSecret: the shipped configuration
// reads the component secret from the service's environment file, which
// an operator's shell does not load. The commands that work on the
// registry alone do not need it; serve and check-config still do.
func TestRegistryCommandsWithoutComponentSecret(t *testing.T) {
	dir := t.TempDir()
	cfg := writeConfig(t, "[[component]]\njid = \"push.example.org\"\nsecret = \"env:PUSH_APPSERVER_TEST_SECRET_NOT_SET\"\n")
	cli := func(args ...string) (string, int) {
		var out, errb bytes.Buffer
		code := run(append([]string{args[0], "-config", cfg}, args[1:]...), &out, &errb)
		return out.String() + errb.String(), code
	}
	backup := filepath.Join(dir, "backup.db")
	for _, args := range [][]string{
		{"import", "mod_push_appserver", realFileStore},
		{"registrations", "count"},
		{"registrations", "list"},
		{"backup", backup},
		{"restore", backup},
	} {
		if out, code := cli(args...); code != 0 {
			t.Errorf("%s: exit %d\n%s", strings.Join(args, " "), code, out)
		}
	}
	if out, code := cli("check-config"); code == 0 || !strings.Contains(out, "PUSH_APPSERVER_TEST_SECRET_NOT_SET") {
		t.Errorf("check-config without the component secret: exit %d\n%s", code, out)
	}
}

// The registrations commands on a configuration whose registry does not
// exist (a -config that is not the server's, a mistyped data_dir) must
// say so, as backup does, not report an empty registry made on the spot.
func TestRegistrationsCommandsWithoutRegistry(t *testing.T) {
	cfg := writeConfig(t, "")
	dbPath := filepath.Join(filepath.Dir(cfg), "data", "registry.db")
	for _, args := range [][]string{{"registrations", "count"}, {"registrations", "list"}} {
		var out, errb bytes.Buffer
		code := run(append(args[:1:1], append([]string{"-config", cfg}, args[1:]...)...), &out, &errb)
		_, statErr := os.Stat(dbPath)
		if code == 0 || statErr == nil {
			t.Errorf("%v without a registry: exit %d, stdout %q, stderr %q; registry created: %v", args, code, out.String(), errb.String(), statErr == nil)
		}
	}
}

// TestPruneRefusesEveryRegistration: a prune that would delete every
// registration of the registry (here the two imported from
// mod_push_appserver's files, idle since 2026-11-25) deletes none
// unless -all says so too: in a service in use some device is active
// within days, and a registry idle to the last registration rather says
// this host's clock runs ahead, which no deletion should follow.
func TestPruneRefusesEveryRegistration(t *testing.T) {
	s, cli := importedBesideServer(t)
	out, errs, code := cli("registrations", "prune", "-idle", "7d", "-yes")
	if code != 1 || !strings.Contains(errs, "every registration of the registry (2) is idle") || !strings.Contains(errs, "clock") || !strings.Contains(errs, "-all") {
		t.Fatalf("prune -yes of every registration: exit %d\n%s\n%s\nwant a refusal naming the clock and -all", code, out, errs)
	}
	if out, _, _ := cli("registrations", "count"); strings.TrimSpace(out) != "2" {
		t.Fatalf("count after the refused prune: %q, want 2: nothing deleted", out)
	}
	out, errs, code = cli("registrations", "prune", "-idle", "7d", "-yes", "-all")
	if code != 0 || !strings.HasPrefix(out, "2 registrations deleted, idle since ") {
		t.Fatalf("prune -yes -all: exit %d\n%s\n%s", code, out, errs)
	}
	s.stop(t)
}

// registrations list and count -domain find an account's domain however
// the operator writes it, as JIDs compare it (RFC 7622 §3.2): the
// registry holds the domain as the commands normalised the account, in
// lower case and an IDN as its U-label, and an operator copies a domain
// from a log, a DNS record or a user's report in any case, with a final
// dot or as its xn-- form. A count of 0 for a domain with registrations
// says the domain has none.
func TestRegistrationsDomainFilterAsJIDsCompare(t *testing.T) {
	cfg := writeConfig(t, "[apps.apns]\nkind = \"log\"\n")
	dir := filepath.Join(filepath.Dir(cfg), "data")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	store, err := sqlite.Open(t.Context(), filepath.Join(dir, "registry.db"))
	if err != nil {
		t.Fatal(err)
	}
	for i, domain := range []string{"bücher.example", "bücher.example", "example.org"} {
		r := registry.Registration{Node: fmt.Sprint("n", i), Type: "apns", Token: fmt.Sprint("t", i), Secret: "s", Domain: domain, Registered: time.Now().UTC()}
		if _, err := store.Register(t.Context(), r.Node, func(registry.Registration, bool) (registry.Registration, error) { return r, nil }); err != nil {
			t.Fatal(err)
		}
	}
	store.Close()
	for _, domain := range []string{"bücher.example", "Bücher.Example", "xn--bcher-kva.example", "XN--BCHER-KVA.EXAMPLE.", "bücher.example."} {
		var out, errb bytes.Buffer
		if code := run([]string{"registrations", "-config", cfg, "-domain", domain, "count"}, &out, &errb); code != 0 || strings.TrimSpace(out.String()) != "2" {
			t.Errorf("registrations count -domain %s: exit %d, %q %q; want 2", domain, code, out.String(), errb.String())
		}
		out.Reset()
		if code := run([]string{"registrations", "-config", cfg, "-domain", domain, "list"}, &out, &errb); code != 0 || !strings.Contains(out.String(), "\nn0 ") || !strings.Contains(out.String(), "\nn1 ") || strings.Contains(out.String(), "\nn2 ") {
			t.Errorf("registrations list -domain %s: exit %d, %q %q; want n0 and n1", domain, code, out.String(), errb.String())
		}
	}
}
