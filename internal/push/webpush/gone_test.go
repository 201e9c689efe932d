package webpush_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/push-appserver/push-appserver/internal/push"
	"github.com/push-appserver/push-appserver/internal/push/webpush"
	"github.com/push-appserver/push-appserver/internal/testutil/fakeclock"
	"github.com/push-appserver/push-appserver/internal/testutil/logbuf"
	"github.com/push-appserver/push-appserver/internal/testutil/webpushmock"
)

// goneRig is a backend with a GoneGuard of the test's, reaching the
// mock at its own origin and, through a wildcard name, at others
// (https://<name>.example.com:<port>): each origin is a push service of
// its own to the guard, though the same mock answers.
type goneRig struct {
	t     *testing.T
	mock  *webpushmock.Server
	b     *webpush.Backend
	gone  *webpush.GoneGuard
	pub   string
	log   *logbuf.Buffer
	clock *fakeclock.Clock
}

func newGoneRig(t *testing.T) *goneRig {
	t.Helper()
	mock, keyFile, pub := startMock(t)
	r := &goneRig{t: t, mock: mock, pub: pub, log: &logbuf.Buffer{}, clock: fakeclock.New(time.Now())}
	logger := slog.New(slog.NewTextHandler(r.log, nil))
	r.gone = webpush.NewGoneGuard("web", webpush.GoneOptions{Now: r.clock.Now}, logger)
	r.b = newBackend(t, mock, keyFile, webpush.Options{Gone: r.gone, Now: r.clock.Now,
		Guard: webpush.Guard{AllowPrivate: true, Ports: []int{mock.Port}}})
	webpush.ResolveExampleTo(r.b, "127.0.0.1")
	return r
}

// sub subscribes at the service named host ("" for the mock's own
// origin).
func (r *goneRig) sub(host string) webpushmock.Subscription {
	r.t.Helper()
	origin := r.mock.URL
	if host != "" {
		origin = fmt.Sprintf("https://%s.example.com:%d", host, r.mock.Port)
	}
	s, err := r.mock.SubscribeAt(origin, r.pub)
	if err != nil {
		r.t.Fatal(err)
	}
	return s
}

// send pushes to s, answered by the mock as it is told.
func (r *goneRig) send(ctx context.Context, s webpushmock.Subscription) error {
	return r.b.Send(ctx, push.Notification{Node: "n", Token: s.JSON, Priority: push.PriorityHigh})
}

// succeed has n pushes at host go through.
func (r *goneRig) succeed(host string, n int) {
	r.t.Helper()
	for range n {
		if err := r.send(context.Background(), r.sub(host)); err != nil {
			r.t.Fatalf("push at %q: %v", host, err)
		}
	}
}

// gone404 has one subscription at host answered 404 and returns the
// outcome.
func (r *goneRig) gone404(host string) error {
	s := r.sub(host)
	r.mock.Fail(s.ID, webpushmock.Fault{Status: 404})
	return r.send(context.Background(), s)
}

// held reports whether err is a 404 or 410 the guard held: a temporary
// failure, which keeps the registration for another attempt.
func held(err error) bool {
	return push.IsTemporary(err) && !isDead(err) && err != nil && strings.Contains(err.Error(), "kept: 4")
}

// TestGoneHeldWhileServiceAnswersNoSuccess guards the registrations of a
// self-hosted UnifiedPush server behind a reverse proxy that lost its
// route: it answers 404 for every subscription, and none is removed,
// however well other push services of the app fare; once it answers a
// success again, its 404s remove registrations again.
func TestGoneHeldWhileServiceAnswersNoSuccess(t *testing.T) {
	r := newGoneRig(t)
	r.succeed("", 20) // another push service, doing fine
	const subs = 30
	for i := range subs {
		err := r.gone404("ntfy")
		if i >= webpush.UnprovenFailures && err != nil && !isDead(err) && !push.IsTemporary(err) {
			// Kept all the same, but a service that never took a
			// push is not sent it again (TestUnprovenServiceTriedOnce).
			continue
		}
		if !held(err) {
			t.Fatalf("push %d to the service answering 404 to all: %v, want it held", i, err)
		}
	}
	if got := r.gone.Held(); got != subs {
		t.Fatalf("Held() = %d, want %d", got, subs)
	}
	if n := strings.Count(r.log.String(), "answers 404/410"); n != 1 {
		t.Fatalf("%d warnings, want one for the service:\n%s", n, r.log.String())
	}

	// The route is mended: the service answers successes, and a dead
	// subscription among them is removed as ever. Its 404s of a
	// moment ago are a majority of the window still, until as many
	// successes have come.
	r.succeed("ntfy", subs+1)
	if err := r.gone404("ntfy"); !isDead(err) {
		t.Fatalf("dead subscription once the service answers again: %v, want dead", err)
	}
	if !strings.Contains(r.log.String(), "answers with success again") {
		t.Fatalf("no line for the service answering again:\n%s", r.log.String())
	}
}

// TestGoneAmongSuccesses: a dead subscription among a service's
// successes is removed at its first 404 or 410, as it always was; a
// service that starts answering 404 to everything loses at most the
// first registration, not every one it is asked for; and a push held
// because its 404 came right after another is removed when sent again
// after the service's next success.
func TestGoneAmongSuccesses(t *testing.T) {
	r := newGoneRig(t)
	r.succeed("np", 5)
	s := r.sub("np")
	r.mock.Unsubscribe(s.ID) // 410
	if err := r.send(context.Background(), s); !isDead(err) {
		t.Fatalf("410 among successes: %v, want dead", err)
	}
	r.succeed("np", 3)
	if err := r.gone404("np"); !isDead(err) {
		t.Fatalf("404 among successes: %v, want dead", err)
	}

	// Two in a row: the second waits for the service's next success.
	r.succeed("np", 3)
	if err := r.gone404("np"); !isDead(err) {
		t.Fatalf("first 404: %v, want dead", err)
	}
	second := r.sub("np")
	r.mock.Unsubscribe(second.ID)
	if err := r.send(context.Background(), second); !held(err) {
		t.Fatalf("404 right after another: %v, want it held", err)
	}
	r.succeed("np", 1)
	if err := r.send(push.WithRedelivery(context.Background()), second); !isDead(err) {
		t.Fatalf("sent again after a success: %v, want dead", err)
	}

	// The service breaks after its successes: the first 404 is taken
	// at its word, the rest are held.
	r.succeed("np", 10)
	dead := 0
	for range 20 {
		switch err := r.gone404("np"); {
		case isDead(err):
			dead++
		case !held(err):
			t.Fatalf("404: %v", err)
		}
	}
	if dead > 1 {
		t.Fatalf("%d of 20 registrations removed once the service answered 404 to all, want at most 1", dead)
	}
}

// TestGoneVouchedForByRecentSuccess: a success vouches for a service's
// 404s for DefaultGoneWindow only; a quiet service's 404 after that is
// held until it answers a success again.
func TestGoneVouchedForByRecentSuccess(t *testing.T) {
	r := newGoneRig(t)
	r.succeed("quiet", 1)
	r.clock.Advance(webpush.DefaultGoneWindow)
	s := r.sub("quiet")
	r.mock.Unsubscribe(s.ID)
	if err := r.send(context.Background(), s); !held(err) {
		t.Fatalf("410 a window after the last success: %v, want held", err)
	}
	r.succeed("quiet", 1)
	r.clock.Advance(webpush.DefaultGoneWindow / 2)
	// Sent again: its first 410 is in the window, with one success.
	if err := r.send(push.WithRedelivery(context.Background()), s); !isDead(err) {
		t.Fatalf("410 sent again half a window after a success: %v, want dead", err)
	}
}

// TestGoneGuardBounded: the push services remembered stay within
// MaxHosts, whatever number of them subscriptions name; one forgotten
// has its 404s held again until it answers a success, so forgetting
// removes nothing.
func TestGoneGuardBounded(t *testing.T) {
	clock := fakeclock.New(time.Now())
	g := webpush.NewGoneGuard("web", webpush.GoneOptions{MaxHosts: 8, Now: clock.Now}, quiet())
	dead := &push.DeadTokenError{Since: clock.Now(), Reason: "404 Not Found"}
	ctx := context.Background()
	if err := g.Judge(ctx, "https://real.example", nil); err != nil {
		t.Fatal(err)
	}
	for i := range 100 {
		if err := g.Judge(ctx, fmt.Sprintf("https://h%d.example", i), nil); err != nil {
			t.Fatal(err)
		}
		if n := webpush.GoneHosts(g); n > 8 {
			t.Fatalf("%d push services remembered, bound 8", n)
		}
	}
	if err := g.Judge(ctx, "https://real.example", dead); !held(err) {
		t.Fatalf("404 at a service forgotten: %v, want held", err)
	}
	// Other errors pass as they are, and count for nothing.
	other := errors.New("webpush: 413 payload too large")
	if err := g.Judge(ctx, "https://real.example", other); err != other {
		t.Fatalf("Judge(413) = %v", err)
	}
}

// TestGoneOutnumberingSuccessesHeld: a success vouches for the 404 right
// after it only while the service's 404s of the window are no more than
// its successes: a service that answers most pushes 404 and some with
// success (one of its back ends lost its route) has its 404s held, even
// the one that follows a success, rather than each such 404 removing a
// registration.
func TestGoneOutnumberingSuccessesHeld(t *testing.T) {
	clock := fakeclock.New(time.Now())
	g := webpush.NewGoneGuard("web", webpush.GoneOptions{Now: clock.Now}, quiet())
	dead := &push.DeadTokenError{Since: clock.Now(), Reason: "404 Not Found"}
	ctx := context.Background()
	const origin = "https://up.example"
	if err := g.Judge(ctx, origin, nil); err != nil {
		t.Fatal(err)
	}
	if err := g.Judge(ctx, origin, dead); !isDead(err) {
		t.Fatalf("404 right after a success: %v, want dead", err)
	}
	for range 3 {
		if err := g.Judge(ctx, origin, dead); !held(err) {
			t.Fatalf("404 after a 404: %v, want held", err)
		}
	}
	// One success among four 404s: the next 404 is the fifth against
	// two successes.
	if err := g.Judge(ctx, origin, nil); err != nil {
		t.Fatal(err)
	}
	if err := g.Judge(ctx, origin, dead); !held(err) {
		t.Fatalf("404 after a success at a service whose 404s outnumber its successes: %v, want held", err)
	}
}
