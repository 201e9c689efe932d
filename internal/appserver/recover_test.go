package appserver_test

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"testing"
	"time"

	"github.com/push-appserver/push-appserver/internal/appserver"
	"github.com/push-appserver/push-appserver/internal/push"
	"github.com/push-appserver/push-appserver/internal/registry/memory"
)

// TestPushServicePanic: a push service client that panics fails its push
// alone. The user's server hears "try again later", never "gone"; the
// panic is counted; the next push goes through; and a redelivery attempt
// that panics ends that wait as failed, on the core's own goroutine,
// where an unrecovered panic would end the process.
func TestPushServicePanic(t *testing.T) {
	ctx := context.Background()
	svc, b, panics := panicCounting(t)
	reg, _ := svc.Register(ctx, appserver.Caller{}, "fcm", "n1", "t1")
	b.set("t1", errPanic)
	err := svc.Push(ctx, appserver.PushRequest{Node: "n1", Secret: reg.Secret})
	if !errors.Is(err, appserver.ErrPushFailed) || errors.Is(err, appserver.ErrNotFound) {
		t.Fatalf("push whose client panicked: %v", err)
	}
	if got := panics(); !slices.Equal(got, []string{"push_service"}) {
		t.Fatalf("panics counted: %v", got)
	}
	if s := svc.RedeliveryStats(); s.Kept != 0 {
		t.Fatalf("a push that panicked was kept to be sent again: %+v", s)
	}
	b.set("t1", nil)
	if err := svc.Push(ctx, appserver.PushRequest{Node: "n1", Secret: reg.Secret}); err != nil {
		t.Fatalf("the next push: %v", err)
	}

	b.set("t1", outage)
	svc.Push(ctx, appserver.PushRequest{Node: "n1", Secret: reg.Secret})
	waitStats(t, svc, func(s appserver.RedeliveryStats) bool { return s.Kept == 1 })
	b.set("t1", errPanic)
	waitStats(t, svc, func(s appserver.RedeliveryStats) bool { return s.Failed == 1 && s.Pending == 0 })
	if got := panics(); len(got) != 2 {
		t.Fatalf("panics counted: %v", got)
	}
}

// TestPanicOfAConnection: a panic a push service client recovered on a
// goroutine of its own (a connection's read loop) comes back as the error
// of every push on that connection; it is counted once, and the pushes
// are failures that may pass, kept to be sent again.
func TestPanicOfAConnection(t *testing.T) {
	ctx := context.Background()
	svc, b, panics := panicCounting(t)
	lost := &push.PanicError{Value: "index out of range", Stack: []byte("goroutine 7 [running]:")}
	for _, node := range []string{"n1", "n2"} {
		reg, _ := svc.Register(ctx, appserver.Caller{}, "fcm", node, "t-"+node)
		b.set("t-"+node, &push.TemporaryError{Reason: "connection lost", Err: lost})
		if err := svc.Push(ctx, appserver.PushRequest{Node: node, Secret: reg.Secret}); !errors.Is(err, appserver.ErrPushFailed) {
			t.Fatalf("push to %s: %v", node, err)
		}
	}
	if got := panics(); !slices.Equal(got, []string{"push_service"}) {
		t.Fatalf("panics counted: %v", got)
	}
	if s := svc.RedeliveryStats(); s.Kept != 2 {
		t.Fatalf("the pushes were not kept to be sent again: %+v", s)
	}
}

// panicCounting runs a redelivering service whose apps push through b
// until the test ends; panics returns the panics its observer heard of.
func panicCounting(t *testing.T) (svc *appserver.Service, b *scripted, panics func() []string) {
	t.Helper()
	obs := &rejections{}
	b = &scripted{answers: map[string]error{}}
	svc, err := appserver.New(memory.New(), testApps(b), appserver.Options{Observer: obs, Redelivery: time.Minute}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	svc.SetRedeliveryTiming(20*time.Millisecond, 5*time.Millisecond)
	running(t, svc)
	return svc, b, func() []string {
		obs.mu.Lock()
		defer obs.mu.Unlock()
		return slices.Clone(obs.panics)
	}
}
