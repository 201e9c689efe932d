package fcm_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/push-appserver/push-appserver/internal/push"
	"github.com/push-appserver/push-appserver/internal/push/fcm"
	"github.com/push-appserver/push-appserver/internal/testutil/fcmmock"
	"github.com/push-appserver/push-appserver/internal/testutil/logbuf"
	"github.com/push-appserver/push-appserver/internal/testutil/mockhttp"
)

const token = "fcm-device-token:APA91b-abc_123"

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

func setup(t testing.TB) (*fcmmock.Server, fcm.Options) {
	t.Helper()
	m, err := fcmmock.New("chat-app-1234")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Close)
	sa, err := m.WriteServiceAccount(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return m, fcm.Options{ServiceAccountFile: sa, Endpoint: m.URL, CAPath: m.CADir, PushDeadline: 3 * time.Second}
}

func newBackend(t testing.TB, o fcm.Options) *fcm.Backend {
	t.Helper()
	b, err := fcm.New(o, quiet)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func send(b *fcm.Backend, s *push.Summary) error {
	return b.Send(context.Background(), push.Notification{App: "fcm", Node: "node-1", Token: token, Priority: push.PriorityHigh, Summary: s})
}

func TestOptionsReachFCM(t *testing.T) {
	summary := &push.Summary{MessageCount: 2, LastMessageSender: "juliet@example.org", LastMessageBody: "hi", HasLastMessageBody: true}
	tests := []struct {
		name  string
		opts  func(*fcm.Options)
		check func(t *testing.T, m map[string]any)
	}{
		{"defaults: data-only, high, no content", nil, func(t *testing.T, m map[string]any) {
			android := m["android"].(map[string]any)
			data := m["data"].(map[string]any)
			if m["token"] != token || android["priority"] != "HIGH" || android["ttl"] != nil || android["notification"] != nil || android["collapse_key"] != nil {
				t.Fatalf("%v", m)
			}
			if data["node"] != "node-1" || data["last-message-body"] != nil || data["last-message-sender"] != nil {
				t.Fatalf("data %v", data)
			}
		}},
		{"normal priority, ttl, collapse key", func(o *fcm.Options) { o.Priority = "normal"; o.TTL = time.Hour; o.CollapseKey = "chat" }, func(t *testing.T, m map[string]any) {
			android := m["android"].(map[string]any)
			if android["priority"] != "NORMAL" || android["ttl"] != "3600s" || android["collapse_key"] != "chat" {
				t.Fatalf("%v", android)
			}
		}},
		{"visible notification", func(o *fcm.Options) { o.NotificationTitle = "New message"; o.NotificationBody = "Open the app" }, func(t *testing.T, m map[string]any) {
			n := m["android"].(map[string]any)["notification"].(map[string]any)
			if n["title"] != "New message" || n["body"] != "Open the app" {
				t.Fatalf("%v", n)
			}
		}},
		{"summary when allowed", func(o *fcm.Options) { o.IncludeSummary = true }, func(t *testing.T, m map[string]any) {
			data := m["data"].(map[string]any)
			if data["last-message-sender"] != "juliet@example.org" || data["last-message-body"] != "hi" || data["message-count"] != "2" {
				t.Fatalf("data %v", data)
			}
		}},
	}
	// FCM counts its 4,096 bytes over the data's keys and values: a long
	// sender and a long body are shortened until they fit together.
	t.Run("long sender and body fit", func(t *testing.T) {
		m, o := setup(t)
		o.IncludeSummary = true
		long := &push.Summary{LastMessageSender: strings.Repeat("j", 3000) + "@example.org", LastMessageBody: strings.Repeat("b", 3000), HasLastMessageBody: true}
		if err := send(newBackend(t, o), long); err != nil {
			t.Fatal(err)
		}
		data := m.Requests()[0].Message["data"].(map[string]any)
		size := 0
		for k, v := range data {
			size += len(k) + len(v.(string))
		}
		if size > 4096 || len(data["last-message-body"].(string)) < 500 {
			t.Fatalf("%d bytes of data, body %d bytes", size, len(data["last-message-body"].(string)))
		}
	})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, o := setup(t)
			if tt.opts != nil {
				tt.opts(&o)
			}
			if err := send(newBackend(t, o), summary); err != nil {
				t.Fatal(err)
			}
			reqs := m.Requests()
			if len(reqs) != 1 || reqs[0].Project != "chat-app-1234" {
				t.Fatalf("%+v", reqs)
			}
			tt.check(t, reqs[0].Message)
		})
	}
}

func TestAnswers(t *testing.T) {
	tests := []struct {
		name   string
		faults []fcmmock.Fault
		check  func(t *testing.T, err error)
		tries  int
	}{
		{"unregistered", []fcmmock.Fault{{Status: 404, Code: "UNREGISTERED", Message: "Requested entity was not found."}}, func(t *testing.T, err error) {
			if _, ok := push.IsDeadToken(err); !ok {
				t.Fatalf("%v", err)
			}
		}, 1},
		{"invalid token argument", []fcmmock.Fault{{Status: 400, Code: "INVALID_ARGUMENT", Message: "The registration token is not a valid FCM registration token"}}, func(t *testing.T, err error) {
			if _, ok := push.IsDeadToken(err); !ok {
				t.Fatalf("%v", err)
			}
		}, 1},
		{"invalid argument not about the token", []fcmmock.Fault{{Status: 400, Code: "INVALID_ARGUMENT", Message: "Invalid value at 'message.android.ttl'"}}, func(t *testing.T, err error) {
			if _, ok := push.IsDeadToken(err); ok || err == nil || push.IsTemporary(err) {
				t.Fatalf("%v", err)
			}
		}, 1},
		{"quota, unavailable, internal, then success", []fcmmock.Fault{{Status: 429, Code: "QUOTA_EXCEEDED", RetryAfter: "1"}, {Status: 503, Code: "UNAVAILABLE"}, {Status: 500, Code: "INTERNAL"}}, func(t *testing.T, err error) {
			if err != nil {
				t.Fatal(err)
			}
		}, 4},
		{"sender id mismatch: a dead token while the app looks healthy, no retry", []fcmmock.Fault{{Status: 403, Code: "SENDER_ID_MISMATCH", Message: "SenderId mismatch"}}, func(t *testing.T, err error) {
			if d, ok := push.IsDeadToken(err); !ok || d.Reason != "SENDER_ID_MISMATCH" {
				t.Fatalf("%v", err)
			}
		}, 1},
		{"404 with FCM's UNREGISTERED body: dead", []fcmmock.Fault{{Status: 404, Code: "UNREGISTERED"}}, func(t *testing.T, err error) {
			if _, ok := push.IsDeadToken(err); !ok {
				t.Fatalf("%v", err)
			}
		}, 1},
		// FCM's word on the project in the URL (a project_id naming no
		// Firebase project), not on the token: kept for later, as the
		// other refusals of our configuration are.
		{"404 with another FCM error: the project, kept for later, no retry", []fcmmock.Fault{{Status: 404, Code: "NOT_FOUND", Message: "Requested entity was not found."}}, func(t *testing.T, err error) {
			var cr *push.CredentialsRefusedError
			if _, ok := push.IsDeadToken(err); ok || !push.IsTemporary(err) || !errors.As(err, &cr) || !strings.Contains(cr.Check, "project_id") {
				t.Fatalf("%v", err)
			}
		}, 1},
		// The APNs or web push key the project holds: refused for the
		// app's iOS and web devices alone (Partial).
		{"third party auth error: our configuration, kept for later, no retry", []fcmmock.Fault{{Status: 401, Code: "THIRD_PARTY_AUTH_ERROR"}}, func(t *testing.T, err error) {
			var cr *push.CredentialsRefusedError
			if !push.IsTemporary(err) || !errors.As(err, &cr) || !cr.Partial {
				t.Fatalf("%v", err)
			}
		}, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, o := setup(t)
			b := newBackend(t, o)
			// One push goes through first: the app's configuration has
			// proven itself, so a refused token is the token's fault.
			for range 2 {
				if err := send(b, nil); err != nil {
					t.Fatal(err)
				}
			}
			m.FailToken(token, tt.faults...)
			tt.check(t, send(b, nil))
			if n := len(m.Requests()) - 2; n != tt.tries {
				t.Fatalf("%d requests, want %d", n, tt.tries)
			}
		})
	}
	// Before any push went through, a token refused may be the
	// configuration's fault (another project's service account): kept.
	t.Run("sender id mismatch before any success", func(t *testing.T) {
		m, o := setup(t)
		m.FailToken(token, fcmmock.Fault{Status: 403, Code: "SENDER_ID_MISMATCH", Message: "SenderId mismatch"})
		if err := send(newBackend(t, o), nil); !push.IsTemporary(err) {
			t.Fatalf("%v, want a temporary failure", err)
		}
	})
}

// A 5xx answered until the deadline is an outage of FCM
// (push.TemporaryError.Outage: another push going through says it is
// back); a 429 says nothing of the service.
func TestOutageOrNot(t *testing.T) {
	for _, tt := range []struct {
		fault  fcmmock.Fault
		outage bool
	}{
		{fcmmock.Fault{Status: 503, Code: "UNAVAILABLE"}, true},
		{fcmmock.Fault{Status: 500, Code: "INTERNAL"}, true},
		{fcmmock.Fault{Status: 429, Code: "QUOTA_EXCEEDED"}, false},
	} {
		t.Run(tt.fault.Code, func(t *testing.T) {
			m, o := setup(t)
			o.PushDeadline = 300 * time.Millisecond
			m.FailToken(token, slices.Repeat([]fcmmock.Fault{tt.fault}, 100)...)
			err := send(newBackend(t, o), nil)
			var te *push.TemporaryError
			if !errors.As(err, &te) || te.Outage != tt.outage {
				t.Fatalf("%v, want a temporary failure with Outage %v", err, tt.outage)
			}
		})
	}
}

func TestRetryAfterAndDeadline(t *testing.T) {
	m, o := setup(t)
	m.FailToken(token, fcmmock.Fault{Status: 429, Code: "QUOTA_EXCEEDED", RetryAfter: "1"})
	start := time.Now()
	if err := send(newBackend(t, o), nil); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took < time.Second {
		t.Fatalf("retried after %v, Retry-After said 1 s", took)
	}

	m2, o2 := setup(t)
	o2.PushDeadline = 500 * time.Millisecond
	m2.FailToken(token, fcmmock.Fault{Status: 429, Code: "QUOTA_EXCEEDED", RetryAfter: "30"})
	start = time.Now()
	err := send(newBackend(t, o2), nil)
	var te *push.TemporaryError
	if !push.IsTemporary(err) || time.Since(start) > time.Second {
		t.Fatalf("err %v after %v", err, time.Since(start))
	}
	if errors.As(err, &te); te.RetryAfter != 30*time.Second {
		t.Fatalf("RetryAfter %v", te.RetryAfter)
	}
}

func TestAccessTokenCachedAndRefreshedOn401(t *testing.T) {
	m, o := setup(t)
	b := newBackend(t, o)
	var wg sync.WaitGroup
	for range 20 {
		wg.Go(func() {
			if err := send(b, nil); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if n := m.TokenRequests(); n != 1 {
		t.Fatalf("%d token requests for 20 pushes, want 1", n)
	}
	// Every push in flight is refused with the revoked token: one new
	// token serves them all.
	m.RevokeTokens()
	for range 20 {
		wg.Go(func() {
			if err := send(b, nil); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if n := m.TokenRequests(); n != 2 {
		t.Fatalf("%d token requests after a 401, want 2", n)
	}
	if m.Accepted() != 40 {
		t.Fatalf("%d accepted", m.Accepted())
	}
}

// A slow token endpoint holds a push no longer than its deadline.
func TestAccessTokenFetchBoundedByDeadline(t *testing.T) {
	m, o := setup(t)
	m.SetTokenDelay(3 * time.Second)
	o.PushDeadline = 300 * time.Millisecond
	start := time.Now()
	if err := send(newBackend(t, o), nil); !push.IsTemporary(err) {
		t.Fatalf("Send = %v, want a temporary failure", err)
	}
	if d := time.Since(start); d > 1500*time.Millisecond {
		t.Fatalf("Send took %v with a deadline of 300 ms", d)
	}
	// The pushes that follow wait for the same fetch: none leaves one
	// of its own behind.
	o.PushDeadline = 30 * time.Millisecond
	b := newBackend(t, o)
	before := runtime.NumGoroutine()
	for range 40 {
		send(b, nil)
	}
	if extra := runtime.NumGoroutine() - before; extra > 10 {
		t.Fatalf("%d goroutines left behind by 40 pushes that ended", extra)
	}
}

func TestValidateToken(t *testing.T) {
	_, o := setup(t)
	b := newBackend(t, o)
	for tok, ok := range map[string]bool{token: true, "has space": false, "tab\t": false, strings.Repeat("a", 4097): false, "ünicode": false} {
		if err := b.ValidateToken(tok); (err == nil) != ok {
			t.Errorf("ValidateToken(%.20q) = %v", tok, err)
		}
	}
}

// The project id in the options wins over the service account's: the
// key below names another project, and only the override reaches the
// mock's project.
func TestProjectIDOverride(t *testing.T) {
	m, o := setup(t)
	var sa map[string]any
	json.Unmarshal(m.ServiceAccountJSON(), &sa)
	sa["project_id"] = "some-other-project"
	data, _ := json.Marshal(sa)
	o.ServiceAccountFile = filepath.Join(t.TempDir(), "other.json")
	os.WriteFile(o.ServiceAccountFile, data, 0o600)
	o.ProjectID = "chat-app-1234"
	if err := send(newBackend(t, o), nil); err != nil {
		t.Fatal(err)
	}
	if reqs := m.Requests(); len(reqs) != 1 || reqs[0].Project != "chat-app-1234" || reqs[0].Status != 200 {
		t.Fatalf("%+v", reqs)
	}
}

// Each case breaks one thing in valid options and must fail for it.
func TestBadServiceAccount(t *testing.T) {
	_, valid := setup(t)
	if _, err := fcm.New(valid, quiet); err != nil {
		t.Fatalf("valid options refused: %v", err)
	}
	notJSON := filepath.Join(t.TempDir(), "sa.json")
	os.WriteFile(notJSON, []byte("{"), 0o600)
	tests := []struct {
		name   string
		break_ func(o *fcm.Options)
		check  func(err error) bool
	}{
		{"missing file", func(o *fcm.Options) { o.ServiceAccountFile = "/nonexistent.json" }, func(err error) bool { return errors.Is(err, fs.ErrNotExist) }},
		{"not JSON", func(o *fcm.Options) { o.ServiceAccountFile = notJSON }, func(err error) bool { return strings.Contains(err.Error(), notJSON) }},
		{"bad priority", func(o *fcm.Options) { o.Priority = "urgent" }, func(err error) bool { return strings.Contains(err.Error(), `priority "urgent"`) }},
		{"missing CA path", func(o *fcm.Options) { o.CAPath = "/nonexistent" }, func(err error) bool {
			return errors.Is(err, fs.ErrNotExist) && strings.Contains(err.Error(), "CA path")
		}},
	}
	for _, tt := range tests {
		o := valid
		tt.break_(&o)
		if _, err := fcm.New(o, quiet); err == nil {
			t.Errorf("%s: accepted", tt.name)
		} else if !tt.check(err) {
			t.Errorf("%s: failed for another reason: %v", tt.name, err)
		}
	}
}

func BenchmarkSend(b *testing.B) {
	_, o := setup(b)
	be := newBackend(b, o)
	b.SetParallelism(64)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := send(be, nil); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "pushes/s")
}

// High and silent pushes at the mock: a configured notification shows
// only on high ones; silent ones are data messages, and every sent push is
// logged at debug with FCM's name for it.
func TestPriorities(t *testing.T) {
	m, o := setup(t)
	o.NotificationTitle, o.NotificationBody = "New message", "Open the app"
	var logs bytes.Buffer
	b, err := fcm.New(o, slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		prio         push.Priority
		notification bool
	}{{push.PriorityHigh, true}, {push.PrioritySilent, false}} {
		if err := b.Send(context.Background(), push.Notification{Node: "node-1", Token: token, Priority: tt.prio}); err != nil {
			t.Fatal(err)
		}
		reqs := m.Requests()
		msg := reqs[len(reqs)-1].Message
		android := msg["android"].(map[string]any)
		if _, has := android["notification"]; has != tt.notification || msg["data"].(map[string]any)["node"] != "node-1" {
			t.Errorf("%s: %v", tt.prio, msg)
		}
	}
	if n := strings.Count(logs.String(), `msg="push sent" node=node-1`); n != 2 || !strings.Contains(logs.String(), "message=projects/chat-app-1234/messages/") {
		t.Fatalf("sent pushes not logged with their FCM name:\n%s", logs.String())
	}
}

// Google's token endpoint failing (a 503, or a 429 or 408: it is busy)
// is an outage that passes: the push fails temporarily, so that it is
// retried and redelivered, not dropped as if the service account were
// refused.
func TestTokenEndpointOutageIsTemporary(t *testing.T) {
	for _, status := range []int{http.StatusServiceUnavailable, http.StatusTooManyRequests, http.StatusRequestTimeout} {
		m, o := setup(t)
		down, err := mockhttp.Start("tokendown", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(status)
			w.Write([]byte(`{"error":"backend_error"}`))
		}), nil)
		if err != nil {
			t.Fatal(err)
		}
		defer down.Close()
		// One CA path trusting both the mock FCM and the failing endpoint.
		ca := t.TempDir()
		for _, dir := range []string{m.CADir, down.CADir} {
			pems, _ := filepath.Glob(filepath.Join(dir, "*.pem"))
			for _, p := range pems {
				b, _ := os.ReadFile(p)
				os.WriteFile(filepath.Join(ca, filepath.Base(p)), b, 0o644)
			}
		}
		o.CAPath = ca
		o.TokenURL = down.URL + "/token"
		o.PushDeadline = 300 * time.Millisecond
		// Not a refusal of the service account either: that would
		// send the operator to a key that is fine.
		var cr *push.CredentialsRefusedError
		if err := send(newBackend(t, o), nil); !push.IsTemporary(err) || errors.As(err, &cr) {
			t.Errorf("Send with the token endpoint answering %d = %v, want a temporary failure that refuses no credentials", status, err)
		}
	}
}

// TestRefusedServiceAccountKeptUntilReconfigured: Google refusing the
// service account's key (invalid_grant: a deleted or foreign key) is
// the configuration's to mend, like FCM refusing the account: the push
// fails temporarily as a refusal of the credentials, kept to be sent
// once the key is replaced, not dropped as an answer about the push.
func TestRefusedServiceAccountKeptUntilReconfigured(t *testing.T) {
	m, o := setup(t)
	stranger, err := fcmmock.WriteForeignServiceAccount(t.TempDir(), "chat-app-1234")
	if err != nil {
		t.Fatal(err)
	}
	o.ServiceAccountFile, o.TokenURL = stranger, m.TokenURL
	err = send(newBackend(t, o), nil)
	var cr *push.CredentialsRefusedError
	if !push.IsTemporary(err) || !errors.As(err, &cr) || !strings.Contains(cr.Check, "service_account_file") {
		t.Fatalf("%v, want a temporary failure refusing the service account", err)
	}
	if n := len(m.Requests()); n != 0 {
		t.Fatalf("%d pushes reached FCM without an access token", n)
	}
}

// An access token FCM refuses (401) is replaced once per push: a push
// that is refused again fails, rather than fetching token after token
// from Google for as long as its deadline lasts.
func TestRepeated401RefreshesOnce(t *testing.T) {
	m, o := setup(t)
	faults := make([]fcmmock.Fault, 50)
	for i := range faults {
		faults[i] = fcmmock.Fault{Status: http.StatusUnauthorized}
	}
	m.FailToken(token, faults...)
	if err := send(newBackend(t, o), nil); err == nil {
		t.Fatal("a push refused with 401 after a fresh token succeeded")
	}
	if n := m.TokenRequests(); n > 2 {
		t.Fatalf("%d token requests for one push refused with 401, want at most 2", n)
	}
}

// TestRefusalsDoNotFloodLog: an FCM that refuses every push (the service
// account lost its permission: 403 PERMISSION_DENIED) must not get one
// warn line per push into the log.
func TestRefusalsDoNotFloodLog(t *testing.T) {
	m, o := setup(t)
	var buf logbuf.Buffer
	b, err := fcm.New(o, slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo})))
	if err != nil {
		t.Fatal(err)
	}
	const n = 100
	faults := make([]fcmmock.Fault, n)
	for i := range faults {
		faults[i] = fcmmock.Fault{Status: 403, Code: "PERMISSION_DENIED", Message: "Permission 'cloudmessaging.messages.create' denied"}
	}
	m.FailToken(token, faults...)
	for i := 0; i < n; i++ {
		if err := send(b, nil); err == nil {
			t.Fatal("push accepted")
		}
	}
	lines := strings.Count(buf.String(), "FCM rejected push")
	t.Logf("first line: %.200s", buf.String())
	if lines > 20 {
		t.Errorf("%d refused pushes wrote %d warn lines, no rate limit", n, lines)
	}
}

// TestInvalidTokenAsFCMAnswersIt: FCM's answer to a malformed or foreign
// registration token is often the generic "Request contains an invalid
// argument." with the token named only in a google.rpc.BadRequest field
// violation (firebase-admin-python#187, #805; bloomberg/pushiko's recorded
// answers). README: an INVALID_ARGUMENT about the token counts against the
// token once the app has proven itself.
func TestInvalidTokenAsFCMAnswersIt(t *testing.T) {
	m, o := setup(t)
	b := newBackend(t, o)
	for range 2 {
		if err := send(b, nil); err != nil { // the app proves itself
			t.Fatal(err)
		}
	}
	m.FailToken(token, fcmmock.Fault{Status: 400, Code: "INVALID_ARGUMENT", Message: "Request contains an invalid argument.",
		Details: []map[string]any{{"@type": "type.googleapis.com/google.rpc.BadRequest",
			"fieldViolations": []any{map[string]any{"field": "message.token", "description": "Invalid registration token"}}}}})
	err := send(b, nil)
	if _, ok := push.IsDeadToken(err); !ok {
		t.Fatalf("Send = %v (temporary %v), want the token taken as dead", err, push.IsTemporary(err))
	}
}

// TestQuotaExceededWithoutRetryAfter: FCM's ErrorCode reference has a
// sender that exceeded the message rate (QUOTA_EXCEEDED, 429) retry with
// exponential backoff "with a minimum initial delay of 1 minute" when no
// Retry-After says otherwise; hammering it within the push deadline keeps
// the project over its quota.
func TestQuotaExceededWithoutRetryAfter(t *testing.T) {
	m, o := setup(t)
	b := newBackend(t, o)
	faults := make([]fcmmock.Fault, 100)
	for i := range faults {
		faults[i] = fcmmock.Fault{Status: 429, Code: "QUOTA_EXCEEDED", Message: "Quota exceeded for quota metric 'Send requests'"}
	}
	m.FailToken(token, faults...)
	err := send(b, nil)
	var te *push.TemporaryError
	if !errors.As(err, &te) {
		t.Fatalf("Send = %v, want temporary", err)
	}
	if n := len(m.Requests()); n > 1 || te.RetryAfter < time.Minute {
		t.Fatalf("%d requests within the push deadline after QUOTA_EXCEEDED without Retry-After; RetryAfter handed to redelivery %v", n, te.RetryAfter)
	}
}

// The credentials check tells a project or service account FCM refuses
// from one it takes, whatever it says of the made-up token; an answer
// that tells neither (a 5xx, a 429, none in time) is no refusal. FCM
// only validates it, so it reaches no device, and the breaker hears none
// of it.
func TestCheckCredentials(t *testing.T) {
	strangerKey, err := fcmmock.WriteForeignServiceAccount(t.TempDir(), "chat-app-1234")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		opts   func(m *fcmmock.Server, o *fcm.Options)
		fault  fcmmock.Fault
		reason string // of the refusal; "" when accepted or not known
		check  string // what the refusal says to check
		known  bool   // accepted or refused
		sent   int    // validate_only sends that reach FCM
	}{
		{name: "accepted", known: true, sent: 1},
		{name: "token unregistered", fault: fcmmock.Fault{Status: 404, Code: "UNREGISTERED", Message: "Requested entity was not found."}, known: true, sent: 1},
		{name: "another project", opts: func(_ *fcmmock.Server, o *fcm.Options) { o.ProjectID = "other-project" },
			reason: "FCM 403 SENDER_ID_MISMATCH: SenderId mismatch", check: "project_id (other-project)", known: true, sent: 1},
		{name: "no role that may send", fault: fcmmock.Fault{Status: 403, Message: "Permission 'cloudmessaging.messages.create' denied"},
			reason: "FCM 403 PERMISSION_DENIED: Permission 'cloudmessaging.messages.create' denied", check: "a role that may send", known: true, sent: 1},
		{name: "key Google does not take", opts: func(m *fcmmock.Server, o *fcm.Options) { o.ServiceAccountFile, o.TokenURL = strangerKey, m.TokenURL },
			reason: "invalid_grant", check: "service_account_file", known: true},
		// An argument of the made-up send FCM refuses tells nothing of
		// the credentials, unlike one about the token.
		{name: "invalid argument not about the token", fault: fcmmock.Fault{Status: 400, Code: "INVALID_ARGUMENT", Message: "Invalid value at 'message.android.ttl'"}, sent: 1},
		{name: "invalid token argument", fault: fcmmock.Fault{Status: 400, Code: "INVALID_ARGUMENT", Message: "The registration token is not a valid FCM registration token"}, known: true, sent: 1},
		{name: "service unavailable", fault: fcmmock.Fault{Status: 503, Message: "The service is currently unavailable."}, sent: 1},
		{name: "quota exceeded", fault: fcmmock.Fault{Status: 429, Code: "QUOTA_EXCEEDED"}, sent: 1},
		{name: "no answer in time", fault: fcmmock.Fault{Delay: time.Minute}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, o := setup(t)
			if tt.opts != nil {
				tt.opts(m, &o)
			}
			if tt.fault.Status != 0 || tt.fault.Delay > 0 {
				m.FailToken(fcm.CheckToken, tt.fault)
			}
			br := push.NewBreaker("android", push.BreakerOptions{MinAnswers: 1}, quiet)
			o.Breaker = br
			bound := 10 * time.Second
			if tt.fault.Delay > 0 {
				bound = 200 * time.Millisecond
			}
			ctx, cancel := context.WithTimeout(context.Background(), bound)
			defer cancel()
			err := newBackend(t, o).CheckCredentials(ctx)
			var refused *push.CredentialsRefusedError
			switch {
			case tt.known && tt.reason == "" && err != nil:
				t.Fatalf("refused or not checked: %v", err)
			case tt.reason != "" && (!errors.As(err, &refused) || !strings.Contains(refused.Reason, tt.reason) || !strings.Contains(refused.Check, tt.check)):
				t.Fatalf("%v, want a refusal %q that says to check %q", err, tt.reason, tt.check)
			case !tt.known && (err == nil || errors.As(err, &refused)):
				t.Fatalf("%v, want an error that is no refusal", err)
			}
			if checks := m.Checks(); len(checks) != tt.sent || len(m.Requests()) != 0 || m.Accepted() != 0 {
				t.Fatalf("%d validate_only sends (%+v), %d sends, %d accepted: want %d validate_only sends and no push", len(checks), checks, len(m.Requests()), m.Accepted(), tt.sent)
			}
			if bad, _ := br.Misconfigured(); bad {
				t.Fatal("the check's answer reached the breaker")
			}
		})
	}
}

// FCM refuses data that its documentation's count (keys and values, at
// most 4,096 bytes) would take: it counts each pair and the message
// too (see fcmmock.DataSize). A summary whose data comes near 4,096
// bytes by keys and values is shortened until FCM takes it, rather than
// sent and refused, which loses the push.
func TestSummaryFitsFCMsCount(t *testing.T) {
	m, o := setup(t)
	o.IncludeSummary = true
	// 4,088 bytes of keys and values with the 2,048 bytes the body is cut
	// to: under 4,096, over what FCM takes of four pairs.
	s := &push.Summary{MessageCount: 3, LastMessageSender: strings.Repeat("j", 1968) + "@example.org", LastMessageBody: strings.Repeat("b", 3000), HasLastMessageBody: true}
	if err := send(newBackend(t, o), s); err != nil {
		t.Fatalf("push with a long sender and body: %v", err)
	}
	reqs := m.Requests()
	if len(reqs) != 1 || m.Accepted() != 1 {
		t.Fatalf("%d requests, %d accepted", len(reqs), m.Accepted())
	}
	data := reqs[0].Message["data"].(map[string]any)
	if size := fcmmock.DataSize(data); size > fcmmock.MaxData || data["last-message-body"] == "" {
		t.Fatalf("data of %d bytes as FCM counts them: %v", size, data)
	}
}

// TestWrongEndpointKeptUntilReconfigured guards pushes of an app whose
// endpoint is not FCM's: a 404 without FCM's error body (a wrong path or
// host, a proxy) or a 405 comes from where the push went, not from FCM
// about the push or its token. The push is refused as a service account
// FCM refuses is (kept until the configuration is mended, the token
// untouched), with what to check naming the endpoint and the URL in use,
// and a check of the credentials says the same. The backend logs no
// warning per push: the core says what to check once, as it holds the
// app's pushes.
func TestWrongEndpointKeptUntilReconfigured(t *testing.T) {
	tests := []struct {
		name   string
		path   string        // appended to the mock's URL as the endpoint
		fault  fcmmock.Fault // of the push and the check
		reason string
	}{
		{name: "wrong path", path: "/not-fcm", reason: "FCM 404"},
		{name: "method not allowed", fault: fcmmock.Fault{Status: 405, Message: "Method Not Allowed"}, reason: "FCM 405"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, o := setup(t)
			o.Endpoint = m.URL + tt.path
			if tt.fault.Status != 0 {
				m.FailToken(token, tt.fault)
				m.FailToken(fcm.CheckToken, tt.fault)
			}
			var buf logbuf.Buffer
			b, err := fcm.New(o, slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo})))
			if err != nil {
				t.Fatal(err)
			}
			err = send(b, nil)
			var cr *push.CredentialsRefusedError
			if !push.IsTemporary(err) || !errors.As(err, &cr) || cr.Partial {
				t.Fatalf("Send = %v, want a refusal of the configuration kept for redelivery", err)
			}
			if _, dead := push.IsDeadToken(err); dead {
				t.Fatalf("Send = %v counts against the token", err)
			}
			if !strings.HasPrefix(cr.Reason, tt.reason) || !strings.Contains(cr.Check, "endpoint") || !strings.Contains(cr.Check, o.Endpoint+"/v1/projects/") {
				t.Fatalf("refusal %q, check %q: want %q saying to check endpoint %s", cr.Reason, cr.Check, tt.reason, o.Endpoint)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			err = b.CheckCredentials(ctx)
			if !errors.As(err, &cr) || !strings.Contains(cr.Check, "endpoint") || !strings.Contains(cr.Check, o.Endpoint) {
				t.Fatalf("CheckCredentials = %v, want a refusal saying to check endpoint %s", err, o.Endpoint)
			}
			if strings.Contains(buf.String(), "level=WARN") {
				t.Fatalf("the backend warned of a push refused for its configuration:\n%s", buf.String())
			}
		})
	}
}
