package registry_test

import (
	"testing"
	"time"

	"github.com/push-appserver/push-appserver/internal/registry"
)

// Renew renews a node registered with the same type: the device's token
// and what binds it to an account (domain, device key, owner, account)
// become the new registration's, Renewed its time, and the secret the
// user's server pushes with, the first registration's time and the push
// outcomes stay. A registration of another type replaces it whole, secret
// included.
func TestRenew(t *testing.T) {
	t0 := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	t1 := t0.Add(time.Hour)
	old := registry.Registration{
		Node: "n1", Type: "fcm", Token: "old-token", Secret: "old-secret",
		Registered: t0, LastSuccessfulPush: t0.Add(time.Minute), LastPushError: t0.Add(2 * time.Minute), LastErrorReason: "Unavailable",
		Domain: "old.example", DeviceKey: "old-key", Owner: "old-owner", Account: "old@old.example",
	}
	r := registry.Registration{
		Node: "n1", Type: "fcm", Token: "new-token", Secret: "new-secret", Registered: t1,
		Domain: "new.example", DeviceKey: "new-key", Owner: "new-owner", Account: "new@new.example",
	}

	got, err := registry.Renew(r)(old, true)
	if err != nil {
		t.Fatal(err)
	}
	want := old
	want.Token, want.Domain, want.DeviceKey, want.Owner, want.Account = r.Token, r.Domain, r.DeviceKey, r.Owner, r.Account
	want.Renewed = t1
	if got != want {
		t.Errorf("renewal stores\n%+v, want\n%+v", got, want)
	}

	other := r
	other.Type = "apns"
	if got, err := registry.Renew(other)(old, true); err != nil || got != other {
		t.Errorf("registration of another type stores %+v, %v; want %+v", got, err, other)
	}
	if got, err := registry.Renew(r)(registry.Registration{}, false); err != nil || got != r {
		t.Errorf("new registration stores %+v, %v; want %+v", got, err, r)
	}
}

// LastRegistered is the later of Registered and Renewed, and IdleSince
// holds only when that and the last successful push are both before the
// time given: a registration renewed or pushed to since is kept by a
// prune.
func TestLastRegisteredAndIdleSince(t *testing.T) {
	t0 := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	cut := t0.Add(24 * time.Hour)
	for _, tc := range []struct {
		name string
		r    registry.Registration
		last time.Time
		idle bool
	}{
		{"registered only", registry.Registration{Registered: t0}, t0, true},
		{"renewed since", registry.Registration{Registered: t0, Renewed: cut.Add(time.Second)}, cut.Add(time.Second), false},
		{"renewed before", registry.Registration{Registered: t0, Renewed: t0.Add(time.Hour)}, t0.Add(time.Hour), true},
		{"pushed to since", registry.Registration{Registered: t0, LastSuccessfulPush: cut.Add(time.Second)}, t0, false},
		{"failed since", registry.Registration{Registered: t0, LastPushError: cut.Add(time.Second)}, t0, true},
		{"registered since", registry.Registration{Registered: cut.Add(time.Second)}, cut.Add(time.Second), false},
	} {
		if got := tc.r.LastRegistered(); !got.Equal(tc.last) {
			t.Errorf("%s: LastRegistered = %v, want %v", tc.name, got, tc.last)
		}
		if got := tc.r.IdleSince(cut); got != tc.idle {
			t.Errorf("%s: IdleSince = %v, want %v", tc.name, got, tc.idle)
		}
	}
}

// Target carries what a push needs, the account a dialect sends back
// included.
func TestTarget(t *testing.T) {
	r := registry.Registration{Node: "n1", Type: "tigase", Token: "tok", Secret: "sec", Account: "alice@example.org"}
	want := registry.PushTarget{Type: "tigase", Token: "tok", Secret: "sec", Account: "alice@example.org"}
	if got := r.Target(); got != want {
		t.Errorf("Target = %+v, want %+v", got, want)
	}
}
