// Package storetest is the conformance suite every registry.Store passes:
// the same behaviour, from the same tests, whatever the storage.
package storetest

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/push-appserver/push-appserver/internal/admin"
	"github.com/push-appserver/push-appserver/internal/registry"
)

// Run runs the suite; open returns a new, empty store for each test.
func Run(t *testing.T, open func(t *testing.T) registry.Store) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s registry.Store)
	}{
		{"GetUnknown", testGetUnknown},
		{"RegisterNew", testRegisterNew},
		{"ReRegisterKeepsSecret", testReRegister},
		{"RegisterOtherTypeReplaces", testRegisterOtherType},
		{"DeviceKey", testDeviceKey},
		{"DeviceKeyConflict", testDeviceKeyConflict},
		{"ConcurrentDeviceRegistrations", testConcurrentDevice},
		{"DecideRefuses", testDecideRefuses},
		{"Owner", testOwner},
		{"CountDomain", testCountDomain},
		{"Delete", testDelete},
		{"DeleteReadKeepsChanged", testDeleteRead},
		{"DeleteTokenRenewedAfterGuard", testDeleteToken},
		{"DeleteIdle", testDeleteIdle},
		{"DeleteIdleAfter", testDeleteIdleAfter},
		{"PruneBeyondFirstWindow", testPruneBeyondFirstWindow},
		{"UpdatePushStatus", testUpdatePushStatus},
		{"PushStatusLatestWins", testPushStatusLatestWins},
		{"PushStatusLargeBatch", testPushStatusLargeBatch},
		{"PushStatusEndsWithRegistration", testPushStatusEnds},
		{"ConcurrentRegisterAndStatus", testConcurrentRegisterAndStatus},
		{"ConcurrentRegisterDistinct", testConcurrentDistinct},
		{"NodesAndCount", testNodesAndCount},
		{"CountMatching", testCountMatching},
		{"InstanceValue", testInstanceValue},
		{"PutKeepsEverything", testPut},
		{"PutReadKeepsChanged", testPutRead},
		{"PutImportedReadKeepsChanged", testPutImportedRead},
		{"List", testList},
		{"ListDomain", testListDomain},
		{"Account", testAccount},
		{"BlockedTokens", testBlockedTokens},
		{"TrimBlockedTokens", testTrimBlockedTokens},
		{"LongTokens", testLongTokens},
		{"PushTarget", testPushTarget},
		{"HeldPushes", testHeldPushes},
		{"MovedHeldPushes", testMovedHeldPushes},
		{"MoveKeepsLeaseLost", testMoveKeepsLeaseLost},
		{"ReturnHeldPushes", testReturnHeldPushes},
		{"LapsedLease", testLapsedLease},
		{"ImportedNodes", testImportedNodes},
		{"ImportedNodesPaged", testImportedNodesPaged},
		{"PutDeviceKeys", testPutDeviceKeys},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := open(t)
			tt.fn(t, s)
		})
	}
}

var ctx = context.Background()

// base is a time with sub-millisecond digits, to catch lossy storage.
var base = time.Date(2026, 3, 18, 3, 54, 24, 123456789, time.UTC)

func reg(node, typ, token, secret string, at time.Time) registry.Registration {
	return registry.Registration{Node: node, Type: typ, Token: token, Secret: secret, Registered: at}
}

func mustRegister(t *testing.T, s registry.Store, r registry.Registration) registry.Registration {
	t.Helper()
	got, err := s.Register(ctx, r.Node, registry.Renew(r))
	if err != nil {
		t.Fatalf("Register(%s): %v", r.Node, err)
	}
	return got
}

func sameTime(a, b time.Time) bool { return a.Sub(b).Abs() < time.Millisecond }

func testGetUnknown(t *testing.T, s registry.Store) {
	if _, err := s.Get(ctx, "nope"); !errors.Is(err, registry.ErrNotFound) {
		t.Fatalf("Get unknown = %v, want ErrNotFound", err)
	}
	if _, err := s.GetByDeviceKey(ctx, "nope"); !errors.Is(err, registry.ErrNotFound) {
		t.Fatalf("GetByDeviceKey unknown = %v", err)
	}
	if _, err := s.GetByDeviceKey(ctx, ""); !errors.Is(err, registry.ErrNotFound) {
		t.Fatalf("GetByDeviceKey empty = %v", err)
	}
}

func testRegisterNew(t *testing.T, s registry.Store) {
	in := reg("n1", "apns", "tok", "sec", base)
	in.Domain = "example.org"
	got := mustRegister(t, s, in)
	if got.Secret != "sec" || !got.Renewed.IsZero() {
		t.Fatalf("Register = %+v", got)
	}
	r, err := s.Get(ctx, "n1")
	if err != nil {
		t.Fatal(err)
	}
	if r.Node != "n1" || r.Type != "apns" || r.Token != "tok" || r.Secret != "sec" || r.Domain != "example.org" {
		t.Fatalf("Get = %+v", r)
	}
	if !sameTime(r.Registered, base) || r.Registered.Location() != time.UTC {
		t.Fatalf("Registered %v, want %v in UTC", r.Registered, base)
	}
	if !r.Renewed.IsZero() || !r.LastSuccessfulPush.IsZero() || !r.LastPushError.IsZero() {
		t.Fatalf("zero times not kept: %+v", r)
	}
}

func testReRegister(t *testing.T, s registry.Store) {
	mustRegister(t, s, reg("n1", "apns", "tok1", "sec1", base))
	later := base.Add(time.Hour)
	got := mustRegister(t, s, reg("n1", "apns", "tok2", "sec2", later))
	if got.Secret != "sec1" || got.Token != "tok2" || !sameTime(got.Registered, base) || !sameTime(got.Renewed, later) {
		t.Fatalf("re-register returned %+v", got)
	}
	r, _ := s.Get(ctx, "n1")
	if r.Secret != "sec1" || r.Token != "tok2" || !sameTime(r.Renewed, later) || !sameTime(r.Registered, base) {
		t.Fatalf("after re-register %+v", r)
	}
	if n, _ := s.Count(ctx); n != 1 {
		t.Fatalf("node not unique: %d registrations", n)
	}
}

func testRegisterOtherType(t *testing.T, s registry.Store) {
	mustRegister(t, s, reg("n1", "apns", "tok1", "sec1", base))
	got := mustRegister(t, s, reg("n1", "fcm", "tok2", "sec2", base.Add(time.Hour)))
	if got.Secret != "sec2" || got.Type != "fcm" || !got.Renewed.IsZero() {
		t.Fatalf("register under other type = %+v", got)
	}
	if n, _ := s.Count(ctx); n != 1 {
		t.Fatalf("%d registrations, want 1", n)
	}
}

func testDeviceKey(t *testing.T, s registry.Store) {
	a := reg("n1", "fcm", "tok", "sec", base)
	a.DeviceKey = "key1"
	mustRegister(t, s, a)
	mustRegister(t, s, reg("n2", "fcm", "tok", "sec", base)) // no key
	mustRegister(t, s, reg("n3", "fcm", "tok", "sec", base)) // no key: empty keys never collide
	r, err := s.GetByDeviceKey(ctx, "key1")
	if err != nil || r.Node != "n1" {
		t.Fatalf("GetByDeviceKey = %+v, %v", r, err)
	}
}

// A device key held by one node cannot be taken by another: the store
// refuses instead of silently dropping the first registration, whose node
// and secret someone may already have been given.
func testDeviceKeyConflict(t *testing.T, s registry.Store) {
	a := reg("n1", "fcm", "tok", "sec1", base)
	a.DeviceKey = "key1"
	mustRegister(t, s, a)
	b := reg("n2", "fcm", "tok2", "sec2", base)
	b.DeviceKey = "key1"
	_, err := s.Register(ctx, b.Node, registry.Renew(b))
	if !errors.Is(err, registry.ErrConflict) {
		t.Fatalf("second node with the same device key = %v, want ErrConflict", err)
	}
	// The error names no node: a registration that keeps meeting it is
	// logged with it as its err, above debug, where a node is shown only
	// as a reference (logging's redaction reads the key node, not the
	// text of an error).
	if strings.Contains(err.Error(), b.Node) {
		t.Errorf("the conflict's error names the node: %v", err)
	}
	if r, err := s.Get(ctx, "n1"); err != nil || r.Secret != "sec1" || r.DeviceKey != "key1" {
		t.Fatalf("first registration after the conflict: %+v %v", r, err)
	}
	if _, err := s.Get(ctx, "n2"); !errors.Is(err, registry.ErrNotFound) {
		t.Fatalf("refused registration stored: %v", err)
	}
	// The holder itself renews freely.
	a.Token = "tok3"
	if r, err := s.Register(ctx, "n1", registry.Renew(a)); err != nil || r.Token != "tok3" {
		t.Fatalf("renewing the holder: %+v %v", r, err)
	}
}

// Several registrations of one device at once (a client retrying, or
// several connections of one account) all get a node and secret that work:
// the losers of the race see ErrConflict, look again and renew the winner.
// This is what the core does for register-push-* commands.
func testConcurrentDevice(t *testing.T, s registry.Store) {
	const n = 8
	type pair struct{ node, secret string }
	answers := make(chan pair, n)
	// Every first attempt looks the device up before any of them writes:
	// the race, made certain.
	var looked sync.WaitGroup
	looked.Add(n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			for attempt := 0; ; attempt++ {
				node := fmt.Sprintf("node-%d", i)
				if old, err := s.GetByDeviceKey(ctx, "dev"); err == nil {
					node = old.Node
				}
				if attempt == 0 {
					looked.Done()
					looked.Wait()
				}
				r := reg(node, "fcm", fmt.Sprintf("tok-%d", i), fmt.Sprintf("sec-%d", i), base)
				r.DeviceKey = "dev"
				got, err := s.Register(ctx, node, registry.Renew(r))
				if errors.Is(err, registry.ErrConflict) && attempt < 5 {
					continue
				}
				if err != nil {
					t.Error(err)
					return
				}
				answers <- pair{got.Node, got.Secret}
				return
			}
		})
	}
	wg.Wait()
	close(answers)
	got := 0
	for a := range answers {
		got++
		r, err := s.Get(ctx, a.node)
		if err != nil || r.Secret != a.secret {
			t.Errorf("answered node %s / secret %s does not work: stored %+v, %v", a.node, a.secret, r, err)
		}
	}
	if got != n {
		t.Fatalf("%d of %d registrations answered", got, n)
	}
	if c, _ := s.Count(ctx); c != 1 {
		t.Fatalf("%d registrations for one device, want 1", c)
	}
}

func testDecideRefuses(t *testing.T, s registry.Store) {
	mustRegister(t, s, reg("n1", "apns", "tok1", "sec1", base))
	refuse := errors.New("refused")
	var saw registry.Registration
	_, err := s.Register(ctx, "n1", func(old registry.Registration, found bool) (registry.Registration, error) {
		saw = old
		if !found {
			t.Error("decide called with found = false for a registered node")
		}
		return registry.Registration{}, refuse
	})
	if !errors.Is(err, refuse) {
		t.Fatalf("Register = %v, want decide's error", err)
	}
	if saw.Secret != "sec1" || saw.Token != "tok1" {
		t.Fatalf("decide saw %+v", saw)
	}
	if r, _ := s.Get(ctx, "n1"); r.Token != "tok1" {
		t.Fatalf("refused registration changed the record: %+v", r)
	}
	if _, err := s.Register(ctx, "n2", func(registry.Registration, bool) (registry.Registration, error) {
		return reg("n3", "apns", "t", "s", base), nil
	}); err == nil {
		t.Fatal("decide returning another node was accepted")
	}
}

func testOwner(t *testing.T, s registry.Store) {
	a := reg("n1", "apns", "tok", "sec", base)
	a.Owner = "owner-hash"
	mustRegister(t, s, a)
	if r, err := s.Get(ctx, "n1"); err != nil || r.Owner != "owner-hash" {
		t.Fatalf("owner not stored: %+v %v", r, err)
	}
	if r, err := s.Delete(ctx, "n1", "apns"); err != nil || r.Owner != "owner-hash" {
		t.Fatalf("Delete returned %+v %v", r, err)
	}
}

func testCountDomain(t *testing.T, s registry.Store) {
	for i, d := range []string{"a.example", "a.example", "b.example", ""} {
		r := reg(fmt.Sprintf("n%d", i), "fcm", "t", "s", base)
		r.Domain = d
		mustRegister(t, s, r)
	}
	for _, c := range []struct {
		domain      string
		limit, want int
	}{
		{"a.example", 10, 2}, {"b.example", 10, 1}, {"c.example", 10, 0}, {"", 10, 0},
		{"a.example", 2, 2}, {"a.example", 1, 1}, {"a.example", 0, 0},
	} {
		if n, err := s.CountDomain(ctx, c.domain, c.limit); err != nil || n != c.want {
			t.Errorf("CountDomain(%q, %d) = %d, %v; want %d", c.domain, c.limit, n, err, c.want)
		}
	}
}

func testDelete(t *testing.T, s registry.Store) {
	mustRegister(t, s, reg("n1", "apns", "tok", "sec", base))
	if _, err := s.Delete(ctx, "n1", "fcm"); !errors.Is(err, registry.ErrNotFound) {
		t.Fatalf("Delete with wrong type = %v", err)
	}
	if _, err := s.Get(ctx, "n1"); err != nil {
		t.Fatalf("wrong-type delete removed it: %v", err)
	}
	r, err := s.Delete(ctx, "n1", "apns")
	if err != nil || r.Secret != "sec" {
		t.Fatalf("Delete = %+v, %v", r, err)
	}
	if _, err := s.Delete(ctx, "n1", "apns"); !errors.Is(err, registry.ErrNotFound) {
		t.Fatalf("second Delete = %v", err)
	}
}

// testDeleteRead: DeleteRead removes a registration only as it was
// read; one renewed, given a new token or secret, or replaced since
// stays.
func testDeleteRead(t *testing.T, s registry.Store) {
	if _, err := s.DeleteRead(ctx, reg("none", "apns", "tok", "sec", base)); !errors.Is(err, registry.ErrNotFound) {
		t.Fatalf("DeleteRead of a node without registration = %v", err)
	}
	// Each change made after the read, and what DeleteRead of the read
	// must then find.
	for _, c := range []struct {
		name   string
		change func(r registry.Registration) registry.Registration
	}{
		{"renewed", func(r registry.Registration) registry.Registration {
			return reg(r.Node, r.Type, r.Token, "ignored", base.Add(time.Minute))
		}},
		{"new token", func(r registry.Registration) registry.Registration {
			return reg(r.Node, r.Type, "tok2", "ignored", base.Add(time.Minute))
		}},
		{"new type", func(r registry.Registration) registry.Registration {
			return reg(r.Node, "fcm", r.Token, "sec2", base.Add(time.Minute))
		}},
	} {
		node := "n-" + strings.ReplaceAll(c.name, " ", "-")
		in := reg(node, "apns", "tok", "sec", base)
		in.Owner, in.DeviceKey = "owner-"+node, "key-"+node
		mustRegister(t, s, in)
		read, err := s.Get(ctx, node)
		if err != nil {
			t.Fatal(err)
		}
		mustRegister(t, s, c.change(read))
		if _, err := s.DeleteRead(ctx, read); !errors.Is(err, registry.ErrNotFound) {
			t.Errorf("%s: DeleteRead of the registration read before = %v, want ErrNotFound", c.name, err)
		}
		if _, err := s.Get(ctx, node); err != nil {
			t.Errorf("%s: the registration changed since the read is gone: %v", c.name, err)
		}
	}
	// Replaced with a new secret, the times as before.
	mustRegister(t, s, reg("n-secret", "apns", "tok", "sec", base))
	read, err := s.Get(ctx, "n-secret")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Register(ctx, "n-secret", func(old registry.Registration, _ bool) (registry.Registration, error) {
		old.Secret = "sec2"
		return old, nil
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.DeleteRead(ctx, read); !errors.Is(err, registry.ErrNotFound) {
		t.Errorf("new secret: DeleteRead of the registration read before = %v, want ErrNotFound", err)
	}

	// Unchanged: removed, whether as read or as registered (the time's
	// finest digits included).
	for i, renewed := range []bool{false, true} {
		node := fmt.Sprintf("n-same-%d", i)
		in := reg(node, "apns", "tok", "sec", base)
		in.Owner, in.DeviceKey = "owner", "key-"+node
		renewal := in
		renewal.Secret, renewal.Registered = "ignored", base.Add(time.Second+time.Nanosecond)
		got := mustRegister(t, s, in)
		if renewed {
			got = mustRegister(t, s, renewal)
		}
		read, err := s.Get(ctx, node)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range []registry.Registration{got, read} {
			if r.Renewed.IsZero() == renewed {
				t.Fatalf("renewed %v: %+v", renewed, r)
			}
		}
		r, err := s.DeleteRead(ctx, got)
		if err != nil || r.Secret != "sec" || r.Owner != "owner" {
			t.Fatalf("DeleteRead of the registration as registered = %+v, %v", r, err)
		}
		if _, err := s.Get(ctx, node); !errors.Is(err, registry.ErrNotFound) {
			t.Fatalf("after DeleteRead, Get = %v", err)
		}
		mustRegister(t, s, in)
		if renewed {
			mustRegister(t, s, renewal)
		}
		if read, err = s.Get(ctx, node); err != nil {
			t.Fatal(err)
		}
		if _, err := s.DeleteRead(ctx, read); err != nil {
			t.Fatalf("DeleteRead of the registration as read = %v", err)
		}
		if _, err := s.DeleteRead(ctx, read); !errors.Is(err, registry.ErrNotFound) {
			t.Fatalf("second DeleteRead = %v", err)
		}
	}
}

func testDeleteToken(t *testing.T, s registry.Store) {
	dead := base.Add(time.Hour)
	mustRegister(t, s, reg("old", "apns", "T", "s", base))                  // registered before: removed
	mustRegister(t, s, reg("new", "apns", "T", "s", dead.Add(time.Minute))) // registered after: kept
	mustRegister(t, s, reg("renewed", "apns", "R", "s", base))              // renewed after: kept
	mustRegister(t, s, reg("renewed", "apns", "T", "s", dead.Add(time.Second)))
	mustRegister(t, s, reg("other-type", "voip", "T", "s", base)) // other app: kept
	mustRegister(t, s, reg("other-token", "apns", "U", "s", base))
	removed, err := s.DeleteToken(ctx, "apns", "T", dead)
	if err != nil {
		t.Fatal(err)
	}
	if len(removed) != 1 || removed[0].Node != "old" {
		t.Fatalf("removed %+v, want only old", removed)
	}
	for _, n := range []string{"new", "renewed", "other-type", "other-token"} {
		if _, err := s.Get(ctx, n); err != nil {
			t.Errorf("%s removed: %v", n, err)
		}
	}
	if removed, _ := s.DeleteToken(ctx, "apns", "nope", dead); len(removed) != 0 {
		t.Fatalf("unknown token removed %+v", removed)
	}
}

func testDeleteIdle(t *testing.T, s registry.Store) {
	cutoff := base.Add(24 * time.Hour)
	mustRegister(t, s, reg("idle-1", "apns", "T1", "s", base))                     // idle
	mustRegister(t, s, reg("idle-2", "apns", "T2", "s", base))                     // idle
	mustRegister(t, s, reg("idle-voip", "voip", "T3", "s", base))                  // idle, another app
	mustRegister(t, s, reg("failing", "apns", "T4", "s", base))                    // idle: failed pushes are no sign
	mustRegister(t, s, reg("renewed", "apns", "T5", "s", base))                    // renewed since: kept
	mustRegister(t, s, reg("renewed", "apns", "T5", "s", cutoff.Add(time.Second))) //
	mustRegister(t, s, reg("pushed", "apns", "T6", "s", base))                     // pushed to since: kept
	mustRegister(t, s, reg("new", "apns", "T7", "s", cutoff.Add(time.Minute)))     // registered since: kept
	mustRegister(t, s, reg("pushed-before", "apns", "T8", "s", base))              // pushed to before only: idle
	if err := s.UpdatePushStatus(ctx, []registry.PushStatus{
		{Node: "failing", At: cutoff.Add(time.Hour), Reason: "refused"},
		{Node: "pushed", At: cutoff.Add(time.Hour), Success: true},
		{Node: "pushed-before", At: cutoff.Add(-time.Hour), Success: true},
	}); err != nil {
		t.Fatal(err)
	}
	removed, next, err := s.DeleteIdle(ctx, cutoff, "voip", "", 10)
	if err != nil || len(removed) != 1 || removed[0].Node != "idle-voip" || next != "" {
		t.Fatalf("DeleteIdle of voip = %+v, %q, %v; want idle-voip and the end", removed, next, err)
	}
	var gone []string
	for after := ""; ; {
		removed, next, err := s.DeleteIdle(ctx, cutoff, "", after, 2)
		if err != nil {
			t.Fatal(err)
		}
		if len(removed) > 2 {
			t.Fatalf("removed %d at a limit of 2", len(removed))
		}
		for _, r := range removed {
			gone = append(gone, r.Node)
		}
		if next == "" {
			break
		}
		after = next
	}
	slices.Sort(gone)
	if want := []string{"failing", "idle-1", "idle-2", "pushed-before"}; !slices.Equal(gone, want) {
		t.Fatalf("removed %v, want %v", gone, want)
	}
	for _, n := range []string{"renewed", "pushed", "new"} {
		if _, err := s.Get(ctx, n); err != nil {
			t.Errorf("%s removed: %v", n, err)
		}
	}
}

// A prune takes idle registrations a window at a time, each window the
// limit registrations, of any type, that follow the one before: every
// idle registration goes, however few and scattered among those in use,
// and no other, and no call looks at more than limit registrations
// (one that read on until it found limit idle ones read the whole of a
// registry with few idle, past any statement timeout).
func testDeleteIdleAfter(t *testing.T, s registry.Store) {
	cutoff := base.Add(24 * time.Hour)
	since := cutoff.Add(time.Hour)
	var rs []registry.Registration
	var idle []string
	for i := range 400 {
		r := reg(fmt.Sprintf("n%03d", i), "fcm", fmt.Sprint("T", i), "s", base)
		switch i % 20 {
		case 3:
			idle = append(idle, r.Node)
		case 13:
			r.LastPushError = since // idle: failed pushes are no sign
			idle = append(idle, r.Node)
		case 0, 4, 8, 12, 16:
			r.Renewed = since
		case 1, 5, 9, 17:
			r.LastSuccessfulPush = since
		default:
			r.Registered = since
		}
		rs = append(rs, r)
	}
	if _, err := s.Put(ctx, rs); err != nil {
		t.Fatal(err)
	}

	// Of another type only: the window is the registry's, not the type's,
	// so the call stops after limit registrations all the same.
	const limit = 7
	removed, next, err := s.DeleteIdle(ctx, cutoff, "voip", "", limit)
	if err != nil || len(removed) != 0 || next != rs[limit-1].Node {
		t.Fatalf("DeleteIdle of voip = %+v, %q, %v; want none and %s", removed, next, err, rs[limit-1].Node)
	}

	var gone []string
	after, calls := "", 0
	for {
		removed, next, err := s.DeleteIdle(ctx, cutoff, "", after, limit)
		if err != nil {
			t.Fatal(err)
		}
		calls++
		for _, r := range removed {
			if r.Node <= after || next != "" && r.Node > next {
				t.Fatalf("the window (%s, %s] removed %s", after, next, r.Node)
			}
			gone = append(gone, r.Node)
		}
		if next == "" {
			break
		}
		if next <= after {
			t.Fatalf("the window after %s ended at %s", after, next)
		}
		after = next
	}
	slices.Sort(gone)
	if !slices.Equal(gone, idle) {
		t.Fatalf("removed %v, want %v", gone, idle)
	}
	// Every window but the last is limit registrations long, so the
	// calls are as many as that takes, no more and no fewer.
	if want := len(rs)/limit + 1; calls != want {
		t.Fatalf("%d calls with windows of %d over %d registrations, want %d", calls, limit, len(rs), want)
	}
	left, err := s.List(ctx, "", 1000)
	if err != nil || len(left) != len(rs)-len(idle) {
		t.Fatalf("%d left, %v; want %d", len(left), err, len(rs)-len(idle))
	}

	// Registrations up to after are not looked at: a prune's window
	// leaves alone what the windows before it passed.
	if _, err := s.Put(ctx, []registry.Registration{reg("n100a", "fcm", "Ta", "s", base), reg("n300a", "fcm", "Tb", "s", base)}); err != nil {
		t.Fatal(err)
	}
	removed, next, err = s.DeleteIdle(ctx, cutoff, "", "n299", limit)
	if err != nil || len(removed) != 1 || removed[0].Node != "n300a" || next == "" {
		t.Fatalf("DeleteIdle after n299 = %+v, %q, %v; want n300a", removed, next, err)
	}
	if _, err := s.Get(ctx, "n100a"); err != nil {
		t.Fatalf("n100a, before n299, removed: %v", err)
	}
}

// The idle registrations of a registry can all lie beyond the windows
// of its first statements, behind thousands in use: a prune goes on
// through windows that removed nothing, with a type or without, and
// removes every one of them.
func testPruneBeyondFirstWindow(t *testing.T, s registry.Store) {
	cutoff := base.Add(24 * time.Hour)
	var rs []registry.Registration
	for i := range 5000 { // more than two of Prune's windows
		rs = append(rs, reg(fmt.Sprintf("a%04d", i), "fcm", fmt.Sprint("T", i), "s", cutoff.Add(time.Hour)))
	}
	var idle []string
	for i := range 30 {
		typ := "fcm"
		if i%3 == 0 {
			typ = "voip"
		}
		r := reg(fmt.Sprintf("b%02d", i), typ, fmt.Sprint("U", i), "s", base)
		rs, idle = append(rs, r), append(idle, r.Node)
	}
	if _, err := s.Put(ctx, rs); err != nil {
		t.Fatal(err)
	}
	n, err := admin.Prune(ctx, s, "voip", cutoff, nil)
	if err != nil || len(n) != 1 || n["voip"] != 10 {
		t.Fatalf("prune of voip = %v, %v; want 10 voip", n, err)
	}
	n, err = admin.Prune(ctx, s, "", cutoff, nil)
	if err != nil || len(n) != 1 || n["fcm"] != 20 {
		t.Fatalf("prune = %v, %v; want 20 fcm", n, err)
	}
	for _, node := range idle {
		if _, err := s.Get(ctx, node); !errors.Is(err, registry.ErrNotFound) {
			t.Errorf("%s, idle, left: %v", node, err)
		}
	}
	if left, err := s.Count(ctx); err != nil || left != 5000 {
		t.Fatalf("%d left, %v; want the 5000 in use", left, err)
	}
}

// CountMatching counts the registrations of a type, of a domain, or of
// both, "" matching any, as the store's own count (the administrator's
// registrations count -type and -domain).
func testCountMatching(t *testing.T, s registry.Store) {
	var rs []registry.Registration
	for _, r := range []struct{ node, typ, domain string }{
		{"a", "apns", "example.org"}, {"b", "apns", ""}, {"c", "fcm", "example.org"},
		{"d", "fcm", "other.org"}, {"e", "apns", "example.org"},
	} {
		reg := reg(r.node, r.typ, "tok-"+r.node, "s", base)
		reg.Domain = r.domain
		rs = append(rs, reg)
	}
	if _, err := s.Put(ctx, rs); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		typ, domain string
		want        int
	}{
		{"", "", 5}, {"apns", "", 3}, {"fcm", "", 2}, {"", "example.org", 3},
		{"apns", "example.org", 2}, {"fcm", "other.org", 1}, {"voip", "", 0}, {"", "nowhere", 0}, {"apns", "other.org", 0},
	} {
		if n, err := s.CountMatching(ctx, tt.typ, tt.domain); err != nil || n != tt.want {
			t.Errorf("CountMatching(%q, %q) = %d, %v; want %d", tt.typ, tt.domain, n, err, tt.want)
		}
	}
}

func testUpdatePushStatus(t *testing.T, s registry.Store) {
	mustRegister(t, s, reg("a", "apns", "tok", "sec", base))
	mustRegister(t, s, reg("b", "apns", "tok", "sec", base))
	t1, t2 := base.Add(time.Minute), base.Add(2*time.Minute)
	err := s.UpdatePushStatus(ctx, []registry.PushStatus{
		{Node: "a", At: t1, Success: true},
		{Node: "b", At: t2, Reason: "BadDeviceToken"},
		{Node: "gone", At: t2, Success: true},
	})
	if err != nil {
		t.Fatal(err)
	}
	a, _ := s.Get(ctx, "a")
	b, _ := s.Get(ctx, "b")
	if !sameTime(a.LastSuccessfulPush, t1) || !a.LastPushError.IsZero() {
		t.Fatalf("a = %+v", a)
	}
	if !sameTime(b.LastPushError, t2) || b.LastErrorReason != "BadDeviceToken" || !b.LastSuccessfulPush.IsZero() {
		t.Fatalf("b = %+v", b)
	}
	if _, err := s.Get(ctx, "gone"); !errors.Is(err, registry.ErrNotFound) {
		t.Fatalf("status created a registration: %v", err)
	}
	if err := s.UpdatePushStatus(ctx, nil); err != nil {
		t.Fatalf("empty batch: %v", err)
	}
}

// Push outcomes belong to one registration: they are handed back with it
// when it is deleted, and a node registered afresh (after a delete, for
// another app, or for the first time after a push to it arrived too late)
// starts with none.
func testPushStatusEnds(t *testing.T, s registry.Store) {
	t1, t2 := base.Add(time.Minute), base.Add(2*time.Minute)
	pushed := func(nodes ...string) {
		t.Helper()
		var batch []registry.PushStatus
		for _, n := range nodes {
			batch = append(batch, registry.PushStatus{Node: n, At: t1, Success: true}, registry.PushStatus{Node: n, At: t2, Reason: "Unregistered"})
		}
		if err := s.UpdatePushStatus(ctx, batch); err != nil {
			t.Fatal(err)
		}
	}
	hasStatus := func(what string, r registry.Registration, want bool) {
		t.Helper()
		got := sameTime(r.LastSuccessfulPush, t1) && sameTime(r.LastPushError, t2) && r.LastErrorReason == "Unregistered"
		none := r.LastSuccessfulPush.IsZero() && r.LastPushError.IsZero() && r.LastErrorReason == ""
		if want && !got || !want && !none {
			t.Fatalf("%s: success %v, error %v %q; want outcomes %v", what, r.LastSuccessfulPush, r.LastPushError, r.LastErrorReason, want)
		}
	}
	for _, n := range []string{"deleted", "by-token", "other-app", "renewed"} {
		mustRegister(t, s, reg(n, "apns", "tok-"+n, "sec", base))
	}
	pushed("deleted", "by-token", "other-app", "renewed", "too-late")

	r, err := s.Delete(ctx, "deleted", "apns")
	if err != nil {
		t.Fatal(err)
	}
	hasStatus("deleted registration", r, true)
	removed, err := s.DeleteToken(ctx, "apns", "tok-by-token", t2)
	if err != nil || len(removed) != 1 {
		t.Fatalf("DeleteToken = %+v, %v", removed, err)
	}
	hasStatus("registration deleted by token", removed[0], true)
	hasStatus("renewed", mustRegister(t, s, reg("renewed", "apns", "tok-2", "x", base.Add(time.Hour))), true)
	for _, r := range []registry.Registration{
		reg("deleted", "apns", "tok", "sec", base),
		reg("by-token", "apns", "tok", "sec", base),
		reg("other-app", "fcm", "tok", "sec", base),
		reg("too-late", "apns", "tok", "sec", base),
	} {
		mustRegister(t, s, r)
		got, err := s.Get(ctx, r.Node)
		if err != nil {
			t.Fatal(err)
		}
		hasStatus("registered afresh: "+r.Node, got, false)
	}
}

// A batch larger than a store writes in one statement still lands whole.
func testPushStatusLargeBatch(t *testing.T, s registry.Store) {
	const n = 700
	var batch []registry.PushStatus
	at := base.Add(time.Minute)
	for i := range n {
		node := fmt.Sprintf("large-%d", i)
		mustRegister(t, s, reg(node, "apns", "tok", "sec", base))
		batch = append(batch, registry.PushStatus{Node: node, At: at, Success: true})
		if i%2 == 0 {
			batch = append(batch, registry.PushStatus{Node: node, At: at, Reason: fmt.Sprintf("r%d", i)})
		}
	}
	if err := s.UpdatePushStatus(ctx, batch); err != nil {
		t.Fatal(err)
	}
	for i := range n {
		r, err := s.Get(ctx, fmt.Sprintf("large-%d", i))
		if err != nil {
			t.Fatal(err)
		}
		failed := i%2 == 0
		if !sameTime(r.LastSuccessfulPush, at) || failed != !r.LastPushError.IsZero() || failed && r.LastErrorReason != fmt.Sprintf("r%d", i) {
			t.Fatalf("registration %d of %d: %+v", i, n, r)
		}
	}
}

// Instances sharing a registry write their batches in any order: an older
// outcome written last must not replace a newer one.
func testPushStatusLatestWins(t *testing.T, s registry.Store) {
	mustRegister(t, s, reg("n", "apns", "tok", "sec", base))
	newer, older := base.Add(2*time.Minute), base.Add(time.Minute)
	for _, batch := range [][]registry.PushStatus{
		{{Node: "n", At: newer, Success: true}, {Node: "n", At: newer, Reason: "new"}},
		{{Node: "n", At: older, Success: true}, {Node: "n", At: older, Reason: "old"}},
	} {
		if err := s.UpdatePushStatus(ctx, batch); err != nil {
			t.Fatal(err)
		}
	}
	r, _ := s.Get(ctx, "n")
	if !sameTime(r.LastSuccessfulPush, newer) || !sameTime(r.LastPushError, newer) || r.LastErrorReason != "new" {
		t.Fatalf("after an older batch: success %v, error %v %q; want %v and \"new\"", r.LastSuccessfulPush, r.LastPushError, r.LastErrorReason, newer)
	}
}

// A push status written while the device re-registers must not bring back
// the old token.
func testConcurrentRegisterAndStatus(t *testing.T, s registry.Store) {
	mustRegister(t, s, reg("n", "apns", "tok-0", "sec", base))
	const rounds = 50
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := 1; i <= rounds; i++ {
			r := reg("n", "apns", fmt.Sprintf("tok-%d", i), "x", base.Add(time.Duration(i)*time.Second))
			if _, err := s.Register(ctx, r.Node, registry.Renew(r)); err != nil {
				t.Error(err)
			}
		}
	})
	for w := 0; w < 3; w++ {
		wg.Go(func() {
			for i := 0; i < rounds; i++ {
				if err := s.UpdatePushStatus(ctx, []registry.PushStatus{{Node: "n", At: base, Success: i%2 == 0, Reason: "r"}}); err != nil {
					t.Error(err)
				}
				if _, err := s.Get(ctx, "n"); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	r, _ := s.Get(ctx, "n")
	if r.Token != fmt.Sprintf("tok-%d", rounds) || r.Secret != "sec" {
		t.Fatalf("after the race token %q secret %q, want tok-%d and the first secret", r.Token, r.Secret, rounds)
	}
}

func testConcurrentDistinct(t *testing.T, s registry.Store) {
	const n = 100
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			r := reg(fmt.Sprintf("node-%03d", i), "fcm", "t", "s", base)
			if _, err := s.Register(ctx, r.Node, registry.Renew(r)); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if c, _ := s.Count(ctx); c != n {
		t.Fatalf("%d registrations, want %d", c, n)
	}
}

func testNodesAndCount(t *testing.T, s registry.Store) {
	for _, n := range []string{"c", "a", "b"} {
		mustRegister(t, s, reg(n, "fcm", "t", "s", base))
	}
	nodes, err := s.Nodes(ctx, 2)
	if err != nil || len(nodes) != 2 || nodes[0] != "a" || nodes[1] != "b" {
		t.Fatalf("Nodes(2) = %v, %v", nodes, err)
	}
	if c, err := s.Count(ctx); err != nil || c != 3 {
		t.Fatalf("Count = %d, %v", c, err)
	}
}

func testInstanceValue(t *testing.T, s registry.Store) {
	calls := 0
	var mu sync.Mutex
	gen := func() (string, error) {
		mu.Lock()
		defer mu.Unlock()
		calls++
		return fmt.Sprintf("value-%d", calls), nil
	}
	var wg sync.WaitGroup
	got := make([]string, 8)
	for i := range got {
		wg.Go(func() {
			v, err := s.InstanceValue(ctx, "salt", gen)
			if err != nil {
				t.Error(err)
			}
			got[i] = v
		})
	}
	wg.Wait()
	for _, v := range got {
		if v != got[0] {
			t.Fatalf("InstanceValue gave different values: %v", got)
		}
	}
	if calls != 1 {
		t.Fatalf("gen called %d times", calls)
	}
	if _, err := s.InstanceValue(ctx, "other", func() (string, error) { return "", errors.New("boom") }); err == nil {
		t.Fatal("gen error swallowed")
	}
}

func testAccount(t *testing.T, s registry.Store) {
	in := reg("n1", "siskin", "tok", "", base)
	in.Account = "juliet@example.org"
	mustRegister(t, s, in)
	got, err := s.Get(ctx, "n1")
	if err != nil || got.Account != "juliet@example.org" || got.Secret != "" {
		t.Fatalf("Get = %+v, %v; want the account kept and no secret", got, err)
	}
	in.Account, in.Token = "romeo@example.org", "tok2"
	in.Registered = base.Add(time.Hour)
	if got := mustRegister(t, s, in); got.Account != "romeo@example.org" || got.Token != "tok2" {
		t.Fatalf("renewal = %+v, want account and token replaced", got)
	}
}

func testBlockedTokens(t *testing.T, s registry.Store) {
	if _, err := s.GetBlockedToken(ctx, "apns", "tok"); !errors.Is(err, registry.ErrNotFound) {
		t.Fatalf("GetBlockedToken before blocking = %v, want ErrNotFound", err)
	}
	b := registry.BlockedToken{Type: "apns", Token: "tok", Since: base, Until: base.Add(time.Hour), Reason: "Unregistered"}
	if err := s.BlockToken(ctx, b); err != nil {
		t.Fatal(err)
	}
	got, err := s.GetBlockedToken(ctx, "apns", "tok")
	if err != nil || !sameTime(got.Since, b.Since) || !sameTime(got.Until, b.Until) || got.Reason != "Unregistered" {
		t.Fatalf("GetBlockedToken = %+v, %v; want %+v", got, err, b)
	}
	if _, err := s.GetBlockedToken(ctx, "fcm", "tok"); !errors.Is(err, registry.ErrNotFound) {
		t.Fatalf("the block of app apns holds for fcm: %v", err)
	}
	// A newer block replaces the older one; unblocking by the older
	// entry's end leaves the newer block in place.
	b2 := b
	b2.Until = base.Add(2 * time.Hour)
	if err := s.BlockToken(ctx, b2); err != nil {
		t.Fatal(err)
	}
	if err := s.UnblockToken(ctx, "apns", "tok", b.Until); err != nil {
		t.Fatal(err)
	}
	if got, err := s.GetBlockedToken(ctx, "apns", "tok"); err != nil || !sameTime(got.Until, b2.Until) {
		t.Fatalf("after a stale unblock = %+v, %v; want the newer block kept", got, err)
	}
	if err := s.UnblockToken(ctx, "apns", "tok", b2.Until); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetBlockedToken(ctx, "apns", "tok"); !errors.Is(err, registry.ErrNotFound) {
		t.Fatalf("after unblocking = %v, want ErrNotFound", err)
	}
	if err := s.UnblockToken(ctx, "apns", "never", base); err != nil {
		t.Fatalf("unblocking an unknown token: %v", err)
	}

	// Purging removes the blocks that ended, and only those.
	for i, until := range []time.Time{base.Add(-time.Hour), base.Add(time.Hour)} {
		if err := s.BlockToken(ctx, registry.BlockedToken{Type: "fcm", Token: fmt.Sprint("t", i), Since: base, Until: until}); err != nil {
			t.Fatal(err)
		}
	}
	if n, err := s.PurgeBlockedTokens(ctx, base); err != nil || n != 1 {
		t.Fatalf("PurgeBlockedTokens = %d, %v; want 1", n, err)
	}
	if _, err := s.GetBlockedToken(ctx, "fcm", "t0"); !errors.Is(err, registry.ErrNotFound) {
		t.Fatalf("an ended block survived the purge: %v", err)
	}
	if _, err := s.GetBlockedToken(ctx, "fcm", "t1"); err != nil {
		t.Fatalf("a live block was purged: %v", err)
	}
}

// testTrimBlockedTokens guards the block list's cap: trimming keeps the
// blocks that end latest, drops those ending soonest (ties in type and
// token order), and leaves a list within the cap alone.
func testTrimBlockedTokens(t *testing.T, s registry.Store) {
	block := func(typ, token string, until time.Time) {
		t.Helper()
		if err := s.BlockToken(ctx, registry.BlockedToken{Type: typ, Token: token, Since: base, Until: until}); err != nil {
			t.Fatal(err)
		}
	}
	// Written out of order, so that only their ends order them.
	block("fcm", "late", base.Add(3*time.Hour))
	block("apns", "soon", base.Add(time.Hour))
	block("fcm", "tie-b", base.Add(2*time.Hour))
	block("apns", "tie-z", base.Add(2*time.Hour))
	block("fcm", "tie-a", base.Add(2*time.Hour))
	if n, err := s.TrimBlockedTokens(ctx, 5); err != nil || n != 0 {
		t.Fatalf("TrimBlockedTokens(5) of 5 = %d, %v; want 0", n, err)
	}
	if n, err := s.TrimBlockedTokens(ctx, 2); err != nil || n != 3 {
		t.Fatalf("TrimBlockedTokens(2) of 5 = %d, %v; want 3", n, err)
	}
	for _, tt := range []struct {
		typ, token string
		kept       bool
	}{
		{"apns", "soon", false},
		{"apns", "tie-z", false},
		{"fcm", "tie-a", false},
		{"fcm", "tie-b", true},
		{"fcm", "late", true},
	} {
		_, err := s.GetBlockedToken(ctx, tt.typ, tt.token)
		if kept := err == nil; kept != tt.kept || (err != nil && !errors.Is(err, registry.ErrNotFound)) {
			t.Errorf("%s %s: kept = %v (%v), want %v", tt.typ, tt.token, kept, err, tt.kept)
		}
	}
}

func testPut(t *testing.T, s registry.Store) {
	mustRegister(t, s, reg("n1", "fcm", "old-token", "old-secret", base))
	want := []registry.Registration{{
		Node: "n1", Type: "apns", Token: "t1", Secret: "s1",
		Registered: base, Renewed: base.Add(time.Hour),
		LastSuccessfulPush: base.Add(2 * time.Hour), LastPushError: base.Add(3 * time.Hour), LastErrorReason: "Unregistered",
		Owner: "owner-hash", Account: "alice@example.org",
	}, {Node: "n2", Type: "fcm", Token: "t2", Secret: "s2", Registered: base}}
	// Put says how many of its registrations were new: n1 replaced one.
	if added, err := s.Put(ctx, want); err != nil || added != 1 {
		t.Fatalf("Put of n1 (registered) and n2 (new) = %d added, %v; want 1", added, err)
	}
	for _, w := range want {
		got, err := s.Get(ctx, w.Node)
		if err != nil {
			t.Fatal(err)
		}
		if got.Type != w.Type || got.Token != w.Token || got.Secret != w.Secret || got.LastErrorReason != w.LastErrorReason || got.Owner != w.Owner || got.Account != w.Account ||
			!sameTime(got.Registered, w.Registered) || !sameTime(got.Renewed, w.Renewed) ||
			!sameTime(got.LastSuccessfulPush, w.LastSuccessfulPush) || !sameTime(got.LastPushError, w.LastPushError) {
			t.Fatalf("Put then Get: got %+v, want %+v", got, w)
		}
	}
	if n, _ := s.Count(ctx); n != 2 {
		t.Fatalf("count %d after Put, want 2", n)
	}
	// Putting the same again changes nothing.
	if added, err := s.Put(ctx, want); err != nil || added != 0 {
		t.Fatalf("Put again = %d added, %v; want 0", added, err)
	}
	if n, _ := s.Count(ctx); n != 2 {
		t.Fatalf("count %d after a second Put, want 2", n)
	}
	// A registration put without outcomes replaces one with them.
	if _, err := s.Put(ctx, want[1:2]); err != nil {
		t.Fatal(err)
	}
	bare := want[0]
	bare.LastSuccessfulPush, bare.LastPushError, bare.LastErrorReason = time.Time{}, time.Time{}, ""
	if _, err := s.Put(ctx, []registry.Registration{bare}); err != nil {
		t.Fatal(err)
	}
	if got, err := s.Get(ctx, "n1"); err != nil || !got.LastSuccessfulPush.IsZero() || !got.LastPushError.IsZero() || got.LastErrorReason != "" {
		t.Fatalf("after a Put without outcomes: %+v, %v", got, err)
	}
	// A registration whose device key another node holds is refused, and
	// the other node stays: its user's server pushes with it.
	device := registry.Registration{Node: "n3", Type: "fcm", Token: "t3", Secret: "s3", Registered: base, DeviceKey: "device-1", Owner: "o"}
	if added, err := s.Put(ctx, []registry.Registration{device}); err != nil || added != 1 {
		t.Fatalf("Put of a new node with a device key = %d added, %v; want 1", added, err)
	}
	// Its device key let go and taken again in the same Put, it is
	// still replaced, not new.
	device.Token = "t3-again"
	if added, err := s.Put(ctx, []registry.Registration{device}); err != nil || added != 0 {
		t.Fatalf("Put of it again = %d added, %v; want 0", added, err)
	}
	moved := device
	moved.Node, moved.Secret = "n4", "s4"
	if _, err := s.Put(ctx, []registry.Registration{want[1], moved}); err == nil {
		t.Error("Put took a device key another node holds")
	}
	if got, err := s.Get(ctx, "n3"); err != nil || got.Secret != "s3" {
		t.Errorf("the node holding the device key after a Put of another: %+v, %v", got, err)
	}
	if _, err := s.Get(ctx, "n4"); !errors.Is(err, registry.ErrNotFound) {
		t.Errorf("the refused Put wrote its node: %v", err)
	}
}

func testList(t *testing.T, s registry.Store) {
	for _, n := range []string{"c", "a", "d", "b"} {
		mustRegister(t, s, reg(n, "apns", "tok-"+n, "secret-"+n, base))
	}
	var got []string
	after := ""
	for {
		page, err := s.List(ctx, after, 3)
		if err != nil {
			t.Fatal(err)
		}
		if len(page) == 0 {
			break
		}
		for _, r := range page {
			if r.Token != "tok-"+r.Node || r.Secret != "secret-"+r.Node {
				t.Fatalf("listed %+v", r)
			}
			got = append(got, r.Node)
		}
		after = page[len(page)-1].Node
	}
	if fmt.Sprint(got) != "[a b c d]" {
		t.Fatalf("listed %v, want [a b c d]", got)
	}
	mustRegister(t, s, reg("e", "fcm", "tok-e", "secret-e", base))
	byType, err := s.CountByType(ctx)
	if err != nil || fmt.Sprint(byType) != "map[apns:4 fcm:1]" {
		t.Fatalf("CountByType: %v %v", byType, err)
	}
}

// ListDomain pages through one domain's registrations in node order,
// whole, from any node on (one of another domain too), and lists none
// for the empty domain of registrations made without an account: the
// administrator's registrations list -domain.
func testListDomain(t *testing.T, s registry.Store) {
	var rs []registry.Registration
	for _, r := range []struct{ node, domain string }{
		{"e", "example.org"}, {"a", "example.org"}, {"b", ""}, {"f", "other.org"},
		{"c", "example.org"}, {"g", "example.org"}, {"d", "other.org"}, {"h", ""},
	} {
		reg := reg(r.node, "apns", "tok-"+r.node, "secret-"+r.node, base)
		reg.Domain = r.domain
		rs = append(rs, reg)
	}
	if _, err := s.Put(ctx, rs); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		domain, after string
		want          string
	}{
		{"example.org", "", "[a c e g]"},
		{"example.org", "b", "[c e g]"},
		{"example.org", "d", "[e g]"},
		{"example.org", "g", "[]"},
		{"other.org", "", "[d f]"},
		{"", "", "[]"},
		{"nowhere.org", "", "[]"},
	} {
		var got []string
		for after := tt.after; ; {
			page, err := s.ListDomain(ctx, tt.domain, after, 2)
			if err != nil {
				t.Fatal(err)
			}
			if len(page) > 2 {
				t.Fatalf("ListDomain(%q, %q, 2): a page of %d", tt.domain, after, len(page))
			}
			if len(page) == 0 {
				break
			}
			for _, r := range page {
				if r.Domain != tt.domain || r.Token != "tok-"+r.Node || r.Secret != "secret-"+r.Node {
					t.Fatalf("ListDomain(%q) listed %+v", tt.domain, r)
				}
				got = append(got, r.Node)
			}
			after = page[len(page)-1].Node
		}
		if fmt.Sprint(got) != tt.want {
			t.Errorf("ListDomain(%q) after %q: %v, want %s", tt.domain, tt.after, got, tt.want)
		}
	}
}

// Tokens as long as the API takes (4096 bytes) are stored, found for
// dead-token removal and blocked like short ones.
func testLongTokens(t *testing.T, s registry.Store) {
	ctx := context.Background()
	now := time.Now().UTC()
	// Hex of no pattern: PostgreSQL compresses index entries, and a
	// repetitive token would fit one.
	var hexes strings.Builder
	for i := 0; hexes.Len() < 4096; i++ {
		sum := sha256.Sum256([]byte(fmt.Sprint(i)))
		hexes.WriteString(hex.EncodeToString(sum[:]))
	}
	long := hexes.String()[:4096]
	other := long[:4095] + "x" // differs in the last byte only
	mustRegister(t, s, reg("long", "apns", long, "s", now.Add(-time.Hour)))
	mustRegister(t, s, reg("other", "apns", other, "s", now.Add(-time.Hour)))
	if r, err := s.Get(ctx, "long"); err != nil || r.Token != long {
		t.Fatalf("Get = %d-byte token, %v", len(r.Token), err)
	}
	removed, err := s.DeleteToken(ctx, "apns", long, now)
	if err != nil || len(removed) != 1 || removed[0].Node != "long" {
		t.Fatalf("DeleteToken = %d removed, %v", len(removed), err)
	}
	if _, err := s.Get(ctx, "other"); err != nil {
		t.Fatalf("a token differing in its last byte was removed too: %v", err)
	}
	b := registry.BlockedToken{Type: "apns", Token: long, Since: now, Until: now.Add(time.Hour), Reason: "Unregistered"}
	if err := s.BlockToken(ctx, b); err != nil {
		t.Fatal(err)
	}
	got, err := s.GetBlockedToken(ctx, "apns", long)
	if err != nil || got.Token != long || got.Reason != "Unregistered" {
		t.Fatalf("GetBlockedToken = %q, %v", got.Reason, err)
	}
	if _, err := s.GetBlockedToken(ctx, "apns", other); !errors.Is(err, registry.ErrNotFound) {
		t.Fatalf("another long token is blocked: %v", err)
	}
	if err := s.UnblockToken(ctx, "apns", long, now.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetBlockedToken(ctx, "apns", long); !errors.Is(err, registry.ErrNotFound) {
		t.Fatalf("after UnblockToken: %v", err)
	}
}

// testPushTarget: a store that reads what a push needs on its own
// (appserver's pushReader) reads what Get does, after every change.
func testPushTarget(t *testing.T, s registry.Store) {
	p, ok := s.(interface {
		GetPushTarget(ctx context.Context, node string) (registry.PushTarget, error)
	})
	if !ok {
		return // the push path reads Get's
	}
	check := func(node string) {
		t.Helper()
		r, err := s.Get(ctx, node)
		if err != nil {
			t.Fatal(err)
		}
		got, err := p.GetPushTarget(ctx, node)
		if err != nil || got != r.Target() {
			t.Fatalf("GetPushTarget(%s) = %+v, %v; Get has %+v", node, got, err, r.Target())
		}
	}
	r := reg("n1", "apns", "tok", "sec", base)
	r.Account, r.Domain, r.Owner = "user@example.org", "example.org", "owner"
	mustRegister(t, s, r)
	check("n1")
	r.Token, r.Registered = "tok2", base.Add(time.Minute)
	mustRegister(t, s, r)
	check("n1")
	if _, err := s.Delete(ctx, "n1", "apns"); err != nil {
		t.Fatal(err)
	}
	for _, node := range []string{"n1", "never"} {
		if _, err := p.GetPushTarget(ctx, node); !errors.Is(err, registry.ErrNotFound) {
			t.Fatalf("GetPushTarget(%s) = %v, want ErrNotFound", node, err)
		}
	}
}

// testHeldPushes: pushes kept by a server that released them (at its
// stop) are taken by the next, oldest first, each once, as the server
// last wrote them.
func testHeldPushes(t *testing.T, s registry.Store) {
	if got, err := s.TakeHeldPushes(ctx, 10); err != nil || len(got) != 0 {
		t.Fatalf("empty: %v, %v", got, err)
	}
	held := []registry.HeldPush{
		{Device: "b", FailedAt: base.Add(2 * time.Second), Push: []byte(`{"node":"b"}`)},
		{Device: "a", FailedAt: base, Push: []byte(`{"node":"a"}`)},
		{Device: "c", FailedAt: base.Add(time.Second), Push: []byte{0, 1, 2, 0xff}},
	}
	if err := s.KeepPushes(ctx, "s1", time.Hour, false, held, nil); err != nil {
		t.Fatal(err)
	}
	// A device's push replaced, another's gone, a third's kept again
	// unchanged, one never kept removed: all in one write.
	held[0].Push = []byte(`{"node":"b","priority":"high"}`)
	if err := s.KeepPushes(ctx, "s1", time.Hour, true, []registry.HeldPush{held[0], held[2]}, []string{"a", "never"}); err != nil {
		t.Fatal(err)
	}
	if got, err := s.TakeHeldPushes(ctx, 10); err != nil || len(got) != 0 {
		t.Fatalf("taken under a live lease: %v, %v", got, err)
	}
	// Another server's pushes to the same devices are its own.
	other := registry.HeldPush{Device: "a", FailedAt: base.Add(-time.Second), Push: []byte(`{"node":"a","other":true}`)}
	if err := s.KeepPushes(ctx, "s2", time.Hour, false, []registry.HeldPush{other}, nil); err != nil {
		t.Fatal(err)
	}
	if err := s.ReleasePushes(ctx, "s1"); err != nil {
		t.Fatal(err)
	}
	first, err := s.TakeHeldPushes(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	rest, err := s.TakeHeldPushes(ctx, 10)
	if err != nil {
		t.Fatal(err)
	}
	got := append(first, rest...)
	want := []registry.HeldPush{held[2], held[0]}
	if len(first) != 1 || len(got) != 2 {
		t.Fatalf("took %d, then %d: %+v", len(first), len(rest), got)
	}
	for i := range want {
		if !sameTime(got[i].FailedAt, want[i].FailedAt) || string(got[i].Push) != string(want[i].Push) {
			t.Fatalf("held push %d: %+v, want %+v", i, got[i], want[i])
		}
	}
	if again, err := s.TakeHeldPushes(ctx, 10); err != nil || len(again) != 0 {
		t.Fatalf("taken twice, or s2's taken under its lease: %v, %v", again, err)
	}
	if err := s.KeepPushes(ctx, "s1", time.Hour, true, nil, nil); !errors.Is(err, registry.ErrLeaseLost) {
		t.Fatalf("renewing a released lease: %v, want ErrLeaseLost", err)
	}
	if err := s.ReleasePushes(ctx, "s2"); err != nil {
		t.Fatal(err)
	}
	if got, err := s.TakeHeldPushes(ctx, 10); err != nil || len(got) != 1 || string(got[0].Push) != string(other.Push) {
		t.Fatalf("s2's push after its release: %v, %v", got, err)
	}
}

// testLapsedLease: the pushes of a server that stopped renewing its lease
// (one that died) are anyone's once it has run out, and that server
// learns it lost them.
func testLapsedLease(t *testing.T, s registry.Store) {
	const lease = 300 * time.Millisecond
	kept := []registry.HeldPush{{Device: "a", FailedAt: base, Push: []byte("a")}}
	if err := s.KeepPushes(ctx, "dies", lease, false, kept, nil); err != nil {
		t.Fatal(err)
	}
	if err := s.KeepPushes(ctx, "lives", lease, false, []registry.HeldPush{{Device: "b", FailedAt: base, Push: []byte("b")}}, nil); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		time.Sleep(lease / 2)
		if err := s.KeepPushes(ctx, "lives", lease, true, nil, nil); err != nil {
			t.Fatalf("renewing a live lease: %v", err)
		}
	}
	got, err := s.TakeHeldPushes(ctx, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || string(got[0].Push) != "a" {
		t.Fatalf("after the lease ran out took %+v, want the push of the server that stopped renewing only", got)
	}
	if err := s.KeepPushes(ctx, "dies", lease, true, kept, nil); !errors.Is(err, registry.ErrLeaseLost) {
		t.Fatalf("renewing a lease that ran out and was taken: %v, want ErrLeaseLost", err)
	}
	// Nothing was written: there is nothing to take.
	if got, err := s.TakeHeldPushes(ctx, 10); err != nil || len(got) != 0 {
		t.Fatalf("after a lost renewal: %+v, %v", got, err)
	}
	// Starting a new lease is allowed.
	if err := s.KeepPushes(ctx, "dies", lease, false, kept, nil); err != nil {
		t.Fatal(err)
	}
	if got, err := s.TakeHeldPushes(ctx, 10); err != nil || len(got) != 0 {
		t.Fatalf("under the new lease: %+v, %v", got, err)
	}
}

// testMovedHeldPushes: a store that moves held pushes to their taker
// (registry.HeldMover) keeps them under the taker's lease until the
// taker's write deletes them, and gives them to the others if the taker
// dies first.
func testMovedHeldPushes(t *testing.T, s registry.Store) {
	m, ok := s.(registry.HeldMover)
	if !ok {
		t.Fatal("not a HeldMover: the server would take held pushes without moving them")
	}
	const lease = 300 * time.Millisecond
	if err := s.KeepPushes(ctx, "stopped", time.Hour, false, []registry.HeldPush{
		{Device: "a", FailedAt: base, Push: []byte("a")}, {Device: "b", FailedAt: base.Add(time.Second), Push: []byte("b")}}, nil); err != nil {
		t.Fatal(err)
	}
	if err := s.ReleasePushes(ctx, "stopped"); err != nil {
		t.Fatal(err)
	}
	got, err := m.MoveHeldPushes(ctx, "taker", lease, false, 1)
	if err != nil || len(got) != 1 || string(got[0].Push) != "a" || got[0].Device == "" {
		t.Fatalf("moved %+v, %v", got, err)
	}
	// The taker holds a lease now, and the push under it.
	if err := s.KeepPushes(ctx, "taker", lease, true, nil, nil); err != nil {
		t.Fatalf("renewing the lease the move started: %v", err)
	}
	if other, err := s.TakeHeldPushes(ctx, 10); err != nil || len(other) != 1 || string(other[0].Push) != "b" {
		t.Fatalf("another took %+v, %v; want the push not moved only", other, err)
	}
	// The taker dies before its write: the moved push goes to the others.
	time.Sleep(2 * lease)
	if again, err := s.TakeHeldPushes(ctx, 10); err != nil || len(again) != 1 || string(again[0].Push) != "a" {
		t.Fatalf("after the taker died: %+v, %v", again, err)
	}
	// A taker that lives deletes what it moved in its next write.
	if err := s.KeepPushes(ctx, "stopped", time.Hour, false, []registry.HeldPush{{Device: "a", FailedAt: base, Push: []byte("a")}}, nil); err != nil {
		t.Fatal(err)
	}
	if err := s.ReleasePushes(ctx, "stopped"); err != nil {
		t.Fatal(err)
	}
	got, err = m.MoveHeldPushes(ctx, "lives", time.Hour, false, 10)
	if err != nil || len(got) != 1 {
		t.Fatalf("moved %+v, %v", got, err)
	}
	if err := s.KeepPushes(ctx, "lives", time.Hour, true, []registry.HeldPush{{Device: "merged", FailedAt: base, Push: []byte("m")}}, []string{got[0].Device}); err != nil {
		t.Fatal(err)
	}
	if err := s.ReleasePushes(ctx, "lives"); err != nil {
		t.Fatal(err)
	}
	if left, err := s.TakeHeldPushes(ctx, 10); err != nil || len(left) != 1 || string(left[0].Push) != "m" {
		t.Fatalf("after the taker's write and release: %+v, %v; want its push only", left, err)
	}
}

// testMoveKeepsLeaseLost: an owner whose lease ran out, and whose pushes
// another server took, must learn it at its next renewal (ErrLeaseLost,
// so that it stops sending them), even when it moved held pushes in
// between: the move must not hand it a fresh lease that hides the loss.
func testMoveKeepsLeaseLost(t *testing.T, s registry.Store) {
	m, ok := s.(registry.HeldMover)
	if !ok {
		t.Fatal("not a HeldMover: the server would take held pushes without moving them")
	}
	const lease = 200 * time.Millisecond
	if err := s.KeepPushes(ctx, "x", lease, false, []registry.HeldPush{{Device: "a", FailedAt: base, Push: []byte("a")}}, nil); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * lease) // x is slow: its lease runs out
	if took, err := s.TakeHeldPushes(ctx, 10); err != nil || len(took) != 1 {
		t.Fatalf("another server took %+v, %v", took, err)
	}
	if _, err := m.MoveHeldPushes(ctx, "x", time.Hour, true, 10); !errors.Is(err, registry.ErrLeaseLost) {
		t.Fatalf("move renewing a lease that ran out: %v, want ErrLeaseLost", err)
	}
	if err := s.KeepPushes(ctx, "x", time.Hour, true, nil, nil); !errors.Is(err, registry.ErrLeaseLost) {
		t.Fatalf("renewal after the lease was lost and a move: %v, want ErrLeaseLost (x still sends the push another server took)", err)
	}
}

// testReturnHeldPushes: pushes moved to a taker that has no room for them
// go back to whoever takes held pushes; the others stay the taker's.
func testReturnHeldPushes(t *testing.T, s registry.Store) {
	m, ok := s.(registry.HeldMover)
	if !ok {
		t.Fatal("not a HeldMover: the server would take held pushes without moving them")
	}
	put := []registry.HeldPush{{Device: "a", FailedAt: base, Push: []byte("a")}, {Device: "b", FailedAt: base.Add(time.Second), Push: []byte("b")}}
	if err := s.KeepPushes(ctx, "gone", time.Hour, false, put, nil); err != nil {
		t.Fatal(err)
	}
	if err := s.ReleasePushes(ctx, "gone"); err != nil {
		t.Fatal(err)
	}
	moved, err := m.MoveHeldPushes(ctx, "full", time.Hour, false, 10)
	if err != nil || len(moved) != 2 {
		t.Fatalf("moved %+v, %v", moved, err)
	}
	if err := m.ReturnHeldPushes(ctx, "full", []string{moved[1].Device}); err != nil {
		t.Fatal(err)
	}
	took, err := s.TakeHeldPushes(ctx, 10)
	if err != nil || len(took) != 1 || string(took[0].Push) != "b" {
		t.Fatalf("taken after the give-back: %+v, %v; want b alone", took, err)
	}
}

// PutImported records each node with its LastRegistered time, to the
// nanosecond, beyond the registration's removal; a later import records
// the later time; a Put records nothing; and a PutImported that fails
// records nothing either, as it writes no registration.
func testImportedNodes(t *testing.T, s registry.Store) {
	if _, err := s.ImportedAt(ctx, "n1"); !errors.Is(err, registry.ErrNotFound) {
		t.Fatalf("ImportedAt of a node never imported: %v, want ErrNotFound", err)
	}
	r := reg("n1", "apns", "t1", "s1", base)
	r.Renewed = base.Add(time.Hour)
	if err := s.PutImported(ctx, []registry.Registration{r}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Put(ctx, []registry.Registration{reg("n2", "apns", "t2", "s2", base)}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Delete(ctx, "n1", "apns"); err != nil {
		t.Fatal(err)
	}
	if at, err := s.ImportedAt(ctx, "n1"); err != nil || !at.Equal(r.Renewed) {
		t.Fatalf("ImportedAt n1 after its removal: %v, %v; want its renewal %v", at, err, r.Renewed)
	}
	if _, err := s.ImportedAt(ctx, "n2"); !errors.Is(err, registry.ErrNotFound) {
		t.Fatalf("ImportedAt of a node Put, not imported: %v, want ErrNotFound", err)
	}
	r.Renewed = base.Add(2 * time.Hour)
	if err := s.PutImported(ctx, []registry.Registration{r}); err != nil {
		t.Fatal(err)
	}
	if at, err := s.ImportedAt(ctx, "n1"); err != nil || !at.Equal(r.Renewed) {
		t.Fatalf("ImportedAt n1 imported again: %v, %v; want %v", at, err, r.Renewed)
	}

	// n3's device key is n4's: the batch fails, and n5 in it is not recorded.
	held := reg("n4", "apns", "t4", "s4", base)
	held.DeviceKey = "key"
	if _, err := s.Put(ctx, []registry.Registration{held}); err != nil {
		t.Fatal(err)
	}
	clash := reg("n3", "apns", "t3", "s3", base)
	clash.DeviceKey = "key"
	if err := s.PutImported(ctx, []registry.Registration{reg("n5", "apns", "t5", "s5", base), clash}); err == nil {
		t.Fatal("PutImported of a device key another node holds succeeded")
	}
	if _, err := s.ImportedAt(ctx, "n5"); !errors.Is(err, registry.ErrNotFound) {
		t.Fatalf("ImportedAt of a node in a failed PutImported: %v, want ErrNotFound", err)
	}
}

// ImportedNodes pages through what PutImported recorded, in node order,
// to the nanosecond; PutImportedNodes records nodes without writing a
// registration, and a node already recorded keeps the later time, so a
// list copied in never undoes a later import into this registry.
func testImportedNodesPaged(t *testing.T, s registry.Store) {
	if got, err := s.ImportedNodes(ctx, "", 10); err != nil || len(got) != 0 {
		t.Fatalf("ImportedNodes of a registry never imported into: %v, %v", got, err)
	}
	var rs []registry.Registration
	for i, n := range []string{"n3", "n1", "n2"} {
		rs = append(rs, reg(n, "apns", "t"+n, "s", base.Add(time.Duration(i)*time.Nanosecond)))
	}
	if err := s.PutImported(ctx, rs); err != nil {
		t.Fatal(err)
	}
	page := func(after string, limit int) string {
		t.Helper()
		got, err := s.ImportedNodes(ctx, after, limit)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, n := range got {
			out = append(out, fmt.Sprintf("%s@%d", n.Node, n.Registered.Sub(base)))
		}
		return strings.Join(out, " ")
	}
	if got := page("", 2); got != "n1@1 n2@2" {
		t.Fatalf("first page: %q, want n1@1 n2@2 (node, ns after base)", got)
	}
	if got := page("n2", 2); got != "n3@0" {
		t.Fatalf("page after n2: %q, want n3@0", got)
	}

	// n1 earlier, n3 later, n9 new and twice in the page.
	if err := s.PutImportedNodes(ctx, []registry.ImportedNode{
		{Node: "n1", Registered: base.Add(-time.Hour)},
		{Node: "n3", Registered: base.Add(time.Hour)},
		{Node: "n9", Registered: base.Add(5)},
		{Node: "n9", Registered: base.Add(7)},
	}); err != nil {
		t.Fatal(err)
	}
	if got, want := page("", 10), fmt.Sprintf("n1@1 n2@2 n3@%d n9@7", time.Hour); got != want {
		t.Fatalf("after PutImportedNodes: %q, want %q", got, want)
	}
	if _, err := s.Get(ctx, "n9"); !errors.Is(err, registry.ErrNotFound) {
		t.Fatalf("Get of a node PutImportedNodes recorded: %v, want ErrNotFound", err)
	}
	if err := s.PutImportedNodes(ctx, nil); err != nil {
		t.Fatalf("PutImportedNodes of none: %v", err)
	}
}

// Put judges device keys on what the registry holds once the batch is
// written (admin.Copy relies on it: "Written with this page: Put judges
// it"): a node the batch rewrites holds what the batch gives it, whatever
// the batch's order, and no batch leaves one key with two nodes.
func testPutDeviceKeys(t *testing.T, s registry.Store) {
	withKey := func(node, key string) registry.Registration {
		r := reg(node, "fcm", "tok-"+node, "sec-"+node, base)
		r.DeviceKey = key
		return r
	}
	tests := []struct {
		name    string
		before  []registry.Registration
		put     []registry.Registration
		wantErr bool
		holder  string // the node holding K afterwards ("" for none)
	}{
		{"key moves to an earlier node", []registry.Registration{withKey("b", "K")},
			[]registry.Registration{withKey("a", "K"), withKey("b", "")}, false, "a"},
		{"key moves to a later node", []registry.Registration{withKey("a", "K")},
			[]registry.Registration{withKey("a", ""), withKey("b", "K")}, false, "b"},
		{"keys swap", []registry.Registration{withKey("a", "K"), withKey("b", "L")},
			[]registry.Registration{withKey("a", "L"), withKey("b", "K")}, false, "b"},
		{"two new nodes, one key", nil,
			[]registry.Registration{withKey("a", "K"), withKey("b", "K")}, true, ""},
		{"held by a node outside the batch", []registry.Registration{withKey("c", "K")},
			[]registry.Registration{withKey("a", "K")}, true, "c"},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			prefix := fmt.Sprintf("pdk%d-", i)
			fix := func(rs []registry.Registration) []registry.Registration {
				out := slices.Clone(rs)
				for j := range out {
					out[j].Node = prefix + out[j].Node
					if out[j].DeviceKey != "" {
						out[j].DeviceKey = prefix + out[j].DeviceKey
					}
				}
				return out
			}
			if len(tt.before) > 0 {
				if _, err := s.Put(ctx, fix(tt.before)); err != nil {
					t.Fatal(err)
				}
			}
			_, err := s.Put(ctx, fix(tt.put))
			if (err != nil) != tt.wantErr {
				t.Errorf("Put = %v, want error: %v", err, tt.wantErr)
			}
			holders := 0
			page, lerr := s.List(ctx, prefix, 100)
			if lerr != nil {
				t.Fatal(lerr)
			}
			for _, r := range page {
				if strings.HasPrefix(r.Node, prefix) && r.DeviceKey == prefix+"K" {
					holders++
				}
			}
			got, gerr := s.GetByDeviceKey(ctx, prefix+"K")
			switch {
			case holders > 1:
				t.Errorf("%d nodes hold one device key", holders)
			case tt.holder == "" && !errors.Is(gerr, registry.ErrNotFound):
				t.Errorf("K held by %+v %v, want by none", got, gerr)
			case tt.holder != "" && (gerr != nil || got.Node != prefix+tt.holder):
				t.Errorf("K held by %q %v, want %q", got.Node, gerr, prefix+tt.holder)
			}
		})
	}
}

// testPutRead: PutRead writes a registration only where its node is
// still as read, or still has none; one a server registered, renewed or
// removed since the read stays as that server left it.
func testPutRead(t *testing.T, s registry.Store) {
	mustRegister(t, s, reg("same", "apns", "tok", "sec", base))
	mustRegister(t, s, reg("renewed", "apns", "tok", "sec", base))
	mustRegister(t, s, reg("removed", "apns", "tok", "sec", base))
	asRead := map[string]registry.Registration{}
	for _, n := range []string{"same", "renewed", "removed"} {
		r, err := s.Get(ctx, n)
		if err != nil {
			t.Fatal(err)
		}
		asRead[n] = r
	}
	// What happens between the read and the write: a push outcome,
	// which changes nothing PutRead compares, a renewal, a removal, and
	// a registration of a node that had none.
	if err := s.UpdatePushStatus(ctx, []registry.PushStatus{{Node: "same", At: base.Add(time.Minute), Success: true}}); err != nil {
		t.Fatal(err)
	}
	mustRegister(t, s, reg("renewed", "apns", "tok2", "ignored", base.Add(time.Hour)))
	if _, err := s.Delete(ctx, "removed", "apns"); err != nil {
		t.Fatal(err)
	}
	mustRegister(t, s, reg("registered", "apns", "tok2", "sec2", base.Add(time.Hour)))

	var rs, read []registry.Registration
	for _, n := range []string{"same", "renewed", "removed", "registered", "new"} {
		rs = append(rs, reg(n, "fcm", "copied", "copied", base.Add(time.Second)))
		read = append(read, asRead[n])
	}
	added, changed, err := s.PutRead(ctx, rs, read)
	if err != nil {
		t.Fatalf("PutRead: %v", err)
	}
	slices.Sort(changed)
	if want := []string{"registered", "removed", "renewed"}; !slices.Equal(changed, want) {
		t.Errorf("PutRead changed = %v, want %v", changed, want)
	}
	if added != 1 {
		t.Errorf("PutRead added = %d, want 1 (new)", added)
	}
	for _, n := range []string{"same", "new"} {
		if r, err := s.Get(ctx, n); err != nil || r.Token != "copied" || r.Type != "fcm" {
			t.Errorf("%s, as read: %+v, %v; want it written", n, r, err)
		}
	}
	for n, token := range map[string]string{"renewed": "tok2", "registered": "tok2"} {
		if r, err := s.Get(ctx, n); err != nil || r.Token != token || r.Type != "apns" {
			t.Errorf("%s, changed since the read: %+v, %v; want it kept", n, r, err)
		}
	}
	if r, err := s.Get(ctx, "removed"); !errors.Is(err, registry.ErrNotFound) {
		t.Errorf("removed since the read: %+v, %v; want it left removed", r, err)
	}
	if _, _, err := s.PutRead(ctx, rs, read[:1]); err == nil {
		t.Error("PutRead with fewer registrations read than written: no error")
	}
}

// testPutImportedRead: PutImportedRead writes and records as imported
// only the registrations whose node is still as read; a node registered
// since stays as registered, and is not recorded.
func testPutImportedRead(t *testing.T, s registry.Store) {
	mustRegister(t, s, reg("registered", "apns", "tok2", "sec2", base.Add(time.Hour)))
	rs := []registry.Registration{reg("registered", "fcm", "imp", "imp", base), reg("new", "fcm", "imp", "imp", base)}
	changed, err := s.PutImportedRead(ctx, rs, make([]registry.Registration, len(rs)))
	if err != nil {
		t.Fatalf("PutImportedRead: %v", err)
	}
	if !slices.Equal(changed, []string{"registered"}) {
		t.Errorf("PutImportedRead changed = %v, want [registered]", changed)
	}
	if r, err := s.Get(ctx, "registered"); err != nil || r.Token != "tok2" {
		t.Errorf("registered since the read: %+v, %v; want it kept", r, err)
	}
	if _, err := s.ImportedAt(ctx, "registered"); !errors.Is(err, registry.ErrNotFound) {
		t.Errorf("ImportedAt of the node left as registered = %v, want ErrNotFound", err)
	}
	if r, err := s.Get(ctx, "new"); err != nil || r.Token != "imp" {
		t.Errorf("new: %+v, %v; want it written", r, err)
	}
	if at, err := s.ImportedAt(ctx, "new"); err != nil || !at.Equal(base) {
		t.Errorf("ImportedAt(new) = %v, %v; want %v", at, err, base)
	}
}
