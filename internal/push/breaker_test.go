package push_test

import (
	"bytes"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/push-appserver/push-appserver/internal/push"
)

func TestBreaker(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	var logs bytes.Buffer
	b := push.NewBreaker("ios", push.BreakerOptions{Now: func() time.Time { return now }},
		slog.New(slog.NewTextHandler(&logs, nil)))
	suspect := &push.SuspectTokenError{Reason: "BadDeviceToken", Cause: "sandbox/production mismatch?"}
	other := errors.New("apns: 400 BadTopic")

	// A healthy app: a few bad tokens among many good ones are dead.
	for range 30 {
		if err := b.Judge(nil); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Judge(other); err != other {
		t.Fatalf("other errors must pass unchanged: %v", err)
	}
	for range 5 {
		if _, ok := push.IsDeadToken(b.Judge(suspect)); !ok {
			t.Fatal("a minority of suspect answers must count as dead tokens")
		}
	}
	if bad, _ := b.Misconfigured(); bad {
		t.Fatal("misconfigured after a minority of suspect answers")
	}

	// A minute later the app answers only suspects: the first ones,
	// before there is enough evidence, are dead; then the app trips.
	now = now.Add(2 * time.Minute)
	dead, temporary := 0, 0
	for range 50 {
		err := b.Judge(suspect)
		if _, ok := push.IsDeadToken(err); ok {
			dead++
		} else if push.IsTemporary(err) && errors.Is(err, suspect) {
			temporary++
		} else {
			t.Fatalf("unexpected %v", err)
		}
	}
	if dead >= 20 || dead+temporary != 50 {
		t.Fatalf("%d dead, %d temporary: at most 19 may be taken as dead", dead, temporary)
	}
	bad, cause := b.Misconfigured()
	if !bad || cause != "sandbox/production mismatch?" {
		t.Fatalf("Misconfigured() = %v, %q", bad, cause)
	}
	if n := strings.Count(logs.String(), "level=ERROR"); n != 1 || !strings.Contains(logs.String(), "sandbox/production mismatch?") || !strings.Contains(logs.String(), "app=ios") {
		t.Fatalf("want one error naming the app and the cause, got:\n%s", logs.String())
	}

	// Still tripped: a success alone does not clear while suspects
	// dominate the window, nor do other failures.
	b.Judge(nil)
	b.Judge(&push.TemporaryError{Reason: "503"})
	if bad, _ := b.Misconfigured(); !bad {
		t.Fatal("cleared by one success among many refusals")
	}
	// Fixed: a window of successes clears it.
	now = now.Add(2 * time.Minute)
	if err := b.Judge(nil); err != nil {
		t.Fatal(err)
	}
	if bad, _ := b.Misconfigured(); bad {
		t.Fatal("still misconfigured after pushes succeed again")
	}
	if !strings.Contains(logs.String(), "answers normally again") {
		t.Fatalf("recovery not logged:\n%s", logs.String())
	}
	if _, ok := push.IsDeadToken(b.Judge(suspect)); !ok {
		t.Fatal("after recovery, a lone suspect answer is a dead token again")
	}
}

// A small app with few pushes is never judged misconfigured on too little
// evidence, and concurrent use is safe.
func TestBreakerConcurrent(t *testing.T) {
	b := push.NewBreaker("a", push.BreakerOptions{MinAnswers: 20}, slog.New(slog.DiscardHandler))
	suspect := &push.SuspectTokenError{Reason: "BadDeviceToken"}
	done := make(chan int)
	for range 50 {
		go func() {
			_, dead := push.IsDeadToken(b.Judge(suspect))
			if dead {
				done <- 1
			} else {
				done <- 0
			}
		}()
	}
	dead := 0
	for range 50 {
		dead += <-done
	}
	if dead != 19 {
		t.Fatalf("%d taken as dead, want 19 (the answers before the 20th)", dead)
	}
}
