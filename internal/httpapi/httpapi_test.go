package httpapi_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/push-appserver/push-appserver/internal/appserver"
	"github.com/push-appserver/push-appserver/internal/httpapi"
	"github.com/push-appserver/push-appserver/internal/metrics"
	"github.com/push-appserver/push-appserver/internal/push"
	"github.com/push-appserver/push-appserver/internal/registry"
	"github.com/push-appserver/push-appserver/internal/registry/sqlite"
	"github.com/push-appserver/push-appserver/internal/testutil/logbuf"
)

type fixture struct {
	srv   *httptest.Server
	store registry.Store
	sent  *recorder
	svc   *appserver.Service
	// waiting receives a value whenever a push starts waiting for its
	// throttle window.
	waiting chan struct{}
}

// recorder is a push service that accepts everything and remembers what it
// was sent.
type recorder struct {
	mu   sync.Mutex
	sent []push.Notification
}

func (r *recorder) Send(_ context.Context, n push.Notification) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.sent = append(r.sent, n)
	return nil
}

func (r *recorder) Sent() []push.Notification {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]push.Notification(nil), r.sent...)
}

// strictToken accepts only lower-case hex, like a real APNS backend, so the
// invalid-token path can be exercised through the real core.
type strictToken struct{ *recorder }

func (strictToken) ValidateToken(tok string) error {
	if strings.Trim(tok, "0123456789abcdef") != "" {
		return errBadToken
	}
	return nil
}

var errBadToken = &tokenErr{}

type tokenErr struct{}

func (*tokenErr) Error() string { return "token is not hex" }

func newFixture(t *testing.T, debugging bool, rate time.Duration) *fixture {
	t.Helper()
	return newFixtureOpts(t, debugging, appserver.Options{RateLimit: rate})
}

func newFixtureOpts(t *testing.T, debugging bool, opts appserver.Options, apiOpts ...func(*httpapi.Options)) *fixture {
	t.Helper()
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	store, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "registry.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	lb := &recorder{}
	m := metrics.New()
	opts.Observer = m
	svc, err := appserver.New(store, []appserver.App{
		{Name: "apns", Priority: push.PriorityAuto, Backend: strictToken{lb}},
		{Name: "fcm", Priority: push.PriorityHigh, Backend: lb},
	}, opts, logger)
	if err != nil {
		t.Fatal(err)
	}
	o := httpapi.Options{
		Service: svc, Registrations: store, Debugging: debugging, Metrics: m.Handler(), Logger: logger,
		Checks: func() []httpapi.Check {
			return []httpapi.Check{{Name: "component push.example.org", OK: func() bool { return false }}}
		},
		Limited: m.HTTPLimited,
	}
	for _, set := range apiOpts {
		set(&o)
	}
	h := httpapi.New(o)
	waiting := make(chan struct{}, 16)
	hooks := push.WaitingFuncs{
		PauseFunc: func() {
			select {
			case waiting <- struct{}{}:
			default:
			}
		},
		ResumeFunc: func(context.Context) error { return nil },
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.ServeHTTP(w, r.WithContext(push.WithWaiting(r.Context(), hooks)))
	}))
	t.Cleanup(srv.Close)
	return &fixture{srv: srv, store: store, sent: lb, svc: svc, waiting: waiting}
}

func (f *fixture) do(t *testing.T, method, path, body string) (int, string, http.Header) {
	t.Helper()
	return f.doHeader(t, method, path, body, nil)
}

// doHeader is do with header fields added to the request.
func (f *fixture) doHeader(t *testing.T, method, path, body string, header http.Header) (int, string, http.Header) {
	t.Helper()
	req, err := http.NewRequest(method, f.srv.URL+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp.Header
}

const token = "ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12"

var secretRE = regexp.MustCompile(`^OK\nn1\n[0-9a-f]{64}$`)

func TestRegisterPushUnregister(t *testing.T) {
	f := newFixture(t, false, 0)
	code, body, hdr := f.do(t, "POST", "/push_appserver/v1/register", "type=apns&node=n1&token="+token)
	if code != 200 || !secretRE.MatchString(body) {
		t.Fatalf("register: %d %q", code, body)
	}
	if ct := hdr.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Fatalf("content type %q", ct)
	}
	secret := strings.Split(body, "\n")[2]

	// Re-registering with the same token keeps the secret; a new token
	// with the secret as proof keeps it too.
	_, body2, _ := f.do(t, "POST", "/push_appserver/v1/register", "type=apns&node=n1&token="+token)
	if body2 != body {
		t.Fatalf("re-register changed the answer: %q vs %q", body2, body)
	}
	_, body2, _ = f.do(t, "POST", "/push_appserver/v1/register", "type=apns&node=n1&token=cd34&secret="+secret)
	if body2 != body {
		t.Fatalf("re-register with proof changed the answer: %q vs %q", body2, body)
	}

	code, body, _ = f.do(t, "POST", "/push_appserver/v1/push", "node=n1&secret="+secret)
	if code != 200 || body != "OK\nn1" {
		t.Fatalf("push: %d %q", code, body)
	}
	sent := f.sent.Sent()
	// No summary over HTTP: priority auto makes it a silent push.
	if len(sent) != 1 || sent[0].Token != "cd34" || sent[0].Priority != push.PrioritySilent || sent[0].Node != "n1" {
		t.Fatalf("backend got %+v", sent)
	}

	code, body, _ = f.do(t, "POST", "/push_appserver/v1/unregister", "type=apns&node=n1")
	if code != 200 || body != "OK\nn1\n" {
		t.Fatalf("unregister: %d %q (the third line must not carry the secret)", code, body)
	}
	code, body, _ = f.do(t, "POST", "/push_appserver/v1/push", "node=n1&secret="+secret)
	if code != 200 || body != "ERROR\nNode or secret not found!" {
		t.Fatalf("push after unregister: %d %q", code, body)
	}
}

func TestErrors(t *testing.T) {
	f := newFixture(t, false, 0)
	_, body, _ := f.do(t, "POST", "/push_appserver/v1/register", "type=fcm&node=known&token=tok")
	secret := strings.Split(body, "\n")[2]
	big := "type=fcm&node=n&token=" + strings.Repeat("a", httpapi.MaxBodySize)

	tests := []struct {
		name, method, path, body string
		code                     int
		want                     string // exact body, or prefix when it ends in "*"
	}{
		{"register missing token", "POST", "/push_appserver/v1/register", "type=apns&node=n1", 400, "ERROR\nMissing field 'token'"},
		{"register missing type", "POST", "/push_appserver/v1/register", "node=n1&token=ab", 400, "ERROR\nMissing field 'type'"},
		{"register empty body", "POST", "/push_appserver/v1/register", "", 400, "ERROR\nMissing field 'type'"},
		{"register oversized body", "POST", "/push_appserver/v1/register", big, 400, "ERROR\nRequest body larger than 4096 bytes"},
		{"register malformed form", "POST", "/push_appserver/v1/register", "type=%zz&node=n&token=t", 400, "ERROR\nMalformed form data"},
		{"register node twice", "POST", "/push_appserver/v1/register", "type=fcm&node=first&token=t&node=known", 400, "ERROR\nDuplicate field 'node'"},
		{"register token twice, escaped", "POST", "/push_appserver/v1/register", "type=fcm&node=known&token=t&token=%74", 400, "ERROR\nDuplicate field 'token'"},
		{"unregister node twice", "POST", "/push_appserver/v1/unregister", "type=fcm&node=nope&node=known", 400, "ERROR\nDuplicate field 'node'"},
		{"push secret twice", "POST", "/push_appserver/v1/push", "node=known&secret=x&secret=" + secret, 400, "ERROR\nDuplicate field 'secret'"},
		{"register unknown type", "POST", "/push_appserver/v1/register", "type=gcm&node=n1&token=ab", 200, "ERROR\nUnknown push type!"},
		{"register invalid token", "POST", "/push_appserver/v1/register", "type=apns&node=n1&token=XYZ", 200, "ERROR\ninvalid push token: token is not hex"},
		{"register node too long", "POST", "/push_appserver/v1/register", "type=fcm&token=t&node=" + strings.Repeat("n", 300), 400, "ERROR\nbad request: node longer than 256 bytes"},
		{"register node with newline", "POST", "/push_appserver/v1/register", "type=fcm&token=t&node=a%0Ab", 400, "ERROR\nbad request: node contains a control character"},
		{"register node with NUL", "POST", "/push_appserver/v1/register", "type=fcm&token=t&node=a%00b", 400, "ERROR\nbad request: node contains a control character"},
		{"register node with DEL", "POST", "/push_appserver/v1/register", "type=fcm&token=t&node=a%7Fb", 400, "ERROR\nbad request: node contains a control character"},
		{"register node with C1 control", "POST", "/push_appserver/v1/register", "type=fcm&token=t&node=a%C2%85b", 400, "ERROR\nbad request: node contains a control character"},
		{"register node not UTF-8", "POST", "/push_appserver/v1/register", "type=fcm&token=t&node=a%FFb", 400, "ERROR\nbad request: node is not valid UTF-8"},
		{"register type with newline", "POST", "/push_appserver/v1/register", "type=fcm%0AOK&token=t&node=n", 400, "ERROR\nbad request: type contains a control character"},
		{"register token with newline", "POST", "/push_appserver/v1/register", "type=fcm&token=t%0Ax&node=n", 400, "ERROR\nbad request: token contains a control character"},
		{"unregister node with newline", "POST", "/push_appserver/v1/unregister", "type=fcm&node=known%0A", 400, "ERROR\nbad request: node contains a control character"},
		{"unregister missing node", "POST", "/push_appserver/v1/unregister", "type=apns", 400, "ERROR\nMissing field 'node'"},
		{"unregister unknown node", "POST", "/push_appserver/v1/unregister", "type=apns&node=nope", 200, "ERROR\nNode not found!"},
		{"unregister wrong type", "POST", "/push_appserver/v1/unregister", "type=apns&node=known", 200, "ERROR\nNode not found!"},
		{"push missing secret", "POST", "/push_appserver/v1/push", "node=known", 400, "ERROR\nMissing field 'secret'"},
		{"push oversized", "POST", "/push_appserver/v1/push", "node=known&secret=" + strings.Repeat("s", 5000), 400, "ERROR\nRequest body larger than 4096 bytes"},
		{"push unknown node", "POST", "/push_appserver/v1/push", "node=nope&secret=" + secret, 200, "ERROR\nNode or secret not found!"},
		{"push wrong secret", "POST", "/push_appserver/v1/push", "node=known&secret=" + strings.Repeat("0", 64), 200, "ERROR\nNode or secret not found!"},
		{"push short secret", "POST", "/push_appserver/v1/push", "node=known&secret=x", 200, "ERROR\nNode or secret not found!"},
		{"push path with an escaped letter", "POST", "/push_appserver/v1/pu%73h", "node=nope&secret=" + secret, 200, "ERROR\nNode or secret not found!"},
		{"push path with escaped slashes", "POST", "/push_appserver%2Fv1%2Fpush", "node=nope&secret=" + secret, 404, "*"},
		{"register path with an escaped slash", "POST", "/push_appserver/v1%2Fregister", "type=fcm&node=n2&token=t", 404, "*"},
		{"form without debugging", "GET", "/push_appserver/v1/register", "", 403, "ERROR\nDebugging is disabled"},
		{"form subpath without debugging", "GET", "/push_appserver/v1/push/x", "", 403, "ERROR\nDebugging is disabled"},
		{"settings without debugging", "GET", "/push_appserver/v1/settings", "", 403, "ERROR\nDebugging is disabled"},
		{"settings node without debugging", "GET", "/push_appserver/v1/settings/known", "", 403, "ERROR\nDebugging is disabled"},
		{"health", "GET", "/push_appserver/v1/health", "", 200, "RUNNING\ncomponent push.example.org: down\n"},
		{"not ready", "GET", "/push_appserver/v1/ready", "", 503, "NOT READY\ncomponent push.example.org: down\n"},
		{"wrong method", "PUT", "/push_appserver/v1/register", "type=a", 405, "*"},
		{"unknown path", "GET", "/push_appserver/v2/register", "", 404, "*"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, body, _ := f.do(t, tt.method, tt.path, tt.body)
			if code != tt.code {
				t.Errorf("status %d, want %d (body %q)", code, tt.code, body)
			}
			if p, ok := strings.CutSuffix(tt.want, "*"); ok {
				if !strings.HasPrefix(body, p) {
					t.Errorf("body %q, want prefix %q", body, p)
				}
			} else if body != tt.want {
				t.Errorf("body %q, want %q", body, tt.want)
			}
		})
	}
	if _, err := f.store.Get(context.Background(), "first"); err == nil {
		t.Fatal("a form with a field twice registered a node")
	}
	// None of that changed the one registration.
	r, err := f.store.Get(context.Background(), "known")
	if err != nil || r.Secret != secret || r.Token != "tok" {
		t.Fatalf("registration after bad requests: %+v, %v", r, err)
	}
	if n, _ := f.store.Count(context.Background()); n != 1 {
		t.Fatalf("%d registrations, want 1", n)
	}
	if len(f.sent.Sent()) != 0 {
		t.Fatalf("bad requests caused pushes: %+v", f.sent.Sent())
	}
}

func TestThrottledPush(t *testing.T) {
	f := newFixture(t, false, time.Second)
	_, body, _ := f.do(t, "POST", "/push_appserver/v1/register", "type=fcm&node=n1&token=tok")
	secret := strings.Split(body, "\n")[2]
	if _, body, _ = f.do(t, "POST", "/push_appserver/v1/push", "node=n1&secret="+secret); body != "OK\nn1" {
		t.Fatalf("first push: %q", body)
	}
	// The second push waits for the next window and then goes out; a third
	// meanwhile is refused at once.
	second := make(chan string, 1)
	go func() {
		resp, err := http.Post(f.srv.URL+"/push_appserver/v1/push", "application/x-www-form-urlencoded", strings.NewReader("node=n1&secret="+secret))
		if err != nil {
			second <- err.Error()
			return
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		second <- string(b)
	}()
	select {
	case <-f.waiting: // the second push now waits for the next window
	case <-time.After(10 * time.Second):
		t.Fatal("the second push did not wait for the next window")
	}
	if _, body, _ = f.do(t, "POST", "/push_appserver/v1/push", "node=n1&secret="+secret); body != "ERROR\nRate limit exceeded, try again later!" {
		t.Fatalf("third push: %q", body)
	}
	if body := <-second; body != "OK\nn1" {
		t.Fatalf("delayed push: %q", body)
	}
	if n := len(f.sent.Sent()); n != 2 {
		t.Fatalf("%d pushes sent, want 2", n)
	}
}

func TestDebugPages(t *testing.T) {
	f := newFixture(t, true, 0)
	f.do(t, "POST", "/push_appserver/v1/register", "type=fcm&node=%3Cscript%3Ealert(1)%3C%2Fscript%3E&token=%3Cb%3Etok")
	tests := []struct {
		path    string
		want    []string
		notWant []string
	}{
		{"/push_appserver/v1/register", []string{"<h1>Register Push Node</h1>", `name="type"`, `name="node"`, `name="token"`, `<form method="post">`}, nil},
		{"/push_appserver/v1/unregister", []string{"<h1>Unregister Push Node</h1>", `name="type"`, `name="node"`}, []string{`name="token"`}},
		{"/push_appserver/v1/push", []string{"<h1>Send Push Request</h1>", `name="node"`, `name="secret"`}, nil},
		{"/push_appserver/v1/settings", []string{"List of devices", "&lt;script&gt;alert(1)&lt;/script&gt;"}, []string{"<script>"}},
		{"/push_appserver/v1/settings/%3Cscript%3Ealert(1)%3C%2Fscript%3E", []string{"type = fcm", "token = &lt;b&gt;tok", "secret = ", "registered = 20"}, []string{"<script>", "<b>"}},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			code, body, hdr := f.do(t, "GET", tt.path, "")
			if code != 200 || !strings.HasPrefix(hdr.Get("Content-Type"), "text/html") {
				t.Fatalf("status %d type %q", code, hdr.Get("Content-Type"))
			}
			for _, w := range tt.want {
				if !strings.Contains(body, w) {
					t.Errorf("page lacks %q:\n%s", w, body)
				}
			}
			for _, w := range tt.notWant {
				if strings.Contains(body, w) {
					t.Errorf("page contains %q:\n%s", w, body)
				}
			}
		})
	}
	if code, body, _ := f.do(t, "GET", "/push_appserver/v1/settings/unknown", ""); code != 404 || body != "ERROR\nNode not found!" {
		t.Fatalf("unknown node page: %d %q", code, body)
	}
}

func TestMetrics(t *testing.T) {
	f := newFixture(t, false, 0)
	_, body, _ := f.do(t, "POST", "/push_appserver/v1/register", "type=fcm&node=n1&token=tok")
	secret := strings.Split(body, "\n")[2]
	f.do(t, "POST", "/push_appserver/v1/push", "node=n1&secret="+secret)
	f.do(t, "POST", "/push_appserver/v1/push", "node=n1&secret=wrong")
	f.do(t, "POST", "/push_appserver/v1/push", "node=unknown&secret=wrong")
	code, body, _ := f.do(t, "GET", "/metrics", "")
	if code != 200 {
		t.Fatalf("metrics status %d", code)
	}
	for _, w := range []string{
		`push_appserver_registrations_total{app="fcm",renewed="false"} 1`,
		`push_appserver_pushes_total{app="fcm",outcome="success"} 1`,
		// A wrong secret and an unknown node look the same from outside.
		`push_appserver_pushes_total{app="",outcome="not_found"} 2`,
		`push_appserver_push_rejections_total{reason="not_found"} 2`,
		`push_appserver_push_rejections_total{reason="malformed"} 0`,
		`push_appserver_push_duration_seconds_bucket{app="fcm",outcome="success",le="+Inf"} 1`,
	} {
		if !strings.Contains(body, w) {
			t.Errorf("metrics lack %q", w)
		}
	}
	if strings.Contains(body, `app="fcm",outcome="not_found"`) {
		t.Error("metrics name the app of a node pushed to with a wrong secret")
	}
}

func TestPushStatusWrittenBehind(t *testing.T) {
	f := newFixture(t, false, 0)
	_, body, _ := f.do(t, "POST", "/push_appserver/v1/register", "type=fcm&node=n1&token=tok")
	secret := strings.Split(body, "\n")[2]
	f.do(t, "POST", "/push_appserver/v1/push", "node=n1&secret="+secret)
	if r, _ := f.store.Get(context.Background(), "n1"); !r.LastSuccessfulPush.IsZero() {
		t.Fatalf("push status written synchronously")
	}
	if err := f.svc.Close(); err != nil {
		t.Fatal(err)
	}
	r, err := f.store.Get(context.Background(), "n1")
	if err != nil || r.LastSuccessfulPush.IsZero() {
		t.Fatalf("push status not written on Close: %+v %v", r, err)
	}
}

// Readiness follows every check but those for the health page only,
// which the health page shows all the same.
func TestReadyFollowsChecks(t *testing.T) {
	var up, standby, appOK, registryOK atomic.Bool
	h := httpapi.New(httpapi.Options{Checks: func() []httpapi.Check {
		return []httpapi.Check{{Name: "component push.example.org", OK: up.Load, StandingBy: standby.Load},
			{Name: "app ios", OK: appOK.Load, HealthOnly: true}, {Name: "registry", OK: registryOK.Load, HealthOnly: true}}
	}})
	get := func(page string) (int, string) {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", "/push_appserver/v1/"+page, nil))
		return rec.Code, rec.Body.String()
	}
	if code, body := get("ready"); code != 503 || body != "NOT READY\ncomponent push.example.org: down\n" {
		t.Fatalf("%d %q", code, body)
	}
	// Another instance serves the component: this one stands by, ready.
	standby.Store(true)
	if code, body := get("ready"); code != 200 || body != "READY\n" {
		t.Fatalf("standing by: %d %q", code, body)
	}
	if code, body := get("health"); code != 200 || body != "RUNNING\ncomponent push.example.org: standing by\napp ios: down\nregistry: down\n" {
		t.Fatalf("health: %d %q", code, body)
	}
	standby.Store(false)
	up.Store(true)
	if code, body := get("ready"); code != 200 || body != "READY\n" {
		t.Fatalf("%d %q", code, body)
	}
	appOK.Store(true)
	if code, body := get("health"); code != 200 || body != "RUNNING\ncomponent push.example.org: up\napp ios: up\nregistry: down\n" {
		t.Fatalf("health: %d %q", code, body)
	}
	registryOK.Store(true)
	if code, body := get("health"); code != 200 || body != "RUNNING\ncomponent push.example.org: up\napp ios: up\nregistry: up\n" {
		t.Fatalf("health: %d %q", code, body)
	}
}

// gate is a push service whose Send waits until released, then reports
// whether the push's context had ended.
type gate struct {
	entered, release chan struct{}
	ended            chan error
}

func (g *gate) Send(ctx context.Context, _ push.Notification) error {
	g.entered <- struct{}{}
	<-g.release
	g.ended <- ctx.Err()
	return nil
}

// A push once asked for is carried out when the client hangs up before
// the answer, on /v1/push and on push-batch alike.
func TestPushOutlivesItsRequest(t *testing.T) {
	for _, tc := range []struct{ path, body string }{
		{"/push_appserver/v1/push", "node=n1&secret=%s"},
		{"/push_appserver/v1/push-batch", `{"pushes": [{"node": "n1", "secret": %q}]}`},
	} {
		t.Run(tc.path, func(t *testing.T) {
			store, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "registry.db"))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { store.Close() })
			g := &gate{entered: make(chan struct{}, 1), release: make(chan struct{}), ended: make(chan error, 1)}
			logger := slog.New(slog.NewTextHandler(io.Discard, nil))
			svc, err := appserver.New(store, []appserver.App{{Name: "fcm", Priority: push.PriorityHigh, Backend: g}}, appserver.Options{}, logger)
			if err != nil {
				t.Fatal(err)
			}
			h := httpapi.New(httpapi.Options{Service: svc, Registrations: store, Logger: logger})
			requests := make(chan *http.Request, 4)
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				requests <- r
				h.ServeHTTP(w, r)
			}))
			t.Cleanup(srv.Close)
			f := &fixture{srv: srv}
			_, body, _ := f.do(t, "POST", "/push_appserver/v1/register", "type=fcm&node=n1&token=tok")
			<-requests
			lines := strings.Split(body, "\n")
			if len(lines) != 3 {
				t.Fatalf("register: %q", body)
			}

			ctx, cancel := context.WithCancel(context.Background())
			req, err := http.NewRequestWithContext(ctx, "POST", srv.URL+tc.path, strings.NewReader(fmt.Sprintf(tc.body, lines[2])))
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			done := make(chan error, 1)
			go func() {
				resp, err := http.DefaultClient.Do(req)
				if err == nil {
					resp.Body.Close()
				}
				done <- err
			}()
			<-g.entered
			cancel()
			if err := <-done; err == nil {
				t.Fatal("the request was answered before the push ended")
			}
			select {
			case <-(<-requests).Context().Done():
			case <-time.After(5 * time.Second):
				t.Fatal("the server did not notice the client hang up")
			}
			close(g.release)
			if err := <-g.ended; err != nil {
				t.Fatalf("the push's context ended with its request: %v", err)
			}
		})
	}
}

// A body sent without its length (chunked) is limited as one that gives
// it.
func TestBodyOfUnknownLength(t *testing.T) {
	f := newFixture(t, false, 0)
	for _, tc := range []struct{ body, want string }{
		{"node=nope&secret=s", "ERROR\nNode or secret not found!"},
		{"node=nope&secret=" + strings.Repeat("s", httpapi.MaxBodySize), "ERROR\nRequest body larger than 4096 bytes"},
	} {
		// A reader net/http cannot tell the length of.
		body := io.MultiReader(strings.NewReader(tc.body))
		req, err := http.NewRequest("POST", f.srv.URL+"/push_appserver/v1/push", body)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		// ContentLength 0 with a body: sent chunked.
		if req.ContentLength != 0 || string(b) != tc.want {
			t.Errorf("%d bytes (length %d): %q, want %q", len(tc.body), req.ContentLength, b, tc.want)
		}
	}
}

// Every answer names the current second in its Date field, though the
// field is formatted once a second.
func TestAnswersAreDated(t *testing.T) {
	h := httpapi.New(httpapi.Options{Logger: slog.New(slog.DiscardHandler)})
	date := func() time.Time {
		t.Helper()
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", "/", nil))
		d, err := http.ParseTime(rec.Header().Get("Date"))
		if err != nil || rec.Code != http.StatusOK {
			t.Fatalf("status %d, Date %q: %v", rec.Code, rec.Header().Get("Date"), err)
		}
		return d
	}
	for range 3 {
		before := time.Now().Truncate(time.Second)
		d := date()
		if after := time.Now(); d.Before(before) || d.After(after) {
			t.Fatalf("Date %v, not within [%v, %v]", d, before, after)
		}
		time.Sleep(400 * time.Millisecond)
	}
}

// A request whose Content-Length says more than the limit is refused at
// once, before anything is read or allocated for it: a body buffer of the
// declared size would let one request (Content-Length: 1 TB) take the
// daemon's memory, and a client that sends the body slowly hold it.
func TestDeclaredLengthOverLimitRefusedUnread(t *testing.T) {
	f := newFixture(t, false, 0)
	conn, err := net.Dial("tcp", f.srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	body := "node=nope&secret=s"
	_, err = io.WriteString(conn, "POST /push_appserver/v1/push HTTP/1.1\r\nHost: x\r\n"+
		"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 268435456\r\n\r\n"+body)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("no answer to a request declaring a 256 MiB body: %v", err)
	}
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(b), "larger than 4096 bytes") {
		t.Fatalf("answer %d %q, want 400 and the body too large", resp.StatusCode, b)
	}
}

// TestTLSHandshakeFailuresDoNotFloodLog: anyone who can reach
// http.tls_listen (a port scanner, a client speaking plain HTTP, one that
// hangs up) must not get a warn line per connection into the log.
func TestTLSHandshakeFailuresDoNotFloodLog(t *testing.T) {
	var buf logbuf.Buffer
	logger := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo}))
	cert := testCertificate(t)

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := httpapi.NewServer(ln.Addr().String(), http.NotFoundHandler(), logger)
	srv.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}}
	go srv.ServeTLS(ln, "", "")
	defer srv.Close()

	const n = 200
	for i := 0; i < n; i++ {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		io.WriteString(c, "garbage that is no TLS ClientHello\r\n\r\n")
		io.Copy(io.Discard, c)
		c.Close()
	}
	time.Sleep(200 * time.Millisecond)
	lines := strings.Count(buf.String(), "TLS handshake error")
	t.Logf("first line: %.200s", buf.String())
	if lines > 20 {
		t.Errorf("%d bad connections wrote %d warn lines about TLS handshakes, no rate limit", n, lines)
	}
}

// TestReadyDoesNotWaitForHealthOnlyChecks: the ready page does not depend
// on the parts every instance shares (the registry): it must not wait for
// them either, or a hung registry makes every instance's readiness probe
// time out at once.
func TestReadyDoesNotWaitForHealthOnlyChecks(t *testing.T) {
	// A registry that hangs for good: a ready page that waited for it
	// would not answer at all, however fast the machine, rather than
	// answer a little late on a slow one.
	hung := make(chan struct{})
	h := httpapi.New(httpapi.Options{Checks: func() []httpapi.Check {
		return []httpapi.Check{
			{Name: "component push.example.org", OK: func() bool { return true }},
			{Name: "registry", HealthOnly: true, OK: func() bool { <-hung; return false }},
		}
	}})
	srv := httptest.NewServer(h)
	defer srv.Close()
	defer close(hung) // before srv.Close, which waits for its handlers
	// kubelet's default probe timeout is 1 s; 5 s is room for a loaded
	// machine, and a page that waits never answers.
	client := &http.Client{Timeout: 5 * time.Second}
	start := time.Now()
	resp, err := client.Get(srv.URL + "/push_appserver/v1/ready")
	if err != nil {
		t.Fatalf("ready page with a health-only check that hangs: %v after %v", err, time.Since(start))
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	t.Logf("ready: %d %q in %v", resp.StatusCode, b, time.Since(start))
	if resp.StatusCode != http.StatusOK {
		t.Errorf("ready page: %d %q, want 200 (a health-only check does not count)", resp.StatusCode, b)
	}
}

// A duplicate field's name is echoed in the answer: one with a line break
// (written %0A in the form) must not add lines to it.
func TestDuplicateFieldAnswerIsOneLine(t *testing.T) {
	f := newFixture(t, false, 0)
	for _, body := range []string{"a%0AOK%0Anode=1&a%0AOK%0Anode=2", "\n&\n", "type=fcm&node=n&token=t&x%0D%0A=1&x%0D%0A=2"} {
		code, got, _ := f.do(t, "POST", "/push_appserver/v1/register", body)
		if code != 400 || !strings.HasPrefix(got, "ERROR\n") || strings.Count(got, "\n") != 1 {
			t.Errorf("%q: %d %q", body, code, got)
		}
	}
}

// TestMetricsDoNotTellWrongSecretFromUnknownNode: README, "What to expose
// where": the labels of /metrics (served on the API's port by default)
// never tell a wrong secret from an unknown node. The cache's lookup
// counter does: pushes with a wrong secret to a node that exists are
// hits, to one that does not are misses.
func TestMetricsDoNotTellWrongSecretFromUnknownNode(t *testing.T) {
	store, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "registry.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	m := metrics.New()
	svc, err := appserver.New(store, []appserver.App{{Name: "fcm", Priority: push.PriorityHigh, Backend: &recorder{}}},
		appserver.Options{Observer: m}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	m.WatchCache(svc.CacheStats)
	srv := httptest.NewServer(httpapi.New(httpapi.Options{Service: svc, Registrations: store, Metrics: m.Handler()}))
	defer srv.Close()
	post := func(path, body string) string {
		resp, err := http.Post(srv.URL+path, "application/x-www-form-urlencoded", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	lookups := func() string {
		resp, err := http.Get(srv.URL + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		var out []string
		for _, l := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(l, "push_appserver_registration_cache_lookups_total{") {
				out = append(out, l)
			}
		}
		return strings.Join(out, " ")
	}
	secret := strings.Split(post("/push_appserver/v1/register", "type=fcm&node=victim&token=tok"), "\n")[2]
	before := lookups()
	// The prober knows no secret.
	for i := 0; i < 10; i++ {
		post("/push_appserver/v1/push", "node=victim&secret=guess")
	}
	existing := lookups()
	for i := 0; i < 10; i++ {
		post("/push_appserver/v1/push", "node=nobody&secret=guess")
	}
	unknown := lookups()
	if existing != before || unknown != before {
		t.Errorf("the cache's counters moved with wrong secrets: %s, after 10 to a registered node %s, after 10 to an unknown one %s", before, existing, unknown)
	}
	// The right secret is counted.
	if got := post("/push_appserver/v1/push", "node=victim&secret="+secret); got != "OK\nvictim" {
		t.Fatalf("push: %q", got)
	}
	if after := lookups(); after == before {
		t.Errorf("a push with the right secret left the cache's counters at %s", after)
	}
}

// testCertificate is a self-signed certificate for a TLS listener under
// test: httptest's, which its clients are told to trust or skip.
func testCertificate(t *testing.T) tls.Certificate {
	t.Helper()
	srv := httptest.NewUnstartedServer(http.NotFoundHandler())
	srv.StartTLS()
	defer srv.Close()
	return srv.TLS.Certificates[0]
}

// TestMalformedHTTPPushesCounted guards that a push request over HTTP
// that can never work (no secret, no node, a broken push-batch) is
// counted in push_appserver_push_rejections_total{reason="malformed"},
// as a malformed publish is: otherwise a backend that sends every push
// without its secret moves no push metric at all, and the operator reads
// that no push arrives.
func TestMalformedHTTPPushesCounted(t *testing.T) {
	f := newFixture(t, false, 0)
	for _, req := range []struct{ path, body string }{
		{"/push_appserver/v1/push", "node=n1"},
		{"/push_appserver/v1/push", "secret=s"},
		{"/push_appserver/v1/push", "node=n1&node=n2&secret=s"},
		{"/push_appserver/v1/push-batch", `{"pushes":[{"node":"n1"}]}`},
	} {
		if code, body, _ := f.do(t, "POST", req.path, req.body); code != 400 {
			t.Fatalf("%s %q: %d %q, want 400", req.path, req.body, code, body)
		}
	}
	_, body, _ := f.do(t, "GET", "/metrics", "")
	if want := `push_appserver_push_rejections_total{reason="malformed"} 4`; !strings.Contains(body, want) {
		t.Errorf("metrics lack %q:\n%s", want, grepLines(body, "push_appserver_push_rejections_total"))
	}
}

// grepLines returns the lines of text that contain s.
func grepLines(text, s string) string {
	var b strings.Builder
	for line := range strings.Lines(text) {
		if strings.Contains(line, s) {
			b.WriteString(line)
		}
	}
	return b.String()
}
