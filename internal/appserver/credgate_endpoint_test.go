package appserver_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/push-appserver/push-appserver/internal/appserver"
	"github.com/push-appserver/push-appserver/internal/push"
	"github.com/push-appserver/push-appserver/internal/push/apns"
	"github.com/push-appserver/push-appserver/internal/push/fcm"
	"github.com/push-appserver/push-appserver/internal/registry"
	"github.com/push-appserver/push-appserver/internal/registry/memory"
	"github.com/push-appserver/push-appserver/internal/testutil/apnsmock"
	"github.com/push-appserver/push-appserver/internal/testutil/fcmmock"
	"github.com/push-appserver/push-appserver/internal/testutil/logbuf"
)

// swapped is an app's backend as a reload leaves it: the one in use is
// replaced by one built from the mended configuration.
type swapped struct{ b atomic.Pointer[push.Backend] }

func (s *swapped) Send(ctx context.Context, n push.Notification) error {
	return (*s.b.Load()).Send(ctx, n)
}

func (s *swapped) use(b push.Backend) { s.b.Store(&b) }

var discard = slog.New(slog.DiscardHandler)

// endpointApp is a push service mock and a way to build the app's
// backend for it with the endpoint given a path suffix ("" for the
// mock's own URL).
type endpointApp struct {
	token    func(i int) string
	build    func(t *testing.T, suffix string) push.Backend
	accepted func() int
}

func apnsEndpointApp(t *testing.T) endpointApp {
	p8, pub, err := apnsmock.TokenKey()
	if err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(t.TempDir(), "key.p8")
	if err := os.WriteFile(keyFile, p8, 0o600); err != nil {
		t.Fatal(err)
	}
	m, err := apnsmock.New(apnsmock.Config{TokenKey: pub, KeyID: "K1", TeamID: "T1", Topic: "im.example.app"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Close)
	return endpointApp{
		token: func(i int) string { return fmt.Sprintf("%064x", i+1) },
		build: func(t *testing.T, suffix string) push.Backend {
			b, err := apns.New(apns.Options{Topic: "im.example.app", Endpoint: m.URL + suffix, CAPath: m.CADir,
				TokenKeyFile: keyFile, KeyID: "K1", TeamID: "T1"}, discard)
			if err != nil {
				t.Fatal(err)
			}
			return b
		},
		accepted: m.Accepted,
	}
}

func fcmEndpointApp(t *testing.T) endpointApp {
	m, err := fcmmock.New("p1")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Close)
	sa, err := m.WriteServiceAccount(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return endpointApp{
		token: func(i int) string { return fmt.Sprint("fcm-device-token:APA91b-abc_", i) },
		build: func(t *testing.T, suffix string) push.Backend {
			b, err := fcm.New(fcm.Options{ServiceAccountFile: sa, Endpoint: m.URL + suffix, CAPath: m.CADir}, discard)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { b.Close() })
			return b
		},
		accepted: m.Accepted,
	}
}

// TestWrongEndpointHeldUntilReload guards the pushes of an app whose
// endpoint points at a path that is no APNS or FCM one (APNS answers
// 404 BadPath, a front end a bare 404): every push of the app is refused
// so until the configuration is mended, so the app's credentials gate
// holds them as for a refused key. The users' servers hear wait, no
// registration is deleted, the log says once (not per push) to check
// endpoint, and once a reload puts the right endpoint in place, every
// push held meanwhile is sent.
func TestWrongEndpointHeldUntilReload(t *testing.T) {
	ctx := context.Background()
	for name, app := range map[string]func(*testing.T) endpointApp{"apns": apnsEndpointApp, "fcm": fcmEndpointApp} {
		t.Run(name, func(t *testing.T) {
			ea := app(t)
			var sw swapped
			sw.use(ea.build(t, "/wrong/path"))
			var buf logbuf.Buffer
			logger := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo}))
			svc, err := appserver.New(memory.New(), []appserver.App{{Name: name, Priority: push.PriorityHigh, Backend: &sw}},
				appserver.Options{Redelivery: time.Minute}, logger)
			if err != nil {
				t.Fatal(err)
			}
			svc.SetRedeliveryTiming(20*time.Millisecond, 5*time.Millisecond)
			running(t, svc)

			const n = 3
			var regs [n]registry.Registration
			for i := range regs {
				// One device per node: the per-device limit does not
				// stand in for the gate.
				if regs[i], err = svc.Register(ctx, appserver.Caller{}, name, fmt.Sprint("node-", i), ea.token(i)); err != nil {
					t.Fatal(err)
				}
			}
			for i, reg := range regs {
				err := svc.Push(ctx, appserver.PushRequest{Node: reg.Node, Secret: reg.Secret})
				if !errors.Is(err, appserver.ErrPushFailed) {
					t.Fatalf("push %d to a wrong endpoint: %v, want ErrPushFailed (wait)", i, err)
				}
			}
			if s := svc.RedeliveryStats(); s.Kept != n {
				t.Fatalf("redelivery %+v: want the %d pushes refused for the endpoint kept", s, n)
			}
			if c := strings.Count(buf.String(), "check=\"endpoint: pushes go to "); c != 1 {
				t.Fatalf("what to check logged %d times for %d pushes, want once; log:\n%s", c, n, buf.String())
			}

			// The reload: a backend with the right endpoint, the
			// gate told the credentials may have changed.
			sw.use(ea.build(t, ""))
			svc.CredentialsChanged(name)
			s := waitStats(t, svc, func(s appserver.RedeliveryStats) bool { return s.Delivered == n || s.Failed > 0 })
			if s.Delivered != n || ea.accepted() != n {
				t.Fatalf("redelivery %+v, %d pushes accepted, want the %d held ones delivered after the reload", s, ea.accepted(), n)
			}
			// No registration was deleted: each still takes a push.
			for i, reg := range regs {
				if err := svc.Push(ctx, appserver.PushRequest{Node: reg.Node, Secret: reg.Secret}); err != nil {
					t.Fatalf("push %d after the reload: %v", i, err)
				}
			}
		})
	}
}

// TestEndpointAnsweringAgainReleasesHeld guards the other way out: a
// front end that answered 405 to the app's pushes and serves them again
// (no reload) lets the gate's probe through, and the held push goes out.
func TestEndpointAnsweringAgainReleasesHeld(t *testing.T) {
	ctx := context.Background()
	b, m := realAPNS(t, false)
	svc, err := appserver.New(memory.New(), []appserver.App{{Name: "apns", Priority: push.PriorityHigh, Backend: b}},
		appserver.Options{Redelivery: time.Minute}, discard)
	if err != nil {
		t.Fatal(err)
	}
	svc.SetRedeliveryTiming(20*time.Millisecond, 5*time.Millisecond)
	running(t, svc)
	tok := strings.Repeat("cd", 32)
	reg, err := svc.Register(ctx, appserver.Caller{}, "apns", "n", tok)
	if err != nil {
		t.Fatal(err)
	}
	m.FailToken(tok, apnsmock.Fault{Status: 405, Reason: "MethodNotAllowed"})
	if err := svc.Push(ctx, appserver.PushRequest{Node: "n", Secret: reg.Secret}); !errors.Is(err, appserver.ErrPushFailed) {
		t.Fatalf("push answered 405: %v, want ErrPushFailed (wait)", err)
	}
	s := waitStats(t, svc, func(s appserver.RedeliveryStats) bool { return s.Delivered == 1 || s.Failed > 0 })
	if s.Delivered != 1 || m.Accepted() != 1 {
		t.Fatalf("redelivery %+v, %d accepted, want the push held for the 405 delivered by the probe", s, m.Accepted())
	}
}
