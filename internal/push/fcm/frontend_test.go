package fcm_test

import (
	"net/http"
	"testing"

	"github.com/push-appserver/push-appserver/internal/push"
	"github.com/push-appserver/push-appserver/internal/testutil/fcmmock"
)

// TestFrontEndStatusesTriedAgain: 408 Request Timeout (Google's front
// end gave up waiting for the request) and 421 Misdirected Request (the
// connection cannot serve the host) say nothing of the message or its
// token, and RFC 9110 lets both be sent again: the push goes out again
// within its deadline and is taken, and one that meets them to its
// deadline ends as a temporary failure, kept for redelivery, not as a
// push FCM refused, which is dropped.
func TestFrontEndStatusesTriedAgain(t *testing.T) {
	for _, status := range []int{http.StatusRequestTimeout, http.StatusMisdirectedRequest} {
		t.Run(http.StatusText(status), func(t *testing.T) {
			m, o := setup(t)
			b := newBackend(t, o)
			m.FailToken(token, fcmmock.Fault{Status: status})
			if err := send(b, nil); err != nil {
				t.Fatalf("push after a %d answer: %v, want it sent again and taken", status, err)
			}
			faults := make([]fcmmock.Fault, 100)
			for i := range faults {
				faults[i] = fcmmock.Fault{Status: status}
			}
			m.FailToken(token, faults...)
			if err := send(b, nil); !push.IsTemporary(err) {
				t.Fatalf("push answered %d to its deadline: %v, want a temporary failure (redelivered)", status, err)
			}
		})
	}
}
