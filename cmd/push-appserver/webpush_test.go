package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/push-appserver/push-appserver/internal/config"
	"github.com/push-appserver/push-appserver/internal/push"
	"github.com/push-appserver/push-appserver/internal/push/webpush"
	"github.com/push-appserver/push-appserver/internal/registry/sqlite"
	"github.com/push-appserver/push-appserver/internal/testutil/webpushmock"
)

// TestWebPushApp: vapid-keygen writes a key and prints its public half; a
// webpush app on that key takes a browser subscription in the HTTP API's
// token field, refuses a bad one, delivers a push the mock decrypts, and
// drops the registration when the push service says the subscription is
// gone.
func TestWebPushApp(t *testing.T) {
	bin := buildBinary(t)
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "vapid.pem")
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(bin, "vapid-keygen", "-out", keyFile)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("vapid-keygen: %v\n%s", err, stderr.String())
	}
	pub := strings.TrimSpace(stdout.String())
	key, err := webpush.LoadVAPIDKey(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	if want, _ := webpush.PublicKeyString(key); pub != want {
		t.Fatalf("printed %q, the file's public key is %q", pub, want)
	}
	if st, _ := os.Stat(keyFile); st.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode %v", st.Mode())
	}
	if err := exec.Command(bin, "vapid-keygen", "-out", keyFile).Run(); err == nil {
		t.Fatal("vapid-keygen overwrote an existing key")
	}

	mock, err := webpushmock.New()
	if err != nil {
		t.Fatal(err)
	}
	defer mock.Close()
	ports := freePorts(t, 2)
	addr := ports[0]
	_, closedPort, _ := strings.Cut(ports[1], ":")
	config := filepath.Join(dir, "push-appserver.toml")
	os.WriteFile(config, []byte(fmt.Sprintf(`data_dir = %q
rate_limit = 0
[http]
listen = %q
[apps.web]
kind = "webpush"
vapid_key_file = %q
vapid_subject = "mailto:ops@example.org"
ca_path = %q
push_deadline = "1s"
# The mock listens on loopback on a random port; nothing listens on the other.
allow_private_endpoints = true
endpoint_ports = [%d, %s]
`, filepath.Join(dir, "data"), addr, keyFile, mock.CADir, mock.Port, closedPort)), 0o600)
	if out, err := exec.Command(bin, "check-config", "-config", config).CombinedOutput(); err != nil ||
		!strings.Contains(string(out), "app web: WebPush, VAPID public key "+pub) || !strings.Contains(string(out), "allow_private_endpoints is on") {
		t.Fatalf("check-config: %v\n%s", err, out)
	}
	// A key file that is no key is a problem check-config names.
	badKey := filepath.Join(dir, "bad.pem")
	os.WriteFile(badKey, []byte("not a key"), 0o600)
	badConfig := filepath.Join(dir, "bad.toml")
	os.WriteFile(badConfig, []byte(fmt.Sprintf("[apps.web]\nkind = \"webpush\"\nvapid_key_file = %q\nvapid_subject = \"mailto:ops@example.org\"\n", badKey)), 0o600)
	if out, err := exec.Command(bin, "check-config", "-config", badConfig).CombinedOutput(); err == nil || !strings.Contains(string(out), "apps.web.vapid_key_file") {
		t.Fatalf("check-config with a bad key: %v\n%s", err, out)
	}

	s := startServer(t, bin, config)
	s.waitHealthy(t, addr)
	sub, err := mock.Subscribe(pub)
	if err != nil {
		t.Fatal(err)
	}
	body := s.post(t, "register", url.Values{"type": {"web"}, "node": {"w1"}, "token": {sub.JSON}})
	lines := strings.Split(body, "\n")
	if len(lines) != 3 || lines[0] != "OK" {
		t.Fatalf("register: %q", body)
	}
	bad := strings.Replace(sub.JSON, "https://", "http://", 1)
	if body := s.post(t, "register", url.Values{"type": {"web"}, "node": {"w2"}, "token": {bad}}); !strings.HasPrefix(body, "ERROR\ninvalid push token") {
		t.Fatalf("http endpoint registered: %q", body)
	}
	if body := s.post(t, "push", url.Values{"node": {"w1"}, "secret": {lines[2]}}); body != "OK\nw1" {
		t.Fatalf("push: %q", body)
	}
	ms := mock.Messages()
	if len(ms) != 1 {
		t.Fatalf("mock got %d messages", len(ms))
	}
	var p webpush.Payload
	if err := json.Unmarshal(ms[0].Plaintext, &p); err != nil || p.Node != "w1" {
		t.Fatalf("payload %q: %v", ms[0].Plaintext, err)
	}
	if ms[0].Header.Get("Topic") != webpush.DefaultTopic || ms[0].Header.Get("Urgency") != "normal" { // an HTTP push to an auto app is silent
		t.Fatalf("headers %v", ms[0].Header)
	}

	// Every answer the mock can give, and an endpoint nobody listens on,
	// for the check below that no subscription shows in logs or reasons.
	// The 429's Retry-After is past the push's deadline (push_deadline
	// 1 s, which pushes under way together share rounded up to 10 ms, so
	// a Retry-After of exactly 1 s may still fit).
	subs := []webpushmock.Subscription{sub}
	for i, faults := range [][]webpushmock.Fault{
		{{Status: 404}}, {{Status: 413}}, {{Status: 429, RetryAfter: "2"}}, {{Status: 400}, {Status: 400}},
		{{Status: 401}, {Status: 401}}, {{Status: 403}, {Status: 403}}, {{Status: 307, Location: "https://127.0.0.1:1/"}},
		{{Status: 500}, {Status: 503}, {Status: 503}, {Status: 503}, {Status: 503}, {Status: 503}, {Status: 503}, {Status: 503}, {Status: 503}, {Status: 503}},
		nil,
	} {
		origin := mock.URL
		if faults == nil {
			origin = "https://127.0.0.1:" + closedPort
		}
		f, err := mock.SubscribeAt(origin, pub)
		if err != nil {
			t.Fatal(err)
		}
		mock.Fail(f.ID, faults...)
		subs = append(subs, f)
		node := fmt.Sprint("f", i)
		lines := strings.Split(s.post(t, "register", url.Values{"type": {"web"}, "node": {node}, "token": {f.JSON}}), "\n")
		if len(lines) != 3 {
			t.Fatalf("register %s: %q", node, lines)
		}
		if body := s.post(t, "push", url.Values{"node": {node}, "secret": {lines[2]}}); !strings.HasPrefix(body, "ERROR\n") {
			t.Fatalf("push %s with faults %v: %q", node, faults, body)
		}
	}

	// A success first: a 410 that follows f0's 404 at the same service
	// with no success between is held, as a misconfigured service's
	// would be.
	if body := s.post(t, "push", url.Values{"node": {"w1"}, "secret": {lines[2]}}); body != "OK\nw1" {
		t.Fatalf("push: %q", body)
	}
	mock.Unsubscribe(sub.ID)
	if body := s.post(t, "push", url.Values{"node": {"w1"}, "secret": {lines[2]}}); !strings.HasPrefix(body, "ERROR\n") {
		t.Fatalf("push to a gone subscription: %q", body)
	}
	if body := s.post(t, "unregister", url.Values{"type": {"web"}, "node": {"w1"}}); body != "ERROR\nNode not found!" {
		t.Fatalf("registration of the gone subscription kept: %q", body)
	}
	s.stop(t)
	store, err := sqlite.Open(context.Background(), filepath.Join(dir, "data", "registry.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	var reasons strings.Builder
	for i := range len(subs) - 1 {
		if r, err := store.Get(context.Background(), fmt.Sprint("f", i)); err == nil {
			fmt.Fprintln(&reasons, r.LastErrorReason)
		}
	}
	if !strings.Contains(reasons.String(), "503") || !strings.Contains(reasons.String(), "413") {
		t.Fatalf("the faults did not reach the stored reasons:\n%s", reasons.String())
	}
	for _, f := range subs {
		for _, secret := range []string{f.ID, base64.RawURLEncoding.EncodeToString(f.Auth)} {
			if strings.Contains(s.log.String(), secret) || strings.Contains(reasons.String(), secret) {
				t.Errorf("subscription %s shows in the info-level log or a stored error reason", f.ID)
			}
		}
	}
}

// A WebPush app's connections take at most half of the descriptors the
// HTTP listeners leave the process, shared between the WebPush apps (as
// their pushes under way are, together: TestWebPushAppsShareTheirRoom),
// so that subscriptions at many origins leave APNS,
// FCM, the component and the registry theirs.
func TestWebPushBound(t *testing.T) {
	apps := func(kinds ...string) *config.Config {
		c := &config.Config{Apps: map[string]*config.App{}}
		for i, k := range kinds {
			c.Apps[fmt.Sprint("app", i)] = &config.App{Kind: k}
		}
		return c
	}
	for _, tt := range []struct {
		name    string
		cfg     *config.Config
		reserve int
		want    int
	}{
		{"LimitNOFILE=1024", apps(config.KindWebPush, config.KindAPNS), 256, 128},
		{"LimitNOFILE=1024, two WebPush apps", apps(config.KindWebPush, config.KindWebPush, config.KindFCM), 256, 64},
		{"LimitNOFILE=128", apps(config.KindWebPush), 100, 50},
		{"LimitNOFILE=128, three WebPush apps", apps(config.KindWebPush, config.KindWebPush, config.KindWebPush), 100, 16},
		{"LimitNOFILE=65536", apps(config.KindWebPush), 16384, webpush.DefaultMaxConnections},
		{"no WebPush app", apps(config.KindAPNS), 256, 128},
		{"no reserve", apps(config.KindWebPush), 0, 1},
	} {
		if conns := min(webpush.DefaultMaxConnections, webPushBound(tt.cfg, tt.reserve)); conns != tt.want {
			t.Errorf("%s: %d connections; want %d", tt.name, conns, tt.want)
		}
	}
}

// The WebPush apps share their room for pushes under way: with many apps
// configured, one app's burst is not held to a share of its own while
// the others, idle, hold nothing.
func TestWebPushAppsShareTheirRoom(t *testing.T) {
	mock, keyFile, pub := webpushmock.Start(t)
	mock.SetLatency(300 * time.Millisecond)
	cfg := &config.Config{Apps: map[string]*config.App{}}
	collapse := false
	for i := range 100 {
		cfg.Apps[fmt.Sprint("web", i)] = &config.App{Kind: config.KindWebPush, VAPIDKeyFile: keyFile, VAPIDSubject: "mailto:ops@example.org",
			CAPath: mock.CADir, AllowPrivateEndpoints: true, EndpointPorts: []int{mock.Port}, Collapse: &collapse}
	}
	// 400 descriptors to spare: each app's share of them is 2.
	b, err := newBackend(context.Background(), "web0", cfg.Apps["web0"], nil, nil, newWebPushLimits(cfg, 400), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer b.(io.Closer).Close()
	sub, err := mock.Subscribe(pub)
	if err != nil {
		t.Fatal(err)
	}
	// Answered once, the service is no quiet one, whose pushes take a
	// quarter of the room at most.
	if err := b.Send(context.Background(), push.Notification{Node: "n1", Token: sub.JSON, Priority: push.PriorityHigh}); err != nil {
		t.Fatal(err)
	}
	const burst = 20
	errs := make(chan error, burst)
	for range burst {
		go func() {
			errs <- b.Send(context.Background(), push.Notification{Node: "n1", Token: sub.JSON, Priority: push.PriorityHigh})
		}()
	}
	failed := 0
	for range burst {
		if err := <-errs; err != nil {
			failed++
			t.Log(err)
		}
	}
	if failed > 0 {
		t.Fatalf("%d of a burst of %d pushes of one app failed while 99 other WebPush apps pushed nothing", failed, burst)
	}
}
