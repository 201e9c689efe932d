package logpush_test

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"testing"

	"github.com/push-appserver/push-appserver/internal/push"
	"github.com/push-appserver/push-appserver/internal/push/logpush"
)

// The log backend logs each push by its node at info level and the
// device token at debug level only, and takes no summary text for the
// pushes it keeps for redelivery, since it shows none.
func TestLogBackend(t *testing.T) {
	const token = "d3v1c3-t0k3n"
	var logs bytes.Buffer
	b := logpush.New(slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelInfo})))
	err := b.Send(context.Background(), push.Notification{App: "log", Node: "node-1", Token: token, Priority: push.PriorityHigh})
	if err != nil {
		t.Fatal(err)
	}
	if out := logs.String(); !strings.Contains(out, "node-1") || strings.Contains(out, token) {
		t.Fatalf("at info level the log must name the node and not the token:\n%s", out)
	}
	if push.CarriesSummaryText(b) {
		t.Fatal("the log backend says its pushes carry summary text")
	}
}
