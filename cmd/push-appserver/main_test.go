package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"database/sql"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/push-appserver/push-appserver/internal/registry"
	"github.com/push-appserver/push-appserver/internal/registry/sqlite"
	"github.com/push-appserver/push-appserver/internal/testutil/daemon"
	"github.com/push-appserver/push-appserver/internal/testutil/logbuf"
)

// built is the binary the tests of this package share: compiled once, on
// first use, and removed by TestMain.
var built struct {
	once sync.Once
	dir  string
	path string
	err  error
}

// buildBinary compiles the real command once per test binary run.
func buildBinary(t *testing.T) string {
	t.Helper()
	built.once.Do(func() {
		if built.dir, built.err = os.MkdirTemp("", "push-appserver-test-"); built.err != nil {
			return
		}
		built.path = filepath.Join(built.dir, "push-appserver")
		cmd := exec.Command("go", "build", "-o", built.path, ".")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			built.err = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if built.err != nil {
		t.Fatal(built.err)
	}
	return built.path
}

func freePort(t *testing.T) string {
	t.Helper()
	return daemon.FreeAddr(t)
}

// freePorts returns n different loopback addresses free a moment ago,
// below the kernel's range for outgoing connections (daemon.FreeAddrs):
// one from that range, released while the server starts, can be taken by
// a connection the machine makes meanwhile.
func freePorts(t *testing.T, n int) []string {
	t.Helper()
	return daemon.FreeAddrs(t, n)
}

// addAbsentComponent adds to config the component push.example.org, whose
// XMPP server is not there: nothing listens at its address.
func addAbsentComponent(t *testing.T, config string) {
	t.Helper()
	f, err := os.OpenFile(config, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := fmt.Fprintf(f, "[[component]]\njid = \"push.example.org\"\naddress = %q\nsecret = \"s3cret\"\n", freePort(t)); err != nil {
		t.Fatal(err)
	}
}

// minimalConfig writes a configuration with the embedded defaults but
// for a data directory of its own and the HTTP API at a free loopback
// address, and returns the directory, the address and the file.
func minimalConfig(t *testing.T) (dir, addr, config string) {
	t.Helper()
	dir = t.TempDir()
	addr = freePort(t)
	config = filepath.Join(dir, "push-appserver.toml")
	if err := os.WriteFile(config, []byte(fmt.Sprintf("data_dir = %q\n[http]\nlisten = %q\n", filepath.Join(dir, "data"), addr)), 0o600); err != nil {
		t.Fatal(err)
	}
	return dir, addr, config
}

type server struct {
	cmd     *exec.Cmd
	log     *logbuf.Buffer
	base    string
	metrics string // the address of /metrics, where startWithApps serves it
}

func startServer(t *testing.T, bin, config string) *server {
	t.Helper()
	return startServerEnv(t, bin, config)
}

// startServerEnv is startServer with env added to the server's
// environment.
func startServerEnv(t *testing.T, bin, config string, env ...string) *server {
	t.Helper()
	cmd := exec.Command(bin, "serve", "-config", config)
	cmd.Env = append(os.Environ(), env...)
	return startCommand(t, cmd)
}

// startCommand starts cmd, a server's, with its output in the server's
// log, which a failed test shows; the server is killed when the test
// ends, unless it ended already.
func startCommand(t *testing.T, cmd *exec.Cmd) *server {
	t.Helper()
	s := &server{log: &logbuf.Buffer{}, cmd: cmd}
	s.cmd.Stdout = s.log
	s.cmd.Stderr = s.log
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if s.cmd.ProcessState == nil {
			s.cmd.Process.Kill()
			s.cmd.Wait()
		}
		if t.Failed() {
			t.Logf("server log:\n%s", s.log.String())
		}
	})
	return s
}

// startWithApps starts the binary on a configuration of its own: a data
// directory, no rate limit, the HTTP API and the metrics on free
// addresses and apps, the TOML tables of its apps; env is added to its
// environment. It returns once the API answers.
func startWithApps(t *testing.T, apps string, env ...string) *server {
	t.Helper()
	dir := t.TempDir()
	addrs := freePorts(t, 2)
	config := filepath.Join(dir, "c.toml")
	text := fmt.Sprintf("data_dir = %q\nrate_limit = 0\nmetrics_listen = %q\n[http]\nlisten = %q\n%s", filepath.Join(dir, "data"), addrs[1], addrs[0], apps)
	if err := os.WriteFile(config, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	s := startServerEnv(t, buildBinary(t), config, env...)
	s.metrics = addrs[1]
	s.waitHealthy(t, addrs[0])
	return s
}

// registerTo registers node for app with token over HTTP and returns its
// secret.
func (s *server) registerTo(t *testing.T, app, node, token string) string {
	t.Helper()
	reg := strings.Split(s.post(t, "register", url.Values{"type": {app}, "node": {node}, "token": {token}}), "\n")
	if reg[0] != "OK" || len(reg) != 3 {
		t.Fatalf("register: %q", reg)
	}
	return reg[2]
}

func (s *server) waitHealthy(t *testing.T, addr string) {
	t.Helper()
	s.base = "http://" + addr + "/push_appserver/v1/"
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := http.Get(s.base + "health")
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if strings.Contains(string(b), "RUNNING") {
				return
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("server did not become healthy")
}

func (s *server) post(t *testing.T, path string, form url.Values) string {
	t.Helper()
	resp, err := http.PostForm(s.base+path, form)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// register registers node for APNS with token and returns the lines of
// the answer. The error is the request's: the server is gone.
func (s *server) register(node, token string) ([]string, error) {
	resp, err := http.PostForm(s.base+"register", url.Values{"type": {"apns"}, "node": {node}, "token": {token}})
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	return strings.Split(string(b), "\n"), nil
}

// scrape returns the /metrics of the server listening at addr.
func scrape(t *testing.T, addr string) string {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(body)
}

// metric returns the value of the sample line that starts with series in
// the /metrics of the server listening at addr, or -1 when there is none.
func metric(t *testing.T, addr, series string) float64 {
	t.Helper()
	for line := range strings.Lines(scrape(t, addr)) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), series+" "); ok {
			var f float64
			if _, err := fmt.Sscan(v, &f); err != nil {
				t.Fatalf("metric %s: %q", series, line)
			}
			return f
		}
	}
	return -1
}

func (s *server) stop(t *testing.T) {
	t.Helper()
	s.stopWith(t, os.Interrupt)
}

// stopWith sends sig and waits for the server to exit cleanly.
func (s *server) stopWith(t *testing.T, sig os.Signal) {
	t.Helper()
	s.cmd.Process.Signal(sig)
	done := make(chan error, 1)
	go func() { done <- s.cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("server exited with %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("server did not stop on %v", sig)
	}
}

// TestServeSmoke runs the real binary: register, push through the log
// backend, restart, and find the registration still there.
func TestServeSmoke(t *testing.T) {
	bin := buildBinary(t)
	dir, addr, config := minimalConfig(t)

	s := startServer(t, bin, config)
	s.waitHealthy(t, addr)
	body := s.post(t, "register", url.Values{"type": {"apns"}, "node": {"n1"}, "token": {"ab12"}})
	if !regexp.MustCompile(`^OK\nn1\n[0-9a-f]{64}$`).MatchString(body) {
		t.Fatalf("register: %q", body)
	}
	secret := strings.Split(body, "\n")[2]
	if body := s.post(t, "push", url.Values{"node": {"n1"}, "secret": {secret}}); body != "OK\nn1" {
		t.Fatalf("push: %q", body)
	}
	if body := s.post(t, "push", url.Values{"node": {"n1"}, "secret": {"wrong"}}); !strings.HasPrefix(body, "ERROR\n") {
		t.Fatalf("push with wrong secret: %q", body)
	}
	if body := s.get(t, "health"); body != "RUNNING\nregistry: up\n" {
		t.Fatalf("health: %q", body)
	}
	if !regexp.MustCompile(`(?m)^push_appserver_build_info\{commit="[^"]+",goversion="go[^"]+",version="[^"]+"\} 1$`).MatchString(scrape(t, addr)) {
		t.Fatal("/metrics has no push_appserver_build_info naming the build")
	}
	s.stop(t)
	if !strings.Contains(s.log.String(), "push (log backend, not delivered)") {
		t.Fatalf("log does not show the push:\n%s", s.log.String())
	}
	if strings.Contains(s.log.String(), secret) {
		t.Fatal("the secret appears in the info-level log")
	}

	s2 := startServer(t, bin, config)
	s2.waitHealthy(t, addr)
	// Registering again answers with the secret kept across the restart.
	if body := s2.post(t, "register", url.Values{"type": {"apns"}, "node": {"n1"}, "token": {"ab12"}}); body != "OK\nn1\n"+secret {
		t.Fatalf("after restart: %q", body)
	}
	if body := s2.post(t, "push", url.Values{"node": {"n1"}, "secret": {secret}}); body != "OK\nn1" {
		t.Fatalf("push after restart: %q", body)
	}
	pushed := time.Now().UTC().Truncate(time.Second)
	s2.stop(t)
	// The push status is written behind; what the core still held was
	// written on the way out: the registry, read after the process ended,
	// has the second push.
	store, err := sqlite.Open(t.Context(), filepath.Join(dir, "data", "registry.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	r, err := store.Get(t.Context(), "n1")
	if err != nil {
		t.Fatal(err)
	}
	if r.LastSuccessfulPush.Before(pushed.Add(-time.Second)) {
		t.Fatalf("last successful push %v, want the push at %v written before the process ended", r.LastSuccessfulPush, pushed)
	}
}

// clients runs n goroutines, the load of n clients: each calls step(g, i)
// for i = 0, 1, ... until step returns false or stop is closed (a nil stop
// never is). The returned wait returns once all of them have stopped.
func clients(n int, stop <-chan struct{}, step func(g, i int) bool) (wait func()) {
	var wg sync.WaitGroup
	for g := range n {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				if !step(g, i) {
					return
				}
			}
		})
	}
	return wg.Wait
}

// Registrations answered OK survive the process being killed while
// others are under way, batched into commits: the answer comes only
// once the registration's commit is on disk.
func TestRegistrationsSurviveKill(t *testing.T) {
	bin := buildBinary(t)
	dir, addr, config := minimalConfig(t)

	answered := map[string]string{} // node: secret
	var mu sync.Mutex
	for round := range 5 {
		s := startServer(t, bin, config)
		s.waitHealthy(t, addr)
		start := time.Now()
		wait := clients(16, nil, func(g, i int) bool {
			node := fmt.Sprintf("r%d-g%d-%d", round, g, i)
			lines, err := s.register(node, fmt.Sprintf("%064x", i<<8|g))
			if err != nil {
				return false // killed
			}
			if len(lines) != 3 || lines[0] != "OK" {
				t.Errorf("register %s: %q", node, lines)
				return false
			}
			mu.Lock()
			answered[node] = lines[2]
			mu.Unlock()
			return true
		})
		time.Sleep(500 * time.Millisecond)
		s.cmd.Process.Kill()
		s.cmd.Wait()
		wait()
		t.Logf("round %d: killed after %v, %d registrations answered so far", round, time.Since(start).Round(time.Millisecond), len(answered))
	}
	registryHolds(t, filepath.Join(dir, "data", "registry.db"), answered)
}

// answeredKept fails t unless every registration in answered (node:
// secret), each answered OK, is in store with its secret.
func answeredKept(t *testing.T, store interface {
	Get(context.Context, string) (registry.Registration, error)
}, answered map[string]string) {
	t.Helper()
	lost := 0
	for node, secret := range answered {
		if r, err := store.Get(t.Context(), node); err != nil || r.Secret != secret {
			if lost++; lost <= 5 {
				t.Errorf("registration %s answered OK, then: %v", node, err)
			}
		}
	}
	if lost > 0 {
		t.Fatalf("%d of %d registrations answered OK were lost", lost, len(answered))
	}
}

// registryHolds fails t unless every registration in answered (node:
// secret), each answered OK, is in the registry at db with its secret,
// and the file passes SQLite's integrity check. It returns how many
// registrations the registry holds. The server must have stopped.
func registryHolds(t *testing.T, db string, answered map[string]string) int {
	t.Helper()
	store, err := sqlite.Open(t.Context(), db)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	answeredKept(t, store, answered)
	check, err := sql.Open("sqlite", "file:"+db+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	defer check.Close()
	var ok string
	if err := check.QueryRow(`PRAGMA integrity_check`).Scan(&ok); err != nil || ok != "ok" {
		t.Fatalf("integrity_check: %q (%v)", ok, err)
	}
	var n int
	if err := check.QueryRow(`SELECT COUNT(*) FROM registrations`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestCheckConfig(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.toml")
	os.WriteFile(bad, []byte("rate_limit = \"soon\"\n[apps.ios]\nkind = \"apns\"\n"), 0o600)
	var out, errb bytes.Buffer
	if code := run([]string{"check-config", "-config", bad}, &out, &errb); code == 0 {
		t.Fatal("broken config accepted")
	}
	if !strings.Contains(errb.String(), "rate_limit") {
		t.Fatalf("error does not name the key:\n%s", errb.String())
	}

	good := filepath.Join(dir, "good.toml")
	os.WriteFile(good, []byte("push_appserver_apns_feedback_request_interval = 3600\n"), 0o600)
	out.Reset()
	errb.Reset()
	if code := run([]string{"check-config", "-config", good}, &out, &errb); code != 0 {
		t.Fatalf("good config rejected: %s", errb.String())
	}
	if !strings.Contains(out.String(), "push_appserver_apns_feedback_request_interval is obsolete") {
		t.Fatalf("obsolete option not reported:\n%s", out.String())
	}

	out.Reset()
	if code := run([]string{"version"}, &out, &errb); code != 0 || !strings.HasPrefix(out.String(), "push-appserver ") {
		t.Fatalf("version: %d %q", code, out.String())
	}
	if code := run([]string{"frobnicate"}, &out, &errb); code != 2 {
		t.Fatalf("unknown command exit %d", code)
	}
}

func TestServeFailsOnBadConfig(t *testing.T) {
	var out, errb bytes.Buffer
	path := filepath.Join(t.TempDir(), "c.toml")
	os.WriteFile(path, []byte("[http]\nlisten = \"nonsense\"\n"), 0o600)
	if code := run([]string{"serve", "-config", path}, &out, &errb); code != 1 {
		t.Fatalf("exit %d", code)
	}
	sc := bufio.NewScanner(strings.NewReader(errb.String()))
	found := false
	for sc.Scan() {
		found = found || strings.Contains(sc.Text(), "http.listen")
	}
	if !found {
		t.Fatalf("stderr does not name http.listen:\n%s", errb.String())
	}
}

// TestServeTLS checks the seed's HTTPS listener (":5281" there) and the
// plain one switched off.
func TestServeTLS(t *testing.T) {
	bin := buildBinary(t)
	dir := t.TempDir()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), DNSNames: []string{"localhost"}, IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, _ := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	kder, _ := x509.MarshalECPrivateKey(key)
	os.WriteFile(filepath.Join(dir, "tls.crt"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(filepath.Join(dir, "tls.key"), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600)
	addr := freePort(t)
	config := filepath.Join(dir, "c.toml")
	os.WriteFile(config, []byte(fmt.Sprintf("data_dir = %q\n[http]\nlisten = \"\"\ntls_listen = %q\ntls_cert_file = \"tls.crt\"\ntls_key_file = \"tls.key\"\n",
		filepath.Join(dir, "data"), addr)), 0o600)
	s := startServer(t, bin, config)
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	deadline := time.Now().Add(15 * time.Second)
	for {
		resp, err := client.Get("https://" + addr + "/push_appserver/v1/health")
		var b []byte
		if err == nil {
			b, _ = io.ReadAll(resp.Body)
			resp.Body.Close()
			// The listener answers STARTING until the registry is open.
			if strings.HasPrefix(string(b), "RUNNING") {
				break
			}
			if !strings.HasPrefix(string(b), "STARTING") {
				t.Fatalf("health over TLS: %q", b)
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no TLS listener: %v, %q", err, b)
		}
		time.Sleep(50 * time.Millisecond)
	}
	s.stop(t)
	if strings.Contains(s.log.String(), "127.0.0.1:5280") {
		t.Fatal("plain listener started although disabled")
	}
}

// With log_format = "json", the line that says why the server could not
// start or stopped is JSON too, like every other: a container's log
// collector parses each line, and the one that explains a restart loop
// was the only plain-text line, without time or level.
func TestServeFailureLoggedAsJSON(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	dir := t.TempDir()
	path := filepath.Join(dir, "c.toml")
	text := fmt.Sprintf("data_dir = %q\nlog_format = \"json\"\n[http]\nlisten = %q\n", filepath.Join(dir, "data"), taken.Addr().String())
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	var out, errb bytes.Buffer
	if code := run([]string{"serve", "-config", path}, &out, &errb); code != 1 {
		t.Fatalf("exit %d with the port taken\n%s", code, errb.String())
	}
	named := false
	for _, line := range strings.Split(strings.TrimSpace(errb.String()), "\n") {
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil || rec["time"] == nil || rec["level"] == nil {
			t.Fatalf("a line of the log is no JSON record with time and level: %q\n%s", line, errb.String())
		}
		named = named || rec["level"] == "ERROR" && strings.Contains(line, taken.Addr().String())
	}
	if !named {
		t.Fatalf("no error names the address taken:\n%s", errb.String())
	}
}
