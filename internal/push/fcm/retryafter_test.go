package fcm_test

import (
	"errors"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/push-appserver/push-appserver/internal/push"
	"github.com/push-appserver/push-appserver/internal/testutil/fcmmock"
)

// TestRetryAfterAsDate: a Retry-After given as an HTTP date (RFC 9110
// 10.2.3 allows it as well as seconds) is honoured as the seconds are:
// the push is not sent again before it, within its deadline, and
// redelivery hears how long to wait.
func TestRetryAfterAsDate(t *testing.T) {
	m, o := setup(t)
	o.PushDeadline = time.Second
	b := newBackend(t, o)
	if err := send(b, nil); err != nil {
		t.Fatal(err)
	}
	when := time.Now().Add(2 * time.Minute).UTC().Format(http.TimeFormat)
	m.FailToken(token, slices.Repeat([]fcmmock.Fault{{Status: 503, Code: "UNAVAILABLE", RetryAfter: when}}, 50)...)
	err := send(b, nil)
	var te *push.TemporaryError
	if !errors.As(err, &te) {
		t.Fatalf("Send = %v, want a temporary failure", err)
	}
	if n := len(m.Requests()) - 1; n != 1 || te.RetryAfter < time.Minute {
		t.Fatalf("%d requests after a 503 with Retry-After: %s; RetryAfter handed to redelivery %v", n, when, te.RetryAfter)
	}
}
