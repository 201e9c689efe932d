package push_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/push-appserver/push-appserver/internal/push"
)

// newTestBreaker returns a breaker of app "ios" on the clock *now,
// logging into logs, and the answer a sandbox gives a production token.
func newTestBreaker(now *time.Time, logs *bytes.Buffer) (*push.Breaker, *push.SuspectTokenError) {
	b := push.NewBreaker("ios", push.BreakerOptions{Now: func() time.Time { return *now }},
		slog.New(slog.NewTextHandler(logs, nil)))
	return b, &push.SuspectTokenError{Reason: "BadDeviceToken", Cause: "sandbox/production mismatch?"}
}

func TestBreaker(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	var logs bytes.Buffer
	b, suspect := newTestBreaker(&now, &logs)
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
	b.Judge(nil)
	if _, ok := push.IsDeadToken(b.Judge(suspect)); !ok {
		t.Fatal("after recovery, a lone suspect answer is a dead token again")
	}
}

// A small app with few pushes is never judged misconfigured on too little
// evidence, and concurrent use is safe.
func TestBreakerConcurrent(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	b := push.NewBreaker("a", push.BreakerOptions{MinAnswers: 20, Now: func() time.Time { return now }}, slog.New(slog.DiscardHandler))
	suspect := &push.SuspectTokenError{Reason: "BadDeviceToken"}
	b.Judge(nil) // proven, a while ago
	now = now.Add(5 * time.Minute)
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
	if dead != 0 {
		t.Fatalf("%d taken as dead, want 0: refusals are most of what the app heard since it proved itself", dead)
	}
}

// An app that has not yet delivered a push since it was configured takes
// no refusal at its word, however few pushes it sends: a production app
// left on the sandbox refuses every token, and at a few pushes a minute
// the window never holds enough answers to trip.
func TestBreakerUnproven(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	var logs bytes.Buffer
	b, suspect := newTestBreaker(&now, &logs)

	for i := range 60 { // 60 devices, 6 pushes a minute, for ten minutes
		err := b.Judge(suspect)
		if !push.IsTemporary(err) || !errors.Is(err, suspect) {
			t.Fatalf("push %d = %v, want a temporary failure (nothing proven yet)", i, err)
		}
		now = now.Add(10 * time.Second)
	}
	if n := strings.Count(logs.String(), "level=WARN"); n != 10 {
		t.Fatalf("%d warnings in ten minutes, want one a minute:\n%s", n, logs.String())
	}
	if !strings.Contains(logs.String(), "sandbox/production mismatch?") {
		t.Fatalf("the warning does not name the likely cause:\n%s", logs.String())
	}
	if bad, _ := b.Misconfigured(); bad {
		t.Fatal("marked misconfigured on too few answers")
	}

	// One push goes through: the configuration works, and a refusal now
	// means the token.
	b.Judge(nil)
	b.Judge(nil)
	if _, ok := push.IsDeadToken(b.Judge(suspect)); !ok {
		t.Fatal("a refusal after successes is not a dead token")
	}

	// A reload may have changed the configuration: the new one proves
	// itself, whatever the old one's pushes still under way do; the
	// app's mark is shared.
	fresh := b.Fresh()
	b.Judge(nil)
	if err := fresh.Judge(suspect); !push.IsTemporary(err) {
		t.Fatalf("a fresh breaker: %v, want a temporary failure", err)
	}
	fresh.Judge(nil)
	fresh.Judge(nil)
	if _, ok := push.IsDeadToken(fresh.Judge(suspect)); !ok {
		t.Fatal("a refusal after the fresh breaker's success is not a dead token")
	}
	now = now.Add(5 * time.Minute)
	for range 30 {
		fresh.Judge(suspect)
	}
	if bad, _ := b.Misconfigured(); !bad {
		t.Fatal("the app's mark is not shared with the fresh breaker's")
	}
}

// A WebPush app reaches many push services, and one of them may refuse
// what the others take (a VAPID subject it does not accept): a success
// at one proves nothing at another.
func TestBreakerScopes(t *testing.T) {
	b := push.NewBreaker("web", push.BreakerOptions{}, slog.New(slog.DiscardHandler))
	suspect := &push.SuspectTokenError{Reason: "403 Forbidden"}
	for range 100 {
		b.JudgeAt("https://fcm.googleapis.com", nil)
	}
	for range 10 {
		if err := b.JudgeAt("https://web.push.apple.com", suspect); !push.IsTemporary(err) {
			t.Fatalf("refusal by a service never proven = %v, want temporary", err)
		}
	}
	if _, ok := push.IsDeadToken(b.JudgeAt("https://fcm.googleapis.com", suspect)); !ok {
		t.Fatal("refusal by a proven service is not a dead token")
	}
}

// Each push service is judged by its own answers: one that refuses every
// token of ours is not outvoted by another that accepts everything, and
// marks the app only while it gives most of the app's answers.
func TestBreakerJudgesEachScope(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	b := push.NewBreaker("web", push.BreakerOptions{Now: func() time.Time { return now }}, slog.New(slog.DiscardHandler))
	suspect := &push.SuspectTokenError{Reason: "403 Forbidden", Cause: "VAPID key refused?"}
	const apple, other = "https://web.push.apple.com", "https://up.example.net"
	b.JudgeAt(apple, nil)
	dead := 0
	for range 60 {
		if _, ok := push.IsDeadToken(b.JudgeAt(apple, suspect)); ok {
			dead++
		}
		for range 3 {
			if err := b.JudgeAt(other, nil); err != nil {
				t.Fatal(err)
			}
		}
	}
	t.Logf("%d dead", dead)
	if dead >= 20 {
		t.Fatalf("%d of 60 refusals by a service refusing everything taken as dead tokens", dead)
	}
	if bad, _ := b.Misconfigured(); bad {
		t.Fatal("app marked misconfigured by a service giving a quarter of its answers")
	}
	// The other service is still judged by its own answers.
	if _, ok := push.IsDeadToken(b.JudgeAt(other, suspect)); !ok {
		t.Fatal("a refusal among successes at another service is not a dead token")
	}

	// A minute on, the refusing service gives most of the app's answers.
	now = now.Add(2 * time.Minute)
	for range 30 {
		b.JudgeAt(apple, suspect)
	}
	if bad, cause := b.Misconfigured(); !bad || cause != suspect.Cause {
		t.Fatalf("Misconfigured() = %v, %q with a refusing service giving every answer", bad, cause)
	}
	// A success there clears its mark once successes are the majority.
	now = now.Add(2 * time.Minute)
	b.JudgeAt(apple, nil)
	if bad, _ := b.Misconfigured(); bad {
		t.Fatal("still misconfigured after the service accepted again")
	}
}

// markedMozilla returns a WebPush app's breaker on the clock *now, its
// proven service mozilla marked refusing our key, and that refusal.
func markedMozilla(t *testing.T, now *time.Time) (b *push.Breaker, mozilla string, suspect *push.SuspectTokenError) {
	t.Helper()
	b = push.NewBreaker("web", push.BreakerOptions{Now: func() time.Time { return *now }}, slog.New(slog.DiscardHandler))
	suspect = &push.SuspectTokenError{Reason: "403 Forbidden", Cause: "VAPID key refused?"}
	mozilla = "https://updates.push.services.mozilla.com"
	b.JudgeAt(mozilla, nil)
	for range 40 {
		b.JudgeAt(mozilla, suspect)
	}
	if _, ok := push.IsDeadToken(b.JudgeAt(mozilla, suspect)); ok {
		t.Fatal("setup: the refusing service is not marked")
	}
	return b, mozilla, suspect
}

// A push service marked refusing keeps its mark however many other
// scopes come and go. Subscriptions choose their push service: one who
// makes 5,000 services of their own refuse (20 pushes each, at any pace,
// since a mark never ages) and then pushes to new ones must not unmark
// the real service, whose refusals of our key would be dead tokens again.
func TestBreakerRefusingMarkSurvivesManyScopes(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	b, mozilla, suspect := markedMozilla(t, &now)
	for i := range 5000 {
		scope := "https://h" + strconv.Itoa(i) + ".evil.example"
		for range 20 {
			b.JudgeAt(scope, suspect)
		}
	}
	for i := range 5000 {
		b.JudgeAt("https://n"+strconv.Itoa(i)+".evil.example", nil)
	}
	if _, ok := push.IsDeadToken(b.JudgeAt(mozilla, suspect)); ok {
		t.Fatal("the real service's refusal of our key deletes a registration: its mark was dropped with the attacker's scopes")
	}
}

// A WebPush app with one subscription at a service that refuses
// everything is not down: one active user's own UnifiedPush server
// refusing our VAPID token, while every other push service takes its
// pushes, must not turn the health check and metric to misconfigured,
// however many of the answers it gives.
func TestBreakerOneRefusingSubscriptionIsNotDown(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	b := push.NewBreaker("web", push.BreakerOptions{Now: func() time.Time { return now }}, slog.New(slog.DiscardHandler))
	suspect := &push.SuspectTokenError{Reason: "403 Forbidden", Cause: "VAPID key refused?"}
	for range 10 {
		b.JudgeAt("https://fcm.googleapis.com", nil)
	}
	for range 25 {
		b.JudgeAt("https://ntfy.alice.example", suspect)
	}
	if bad, cause := b.Misconfigured(); bad {
		t.Fatalf("app reported misconfigured (%s): one subscription's service refuses, every other service accepts", cause)
	}
}

// A WebPush app whose VAPID key is broken everywhere: every push service
// refuses every push. The busiest service gets its 20 answers a minute and
// is marked; the others, each with a few subscriptions, refuse every one
// of their pushes too but stay below MinAnswers. They do not count as
// answering normally, and the app is misconfigured.
func TestBreakerKeyBrokenEverywhereIsMisconfigured(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	b := push.NewBreaker("web", push.BreakerOptions{Now: func() time.Time { return now }}, slog.New(slog.DiscardHandler))
	suspect := &push.SuspectTokenError{Reason: "403 Forbidden", Cause: "VAPID key refused?"}
	for range 30 {
		b.JudgeAt("https://fcm.googleapis.com", suspect)
	}
	for range 6 {
		b.JudgeAt("https://updates.push.services.mozilla.com", suspect)
	}
	for range 3 {
		b.JudgeAt("https://web.push.apple.com", suspect)
	}
	if bad, _ := b.Misconfigured(); !bad {
		t.Fatal("Misconfigured() = false: every answer of every push service in the window refused our key")
	}
}

// The same, for a real service quiet in the last minute while the
// attacker's services each answered in it: no ranking of marks by recent
// answers may drop its mark.
func TestBreakerQuietRefusingMarkSurvivesManyScopes(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	b, mozilla, suspect := markedMozilla(t, &now)
	// Marks never age: the attacker's services refuse at any pace.
	for i := range 5000 {
		now = now.Add(time.Second)
		scope := "https://h" + strconv.Itoa(i) + ".evil.example"
		for range 20 {
			b.JudgeAt(scope, suspect)
		}
	}
	// A minute in which Mozilla had no push, the attacker's services one
	// each, and new services of theirs past the bound (unproven: each
	// refusal a temporary failure of their own pushes).
	now = now.Add(2 * time.Minute)
	for i := range 5000 {
		b.JudgeAt("https://h"+strconv.Itoa(i)+".evil.example", suspect)
	}
	for i := range 5000 {
		b.JudgeAt("https://n"+strconv.Itoa(i)+".evil.example", suspect)
	}
	if _, ok := push.IsDeadToken(b.JudgeAt(mozilla, suspect)); ok {
		t.Fatal("the real service's refusal of our key deletes a registration: its mark was dropped for the attacker's busier scopes")
	}
}

// A push refused and tried again by redelivery is one refusal, however
// many attempts it takes: its attempts are judged, but do not count
// against the app's successes since it proved itself.
func TestBreakerCountsRedeliveryOnce(t *testing.T) {
	ctx := context.Background()
	again := push.WithRedelivery(ctx)
	b := push.NewBreaker("app", push.BreakerOptions{}, slog.New(slog.DiscardHandler))
	suspect := &push.SuspectTokenError{Reason: "BadDeviceToken", Cause: "sandbox/production mismatch?"}
	b.JudgeCtx(ctx, "", nil)
	if _, ok := push.IsDeadToken(b.JudgeCtx(ctx, "", suspect)); ok {
		t.Fatal("one success, one refusal: taken as a dead token")
	}
	for i := range 12 {
		if _, ok := push.IsDeadToken(b.JudgeCtx(again, "", suspect)); ok {
			t.Fatalf("attempt %d of the refused push: a dead token while refusals are half of the answers", i+1)
		}
	}
	b.JudgeCtx(ctx, "", nil)
	b.JudgeCtx(ctx, "", nil)
	if _, ok := push.IsDeadToken(b.JudgeCtx(again, "", suspect)); !ok {
		t.Fatal("three successes and one refused push tried again: not a dead token")
	}
}

// Redelivery attempts of refused pushes are judged on the pushes of the
// window, not counted among them: a quiet app whose few refused tokens
// are tried again a dozen times each is judged as the pushes it sent,
// neither marked misconfigured on them nor made to take a refusal as a
// dead token while its refusals are no minority since it proved itself.
func TestBreakerWindowLeavesOutRedelivery(t *testing.T) {
	type step struct {
		at      time.Duration // since the app proved itself
		n       int
		refused bool
		again   bool // a redelivery attempt
	}
	tests := []struct {
		name  string
		scope string
		steps []step
		// What the last push is answered, and whether the app ends
		// marked misconfigured.
		wantDead, wantMisconfigured bool
	}{
		{
			name: "two refused tokens tried again",
			steps: []step{
				{n: 2, refused: true},
				{at: 10 * time.Second, n: 24, refused: true, again: true},
				{at: 20 * time.Second, n: 1, refused: true},
			},
		},
		{
			name:  "two refused tokens tried again, at one of several services",
			scope: "https://push.example",
			steps: []step{
				{n: 2, refused: true},
				{at: 10 * time.Second, n: 24, refused: true, again: true},
				{at: 20 * time.Second, n: 1, refused: true},
			},
		},
		{
			// Attempts and successes fill the window, half each:
			// counted, it would hold 20 answers and take the refusal
			// as dead, however many refusals came before.
			name: "attempts fill the window among successes",
			steps: []step{
				{n: 12, refused: true},
				{at: 5 * time.Minute, n: 10},
				{at: 5 * time.Minute, n: 9, refused: true, again: true},
				{at: 5 * time.Minute, n: 1, refused: true},
			},
		},
		{
			name: "first attempts still mark the app",
			steps: []step{
				{n: 20, refused: true},
			},
			wantMisconfigured: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			start := time.Unix(1_800_000_000, 0)
			now := start
			var logs bytes.Buffer
			b, suspect := newTestBreaker(&now, &logs)
			ctx := context.Background()
			if err := b.JudgeCtx(ctx, tt.scope, nil); err != nil {
				t.Fatal(err)
			}
			var last error
			for _, s := range tt.steps {
				now = start.Add(s.at)
				sctx := ctx
				if s.again {
					sctx = push.WithRedelivery(ctx)
				}
				var err error
				if s.refused {
					err = suspect
				}
				for range s.n {
					last = b.JudgeCtx(sctx, tt.scope, err)
				}
			}
			if _, dead := push.IsDeadToken(last); dead != tt.wantDead || !dead && !push.IsTemporary(last) {
				t.Errorf("last refusal answered %v, want a dead token: %v", last, tt.wantDead)
			}
			if bad, _ := b.Misconfigured(); bad != tt.wantMisconfigured {
				t.Errorf("Misconfigured() = %v, want %v; logs:\n%s", bad, tt.wantMisconfigured, logs.String())
			}
		})
	}
}

// A push refused before the app proved itself (answered wait, kept for
// redelivery) was never counted among the answers since the proof; its
// redelivery attempt is not counted either. A production app left on the
// sandbox, one development build's success, and every user's push kept
// before it is then taken as a dead token on its next attempt, though the
// same refusal as a first attempt is answered wait.
func TestBreakerRedeliveryOfPushRefusedBeforeProof(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	var logs bytes.Buffer
	b, suspect := newTestBreaker(&now, &logs)
	ctx := context.Background()
	again := push.WithRedelivery(ctx)
	// Three users' pushes, refused before any success: wait, kept.
	for i := range 3 {
		if err := b.JudgeCtx(ctx, "", suspect); !push.IsTemporary(err) {
			t.Fatalf("push %d before the proof: %v, want temporary", i, err)
		}
	}
	now = now.Add(10 * time.Second)
	// One development build's push goes through.
	if err := b.JudgeCtx(ctx, "", nil); err != nil {
		t.Fatal(err)
	}
	now = now.Add(20 * time.Second)
	// Redelivery tries the three kept pushes again.
	for i := range 3 {
		if _, dead := push.IsDeadToken(b.JudgeCtx(again, "", suspect)); dead {
			t.Errorf("redelivery of user %d's push refused before the proof: a dead token after one success and three refusals", i)
		}
	}
}

// A reload changes the app's topic (a bundle id changed, and the new
// one has a typo): APNS answers DeviceTokenNotForTopic for nearly every
// token, 200 for the one device already on the new topic. The fresh
// breaker has proven nothing but that one device; the old configuration's
// successes of the last minute, in the window Fresh shares, must not
// vote for the new configuration's refusals: judged alone (a new
// Breaker), none of them is a dead token.
func TestFreshBreakerNotOutvotedByOldConfiguration(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	var logs bytes.Buffer
	b, _ := newTestBreaker(&now, &logs)
	suspect := &push.SuspectTokenError{Reason: "DeviceTokenNotForTopic", Cause: "wrong topic?"}
	// A busy app: 200 pushes went through in the last minute.
	for range 200 {
		b.Judge(nil)
	}
	now = now.Add(time.Second)
	judge := func(fresh *push.Breaker) (dead int) {
		fresh.Judge(nil) // the one device on the new topic
		for range 50 {
			if _, ok := push.IsDeadToken(fresh.Judge(suspect)); ok {
				dead++
			}
		}
		return dead
	}
	alone, _ := newTestBreaker(&now, &logs)
	if n := judge(alone); n != 0 {
		t.Fatalf("a new breaker took %d of 50 refusals for dead tokens", n)
	}
	if n := judge(b.Fresh()); n != 0 {
		t.Fatalf("after a reload, %d of 50 refusals of the new configuration taken for dead tokens (registrations deleted, servers told cancel) on one success of it and the old configuration's 200", n)
	}
}

// A quiet WebPush service (a few pushes an hour at its origin, never the
// window's 20 a minute) that took our pushes for weeks starts refusing
// every one (our clock went off, so every VAPID token's exp is refused;
// or the service now refuses our vapid_subject): the configuration, not
// the subscriptions, is at fault. A busy service trips after fewer than
// MinAnswers refusals (TestBreaker); the quiet one must not lose more
// than that either, however long it answered normally before.
func TestBreakerLongProvenQuietScopeCatchesLaterRefusals(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	var logs bytes.Buffer
	b, _ := newTestBreaker(&now, &logs)
	const origin = "https://updates.push.services.mozilla.com"
	suspect := &push.SuspectTokenError{Reason: "401 Unauthorized from " + origin, Cause: "VAPID key replaced (vapid_key_file), or vapid_subject refused?"}
	// Two weeks, a push every 10 minutes, a stale subscription among 50.
	for i := range 2000 {
		now = now.Add(10 * time.Minute)
		if i%50 == 49 {
			b.JudgeAt(origin, suspect)
		} else if err := b.JudgeAt(origin, nil); err != nil {
			t.Fatal(err)
		}
	}
	// Now every push there is refused, one every 10 minutes for two days.
	dead := 0
	for range 300 {
		now = now.Add(10 * time.Minute)
		if _, ok := push.IsDeadToken(b.JudgeAt(origin, suspect)); ok {
			dead++
		}
	}
	t.Logf("%d dead", dead)
	if dead >= 20 {
		t.Fatalf("%d of 300 subscriptions deleted (servers told item-not-found) once the service refused every push of ours: the tally since the proof, weeks long, outvotes any refusal", dead)
	}
}

// A reload replaces the WebPush app's vapid_key_file (README: a
// misconfiguration, registrations kept). One subscription made with the
// new key goes through at the service; the old ones are refused (403),
// and some of them had expired anyway (410, a dead token of its own).
// The README: pushes are answered wait "as long as the refusals are not
// outnumbered by the configuration's own successes": one success here
// against twenty refusals. The 410s are no success of the configuration.
func TestFreshBreakerDeadTokensAreNoSuccesses(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	var logs bytes.Buffer
	old, _ := newTestBreaker(&now, &logs)
	const origin = "https://fcm.googleapis.com"
	old.JudgeAt(origin, nil)
	now = now.Add(time.Hour)
	b := old.Fresh()
	suspect := &push.SuspectTokenError{Reason: "403 Forbidden from " + origin, Cause: "VAPID key replaced (vapid_key_file), or vapid_subject refused?"}
	if err := b.JudgeAt(origin, nil); err != nil { // the one new subscription
		t.Fatal(err)
	}
	dead := 0
	for i := range 40 {
		now = now.Add(5 * time.Minute)
		if i%2 == 0 {
			gone := &push.DeadTokenError{Since: now, Reason: "410 Gone"}
			if err := b.JudgeAt(origin, gone); err != gone {
				t.Fatalf("a 410 judged %v", err)
			}
			continue
		}
		if _, ok := push.IsDeadToken(b.JudgeAt(origin, suspect)); ok {
			dead++
		}
	}
	if dead > 1 {
		t.Fatalf("%d of 20 refused subscriptions deleted after the key's replacement, on one success of the new key: each expired subscription's 410 voted as a success", dead)
	}
}

// A stranger's tokenless pushes name 900 made-up tokens within an
// hour (APNS: BadDeviceToken each). The window forgets them after a
// minute; the tally since the proof must too: the app's own answers
// afterwards (a day of pushes, a stale token in 20) are a healthy app's,
// and its stale tokens are dead, not kept and pushed to forever.
func TestBreakerForgetsStrangersBurstOfRefusals(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	var logs bytes.Buffer
	b, suspect := newTestBreaker(&now, &logs)
	for range 100 {
		now = now.Add(time.Minute)
		b.Judge(nil)
	}
	// 15 a minute for an hour: too few a minute to mark the app (never
	// 20 answers in the window), so every one stays in the tally.
	for range 900 {
		now = now.Add(4 * time.Second)
		b.Judge(suspect)
	}
	dead, stale := 0, 0
	for i := range 400 {
		now = now.Add(3 * time.Minute)
		if i%20 != 19 {
			b.Judge(nil)
			continue
		}
		stale++
		if _, ok := push.IsDeadToken(b.Judge(suspect)); ok {
			dead++
		}
	}
	if bad, _ := b.Misconfigured(); bad {
		t.Fatal("still marked misconfigured a day later")
	}
	if dead < stale/2 {
		t.Fatalf("a day after a stranger's burst of refusals, %d of the app's %d stale tokens taken for dead among 380 successes: the rest kept, answered wait, pushed to again and again", dead, stale)
	}
}

// Pushes that never reached the push service (a network blip: refused
// or reset connections, timeouts) are no answers of it: a minute of them
// beside a sudden run of refusals must not keep the app from being
// marked misconfigured, where its long tally of successes would take
// every refusal for a dead token.
func TestTransientFailuresDoNotHideRefusals(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	var logs bytes.Buffer
	b, suspect := newTestBreaker(&now, &logs)
	for range 200 {
		now = now.Add(10 * time.Second)
		if err := b.Judge(nil); err != nil {
			t.Fatal(err)
		}
	}
	blip := &push.TemporaryError{Reason: "APNS request", Err: errors.New("connection reset by peer")}
	dead := 0
	for i := range 60 {
		now = now.Add(500 * time.Millisecond)
		if i%2 == 0 {
			b.Judge(blip)
			continue
		}
		if _, ok := push.IsDeadToken(b.Judge(suspect)); ok {
			dead++
		}
	}
	if bad, _ := b.Misconfigured(); !bad || dead >= 20 {
		t.Fatalf("misconfigured %t, %d of 30 refusals taken for dead tokens, with 30 network failures in the same minute", bad, dead)
	}
}
