package appserver_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/push-appserver/push-appserver/internal/appserver"
	"github.com/push-appserver/push-appserver/internal/push"
	"github.com/push-appserver/push-appserver/internal/push/fcm"
	"github.com/push-appserver/push-appserver/internal/registry/memory"
	"github.com/push-appserver/push-appserver/internal/testutil/apnsmock"
	"github.com/push-appserver/push-appserver/internal/testutil/fcmmock"
)

// TestCredentialsRefusedPushRedelivered: a push the push service refuses
// for the app's own credentials or configuration (APNS: a 403 after the
// provider token was signed anew, a topic it refuses; FCM: a 401 after a
// new access token, a 403 but SENDER_ID_MISMATCH, Google refusing the
// service account's key) is ours to fix, as an app left out of the
// configuration is: the registration stays, the user's server hears
// wait, and the push is kept and sent again, so that a key revoked or
// mistyped and mended within the redelivery window loses no push.
func TestCredentialsRefusedPushRedelivered(t *testing.T) {
	ctx := context.Background()
	start := func(t *testing.T, b push.Backend, app string) *appserver.Service {
		svc, err := appserver.New(memory.New(), []appserver.App{{Name: app, Priority: push.PriorityHigh, Backend: b}},
			appserver.Options{Redelivery: time.Minute}, slog.New(slog.NewTextHandler(io.Discard, nil)))
		if err != nil {
			t.Fatal(err)
		}
		svc.SetRedeliveryTiming(20*time.Millisecond, 5*time.Millisecond)
		running(t, svc)
		return svc
	}
	// refusedThenDelivered pushes once to prove the app, then once
	// more while the service refuses, and waits for redelivery.
	refusedThenDelivered := func(t *testing.T, svc *appserver.Service, app, token string, refuse func(), accepted func() int) {
		t.Helper()
		reg, err := svc.Register(ctx, appserver.Caller{}, app, "n", token)
		if err != nil {
			t.Fatal(err)
		}
		if err := svc.Push(ctx, appserver.PushRequest{Node: "n", Secret: reg.Secret}); err != nil {
			t.Fatal(err)
		}
		refuse()
		err = svc.Push(ctx, appserver.PushRequest{Node: "n", Secret: reg.Secret})
		if !errors.Is(err, appserver.ErrPushFailed) {
			t.Fatalf("push refused for our credentials: %v, want ErrPushFailed (wait)", err)
		}
		if s := svc.RedeliveryStats(); s.Kept != 1 {
			t.Fatalf("redelivery %+v: the push refused for our credentials was dropped, not kept to be sent once they are taken again", s)
		}
		s := waitStats(t, svc, func(s appserver.RedeliveryStats) bool { return s.Delivered == 1 || s.Failed > 0 })
		if s.Delivered != 1 || accepted() != 2 {
			t.Fatalf("redelivery %+v, %d pushes accepted, want the refused one delivered once the service takes our credentials", s, accepted())
		}
	}
	apnsToken := strings.Repeat("ab", 32)
	for _, fault := range []apnsmock.Fault{
		{Status: 403, Reason: "InvalidProviderToken"},
		{Status: 403, Reason: "BadCertificate"},
		{Status: 400, Reason: "TopicDisallowed"},
	} {
		t.Run("APNS "+fault.Reason, func(t *testing.T) {
			b, m := realAPNS(t, false)
			svc := start(t, b, "apns")
			// Two: the provider token is signed anew once.
			refusedThenDelivered(t, svc, "apns", apnsToken, func() { m.FailToken(apnsToken, fault, fault) }, m.Accepted)
		})
	}
	for _, fault := range []fcmmock.Fault{
		{Status: 401, Code: "UNAUTHENTICATED"},
		{Status: 403, Code: "PERMISSION_DENIED", Message: "Permission 'cloudmessaging.messages.create' denied"},
		{Status: 401, Code: "THIRD_PARTY_AUTH_ERROR"},
	} {
		t.Run("FCM "+fault.Code, func(t *testing.T) {
			m, err := fcmmock.New("p1")
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(m.Close)
			sa, err := m.WriteServiceAccount(t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			b, err := fcm.New(fcm.Options{ServiceAccountFile: sa, Endpoint: m.URL, CAPath: m.CADir}, slog.New(slog.NewTextHandler(io.Discard, nil)))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { b.Close() })
			svc := start(t, b, "fcm")
			const tok = "fcm-device-token:APA91b-abc_123"
			refusedThenDelivered(t, svc, "fcm", tok, func() { m.FailToken(tok, fault, fault) }, m.Accepted)
		})
	}
	t.Run("FCM key refused by Google (invalid_grant)", func(t *testing.T) {
		m, err := fcmmock.New("p1")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(m.Close)
		// A key Google does not know (deleted since): its token
		// endpoint answers invalid_grant.
		sa, err := fcmmock.WriteForeignServiceAccount(t.TempDir(), "p1")
		if err != nil {
			t.Fatal(err)
		}
		b, err := fcm.New(fcm.Options{ServiceAccountFile: sa, Endpoint: m.URL, TokenURL: m.TokenURL, CAPath: m.CADir}, slog.New(slog.NewTextHandler(io.Discard, nil)))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { b.Close() })
		svc := start(t, b, "fcm")
		reg, err := svc.Register(ctx, appserver.Caller{}, "fcm", "n", "fcm-device-token:APA91b-abc_123")
		if err != nil {
			t.Fatal(err)
		}
		if err := svc.Push(ctx, appserver.PushRequest{Node: "n", Secret: reg.Secret}); !errors.Is(err, appserver.ErrPushFailed) || !strings.Contains(err.Error(), "invalid_grant") {
			t.Fatalf("push with a key Google refuses: %v, want ErrPushFailed naming invalid_grant", err)
		}
		if s := svc.RedeliveryStats(); s.Kept != 1 {
			t.Fatalf("redelivery %+v: the push refused for our key was dropped, not kept to be sent once it is mended", s)
		}
	})
}

// TestPlatformRefusalHoldsNoOtherDevice guards an FCM app whose devices
// are of several platforms: FCM answers THIRD_PARTY_AUTH_ERROR when the
// APNs key or web push key the Firebase project holds is invalid, for
// the pushes to the iOS or web devices alone, and goes on delivering to
// Android. Such a refusal must not hold the app's other pushes back as
// a refusal of the app's own credentials does: the Android device's push
// goes through at once, while the iOS device's is kept for later.
func TestPlatformRefusalHoldsNoOtherDevice(t *testing.T) {
	ctx := context.Background()
	m, err := fcmmock.New("p1")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Close)
	sa, err := m.WriteServiceAccount(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	b, err := fcm.New(fcm.Options{ServiceAccountFile: sa, Endpoint: m.URL, CAPath: m.CADir}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	svc, err := appserver.New(memory.New(), []appserver.App{{Name: "fcm", Priority: push.PriorityHigh, Backend: b}},
		appserver.Options{Redelivery: time.Minute}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { svc.Close() })
	const iosTok, androidTok = "fcm-ios-token:APA91b-ios_1", "fcm-android-token:APA91b-and_1"
	ios, err := svc.Register(ctx, appserver.Caller{}, "fcm", "ios", iosTok)
	if err != nil {
		t.Fatal(err)
	}
	android, err := svc.Register(ctx, appserver.Caller{}, "fcm", "android", androidTok)
	if err != nil {
		t.Fatal(err)
	}
	m.FailToken(iosTok, fcmmock.Fault{Status: 401, Code: "THIRD_PARTY_AUTH_ERROR", Message: "Auth error from APNS or Web Push Service"})
	if err := svc.Push(ctx, appserver.PushRequest{Node: "ios", Secret: ios.Secret}); !errors.Is(err, appserver.ErrPushFailed) {
		t.Fatalf("push to the iOS device refused for the project's APNs key: %v, want ErrPushFailed (wait)", err)
	}
	for i := range 3 {
		if err := svc.Push(ctx, appserver.PushRequest{Node: "android", Secret: android.Secret}); err != nil {
			t.Fatalf("push %d to the Android device after the iOS device's THIRD_PARTY_AUTH_ERROR: %v; FCM was asked %d times in all, took %d",
				i, err, len(m.Requests()), m.Accepted())
		}
	}
	if got := m.Accepted(); got != 3 {
		t.Fatalf("FCM took %d pushes, want the Android device's 3", got)
	}
}
