package appserver_test

import (
	"context"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/push-appserver/push-appserver/internal/appserver"
	"github.com/push-appserver/push-appserver/internal/push"
	"github.com/push-appserver/push-appserver/internal/registry/memory"
)

// textCarrier is a backend whose pushes carry the summary's sender and
// body, or do not (include_summary).
type textCarrier struct {
	*scripted
	carries bool
}

func (b textCarrier) CarriesSummaryText() bool { return b.carries }

// TestTakenPushKeepsNoTextItsAppDoesNotShow: what waits for redelivery
// keeps the summary's sender and body only for an app whose pushes show
// them (README: "the sender and body only for an app with
// include_summary"). A push taken from the registry that another server
// (or this one before a restart) held for an app that showed them must
// not bring the user's message back into the registry here, where the
// app is configured without include_summary.
func TestTakenPushKeepsNoTextItsAppDoesNotShow(t *testing.T) {
	ctx := context.Background()
	store := memory.New()
	start := func(carries bool) (*appserver.Service, *scripted, func()) {
		b := &scripted{answers: map[string]error{"t1": outage}}
		apps := []appserver.App{{Name: "fcm", Priority: push.PriorityHigh, Backend: textCarrier{b, carries}}}
		svc, err := appserver.New(store, apps, appserver.Options{Redelivery: time.Hour}, slog.New(slog.NewTextHandler(io.Discard, nil)))
		if err != nil {
			t.Fatal(err)
		}
		// Attempts ten minutes apart, within the hour a push waits.
		svc.SetRedeliveryTiming(10*time.Minute, 5*time.Millisecond)
		return svc, b, running(t, svc)
	}
	first, _, stop := start(true)
	reg, _ := first.Register(ctx, appserver.Caller{}, "fcm", "n1", "t1")
	first.Push(ctx, appserver.PushRequest{Node: "n1", Secret: reg.Secret, Summary: &push.Summary{LastMessageSender: "juliet@capulet.example", LastMessageBody: "meet me at the balcony", HasLastMessageBody: true}})
	if s := first.RedeliveryStats(); s.Kept != 1 {
		t.Fatalf("%+v", s)
	}
	stop()

	// Restarted with include_summary off.
	second, b2, stop := start(false)
	waitStats(t, second, func(s appserver.RedeliveryStats) bool { return s.Pending == 1 })
	eventually(t, func() bool { return sentTo(b2, "t1") >= 1 }, func() string { return "the taken push was never tried" })
	stop()
	held, err := store.TakeHeldPushes(ctx, 100)
	if err != nil {
		t.Fatal(err)
	}
	if len(held) != 1 {
		t.Fatalf("%d pushes held, want 1", len(held))
	}
	for _, text := range []string{"juliet@capulet.example", "meet me at the balcony"} {
		if strings.Contains(string(held[0].Push), text) {
			t.Errorf("the registry holds %q for an app without include_summary: %s", text, held[0].Push)
		}
	}
}
