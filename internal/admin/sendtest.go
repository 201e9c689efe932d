package admin

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/push-appserver/push-appserver/internal/push"
)

// TestNode is the node a test push carries, so it is told apart in logs.
const TestNode = "push-appserver-send-test"

// SendTest sends one push to token through the app's backend, as the push
// path would (same priority, same retries within the app's deadline), and
// writes what the push service answered. It returns the backend's error.
func SendTest(ctx context.Context, w io.Writer, app string, b push.Backend, prio push.Priority, token string) error {
	prio = prio.Resolve(true) // a test push is meant to be seen
	if v, ok := b.(push.TokenValidator); ok {
		if err := v.ValidateToken(token); err != nil {
			fmt.Fprintf(w, "token refused before sending: %v\n", err)
			return err
		}
	}
	start := time.Now()
	err := b.Send(ctx, push.Notification{App: app, Node: TestNode, Token: token, Priority: prio})
	took := time.Since(start).Round(time.Millisecond)
	fmt.Fprintf(w, "app %s, priority %s, %s\n", app, prio, took)
	var tmp *push.TemporaryError
	switch dead, isDead := push.IsDeadToken(err); {
	case err == nil:
		fmt.Fprintln(w, "answer: accepted (the push service took the notification; delivery to the device is up to it)")
	case isDead:
		fmt.Fprintf(w, "answer: dead token: %s, since %s\n", dead.Reason, dead.Since.UTC().Format(time.RFC3339))
		fmt.Fprintln(w, "a registration with this token would be removed")
	case errors.As(err, &tmp):
		fmt.Fprintf(w, "answer: temporary failure after retries: %s\n", tmp.Reason)
		if tmp.Err != nil {
			fmt.Fprintf(w, "cause: %v\n", tmp.Err)
		}
		if tmp.RetryAfter > 0 {
			fmt.Fprintf(w, "retry after: %s\n", tmp.RetryAfter)
		}
	default:
		fmt.Fprintf(w, "answer: refused: %v\n", err)
	}
	return err
}
