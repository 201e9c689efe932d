package main

import (
	"context"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/push-appserver/push-appserver/internal/metrics"
	"github.com/push-appserver/push-appserver/internal/push"
	"github.com/push-appserver/push-appserver/internal/push/fcm"
	"github.com/push-appserver/push-appserver/internal/testutil/apnsmock"
	"github.com/push-appserver/push-appserver/internal/testutil/fcmmock"
)

// waitFor waits up to 15 s for ok, and fails the test with what and the
// server's log if it does not come.
func (s *server) waitFor(t *testing.T, what string, ok func() bool) {
	t.Helper()
	for deadline := time.Now().Add(15 * time.Second); !ok(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%s\n%s", what, s.log)
		}
	}
}

// logged returns how many lines of the server's log are app's and hold
// all of want.
func (s *server) logged(app string, want ...string) int {
	n := 0
	for _, l := range strings.Split(s.log.String(), "\n") {
		if !strings.Contains(l+" ", " app="+app+" ") {
			continue
		}
		all := true
		for _, w := range want {
			all = all && strings.Contains(l, w)
		}
		if all {
			n++
		}
	}
	return n
}

// credentials is the line of push_appserver_app_credentials_accepted{app}
// in the server's metrics, "" when there is none.
func (s *server) credentials(t *testing.T, app string) string {
	t.Helper()
	series := fmt.Sprintf("push_appserver_app_credentials_accepted{app=%q} ", app)
	for line := range strings.Lines(scrape(t, s.metrics)) {
		if strings.HasPrefix(line, series) {
			return strings.TrimSpace(line)
		}
	}
	return ""
}

// After a start, and after a reload, each app connects to its push
// service before its first push (FCM fetches its access token too), and
// the log says whether it could: the first push finds its connection
// up, and a service the server cannot reach shows at once. Then each
// checks its credentials with a request that reaches no device, and the
// log and the metrics say that the service accepted them.
func TestPushServicesWarmedAtStart(t *testing.T) {
	am, fm, keyFile, account := startMocks(t, t.TempDir())
	s := startWithApps(t, am.AppConfig("ios", keyFile)+fmt.Sprintf("[apps.android]\nkind = \"fcm\"\nservice_account_file = %q\nendpoint = %q\nca_path = %q\n"+
		"[apps.gone]\nkind = \"apns\"\ntopic = \"im.example.app\"\ntoken_key_file = %q\nkey_id = \"K1\"\nteam_id = \"T1\"\nendpoint = \"https://%s\"\nca_path = %q\n",
		account, fm.URL, fm.CADir, keyFile, freePort(t), am.CADir))
	s.waitFor(t, "no connection to APNS before the first push", func() bool { return am.OpenConnections() == 1 })
	s.waitFor(t, "no FCM access token and connection before the first push", func() bool { return fm.TokenRequests() == 1 && fm.OpenConnections() == 1 })
	s.waitFor(t, "the reachable apps not logged", func() bool {
		return s.logged("ios", "push service reachable") == 1 && s.logged("android", "push service reachable") == 1
	})
	s.waitFor(t, "the unreachable app not logged", func() bool { return s.logged("gone", "push service not reachable yet") == 1 })
	s.waitFor(t, "the accepted credentials not logged", func() bool {
		return s.logged("ios", "level=INFO", "push service accepted our credentials") == 1 && s.logged("android", "level=INFO", "push service accepted our credentials") == 1
	})
	for app, want := range map[string]string{"ios": "1", "android": "1", "gone": "-1"} {
		if got := s.credentials(t, app); got != fmt.Sprintf("push_appserver_app_credentials_accepted{app=%q} %s", app, want) {
			t.Errorf("%s's credentials in the metrics: %q, want %s", app, got, want)
		}
	}
	if len(am.Checks()) != 1 || am.Total() != 0 || len(fm.Checks()) != 1 || len(fm.Requests()) != 0 || fm.Accepted() != 0 {
		t.Fatalf("APNS: %d checks, %d pushes; FCM: %d checks, %d sends, %d delivered: want one check each, and no push",
			len(am.Checks()), am.Total(), len(fm.Checks()), len(fm.Requests()), fm.Accepted())
	}

	secret := s.registerTo(t, "ios", "n1", strings.Repeat("0a", 32))
	if got := s.post(t, "push", url.Values{"node": {"n1"}, "secret": {secret}}); got != "OK\nn1" {
		t.Fatalf("push: %q", got)
	}
	if n := am.Connections(); n != 1 {
		t.Fatalf("%d connections to APNS: the push did not take the one opened at start", n)
	}
	if am.Accepted() != 1 {
		t.Fatalf("APNS delivered %d pushes, want the one push", am.Accepted())
	}

	// A reload that changes nothing keeps each app's backend and its
	// connection: a new one for each app at once, on a server of many
	// apps, meets services and proxies that bound new connections.
	s.cmd.Process.Signal(syscall.SIGHUP)
	s.waitFor(t, "the unchanged reload not logged", func() bool { return strings.Contains(s.log.String(), "reload: nothing changed") })
	if n, tokens := am.Connections(), fm.TokenRequests(); n != 1 || tokens != 1 {
		t.Fatalf("a reload that changed nothing: %d connections to APNS, %d FCM token requests; want 1 and 1", n, tokens)
	}

	// The APNS key renewed in place: the APNS apps' backends are rebuilt
	// and check again; the FCM app, unchanged, keeps its own.
	key, _ := os.ReadFile(keyFile)
	os.WriteFile(keyFile, append(key, '\n'), 0o600)
	s.cmd.Process.Signal(syscall.SIGHUP)
	s.waitFor(t, "no connection from the reloaded backend before its first push", func() bool { return am.Connections() == 2 })
	s.waitFor(t, "the reloaded app's credentials not checked again", func() bool {
		return len(am.Checks()) == 2 && s.logged("ios", "push service accepted our credentials") == 2
	})
	if n := len(fm.Checks()); n != 1 {
		t.Errorf("the FCM app, unchanged by the reload, checked its credentials %d times, want 1", n)
	}
}

// A key revoked after the check at start shows in the metrics as soon as
// a push is refused for it, not only as failed pushes: the credentials
// gauge, which PushAppserverCredentialsRefused alerts on, said 1 until
// the next reload. A push the service takes again says 1 again.
func TestCredentialsRefusedByPushShowInMetrics(t *testing.T) {
	am, _, keyFile, _ := startMocks(t, t.TempDir())
	s := startWithApps(t, am.AppConfig("ios", keyFile))
	s.waitFor(t, "the accepted credentials not logged", func() bool {
		return s.logged("ios", "push service accepted our credentials") == 1
	})
	token := strings.Repeat("0b", 32)
	secret := s.registerTo(t, "ios", "n1", token)
	push := func() string { return s.post(t, "push", url.Values{"node": {"n1"}, "secret": {secret}}) }
	if got := push(); got != "OK\nn1" {
		t.Fatalf("push: %q", got)
	}
	// Revoked: refused, and refused again once the provider token is
	// signed anew.
	revoked := apnsmock.Fault{Status: 403, Reason: "InvalidProviderToken"}
	am.FailToken(token, revoked, revoked)
	if got := push(); strings.HasPrefix(got, "OK") {
		t.Fatalf("push refused for our key: %q", got)
	}
	if got, want := s.credentials(t, "ios"), `push_appserver_app_credentials_accepted{app="ios"} 0`; got != want {
		t.Errorf("after a push refused for our key, the metrics say %q, want %q", got, want)
	}
	s.waitFor(t, "the refusal not logged", func() bool {
		return s.logged("ios", "level=WARN", "push service refused our credentials for a push") == 1
	})
	s.waitFor(t, "the refused push not redelivered once the key is taken again", func() bool { return am.Accepted() == 2 })
	if got := push(); got != "OK\nn1" {
		t.Fatalf("push once the key is taken again: %q", got)
	}
	if got, want := s.credentials(t, "ios"), `push_appserver_app_credentials_accepted{app="ios"} 1`; got != want {
		t.Errorf("after a push taken again, the metrics say %q, want %q", got, want)
	}
}

// Credentials a push service refuses (an APNS key of another team, a
// topic not the key's, an FCM project the service account may not send
// to, a service account key Google does not take) are logged as an error that names the service's reason and what to
// check, and show as 0 in the metrics; an answer that tells nothing (a
// 503) is logged as such, and is no 0. Nothing of the provider token or
// the access token is logged.
func TestRefusedCredentialsLogged(t *testing.T) {
	am, fm, keyFile, account := startMocks(t, t.TempDir())
	fm.FailToken(fcm.CheckToken, fcmmock.Fault{Status: 503, Message: "The service is currently unavailable."})
	strangerKey, err := fcmmock.WriteForeignServiceAccount(t.TempDir(), "project-1")
	if err != nil {
		t.Fatal(err)
	}
	wrongTopic := strings.Replace(am.AppConfig("wrongtopic", keyFile), `topic = "im.example.app"`, `topic = "im.example.other"`, 1)
	s := startWithApps(t, strings.Replace(am.AppConfig("wrongteam", keyFile), `team_id = "T1"`, `team_id = "T9"`, 1)+wrongTopic+
		fmt.Sprintf("[apps.wrongproject]\nkind = \"fcm\"\nservice_account_file = %q\nproject_id = \"project-9\"\nendpoint = %q\nca_path = %q\n"+
			"[apps.android]\nkind = \"fcm\"\nservice_account_file = %q\nendpoint = %q\nca_path = %q\n"+
			"[apps.strangerkey]\nkind = \"fcm\"\nservice_account_file = %q\ntoken_url = %q\nendpoint = %q\nca_path = %q\n",
			account, fm.URL, fm.CADir, account, fm.URL, fm.CADir, strangerKey, fm.TokenURL, fm.URL, fm.CADir))
	refused := "level=ERROR msg=\"push service refused our credentials"
	s.waitFor(t, "the refused credentials not logged", func() bool {
		return s.logged("wrongteam", refused, "reason=\"APNS 403 InvalidProviderToken\"", "key_id, team_id and token_key_file") == 1 &&
			s.logged("wrongtopic", refused, "reason=\"APNS 400 TopicDisallowed\"", "is the app's bundle ID") == 1 &&
			s.logged("wrongproject", refused, "reason=\"FCM 403 SENDER_ID_MISMATCH: SenderId mismatch\"", "project_id (project-9)") == 1 &&
			s.logged("strangerkey", refused, "invalid_grant", "service_account_file") == 1 &&
			s.logged("android", "level=WARN", "could not check our credentials", "503") == 1
	})
	for app, want := range map[string]string{"wrongteam": "0", "wrongtopic": "0", "wrongproject": "0", "strangerkey": "0", "android": "-1"} {
		if got := s.credentials(t, app); got != fmt.Sprintf("push_appserver_app_credentials_accepted{app=%q} %s", app, want) {
			t.Errorf("%s's credentials in the metrics: %q, want %s", app, got, want)
		}
	}
	var secrets []string
	for _, r := range am.Checks() {
		secrets = append(secrets, r.Bearer)
	}
	for _, r := range fm.Checks() {
		secrets = append(secrets, r.Bearer)
	}
	// The wrong team's InvalidProviderToken is asked again with a
	// provider token signed anew, as a push would be.
	if len(secrets) != 5 {
		t.Fatalf("%d checks reached the mocks, want 5", len(secrets))
	}
	for _, secret := range secrets {
		if secret == "" || strings.Contains(s.log.String(), secret) {
			t.Fatalf("a token the checks sent (%d bytes) is in the log, or none was sent", len(secret))
		}
	}
	if am.Total() != 0 || len(fm.Requests()) != 0 {
		t.Fatalf("the checks reached the mocks as pushes: %d to APNS, %d to FCM", am.Total(), len(fm.Requests()))
	}
}

// A check that ends after a later check of the same app started, a
// reload's, records nothing: its backend's configuration no longer runs.
func TestCredentialsGaugeTakesLatestCheck(t *testing.T) {
	m := metrics.New()
	g := &credentialsGauge{m: m}
	replaced := g.start("ios")
	reloaded := g.start("ios")
	if !reloaded(metrics.CredentialsAccepted) {
		t.Fatal("the latest check was not recorded")
	}
	if replaced(metrics.CredentialsUnknown) {
		t.Fatal("the replaced backend's check, ending last, was recorded")
	}
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if want := `push_appserver_app_credentials_accepted{app="ios"} 1`; !strings.Contains(rec.Body.String(), want+"\n") {
		t.Fatalf("no %s in\n%s", want, rec.Body)
	}
}

// slowWarmer is a backend whose warm-up waits for release, counting the
// warm-ups under way and the most at once.
type slowWarmer struct {
	release       chan struct{}
	mu            sync.Mutex
	now, most, ok int
}

func (w *slowWarmer) Send(context.Context, push.Notification) error { return nil }

func (w *slowWarmer) Warm(ctx context.Context) error {
	w.mu.Lock()
	w.now++
	w.most = max(w.most, w.now)
	w.mu.Unlock()
	<-w.release
	w.mu.Lock()
	w.now--
	w.ok++
	w.mu.Unlock()
	return nil
}

func (w *slowWarmer) state() (now, most, ok int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.now, w.most, w.ok
}

// Many apps warm up a few at a time, not in one burst of dials and token
// fetches, and every one of them does.
func TestWarmUpsBounded(t *testing.T) {
	w := &slowWarmer{release: make(chan struct{})}
	slots := make(warmSlots, maxWarmups)
	const apps = 30
	for i := range apps {
		warm(context.Background(), slots, fmt.Sprint("app", i), w, nil, slog.New(slog.DiscardHandler))
	}
	wait := func(what string, done func(now, most, ok int) bool) {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); !done(w.state()); time.Sleep(time.Millisecond) {
			if time.Now().After(deadline) {
				now, most, ok := w.state()
				t.Fatalf("%s: %d under way, %d at most, %d done", what, now, most, ok)
			}
		}
	}
	wait("the first warm-ups never started", func(now, _, _ int) bool { return now == maxWarmups })
	close(w.release)
	wait("not every app warmed up", func(_, _, ok int) bool { return ok == apps })
	if _, most, _ := w.state(); most > maxWarmups {
		t.Fatalf("%d warm-ups at once, want at most %d", most, maxWarmups)
	}
}

// A refusal fixed outside the configuration file (the service account
// given its FCM role in Google Cloud, an APNS key's topics in Apple's
// portal) and a SIGHUP, as the error line and the alert ask: the app's
// options and files are unchanged, so the reload keeps its backend, but
// the credentials must be checked again, or
// push_appserver_app_credentials_accepted stays 0 and the critical
// PushAppserverCredentialsRefused alert fires on while every push goes
// through.
func TestReloadChecksRefusedCredentialsAgain(t *testing.T) {
	_, fm, _, account := startMocks(t, t.TempDir())
	// The account lacks its role: FCM refuses the first check only.
	fm.FailToken(fcm.CheckToken, fcmmock.Fault{Status: 403, Message: "Permission 'cloudmessaging.messages.create' denied on resource"})
	s := startWithApps(t, fmt.Sprintf("[apps.android]\nkind = \"fcm\"\nservice_account_file = %q\nendpoint = %q\nca_path = %q\n", account, fm.URL, fm.CADir))
	s.waitFor(t, "the refusal not in the metrics", func() bool {
		return s.credentials(t, "android") == `push_appserver_app_credentials_accepted{app="android"} 0`
	})
	// The role granted in Google Cloud; a push now goes through.
	secret := s.registerTo(t, "android", "n1", "fcm-token-1")
	if got := s.post(t, "push", url.Values{"node": {"n1"}, "secret": {secret}}); got != "OK\nn1" {
		t.Fatalf("push: %q", got)
	}
	s.cmd.Process.Signal(syscall.SIGHUP)
	s.waitFor(t, "the reload not logged", func() bool { return strings.Contains(s.log.String(), "reload: ") })
	deadline := time.Now().Add(10 * time.Second)
	for s.credentials(t, "android") != `push_appserver_app_credentials_accepted{app="android"} 1` {
		if time.Now().After(deadline) {
			t.Fatalf("after the fix and a SIGHUP: %q (%d checks), want 1; pushes go through\n%s", s.credentials(t, "android"), len(fm.Checks()), s.log)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// A refusal of the start's check that passes by itself (a host whose
// clock was off at boot until NTP set it right, a role granted at
// Google's) is over once the app's service takes one of its pushes: the
// gauge, and with it PushAppserverCredentialsRefused ("every push of the
// app fails"), does not wait for a reload.
func TestCredentialsRefusalThatPassedClears(t *testing.T) {
	am, _, keyFile, _ := startMocks(t, t.TempDir())
	// The check and the one try with a token signed anew.
	for range 2 {
		am.FailToken(apnsmock.NoDevice, apnsmock.Fault{Status: 403, Reason: "ExpiredProviderToken"})
	}
	s := startWithApps(t, am.AppConfig("ios", keyFile))
	s.waitFor(t, "the refusal not in the metrics", func() bool {
		return s.credentials(t, "ios") == `push_appserver_app_credentials_accepted{app="ios"} 0`
	})
	secret := s.registerTo(t, "ios", "n1", strings.Repeat("ab", 32))
	if got := s.post(t, "push", url.Values{"node": {"n1"}, "secret": {secret}}); got != "OK\nn1" {
		t.Fatalf("push: %q", got)
	}
	s.waitFor(t, "the gauge still 0 after the app's service took a push", func() bool {
		return s.credentials(t, "ios") == `push_appserver_app_credentials_accepted{app="ios"} 1`
	})
	// The log comes through the server's stderr, read apart from the
	// metrics: the line may trail the gauge.
	const took = "push service took a push of the app: it accepts our credentials now"
	s.waitFor(t, "the end of the refusal not logged", func() bool { return s.logged("ios", took) > 0 })
	if n := s.logged("ios", took); n != 1 {
		t.Errorf("the end of the refusal logged %d times, want once:\n%s", n, s.log)
	}
}

// A reload that brings credentials the service refuses (the key of
// another team) while a push is under way on the old backend, whose key
// Apple takes: that push, answered after the new backend's check began,
// proves nothing of the new backend, and must not mark the app's
// credentials accepted nor swallow the refusal's error line.
func TestReloadRefusalNotUndoneByOldBackendsPush(t *testing.T) {
	am, _, keyFile, _ := startMocks(t, t.TempDir())
	s := startWithApps(t, am.AppConfig("ios", keyFile))
	s.waitFor(t, "the start's check not accepted", func() bool {
		return s.credentials(t, "ios") == `push_appserver_app_credentials_accepted{app="ios"} 1`
	})
	token := strings.Repeat("ab", 32)
	secret := s.registerTo(t, "ios", "n1", token)
	// Apple is slow to answer this one push.
	am.FailToken(token, apnsmock.Fault{Delay: 2 * time.Second})
	done := make(chan string, 1)
	go func() { done <- s.post(t, "push", url.Values{"node": {"n1"}, "secret": {secret}}) }()
	s.waitFor(t, "the push never reached APNS", func() bool { return am.Total() == 1 })
	config := s.cmd.Args[3]
	text, _ := os.ReadFile(config)
	os.WriteFile(config, []byte(strings.Replace(string(text), `team_id = "T1"`, `team_id = "T9"`, 1)), 0o600)
	s.cmd.Process.Signal(syscall.SIGHUP)
	if got := <-done; got != "OK\nn1" {
		t.Fatalf("push on the old backend: %q", got)
	}
	// The old backend's push has been counted by now: its answer came
	// after it.
	s.waitFor(t, "after a reload to a key Apple refuses, the gauge is not 0", func() bool {
		return s.credentials(t, "ios") == `push_appserver_app_credentials_accepted{app="ios"} 0`
	})
	if s.logged("ios", "push service refused our credentials") != 1 {
		t.Errorf("the new backend's refusal not logged")
	}
	if n := s.logged("ios", "it accepts our credentials now"); n != 0 {
		t.Errorf("the old backend's push logged as the end of the new backend's refusal")
	}
}

// checkedWarmer is a backend whose warm-up and credentials check pass.
type checkedWarmer struct{ slowWarmer }

func (*checkedWarmer) CheckCredentials(context.Context) error { return nil }

// gateCalls records what the core's credentials gate is told.
type gateCalls struct {
	changed  chan string
	accepted chan string
}

func (g *gateCalls) CredentialsChanged(app string)  { g.changed <- app }
func (g *gateCalls) CredentialsAccepted(app string) { g.accepted <- app }

// A reload's backend check tells the core's credentials gate at its
// start (the app's held pushes then try the new credentials at once, not
// at their turn of the backoff) and once the service accepted them (they
// are all released then): a reload that mends a refused key must not
// leave the pushes held meanwhile waiting up to a minute.
func TestCredentialsCheckTellsGate(t *testing.T) {
	g := &credentialsGauge{m: metrics.New(), logger: slog.New(slog.DiscardHandler)}
	calls := &gateCalls{changed: make(chan string, 1), accepted: make(chan string, 1)}
	g.setGate(calls)
	b := &checkedWarmer{slowWarmer{release: make(chan struct{})}}
	close(b.release)
	warm(context.Background(), make(warmSlots, 1), "ios", b, g, slog.New(slog.DiscardHandler))
	for what, ch := range map[string]chan string{"the check's start": calls.changed, "the check's acceptance": calls.accepted} {
		select {
		case app := <-ch:
			if app != "ios" {
				t.Fatalf("%s told of app %q, want ios", what, app)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%s not told to the gate", what)
		}
	}
}
