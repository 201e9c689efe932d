package appserver_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"testing"
	"time"

	"github.com/push-appserver/push-appserver/internal/appserver"
	"github.com/push-appserver/push-appserver/internal/push"
	"github.com/push-appserver/push-appserver/internal/registry/memory"
)

// An encrypted notification larger than the push service takes fails
// that push alone: counted as too_large (not as a push service failure),
// answered as a failure that keeps the registration and still says why
// (the component answers wait/bad-request from it), and not kept for
// redelivery, which would send the same bytes again.
func TestTooLargeCountedNotRedelivered(t *testing.T) {
	ctx := context.Background()
	obs := &rejections{}
	b := &scripted{answers: map[string]error{}}
	svc, err := appserver.New(memory.New(), testApps(b), appserver.Options{Observer: obs, Redelivery: time.Minute}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	reg, err := svc.Register(ctx, appserver.Caller{}, "fcm", "n", "tok")
	if err != nil {
		t.Fatal(err)
	}
	b.set("tok", fmt.Errorf("fcm: 5000 bytes of data, FCM takes 4096: %w", push.ErrPayloadTooLarge))
	err = svc.Push(ctx, appserver.PushRequest{Node: "n", Secret: reg.Secret, Encrypted: &push.Encrypted{Payload: "c2VjcmV0", IV: "aXY="}})
	if !errors.Is(err, appserver.ErrPushFailed) || !errors.Is(err, push.ErrPayloadTooLarge) || errors.Is(err, appserver.ErrNotFound) {
		t.Fatalf("Push = %v, want ErrPushFailed carrying ErrPayloadTooLarge", err)
	}
	obs.mu.Lock()
	apps := slices.Clone(obs.apps)
	obs.mu.Unlock()
	if !slices.Equal(apps, []string{"fcm/" + string(appserver.OutcomeTooLarge)}) {
		t.Fatalf("outcomes %v, want fcm/too_large", apps)
	}
	if s := svc.RedeliveryStats(); s.Kept != 0 {
		t.Fatalf("redelivery %+v: the push too large was kept to be sent again", s)
	}
}
