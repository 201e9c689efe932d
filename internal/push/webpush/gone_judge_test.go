package webpush_test

import (
	"context"
	"testing"
	"time"

	"github.com/push-appserver/push-appserver/internal/push"
	"github.com/push-appserver/push-appserver/internal/push/webpush"
	"github.com/push-appserver/push-appserver/internal/testutil/fakeclock"
)

// A 404 is judged with itself: one that would make a service's 404s
// outnumber its successes in the window is held, though the answer
// before it was a success.
func TestGoneJudgedWithItself(t *testing.T) {
	clock := fakeclock.New(time.Now())
	g := webpush.NewGoneGuard("web", webpush.GoneOptions{Now: clock.Now}, quiet())
	dead := &push.DeadTokenError{Since: clock.Now(), Reason: "404 Not Found"}
	ctx := context.Background()
	const origin = "https://up.example"
	for _, step := range []struct {
		err      error
		wantDead bool
	}{{nil, false}, {dead, true}, {dead, false}, {nil, false}, {dead, false}} {
		err := g.Judge(ctx, origin, step.err)
		if step.err == nil {
			if err != nil {
				t.Fatal(err)
			}
			continue
		}
		if isDead(err) != step.wantDead || !step.wantDead && !held(err) {
			t.Fatalf("Judge(404) = %v, want dead %v", err, step.wantDead)
		}
	}
}

// A held subscription sent again while its service answers no success
// is not counted again: once the service answers a success, the next
// attempt's 404 is judged against the service's answers with its first
// attempt's alone, and removes the subscription.
func TestGoneRedeliveriesWhileHeldNotCounted(t *testing.T) {
	clock := fakeclock.New(time.Now())
	g := webpush.NewGoneGuard("web", webpush.GoneOptions{Now: clock.Now}, quiet())
	dead := &push.DeadTokenError{Since: clock.Now(), Reason: "404 Not Found"}
	ctx := context.Background()
	again := push.WithRedelivery(ctx)
	const origin = "https://up.example"
	for range 3 {
		g.Judge(ctx, origin, nil)
	}
	if err := g.Judge(ctx, origin, dead); !isDead(err) {
		t.Fatalf("404 among successes: %v, want dead", err)
	}
	if err := g.Judge(ctx, origin, dead); !held(err) {
		t.Fatalf("404 after a 404: %v, want held", err)
	}
	for range 5 {
		if err := g.Judge(again, origin, dead); !held(err) {
			t.Fatalf("404 sent again before a success: %v, want held", err)
		}
	}
	g.Judge(ctx, origin, nil)
	if err := g.Judge(again, origin, dead); !isDead(err) {
		t.Fatalf("404 sent again after a success, 2 of 6 answers: %v, want dead", err)
	}
}

// A redelivered push's 404 from a service whose last success is a window
// old is held: the success no longer vouches for it.
func TestGoneRedeliveryAfterStaleSuccessHeld(t *testing.T) {
	clock := fakeclock.New(time.Now())
	g := webpush.NewGoneGuard("web", webpush.GoneOptions{Now: clock.Now}, quiet())
	dead := &push.DeadTokenError{Since: clock.Now(), Reason: "404 Not Found"}
	const origin = "https://up.example"
	g.Judge(context.Background(), origin, nil)
	clock.Advance(webpush.DefaultGoneWindow)
	if err := g.Judge(push.WithRedelivery(context.Background()), origin, dead); !held(err) {
		t.Fatalf("404 sent again a window after the last success: %v, want held", err)
	}
}

// A service that answers nothing but 404 or 410 is no proven push
// service: after UnprovenFailures of them its pushes are sent once.
func TestGoneOnlyServiceUnproven(t *testing.T) {
	clock := fakeclock.New(time.Now())
	g := webpush.NewGoneGuard("web", webpush.GoneOptions{Now: clock.Now}, quiet())
	dead := &push.DeadTokenError{Since: clock.Now(), Reason: "404 Not Found"}
	const origin = "https://not-a-push-service.example"
	for range webpush.UnprovenFailures {
		g.Judge(context.Background(), origin, dead)
	}
	if !g.Unproven(origin) {
		t.Fatalf("%d 404s and no success: not unproven", webpush.UnprovenFailures)
	}
}

// Past MaxHosts, the services quiet for a window are forgotten first: a
// service answering now keeps its record, and its 404s still remove
// subscriptions.
func TestGoneGuardForgetsQuietServicesFirst(t *testing.T) {
	clock := fakeclock.New(time.Now())
	g := webpush.NewGoneGuard("web", webpush.GoneOptions{MaxHosts: 2, Now: clock.Now}, quiet())
	dead := &push.DeadTokenError{Since: clock.Now(), Reason: "404 Not Found"}
	ctx := context.Background()
	g.Judge(ctx, "https://quiet.example", nil)
	clock.Advance(webpush.DefaultGoneWindow)
	g.Judge(ctx, "https://busy.example", nil)
	g.Judge(ctx, "https://new.example", nil)
	if err := g.Judge(ctx, "https://busy.example", dead); !isDead(err) {
		t.Fatalf("404 right after a success at a service answering now: %v, want dead", err)
	}
}

// 404s older than the window no longer count against a service's
// successes.
func TestGoneWindowEnds(t *testing.T) {
	clock := fakeclock.New(time.Unix(1_800_000_000, 0)) // a bucket's start
	g := webpush.NewGoneGuard("web", webpush.GoneOptions{Now: clock.Now}, quiet())
	dead := &push.DeadTokenError{Since: clock.Now(), Reason: "404 Not Found"}
	ctx := context.Background()
	const origin = "https://up.example"
	for range 3 {
		g.Judge(ctx, origin, dead)
	}
	clock.Advance(webpush.DefaultGoneWindow / 10)
	g.Judge(ctx, origin, nil)
	g.Judge(ctx, origin, nil)
	clock.Advance(webpush.DefaultGoneWindow * 9 / 10)
	if err := g.Judge(ctx, origin, dead); !isDead(err) {
		t.Fatalf("404 after two successes, with three 404s a window old: %v, want dead", err)
	}
}
