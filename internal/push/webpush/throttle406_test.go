package webpush_test

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/push-appserver/push-appserver/internal/push"
	"github.com/push-appserver/push-appserver/internal/push/webpush"
	"github.com/push-appserver/push-appserver/internal/testutil/webpushmock"
)

// TestWNSThrottle406KeptForRedelivery: Microsoft's push service (WNS,
// behind Edge's subscriptions at *.notify.windows.com) answers a push
// over its throttle limit with 406 Not Acceptable, X-WNS-Status:
// appthrottled and a Retry-After (900 seconds seen), where RFC 8030
// services answer 429. The push is a temporary failure that keeps the
// service's wait, kept for redelivery, not one the service refused for
// good, which is dropped and its message wakes no one; and it is not
// asked again within the push.
func TestWNSThrottle406KeptForRedelivery(t *testing.T) {
	mock, b, pub := setup(t, webpush.Options{PushDeadline: time.Second})
	if err := b.Send(context.Background(), push.Notification{Node: "n0", Token: subscribe(t, mock, pub).JSON}); err != nil {
		t.Fatal(err)
	}
	sub := subscribe(t, mock, pub)
	mock.Fail(sub.ID, slices.Repeat([]webpushmock.Fault{{Status: http.StatusNotAcceptable, RetryAfter: "900"}}, 100)...)
	before := len(mock.Messages())
	err := b.Send(context.Background(), push.Notification{Node: "n", Token: sub.JSON, Priority: push.PriorityHigh})
	var te *push.TemporaryError
	if !errors.As(err, &te) || te.RetryAfter != 900*time.Second {
		t.Fatalf("push answered 406 with Retry-After 900: %v, want a temporary failure to try again in 15 minutes", err)
	}
	if _, dead := push.IsDeadToken(err); dead {
		t.Fatalf("push answered 406: %v, a dead subscription", err)
	}
	if sent := len(mock.Messages()) - before; sent != 1 {
		t.Fatalf("%d requests, want 1", sent)
	}
}

// TestWNSThrottle406TriedAgain: a 406 with a short Retry-After is tried
// again within the push's deadline, as a 429 is.
func TestWNSThrottle406TriedAgain(t *testing.T) {
	mock, b, pub := setup(t, webpush.Options{PushDeadline: 5 * time.Second})
	if err := b.Send(context.Background(), push.Notification{Node: "n0", Token: subscribe(t, mock, pub).JSON}); err != nil {
		t.Fatal(err)
	}
	sub := subscribe(t, mock, pub)
	mock.Fail(sub.ID, webpushmock.Fault{Status: http.StatusNotAcceptable, RetryAfter: "1"})
	if err := b.Send(context.Background(), push.Notification{Node: "n", Token: sub.JSON}); err != nil {
		t.Fatalf("push after a throttling 406: %v, want it sent again and taken", err)
	}
}
