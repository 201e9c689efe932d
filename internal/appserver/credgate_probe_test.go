package appserver_test

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/push-appserver/push-appserver/internal/appserver"
	"github.com/push-appserver/push-appserver/internal/push"
	"github.com/push-appserver/push-appserver/internal/registry/memory"
)

// refusingKey refuses the app's credentials for every push; a push to
// token slow (the probe, in the test) waits for release first.
type refusingKey struct {
	slow    string
	reached chan struct{}
	release chan struct{}

	mu   sync.Mutex
	sent []string
}

func (b *refusingKey) Send(ctx context.Context, n push.Notification) error {
	b.mu.Lock()
	b.sent = append(b.sent, n.Token)
	b.mu.Unlock()
	if n.Token == b.slow {
		close(b.reached)
		<-b.release
	}
	return push.UntilReconfigured(&push.CredentialsRefusedError{Reason: "InvalidProviderToken", Check: "the key"})
}

func (b *refusingKey) sentTo(token string) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	n := 0
	for _, s := range b.sent {
		if s == token {
			n++
		}
	}
	return n
}

// TestCredentialsProbeOneAtATime guards the credentials gate of an app
// whose push service refuses its credentials: while one push tries them
// (the probe) and its answer is not in, every other push of the app is
// held and answered wait without a request, however long the push
// service takes to answer it. Let through, each would be refused alike,
// and with APNS token auth make its own provider token.
func TestCredentialsProbeOneAtATime(t *testing.T) {
	b := &refusingKey{slow: "tok-probe", reached: make(chan struct{}), release: make(chan struct{})}
	svc, pushTo := gatedApp(t, b, "tok-first", "tok-probe", "tok-other")
	// The first refusal closes the gate; a reload makes a probe due.
	if err := pushTo("tok-first"); !errors.Is(err, appserver.ErrPushFailed) {
		t.Fatalf("refused push = %v, want ErrPushFailed", err)
	}
	svc.CredentialsChanged("fcm")
	probe := make(chan error, 1)
	go func() { probe <- pushTo("tok-probe") }()
	<-b.reached
	if err := pushTo("tok-other"); !errors.Is(err, appserver.ErrPushFailed) {
		t.Fatalf("push while the probe is under way = %v, want ErrPushFailed", err)
	}
	if n := b.sentTo("tok-other"); n != 0 {
		t.Fatalf("a push sent to the push service while the probe of the app's credentials was under way")
	}
	close(b.release)
	if err := <-probe; !errors.Is(err, appserver.ErrPushFailed) {
		t.Fatalf("probe = %v, want ErrPushFailed", err)
	}
}

// answeredForDevice refuses the app's credentials until accept is set,
// then answers every push as one to a dead token, as a push service does
// for a device once it took the credentials; it records the tokens.
type answeredForDevice struct {
	mu     sync.Mutex
	accept bool
	sent   []string
}

func (b *answeredForDevice) Send(ctx context.Context, n push.Notification) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.sent = append(b.sent, n.Token)
	if !b.accept {
		return push.UntilReconfigured(&push.CredentialsRefusedError{Reason: "InvalidProviderToken", Check: "the key"})
	}
	if n.Token == "tok-dead" {
		return &push.DeadTokenError{Since: time.Now(), Reason: "Unregistered"}
	}
	return nil
}

// TestCredentialsProbeAnsweredForDeviceOpensGate guards the credentials
// gate when the push that tries the credentials goes to a dead token: the
// push service answered for the device, which it does only once it took
// the credentials, so the gate opens and the app's next push goes out at
// once, rather than wait for another probe at the backoff's next turn.
func TestCredentialsProbeAnsweredForDeviceOpensGate(t *testing.T) {
	b := &answeredForDevice{}
	svc, pushTo := gatedApp(t, b, "tok-first", "tok-dead", "tok-next")
	if err := pushTo("tok-first"); !errors.Is(err, appserver.ErrPushFailed) {
		t.Fatalf("refused push = %v, want ErrPushFailed", err)
	}
	b.mu.Lock()
	b.accept = true
	b.mu.Unlock()
	svc.CredentialsChanged("fcm")
	if err := pushTo("tok-dead"); !errors.Is(err, appserver.ErrNotFound) {
		t.Fatalf("probe to a dead token = %v, want ErrNotFound", err)
	}
	if err := pushTo("tok-next"); err != nil {
		t.Fatalf("push after a probe the push service answered for its device = %v, want it sent", err)
	}
}

// gatedApp serves the FCM app of backend b on a memory registry, with a
// device registered for each of tokens (node "node-" + token); pushTo
// pushes to the device of a token.
func gatedApp(t *testing.T, b push.Backend, tokens ...string) (svc *appserver.Service, pushTo func(token string) error) {
	t.Helper()
	ctx := context.Background()
	svc, err := appserver.New(memory.New(), []appserver.App{{Name: "fcm", Priority: push.PriorityHigh, Backend: b}},
		appserver.Options{}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { svc.Close() })
	secrets := map[string]string{}
	for _, tok := range tokens {
		r, err := svc.Register(ctx, appserver.Caller{}, "fcm", "node-"+tok, tok)
		if err != nil {
			t.Fatal(err)
		}
		secrets[tok] = r.Secret
	}
	return svc, func(tok string) error {
		return svc.Push(ctx, appserver.PushRequest{Node: "node-" + tok, Secret: secrets[tok]})
	}
}
