package appserver

import (
	"context"
	"testing"

	"github.com/push-appserver/push-appserver/internal/push"
)

// A push its service accepted costs send's recovery no allocation: what
// errors.As is given the address of lives on the heap, and declared for
// every push it was one allocation each.
func TestSendSuccessAllocatesNothing(t *testing.T) {
	var s Service
	ctx := context.Background()
	n := push.Notification{App: "fcm", Node: "n1"}
	allocs := testing.AllocsPerRun(100, func() {
		if err := s.send(ctx, acceptAll{}, n); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Fatalf("%v allocations a successful push, want 0", allocs)
	}
}

type acceptAll struct{}

func (acceptAll) Send(context.Context, push.Notification) error { return nil }
