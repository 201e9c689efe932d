package main

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/push-appserver/push-appserver/internal/logging"
)

// TestServeExposure runs the real binary with metrics_listen: /metrics is
// served there and not on the API's port, the debug pages are refused,
// and the data directory and registry it creates are the server's alone.
func TestServeExposure(t *testing.T) {
	bin := buildBinary(t)
	dir := t.TempDir()
	data := filepath.Join(dir, "new", "data")
	ports := freePorts(t, 2)
	api, metricsAddr := ports[0], ports[1]
	cfg := filepath.Join(dir, "c.toml")
	os.WriteFile(cfg, []byte("data_dir = \""+data+"\"\nmetrics_listen = \""+metricsAddr+"\"\n[http]\nlisten = \""+api+"\"\n"), 0o600)
	s := startServer(t, bin, cfg)
	s.waitHealthy(t, api)

	get := func(url string) (int, string) {
		t.Helper()
		resp, err := http.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, _ := get("http://" + api + "/metrics"); code != 404 {
		t.Errorf("/metrics on the API port: %d, want 404", code)
	}
	code, body := get("http://" + metricsAddr + "/metrics")
	// The server's own gauges and counters are there from the start, at
	// the values of a server that serves and has dropped no log line.
	for _, m := range []string{"go_goroutines", "process_open_fds", "process_resident_memory_bytes",
		"\npush_appserver_log_lines_dropped_total 0\n", "\npush_appserver_starting 0\n",
		"\npush_appserver_config_last_reload_successful 1\n", "\npush_appserver_registration_cache_bypassed 0\n"} {
		if code != 200 || !strings.Contains(body, m) {
			t.Errorf("/metrics on metrics_listen: %d, no %s", code, m)
		}
	}
	if code, _ := get("http://" + metricsAddr + "/push_appserver/v1/health"); code != 404 {
		t.Errorf("the metrics listener serves the API: %d", code)
	}
	// Without debugging, the pages that show registrations and their
	// secrets, and the forms, are refused.
	for _, page := range []string{"settings", "settings/n1", "register", "push"} {
		if code, body := get("http://" + api + "/push_appserver/v1/" + page); code != 403 || body != "ERROR\nDebugging is disabled" {
			t.Errorf("%s without debugging: %d %q, want 403", page, code, body)
		}
	}

	// Above debug, the log names nodes only by their ref and never shows a
	// token or secret.
	body = s.post(t, "register", url.Values{"type": {"apns"}, "node": {"secret-node-7"}, "token": {"feedface"}})
	secret := strings.Split(body, "\n")[2]
	if body := s.post(t, "push", url.Values{"node": {"secret-node-7"}, "secret": {secret}}); body != "OK\nsecret-node-7" {
		t.Fatalf("push: %q", body)
	}
	s.post(t, "unregister", url.Values{"type": {"apns"}, "node": {"secret-node-7"}})
	for path, want := range map[string]os.FileMode{data: 0o700, filepath.Join(data, "registry.db"): 0o600} {
		st, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != want {
			t.Errorf("%s has mode %v, want %v", path, st.Mode().Perm(), want)
		}
	}
	// After the process ended, its whole log has been read.
	s.stop(t)
	log := s.log.String()
	for _, leak := range []string{"secret-node-7", "feedface", secret} {
		if strings.Contains(log, leak) {
			t.Errorf("the info-level log shows %q:\n%s", leak, log)
		}
	}
	if n := strings.Count(log, "node_ref="+logging.Ref("secret-node-7")); n < 3 {
		t.Errorf("node_ref appears %d times, want register, push and unregister:\n%s", n, log)
	}
}

// pprof on a non-loopback address is refused, from the config file and
// from the -pprof flag, unless pprof_allow_remote is set.
func TestPprofRemoteRefused(t *testing.T) {
	dir := t.TempDir()
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	// The API's port is taken: were the pprof check missing, serve would
	// fail on that instead, never serving anything.
	base := "data_dir = \"" + filepath.Join(dir, "data") + "\"\n"
	api := "[http]\nlisten = \"" + busy.Addr().String() + "\"\n"
	for _, tt := range []struct {
		name, config string
		args         []string
		want         string
	}{
		{"config", base + "pprof_listen = \"0.0.0.0:0\"\n" + api, nil, "pprof_listen"},
		{"config, all interfaces", base + "pprof_listen = \":0\"\n" + api, nil, "pprof_listen"},
		{"flag", base + api, []string{"-pprof", "192.0.2.1:0"}, "not a loopback address"},
		{"allowed remote", base + "pprof_allow_remote = true\npprof_listen = \"0.0.0.0:0\"\n" + api, nil, "listening on " + busy.Addr().String()},
		{"loopback", base + "pprof_listen = \"127.0.0.1:0\"\n" + api, nil, "listening on " + busy.Addr().String()},
	} {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(dir, "c.toml")
			os.WriteFile(path, []byte(tt.config), 0o600)
			var out, errb bytes.Buffer
			if code := run(append([]string{"serve", "-config", path}, tt.args...), &out, &errb); code != 1 {
				t.Fatalf("exit %d", code)
			}
			if !strings.Contains(errb.String(), tt.want) {
				t.Fatalf("stderr does not say %q:\n%s", tt.want, errb.String())
			}
		})
	}
}

// TestRegisterLimitFromConfig runs the binary with http.register_limit:
// a client named by the local proxy gets 429 past it; the proxy's own
// requests, which name no client, do not.
func TestRegisterLimitFromConfig(t *testing.T) {
	bin := buildBinary(t)
	dir := t.TempDir()
	api := freePort(t)
	cfg := filepath.Join(dir, "c.toml")
	// ::/0 trusts every IPv6 address (warned of at start), not the
	// IPv4 clients below.
	os.WriteFile(cfg, []byte("data_dir = \""+filepath.Join(dir, "data")+"\"\n[http]\nlisten = \""+api+"\"\nregister_limit = 2\ntrusted_proxies = [\"127.0.0.0/8\", \"::/0\"]\n"), 0o600)
	s := startServer(t, bin, cfg)
	s.waitHealthy(t, api)

	register := func(client, node string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest("POST", s.base+"register", strings.NewReader(url.Values{"type": {"apns"}, "node": {node}, "token": {"feedface"}}.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		if client != "" {
			req.Header.Set("X-Forwarded-For", client)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	for _, node := range []string{"n1", "n2"} {
		if code, body := register("198.51.100.7", node); code != 200 {
			t.Fatalf("register %s: %d %q", node, code, body)
		}
	}
	if code, body := register("198.51.100.7", "n3"); code != http.StatusTooManyRequests || body != "ERROR\nRate limit exceeded, try again later!" {
		t.Fatalf("third registration in a minute: %d %q", code, body)
	}
	for _, node := range []string{"n4", "n5", "n6"} {
		if code, body := register("", node); code != 200 {
			t.Fatalf("register %s naming no client: %d %q", node, code, body)
		}
	}
	if v := metric(t, api, `push_appserver_http_limited_total{endpoint="register"}`); v != 1 {
		t.Errorf("push_appserver_http_limited_total = %v, want 1", v)
	}
	// Log lines come through the server's log queue and stderr, which
	// may be behind its answers.
	s.waitLog(t, "level=WARN msg=\"configuration: http.trusted_proxies: ::/0 trusts every address")
	s.waitLog(t, "named no client")
}

// TestConnectionsPerClientFromConfig runs the binary with
// http.max_connections_per_client: past it, a client's connection to the
// TLS listener is closed at once, while loopback on the plain one is
// still served; the refusal is counted and the client named in the log.
func TestConnectionsPerClientFromConfig(t *testing.T) {
	bin := buildBinary(t)
	dir := t.TempDir()
	api := freePort(t)
	// Connected to this machine's other address, the server sees it as
	// the client, not loopback.
	l, err := net.Listen("tcp", net.JoinHostPort(nonLoopbackIPv4(t), "0"))
	if err != nil {
		t.Fatal(err)
	}
	external := l.Addr().String()
	l.Close()
	certFile, keyFile := selfSigned(t, dir, time.Now().Add(time.Hour))
	cfg := filepath.Join(dir, "c.toml")
	// That address is likely a private one, which the default list
	// trusts as a proxy and so exempts.
	os.WriteFile(cfg, []byte(fmt.Sprintf("data_dir = %q\n[http]\nlisten = %q\ntls_listen = %q\ntls_cert_file = %q\ntls_key_file = %q\nmax_connections_per_client = 2\ntrusted_proxies = []\n",
		filepath.Join(dir, "data"), api, external, certFile, keyFile)), 0o600)
	s := startServer(t, bin, cfg)
	s.waitHealthy(t, api)

	// hold opens a connection and has a request answered on it, after
	// which the server keeps it for its idle timeout.
	hold := func() error {
		c, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", external, &tls.Config{InsecureSkipVerify: true})
		if err != nil {
			return err
		}
		t.Cleanup(func() { c.Close() })
		c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.WriteString(c, "GET /push_appserver/v1/health HTTP/1.1\r\nHost: push.example.org\r\n\r\n"); err != nil {
			return err
		}
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			return err
		}
		resp.Body.Close()
		return nil
	}
	for i := range 2 {
		if err := hold(); err != nil {
			t.Fatalf("connection %d: %v", i+1, err)
		}
	}
	if err := hold(); err == nil {
		t.Fatal("a third connection of the client was served")
	}
	if lines, err := s.register("n1", "feedface"); err != nil || lines[0] != "OK" {
		t.Fatalf("a registration from loopback while the client is at its cap: %v %v", lines, err)
	}
	// The server closes a refused connection before it counts and logs
	// the refusal: the client may hear of it first.
	const refusedPerClient = `push_appserver_http_connections_refused_total{limit="per_client"}`
	for deadline := time.Now().Add(10 * time.Second); metric(t, api, refusedPerClient) < 1; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			break
		}
	}
	if v := metric(t, api, refusedPerClient); v != 1 {
		t.Errorf("connections refused per client: %v, want 1", v)
	}
	if v := metric(t, api, `push_appserver_http_connections_refused_total{limit="descriptors"}`); v != 0 {
		t.Errorf("connections refused for the descriptors: %v, want 0", v)
	}
	host, _, _ := net.SplitHostPort(external)
	s.waitLog(t, "connection refused: its client holds http.max_connections_per_client already\" client="+host+" max=2")
}

// The pprof listener bounds what a client may keep open: a request's
// reading, and an idle connection.
func TestPprofListenerTimeouts(t *testing.T) {
	srv, err := startPprof("127.0.0.1:0", func(addr string) (net.Listener, error) { return net.Listen("tcp", addr) }, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	if srv.ReadHeaderTimeout <= 0 || srv.ReadTimeout <= 0 || srv.IdleTimeout <= 0 {
		t.Fatalf("pprof server timeouts: header %v, read %v, idle %v", srv.ReadHeaderTimeout, srv.ReadTimeout, srv.IdleTimeout)
	}
}
