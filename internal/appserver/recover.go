package appserver

import (
	"context"
	"fmt"
	"runtime/debug"

	"github.com/push-appserver/push-appserver/internal/push"
)

// send has b send n, and turns a panic in b into an error. A backend
// parses what a push service answers, and a bug there that one odd
// answer sets off must not end the process: every push under way would
// be lost, and while no component is connected ejabberd answers publishes
// with an error that deletes push sessions. The error is a plain failure
// (the user's server hears wait, and the push is not kept to be sent
// again, which could set it off again), counted in metrics and logged at
// error with the stack, which is what a fix needs (one a second: the same
// answer may come again and again).
func (s *Service) send(ctx context.Context, b push.Backend, n push.Notification) (err error) {
	defer func() {
		if r := recover(); r != nil {
			s.opts.Observer.Panicked("push_service")
			s.panics.Log("app", n.App, "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
			err = fmt.Errorf("push service client of app %s panicked: %v", n.App, r)
		}
	}()
	return b.Send(ctx, n)
}
