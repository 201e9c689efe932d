package httpapi_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/push-appserver/push-appserver/internal/appserver"
	"github.com/push-appserver/push-appserver/internal/httpapi"
	"github.com/push-appserver/push-appserver/internal/logging"
	"github.com/push-appserver/push-appserver/internal/push"
	"github.com/push-appserver/push-appserver/internal/registry/sqlite"
	"github.com/push-appserver/push-appserver/internal/testutil/logbuf"
)

const attackerToken = "ee00ee00"

func secretOf(t *testing.T, body string) string {
	t.Helper()
	lines := strings.Split(body, "\n")
	if len(lines) != 3 || lines[0] != "OK" {
		t.Fatalf("not a registration answer: %q", body)
	}
	return lines[2]
}

// pushedTo lists the tokens the backend was asked to push to.
func (f *fixture) pushedTo() map[string]int {
	m := map[string]int{}
	for _, n := range f.sent.Sent() {
		m[n.Token]++
	}
	return m
}

// Someone who knows only a node re-registers it with their own token: they
// get a new secret, never the victim's, and the pushes the victim's server
// sends (with the old secret) never reach their token.
func TestNodeOnlyCannotHijack(t *testing.T) {
	f := newFixture(t, false, 0)
	_, body, _ := f.do(t, "POST", "/push_appserver/v1/register", "type=apns&node=victim&token="+token)
	victimSecret := secretOf(t, body)

	code, body, _ := f.do(t, "POST", "/push_appserver/v1/register", "type=apns&node=victim&token="+attackerToken)
	if code != 200 {
		t.Fatalf("re-register with a new token: %d %q", code, body)
	}
	if got := secretOf(t, body); got == victimSecret {
		t.Fatal("a new token without proof was answered the existing secret")
	}
	// The victim's server pushes with the secret it holds: refused, and
	// nothing goes to the attacker's token.
	if _, body, _ := f.do(t, "POST", "/push_appserver/v1/push", "node=victim&secret="+victimSecret); body != "ERROR\nNode or secret not found!" {
		t.Fatalf("push with the old secret after the takeover: %q", body)
	}
	if n := f.pushedTo()[attackerToken]; n != 0 {
		t.Fatalf("%d pushes reached the attacker's token", n)
	}

	// Unregistering tells nobody the secret.
	_, body, _ = f.do(t, "POST", "/push_appserver/v1/register", "type=fcm&node=other&token=t1")
	otherSecret := secretOf(t, body)
	_, body, _ = f.do(t, "POST", "/push_appserver/v1/unregister", "type=fcm&node=other")
	if body != "OK\nother\n" || strings.Contains(body, otherSecret) {
		t.Fatalf("unregister answered %q", body)
	}
}

// The device itself, after a restore, brings a new token and its secret:
// the secret stays, so the user's server keeps pushing.
func TestNewTokenWithSecretKeepsSecret(t *testing.T) {
	f := newFixture(t, false, 0)
	_, body, _ := f.do(t, "POST", "/push_appserver/v1/register", "type=fcm&node=n&token=t1")
	secret := secretOf(t, body)
	_, body, _ = f.do(t, "POST", "/push_appserver/v1/register", "type=fcm&node=n&token=t2&secret="+secret)
	if secretOf(t, body) != secret {
		t.Fatalf("new token with proof changed the secret: %q", body)
	}
	if _, body, _ = f.do(t, "POST", "/push_appserver/v1/push", "node=n&secret="+secret); body != "OK\nn" {
		t.Fatalf("push: %q", body)
	}
	if got := f.pushedTo(); got["t2"] != 1 || got["t1"] != 0 {
		t.Fatalf("pushes went to %v, want t2 only", got)
	}
	// A wrong secret is no proof: the registration gets a new secret.
	_, body, _ = f.do(t, "POST", "/push_appserver/v1/register", "type=fcm&node=n&token=t3&secret="+strings.Repeat("0", 64))
	if secretOf(t, body) == secret {
		t.Fatal("a wrong secret counted as proof")
	}
}

// With strict_registration, a new token, a new type and an unregistration
// need the secret; the same token stays idempotent.
func TestStrictRegistration(t *testing.T) {
	f := newFixtureOpts(t, false, appserver.Options{StrictRegistration: true})
	_, body, _ := f.do(t, "POST", "/push_appserver/v1/register", "type=fcm&node=n&token=t1")
	secret := secretOf(t, body)
	for _, tt := range []struct{ path, form string }{
		{"register", "type=fcm&node=n&token=t2"},
		{"register", "type=fcm&node=n&token=t2&secret=" + strings.Repeat("0", 64)},
		{"register", "type=apns&node=n&token=" + token},
		{"unregister", "type=fcm&node=n"},
		{"unregister", "type=fcm&node=n&secret=wrong"},
	} {
		code, body, _ := f.do(t, "POST", "/push_appserver/v1/"+tt.path, tt.form)
		if code != 403 || !strings.HasPrefix(body, "ERROR\nnot allowed to change this registration") {
			t.Errorf("%s %s: %d %q, want 403", tt.path, tt.form, code, body)
		}
	}
	if r, _ := f.store.Get(context.Background(), "n"); r.Token != "t1" || r.Secret != secret {
		t.Fatalf("refused requests changed the registration: %+v", r)
	}
	if _, body, _ = f.do(t, "POST", "/push_appserver/v1/register", "type=fcm&node=n&token=t1"); secretOf(t, body) != secret {
		t.Fatalf("same token again: %q", body)
	}
	if _, body, _ = f.do(t, "POST", "/push_appserver/v1/register", "type=fcm&node=n&token=t2&secret="+secret); secretOf(t, body) != secret {
		t.Fatalf("new token with the secret: %q", body)
	}
	if code, body, _ := f.do(t, "POST", "/push_appserver/v1/unregister", "type=fcm&node=n&secret="+secret); code != 200 || body != "OK\nn\n" {
		t.Fatalf("unregister with the secret: %d %q", code, body)
	}
}

// A registration made over XMPP belongs to its account: over HTTP it can
// be renewed, changed or removed only with its secret.
func TestXMPPRegistrationNotTakenOverHTTP(t *testing.T) {
	f := newFixture(t, false, 0)
	juliet := appserver.Caller{Account: appserver.Account{Bare: "juliet@example.org", Domain: "example.org"}}
	r, err := f.svc.Register(context.Background(), juliet, "fcm", "jn", "t1")
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct{ path, form string }{
		{"register", "type=fcm&node=jn&token=t1"},
		{"register", "type=fcm&node=jn&token=" + attackerToken},
		{"register", "type=apns&node=jn&token=" + token},
		{"unregister", "type=fcm&node=jn"},
	} {
		code, body, _ := f.do(t, "POST", "/push_appserver/v1/"+tt.path, tt.form)
		if code != 403 || strings.Contains(body, r.Secret) {
			t.Errorf("%s %s: %d %q, want 403 without the secret", tt.path, tt.form, code, body)
		}
	}
	if got, _ := f.store.Get(context.Background(), "jn"); got.Token != "t1" || got.Secret != r.Secret {
		t.Fatalf("refused requests changed the registration: %+v", got)
	}
	if code, body, _ := f.do(t, "POST", "/push_appserver/v1/unregister", "type=fcm&node=jn&secret="+r.Secret); code != 200 || body != "OK\njn\n" {
		t.Fatalf("unregister with the secret: %d %q", code, body)
	}
}

// from makes a request of the HTTP API through a reverse proxy on the
// test's machine (a trusted proxy by default) for the client xff names.
func (f *fixture) from(t *testing.T, xff, path, body string) (int, string, http.Header) {
	t.Helper()
	var h http.Header
	if xff != "" {
		h = http.Header{"X-Forwarded-For": {xff}}
	}
	return f.doHeader(t, "POST", path, body, h)
}

func TestRegistrationsLimitedPerClient(t *testing.T) {
	f := newFixtureOpts(t, false, appserver.Options{}, func(o *httpapi.Options) {
		o.RegisterLimit = 3
		o.TrustedProxies = httpapi.DefaultTrustedProxies()
	})
	const a, b = "198.51.100.7", "2001:db8:1:2::1"
	register := func(client, node string) (int, string, http.Header) {
		return f.from(t, client, "/push_appserver/v1/register", "type=fcm&node="+node+"&token=tok-"+node)
	}
	for i := range 2 {
		if code, body, _ := register(a, fmt.Sprint("a", i)); code != 200 {
			t.Fatalf("registration %d: %d %q", i, code, body)
		}
	}
	if code, body, _ := f.from(t, a, "/push_appserver/v1/unregister", "type=fcm&node=a0"); code != 200 {
		t.Fatalf("unregister: %d %q", code, body)
	}
	// The fourth request within the minute, whatever its endpoint.
	code, body, hdr := register(a, "a9")
	if code != http.StatusTooManyRequests || body != "ERROR\nRate limit exceeded, try again later!" || hdr.Get("Retry-After") != "20" {
		t.Fatalf("over the limit: %d %q, Retry-After %q", code, body, hdr.Get("Retry-After"))
	}
	if code, _, _ := f.from(t, a, "/push_appserver/v1/unregister", "type=fcm&node=a1"); code != http.StatusTooManyRequests {
		t.Fatalf("unregister over the limit: %d", code)
	}
	if _, err := f.store.Get(context.Background(), "a9"); err == nil {
		t.Error("a registration refused by the limit was stored")
	}
	if _, err := f.store.Get(context.Background(), "a1"); err != nil {
		t.Errorf("an unregistration refused by the limit removed the node: %v", err)
	}

	// Another client, and another address in the same IPv6 /64.
	for i := range 3 {
		if code, body, _ := register(b, fmt.Sprint("b", i)); code != 200 {
			t.Fatalf("client b's registration %d: %d %q", i, code, body)
		}
	}
	if code, _, _ := register("2001:db8:1:2::ffff", "b9"); code != http.StatusTooManyRequests {
		t.Errorf("another address of b's /64 was not counted with b: %d", code)
	}
	// A request the proxy names no client for is not limited, and
	// neither are pushes.
	for i := range 5 {
		if code, body, _ := register("", fmt.Sprint("local", i)); code != 200 {
			t.Fatalf("registration %d naming no client: %d %q", i, code, body)
		}
	}
	_, body, _ = register(a+", 203.0.113.1", "a1") // 203.0.113.1 is no trusted proxy: it is the client
	if code, _, _ := f.from(t, a, "/push_appserver/v1/push", "node=a1&secret="+secretOf(t, body)); code != 200 {
		t.Errorf("push from a limited client: %d", code)
	}

	_, metrics, _ := f.do(t, "GET", "/metrics", "")
	for _, w := range []string{
		`push_appserver_http_limited_total{endpoint="register"} 2`,
		`push_appserver_http_limited_total{endpoint="unregister"} 1`,
	} {
		if !strings.Contains(metrics, w) {
			t.Errorf("metrics lack %q", w)
		}
	}
}

// One client on http.tls_listen, over one TLS connection, must not write
// a warn line into the log for every GOAWAY frame it sends, while a
// request of its own (whose body it never finishes, as the API's
// handlers read the form) keeps the connection open: net/http's server
// lines are rate limited, as its TLS handshake errors are.
func TestHTTP2FramesDoNotFloodLog(t *testing.T) {
	var buf logbuf.Buffer
	logger := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo}))
	certSrv := httptest.NewUnstartedServer(http.NotFoundHandler())
	certSrv.StartTLS()
	cert := certSrv.TLS.Certificates[0]
	certSrv.Close()

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	// As the API's handlers do: read the form from the body.
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.ReadAll(r.Body) })
	srv := httpapi.NewServer(ln.Addr().String(), h, logger)
	srv.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}}
	go srv.ServeTLS(ln, "", "")
	defer srv.Close()

	c, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"h2"}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	go io.Copy(io.Discard, c)
	io.WriteString(c, http2.ClientPreface)
	fr := http2.NewFramer(c, nil)
	fr.WriteSettings()
	var hb bytes.Buffer
	enc := hpack.NewEncoder(&hb)
	for _, f := range [][2]string{{":method", "POST"}, {":scheme", "https"}, {":authority", "x"}, {":path", "/push_appserver/v1/push"}} {
		enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: hb.Bytes(), EndHeaders: true})
	const n = 500
	for i := 0; i < n; i++ {
		if err := fr.WriteGoAway(0, http2.ErrCodeProtocol, []byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(300 * time.Millisecond)
	lines := strings.Count(buf.String(), "level=WARN")
	t.Logf("first line: %.200s", buf.String())
	if lines > 20 {
		t.Errorf("%d GOAWAY frames on one connection wrote %d warn lines, no rate limit", n, lines)
	}
}

// Above debug a node appears in the log only as node_ref, and a client
// that hangs up before the registry is read is nobody's failure: its
// unregistration logs neither an error nor the node.
func TestUnregisterErrorLogsNoNode(t *testing.T) {
	var buf logbuf.Buffer
	logger := slog.New(logging.Redact(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo})))
	store, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "registry.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	svc, err := appserver.New(store, []appserver.App{{Name: "fcm", Priority: push.PriorityHigh, Backend: &recorder{}}}, appserver.Options{}, logger)
	if err != nil {
		t.Fatal(err)
	}
	h := httpapi.New(httpapi.Options{Service: svc, Registrations: store, Logger: logger})
	const node = "my-capability-node-4f1c9a"
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // the client hung up
	req := httptest.NewRequestWithContext(ctx, http.MethodPost, "/push_appserver/v1/unregister", strings.NewReader("type=fcm&node="+node))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	w := httptest.NewRecorder()
	h.ServeHTTP(w, req)
	t.Logf("answer %q; log: %s", w.Body.String(), buf.String())
	if strings.Contains(buf.String(), node) {
		t.Errorf("the node appears in clear in a log line above debug")
	}
	if strings.Contains(buf.String(), "level=ERROR") {
		t.Errorf("a client that hung up logged as an internal error")
	}
}

const pushPath = "/push_appserver/v1/push"

// pushSources is a Service that remembers the source of each push asked
// of it.
type pushSources struct {
	httpapi.Service
	got chan string
}

func (p pushSources) Push(ctx context.Context, req appserver.PushRequest) error {
	p.got <- req.Source
	return p.Service.Push(ctx, req)
}

// A push's source, which rate_limit_per_token counts each device's
// pushes by, is its client's address as register_limit counts it: an
// IPv6 client by its /64, named by a trusted proxy, never by what the
// client wrote in X-Forwarded-For itself; a push every hop of which is
// trusted is the last proxy's. Both push endpoints pass it on.
func TestPushSourceIsClient(t *testing.T) {
	got := make(chan string, 8)
	f := newFixtureOpts(t, false, appserver.Options{}, func(o *httpapi.Options) {
		o.Service = pushSources{o.Service, got}
		o.TrustedProxies = httpapi.DefaultTrustedProxies()
	})
	secret := f.register(t, "n")
	for _, tt := range []struct{ name, xff, path, want string }{
		{"IPv4", "198.51.100.7", pushPath, "198.51.100.7"},
		{"IPv6", "2001:db8:1:2:3:4:5:6", pushPath, "2001:db8:1:2::"},
		{"written by the client", "203.0.113.9, 198.51.100.7", pushPath, "198.51.100.7"},
		{"no client named", "", pushPath, "127.0.0.1"},
		{"batch", "2001:db8:1:2:3:4:5:6", batchPath, "2001:db8:1:2::"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			body := "node=n&secret=" + secret
			if tt.path == batchPath {
				body = fmt.Sprintf(`{"pushes": [{"node": "n", "secret": %q}]}`, secret)
			}
			if code, resp, _ := f.from(t, tt.xff, tt.path, body); code != http.StatusOK {
				t.Fatalf("%d %q", code, resp)
			}
			if s := <-got; s != tt.want {
				t.Fatalf("X-Forwarded-For %q: source %q, want %q", tt.xff, s, tt.want)
			}
		})
	}
}

// rate_limit_per_token over HTTP: a client that took a device to its
// limit through nodes of its own holds another client's pushes to it,
// through another node, to nothing; an address of the same /64 is the
// same client.
func TestPushDeviceLimitPerClient(t *testing.T) {
	f := newFixtureOpts(t, false, appserver.Options{RateLimit: time.Hour, RateLimitPerToken: 2}, func(o *httpapi.Options) {
		o.TrustedProxies = httpapi.DefaultTrustedProxies()
	})
	for i, tt := range []struct{ client, want string }{
		{"2001:db8:1:2::1", "OK\nn0"},
		{"2001:db8:1:2::1", "OK\nn1"},
		{"2001:db8:1:2::1", "ERROR\nRate limit exceeded"},
		{"198.51.100.7", "OK\nn3"},
		{"2001:db8:1:2::ffff", "ERROR\nRate limit exceeded"},
	} {
		node := fmt.Sprint("n", i)
		r, err := f.svc.Register(context.Background(), appserver.Caller{}, "fcm", node, "victim")
		if err != nil {
			t.Fatal(err)
		}
		if _, body, _ := f.from(t, tt.client, pushPath, "node="+node+"&secret="+r.Secret); !strings.HasPrefix(body, tt.want) {
			t.Errorf("push %d from %s through a node of its own: %q, want %q", i+1, tt.client, body, tt.want)
		}
	}
}
