package appserver_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/push-appserver/push-appserver/internal/appserver"
	"github.com/push-appserver/push-appserver/internal/push"
	"github.com/push-appserver/push-appserver/internal/push/webpush"
	"github.com/push-appserver/push-appserver/internal/registry"
	"github.com/push-appserver/push-appserver/internal/registry/memory"
	"github.com/push-appserver/push-appserver/internal/testutil/fakeclock"
	"github.com/push-appserver/push-appserver/internal/testutil/webpushmock"
)

// Registration is open: whoever knows a device's token can register it
// under many nodes and push through each, a push per node and window.
// The device gets rate_limit_per_token pushes a window from one source
// through them all, the others refused as the throttle refuses; other
// devices' pushes go on, and a tokenless push to the device from the
// same source counts with the rest.
func TestDeviceLimitManyNodes(t *testing.T) {
	ctx := context.Background()
	clk := fakeclock.New(time.Unix(1000, 0))
	b := &scripted{answers: map[string]error{}}
	svc, err := appserver.New(memory.New(), testApps(b),
		appserver.Options{RateLimit: 5 * time.Second, RateLimitPerToken: 4, Now: clk.Now}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	var nodes []registry.Registration
	for i := range 50 {
		r, err := svc.Register(ctx, appserver.Caller{}, "fcm", fmt.Sprint("n", i), "victim")
		if err != nil {
			t.Fatal(err)
		}
		nodes = append(nodes, r)
	}
	other, err := svc.Register(ctx, appserver.Caller{}, "fcm", "other", "other-token")
	if err != nil {
		t.Fatal(err)
	}
	pushAll := func() int {
		sent := 0
		for _, r := range nodes {
			switch err := svc.Push(ctx, appserver.PushRequest{Node: r.Node, Secret: r.Secret, Source: "203.0.113.7"}); {
			case err == nil:
				sent++
			case !errors.Is(err, appserver.ErrThrottled):
				t.Fatalf("push to %s: %v, want nil or ErrThrottled", r.Node, err)
			}
		}
		return sent
	}
	if n := pushAll(); n != 4 {
		t.Fatalf("a push to each of 50 nodes of one device from one source: %d sent, want rate_limit_per_token = 4", n)
	}
	if err := svc.Push(ctx, appserver.PushRequest{Node: other.Node, Secret: other.Secret, Source: "203.0.113.7"}); err != nil {
		t.Fatalf("another device's push while the first is at its limit: %v", err)
	}
	if err := svc.Push(ctx, appserver.PushRequest{Node: "victim", Tokenless: true, TokenApp: "fcm", Source: "203.0.113.7"}); !errors.Is(err, appserver.ErrThrottled) {
		t.Fatalf("a tokenless push to the device at its limit: %v, want ErrThrottled", err)
	}
	clk.Advance(6 * time.Second)
	if n := pushAll(); n != 4 {
		t.Fatalf("the next window: %d sent, want 4", n)
	}
	got := 0
	for _, n := range b.Sent() {
		if n.Token == "victim" {
			got++
		}
	}
	if got != 8 {
		t.Fatalf("the device got %d pushes in two windows, want 8", got)
	}
}

// APNS takes a token's hex digits in either case: the same device
// registered under nodes in other spellings is one device to the limit.
func TestDeviceLimitCaseVariants(t *testing.T) {
	ctx := context.Background()
	b, m := realAPNS(t, false)
	svc, err := appserver.New(memory.New(), []appserver.App{{Name: "ios", Priority: push.PriorityAuto, Backend: b}},
		appserver.Options{RateLimit: time.Hour, RateLimitPerToken: 2}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	device := strings.Repeat("ab", 32)
	variants := []string{device, strings.ToUpper(device), "A" + device[1:], "aB" + device[2:], "Ab" + device[2:]}
	sent := 0
	for i, tok := range variants {
		r, err := svc.Register(ctx, appserver.Caller{}, "ios", fmt.Sprint("n", i), tok)
		if err != nil {
			t.Fatal(err)
		}
		switch err := svc.Push(ctx, appserver.PushRequest{Node: r.Node, Secret: r.Secret}); {
		case err == nil:
			sent++
		case !errors.Is(err, appserver.ErrThrottled):
			t.Fatalf("%s: %v", tok, err)
		}
	}
	if sent != 2 || m.Total() != 2 {
		t.Fatalf("rate_limit_per_token = 2, yet %d pushes to one device, its token in other cases under %d nodes, were sent (%d requests at the mock)", sent, len(variants), m.Total())
	}
}

// A stranger who knows a device's token registers it under
// rate_limit_per_token nodes of their own (registration is open) and
// pushes through each over HTTP at the start of every window. Were the
// device's budget one for everyone, theirs would spend it, and the push
// from the user's own server, through the node its account registered,
// would be refused every window: a notification lost each time. Each
// source has a budget of its own: the stranger's address spends its
// own, still no more than rate_limit_per_token, and the user's server
// keeps its whole budget.
func TestDeviceLimitStrangerStarvesOwner(t *testing.T) {
	ctx := context.Background()
	clk := fakeclock.New(time.Unix(1000, 0))
	b := &scripted{answers: map[string]error{}}
	svc, err := appserver.New(memory.New(), testApps(b),
		appserver.Options{RateLimit: 5 * time.Second, RateLimitPerToken: appserver.DefaultRateLimitPerToken, Now: clk.Now}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	juliet := appserver.Caller{Account: appserver.Account{Bare: "juliet@example.org", Domain: "example.org"}}
	own, err := svc.Register(ctx, juliet, "fcm", "juliet-node", "victim")
	if err != nil {
		t.Fatal(err)
	}
	var stranger []registry.Registration
	for i := range appserver.DefaultRateLimitPerToken + 1 {
		r, err := svc.Register(ctx, appserver.Caller{}, "fcm", fmt.Sprint("s", i), "victim")
		if err != nil {
			t.Fatal(err)
		}
		stranger = append(stranger, r)
	}
	for w := range 3 {
		sent := 0
		for _, r := range stranger {
			if svc.Push(ctx, appserver.PushRequest{Node: r.Node, Secret: r.Secret, Source: "198.51.100.7"}) == nil {
				sent++
			}
		}
		if sent != appserver.DefaultRateLimitPerToken {
			t.Errorf("window %d: %d of a stranger's pushes through %d nodes of the device's token were sent, want rate_limit_per_token = %d", w, sent, len(stranger), appserver.DefaultRateLimitPerToken)
		}
		if err := svc.Push(ctx, appserver.PushRequest{Node: own.Node, Secret: own.Secret, Source: "example.org"}); err != nil {
			t.Errorf("window %d: the user's own server's push through its account's node: %v; a stranger's %d nodes of the token took the device's budget", w, err, len(stranger))
		}
		clk.Advance(6 * time.Second)
	}
}

// A WebPush device is its subscription's endpoint: the registration's
// token is the subscription's JSON, which a stranger who knows it can
// spell in endless ways (whitespace, key order, padded base64, the
// host's case, the default port). Registered under nodes each with its
// own spelling, the one device must still get rate_limit_per_token
// pushes a window from one source, as an APNS token in other cases does
// (TestDeviceLimitCaseVariants).
func TestDeviceLimitWebPushSpellings(t *testing.T) {
	ctx := context.Background()
	mock, keyFile, pub := webpushmock.Start(t)
	b, err := webpush.New(webpush.Options{VAPIDKeyFile: keyFile, VAPIDSubject: "mailto:ops@example.org", CAPath: mock.CADir,
		Guard: webpush.Guard{AllowPrivate: true, Ports: []int{mock.Port}}}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	svc, err := appserver.New(memory.New(), []appserver.App{{Name: "web", Priority: push.PriorityAuto, Backend: b}},
		appserver.Options{RateLimit: time.Hour, RateLimitPerToken: 2}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	sub, err := mock.Subscribe(pub)
	if err != nil {
		t.Fatal(err)
	}
	j := sub.JSON
	variants := []string{
		j,
		" " + j,
		j + " ",
		strings.Replace(j, `"endpoint":`, `"endpoint" : `, 1),
		strings.Replace(j, "https://", `https:\/\/`, 1), // JSON's escaped solidus
		strings.Replace(j, "/push/", "/%70ush/", 1),     // percent-encoded unreserved byte
	}
	sent := 0
	for i, tok := range variants {
		r, err := svc.Register(ctx, appserver.Caller{}, "web", fmt.Sprint("n", i), tok)
		if err != nil {
			t.Fatalf("register %q: %v", tok, err)
		}
		switch err := svc.Push(ctx, appserver.PushRequest{Node: r.Node, Secret: r.Secret, Source: "203.0.113.7"}); {
		case err == nil:
			sent++
		case !errors.Is(err, appserver.ErrThrottled):
			t.Fatalf("push %d: %v", i, err)
		}
	}
	if sent != 2 {
		t.Fatalf("rate_limit_per_token = 2, yet %d pushes to one WebPush subscription, its JSON spelled %d ways under as many nodes, were sent from one source (%d accepted at the mock)", sent, len(variants), mock.Accepted())
	}
}
