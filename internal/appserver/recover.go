package appserver

import (
	"context"
	"errors"
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
// again, which could set it off again). A panic the backend recovered on
// a goroutine of its own comes back as an error too (a connection's read
// loop: every request on the connection fails, and may be sent again on
// another). Either is counted in metrics once and logged at error with
// the stack, which is what a fix needs (one a second: the same answer may
// come again and again).
func (s *Service) send(ctx context.Context, b push.Backend, n push.Notification) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("push service client of app %s: %w", n.App, &push.PanicError{Value: r, Stack: debug.Stack()})
		}
		if err == nil {
			return
		}
		// Declared here, not above: errors.As takes its address, which
		// moves it to the heap, and a successful push would allocate it.
		var pe *push.PanicError
		if errors.As(err, &pe) && pe.Report() {
			s.opts.Observer.Panicked("push_service")
			s.panics.Log("app", n.App, "panic", fmt.Sprint(pe.Value), "stack", string(pe.Stack))
		}
	}()
	return b.Send(ctx, n)
}
