package apns_test

import (
	"net/http"
	"testing"

	"github.com/push-appserver/push-appserver/internal/push"
	"github.com/push-appserver/push-appserver/internal/testutil/apnsmock"
)

// TestFrontEndStatusesTriedAgain: 408 Request Timeout (a front end gave
// up waiting for the request) and 421 Misdirected Request (the
// connection cannot serve the host) say nothing of the push or its
// token, and RFC 9110 lets both be sent again: the push goes out again
// within its deadline and is taken, and one that meets them to its
// deadline ends as a temporary failure, kept for redelivery, not as a
// push Apple refused, which is dropped.
func TestFrontEndStatusesTriedAgain(t *testing.T) {
	for _, status := range []int{http.StatusRequestTimeout, http.StatusMisdirectedRequest} {
		t.Run(http.StatusText(status), func(t *testing.T) {
			m, o := tokenSetup(t)
			b := newBackend(t, o)
			m.FailToken(token, apnsmock.Fault{Status: status})
			if err := send(t, b, push.PriorityHigh, nil); err != nil {
				t.Fatalf("push after a %d answer: %v, want it sent again and taken", status, err)
			}
			if m.Total() != 2 || m.Accepted() != 1 {
				t.Fatalf("%d requests, %d accepted; want the push sent again once", m.Total(), m.Accepted())
			}
			faults := make([]apnsmock.Fault, 100)
			for i := range faults {
				faults[i] = apnsmock.Fault{Status: status}
			}
			m.FailToken(token, faults...)
			if err := send(t, b, push.PriorityHigh, nil); !push.IsTemporary(err) {
				t.Fatalf("push answered %d to its deadline: %v, want a temporary failure (redelivered)", status, err)
			}
		})
	}
}
