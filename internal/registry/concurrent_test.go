package registry_test

import (
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/push-appserver/push-appserver/internal/registry"
	"github.com/push-appserver/push-appserver/internal/registry/memory"
	"github.com/push-appserver/push-appserver/internal/registry/postgres"
	"github.com/push-appserver/push-appserver/internal/registry/sqlite"
)

var rounds = flag.Int("registry.rounds", 10, "TestConcurrentStoreInvariants: rounds of concurrent writers per store")

// A registration's outcome as its writer saw it.
type outcome struct {
	r   registry.Registration
	err error
}

// together runs n writers at once, writer i on stores[i%len(stores)], and
// returns what each saw.
func together(stores []registry.Store, n int, write func(i int, s registry.Store) outcome) []outcome {
	out := make([]outcome, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			<-start
			out[i] = write(i, stores[i%len(stores)])
		})
	}
	close(start)
	wg.Wait()
	return out
}

// TestConcurrentStoreInvariants races writers on a few nodes and device
// keys, in every store, and checks what the doc comments promise whatever
// the order they ran in: a renewal keeps the secret, a device key has one
// holder, a registration answered OK is stored as answered. PostgreSQL's
// writers go through two instances on one database.
func TestConcurrentStoreInvariants(t *testing.T) {
	sq, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "registry.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sq.Close() })
	dsn := pg.DB(t)
	var pgs []registry.Store
	for range 2 {
		s, err := postgres.Open(ctx, dsn, postgres.Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		pgs = append(pgs, s)
	}
	for _, tc := range []struct {
		name   string
		stores []registry.Store
	}{
		{"memory", []registry.Store{memory.New()}},
		{"sqlite", []registry.Store{sq}},
		{"postgres", pgs},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for round := range *rounds {
				at := time.Date(2026, 3, 1, 0, 0, round, 0, time.UTC)
				prefix := fmt.Sprintf("r%d-", round)
				sameNode(t, tc.stores, prefix, at)
				oneDeviceKey(t, tc.stores, prefix, at, rand.New(rand.NewPCG(uint64(round), 7)))
				deadTokenBefore(t, tc.stores, prefix, at)
			}
		})
	}
}

// sameNode registers one node from many writers at once: the first
// creates it and the others renew it, so every answer carries the secret
// stored.
func sameNode(t *testing.T, stores []registry.Store, prefix string, at time.Time) {
	t.Helper()
	node := prefix + "n"
	out := together(stores, 12, func(i int, s registry.Store) outcome {
		r := registry.Registration{Node: node, Type: "a", Token: fmt.Sprintf("t%d", i), Secret: fmt.Sprintf("s%d", i), Registered: at.Add(time.Duration(i) * time.Millisecond)}
		got, err := s.Register(ctx, node, registry.Renew(r))
		return outcome{got, err}
	})
	stored, err := stores[0].Get(ctx, node)
	if err != nil {
		t.Fatalf("%s: %v", node, err)
	}
	answered := false
	for i, o := range out {
		switch {
		case o.err != nil:
			t.Errorf("%s: writer %d: %v", node, i, o.err)
		case o.r.Secret != stored.Secret:
			t.Errorf("%s: writer %d was answered secret %s, %s is stored", node, i, o.r.Secret, stored.Secret)
		case o.r.Token == stored.Token:
			answered = true
		}
	}
	if !answered {
		t.Errorf("%s: the token stored, %s, was answered to no one", node, stored.Token)
	}
}

// oneDeviceKey has new nodes claim a device key while its holder
// re-registers without it: at most one claim succeeds, the others are
// refused with ErrConflict, and what was answered is what is stored.
func oneDeviceKey(t *testing.T, stores []registry.Store, prefix string, at time.Time, rng *rand.Rand) {
	t.Helper()
	const n = 12
	key := prefix + "key"
	holder := registry.Registration{Node: prefix + "h", Type: "b", Token: "th", Secret: "sh", Registered: at, DeviceKey: key}
	if _, err := stores[0].Register(ctx, holder.Node, registry.Renew(holder)); err != nil {
		t.Fatal(err)
	}
	// The first writer and some others are the holder, letting the key go
	// (or taking another); the rest are new nodes claiming it.
	moves := make([]bool, n)
	for i := range moves {
		moves[i] = i == 0 || i < n/2 && rng.IntN(4) == 0
	}
	out := together(stores, n, func(i int, s registry.Store) outcome {
		r := registry.Registration{Node: fmt.Sprintf("%sd%d", prefix, i), Type: "b", Token: fmt.Sprintf("t%d", i), Secret: fmt.Sprintf("s%d", i), Registered: at, DeviceKey: key}
		if moves[i] {
			r = holder
			r.DeviceKey = []string{"", key + "-other"}[i%2]
			r.Registered = at.Add(time.Second)
		}
		got, err := s.Register(ctx, r.Node, registry.Renew(r))
		return outcome{got, err}
	})
	all, err := stores[0].List(ctx, prefix, 1000)
	if err != nil {
		t.Fatal(err)
	}
	holders := 0
	for _, r := range all {
		if r.DeviceKey == key {
			holders++
		}
	}
	if holders > 1 {
		t.Errorf("%s: %d holders", key, holders)
	}
	claimed := 0
	for i, o := range out {
		switch {
		case errors.Is(o.err, registry.ErrConflict):
		case o.err != nil:
			t.Errorf("%s: writer %d: %v", key, i, o.err)
		default:
			if o.r.DeviceKey == key {
				claimed++
			}
			// The holder's key is whichever of its writers came last.
			stored, err := stores[0].Get(ctx, o.r.Node)
			if err != nil || stored.Secret != o.r.Secret || stored.DeviceKey != o.r.DeviceKey && !moves[i] {
				t.Errorf("%s: writer %d was answered %+v, stored is %+v, %v", key, i, o.r, stored, err)
			}
		}
	}
	if claimed > 1 {
		t.Errorf("%s: %d writers were answered that they hold it", key, claimed)
	}
	last := stores[len(stores)-1]
	if r, err := last.GetByDeviceKey(ctx, key); (err == nil) != (holders == 1) {
		t.Errorf("%s: GetByDeviceKey = %+v, %v with %d holders", key, r, err, holders)
	}
}

// deadTokenBefore registers nodes while a dead-token report from before
// they registered removes that token's registrations and pushes to them
// are recorded: neither undoes a registration answered OK.
func deadTokenBefore(t *testing.T, stores []registry.Store, prefix string, at time.Time) {
	t.Helper()
	const n = 12
	// The last writer reports the token dead, again and again.
	out := together(stores, n+1, func(i int, s registry.Store) outcome {
		if i == n {
			for range 5 {
				if _, err := s.DeleteToken(ctx, "c", "shared", at.Add(time.Minute)); err != nil {
					return outcome{err: err}
				}
			}
			return outcome{}
		}
		r := registry.Registration{Node: fmt.Sprintf("%sp%d", prefix, i), Type: "c", Token: "shared", Secret: fmt.Sprintf("s%d", i), Registered: at.Add(time.Hour)}
		got, err := s.Register(ctx, r.Node, registry.Renew(r))
		if err == nil {
			err = s.UpdatePushStatus(ctx, []registry.PushStatus{{Node: r.Node, At: at.Add(2 * time.Hour), Success: true}})
		}
		return outcome{got, err}
	})
	for i, o := range out {
		switch {
		case o.err != nil:
			t.Errorf("%s writer %d: %v", prefix, i, o.err)
			continue
		case i == n:
			continue
		}
		for _, s := range stores {
			if r, err := s.Get(ctx, o.r.Node); err != nil || r.Secret != o.r.Secret || r.Token != "shared" {
				t.Errorf("%s answered OK, then stored as %+v, %v", o.r.Node, r, err)
			}
		}
	}
}

// TestRegisterDuringCloseNotLost closes a store while registrations are
// under way, at a later moment each round: every one answered OK is there
// when it opens again, whether the writer had taken it before the close
// or not.
func TestRegisterDuringCloseNotLost(t *testing.T) {
	dir := t.TempDir()
	dsn := pg.DB(t)
	for _, tc := range []struct {
		name string
		open func() (registry.Store, error)
	}{
		{"sqlite", func() (registry.Store, error) { return sqlite.Open(ctx, filepath.Join(dir, "registry.db")) }},
		{"postgres", func() (registry.Store, error) { return postgres.Open(ctx, dsn, postgres.Options{}) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for round := range 10 {
				s, err := tc.open()
				if err != nil {
					t.Fatal(err)
				}
				var out []outcome
				closed := make(chan struct{})
				go func() {
					defer close(closed)
					// Not a wait for anything: the close lands at a
					// different point of the registrations each round.
					time.Sleep(time.Duration(round) * 200 * time.Microsecond)
					s.Close()
				}()
				out = together([]registry.Store{s}, 64, func(i int, s registry.Store) outcome {
					r := registry.Registration{Node: fmt.Sprintf("c%d-%d", round, i), Type: "a", Token: "t", Secret: "s", Registered: time.Now()}
					got, err := s.Register(ctx, r.Node, registry.Renew(r))
					return outcome{got, err}
				})
				<-closed
				if s, err = tc.open(); err != nil {
					t.Fatal(err)
				}
				for i, o := range out {
					if o.err != nil {
						continue
					}
					if _, err := s.Get(ctx, o.r.Node); err != nil {
						t.Errorf("round %d: writer %d was answered OK; after reopening: %v", round, i, err)
					}
				}
				s.Close()
			}
		})
	}
}
