package appserver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/push-appserver/push-appserver/internal/push"
	"github.com/push-appserver/push-appserver/internal/push/apns"
	"github.com/push-appserver/push-appserver/internal/registry/memory"
	"github.com/push-appserver/push-appserver/internal/testutil/apnsmock"
	"github.com/push-appserver/push-appserver/internal/testutil/fakeclock"
)

// refusalRig is a service with one APNS app on token auth pushing to a
// mock, the service, the backend and the mock on one settable clock, and
// n registered devices.
type refusalRig struct {
	s     *Service
	m     *apnsmock.Server
	clock *fakeclock.Clock
	nodes []string
	regs  map[string]string // node to secret
}

func newRefusalRig(t *testing.T, n int) *refusalRig {
	t.Helper()
	// Now, not a fixed date: contexts get their deadlines from this
	// clock, and one far in the past would end every push at once.
	clock := fakeclock.New(time.Now())
	p8, pub, err := apnsmock.TokenKey()
	if err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(t.TempDir(), "key.p8")
	if err := os.WriteFile(keyFile, p8, 0o600); err != nil {
		t.Fatal(err)
	}
	m, err := apnsmock.New(apnsmock.Config{TokenKey: pub, KeyID: "K1", TeamID: "T1", Topic: "im.example.app", Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Close)
	b, err := apns.New(apns.Options{Topic: "im.example.app", Endpoint: m.URL, CAPath: m.CADir,
		TokenKeyFile: keyFile, KeyID: "K1", TeamID: "T1", Now: clock.Now}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	s, err := New(memory.New(), []App{{Name: "apns", Priority: push.PriorityHigh, Backend: b}},
		Options{Redelivery: 10 * time.Minute, Now: clock.Now}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	rig := &refusalRig{s: s, m: m, clock: clock, regs: map[string]string{}}
	for i := range n {
		node := fmt.Sprintf("n%d", i)
		reg, err := s.Register(context.Background(), Caller{}, "apns", node, fmt.Sprintf("%064x", i+1))
		if err != nil {
			t.Fatal(err)
		}
		rig.nodes = append(rig.nodes, node)
		rig.regs[node] = reg.Secret
	}
	return rig
}

// pushAll pushes once to every device and returns how many were
// answered as failed (wait).
func (rig *refusalRig) pushAll(t *testing.T) int {
	t.Helper()
	failed := 0
	for _, node := range rig.nodes {
		err := rig.s.Push(context.Background(), PushRequest{Node: node, Secret: rig.regs[node]})
		switch {
		case errors.Is(err, ErrPushFailed) && !errors.Is(err, ErrNotFound):
			failed++
		case err != nil:
			t.Fatalf("push to %s: %v, want success or a failure to try again (wait)", node, err)
		}
	}
	return failed
}

// step moves the clock on by d and does what the redelivery loop does
// at a tick, one attempt after another, so that what the mock sees does
// not hang on the scheduling of goroutines.
func (rig *refusalRig) step(d time.Duration) {
	rig.clock.Advance(d)
	r := rig.s.redeliver
	r.appsBack()
	for _, a := range r.dueBy(func(app string) int { return rig.s.gateQuota(app, redeliveryBatch) }) {
		a, ok := r.current(a)
		if !ok {
			continue
		}
		res, after := rig.s.redeliverOne(context.Background(), a)
		r.done(a, res, after)
	}
}

// signings counts the provider tokens the mock saw: each one the
// backend signed.
func (rig *refusalRig) signings() int {
	seen := map[string]bool{}
	for _, r := range rig.m.Requests() {
		seen[r.Bearer] = true
	}
	return len(seen)
}

// TestCredentialsRefusalCosts guards what a refusal of an APNS app's key
// costs the push service while n pushes wait: the first push refused
// closes the app's credentials gate, the others are answered wait and
// held without a request, and one push at a time tries the key at the
// redelivery's backoff, its provider token signed anew once (Apple takes
// one update in 20 minutes). Without the gate, each of the 200 pushes
// was tried again on its own: 6,618 requests and 3,310 provider tokens
// through the window. Once the key is taken again (by the next probe; at
// once after a reload; or a check that passed), every held push is
// delivered, each with one request.
func TestCredentialsRefusalCosts(t *testing.T) {
	const n = 200
	for _, tt := range []struct {
		name    string
		refused time.Duration // how long the key is refused
		// mend is what follows the key's fix (nil: no fix), and within
		// the steps of a second after it every held push is delivered.
		mend  func(*Service)
		steps int
	}{
		{name: "refused through the window", refused: 11 * time.Minute},
		// The next probe comes within the backoff's longest wait, a
		// minute; the held pushes at the next look.
		{name: "taken again after 5 minutes", refused: 5 * time.Minute, mend: func(*Service) {}, steps: 61},
		{name: "a reload after 5 minutes", refused: 5 * time.Minute, mend: func(s *Service) { s.CredentialsChanged("apns") }, steps: 2},
		{name: "a check passed after 5 minutes", refused: 5 * time.Minute, mend: func(s *Service) { s.CredentialsAccepted("apns") }, steps: 1},
	} {
		t.Run(tt.name, func(t *testing.T) {
			rig := newRefusalRig(t, n)
			rig.m.Revoke(true)
			if failed := rig.pushAll(t); failed != n {
				t.Fatalf("%d of %d pushes answered wait while the key is refused", failed, n)
			}
			live, liveSigned := rig.m.Total(), rig.signings()
			if s := rig.s.RedeliveryStats(); s.Kept != n {
				t.Fatalf("redelivery %+v, want every push kept", s)
			}
			for elapsed := time.Duration(0); elapsed < tt.refused; elapsed += time.Second {
				rig.step(time.Second)
			}
			during, signed := rig.m.Total(), rig.signings()
			t.Logf("%d pushes refused: %d requests and %d provider tokens as they came; then %d requests, and %d provider tokens in all, through %v of refusal",
				n, live, liveSigned, during-live, signed, tt.refused)
			// The first push and its one try with a token signed anew.
			if live != 2 || liveSigned != 2 {
				t.Errorf("%d pushes as they came: %d requests, %d provider tokens; want 2 and 2", n, live, liveSigned)
			}
			// A probe at most every 2.5, 5, 10, 20 s, then every 30 s
			// (the backoff's jitter halves a wait at most): 24 in 11
			// minutes, and no token signed anew within 20 minutes.
			if during-live > 25 || signed != 2 {
				t.Errorf("through %v of refusal: %d requests, %d provider tokens; want at most 25 and 2", tt.refused, during-live, signed)
			}
			if tt.mend == nil {
				if s := rig.s.RedeliveryStats(); s.Expired != n || s.Pending != 0 {
					t.Fatalf("redelivery %+v, want every push expired at the window's end", s)
				}
				return
			}
			rig.m.Revoke(false)
			tt.mend(rig.s)
			for range tt.steps {
				rig.step(time.Second)
			}
			s := rig.s.RedeliveryStats()
			t.Logf("then %d requests, %d accepted within %d s; redelivery %+v", rig.m.Total()-during, rig.m.Accepted(), tt.steps, s)
			if s.Delivered != n || rig.m.Accepted() != n || rig.m.Total()-during != n {
				t.Fatalf("%d s after the fix: redelivery %+v, %d requests, %d accepted; want all %d delivered, one request each",
					tt.steps, s, rig.m.Total()-during, rig.m.Accepted(), n)
			}
		})
	}
}
