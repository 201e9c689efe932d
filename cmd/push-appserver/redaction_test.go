package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/push-appserver/push-appserver/internal/registry/sqlite"
	"github.com/push-appserver/push-appserver/internal/testutil/apnsmock"
	"github.com/push-appserver/push-appserver/internal/testutil/fcmmock"
)

func randomHex(t *testing.T, n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// TestNoTokensOrSecretsInLogs runs every fault the APNS and FCM mocks can
// inject, plus unreachable and untrusted services and a wrong FCM
// endpoint, through the real binary logging at info, then looks for every
// device token, registration secret and provider/access token used in the
// log and in the registry's stored error reasons.
func TestNoTokensOrSecretsInLogs(t *testing.T) {
	bin := buildBinary(t)
	dir := t.TempDir()
	am, fm, keyFile, sa := startMocks(t, dir)

	now := time.Now()
	apnsFaults := [][]apnsmock.Fault{
		{{Status: 410, Reason: "Unregistered", Timestamp: now}},
		{{Status: 400, Reason: "BadDeviceToken"}},
		{{Status: 400, Reason: "DeviceTokenNotForTopic"}},
		{{Status: 400, Reason: "BadTopic"}},
		{{Status: 413, Reason: "PayloadTooLarge"}},
		{{Status: 403, Reason: "ExpiredProviderToken"}},
		{{Status: 403, Reason: "InvalidProviderToken"}, {Status: 403, Reason: "InvalidProviderToken"}},
		{{Status: 429, Reason: "TooManyRequests"}, {Status: 500, Reason: "InternalServerError"}},
		{{Status: 503, Reason: "ServiceUnavailable"}, {Status: 503}, {Status: 503}, {Status: 503}, {Status: 503}, {Status: 503}, {Status: 503}, {Status: 503}},
		{{Delay: 200 * time.Millisecond}},
		{{Delay: 5 * time.Second}},
		{{GoAway: true}},
		{{Reset: true}},
		{{Reset: true}, {Reset: true}, {Reset: true}, {Reset: true}, {Reset: true}, {Reset: true}, {Reset: true}, {Reset: true}},
		nil, // a push that works
	}
	fcmFaults := [][]fcmmock.Fault{
		{{Status: 404, Code: "UNREGISTERED", Message: "Requested entity was not found."}},
		{{Status: 400, Code: "INVALID_ARGUMENT", Message: "The registration token is not a valid FCM registration token"}},
		{{Status: 400, Code: "INVALID_ARGUMENT", Message: "Invalid value at 'message.android.ttl'"}},
		{{Status: 403, Code: "SENDER_ID_MISMATCH", Message: "SenderId mismatch"}},
		{{Status: 401, Code: "UNAUTHENTICATED"}},
		{{Status: 401, Code: "THIRD_PARTY_AUTH_ERROR"}},
		{{Status: 429, Code: "QUOTA_EXCEEDED", RetryAfter: "1"}},
		{{Status: 429, Code: "QUOTA_EXCEEDED", RetryAfter: "30"}},
		{{Status: 503, Code: "UNAVAILABLE"}, {Status: 500, Code: "INTERNAL"}},
		{{Delay: 5 * time.Second}},
		nil,
	}

	ports := freePorts(t, 2)
	addr, closed := ports[0], ports[1] // nothing listens at closed
	db := filepath.Join(dir, "data", "registry.db")
	apnsApp := func(name, endpoint, ca string) string {
		return fmt.Sprintf("[apps.%s]\nkind = \"apns\"\ntopic = \"im.example.app\"\npriority = \"high\"\ntoken_key_file = %q\nkey_id = \"K1\"\nteam_id = \"T1\"\nendpoint = %q\nca_path = %q\npush_deadline = \"1s\"\n",
			name, keyFile, endpoint, ca)
	}
	fcmApp := func(name, endpoint string) string {
		return fmt.Sprintf("[apps.%s]\nkind = \"fcm\"\nservice_account_file = %q\nendpoint = %q\nca_path = %q\npush_deadline = \"1s\"\n", name, sa, endpoint, fm.CADir)
	}
	config := filepath.Join(dir, "push-appserver.toml")
	os.WriteFile(config, []byte(fmt.Sprintf("data_dir = %q\nrate_limit = 0\nlog_level = \"info\"\n[http]\nlisten = %q\n", filepath.Join(dir, "data"), addr)+
		apnsApp("ios", am.URL, am.CADir)+apnsApp("ios-down", "https://"+closed, am.CADir)+apnsApp("ios-untrusted", am.URL, dir)+
		fcmApp("android", fm.URL)+fcmApp("android-wrong", fm.URL+"/wrong")), 0o600)

	type device struct{ typ, node, token, secret string }
	var devices []*device
	add := func(typ, token string) *device {
		d := &device{typ: typ, node: "node-" + randomHex(t, 8), token: token}
		devices = append(devices, d)
		return d
	}
	for _, fs := range apnsFaults {
		d := add("ios", randomHex(t, 32))
		am.FailToken(d.token, fs...)
	}
	for _, fs := range fcmFaults {
		d := add("android", "fcm-"+randomHex(t, 24))
		fm.FailToken(d.token, fs...)
	}
	add("ios-down", randomHex(t, 32))
	add("ios-untrusted", randomHex(t, 32))
	add("android-wrong", "fcm-"+randomHex(t, 24))

	s := startServer(t, bin, config)
	s.waitHealthy(t, addr)
	for _, d := range devices {
		body := s.post(t, "register", url.Values{"type": {d.typ}, "node": {d.node}, "token": {d.token}})
		lines := strings.Split(body, "\n")
		if len(lines) != 3 || lines[0] != "OK" {
			t.Fatalf("register %s: %q", d.typ, body)
		}
		d.secret = lines[2]
	}
	wrongSecret := randomHex(t, 32)
	var wg sync.WaitGroup
	for _, d := range devices {
		wg.Go(func() {
			s.post(t, "push", url.Values{"node": {d.node}, "secret": {d.secret}})
			s.post(t, "push", url.Values{"node": {d.node}, "secret": {wrongSecret}})
		})
	}
	wg.Wait()
	// Registering a malformed token is refused: its text must not be
	// echoed into the log either.
	badToken := "not-hex-" + randomHex(t, 16)
	s.post(t, "register", url.Values{"type": {"ios"}, "node": {"node-bad"}, "token": {badToken}})
	s.stop(t)

	secrets := map[string]string{"wrong secret": wrongSecret, "malformed token": badToken}
	for _, d := range devices {
		secrets["token of "+d.node] = d.token
		secrets["secret of "+d.node] = d.secret
	}
	addBearers(secrets, am, fm)
	log := s.log.String()
	if !strings.Contains(log, "level=WARN") {
		t.Fatalf("the fault run logged no warnings: it did not run the faults\n%s", log)
	}
	store, err := sqlite.Open(context.Background(), db)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	reasons := 0
	var stored strings.Builder
	for _, d := range devices {
		r, err := store.Get(context.Background(), d.node)
		if err != nil {
			continue // removed as dead
		}
		if r.LastErrorReason != "" {
			reasons++
			fmt.Fprintln(&stored, r.LastErrorReason)
		}
	}
	if reasons < 10 {
		t.Fatalf("only %d stored error reasons: the faults did not reach the registry", reasons)
	}
	for what, v := range secrets {
		if strings.Contains(log, v) {
			t.Errorf("%s appears in the info-level log", what)
		}
		if strings.Contains(stored.String(), v) {
			t.Errorf("%s appears in a stored error reason", what)
		}
	}
	if t.Failed() {
		t.Logf("stored reasons:\n%s", stored.String())
	}
}

// addBearers adds to secrets every provider token and access token the
// mocks saw: credentials no log line may hold.
func addBearers(secrets map[string]string, am *apnsmock.Server, fm *fcmmock.Server) {
	for i, r := range am.Requests() {
		if r.Bearer != "" {
			secrets[fmt.Sprint("APNS provider token ", i)] = r.Bearer
		}
	}
	for i, r := range fm.Requests() {
		if r.Bearer != "" {
			secrets[fmt.Sprint("FCM access token ", i)] = r.Bearer
		}
	}
}
