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

// TestFrontEndStatusesTriedAgain: 408 Request Timeout (a front end gave
// up waiting for the request) and 421 Misdirected Request (the
// connection cannot serve the host, RFC 9110 15.5.20) say nothing of the
// subscription, and both may be sent again: the push goes out again
// within its deadline and is taken, and one that meets them to its
// deadline ends as a temporary failure, kept for redelivery, not as a
// push the service refused, which is dropped. The connection that
// answered 421 serves no later push: it would answer each the same.
func TestFrontEndStatusesTriedAgain(t *testing.T) {
	// 408 is the request's, 421 the connection's.
	wantConns := map[int]int{http.StatusRequestTimeout: 1, http.StatusMisdirectedRequest: 2}
	for _, status := range []int{http.StatusRequestTimeout, http.StatusMisdirectedRequest} {
		t.Run(http.StatusText(status), func(t *testing.T) {
			mock, b, pub := setup(t, webpush.Options{PushDeadline: 2 * time.Second})
			// The service has taken a push: its answers are its own.
			if err := b.Send(context.Background(), push.Notification{Node: "n0", Token: subscribe(t, mock, pub).JSON}); err != nil {
				t.Fatal(err)
			}
			sub := subscribe(t, mock, pub)
			mock.Fail(sub.ID, webpushmock.Fault{Status: status})
			if err := b.Send(context.Background(), push.Notification{Node: "n", Token: sub.JSON}); err != nil {
				t.Fatalf("push after a %d answer: %v, want it sent again and taken", status, err)
			}
			if err := b.Send(context.Background(), push.Notification{Node: "n0", Token: subscribe(t, mock, pub).JSON}); err != nil {
				t.Fatal(err)
			}
			if want, n := wantConns[status], mock.Connections(); n != want {
				t.Fatalf("%d connections after a %d answer, want %d", n, status, want)
			}
			mock.Fail(sub.ID, slices.Repeat([]webpushmock.Fault{{Status: status}}, 100)...)
			if err := b.Send(context.Background(), push.Notification{Node: "n", Token: sub.JSON}); !push.IsTemporary(err) {
				t.Fatalf("push answered %d to its deadline: %v, want a temporary failure (redelivered)", status, err)
			}
		})
	}
}

// TestRetryAfterKeptForRedelivery: a push service that answers 429 or
// 503 with a Retry-After beyond the push's deadline is not asked again
// within the push: the push ends at once as a temporary failure that
// carries the wait, so that redelivery sends it no sooner than the
// service asked.
func TestRetryAfterKeptForRedelivery(t *testing.T) {
	for _, status := range []int{http.StatusTooManyRequests, http.StatusServiceUnavailable} {
		t.Run(http.StatusText(status), func(t *testing.T) {
			mock, b, pub := setup(t, webpush.Options{PushDeadline: time.Second})
			if err := b.Send(context.Background(), push.Notification{Node: "n0", Token: subscribe(t, mock, pub).JSON}); err != nil {
				t.Fatal(err)
			}
			sub := subscribe(t, mock, pub)
			mock.Fail(sub.ID, slices.Repeat([]webpushmock.Fault{{Status: status, RetryAfter: "120"}}, 100)...)
			before := len(mock.Messages())
			err := b.Send(context.Background(), push.Notification{Node: "n", Token: sub.JSON})
			var te *push.TemporaryError
			if !errors.As(err, &te) || te.RetryAfter != 2*time.Minute {
				t.Fatalf("%v, want a temporary failure to try again in 2 minutes", err)
			}
			if sent := len(mock.Messages()) - before; sent != 1 {
				t.Fatalf("%d requests, want 1", sent)
			}
		})
	}
}
