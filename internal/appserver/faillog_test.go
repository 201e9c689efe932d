package appserver_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/push-appserver/push-appserver/internal/appserver"
	"github.com/push-appserver/push-appserver/internal/logging"
	"github.com/push-appserver/push-appserver/internal/push"
	"github.com/push-appserver/push-appserver/internal/registry/memory"
	"github.com/push-appserver/push-appserver/internal/testutil/logbuf"
)

// TestFailuresOfAnotherAppLogged: while one app's push service fails
// every push of a busy app (hundreds a second), a failure of another app,
// for another reason, is still logged within the same second: the
// limit on "push failed" lines bounds the flood, not what the operator
// learns of a second problem. Before, the busy app used up every second's
// lines in its first milliseconds, and the other app's failures were
// only counted in "push failures not logged".
func TestFailuresOfAnotherAppLogged(t *testing.T) {
	var buf logbuf.Buffer
	logger := slog.New(logging.Redact(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo})))
	down := &push.TemporaryError{Err: errors.New("dial tcp: connection refused")}
	refused := &push.TemporaryError{Err: errors.New("FCM 503 UNAVAILABLE")}
	b := &scripted{answers: map[string]error{}}
	now := time.Unix(1_800_000_000, 0)
	svc, err := appserver.New(memory.New(), testApps(b), appserver.Options{Now: func() time.Time { return now }}, logger)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	const busy = 50
	secrets := map[string]string{}
	for i := range busy {
		node, token := fmt.Sprint("busy-", i), fmt.Sprintf("%064x", i+1)
		r, err := svc.Register(ctx, appserver.Caller{}, "apns", node, token)
		if err != nil {
			t.Fatal(err)
		}
		secrets[node] = r.Secret
		b.set(token, down)
	}
	r, err := svc.Register(ctx, appserver.Caller{}, "fcm", "other", "fcm-token")
	if err != nil {
		t.Fatal(err)
	}
	b.set("fcm-token", refused)
	for i := range busy {
		node := fmt.Sprint("busy-", i)
		svc.Push(ctx, appserver.PushRequest{Node: node, Secret: secrets[node]})
	}
	if err := svc.Push(ctx, appserver.PushRequest{Node: "other", Secret: r.Secret}); err == nil {
		t.Fatal("the other app's push went through")
	}
	var apns, fcm int
	for _, l := range strings.Split(buf.String(), "\n") {
		if !strings.Contains(l, `msg="push failed"`) {
			continue
		}
		switch {
		case strings.Contains(l, "app=apns"):
			apns++
		case strings.Contains(l, "app=fcm") && strings.Contains(l, "UNAVAILABLE"):
			fcm++
		}
	}
	if apns == 0 || apns >= busy {
		t.Errorf("%d of the busy app's %d failures logged in a second: want some, bounded", apns, busy)
	}
	if fcm != 1 {
		t.Errorf("the other app's failure logged %d times, want once:\n%s", fcm, buf.String())
	}
}
