package push_test

import (
	"bytes"
	"context"
	"log/slog"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/push-appserver/push-appserver/internal/push"
)

// A redelivered push whose refusal is taken for a dead token counts as a
// refusal of the configuration from then on: a quiet app with a few
// successes, sent again the pushes refused before its configuration
// proved itself, deletes no more registrations than its successes
// outvote (here two of ten), not one per push held.
func TestBreakerRedeliveriesTakenAsDeadCount(t *testing.T) {
	again := push.WithRedelivery(context.Background())
	b := push.NewBreaker("app", push.BreakerOptions{}, slog.New(slog.DiscardHandler))
	suspect := &push.SuspectTokenError{Reason: "BadDeviceToken", Cause: "sandbox/production mismatch?"}
	for range 3 {
		b.Judge(nil)
	}
	dead := 0
	for range 10 {
		if _, ok := push.IsDeadToken(b.JudgeCtx(again, "", suspect)); ok {
			dead++
		}
	}
	if dead != 2 {
		t.Fatalf("%d of 10 redelivered refusals taken as dead tokens after 3 successes, want 2", dead)
	}
}

// The app is marked misconfigured once refusals are more than half of at
// least MinAnswers (20) answers in the window: not at exactly half, and
// already at the twentieth answer.
func TestBreakerTripsAtMoreThanHalfOfTwenty(t *testing.T) {
	for _, tc := range []struct {
		name                string
		successes, refusals int
		wantMisconfigured   bool
	}{
		{"half of twenty", 10, 10, false},
		{"eleven of twenty", 9, 11, true},
		{"eleven of nineteen", 8, 11, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			now := time.Unix(1_800_000_000, 0)
			b := push.NewBreaker("app", push.BreakerOptions{Now: func() time.Time { return now }}, slog.New(slog.DiscardHandler))
			suspect := &push.SuspectTokenError{Reason: "BadDeviceToken", Cause: "sandbox/production mismatch?"}
			for range tc.successes {
				b.Judge(nil)
			}
			for range tc.refusals {
				b.Judge(suspect)
			}
			if bad, _ := b.Misconfigured(); bad != tc.wantMisconfigured {
				t.Fatalf("%d successes, %d refusals: misconfigured %v, want %v", tc.successes, tc.refusals, bad, tc.wantMisconfigured)
			}
		})
	}
}

// A WebPush app is marked misconfigured only while the services refusing
// it give more than half of at least MinAnswers answers in the window:
// not at exactly half, nor on a few refusals of a service marked earlier
// whose other answers have left the window.
func TestBreakerMisconfiguredNeedsMajorityOfTwenty(t *testing.T) {
	suspect := &push.SuspectTokenError{Reason: "403", Cause: "vapid key?"}
	newB := func(now *time.Time) *push.Breaker {
		return push.NewBreaker("web", push.BreakerOptions{Now: func() time.Time { return *now }}, slog.New(slog.DiscardHandler))
	}

	now := time.Unix(1_800_000_000, 0)
	b := newB(&now)
	for range 40 {
		b.JudgeAt("https://ok.example", nil)
	}
	for _, s := range []string{"https://a.example", "https://b.example"} {
		for range 20 {
			b.JudgeAt(s, suspect)
		}
	}
	if bad, _ := b.Misconfigured(); bad {
		t.Fatal("misconfigured while refusing services gave exactly half of the answers")
	}

	now = time.Unix(1_800_000_000, 0)
	b = newB(&now)
	for range 20 {
		b.JudgeAt("https://a.example", suspect)
	}
	if bad, _ := b.Misconfigured(); !bad {
		t.Fatal("not misconfigured while the only service answering refuses every push")
	}
	now = now.Add(2 * time.Minute)
	for range 3 {
		b.JudgeAt("https://a.example", suspect)
	}
	if bad, _ := b.Misconfigured(); bad {
		t.Fatal("misconfigured on 3 answers in the window")
	}
}

// Past the bound on the push services remembered, those that answered
// normally are forgotten and a new service is judged by its own answers:
// its dead tokens are removed. Services new while the memory is full of
// services marked refusing share a window that stays marked, whatever
// they answer: their refusals delete nothing.
func TestBreakerManyServices(t *testing.T) {
	suspect := &push.SuspectTokenError{Reason: "403", Cause: "vapid key?"}
	now := time.Unix(1_800_000_000, 0)
	b := push.NewBreaker("web", push.BreakerOptions{Now: func() time.Time { return now }}, slog.New(slog.DiscardHandler))
	for i := range 10_000 {
		b.JudgeAt("https://q"+strconv.Itoa(i)+".example", nil)
	}
	for range 3 {
		b.JudgeAt("https://new.example", nil)
	}
	if _, ok := push.IsDeadToken(b.JudgeAt("https://new.example", suspect)); !ok {
		t.Fatal("a refusal among 3 successes of a service new past the bound is not a dead token")
	}

	now = now.Add(2 * time.Minute)
	b = push.NewBreaker("web", push.BreakerOptions{Now: func() time.Time { return now }}, slog.New(slog.DiscardHandler))
	for i := range 10_000 {
		for range 20 {
			b.JudgeAt("https://m"+strconv.Itoa(i)+".evil.example", suspect)
		}
	}
	for range 25 {
		b.JudgeAt("https://later.example", nil)
	}
	if _, ok := push.IsDeadToken(b.JudgeAt("https://later.example", suspect)); ok {
		t.Fatal("a service new while the memory is full of marked ones had a refusal taken as a dead token")
	}
}

// A service's mark, once cleared, leaves the app judged as before it was
// marked: services too quiet to be marked, refusing more than they take,
// do not make a WebPush app misconfigured while no service is marked.
func TestBreakerClearedMarkLeavesNoTrace(t *testing.T) {
	suspect := &push.SuspectTokenError{Reason: "403", Cause: "vapid key?"}
	judge := func(mark bool) bool {
		now := time.Unix(1_800_000_000, 0)
		b := push.NewBreaker("web", push.BreakerOptions{Now: func() time.Time { return now }}, slog.New(slog.DiscardHandler))
		if mark {
			for range 20 {
				b.JudgeAt("https://x.example", suspect)
			}
			if bad, _ := b.Misconfigured(); !bad {
				t.Fatal("not misconfigured while its only service refuses every push")
			}
			now = now.Add(2 * time.Minute)
			b.JudgeAt("https://x.example", nil)
		}
		for _, s := range []string{"https://a.example", "https://b.example", "https://c.example"} {
			for range 4 {
				b.JudgeAt(s, nil)
			}
			for range 5 {
				b.JudgeAt(s, suspect)
			}
		}
		bad, _ := b.Misconfigured()
		return bad
	}
	if before, after := judge(false), judge(true); before || after {
		t.Fatalf("misconfigured %v without a mark, %v after a mark cleared; want neither", before, after)
	}
}

// Only a success proves the configuration: before one, a refusal after
// failures of other kinds (a 503, a dead token's 410) is held and warned
// about, naming the likely cause.
func TestBreakerOnlySuccessProves(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	var logs bytes.Buffer
	b, suspect := newTestBreaker(&now, &logs)
	b.Judge(&push.TemporaryError{Reason: "503"})
	b.Judge(&push.DeadTokenError{Since: now, Reason: "Unregistered"})
	if err := b.Judge(suspect); !push.IsTemporary(err) {
		t.Fatalf("refusal before any success: %v, want temporary", err)
	}
	if !strings.Contains(logs.String(), "level=WARN") || !strings.Contains(logs.String(), "sandbox/production mismatch?") {
		t.Fatalf("no warning naming the likely cause:\n%s", logs.String())
	}
}

// A mark clears on successes only: a dead token's answer, once the
// refusals have left the window, leaves the app marked.
func TestBreakerMarkClearsOnSuccessOnly(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	var logs bytes.Buffer
	b, suspect := newTestBreaker(&now, &logs)
	for range 20 {
		b.Judge(suspect)
	}
	now = now.Add(2 * time.Minute)
	b.Judge(&push.DeadTokenError{Since: now, Reason: "Unregistered"})
	if bad, _ := b.Misconfigured(); !bad {
		t.Fatal("a dead token's answer cleared the mark")
	}
	b.Judge(nil)
	if bad, _ := b.Misconfigured(); bad {
		t.Fatal("a success with no refusal in the window left the mark")
	}
}
