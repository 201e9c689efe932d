package webpush_test

import (
	"context"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/push-appserver/push-appserver/internal/push"
	"github.com/push-appserver/push-appserver/internal/push/webpush"
	"github.com/push-appserver/push-appserver/internal/testutil/netfreeze"
)

// TestHangingSiteLeavesRoom: a stranger registers subscriptions at many
// hosts of one wildcard domain (h0.evil.example.net, h1..., one server
// behind them) that take the connection and never answer, and pushes to
// each. Those pushes take at most the quiet origins' share of the bounds,
// so a push to a push service that answers, whether it answered before
// or is new to the app (every service, after a restart), still goes
// through within its deadline, where before the stranger's pushes held
// every push the app (or the process) could have under way and every
// other push was answered wait.
func TestHangingSiteLeavesRoom(t *testing.T) {
	const (
		maxPushes = 16
		hanging   = 24 // subdomains, a push to each
		deadline  = 5 * time.Second
	)
	for _, tc := range []struct {
		name string
		// healthy is the answering service's host; primed, it has
		// answered a push before the stranger's.
		healthy string
		primed  bool
		shared  int // the process's bound of all apps, none when 0
	}{
		{name: "answering service", healthy: "127.0.0.1", primed: true},
		{name: "service new to the app", healthy: "push.example.com"},
		{name: "answering service, process bound", healthy: "127.0.0.1", primed: true, shared: maxPushes / 2},
		{name: "service new to the app, process bound", healthy: "push.example.com", shared: maxPushes / 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			hang, accepted := netfreeze.SilentAccepting(t)
			mock, keyFile, pub := startMock(t)
			opts := webpush.Options{PushDeadline: deadline, MaxPushes: maxPushes, MaxPushesPerService: maxPushes / 2,
				Guard: webpush.Guard{AllowPrivate: true, Ports: []int{mock.Port, hang}}}
			if tc.shared > 0 {
				opts.Shared = webpush.NewSharedBound(tc.shared)
			}
			b := newBackend(t, mock, keyFile, opts)
			webpush.ResolveTo(b, ".example.com", "127.0.0.1")
			webpush.ResolveTo(b, ".example.net", "127.0.0.1")
			healthy, err := mock.SubscribeAt("https://"+tc.healthy+":"+strconv.Itoa(mock.Port), pub)
			if err != nil {
				t.Fatal(err)
			}
			send := func(token string) error {
				return b.Send(context.Background(), push.Notification{Node: "n", Token: token, Priority: push.PriorityHigh})
			}
			if tc.primed {
				if err := send(healthy.JSON); err != nil {
					t.Fatal(err)
				}
			}

			refused := make(chan error, hanging)
			for i := range hanging {
				sub, err := mock.SubscribeAt(fmt.Sprintf("https://h%d.evil.example.net:%d", i, hang), pub)
				if err != nil {
					t.Fatal(err)
				}
				go func() {
					start := time.Now()
					err := send(sub.JSON)
					if time.Since(start) < deadline/2 {
						refused <- err
					}
				}()
			}
			// Each push let through connects once, to a listener that
			// says nothing; each other one is refused at once.
			held, nRefused := 0, 0
			for timeout := time.After(10 * time.Second); held+nRefused < hanging; {
				select {
				case <-accepted:
					held++
				case err := <-refused:
					if !push.IsTemporary(err) {
						t.Fatalf("a push past the bounds: %v, want a temporary failure (wait)", err)
					}
					nRefused++
				case <-timeout:
					t.Fatalf("after 10 s, %d pushes to hanging hosts under way and %d refused, of %d", held, nRefused, hanging)
				}
			}
			if limit := maxPushes / 4; held > limit {
				t.Errorf("%d pushes to one site's hanging hosts under way, want at most the quiet share, %d", held, limit)
			}

			start := time.Now()
			err = send(healthy.JSON)
			took := time.Since(start)
			t.Logf("%d hanging pushes under way, %d refused; push to the answering service: %v in %v", held, nRefused, err, took.Round(time.Microsecond))
			if err != nil || took > deadline/2 {
				t.Fatalf("push to an answering service while one site's hosts hang: %v after %v, want it sent", err, took)
			}
		})
	}
}
