package apns_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	gopkcs12 "software.sslmate.com/src/go-pkcs12"

	"github.com/push-appserver/push-appserver/internal/push"
	"github.com/push-appserver/push-appserver/internal/push/apns"
	"github.com/push-appserver/push-appserver/internal/testutil/apnsmock"
	"github.com/push-appserver/push-appserver/internal/testutil/logbuf"
)

const topic = "im.example.app"

var token = strings.Repeat("ab", 32)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// tokenSetup starts a mock that requires provider tokens and returns it
// with options for a backend that has the key.
func tokenSetup(t testing.TB) (*apnsmock.Server, apns.Options) {
	t.Helper()
	p8, pub, err := apnsmock.TokenKey()
	if err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(t.TempDir(), "AuthKey_KEY123.p8")
	os.WriteFile(keyFile, p8, 0o600)
	m, err := apnsmock.New(apnsmock.Config{TokenKey: pub, KeyID: "KEY123", TeamID: "TEAM42", Topic: topic})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Close)
	return m, apns.Options{
		Topic: topic, Endpoint: m.URL, CAPath: m.CADir,
		TokenKeyFile: keyFile, KeyID: "KEY123", TeamID: "TEAM42",
		AlertTitle: "New Message", AlertBody: "New Message", Sound: "default", MutableContent: true, PushDeadline: 3 * time.Second,
	}
}

func newBackend(t testing.TB, o apns.Options) *apns.Backend {
	t.Helper()
	b, err := apns.New(o, quiet)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func send(t *testing.T, b *apns.Backend, prio push.Priority, s *push.Summary) error {
	t.Helper()
	return b.Send(context.Background(), push.Notification{App: "apns", Node: "n", Token: token, Priority: prio, Summary: s})
}

func TestOptionsReachAPNS(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	body := &push.Summary{MessageCount: 1, LastMessageSender: "juliet@example.org", LastMessageBody: "Wherefore art thou?", HasLastMessageBody: true}
	tests := []struct {
		name    string
		opts    func(*apns.Options)
		prio    push.Priority
		summary *push.Summary
		check   func(t *testing.T, r apnsmock.Request)
	}{
		{"high priority alert", nil, push.PriorityHigh, body, func(t *testing.T, r apnsmock.Request) {
			aps := r.Payload["aps"].(map[string]any)
			alert, _ := aps["alert"].(map[string]any)
			if r.PushType != "alert" || r.Priority != "10" || r.Topic != topic || aps["sound"] != "default" || aps["mutable-content"] != float64(1) {
				t.Fatalf("%+v", r)
			}
			// What mod_push_appserver's last version shows.
			if len(alert) != 2 || alert["title"] != "New Message" || alert["body"] != "New Message" {
				t.Fatalf("alert %s", r.RawPayload)
			}
			if r.Expiration != "" || r.CollapseID != "" || strings.Contains(string(r.RawPayload), "juliet") || r.Payload["message-count"] != nil {
				t.Fatalf("unasked-for headers or summary content: %+v %s", r, r.RawPayload)
			}
			if r.Auth != "token" {
				t.Fatalf("auth %q", r.Auth)
			}
		}},
		{"silent background push", nil, push.PrioritySilent, body, func(t *testing.T, r apnsmock.Request) {
			if r.PushType != "background" || r.Priority != "5" || string(r.RawPayload) != `{"aps":{"content-available":1}}` {
				t.Fatalf("%+v %s", r, r.RawPayload)
			}
		}},
		{"silent stays bare with every option on", func(o *apns.Options) { o.IncludeSummary = true; o.Collapse = true }, push.PrioritySilent, body, func(t *testing.T, r apnsmock.Request) {
			if r.PushType != "background" || r.Priority != "5" || string(r.RawPayload) != `{"aps":{"content-available":1}}` {
				t.Fatalf("%+v %s", r, r.RawPayload)
			}
		}},
		{"voip", nil, push.PriorityVoIP, nil, func(t *testing.T, r apnsmock.Request) {
			if r.PushType != "voip" || r.Topic != topic+".voip" || r.Priority != "10" {
				t.Fatalf("%+v", r)
			}
		}},
		{"alert body only, no sound", func(o *apns.Options) { o.AlertTitle = ""; o.AlertBody = "Neue Nachricht"; o.Sound = "" }, push.PriorityHigh, nil, func(t *testing.T, r apnsmock.Request) {
			aps := r.Payload["aps"].(map[string]any)
			alert, _ := aps["alert"].(map[string]any)
			if len(alert) != 1 || alert["body"] != "Neue Nachricht" || aps["sound"] != nil {
				t.Fatalf("%s", r.RawPayload)
			}
		}},
		{"alert title and body configured", func(o *apns.Options) { o.AlertTitle = "Chat"; o.AlertBody = "You have mail" }, push.PriorityHigh, nil, func(t *testing.T, r apnsmock.Request) {
			alert, _ := r.Payload["aps"].(map[string]any)["alert"].(map[string]any)
			if alert["title"] != "Chat" || alert["body"] != "You have mail" {
				t.Fatalf("%s", r.RawPayload)
			}
		}},
		{"mutable content off", func(o *apns.Options) { o.MutableContent = false }, push.PriorityHigh, nil, func(t *testing.T, r apnsmock.Request) {
			if _, ok := r.Payload["aps"].(map[string]any)["mutable-content"]; ok {
				t.Fatalf("%s", r.RawPayload)
			}
		}},
		{"ttl sets expiration", func(o *apns.Options) { o.TTL = time.Hour; o.Now = func() time.Time { return now } }, push.PriorityHigh, nil, func(t *testing.T, r apnsmock.Request) {
			if r.Expiration != strconv.FormatInt(now.Add(time.Hour).Unix(), 10) {
				t.Fatalf("expiration %q", r.Expiration)
			}
		}},
		{"collapse", func(o *apns.Options) { o.Collapse = true }, push.PriorityHigh, nil, func(t *testing.T, r apnsmock.Request) {
			if r.CollapseID == "" {
				t.Fatal("no apns-collapse-id")
			}
		}},
		{"summary carried when allowed", func(o *apns.Options) { o.IncludeSummary = true }, push.PriorityHigh, body, func(t *testing.T, r apnsmock.Request) {
			alert, _ := r.Payload["aps"].(map[string]any)["alert"].(map[string]any)
			if alert["title"] != "juliet@example.org" || alert["body"] != "Wherefore art thou?" || r.Payload["message-count"] != float64(1) {
				t.Fatalf("%s", r.RawPayload)
			}
		}},
		{"huge body stays under the size limit", func(o *apns.Options) { o.IncludeSummary = true }, push.PriorityHigh,
			&push.Summary{LastMessageBody: strings.Repeat("é", 4000), HasLastMessageBody: true}, func(t *testing.T, r apnsmock.Request) {
				if r.Status != 200 || len(r.RawPayload) > 4096 {
					t.Fatalf("status %d size %d", r.Status, len(r.RawPayload))
				}
			}},
		// JSON writes < > & as six bytes each and " \ and newlines as two:
		// a body of code or markup grows threefold and more when encoded.
		{"body that grows when encoded stays under the size limit", func(o *apns.Options) { o.IncludeSummary = true }, push.PriorityHigh,
			&push.Summary{LastMessageSender: strings.Repeat("&", 1000), LastMessageBody: strings.Repeat("<b>\"\n", 400), HasLastMessageBody: true}, func(t *testing.T, r apnsmock.Request) {
				alert, _ := r.Payload["aps"].(map[string]any)["alert"].(map[string]any)
				body, _ := alert["body"].(string)
				if r.Status != 200 || len(r.RawPayload) > 4096 || len(body) < 200 || !strings.HasPrefix(strings.Repeat("<b>\"\n", 400), body) {
					t.Fatalf("status %d size %d body %q", r.Status, len(r.RawPayload), body)
				}
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, o := tokenSetup(t)
			if tt.opts != nil {
				tt.opts(&o)
			}
			if err := send(t, newBackend(t, o), tt.prio, tt.summary); err != nil {
				t.Fatal(err)
			}
			reqs := m.Requests()
			if len(reqs) != 1 {
				t.Fatalf("%d requests", len(reqs))
			}
			tt.check(t, reqs[0])
		})
	}
}

// One backend's pushes of each priority in turn, under one provider
// token, each carry their own priority's header fields: the fields kept
// per priority with the token are found by the push's priority, whatever
// the priorities of the pushes before it.
func TestPrioritiesInTurnKeepTheirFields(t *testing.T) {
	m, o := tokenSetup(t)
	b := newBackend(t, o)
	want := map[push.Priority][3]string{ // push type, priority, topic
		push.PriorityHigh:   {"alert", "10", topic},
		push.PrioritySilent: {"background", "5", topic},
		push.PriorityVoIP:   {"voip", "10", topic + ".voip"},
	}
	prios := []push.Priority{push.PriorityVoIP, push.PriorityHigh, push.PrioritySilent, push.PriorityHigh, push.PriorityVoIP, push.PrioritySilent}
	for _, p := range prios {
		if err := send(t, b, p, nil); err != nil {
			t.Fatal(err)
		}
	}
	reqs := m.Requests()
	if len(reqs) != len(prios) {
		t.Fatalf("%d requests, want %d", len(reqs), len(prios))
	}
	for i, r := range reqs {
		if got := [3]string{r.PushType, r.Priority, r.Topic}; got != want[prios[i]] || r.Auth != "token" {
			t.Errorf("push %d (%s): push type, priority, topic %q, auth %q; want %q and a token", i, prios[i], got, r.Auth, want[prios[i]])
		}
	}
}

// Every sent push is logged at debug with the node, the push type and
// Apple's apns-id.
func TestSentPushLogged(t *testing.T) {
	_, o := tokenSetup(t)
	var logs bytes.Buffer
	b, err := apns.New(o, slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	if err != nil {
		t.Fatal(err)
	}
	send(t, b, push.PrioritySilent, nil)
	if !regexp.MustCompile(`msg="push sent" node=n push_type=background apns_id=[0-9A-F-]{36}`).MatchString(logs.String()) {
		t.Fatalf("log:\n%s", logs.String())
	}
}

func TestAnswers(t *testing.T) {
	dead := time.UnixMilli(1_700_000_000_123)
	type answerCase struct {
		name      string
		faults    []apnsmock.Fault
		check     func(t *testing.T, err error)
		wantTries int
	}
	tests := []answerCase{
		{"410 unregistered with Apple's timestamp", []apnsmock.Fault{{Status: 410, Reason: "Unregistered", Timestamp: dead}}, func(t *testing.T, err error) {
			d, ok := push.IsDeadToken(err)
			if !ok || !d.Since.Equal(dead) || d.Reason != "Unregistered" {
				t.Fatalf("%v", err)
			}
		}, 1},
		{"400 bad device token", []apnsmock.Fault{{Status: 400, Reason: "BadDeviceToken"}}, func(t *testing.T, err error) {
			if d, ok := push.IsDeadToken(err); !ok || time.Since(d.Since) > time.Minute {
				t.Fatalf("%v", err)
			}
		}, 1},
		{"400 token not for topic", []apnsmock.Fault{{Status: 400, Reason: "DeviceTokenNotForTopic"}}, func(t *testing.T, err error) {
			if _, ok := push.IsDeadToken(err); !ok {
				t.Fatalf("%v", err)
			}
		}, 1},
		{"429 for our provider token, 500, 503 then success", []apnsmock.Fault{{Status: 429, Reason: "TooManyProviderTokenUpdates"}, {Status: 500, Reason: "InternalServerError"}, {Status: 503, Reason: "ServiceUnavailable"}}, func(t *testing.T, err error) {
			if err != nil {
				t.Fatal(err)
			}
		}, 4},
		// Apple: "too many requests were made consecutively to the
		// same device token". Not tried again within the push: kept
		// for redelivery a minute on, or Apple's Retry-After.
		{"429 TooManyRequests: no retry, kept a minute", []apnsmock.Fault{{Status: 429, Reason: "TooManyRequests"}}, deviceThrottled(apns.DeviceThrottledWait), 1},
		{"429 TooManyRequests after a 503: no retry", []apnsmock.Fault{{Status: 503, Reason: "ServiceUnavailable"}, {Status: 429, Reason: "TooManyRequests"}}, deviceThrottled(apns.DeviceThrottledWait), 2},
		{"429 TooManyRequests with a longer Retry-After", []apnsmock.Fault{{Status: 429, Reason: "TooManyRequests", RetryAfter: "300"}}, deviceThrottled(5 * time.Minute), 1},
		{"429 TooManyRequests with a shorter Retry-After", []apnsmock.Fault{{Status: 429, Reason: "TooManyRequests", RetryAfter: "1"}}, deviceThrottled(apns.DeviceThrottledWait), 1},
		{"reset stream then success", []apnsmock.Fault{{Reset: true}}, func(t *testing.T, err error) {
			if err != nil {
				t.Fatal(err)
			}
		}, 2},
		{"expired provider token: refresh and retry once", []apnsmock.Fault{{Status: 403, Reason: "ExpiredProviderToken"}}, func(t *testing.T, err error) {
			if err != nil {
				t.Fatal(err)
			}
		}, 2},
		{"403 twice: our credentials, kept for later, no more retries", []apnsmock.Fault{{Status: 403, Reason: "InvalidProviderToken"}, {Status: 403, Reason: "InvalidProviderToken"}}, func(t *testing.T, err error) {
			var cr *push.CredentialsRefusedError
			if !push.IsTemporary(err) || !errors.As(err, &cr) || !strings.Contains(err.Error(), "InvalidProviderToken") {
				t.Fatalf("%v", err)
			}
		}, 2},
		{"topic refused: our configuration, kept for later, no retry", []apnsmock.Fault{{Status: 400, Reason: "BadTopic"}}, func(t *testing.T, err error) {
			var cr *push.CredentialsRefusedError
			if !push.IsTemporary(err) || !errors.As(err, &cr) || !strings.Contains(err.Error(), "BadTopic") {
				t.Fatalf("%v", err)
			}
		}, 1},
		{"other 4xx: no retry", []apnsmock.Fault{{Status: 400, Reason: "BadExpirationDate"}}, func(t *testing.T, err error) {
			if err == nil || push.IsTemporary(err) || !strings.Contains(err.Error(), "BadExpirationDate") {
				t.Fatalf("%v", err)
			}
		}, 1},
	}
	// Every answer that refuses the app's topic, key or certificate
	// rather than the device's token: the push is kept until the
	// configuration is mended, and the registration is not touched.
	for _, f := range []apnsmock.Fault{
		{Status: 400, Reason: "TopicDisallowed"},
		{Status: 400, Reason: "MissingTopic"},
		{Status: 403, Reason: "BadCertificate"},
		{Status: 403, Reason: "BadCertificateEnvironment"},
		{Status: 403, Reason: "Forbidden"},
	} {
		tests = append(tests, answerCase{fmt.Sprintf("%d %s: our configuration, kept for later, no retry", f.Status, f.Reason), []apnsmock.Fault{f}, func(t *testing.T, err error) {
			var cr *push.CredentialsRefusedError
			if _, dead := push.IsDeadToken(err); dead || !push.IsTemporary(err) || !errors.As(err, &cr) || !strings.Contains(err.Error(), f.Reason) {
				t.Fatalf("%v, want a temporary refusal of the configuration", err)
			}
		}, 1})
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, o := tokenSetup(t)
			b := newBackend(t, o)
			// One push goes through first: the app's configuration has
			// proven itself, so a refused token is the token's fault.
			for range 2 {
				if err := send(t, b, push.PriorityHigh, nil); err != nil {
					t.Fatal(err)
				}
			}
			m.FailToken(token, tt.faults...)
			tt.check(t, send(t, b, push.PriorityHigh, nil))
			if n := m.Total() - 2; n != tt.wantTries {
				t.Fatalf("%d requests, want %d", n, tt.wantTries)
			}
		})
	}
	// Before any push went through, every token refused may be the
	// configuration's fault (a production app on the sandbox): kept.
	for _, reason := range []string{"BadDeviceToken", "DeviceTokenNotForTopic"} {
		t.Run(reason+" before any success", func(t *testing.T) {
			m, o := tokenSetup(t)
			m.FailToken(token, apnsmock.Fault{Status: 400, Reason: reason})
			if err := send(t, newBackend(t, o), push.PriorityHigh, nil); !push.IsTemporary(err) {
				t.Fatalf("%v, want a temporary failure", err)
			}
		})
	}
}

// deviceThrottled checks a push ended by APNS's 429 TooManyRequests: a
// temporary failure, kept for redelivery not before wait, and no outage
// of the service.
func deviceThrottled(wait time.Duration) func(*testing.T, error) {
	return func(t *testing.T, err error) {
		t.Helper()
		var te *push.TemporaryError
		if !errors.As(err, &te) || te.RetryAfter != wait || te.Outage || !strings.Contains(te.Reason, "TooManyRequests") {
			t.Fatalf("%v, want a temporary failure to retry after %v, no outage", err, wait)
		}
	}
}

// A 5xx answered until the deadline is an outage of APNS
// (push.TemporaryError.Outage: another push going through says it is
// back); a 429, for the token or for our provider token, says nothing of
// the service.
func TestOutageOrNot(t *testing.T) {
	for _, tt := range []struct {
		fault  apnsmock.Fault
		outage bool
	}{
		{apnsmock.Fault{Status: 503, Reason: "ServiceUnavailable"}, true},
		{apnsmock.Fault{Status: 500, Reason: "InternalServerError"}, true},
		{apnsmock.Fault{Status: 429, Reason: "TooManyRequests"}, false},
		{apnsmock.Fault{Status: 429, Reason: "TooManyProviderTokenUpdates"}, false},
	} {
		t.Run(tt.fault.Reason, func(t *testing.T) {
			m, o := tokenSetup(t)
			o.PushDeadline = 300 * time.Millisecond
			m.FailToken(token, slices.Repeat([]apnsmock.Fault{tt.fault}, 100)...)
			err := send(t, newBackend(t, o), push.PriorityHigh, nil)
			var te *push.TemporaryError
			if !errors.As(err, &te) || te.Outage != tt.outage {
				t.Fatalf("%v, want a temporary failure with Outage %v", err, tt.outage)
			}
		})
	}
}

// TestExpiredProviderTokenSignedAfreshOnce: every push in flight when
// Apple stops taking our provider token is refused with it; one new token
// must follow, not one per push (Apple answers TooManyProviderTokenUpdates
// to more than one in 20 minutes).
func TestExpiredProviderTokenSignedAfreshOnce(t *testing.T) {
	m, o := tokenSetup(t)
	b := newBackend(t, o)
	if err := send(t, b, push.PriorityHigh, nil); err != nil { // a token in use
		t.Fatal(err)
	}
	const n = 30
	faults := make([]apnsmock.Fault, n)
	for i := range faults {
		faults[i] = apnsmock.Fault{Status: 403, Reason: "ExpiredProviderToken", Delay: 50 * time.Millisecond}
	}
	m.FailNext(faults...)
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			if err := send(t, b, push.PriorityHigh, nil); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	first := m.Requests()[0].Bearer
	signed := map[string]bool{}
	for _, r := range m.Requests() {
		if r.Bearer != first {
			signed[r.Bearer] = true
		}
	}
	if len(signed) != 1 {
		t.Fatalf("one expiry made the backend sign %d new provider tokens, want 1", len(signed))
	}
}

// TestRefusedProviderTokenSignedAnewAtMostEvery20Minutes: while Apple
// refuses every provider token (a key revoked), a push refused with 403
// signs a new token and tries once more only if none was signed anew
// after a refusal in the last 20 minutes; otherwise it is refused with
// the one request. Apple answers more frequent updates with
// TooManyProviderTokenUpdates and may throttle the team, and before the
// bound every refused push signed one. A push a minute for an hour:
// new tokens at 0, 20 and 40 minutes.
func TestRefusedProviderTokenSignedAnewAtMostEvery20Minutes(t *testing.T) {
	now, m, b := onFakeClock(t)
	m.Revoke(true)
	var refusals []time.Duration // when a push made a second request
	for minute := range 60 {
		before := m.Total()
		var cr *push.CredentialsRefusedError
		if err := send(t, b, push.PriorityHigh, nil); !errors.As(err, &cr) {
			t.Fatalf("minute %d: %v, want the key refused", minute, err)
		}
		if m.Total()-before == 2 {
			refusals = append(refusals, time.Duration(minute)*time.Minute)
		}
		now.Add(int64(time.Minute))
	}
	signed := map[string]bool{}
	for _, r := range m.Requests() {
		signed[r.Bearer] = true
	}
	if want := []time.Duration{0, 20 * time.Minute, 40 * time.Minute}; !slices.Equal(refusals, want) || len(signed) != 4 || m.Total() != 63 {
		t.Fatalf("tokens signed anew at %v (%d tokens, %d requests), want at %v (4 tokens with the first, 63 requests)", refusals, len(signed), m.Total(), want)
	}
	// A check during the refusal, at 59 minutes, signs none either.
	now.Add(-int64(time.Minute))
	if err := b.CheckCredentials(context.Background()); err == nil {
		t.Fatal("check of a revoked key passed")
	}
	if n := len(m.Checks()); n != 1 {
		t.Fatalf("the check made %d requests within 20 minutes of a token signed anew, want 1", n)
	}
}

func TestRetriesEndAtDeadline(t *testing.T) {
	m, o := tokenSetup(t)
	o.PushDeadline = 700 * time.Millisecond
	for range 100 {
		m.FailToken(token, apnsmock.Fault{Status: 503, Reason: "ServiceUnavailable"})
	}
	start := time.Now()
	err := send(t, newBackend(t, o), push.PriorityHigh, nil)
	if !push.IsTemporary(err) {
		t.Fatalf("err = %v, want a temporary error", err)
	}
	// Room for a loaded machine: without the deadline, 100 refusals
	// and their backoffs take far longer.
	if took := time.Since(start); took > 2*time.Second {
		t.Fatalf("took %v, deadline was 700ms", took)
	}
	if m.Total() < 3 {
		t.Fatalf("only %d tries", m.Total())
	}
}

// A Retry-After on a 429 (other than TooManyRequests, not retried at
// all) holds the next try back at least that long.
func TestRetryAfterIsHonoured(t *testing.T) {
	m, o := tokenSetup(t)
	m.FailToken(token, apnsmock.Fault{Status: 429, Reason: "TooManyProviderTokenUpdates", RetryAfter: "1"})
	start := time.Now()
	if err := send(t, newBackend(t, o), push.PriorityHigh, nil); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took < time.Second {
		t.Fatalf("retried after %v, Retry-After said 1 s", took)
	}
	if m.Total() != 2 {
		t.Fatalf("%d requests, want 2", m.Total())
	}
}

// onFakeClock is a token-auth backend and its mock on one fake clock,
// which the test moves by adding to now: the mock judges the provider
// token's age as Apple would at that time.
func onFakeClock(t *testing.T) (now *atomic.Int64, m *apnsmock.Server, b *apns.Backend) {
	t.Helper()
	now = new(atomic.Int64)
	now.Store(time.Now().UnixNano())
	clock := func() time.Time { return time.Unix(0, now.Load()) }
	p8, pub, err := apnsmock.TokenKey()
	if err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(t.TempDir(), "AuthKey_KEY123.p8")
	os.WriteFile(keyFile, p8, 0o600)
	m, err = apnsmock.New(apnsmock.Config{TokenKey: pub, KeyID: "KEY123", TeamID: "TEAM42", Topic: topic, Now: clock})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Close)
	b = newBackend(t, apns.Options{Topic: topic, Endpoint: m.URL, CAPath: m.CADir,
		TokenKeyFile: keyFile, KeyID: "KEY123", TeamID: "TEAM42", PushDeadline: 3 * time.Second, Now: clock})
	return now, m, b
}

func TestProviderTokenRefresh(t *testing.T) {
	now, m, b := onFakeClock(t)
	for _, step := range []time.Duration{0, 30 * time.Minute, 31 * time.Minute, 10 * time.Minute} {
		now.Add(int64(step))
		if err := send(t, b, push.PriorityHigh, nil); err != nil {
			t.Fatal(err)
		}
	}
	// One request per push, none refused: the backend re-signed before
	// Apple's hour was up (at 61 minutes), not after being told, and kept
	// the token for the pushes in between (Apple refuses re-signing more
	// often than every 20 minutes).
	reqs := m.Requests()
	if len(reqs) != 4 {
		t.Fatalf("%d requests, want 4: %+v", len(reqs), reqs)
	}
	for i, r := range reqs {
		if r.Status != 200 {
			t.Fatalf("request %d: %d %s", i, r.Status, r.Reason)
		}
	}
	if !reqs[1].IssuedAt.Equal(reqs[0].IssuedAt) || !reqs[3].IssuedAt.Equal(reqs[2].IssuedAt) || !reqs[2].IssuedAt.After(reqs[1].IssuedAt) {
		t.Fatalf("provider tokens issued at %v %v %v %v", reqs[0].IssuedAt, reqs[1].IssuedAt, reqs[2].IssuedAt, reqs[3].IssuedAt)
	}
}

// TestProviderTokenSignedAtSent: the core reads the clock once for a push
// (Notification.Sent), and the provider token of its first request is
// judged and signed at that time, not at a reading of its own.
func TestProviderTokenSignedAtSent(t *testing.T) {
	m, opts := tokenSetup(t)
	b := newBackend(t, opts)
	// Long enough ago that a token signed at a reading of the clock
	// would show it, not so long that Apple would refuse it.
	sent := time.Now().Add(-10 * time.Minute)
	if err := b.Send(context.Background(), push.Notification{App: "apns", Node: "n", Token: token, Priority: push.PriorityHigh, Sent: sent}); err != nil {
		t.Fatal(err)
	}
	reqs := m.Requests()
	if len(reqs) != 1 || reqs[0].Status != 200 {
		t.Fatalf("requests: %+v", reqs)
	}
	if want := time.Unix(sent.Unix(), 0); !reqs[0].IssuedAt.Equal(want) {
		t.Fatalf("provider token issued at %v, want the push's Sent, %v", reqs[0].IssuedAt, want)
	}
}

func TestCertificateAuth(t *testing.T) {
	pool, certPEM, keyPEM, err := apnsmock.ClientCert()
	if err != nil {
		t.Fatal(err)
	}
	m, err := apnsmock.New(apnsmock.Config{ClientCAs: pool, Topic: topic})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "push.pem"), filepath.Join(dir, "push.key")
	os.WriteFile(certFile, certPEM, 0o600)
	os.WriteFile(keyFile, keyPEM, 0o600)

	// PKCS#12 with a password, as exported from Keychain.
	cert, _ := tls.X509KeyPair(certPEM, keyPEM)
	leaf, _ := x509.ParseCertificate(cert.Certificate[0])
	p12, err := gopkcs12.Modern.Encode(cert.PrivateKey, leaf, nil, "s3cret")
	if err != nil {
		t.Fatal(err)
	}
	p12File := filepath.Join(dir, "push.p12")
	os.WriteFile(p12File, p12, 0o600)

	for name, o := range map[string]apns.Options{
		"pem":    {Topic: topic, Endpoint: m.URL, CAPath: m.CADir, CertFile: certFile, KeyFile: keyFile},
		"pkcs12": {Topic: topic, Endpoint: m.URL, CAPath: m.CADir, PKCS12File: p12File, KeyPassword: "s3cret"},
	} {
		t.Run(name, func(t *testing.T) {
			b := newBackend(t, o)
			if err := send(t, b, push.PriorityHigh, nil); err != nil {
				t.Fatal(err)
			}
			// What the certificate's expiry warning and metric read.
			if exp, ok := b.CertificateExpiry(); !ok || !exp.Equal(leaf.NotAfter) {
				t.Fatalf("CertificateExpiry() = %v, %v; want %v, true", exp, ok, leaf.NotAfter)
			}
		})
	}
	_, tokenOpts := tokenSetup(t)
	if exp, ok := newBackend(t, tokenOpts).CertificateExpiry(); ok {
		t.Fatalf("token auth: CertificateExpiry() = %v, true; want no certificate", exp)
	}
	if _, err := apns.New(apns.Options{Topic: topic, PKCS12File: p12File, KeyPassword: "wrong"}, quiet); err == nil {
		t.Fatal("wrong PKCS#12 password accepted")
	}
	reqs := m.Requests()
	if len(reqs) != 2 || reqs[0].Auth != "certificate" {
		t.Fatalf("%+v", reqs)
	}
	// Without a client certificate the mock refuses the TLS handshake.
	p8, _, _ := apnsmock.TokenKey()
	kf := filepath.Join(dir, "k.p8")
	os.WriteFile(kf, p8, 0o600)
	err = send(t, newBackend(t, apns.Options{Topic: topic, Endpoint: m.URL, CAPath: m.CADir, TokenKeyFile: kf, KeyID: "K", TeamID: "T", PushDeadline: 300 * time.Millisecond}), push.PriorityHigh, nil)
	if err == nil {
		t.Fatal("push without client certificate succeeded")
	}
}

func TestUntrustedServer(t *testing.T) {
	m, o := tokenSetup(t)
	o.CAPath = t.TempDir() // trusts nothing
	o.PushDeadline = 2 * time.Second
	err := send(t, newBackend(t, o), push.PriorityHigh, nil)
	// The TLS failure is carried, not flattened into text: a caller can
	// still tell what broke.
	var verr *tls.CertificateVerificationError
	if !push.IsTemporary(err) || !errors.As(err, &verr) {
		t.Fatalf("err = %v (%T), want a temporary error wrapping the certificate error", err, err)
	}
	if strings.Contains(err.Error(), token) {
		t.Fatalf("device token in error text: %v", err)
	}
	if m.Total() != 0 {
		t.Fatal("request reached the server")
	}
}

func TestGoAwayUnderLoadLosesNothing(t *testing.T) {
	m, o := tokenSetup(t)
	m.GoAwayEvery(100)
	o.PushDeadline = 15 * time.Second
	b := newBackend(t, o)
	const n = 500
	var wg sync.WaitGroup
	var failed atomic.Int64
	for i := range n {
		wg.Go(func() {
			tok := fmt.Sprintf("%064x", i+1) // not apnsmock.NoDevice
			if err := b.Send(context.Background(), push.Notification{Token: tok, Priority: push.PriorityHigh}); err != nil {
				failed.Add(1)
				t.Log(err)
			}
		})
	}
	wg.Wait()
	if failed.Load() != 0 {
		t.Fatalf("%d pushes lost", failed.Load())
	}
	accepted := map[string]bool{}
	for _, r := range m.Requests() {
		if r.Status == 200 {
			accepted[r.Token] = true
		}
	}
	if len(accepted) != n {
		t.Fatalf("%d distinct tokens accepted, want %d", len(accepted), n)
	}
	if m.Connections() < 2 {
		t.Fatalf("GOAWAY never forced a new connection (%d)", m.Connections())
	}
}

func TestOneConnectionReused(t *testing.T) {
	m, o := tokenSetup(t)
	b := newBackend(t, o)
	var wg sync.WaitGroup
	for range 50 {
		wg.Go(func() {
			b.Send(context.Background(), push.Notification{Token: token, Priority: push.PriorityHigh})
		})
	}
	wg.Wait()
	if m.Accepted() != 50 || m.Connections() != 1 {
		t.Fatalf("%d accepted over %d connections, want 50 over 1", m.Accepted(), m.Connections())
	}
}

func TestValidateToken(t *testing.T) {
	_, o := tokenSetup(t)
	b := newBackend(t, o)
	for tok, ok := range map[string]bool{
		token:                     true,
		strings.Repeat("AB", 50):  true,
		"ab12":                    false,
		strings.Repeat("zz", 32):  false,
		strings.Repeat("a", 65):   false,
		strings.Repeat("ab", 101): false,
	} {
		if err := b.ValidateToken(tok); (err == nil) != ok {
			t.Errorf("ValidateToken(%.20q...) = %v", tok, err)
		}
	}
}

// Each case breaks exactly one thing in an otherwise valid configuration,
// and must fail for that reason.
func TestBadCredentials(t *testing.T) {
	dir := t.TempDir()
	p8, _, err := apnsmock.TokenKey()
	if err != nil {
		t.Fatal(err)
	}
	goodP8 := filepath.Join(dir, "good.p8")
	os.WriteFile(goodP8, p8, 0o600)
	notPEM := filepath.Join(dir, "bad.p8")
	os.WriteFile(notPEM, []byte("nope"), 0o600)
	badCert := filepath.Join(dir, "cert.pem")
	os.WriteFile(badCert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte{1}}), 0o600)
	valid := apns.Options{Topic: topic, TokenKeyFile: goodP8, KeyID: "K", TeamID: "T", CAPath: dir}
	if _, err := apns.New(valid, quiet); err != nil {
		t.Fatalf("valid options refused: %v", err)
	}
	tests := []struct {
		name   string
		break_ func(o *apns.Options)
		check  func(err error) bool
	}{
		{"no topic", func(o *apns.Options) { o.Topic = "" }, func(err error) bool { return strings.Contains(err.Error(), "topic is required") }},
		{"no credentials", func(o *apns.Options) { o.TokenKeyFile = "" }, func(err error) bool { return strings.Contains(err.Error(), "no credentials") }},
		{"p8 not PEM", func(o *apns.Options) { o.TokenKeyFile = notPEM }, func(err error) bool { return strings.Contains(err.Error(), "is not PEM") }},
		{"p8 missing", func(o *apns.Options) { o.TokenKeyFile = filepath.Join(dir, "missing") },
			func(err error) bool {
				return errors.Is(err, fs.ErrNotExist) && strings.Contains(err.Error(), "token key")
			}},
		{"no key id", func(o *apns.Options) { o.KeyID = "" }, func(err error) bool { return strings.Contains(err.Error(), "key id and team id") }},
		{"broken cert", func(o *apns.Options) { o.TokenKeyFile, o.CertFile, o.KeyFile = "", badCert, badCert },
			func(err error) bool { return strings.Contains(err.Error(), "loading certificate") }},
		{"endpoint without scheme", func(o *apns.Options) { o.Endpoint = "api.push.apple.com" }, func(err error) bool { return strings.Contains(err.Error(), "not an https URL") }},
		{"endpoint over http", func(o *apns.Options) { o.Endpoint = "http://api.push.apple.com" }, func(err error) bool { return strings.Contains(err.Error(), "not an https URL") }},
		{"endpoint with a query", func(o *apns.Options) { o.Endpoint = "https://api.push.apple.com/?x=1" }, func(err error) bool { return strings.Contains(err.Error(), "not an https URL") }},
		{"ca path missing", func(o *apns.Options) { o.CAPath = filepath.Join(dir, "nope") },
			func(err error) bool {
				return errors.Is(err, fs.ErrNotExist) && strings.Contains(err.Error(), "CA path")
			}},
	}
	for _, tt := range tests {
		o := valid
		tt.break_(&o)
		if _, err := apns.New(o, quiet); err == nil {
			t.Errorf("%s: accepted", tt.name)
		} else if !tt.check(err) {
			t.Errorf("%s: failed for another reason: %v", tt.name, err)
		}
	}
}

// BenchmarkSend measures pushes/s of one backend against the mock.
func BenchmarkSend(b *testing.B) {
	_, o := tokenSetup(b)
	be := newBackend(b, o)
	b.SetParallelism(64)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := be.Send(context.Background(), push.Notification{Token: token, Priority: push.PriorityHigh}); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "pushes/s")
}

// sendMany pushes n distinct tokens at once and returns the errors.
func sendMany(b *apns.Backend, n int) []error {
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			errs[i] = b.Send(context.Background(), push.Notification{Token: fmt.Sprintf("%064x", i+1), Priority: push.PriorityHigh})
		})
	}
	wg.Wait()
	return errs
}

// A service that ends every connection after one answer (GOAWAY) still
// gets every push within the deadline: requests the server never
// processed go out again at once on a new connection.
func TestGoAwayAfterEveryAnswer(t *testing.T) {
	m, o := tokenSetup(t)
	m.GoAwayEvery(1)
	o.PushDeadline = push.DefaultPushDeadline * raceSlowdown
	start := time.Now()
	defer func() { t.Logf("took %v", time.Since(start)) }()
	const n = 200
	failed := 0
	for _, err := range sendMany(newBackend(t, o), n) {
		if err != nil {
			failed++
			t.Log(err)
		}
	}
	accepted := map[string]bool{}
	for _, r := range m.Requests() {
		if r.Status == 200 {
			accepted[r.Token] = true
		}
	}
	if failed != 0 || len(accepted) != n {
		t.Fatalf("%d of %d pushes failed, %d tokens accepted (over %d connections)", failed, n, len(accepted), m.Connections())
	}
	t.Logf("%d pushes over %d connections", n, m.Connections())
}

// While the service resets every connection, the app's connection
// attempts back off instead of one per push and retry; once it serves
// again, pushes go through.
func TestResetConnectionsBackOff(t *testing.T) {
	m, o := tokenSetup(t)
	m.ResetConnections(true)
	o.PushDeadline = 2 * time.Second
	b := newBackend(t, o)
	for _, err := range sendMany(b, 200) {
		if !push.IsTemporary(err) {
			t.Fatalf("err = %v, want a temporary error", err)
		}
	}
	c := m.Connections()
	t.Logf("200 pushes over 2 s of resets opened %d connections", c)
	if c > 20 {
		t.Fatalf("200 pushes over 2 s opened %d connections, want a handful", c)
	}
	// The same backend recovers within one push deadline, however far its
	// dial backoff had gone: the push waits for the next attempt.
	m.ResetConnections(false)
	if err := b.Send(context.Background(), push.Notification{Token: token, Priority: push.PriorityHigh}); err != nil {
		t.Fatalf("after the resets ended: %v", err)
	}
}

// TestRefusalsDoNotFloodLog: an APNS that refuses every push (here a key
// of another team, 403 InvalidProviderToken; likewise a revoked key, a
// disallowed topic) must not get one warn line per push into the log:
// the core already logs failures, at most 10 a second.
func TestRefusalsDoNotFloodLog(t *testing.T) {
	_, o := tokenSetup(t)
	o.TeamID = "OTHERTEAM"
	var buf logbuf.Buffer
	logger := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo}))
	b, err := apns.New(o, logger)
	if err != nil {
		t.Fatal(err)
	}
	const n = 100
	for i := 0; i < n; i++ {
		if err := send(t, b, push.PrioritySilent, nil); err == nil {
			t.Fatal("push accepted")
		}
	}
	out := buf.String()
	lines := strings.Count(out, "APNS rejected push")
	t.Logf("first line: %.200s", out)
	if lines > 20 {
		t.Errorf("%d refused pushes wrote %d warn lines, no rate limit", n, lines)
	}
}

// refusedTakenDead pushes to n users' production tokens, each refused
// BadDeviceToken as the sandbox refuses them, and returns how many
// refusals b took for dead tokens (registrations deleted, the users'
// servers told cancel).
func refusedTakenDead(m *apnsmock.Server, b *apns.Backend, n int) int {
	dead := 0
	for i := range n {
		tok := fmt.Sprintf("%064x", i+1)
		m.FailToken(tok, apnsmock.Fault{Status: 400, Reason: "BadDeviceToken"})
		err := b.Send(context.Background(), push.Notification{App: "ios", Node: fmt.Sprint("user-", i), Token: tok, Priority: push.PriorityHigh})
		if _, ok := push.IsDeadToken(err); ok {
			dead++
		}
	}
	return dead
}

// A production (App Store) app left on sandbox = true, the seed's default.
// The developer's own build registers too, and its sandbox token works:
// that one success proves the configuration. The users' pushes, a few a
// minute, are all refused BadDeviceToken, most of the app's answers, and
// so count against the app's configuration, not against their tokens.
func TestSandboxMismatchProvenByOneDevToken(t *testing.T) {
	m, o := tokenSetup(t)
	o.PushDeadline = 0
	b := newBackend(t, o)
	// The developer's device: its sandbox token goes through.
	if err := b.Send(context.Background(), push.Notification{App: "ios", Node: "dev", Token: token, Priority: push.PriorityHigh}); err != nil {
		t.Fatal(err)
	}
	deleted := refusedTakenDead(m, b, 10)
	if deleted > 0 {
		t.Fatalf("%d of 10 production registrations declared dead (deleted, user's server told cancel) after 1 success and 10 BadDeviceToken", deleted)
	}
}

// A 410 without Apple's reason (a proxy or a wrong endpoint answering
// Gone) is no proof the token is dead.
func TestBare410IsNotApplesUnregistered(t *testing.T) {
	m, o := tokenSetup(t)
	b := newBackend(t, o)
	m.FailToken(token, apnsmock.Fault{Status: 410})
	if d, ok := push.IsDeadToken(send(t, b, push.PriorityHigh, nil)); ok {
		t.Fatalf("bare 410 without reason taken as dead token: %v", d)
	}
}

// CanonicalToken lowers a token as strings.ToLower does, and hands back
// one in lower case already as it is.
func TestCanonicalToken(t *testing.T) {
	b := &apns.Backend{}
	hex := "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	cases := []string{
		"", "a", "A", "@", "[", "`", "{", "Z", "z", "\x7f", "\x80", "é", "É", "İ",
		hex, strings.ToUpper(hex), hex[:63] + "F", "F" + hex[1:], hex[:40] + "@[`{" + hex[44:],
		"abcdefgH", "abcdefgh", "ABCDEFGH", "abcdefghI", "abcdefgh\xc3\x89", "@@@@@@@@[[[[[[[[````````{{{{{{{{",
	}
	for i := range 256 {
		cases = append(cases, hex[:20]+string(rune(i))+hex[21:], hex[:20]+string([]byte{byte(i)})+hex[21:])
	}
	for _, tok := range cases {
		got, want := b.CanonicalToken(tok), strings.ToLower(tok)
		if got != want {
			t.Errorf("CanonicalToken(%q) = %q, want %q", tok, got, want)
		}
	}
	if n := testing.AllocsPerRun(100, func() { b.CanonicalToken(hex) }); n != 0 {
		t.Errorf("%v allocations for a token in lower case", n)
	}
}

// Pushes that never reached APNS (the network reset every connection for
// a moment) are no answers of APNS, and must not outvote its refusals: a
// production app left on the sandbox, proven by the developer's one
// sandbox token (TestSandboxMismatchProvenByOneDevToken), must not take
// production tokens for dead because a network blip came in between.
func TestNetworkFailuresAreNoAnswers(t *testing.T) {
	m, o := tokenSetup(t)
	o.PushDeadline = 300 * time.Millisecond
	b := newBackend(t, o)
	// The connection goes after this answer, as after any GOAWAY.
	m.GoAwayEvery(1)
	if err := b.Send(context.Background(), push.Notification{App: "ios", Node: "dev", Token: token, Priority: push.PriorityHigh}); err != nil {
		t.Fatal(err)
	}
	// A network blip: every new connection is reset; the pushes fail
	// (the user's server hears wait) without APNS answering any.
	m.ResetConnections(true)
	for i := range 25 {
		err := b.Send(context.Background(), push.Notification{App: "ios", Node: fmt.Sprint("blip-", i), Token: token, Priority: push.PriorityHigh})
		if !push.IsTemporary(err) {
			t.Fatalf("push during the blip: %v, want a temporary error", err)
		}
	}
	m.ResetConnections(false)
	deleted := refusedTakenDead(m, b, 10)
	if deleted > 0 {
		t.Fatalf("%d of 10 production registrations declared dead after 1 success, 25 pushes lost to the network and 10 BadDeviceToken", deleted)
	}
}

// A reload flips a production app to the sandbox by mistake (or to a new
// bundle id most devices do not have yet), mid-traffic. The developer's
// sandbox device proves the new configuration with one push; every
// user's token is then refused (BadDeviceToken). The old configuration's
// successes of the last minute, which Fresh shares for the health page,
// must not take the new one's refusals for dead tokens.
func TestReloadToSandboxKeepsProductionDevices(t *testing.T) {
	m, o := tokenSetup(t)
	br := push.NewBreaker("ios", push.BreakerOptions{}, quiet)
	o.Breaker = br
	old := newBackend(t, o)
	for i := range 100 {
		if err := old.Send(context.Background(), push.Notification{App: "ios", Node: fmt.Sprint("busy-", i), Token: token, Priority: push.PriorityHigh}); err != nil {
			t.Fatal(err)
		}
	}
	// The reload: the same options here (the mock is one endpoint), a
	// Fresh breaker as serve's BuildApp makes.
	o.Breaker = br.Fresh()
	reloaded := newBackend(t, o)
	if err := reloaded.Send(context.Background(), push.Notification{App: "ios", Node: "dev", Token: token, Priority: push.PriorityHigh}); err != nil {
		t.Fatal(err)
	}
	dead := refusedTakenDead(m, reloaded, 20)
	if dead > 0 {
		t.Fatalf("%d of 20 production tokens declared dead after a reload, on the new configuration's one success and the old one's 100", dead)
	}
}

// The credentials check tells a key, team or topic APNS refuses from
// credentials it takes, whatever it says of the made-up device token;
// an answer that tells neither (a 5xx, a 429, none in time) is no
// refusal. It reaches no device, and the breaker hears none of it.
func TestCheckCredentials(t *testing.T) {
	p8, _, err := apnsmock.TokenKey()
	if err != nil {
		t.Fatal(err)
	}
	otherKey := filepath.Join(t.TempDir(), "AuthKey_KEY123.p8")
	os.WriteFile(otherKey, p8, 0o600)
	tests := []struct {
		name   string
		opts   func(*apns.Options)
		fault  apnsmock.Fault
		reason string // of the refusal; "" when accepted or not known
		check  string // what the refusal says to check
		known  bool   // accepted or refused
	}{
		{name: "accepted", known: true},
		{name: "wrong team", opts: func(o *apns.Options) { o.TeamID = "TEAM99" }, reason: "APNS 403 InvalidProviderToken", check: "team_id", known: true},
		{name: "wrong key id", opts: func(o *apns.Options) { o.KeyID = "KEY999" }, reason: "APNS 403 InvalidProviderToken", check: "key_id", known: true},
		{name: "another key", opts: func(o *apns.Options) { o.TokenKeyFile = otherKey }, reason: "APNS 403 InvalidProviderToken", check: "token_key_file", known: true},
		{name: "wrong topic", opts: func(o *apns.Options) { o.Topic = "im.example.other" }, reason: "APNS 400 TopicDisallowed", check: "topic (im.example.other) is the app's bundle ID", known: true},
		{name: "certificate of the other environment", fault: apnsmock.Fault{Status: 403, Reason: "BadCertificateEnvironment"},
			reason: "APNS 403 BadCertificateEnvironment", check: "sandbox", known: true},
		// The device token is judged after the credentials and the
		// topic: a 410 for it says both were taken, and a token of
		// another app names the topic as what to check.
		{name: "device token unregistered", fault: apnsmock.Fault{Status: 410, Reason: "Unregistered", Timestamp: time.UnixMilli(1_700_000_000_000)}, known: true},
		{name: "device token of another topic", fault: apnsmock.Fault{Status: 400, Reason: "DeviceTokenNotForTopic"},
			reason: "APNS 400 DeviceTokenNotForTopic", check: "topic (im.example.app) is the app's bundle ID", known: true},
		// Signed anew and asked again, as a push would be.
		{name: "provider token stale once", fault: apnsmock.Fault{Status: 403, Reason: "ExpiredProviderToken"}, known: true},
		{name: "service unavailable", fault: apnsmock.Fault{Status: 503, Reason: "ServiceUnavailable"}},
		{name: "too many requests", fault: apnsmock.Fault{Status: 429, Reason: "TooManyRequests"}},
		{name: "no answer in time", fault: apnsmock.Fault{Delay: time.Minute}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, o := tokenSetup(t)
			if tt.opts != nil {
				tt.opts(&o)
			}
			if tt.fault != (apnsmock.Fault{}) {
				m.FailToken(apnsmock.NoDevice, tt.fault)
			}
			br := push.NewBreaker("ios", push.BreakerOptions{MinAnswers: 1}, quiet)
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
			case tt.reason != "" && (!errors.As(err, &refused) || refused.Reason != tt.reason || !strings.Contains(refused.Check, tt.check)):
				t.Fatalf("%v, want a refusal %q that says to check %q", err, tt.reason, tt.check)
			case !tt.known && (err == nil || errors.As(err, &refused)):
				t.Fatalf("%v, want an error that is no refusal", err)
			}
			// The mock records no request it did not answer; a provider
			// token Apple calls stale is signed anew and sent once more.
			answered := 1
			switch {
			case tt.fault.Delay > 0:
				answered = 0
			case tt.fault.Reason == "ExpiredProviderToken", strings.Contains(tt.reason, "InvalidProviderToken"):
				answered = 2
			}
			if checks := m.Checks(); len(checks) != answered || answered > 0 && checks[0].PushType != "background" || m.Total() != 0 || m.Accepted() != 0 {
				t.Fatalf("%d checks (%+v), %d pushes, %d accepted: want %d checks and no push", len(checks), checks, m.Total(), m.Accepted(), answered)
			}
			if bad, _ := br.Misconfigured(); bad {
				t.Fatal("the check's answer reached the breaker")
			}
		})
	}
}

// TestIdleTimeoutTriedAgain: Apple's 400 IdleTimeout is about the
// connection the push went out on, which sat idle too long, not about
// the push or its token: the push goes out again, and is not dropped as
// one Apple refused.
func TestIdleTimeoutTriedAgain(t *testing.T) {
	m, o := tokenSetup(t)
	b := newBackend(t, o)
	m.FailToken(token, apnsmock.Fault{Status: 400, Reason: "IdleTimeout"})
	if err := send(t, b, push.PriorityHigh, nil); err != nil {
		t.Fatalf("push after an IdleTimeout answer: %v, want it sent again and taken", err)
	}
	if m.Total() != 2 || m.Accepted() != 1 {
		t.Fatalf("%d requests, %d accepted; want the push sent again once", m.Total(), m.Accepted())
	}
}

// TestProviderTokenSignedAnewBounded: with this host's clock two hours
// behind (a machine booted with last night's time, before NTP set it
// right), every provider token we sign is expired to Apple, however
// often it is signed anew. Signing one at every push would have Apple
// answer TooManyProviderTokenUpdates, which it asks to avoid (no more
// than one new token every 20 minutes): while tokens signed anew are
// refused too, no other is signed, and once the clock is right, the next
// push goes through. (This test's clock moves its monotonic reading with
// its wall time, so the step reads as time passed; a real step is told
// by the two moving apart, see TestClockStepped.)
func TestProviderTokenSignedAnewBounded(t *testing.T) {
	m, o := tokenSetup(t)
	var offset atomic.Int64
	offset.Store(int64(-2 * time.Hour))
	o.Now = func() time.Time { return time.Now().Add(time.Duration(offset.Load())) }
	b := newBackend(t, o)
	for i := range 20 {
		err := send(t, b, push.PriorityHigh, nil)
		if !push.IsTemporary(err) {
			t.Fatalf("push %d with the clock 2 h behind: %v, want a temporary failure", i, err)
		}
	}
	signed := map[string]bool{}
	for _, r := range m.Requests() {
		signed[r.Bearer] = true
	}
	if len(signed) > 2 {
		t.Fatalf("20 pushes signed %d provider tokens, all refused as expired; want at most 2", len(signed))
	}
	// Five minutes later, the clock set right: signed anew, taken.
	offset.Store(int64(5*time.Minute + time.Second))
	if err := send(t, b, push.PriorityHigh, nil); err != nil {
		t.Fatalf("push once the clock is right: %v", err)
	}
}

// TestCertificateRefusedByGoAway: APNS refuses a client certificate of
// the other environment (or a revoked one) not with a 403 on the push's
// stream but by ending the connection at once with a GOAWAY whose debug
// data names the reason, {"reason":"BadCertificateEnvironment"}, having
// answered nothing. That is Apple's word on the app's credentials: a push
// is refused for them (kept until the configuration is mended, which
// closes the app's credentials gate) after one connection, not sent again
// on connection after connection until its deadline and counted as an
// outage; and a check of the credentials says to look at sandbox. A
// GOAWAY of another reason (Shutdown) still sends the push again.
func TestCertificateRefusedByGoAway(t *testing.T) {
	m, o := tokenSetup(t)
	m.RefuseConnections("BadCertificateEnvironment")
	err := send(t, newBackend(t, o), push.PriorityHigh, nil)
	var cr *push.CredentialsRefusedError
	if !errors.As(err, &cr) || !push.IsTemporary(err) || cr.Reason != "APNS 403 BadCertificateEnvironment" || !strings.Contains(cr.Check, "sandbox") {
		t.Fatalf("push over connections APNS ends with GOAWAY BadCertificateEnvironment: %v, want the credentials refused, kept, sandbox to check", err)
	}
	if n := m.Refused(); n != 1 {
		t.Fatalf("the push opened %d connections, each refused alike; want 1", n)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := newBackend(t, o).CheckCredentials(ctx); !errors.As(err, &cr) || !strings.Contains(cr.Check, "sandbox") {
		t.Fatalf("check of a certificate APNS refuses by GOAWAY: %v, want a refusal that says to check sandbox", err)
	}

	// Apple's shutdown of a server is no refusal: sent again on a new
	// connection once it serves.
	m.RefuseConnections("Shutdown")
	b := newBackend(t, o)
	done := make(chan error, 1)
	go func() { done <- send(t, b, push.PriorityHigh, nil) }()
	deadline := time.Now().Add(5 * time.Second)
	for m.Refused() < 4 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	m.RefuseConnections("")
	if err := <-done; err != nil {
		t.Fatalf("push over connections ended with GOAWAY Shutdown, then served: %v", err)
	}
}

// TestKeyOfOtherEnvironment: Apple's team-scoped p8 keys may be
// restricted to the sandbox or to production, and APNS refuses a
// provider token of such a key in the other environment with 403
// BadEnvironmentKeyInToken. That is the app's sandbox setting (or the
// key) to mend, not a key id, team or key file mistyped: the check and a
// refused push say to look at sandbox, and the push is kept for the
// mended configuration, its registration untouched.
func TestKeyOfOtherEnvironment(t *testing.T) {
	m, o := tokenSetup(t)
	m.FailToken(apnsmock.NoDevice, apnsmock.Fault{Status: 403, Reason: "BadEnvironmentKeyInToken"})
	var cr *push.CredentialsRefusedError
	if err := newBackend(t, o).CheckCredentials(context.Background()); !errors.As(err, &cr) || !strings.Contains(cr.Check, "sandbox") {
		t.Fatalf("check of a key of the other environment: %v, want a refusal that says to check sandbox", err)
	}
	m.FailToken(token, apnsmock.Fault{Status: 403, Reason: "BadEnvironmentKeyInToken"})
	err := send(t, newBackend(t, o), push.PriorityHigh, nil)
	if _, dead := push.IsDeadToken(err); dead || !push.IsTemporary(err) || !errors.As(err, &cr) || !strings.Contains(cr.Check, "sandbox") {
		t.Fatalf("push with a key of the other environment: %v, want the credentials refused, kept, sandbox to check", err)
	}
	if n := m.Total(); n != 1 {
		t.Fatalf("%d requests: a key refused for its environment is refused in every token it signs, want 1", n)
	}
}
