package apns_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/push-appserver/push-appserver/internal/push"
	"github.com/push-appserver/push-appserver/internal/testutil/apnsmock"
)

// TestWrongEndpointKeptUntilReconfigured guards pushes of an app whose
// endpoint is not APNS's: a path Apple does not serve (404 BadPath), or
// a front end that refuses the request's method (405) or knows no such
// path (a bare 404). Such an answer is about our configuration, not the
// push or its token: the push is refused as a key or topic is (kept
// until the configuration is mended, not retried within its seconds,
// no token counted against), with what to check naming the endpoint and
// the URL in use; a check of the credentials says the same.
func TestWrongEndpointKeptUntilReconfigured(t *testing.T) {
	tests := []struct {
		name   string
		path   string         // appended to the mock's URL as the endpoint
		fault  apnsmock.Fault // of every request
		reason string
	}{
		{name: "wrong path", path: "/apns", reason: "APNS 404 BadPath"},
		{name: "method not allowed", fault: apnsmock.Fault{Status: 405, Reason: "MethodNotAllowed"}, reason: "APNS 405 MethodNotAllowed"},
		{name: "front end without a reason", fault: apnsmock.Fault{Status: 404}, reason: "APNS 404"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, o := tokenSetup(t)
			o.Endpoint = m.URL + tt.path
			if tt.fault.Status != 0 {
				m.FailToken(token, tt.fault)
				m.FailToken(apnsmock.NoDevice, tt.fault)
			}
			br := push.NewBreaker("ios", push.BreakerOptions{MinAnswers: 1}, quiet)
			o.Breaker = br
			b := newBackend(t, o)
			err := b.Send(context.Background(), push.Notification{App: "ios", Node: "n", Token: token, Priority: push.PriorityHigh})
			var cr *push.CredentialsRefusedError
			if !push.IsTemporary(err) || !errors.As(err, &cr) || cr.Partial {
				t.Fatalf("Send = %v, want a refusal of the configuration kept for redelivery", err)
			}
			if _, dead := push.IsDeadToken(err); dead {
				t.Fatalf("Send = %v counts against the token", err)
			}
			if cr.Reason != tt.reason || !strings.Contains(cr.Check, "endpoint") || !strings.Contains(cr.Check, o.Endpoint+"/3/device/") {
				t.Fatalf("refusal %q, check %q: want %q saying to check endpoint %s", cr.Reason, cr.Check, tt.reason, o.Endpoint)
			}
			if n := m.Total(); n != 1 {
				t.Fatalf("%d requests for one push answered %s, want 1 (not retried within its seconds)", n, tt.reason)
			}
			if bad, _ := br.Misconfigured(); bad {
				t.Fatal("the breaker took the answer for one about tokens")
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			err = b.CheckCredentials(ctx)
			if !errors.As(err, &cr) || !strings.Contains(cr.Check, "endpoint") || !strings.Contains(cr.Check, o.Endpoint) {
				t.Fatalf("CheckCredentials = %v, want a refusal saying to check endpoint %s", err, o.Endpoint)
			}
		})
	}
}
