package e2e_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/push-appserver/push-appserver/internal/push/apns"
	"github.com/push-appserver/push-appserver/internal/registry"
	"github.com/push-appserver/push-appserver/internal/testutil/apnsmock"
)

// TestToAPNS runs the whole path: the XMPP server's push reaches the
// component, the core, the APNS backend and the APNS mock over HTTP/2.
// Then the mock declares the token dead, and the next push removes the
// registration and answers item-not-found.
func TestToAPNS(t *testing.T) { eachServer(t, testToAPNS) }

func testToAPNS(t *testing.T, start startServer) {
	mock, backend := apnsStack(t)
	s := startStackWithOn(t, start, &recorder{}, backend)
	token := strings.Repeat("c0ffee", 10) + "abcd"
	node, secret := s.registerHTTP(t, "alice-iphone", token)

	alice := login(t, s.xmpp.C2SAddr, "alice", s.xmpp.Domain, "alice-pw")
	s.offlineMessage(t, alice, node, secret)
	waitFor(t, func() bool { return mock.Accepted() == 1 })
	r := mock.Requests()[0]
	if r.Token != token || r.PushType != "alert" || r.Priority != "10" || r.Auth != "token" {
		t.Fatalf("APNS got %+v", r)
	}

	// Apple now says the token is gone since after the registration, so
	// the next push removes the registration.
	mock.FailToken(token, apnsmock.Fault{Status: 410, Reason: "Unregistered", Timestamp: time.Now()})
	bob := login(t, s.xmpp.C2SAddr, "bob", s.xmpp.Domain, "bob-pw")
	bob.sendChat("alice@"+s.xmpp.Domain, "are you there?")
	waitFor(t, func() bool { return mock.Total() == 2 })
	waitFor(t, func() bool {
		_, err := s.store.Get(t.Context(), node)
		return errors.Is(err, registry.ErrNotFound)
	})
	waitFor(t, func() bool { return strings.Contains(s.xmpp.Log(), s.xmpp.Rejected) })
}

// TestRedeliveredAfterAPNSOutage: a message that arrives while APNS
// answers 503 gets its push through once APNS is back, although the
// user's server, told "wait", never sends it again; and the push
// session survives (ejabberd deletes it on any error but wait).
func TestRedeliveredAfterAPNSOutage(t *testing.T) { eachServer(t, testRedeliveredAfterAPNSOutage) }

func testRedeliveredAfterAPNSOutage(t *testing.T, start startServer) {
	mock, backend := apnsStack(t, func(o *apns.Options) { o.PushDeadline = 500 * time.Millisecond })
	s := startStackWithOn(t, start, &recorder{}, backend)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { s.svc.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })

	token := strings.Repeat("0dd5", 16)
	node, secret := s.registerHTTP(t, "alice-iphone", token)
	down := make([]apnsmock.Fault, 100)
	for i := range down {
		down[i] = apnsmock.Fault{Status: 503, Reason: "ServiceUnavailable"}
	}
	mock.FailToken(token, down...)
	alice := login(t, s.xmpp.C2SAddr, "alice", s.xmpp.Domain, "alice-pw")
	s.offlineMessage(t, alice, node, secret)
	waitFor(t, func() bool { return s.svc.RedeliveryStats().Kept == 1 })
	if mock.Accepted() != 0 {
		t.Fatal("APNS accepted a push while answering 503")
	}
	mock.Reset() // APNS is back

	// The first attempt comes 2.5 to 5 s after the failure.
	deadline := time.Now().Add(15 * time.Second)
	for mock.Accepted() == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("the push never reached APNS once it was back: %+v", s.svc.RedeliveryStats())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if r := mock.Requests()[0]; r.Token != token || r.PushType != "alert" {
		t.Fatalf("APNS got %+v", r)
	}
	// The mock counts the push before the server has read its answer.
	waitFor(t, func() bool { st := s.svc.RedeliveryStats(); return st.Delivered == 1 && st.Pending == 0 })

	// The user's server still pushes to the device.
	bob := login(t, s.xmpp.C2SAddr, "bob", s.xmpp.Domain, "bob-pw")
	bob.sendChat("alice@"+s.xmpp.Domain, "still there?")
	waitFor(t, func() bool { return mock.Accepted() == 2 })
}

// TestProsodyPriorityAuto: with priority auto, a chat message reaches the
// APNS mock as an alert and a bare delivery receipt as a silent
// background push, as mod_push_appserver sends them.
func TestProsodyPriorityAuto(t *testing.T) {
	mock, backend := apnsStack(t)
	s := startStackWith(t, &recorder{}, backend)
	token := strings.Repeat("feed", 16)
	node, secret := s.registerHTTP(t, "alice-iphone", token)
	alice := login(t, s.xmpp.C2SAddr, "alice", s.xmpp.Domain, "alice-pw")
	alice.enablePush(s.xmpp.ComponentJID, node, secret)
	alice.close()
	bob := login(t, s.xmpp.C2SAddr, "bob", s.xmpp.Domain, "bob-pw")
	to := "alice@" + s.xmpp.Domain

	bob.sendReceipt(to, "msg-1")
	waitFor(t, func() bool { return mock.Accepted() == 1 })
	if r := mock.Requests()[0]; r.PushType != "background" || r.Priority != "5" {
		t.Fatalf("receipt pushed as %s priority %s, want background 5", r.PushType, r.Priority)
	}
	bob.sendChat(to, "hello")
	waitFor(t, func() bool { return mock.Accepted() == 2 })
	if r := mock.Requests()[1]; r.PushType != "alert" || r.Priority != "10" {
		t.Fatalf("chat message pushed as %s priority %s, want alert 10", r.PushType, r.Priority)
	}
}

// apnsStack starts the APNS mock and a token-authenticated backend for
// it, with the options configure changes.
func apnsStack(t *testing.T, configure ...func(*apns.Options)) (*apnsmock.Server, *apns.Backend) {
	t.Helper()
	p8, pub, err := apnsmock.TokenKey()
	if err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(t.TempDir(), "key.p8")
	os.WriteFile(keyFile, p8, 0o600)
	mock, err := apnsmock.New(apnsmock.Config{TokenKey: pub, KeyID: "KEY1", TeamID: "TEAM1", Topic: "im.example.app"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(mock.Close)
	opts := apns.Options{
		Topic: "im.example.app", Endpoint: mock.URL, CAPath: mock.CADir,
		TokenKeyFile: keyFile, KeyID: "KEY1", TeamID: "TEAM1", AlertTitle: "New Message", AlertBody: "New Message", MutableContent: true,
	}
	for _, c := range configure {
		c(&opts)
	}
	backend, err := apns.New(opts, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	return mock, backend
}

// waitFor waits until cond holds. It bounds how long a test can hang,
// not how fast the server must be: tests that time something measure it
// themselves. A redelivery comes 2.5 to 5 s after its push, later on a
// loaded machine, hence 20 s.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 20 s")
		}
		time.Sleep(20 * time.Millisecond)
	}
}
