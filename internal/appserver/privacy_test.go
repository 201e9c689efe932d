package appserver_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/push-appserver/push-appserver/internal/appserver"
	"github.com/push-appserver/push-appserver/internal/push"
	"github.com/push-appserver/push-appserver/internal/registry/memory"
	"github.com/push-appserver/push-appserver/internal/registry/sqlite"
)

// TestHeldPushKeepsNoMessageTextOnDisk: no app includes the summary's
// text (include_summary = false, the default: "privacy!"), so no push
// ever carries the sender or the message body. A push that fails during
// an outage of the push service is kept for redelivery and written to
// the registry: the user's message body and its sender's JID must not be
// written to disk with it, since nothing will ever send them.
func TestHeldPushKeepsNoMessageTextOnDisk(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "registry.db")
	store, err := sqlite.Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	b := &scripted{answers: map[string]error{}}
	// An app with include_summary = false, as its backends say.
	apps := []appserver.App{{Name: "fcm", Priority: push.PriorityHigh, Backend: noSummaryText{b}}}
	svc, err := appserver.New(store, apps, appserver.Options{Redelivery: time.Minute}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	svc.SetRedeliveryTiming(20*time.Millisecond, 5*time.Millisecond)
	stop := running(t, svc)
	reg, err := svc.Register(ctx, appserver.Caller{}, "fcm", "n1", "t1")
	if err != nil {
		t.Fatal(err)
	}
	b.set("t1", outage)
	const body, sender = "the door code is 4711", "juliet@capulet.example"
	err = svc.Push(ctx, appserver.PushRequest{Node: "n1", Secret: reg.Secret,
		Summary: &push.Summary{MessageCount: 1, LastMessageSender: sender, LastMessageBody: body, HasLastMessageBody: true}})
	if !errors.Is(err, appserver.ErrPushFailed) {
		t.Fatalf("push during the outage: %v", err)
	}
	stop() // hands the push over in the registry, as a restart during the outage does
	held, err := store.TakeHeldPushes(ctx, 10)
	if err != nil || len(held) != 1 {
		t.Fatalf("held: %d %v", len(held), err)
	}
	if bytes.Contains(held[0].Push, []byte(body)) || bytes.Contains(held[0].Push, []byte(sender)) {
		t.Errorf("the registry keeps the message body and sender no push will carry: %s", held[0].Push)
	}
	var onDisk []byte
	for _, f := range []string{path, path + "-wal"} {
		data, _ := os.ReadFile(f)
		onDisk = append(onDisk, data...)
	}
	if bytes.Contains(onDisk, []byte(body)) {
		t.Errorf("the message body is in %s (or its -wal) after the push was taken", filepath.Base(path))
	}
}

// noSummaryText is b as a backend of an app with include_summary =
// false (apns, fcm, webpush, log) says it is.
type noSummaryText struct{ *scripted }

func (noSummaryText) CarriesSummaryText() bool { return false }

// TestHeldPushesNotKeptForeverWithRedeliveryOff: a server stopped during
// an outage leaves its waiting pushes in the registry (with the summary
// and, for tokenless pushes, the device token). Started again with
// redelivery = 0 ("off"), nothing ever takes, sends or expires them:
// they stay in the registry, and every backup of it, for good.
func TestHeldPushesNotKeptForeverWithRedeliveryOff(t *testing.T) {
	ctx := context.Background()
	store := memory.New()
	first, b1, stop := startRedelivering(t, store, time.Minute)
	a, _ := first.Register(ctx, appserver.Caller{}, "fcm", "a", "token-a")
	b1.set("token-a", outage)
	b1.set("ab12", outage)
	first.Push(ctx, appserver.PushRequest{Node: "a", Secret: a.Secret, MarkedHigh: true, Summary: &push.Summary{LastMessageSender: "bob@example.org", MessageCount: 1}})
	first.Push(ctx, appserver.PushRequest{Node: "ab12", Tokenless: true, TokenApp: "apns"})
	stop()

	// The operator turns redelivery off and starts the server again.
	second, _, _ := startRedelivering(t, store, -1)
	_ = second
	time.Sleep(300 * time.Millisecond)
	held, err := store.TakeHeldPushes(ctx, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(held) != 0 {
		t.Errorf("%d pushes held in the registry by a server with redelivery off, which will never send nor expire them; first: %s", len(held), held[0].Push)
	}
}
