package admin

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/push-appserver/push-appserver/internal/push"
)

// TestNode is the node a test push carries, so it is told apart in logs.
const TestNode = "push-appserver-send-test"

// TestPush is one test push: through which app's backend, to which token.
type TestPush struct {
	App      string
	Backend  push.Backend
	Priority push.Priority
	Token    string
	// URLIsSecret says the request's URL is the device's subscription
	// (WebPush): it is shown as its origin only.
	URLIsSecret bool
	// ShowSecrets shows the request's URL whole.
	ShowSecrets bool
}

// SendTest sends one push as the push path would (same priority, same
// retries within the app's deadline) and writes every answer the push
// service gave, status, headers and body, then what the server makes of
// it. It returns the backend's error.
func SendTest(ctx context.Context, w io.Writer, t TestPush) error {
	prio := t.Priority.Resolve(true) // a test push is meant to be seen
	if v, ok := t.Backend.(push.TokenValidator); ok {
		if err := v.ValidateToken(t.Token); err != nil {
			fmt.Fprintf(w, "token refused before sending: %v\n", err)
			return err
		}
	}
	answers := 0
	ctx = push.WithAnswerHook(ctx, func(a push.Answer) {
		answers++
		writeAnswer(w, answers, a, t)
	})
	start := time.Now()
	err := t.Backend.Send(ctx, push.Notification{App: t.App, Node: TestNode, Token: t.Token, Priority: prio})
	took := time.Since(start).Round(time.Millisecond)
	fmt.Fprintf(w, "app %s, priority %s, %d answer(s) in %s\n", t.App, prio, answers, took)
	var tmp *push.TemporaryError
	var refused *push.CredentialsRefusedError
	switch dead, isDead := push.IsDeadToken(err); {
	case err == nil:
		fmt.Fprintln(w, "result: accepted (the push service took the notification; delivery to the device is up to it)")
	case isDead:
		fmt.Fprintf(w, "result: dead token: %s, since %s\n", dead.Reason, dead.Since.UTC().Format(time.RFC3339))
		fmt.Fprintln(w, "a registration with this token would be removed")
	case errors.As(err, &refused):
		// Kept for redelivery on the push path, but what the operator
		// running this must hear is that the configuration is wrong.
		fmt.Fprintf(w, "result: refused: %v\n", refused)
	case errors.As(err, &tmp):
		fmt.Fprintf(w, "result: temporary failure after retries: %s\n", tmp.Reason)
		if tmp.Err != nil {
			fmt.Fprintf(w, "cause: %v\n", tmp.Err)
		}
		if tmp.RetryAfter > 0 {
			fmt.Fprintf(w, "retry after: %s\n", tmp.RetryAfter)
		}
	default:
		fmt.Fprintf(w, "result: refused: %v\n", err)
	}
	return err
}

// writeAnswer writes one answer as it came: status line, every header in
// name order, the body.
func writeAnswer(w io.Writer, n int, a push.Answer, t TestPush) {
	fmt.Fprintf(w, "answer %d to %s %s:\n", n, a.Method, shownURL(a.URL, t))
	fmt.Fprintf(w, "  HTTP %d\n", a.Status)
	names := make([]string, 0, len(a.Header))
	for k := range a.Header {
		names = append(names, k)
	}
	slices.Sort(names)
	for _, k := range names {
		for _, v := range a.Header[k] {
			fmt.Fprintf(w, "  %s: %s\n", strings.ToLower(k), v)
		}
	}
	switch body := strings.TrimRight(string(a.Body), "\r\n"); {
	case body == "":
		fmt.Fprintln(w, "  body: (empty)")
	case !utf8.ValidString(body):
		fmt.Fprintf(w, "  body: %d bytes, not text\n", len(a.Body))
	default:
		fmt.Fprintf(w, "  body: %s\n", body)
	}
}

// shownURL keeps the device token out of the printed URL unless secrets
// are shown: APNS carries it in the path, a WebPush URL is the
// subscription itself.
func shownURL(raw string, t TestPush) string {
	if t.ShowSecrets {
		return raw
	}
	u, err := url.Parse(raw)
	if err != nil {
		return "(URL hidden)"
	}
	path := u.Path
	switch {
	case t.URLIsSecret:
		path = "/…"
	case t.Token != "" && strings.Contains(path, t.Token):
		path = strings.ReplaceAll(path, t.Token, "<token>")
	}
	return u.Scheme + "://" + u.Host + path
}
