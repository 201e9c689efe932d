package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/push-appserver/push-appserver/internal/registry"
	"github.com/push-appserver/push-appserver/internal/registry/sqlite"
	"github.com/push-appserver/push-appserver/internal/testutil/apnsmock"
	"github.com/push-appserver/push-appserver/internal/testutil/fcmmock"
)

func (s *server) get(t *testing.T, path string) string {
	t.Helper()
	resp, err := http.Get(s.base + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// startMocks starts an APNS mock (provider key K1 of team T1, topic
// im.example.app) and an FCM mock (project-1), and writes the p8 key and
// the service account into dir.
func startMocks(t *testing.T, dir string) (am *apnsmock.Server, fm *fcmmock.Server, keyFile, serviceAccount string) {
	t.Helper()
	p8, pub, _ := apnsmock.TokenKey()
	keyFile = filepath.Join(dir, "key.p8")
	os.WriteFile(keyFile, p8, 0o600)
	am, err := apnsmock.New(apnsmock.Config{TokenKey: pub, KeyID: "K1", TeamID: "T1", Topic: "im.example.app"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(am.Close)
	fm, err = fcmmock.New("project-1")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(fm.Close)
	if serviceAccount, err = fm.WriteServiceAccount(dir); err != nil {
		t.Fatal(err)
	}
	return am, fm, keyFile, serviceAccount
}

// survivors opens the registry after the server stopped and returns how
// many of nodes are still registered.
func survivors(t *testing.T, db string, nodes []string) int {
	t.Helper()
	store, err := sqlite.Open(context.Background(), db)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	n := 0
	for _, node := range nodes {
		_, err := store.Get(context.Background(), node)
		switch {
		case err == nil:
			n++
		case !errors.Is(err, registry.ErrNotFound):
			t.Fatal(err)
		}
	}
	return n
}

// registerAndPush registers n devices of app typ and pushes each once,
// concurrently, returning the nodes.
func registerAndPush(t *testing.T, s *server, typ string, token func(i int) string, n int) []string {
	t.Helper()
	nodes := make([]string, n)
	secrets := make([]string, n)
	for i := range n {
		nodes[i] = fmt.Sprintf("%s-node-%d", typ, i)
		body := s.post(t, "register", url.Values{"type": {typ}, "node": {nodes[i]}, "token": {token(i)}})
		lines := strings.Split(body, "\n")
		if len(lines) != 3 || lines[0] != "OK" {
			t.Fatalf("register: %q", body)
		}
		secrets[i] = lines[2]
	}
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			if body := s.post(t, "push", url.Values{"node": {nodes[i]}, "secret": {secrets[i]}}); !strings.HasPrefix(body, "ERROR\n") {
				t.Errorf("push to a refused token answered %q", body)
			}
		})
	}
	wg.Wait()
	return nodes
}

// TestMisconfiguredAppKeepsRegistrations plays an app pointed at the wrong
// APNS environment (every token answered BadDeviceToken) and an FCM app
// with a wrong endpoint (bare 404s): the app never delivered a push, so no
// refusal deletes a registration; health and metrics name the app, the
// 404s delete nothing, and the FCM app's pushes are held as for refused
// credentials, the log saying once to check endpoint.
func TestMisconfiguredAppKeepsRegistrations(t *testing.T) {
	bin := buildBinary(t)
	dir := t.TempDir()
	am, fm, keyFile, sa := startMocks(t, dir)
	const n = 50
	apnsToken := func(i int) string { return fmt.Sprintf("%064x", i+1) }
	for i := range n {
		am.FailToken(apnsToken(i), apnsmock.Fault{Status: 400, Reason: "BadDeviceToken"})
	}

	addr := freePort(t)
	db := filepath.Join(dir, "data", "registry.db")
	config := filepath.Join(dir, "push-appserver.toml")
	os.WriteFile(config, fmt.Appendf(nil, `data_dir = %q
rate_limit = 0
[http]
listen = %q
%spriority = "high"
[apps.android]
kind = "fcm"
service_account_file = %q
endpoint = %q
ca_path = %q
`, filepath.Join(dir, "data"), addr, am.AppConfig("ios", keyFile), sa, fm.URL+"/wrong/path", fm.CADir), 0o600)

	s := startServer(t, bin, config)
	s.waitHealthy(t, addr)
	iosNodes := registerAndPush(t, s, "ios", apnsToken, n)
	androidNodes := registerAndPush(t, s, "android", func(i int) string { return fmt.Sprint("fcm-token-", i) }, 20)

	health := s.get(t, "health")
	if !strings.Contains(health, "app ios: down") || !strings.Contains(health, "app android: down") {
		t.Errorf("health does not name the misconfigured app:\n%s", health)
	}
	if m := s.get(t, "../../metrics"); !strings.Contains(m, `push_appserver_app_misconfigured{app="ios"} 1`) {
		t.Errorf("metric missing:\n%s", m)
	}
	if am.Total() != n {
		t.Errorf("APNS mock saw %d requests, want %d", am.Total(), n)
	}
	s.stop(t)
	if c := strings.Count(s.log.String(), `level=ERROR msg="app looks misconfigured`); c != 1 {
		t.Errorf("misconfiguration logged %d times, want once:\n%s", c, s.log.String())
	}
	held := 0
	for _, line := range strings.Split(s.log.String(), "\n") {
		if strings.Contains(line, "holding the app's pushes") && strings.Contains(line, `check="endpoint: pushes go to `+fm.URL+"/wrong/path/") {
			held++
		}
	}
	if held != 1 {
		t.Errorf("holding the FCM app's pushes for its endpoint logged %d times, want once:\n%s", held, s.log.String())
	}
	if !strings.Contains(s.log.String(), "sandbox/production mismatch?") {
		t.Errorf("log does not name the likely cause:\n%s", s.log.String())
	}
	// No push of the app went through: no refusal counts against a token.
	if left := survivors(t, db, iosNodes); left != n {
		t.Errorf("%d of %d APNS registrations left: deleted before the app delivered a push", left, n)
	}
	if left := survivors(t, db, androidNodes); left != len(androidNodes) {
		t.Errorf("%d of %d FCM registrations left after bare 404s", left, len(androidNodes))
	}
}

// check-config says which APNS environment each app uses: the seed's
// default is the sandbox, which refuses every production token.
func TestCheckConfigNamesAPNSEnvironment(t *testing.T) {
	dir := t.TempDir()
	p8, _, _ := apnsmock.TokenKey()
	keyFile := filepath.Join(dir, "key.p8")
	os.WriteFile(keyFile, p8, 0o600)
	path := filepath.Join(dir, "c.toml")
	app := "kind = \"apns\"\ntopic = \"im.example.app\"\ntoken_key_file = %q\nkey_id = \"K\"\nteam_id = \"T\"\n"
	os.WriteFile(path, fmt.Appendf(nil, "[apps.dev]\n"+app+"[apps.store]\n"+app+"sandbox = false\n", keyFile, keyFile), 0o600)
	var out, errb bytes.Buffer
	if code := run([]string{"check-config", "-config", path}, &out, &errb); code != 0 {
		t.Fatalf("rejected: %s", errb.String())
	}
	if !strings.Contains(out.String(), "app dev: APNS sandbox") || !strings.Contains(out.String(), "app store: APNS production") {
		t.Fatalf("environments not shown:\n%s", out.String())
	}
}
