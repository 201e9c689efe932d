package main

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/push-appserver/push-appserver/internal/appserver"
	"github.com/push-appserver/push-appserver/internal/metrics"
	"github.com/push-appserver/push-appserver/internal/push"
	"github.com/push-appserver/push-appserver/internal/registry/memory"
)

// platformRefuser answers as FCM does for an app whose Firebase project
// holds an invalid APNs key: THIRD_PARTY_AUTH_ERROR for the iOS
// device's token, success for the others.
type platformRefuser struct{ ios string }

func (b platformRefuser) Send(_ context.Context, n push.Notification) error {
	if n.Token == b.ios {
		return &push.CredentialsRefusedError{Reason: "FCM 401 THIRD_PARTY_AUTH_ERROR", Partial: true}
	}
	return nil
}

func (platformRefuser) Close() error { return nil }

// syncBuffer is a log destination read while the service writes it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestPartialRefusalLeavesAppCredentials guards the credentials gauge
// (push_appserver_app_credentials) and the log of an FCM app whose
// Firebase project holds an invalid APNs key: FCM refuses its iOS
// devices' pushes (THIRD_PARTY_AUTH_ERROR) and takes its Android
// devices'. That refusal is of some devices' key, not of the app's
// credentials, whose check passed: the gauge must not say they are
// refused, nor the log warn that every push of the app fails, and then
// that it takes them again, at each iOS push that follows an Android
// one, as many lines as pushes.
func TestPartialRefusalLeavesAppCredentials(t *testing.T) {
	ctx := context.Background()
	var logs syncBuffer
	logger := slog.New(slog.NewTextHandler(&logs, nil))
	m := metrics.New()
	g := &credentialsGauge{m: m, logger: logger}
	g.start("fcm")(metrics.CredentialsAccepted) // its check passed
	const iosTok, androidTok = "ios-token", "android-token"
	svc, err := appserver.New(memory.New(), []appserver.App{{Name: "fcm", Priority: push.PriorityHigh, Backend: platformRefuser{ios: iosTok}}},
		appserver.Options{Redelivery: time.Minute, Observer: &credentialsObserver{Observer: m, g: g}}, logger)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { svc.Close() })
	ios, err := svc.Register(ctx, appserver.Caller{}, "fcm", "ios", iosTok)
	if err != nil {
		t.Fatal(err)
	}
	android, err := svc.Register(ctx, appserver.Caller{}, "fcm", "android", androidTok)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if err := svc.Push(ctx, appserver.PushRequest{Node: "ios", Secret: ios.Secret}); err == nil {
			t.Fatalf("push %d to the iOS device refused for the project's APNs key succeeded", i)
		}
		if c := g.last("fcm"); c != metrics.CredentialsAccepted {
			t.Fatalf("after the iOS device's push %d was refused for its platform's key alone: the app's credentials read %v, want accepted", i, c)
		}
		if err := svc.Push(ctx, appserver.PushRequest{Node: "android", Secret: android.Secret}); err != nil {
			t.Fatalf("push %d to the Android device: %v", i, err)
		}
	}
	if n := strings.Count(logs.String(), "refused our credentials for a push of the app") + strings.Count(logs.String(), "accepts our credentials now"); n > 0 {
		t.Fatalf("the log says %d times that the app's credentials are refused or taken again, for pushes to its iOS devices refused:\n%s", n, logs.String())
	}
}
