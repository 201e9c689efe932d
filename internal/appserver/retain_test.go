package appserver_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/push-appserver/push-appserver/internal/appserver"
	"github.com/push-appserver/push-appserver/internal/push"
	"github.com/push-appserver/push-appserver/internal/registry/memory"
)

func liveHeap() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// TestTokenlessPushesKeepNoTokens: with tokenless pushes on, anyone who
// knows the component's JID names the token, and the app (pushModule):
// an FCM or WebPush token may be 4 KiB. What the push path keeps of each
// token pushed to (its throttle window, its entry in the block list's
// cache) must cost the same whatever the token's length, or a stranger
// publishing to ever new long tokens has the server hold 4 KiB for each
// for minutes, beyond any bound that its memory was sized by.
func TestTokenlessPushesKeepNoTokens(t *testing.T) {
	ctx := context.Background()
	svc, err := appserver.New(memory.New(), []appserver.App{{Name: "fcm", Priority: push.PriorityHigh, Backend: nopBackend{}}},
		appserver.Options{RateLimit: 5 * time.Second}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	const tokens, length = 4000, 4000
	pushTo := func(i int) {
		token := fmt.Sprintf("%08d", i) + strings.Repeat("t", length-8)
		if err := svc.Push(ctx, appserver.PushRequest{Node: token, Tokenless: true, TokenApp: "fcm", Source: "example.org"}); err != nil {
			t.Fatalf("push %d: %v", i, err)
		}
	}
	pushTo(0)
	before := liveHeap()
	for i := 1; i <= tokens; i++ {
		pushTo(i)
	}
	after := liveHeap()
	grown := int64(after) - int64(before)
	t.Logf("live heap %d KiB before, %d KiB after pushes to %d tokens of %d bytes: %d bytes a token", before>>10, after>>10, tokens, length, grown/tokens)
	if grown > tokens*1024 {
		t.Fatalf("the push path keeps %d bytes for each of %d tokenless pushes to tokens of %d bytes", grown/tokens, tokens, length)
	}
	runtime.KeepAlive(svc)
}
