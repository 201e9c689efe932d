package webpush_test

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/push-appserver/push-appserver/internal/push"
	"github.com/push-appserver/push-appserver/internal/push/webpush"
	"github.com/push-appserver/push-appserver/internal/testutil/webpushmock"
)

// A subscription's endpoint is the registrant's to choose: anyone with
// the HTTP API can register subscriptions at a third party's web server
// and push to them. That server answers 5xx (or 404) and never a
// success, and each push was retried until the push deadline (8 requests
// in the default 5 s) and then kept for redelivery and retried so for 10
// minutes: about a hundred requests to a stranger's chosen host for each
// push asked for. Once an origin has failed UnprovenFailures pushes
// without answering any with success, each push to it is one request,
// and its failure asks redelivery to wait at least a minute (a
// Retry-After), so it is about ten requests in 10 minutes, and a push
// service of one's own that was down is still sent every push once it
// is back. A success vouches for the service: its 5xx answers are
// retried again.
func TestUnprovenServiceTriedOnce(t *testing.T) {
	ctx := context.Background()
	mock, b, pub := setup(t, webpush.Options{PushDeadline: time.Second})
	always503 := make([]webpushmock.Fault, 100)
	for i := range always503 {
		always503[i] = webpushmock.Fault{Status: 503}
	}
	for i := range webpush.UnprovenFailures + 5 {
		sub := subscribe(t, mock, pub)
		mock.Fail(sub.ID, always503...)
		before := len(mock.Messages())
		err := b.Send(ctx, push.Notification{Node: "n", Token: sub.JSON})
		sent := len(mock.Messages()) - before
		if err == nil {
			t.Fatalf("push %d: succeeded at a service answering 503", i)
		}
		if i < webpush.UnprovenFailures {
			continue
		}
		var te *push.TemporaryError
		if sent != 1 || !errors.As(err, &te) || te.RetryAfter < time.Minute {
			t.Fatalf("push %d to a service that failed %d pushes and took none: %d requests, error %v; want 1 request and a temporary error to try again in a minute at the soonest",
				i, i, sent, err)
		}
	}

	if err := b.Send(ctx, push.Notification{Node: "n", Token: subscribe(t, mock, pub).JSON}); err != nil {
		t.Fatalf("push to a working subscription: %v", err)
	}
	sub := subscribe(t, mock, pub)
	mock.Fail(sub.ID, webpushmock.Fault{Status: 503})
	before := len(mock.Messages())
	if err := b.Send(ctx, push.Notification{Node: "n", Token: sub.JSON}); err != nil {
		t.Fatalf("503 then ok, at a service that answered a success: %v", err)
	}
	if sent := len(mock.Messages()) - before; sent != 2 {
		t.Fatalf("503 then ok at a proven service: %d requests, want 2", sent)
	}
}

// TestUnprovenServiceGoneKeptAMinute: at a service that has failed
// UnprovenFailures pushes and answered none with success, a 404 is kept
// (it has vouched for none of its 404s) and, like its 5xx, asks
// redelivery to wait a minute at the soonest: kept without that wait, a
// stranger's host answering 404 would be sent each push again and again
// at the redelivery's own pace.
func TestUnprovenServiceGoneKeptAMinute(t *testing.T) {
	ctx := context.Background()
	mock, b, pub := setup(t, webpush.Options{PushDeadline: 300 * time.Millisecond})
	for i := range webpush.UnprovenFailures {
		sub := subscribe(t, mock, pub)
		mock.Fail(sub.ID, slices.Repeat([]webpushmock.Fault{{Status: 503}}, 100)...)
		if err := b.Send(ctx, push.Notification{Node: "n", Token: sub.JSON}); err == nil {
			t.Fatalf("push %d: succeeded at a service answering 503", i)
		}
	}
	sub := subscribe(t, mock, pub)
	mock.Fail(sub.ID, webpushmock.Fault{Status: 404})
	err := b.Send(ctx, push.Notification{Node: "n", Token: sub.JSON})
	var te *push.TemporaryError
	if !errors.As(err, &te) || te.RetryAfter < time.Minute {
		t.Fatalf("404 from a service that took no push: %v; want it kept, tried again in a minute at the soonest", err)
	}
}
