package main

import (
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/push-appserver/push-appserver/internal/testutil/daemon"
)

// nonLoopbackIPv4 returns an IPv4 address of this machine that is not a
// loopback one, from which a connection is seen as coming from outside.
func nonLoopbackIPv4(t *testing.T) string {
	t.Helper()
	ifaces, err := net.Interfaces()
	if err != nil {
		t.Fatal(err)
	}
	for _, ifc := range ifaces {
		// A down interface's addresses are not routed, even locally.
		if ifc.Flags&net.FlagUp == 0 || ifc.Flags&net.FlagLoopback != 0 {
			continue
		}
		addrs, err := ifc.Addrs()
		if err != nil {
			continue
		}
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil && !n.IP.IsLoopback() {
				return n.IP.String()
			}
		}
	}
	t.Fatal("this machine has no IPv4 address on an interface that is up, but loopback ones: the proxy test needs one to connect from")
	return ""
}

// startNginx runs nginx with deploy/nginx's example, its listener, its
// upstream and its certificate put in place of the example's, and
// returns the HTTPS address it serves.
func startNginx(t *testing.T, upstream string) string {
	t.Helper()
	bin, err := exec.LookPath("nginx")
	if err != nil {
		if bin, err = exec.LookPath("/usr/sbin/nginx"); err != nil {
			t.Fatal("nginx is missing: run scripts/test-deps.sh")
		}
	}
	example, err := os.ReadFile("../../deploy/nginx/push-appserver.conf")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cert, key := selfSigned(t, dir, time.Now().Add(24*time.Hour))
	port := daemon.Port(daemon.FreeAddr(t))
	site := strings.NewReplacer(
		"listen 443 ssl http2;", "listen "+port+" ssl http2;",
		"listen [::]:443 ssl http2;", "",
		"server 127.0.0.1:5280 max_fails=0;", "server "+strings.ReplaceAll(upstream, ";\n", " max_fails=0;\n")+" max_fails=0;",
		"/etc/letsencrypt/live/push.example.org/fullchain.pem", cert,
		"/etc/letsencrypt/live/push.example.org/privkey.pem", key,
	).Replace(string(example))
	if !strings.Contains(site, strings.SplitN(upstream, ";", 2)[0]+" max_fails=0;") || !strings.Contains(site, cert) || !strings.Contains(site, "listen "+port) {
		t.Fatalf("the example no longer has the lines the test replaces:\n%s", site)
	}
	os.WriteFile(filepath.Join(dir, "site.conf"), []byte(site), 0o644)
	conf := fmt.Sprintf(`pid %[1]s/nginx.pid;
error_log %[1]s/error.log;
events {}
http {
    access_log off;
    client_body_temp_path %[1]s/body;
    proxy_temp_path %[1]s/proxy;
    fastcgi_temp_path %[1]s/fastcgi;
    uwsgi_temp_path %[1]s/uwsgi;
    scgi_temp_path %[1]s/scgi;
    include %[1]s/site.conf;
}
`, dir)
	os.WriteFile(filepath.Join(dir, "nginx.conf"), []byte(conf), 0o644)
	errLog := filepath.Join(dir, "error.log")
	cmd := exec.Command(bin, "-p", dir, "-c", filepath.Join(dir, "nginx.conf"), "-g", "daemon off;")
	// Its own process group: its workers go with it when it is killed.
	cmd.SysProcAttr = daemon.SysProcAttr("")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		daemon.Kill(cmd.Process.Pid)
		<-exited
		if t.Failed() {
			t.Logf("nginx's log:\n%s", daemon.Tail(errLog, 30))
		}
	})
	addr := "127.0.0.1:" + port
	if err := daemon.WaitListening([]string{addr}, exited, 10*time.Second); err != nil {
		t.Fatalf("nginx: %v\n%s", err, daemon.Tail(errLog, 30))
	}
	return addr
}

// Behind nginx as deploy/nginx sets it up, the registration limit counts
// the address a client connected to nginx from, whatever the client
// writes in X-Forwarded-For itself; and /metrics is not passed on.
func TestBehindNginx(t *testing.T) {
	bin := buildBinary(t)
	dir, addr, cfg := minimalConfig(t)
	// This machine's other address is likely a private one, which the
	// default list trusts as a proxy: here only nginx is one.
	os.WriteFile(cfg, []byte(fmt.Sprintf("data_dir = %q\n[http]\nlisten = %q\nregister_limit = 2\ntrusted_proxies = [\"127.0.0.1\"]\n", filepath.Join(dir, "data"), addr)), 0o600)
	s := startServer(t, bin, cfg)
	s.waitHealthy(t, addr)
	proxy := startNginx(t, addr)
	_, port, _ := net.SplitHostPort(proxy)
	// Connected from an address of this machine that is not loopback,
	// nginx names it as the client; the server trusts nginx (loopback).
	base := "https://" + net.JoinHostPort(nonLoopbackIPv4(t), port) + "/push_appserver/v1/"
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}, Timeout: 10 * time.Second}

	register := func(node, xff string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest("POST", base+"register", strings.NewReader(url.Values{"type": {"apns"}, "node": {node}, "token": {"ab12"}}.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		if xff != "" {
			req.Header.Set("X-Forwarded-For", xff)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, resp.Header.Get("Retry-After") + " " + string(b)
	}
	for _, node := range []string{"n1", "n2"} {
		if code, body := register(node, ""); code != 200 {
			t.Fatalf("register %s through nginx: %d %q", node, code, body)
		}
	}
	for _, xff := range []string{"", "198.51.100.9", "127.0.0.1"} {
		if code, body := register("n3", xff); code != http.StatusTooManyRequests || body != "30 ERROR\nRate limit exceeded, try again later!" {
			t.Errorf("third registration through nginx, X-Forwarded-For %q: %d %q", xff, code, body)
		}
	}
	// The server's own port, from loopback: no client named, not limited.
	if lines, err := s.register("n4", "ab12"); err != nil || lines[0] != "OK" {
		t.Errorf("registration on the server's own port: %v %v", lines, err)
	}
	resp, err := client.Get("https://" + proxy + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("/metrics through nginx: %d, want 404", resp.StatusCode)
	}
	if v := metric(t, addr, `push_appserver_http_limited_total{endpoint="register"}`); v != 3 {
		t.Errorf("limited registrations counted %v, want 3", v)
	}
}

// registerThrough registers n nodes named prefix0, prefix1, ... through
// nginx at proxy and returns how many were not stored, and the first
// such answer.
func registerThrough(t *testing.T, proxy, prefix string, n int) (failed int, first string) {
	t.Helper()
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}, Timeout: 10 * time.Second}
	for i := range n {
		resp, err := client.PostForm("https://"+proxy+"/push_appserver/v1/register",
			url.Values{"type": {"apns"}, "node": {fmt.Sprintf("%s%d", prefix, i)}, "token": {"ab12"}})
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.HasPrefix(string(body), "OK\n") {
			if failed++; failed == 1 {
				first = fmt.Sprintf("%d %q", resp.StatusCode, body)
			}
		}
	}
	return failed, first
}

// startWaiting starts an instance that waits for a PostgreSQL nothing
// serves, in dir, and returns it and its API's address.
func startWaiting(t *testing.T, bin, dir string) (*server, string) {
	addr := freePort(t)
	cfg := filepath.Join(dir, "wait.toml")
	os.WriteFile(cfg, []byte(fmt.Sprintf("data_dir = %q\n[http]\nlisten = %q\n[database]\ndriver = \"postgres\"\ndsn = \"env:PUSH_APPSERVER_DSN\"\n",
		filepath.Join(dir, "data"), addr)), 0o600)
	s := startServerEnv(t, bin, cfg, "PUSH_APPSERVER_DSN=postgres://postgres@"+freePort(t)+"/db?sslmode=disable&connect_timeout=1")
	s.waitLog(t, "PostgreSQL cannot be reached; waiting for it")
	return s, addr
}

// Two instances behind nginx's upstream (deploy/nginx, nginx OSS: no
// active health checks, the next upstream tried only on a connection
// error or timeout, or on what proxy_next_upstream names). One serves;
// the other cannot reach PostgreSQL (out of connections, not yet
// routed, ...) and waits, answering 503. Every registration must be
// stored by the one that serves, as when the waiting one refused
// connections.
func TestBehindNginxWhileOneInstanceWaits(t *testing.T) {
	bin := buildBinary(t)
	_, serving, cfg := minimalConfig(t)
	a := startServer(t, bin, cfg)
	a.waitHealthy(t, serving)
	_, waiting := startWaiting(t, bin, t.TempDir())
	proxy := startNginx(t, serving+";\n    server "+waiting)
	if failed, first := registerThrough(t, proxy, "n", 20); failed > 0 {
		t.Fatalf("%d of 20 registrations through nginx failed while one instance waited for PostgreSQL, the first: %s", failed, first)
	}
}

// Two serving instances behind deploy/nginx whose component cannot reach
// the XMPP server (restarting, say): their ready pages answer 503. Two
// probes of ready through nginx (an uptime monitor) must not take the
// instances out of nginx's rotation: with http_503 in
// proxy_next_upstream and nginx's default max_fails=1, each 503 counted
// as a failure, and for fail_timeout (10 s) every registration got
// nginx's 502 "no live upstreams".
func TestBehindNginxReadyProbed(t *testing.T) {
	bin := buildBinary(t)
	var addrs []string
	for range 2 {
		dir := t.TempDir()
		addr := freePort(t)
		cfg := filepath.Join(dir, "c.toml")
		os.WriteFile(cfg, []byte(fmt.Sprintf("data_dir = %q\n[http]\nlisten = %q\n[[component]]\njid = \"push.localhost\"\naddress = %q\nsecret = \"s\"\n",
			filepath.Join(dir, "data"), addr, freePort(t))), 0o600)
		s := startServer(t, bin, cfg)
		s.waitHealthy(t, addr)
		addrs = append(addrs, addr)
	}
	proxy := startNginx(t, addrs[0]+";\n    server "+addrs[1])
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}, Timeout: 10 * time.Second}
	for range 2 {
		resp, err := client.Get("https://" + proxy + "/push_appserver/v1/ready")
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusServiceUnavailable {
			t.Fatalf("ready through nginx with the components down: %d, want 503", resp.StatusCode)
		}
	}
	if failed, first := registerThrough(t, proxy, "n", 10); failed > 0 {
		t.Fatalf("%d of 10 registrations through nginx failed after two probes of ready through it, the first: %s", failed, first)
	}
}

// A rolling restart behind deploy/nginx: instance B answered a request
// while it was starting (503), which nginx counts as a failure of B for
// fail_timeout (10 s); B is serving soon after, and A is restarted in
// turn: with nginx's default max_fails=1 every request in that window
// got nginx's 502 "no live upstreams", though B serves.
func TestBehindNginxRollingRestart(t *testing.T) {
	bin := buildBinary(t)
	_, servingA, cfgA := minimalConfig(t)
	a := startServer(t, bin, cfgA)
	a.waitHealthy(t, servingA)
	dir := t.TempDir()
	b, portB := startWaiting(t, bin, dir)
	proxy := startNginx(t, servingA+";\n    server "+portB)
	// Requests while B starts: each is served by A.
	if failed, first := registerThrough(t, proxy, "w", 4); failed > 0 {
		t.Errorf("%d of 4 registrations failed while B starts, the first: %s", failed, first)
	}
	// B is serving now (its registry open), at the same address.
	b.stop(t)
	cfgB := filepath.Join(dir, "b.toml")
	os.WriteFile(cfgB, []byte(fmt.Sprintf("data_dir = %q\n[http]\nlisten = %q\n", filepath.Join(dir, "data2"), portB)), 0o600)
	b2 := startServer(t, bin, cfgB)
	b2.waitHealthy(t, portB)
	// A restarts in turn.
	a.stop(t)
	if failed, first := registerThrough(t, proxy, "n", 10); failed > 0 {
		t.Fatalf("%d of 10 registrations through nginx failed with B serving and A restarting, the first: %s", failed, first)
	}
}
