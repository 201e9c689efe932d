package appserver_test

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"

	"github.com/push-appserver/push-appserver/internal/appserver"
	"github.com/push-appserver/push-appserver/internal/registry/memory"
	"github.com/push-appserver/push-appserver/internal/testutil/logbuf"
)

// TestRejectedLongNodeLoggedShort guards the log of a push to a node
// longer than any registration may have: anyone may push to any node
// (a publish's node may take 4 KiB), and its rejection logs the node's
// start, MaxNodeLen bytes at most, which is enough to find who sent it.
func TestRejectedLongNodeLoggedShort(t *testing.T) {
	var buf logbuf.Buffer
	svc, err := appserver.New(memory.New(), testApps(&scripted{answers: map[string]error{}}), appserver.Options{}, slog.New(slog.NewTextHandler(&buf, nil)))
	if err != nil {
		t.Fatal(err)
	}
	node := strings.Repeat("n", appserver.MaxNodeLen) + strings.Repeat("x", 4096-appserver.MaxNodeLen)
	if err := svc.Push(context.Background(), appserver.PushRequest{Node: node, Secret: "s"}); !errors.Is(err, appserver.ErrNotFound) {
		t.Fatalf("push to a node longer than any registered = %v, want ErrNotFound", err)
	}
	log := buf.String()
	if !strings.Contains(log, "reason=\"unknown node\"") || !strings.Contains(log, strings.Repeat("n", appserver.MaxNodeLen)) {
		t.Fatalf("rejection not logged with the node's start:\n%.400s", log)
	}
	if strings.Contains(log, strings.Repeat("x", 16)) {
		t.Fatalf("rejection logged the node past MaxNodeLen bytes (%d bytes of log)", len(log))
	}
}
