package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/push-appserver/push-appserver/internal/testutil/apnsmock"
	"github.com/push-appserver/push-appserver/internal/testutil/fcmmock"
	"github.com/push-appserver/push-appserver/internal/testutil/webpushmock"
)

// sendTest runs send-test and returns its exit code and output.
func sendTest(t *testing.T, args ...string) (int, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(append([]string{"send-test"}, args...), &out, &errb)
	return code, out.String() + errb.String()
}

func wantAll(t *testing.T, what, out string, want ...string) {
	t.Helper()
	for _, w := range want {
		if !strings.Contains(out, w) {
			t.Errorf("%s: output lacks %q:\n%s", what, w, out)
		}
	}
}

// TestSendTestAPNS: send-test shows APNS's whole answer, status,
// apns-id, apns-unique-id and body, on success and on refusal, and every
// answer when the backend retried; the token stays out of the output.
func TestSendTestAPNS(t *testing.T) {
	dir := t.TempDir()
	m, _, keyFile, _ := startMocks(t, dir)
	cfg := writeConfig(t, fmt.Sprintf("[apps.ios]\nkind = \"apns\"\ntopic = \"im.example.app\"\ntoken_key_file = %q\nkey_id = \"K1\"\nteam_id = \"T1\"\nendpoint = %q\nca_path = %q\npush_deadline = \"20s\"\n",
		keyFile, m.URL, m.CADir))
	token := strings.Repeat("0b", 32)
	args := []string{"-config", cfg, "-app", "ios", "-token", token}

	code, out := sendTest(t, args...)
	reqs := m.Requests()
	if code != 0 || len(reqs) != 1 || reqs[0].Token != token {
		t.Fatalf("exit %d, requests %+v\n%s", code, reqs, out)
	}
	wantAll(t, "accepted", out,
		"answer 1 to POST "+m.URL+"/3/device/<token>:",
		"  HTTP 200\n",
		"  apns-id: "+reqs[0].ID+"\n",
		"  apns-unique-id: "+reqs[0].UniqueID+"\n",
		"  body: (empty)\n",
		"result: accepted")
	if strings.Contains(out, token) {
		t.Fatalf("the token is in the output:\n%s", out)
	}
	if code, out := sendTest(t, append(args, "-show-secrets")...); code != 0 || !strings.Contains(out, "/3/device/"+token+":") {
		t.Fatalf("-show-secrets: exit %d\n%s", code, out)
	}
	// The token from a file, out of the process list.
	tokenFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokenFile, []byte(" "+token+"\r\nanother line\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	m.Reset()
	if code, out := sendTest(t, "-config", cfg, "-app", "ios", "-token-file", tokenFile); code != 0 || len(m.Requests()) != 1 || m.Requests()[0].Token != token {
		t.Fatalf("-token-file: exit %d, requests %+v\n%s", code, m.Requests(), out)
	}

	// faulted answers the next push with f and runs send-test, which
	// must exit with code after the given number of requests.
	faulted := func(what string, f apnsmock.Fault, code, requests int) (string, []apnsmock.Request) {
		t.Helper()
		m.Reset()
		m.FailToken(token, f)
		got, out := sendTest(t, args...)
		if reqs := m.Requests(); got != code || len(reqs) != requests {
			t.Fatalf("%s: exit %d, %d requests\n%s", what, got, len(reqs), out)
		}
		return out, m.Requests()
	}
	out, reqs = faulted("refused", apnsmock.Fault{Status: 400, Reason: "BadTopic"}, 1, 1)
	wantAll(t, "refused", out,
		"  HTTP 400\n",
		"  apns-id: "+reqs[0].ID+"\n",
		"  content-type: application/json\n",
		`  body: {"reason":"BadTopic"}`+"\n",
		"result: refused: push service refused our credentials: APNS 400 BadTopic; check topic")

	out, _ = faulted("dead token", apnsmock.Fault{Status: 410, Reason: "Unregistered", Timestamp: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}, 1, 1)
	wantAll(t, "dead token", out, "  HTTP 410\n", `"reason":"Unregistered","timestamp":1767323045000`,
		"result: dead token: Unregistered, since 2026-01-02T03:04:05Z")

	// A retried push shows both answers, in order.
	out, reqs = faulted("retried", apnsmock.Fault{Status: 503, Reason: "ServiceUnavailable"}, 0, 2)
	first, second := strings.Index(out, "apns-id: "+reqs[0].ID), strings.Index(out, "apns-id: "+reqs[1].ID)
	if first < 0 || second < first || !strings.Contains(out, "answer 2 to POST") || !strings.Contains(out, `"reason":"ServiceUnavailable"`) {
		t.Fatalf("retried push's answers:\n%s", out)
	}

	if code, out := sendTest(t, "-config", cfg, "-app", "android", "-token", token); code != 1 || !strings.Contains(out, `no app "android"`) {
		t.Fatalf("unknown app: exit %d %s", code, out)
	}
}

// TestSendTestFCM: FCM's answer body is shown, the message name on
// success, the error with its code on refusal, and Retry-After.
func TestSendTestFCM(t *testing.T) {
	dir := t.TempDir()
	_, m, _, sa := startMocks(t, dir)
	cfg := writeConfig(t, fmt.Sprintf("[apps.android]\nkind = \"fcm\"\nservice_account_file = %q\nendpoint = %q\nca_path = %q\npush_deadline = \"20s\"\n", sa, m.URL, m.CADir))
	token := "fcm-device-token-1"
	args := []string{"-config", cfg, "-app", "android", "-token", token}

	code, out := sendTest(t, args...)
	reqs := m.Requests()
	if code != 0 || len(reqs) != 1 || reqs[0].Name == "" {
		t.Fatalf("exit %d, requests %+v\n%s", code, reqs, out)
	}
	wantAll(t, "accepted", out,
		"answer 1 to POST "+m.URL+"/v1/projects/project-1/messages:send:",
		"  HTTP 200\n", "  content-type: application/json\n",
		`  body: {"name":"`+reqs[0].Name+`"}`+"\n", "result: accepted")

	m.FailToken(token, fcmmock.Fault{Status: 503, RetryAfter: "1"}, fcmmock.Fault{Status: 404, Code: "UNREGISTERED", Message: "Requested entity was not found."})
	code, out = sendTest(t, args...)
	if code != 1 {
		t.Fatalf("unregistered: exit %d\n%s", code, out)
	}
	wantAll(t, "retried, then unregistered", out,
		"answer 1 to POST", "  HTTP 503\n", "  retry-after: 1\n", `"status":"UNAVAILABLE"`,
		"answer 2 to POST", "  HTTP 404\n", `"errorCode":"UNREGISTERED"`, `"message":"Requested entity was not found."`,
		"result: dead token: UNREGISTERED")
}

// TestSendTestWebPush: a WebPush answer is shown with its Location; the
// endpoint, which is the subscription, only with -show-secrets.
func TestSendTestWebPush(t *testing.T) {
	m, keyFile, pub := webpushmock.Start(t)
	sub, err := m.Subscribe(pub)
	if err != nil {
		t.Fatal(err)
	}
	cfg := writeConfig(t, fmt.Sprintf("[apps.web]\nkind = \"webpush\"\nvapid_key_file = %q\nvapid_subject = \"mailto:ops@example.org\"\nca_path = %q\npush_deadline = \"20s\"\nallow_private_endpoints = true\nendpoint_ports = [%d]\n",
		keyFile, m.CADir, m.Port))
	args := []string{"-config", cfg, "-app", "web", "-token", sub.JSON}

	code, out := sendTest(t, args...)
	if code != 0 || m.Accepted() != 1 {
		t.Fatalf("exit %d, accepted %d\n%s", code, m.Accepted(), out)
	}
	wantAll(t, "accepted", out, "answer 1 to POST "+m.URL+"/…:", "  HTTP 201\n",
		"  location: "+m.URL+"/message/"+sub.ID+"\n", "result: accepted")
	if strings.Count(out, sub.ID) != 1 { // in the Location header only
		t.Fatalf("the subscription's endpoint is in the output:\n%s", out)
	}
	if code, out := sendTest(t, append(args, "-show-secrets")...); code != 0 || !strings.Contains(out, "to POST "+sub.Endpoint+":") {
		t.Fatalf("-show-secrets: exit %d\n%s", code, out)
	}

	m.Unsubscribe(sub.ID)
	code, out = sendTest(t, args...)
	if code != 1 {
		t.Fatalf("gone: exit %d\n%s", code, out)
	}
	// One push, at a service that has vouched for nothing: the push
	// path would keep the registration (webpush.GoneGuard).
	wantAll(t, "gone", out, "  HTTP 410\n", "  body: subscription expired\n", "result: temporary failure after retries: kept: 410 Gone from "+m.URL)
}

// readTokenFile takes the first line, trimmed, from a file or from
// standard input, and refuses an empty one.
func TestReadTokenFile(t *testing.T) {
	for _, tc := range []struct {
		in, want string
		ok       bool
	}{
		{in: "abc\n", want: "abc", ok: true},
		{in: "  abc \r\nxyz\n", want: "abc", ok: true},
		{in: "abc", want: "abc", ok: true},
		{in: "\nabc\n"},
		{in: ""},
	} {
		got, err := readTokenFile("-", strings.NewReader(tc.in))
		if got != tc.want || (err == nil) != tc.ok {
			t.Errorf("%q: %q, %v; want %q, ok %v", tc.in, got, err, tc.want, tc.ok)
		}
	}
	if _, err := readTokenFile(filepath.Join(t.TempDir(), "none"), nil); err == nil {
		t.Error("a missing file read")
	}
}
