package appserver

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/push-appserver/push-appserver/internal/push"
	"github.com/push-appserver/push-appserver/internal/registry"
	"github.com/push-appserver/push-appserver/internal/registry/memory"
)

// TestHoldAfterLeaseLost: a server whose lease was lost (another server
// released its pushes) finds out only at its stop. The waits it changed
// since its last write are written under a new lease and handed over
// with the others, not counted lost.
func TestHoldAfterLeaseLost(t *testing.T) {
	ctx := context.Background()
	store := memory.New()
	s := redeliveringOn(t, store)
	r := s.redeliver
	r.keep(redeliveryKey{node: "written"}, push.Notification{App: "apns", Node: "written", Priority: push.PrioritySilent})
	if err := s.writePending(ctx); err != nil || !r.leased {
		t.Fatalf("first write: %v, leased %v", err, r.leased)
	}
	// What another server's take does once the lease has run out.
	if err := store.ReleasePushes(ctx, r.owner); err != nil {
		t.Fatal(err)
	}
	r.keep(redeliveryKey{node: "changed"}, push.Notification{App: "apns", Node: "changed", Priority: push.PrioritySilent})
	s.holdPending()
	if st := r.stats(); st.Dropped != 0 {
		t.Fatalf("%+v", st)
	}
	held, err := store.TakeHeldPushes(ctx, 10)
	if err != nil || len(held) != 2 {
		t.Fatalf("held after the stop: %d, %v; want the push written before the lease was lost and the one kept since", len(held), err)
	}
}

// TestTakeHeldLeavesWhatFindsNoRoom: a server whose wait is full (a long
// outage) must not take pushes another instance released at its stop only
// to drop them: they stay in the registry for an instance with room (or
// for this one, once its wait has room again).
func TestTakeHeldLeavesWhatFindsNoRoom(t *testing.T) {
	ctx := context.Background()
	store := memory.New()
	// The stopping instance: 10 pushes written and released.
	release(t, store, tenNodes(), nil)

	// The instance still running, its wait full.
	b := redeliveringOn(t, store)
	for i := range redeliveryMax {
		node := "b" + strconv.Itoa(i)
		b.redeliver.keep(redeliveryKey{node: node}, push.Notification{App: "apns", Node: node, Priority: push.PrioritySilent})
	}
	b.takeHeld(ctx)
	left, err := store.TakeHeldPushes(ctx, 100)
	if err != nil {
		t.Fatal(err)
	}
	if st := b.redeliver.stats(); len(left) != 10 {
		t.Fatalf("%d of the 10 released pushes left in the registry; the full instance took and dropped the rest (%+v)", len(left), st)
	}
}

// TestTakenAlertNotDowngraded: a device waits for an alert on one
// instance and for a later silent push on another. When the first stops
// and the second takes its pushes, the device must still get its alert
// ("an alert waiting is not replaced by a later silent push").
func TestTakenAlertNotDowngraded(t *testing.T) {
	ctx := context.Background()
	store := memory.New()
	a := redeliveringOn(t, store)
	b := redeliveringOn(t, store)
	key := redeliveryKey{node: "n1"}
	alert := &push.Summary{LastMessageBody: "hello", HasLastMessageBody: true}
	a.redeliver.keep(key, push.Notification{App: "apns", Node: "n1", Priority: push.PriorityHigh, Summary: alert})
	time.Sleep(time.Millisecond)
	b.redeliver.keep(key, push.Notification{App: "apns", Node: "n1", Priority: push.PrioritySilent})
	a.holdPending() // a stops
	b.takeHeld(ctx)
	b.redeliver.pending[key].due = time.Time{}
	got := b.redeliver.due(10)
	if len(got) != 1 || got[0].n.Priority != push.PriorityHigh {
		t.Fatalf("the device waits for %+v, want its alert", got[0].n)
	}
}

// TestTakenNewerPushReplaces: the push taken from the registry failed
// after the one this server keeps for the device: it is the newer, and
// the one to send (restore's own comment says the newer wins).
func TestTakenNewerPushReplaces(t *testing.T) {
	r, c := newTestRedeliveries()
	key := redeliveryKey{node: "n1"}
	r.keep(key, push.Notification{App: "apns", Node: "n1", Priority: push.PriorityHigh, Summary: &push.Summary{LastMessageBody: "old", HasLastMessageBody: true}})
	c.Advance(time.Second)
	r.restore(key, push.Notification{App: "apns", Node: "n1", Priority: push.PriorityHigh, Summary: &push.Summary{LastMessageBody: "new", HasLastMessageBody: true}}, nil, "", false, c.Now(), time.Time{}, true)
	c.Advance(redeliveryBase)
	got := r.due(10)
	if len(got) != 1 || got[0].n.Summary.LastMessageBody != "new" {
		t.Fatalf("the device waits for %q, want the newer push", got[0].n.Summary.LastMessageBody)
	}
}

// failingKeep is a registry whose writes of waiting pushes fail (a
// statement timeout, a lock wait) while everything else works.
type failingKeep struct{ *memory.Store }

func (failingKeep) KeepPushes(context.Context, string, time.Duration, bool, []registry.HeldPush, []string) error {
	return errors.New("canceling statement due to statement timeout")
}

// TestTakenPushSurvivesTakerDeath: a push released by a stopping instance
// is durable in the registry. The instance that takes it must not make it
// less so: if its write of what it took fails and it is then killed, the
// push must still be in the registry for the next server.
func TestTakenPushSurvivesTakerDeath(t *testing.T) {
	ctx := context.Background()
	store := memory.New()
	a := redeliveringOn(t, store)
	a.redeliver.keep(redeliveryKey{node: "n1"}, push.Notification{App: "apns", Node: "n1", Priority: push.PriorityHigh})
	a.holdPending() // a stops cleanly: the push is in the registry

	b, err := New(failingKeep{store}, heldApps(), Options{Redelivery: time.Minute}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	b.redeliver.lease = 50 * time.Millisecond
	b.takeHeld(ctx)
	_ = b.writePending(ctx) // fails; b is then killed (no holdPending)

	time.Sleep(100 * time.Millisecond) // whatever lease b held runs out
	left, err := store.TakeHeldPushes(ctx, 10)
	if err != nil || len(left) != 1 {
		t.Fatalf("after the taker died, %d pushes left in the registry (%v): the push answered wait is lost", len(left), err)
	}
}

// TestDirtyBoundedWhileRegistryRefusesWrites: while the registry refuses
// the writes of waiting pushes (PostgreSQL down for an hour), devices keep
// beginning and ending waits. What is remembered to be written must stay
// within the wait's bound, not grow with every device that ever waited.
func TestDirtyBoundedWhileRegistryRefusesWrites(t *testing.T) {
	ctx := context.Background()
	s, err := New(failingKeep{memory.New()}, heldApps(), Options{Redelivery: time.Minute}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	r := s.redeliver
	const devices = 4 * redeliveryMax
	for i := range devices {
		key := redeliveryKey{node: "n" + strconv.Itoa(i)}
		r.keep(key, push.Notification{App: "apns", Node: key.node, Priority: push.PrioritySilent})
		r.settled(key) // a later push went through
		if i%1000 == 0 {
			_ = s.writePending(ctx) // the loop's tick: refused
		}
	}
	_ = s.writePending(ctx)
	if st := r.stats(); len(r.dirty) > redeliveryMax {
		t.Fatalf("%d devices remembered for the registry, none waiting (%+v); bound %d", len(r.dirty), st, redeliveryMax)
	}
}

// hookedKeep refuses writes like failingKeep, running during after what
// the test does while a write is under way.
type hookedKeep struct {
	*memory.Store
	during func()
}

func (h hookedKeep) KeepPushes(context.Context, string, time.Duration, bool, []registry.HeldPush, []string) error {
	h.during()
	return errors.New("canceling statement due to statement timeout")
}

// TestDirtyBoundedWhenWaitsEndDuringWrites is the test above with the
// waits ending while the (refused) writes are under way, as they do when
// the loop writes and pushes go through at the same time.
func TestDirtyBoundedWhenWaitsEndDuringWrites(t *testing.T) {
	ctx := context.Background()
	var r *redeliveries
	i := 0
	// During each write, the waits the write carries end (a later push
	// went through) and as many new ones begin.
	during := func() {
		for k := i - 1000; k < i; k++ {
			if k >= 0 {
				r.settled(redeliveryKey{node: "n" + strconv.Itoa(k)})
			}
		}
		for range 1000 {
			key := redeliveryKey{node: "n" + strconv.Itoa(i)}
			r.keep(key, push.Notification{App: "apns", Node: key.node, Priority: push.PrioritySilent})
			i++
		}
	}
	s, err := New(hookedKeep{memory.New(), during}, heldApps(), Options{Redelivery: time.Minute}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	r = s.redeliver
	// Each write sees the devices of the write before as changed.
	r.keep(redeliveryKey{node: "x"}, push.Notification{App: "apns", Node: "x", Priority: push.PrioritySilent})
	for range 4 * redeliveryMax / 1000 {
		_ = s.writePending(ctx)
	}
	if len(r.dirty) > redeliveryMax {
		t.Fatalf("%d devices remembered for the registry, %d waiting; bound %d", len(r.dirty), len(r.pending), redeliveryMax)
	}
}

// TestTakeHeldLeavesWhatFindsNoBytes: as TestTakeHeldLeavesWhatFindsNoRoom,
// with the wait full by its bytes (encrypted payloads of a few KB reach
// 32 MB with ~7,500 devices, far from the device bound). The taker must
// not move pushes it cannot keep, for its next write to delete.
func TestTakeHeldLeavesWhatFindsNoBytes(t *testing.T) {
	ctx := context.Background()
	store := memory.New()
	release(t, store, tenNodes(), &push.Summary{LastMessageBody: "hello", HasLastMessageBody: true})

	b := redeliveringOn(t, store)
	fillByBytes(b)
	t.Logf("b waits for %d devices (%d bytes)", b.redeliver.stats().Pending, b.redeliver.bytes)
	b.takeHeld(ctx)
	_ = b.writePending(ctx)
	left, err := store.TakeHeldPushes(ctx, 100)
	if err != nil {
		t.Fatal(err)
	}
	if st := b.redeliver.stats(); len(left) != 10 {
		t.Fatalf("%d of the 10 released alerts left in the registry, none kept by b (%+v): lost", len(left), st)
	}
}

// commitThenFail is a registry whose write of waiting pushes commits but
// reports an error once (the answer to COMMIT lost: the connection broke,
// the write's context ran out as the commit came back).
type commitThenFail struct {
	*memory.Store
	fail *bool
}

func (c commitThenFail) KeepPushes(ctx context.Context, owner string, lease time.Duration, renew bool, put []registry.HeldPush, del []string) error {
	err := c.Store.KeepPushes(ctx, owner, lease, renew, put, del)
	if *c.fail {
		*c.fail = false
		return errors.New("unexpected EOF")
	}
	return err
}

// TestEndedWaitNotLeftAfterUncertainWrite: a write whose outcome is
// unknown may have stored the push. If the device's wait then ends, the
// registry must not keep the push: the next server would send it again
// after this one stops.
func TestEndedWaitNotLeftAfterUncertainWrite(t *testing.T) {
	ctx := context.Background()
	store := memory.New()
	fail := true
	s, err := New(commitThenFail{store, &fail}, heldApps(), Options{Redelivery: time.Minute}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	r := s.redeliver
	key := redeliveryKey{node: "n1"}
	r.keep(key, push.Notification{App: "apns", Node: "n1", Priority: push.PriorityHigh})
	_ = s.writePending(ctx) // committed, reported failed
	r.settled(key)          // a later push went through: the wait ends
	// Another device keeps the lease alive and the loop writing.
	r.keep(redeliveryKey{node: "n2"}, push.Notification{App: "apns", Node: "n2", Priority: push.PrioritySilent})
	if err := s.writePending(ctx); err != nil {
		t.Fatal(err)
	}
	s.holdPending()
	held, err := store.TakeHeldPushes(ctx, 10)
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range held {
		var hp heldPush
		_ = json.Unmarshal(h.Push, &hp)
		if hp.Node == "n1" {
			t.Fatalf("the push to n1, whose wait ended, is handed to the next server: %d held", len(held))
		}
	}
}

// toggledKeep refuses the writes of waiting pushes while *fail is set.
type toggledKeep struct {
	*memory.Store
	fail *bool
}

func (s toggledKeep) KeepPushes(ctx context.Context, owner string, lease time.Duration, renew bool, put []registry.HeldPush, del []string) error {
	if *s.fail {
		return errors.New("canceling statement due to statement timeout")
	}
	return s.Store.KeepPushes(ctx, owner, lease, renew, put, del)
}

// TestMoveDoesNotHideLostLease: the loop's tick when writes fail for
// longer than the lease: the write fails, another instance takes the
// lapsed pushes, and the take of this tick (a poll, or another instance's
// stop) moves held pushes here. The next write must still report the
// lease lost, so that this server lets go of the pushes the other took.
func TestMoveDoesNotHideLostLease(t *testing.T) {
	ctx := context.Background()
	store := memory.New()
	fail := false
	s, err := New(toggledKeep{store, &fail}, heldApps(), Options{Redelivery: time.Minute}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	r := s.redeliver
	r.lease = 50 * time.Millisecond
	key := redeliveryKey{node: "n1"}
	r.keep(key, push.Notification{App: "apns", Node: "n1", Priority: push.PriorityHigh})
	if err := s.writePending(ctx); err != nil {
		t.Fatal(err)
	}
	fail = true
	time.Sleep(100 * time.Millisecond)
	r.renewed = time.Time{}
	_ = s.writePending(ctx) // refused: the lease runs out meanwhile
	other, err := store.TakeHeldPushes(ctx, 10)
	if err != nil || len(other) != 1 {
		t.Fatalf("the other instance took %d, %v", len(other), err)
	}
	fail = false
	s.takeHeld(ctx) // same tick: a poll
	err = s.writePending(ctx)
	if r.pending[key] != nil {
		t.Fatalf("write: %v; n1 still waits here although another instance took it: sent from both", err)
	}
}

// releaseOne is a server that held the push to node and stopped: its row
// is in the registry, released, for any instance to take.
func releaseOne(t *testing.T, store registry.Store, node string) {
	t.Helper()
	release(t, store, []string{node}, nil)
}

// release is a server that held an alert (with summary sum) to each of
// nodes and stopped: their rows are in the registry, released, for any
// instance to take.
func release(t *testing.T, store registry.Store, nodes []string, sum *push.Summary) {
	t.Helper()
	a := redeliveringOn(t, store)
	for _, node := range nodes {
		a.redeliver.keep(redeliveryKey{node: node}, push.Notification{App: "apns", Node: node, Priority: push.PriorityHigh, Summary: sum})
	}
	a.holdPending()
}

// tenNodes are a0 to a9.
func tenNodes() []string {
	nodes := make([]string, 10)
	for i := range nodes {
		nodes[i] = "a" + strconv.Itoa(i)
	}
	return nodes
}

// TestLostLeaseLetsGoOfMovedPushes: a server moves a released push to
// itself, its writes then fail for longer than its lease, and another
// instance takes the moved row (now lapsed) and sends it. When this
// server learns the lease is lost, at its next write or at its next
// take's move, the push it took must not stay in its wait too: it is
// the very row the other instance took, not a change of its own.
func TestLostLeaseLetsGoOfMovedPushes(t *testing.T) {
	for _, via := range []string{"write", "move"} {
		t.Run(via, func(t *testing.T) {
			ctx := context.Background()
			store := memory.New()
			releaseOne(t, store, "n1")
			fail := false
			s, err := New(toggledKeep{store, &fail}, heldApps(), Options{Redelivery: time.Minute}, slog.New(slog.DiscardHandler))
			if err != nil {
				t.Fatal(err)
			}
			r := s.redeliver
			r.lease = 50 * time.Millisecond
			s.takeHeld(ctx) // moved here, under s's lease
			key := redeliveryKey{node: "n1"}
			if r.pending[key] == nil || len(r.moved) != 1 {
				t.Fatalf("take: pending %v, moved %v", r.pending[key] != nil, r.moved)
			}
			fail = true
			_ = s.writePending(ctx) // refused: the moved row stays moved
			time.Sleep(100 * time.Millisecond)
			other, err := store.TakeHeldPushes(ctx, 10) // another instance, after the lapse
			if err != nil || len(other) != 1 {
				t.Fatalf("the other instance took %d, %v", len(other), err)
			}
			fail = false
			r.renewed = time.Time{}
			if via == "write" {
				err = s.writePending(ctx)
			} else {
				releaseOne(t, store, "n2") // something to move
				s.takeHeld(ctx)
				err = s.writePending(ctx)
			}
			if r.pending[key] != nil {
				t.Fatalf("after %v: n1 still waits here although another instance took its moved row: sent by both", err)
			}
		})
	}
}

// failingReturn refuses the give-back of held pushes while *fail is set.
type failingReturn struct {
	*memory.Store
	fail *bool
}

func (s failingReturn) ReturnHeldPushes(ctx context.Context, owner string, devices []string) error {
	if *s.fail {
		return errors.New("connection reset by peer")
	}
	return s.Store.ReturnHeldPushes(ctx, owner, devices)
}

// TestFailedGiveBackRetried: a taker full by its wait's bytes moved
// pushes it could not keep and failed to give them back (one error). As
// long as it keeps any wait its lease is renewed, so no other instance
// can take them: they must be given back at a later take, not held
// until this server stops, past their window.
func TestFailedGiveBackRetried(t *testing.T) {
	ctx := context.Background()
	store := memory.New()
	release(t, store, tenNodes(), &push.Summary{LastMessageBody: "hello", HasLastMessageBody: true})

	fail := true
	b, err := New(failingReturn{store, &fail}, heldApps(), Options{Redelivery: time.Minute}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	fillByBytes(b)
	b.takeHeld(ctx) // moves, finds no bytes, the give-back fails
	fail = false
	// The loop goes on: writes renew the lease, polls take again.
	for range 3 {
		b.redeliver.renewed = time.Time{}
		if err := b.writePending(ctx); err != nil {
			t.Fatal(err)
		}
		b.takeHeld(ctx)
	}
	left, err := store.TakeHeldPushes(ctx, 100)
	if err != nil {
		t.Fatal(err)
	}
	if len(left) != 10 {
		t.Fatalf("%d of the 10 alerts b could not keep given back; the rest wait under b's lease until b stops", len(left))
	}
}

// TestTakeHeldAlertNotLostToSilentWhenFull: the taker waits with a silent
// push for the device a released alert is for, and its wait is full by
// its bytes. The alert cannot replace the silent push; it must not be
// deleted as if kept (its row is the alert's only copy), but given back.
func TestTakeHeldAlertNotLostToSilentWhenFull(t *testing.T) {
	ctx := context.Background()
	store := memory.New()
	a := redeliveringOn(t, store)
	key := redeliveryKey{node: "n1"}
	a.redeliver.keep(key, push.Notification{App: "apns", Node: "n1", Priority: push.PriorityHigh,
		Summary: &push.Summary{LastMessageBody: strings.Repeat("x", 1000), HasLastMessageBody: true}})
	a.holdPending()

	b := redeliveringOn(t, store)
	b.redeliver.keep(key, push.Notification{App: "apns", Node: "n1", Priority: push.PrioritySilent})
	fillByBytes(b)
	b.takeHeld(ctx)
	if err := b.writePending(ctx); err != nil {
		t.Fatal(err)
	}
	left, err := store.TakeHeldPushes(ctx, 100)
	if err != nil {
		t.Fatal(err)
	}
	if p := b.redeliver.pending[key]; len(left) == 0 && (p == nil || p.n.Priority != push.PriorityHigh) {
		t.Fatalf("the alert to n1 is neither in b's wait nor in the registry: lost to b's silent push (%+v)", b.redeliver.stats())
	}
}

// fillByBytes fills s's wait up to its bound of bytes (encrypted
// payloads of 4 KB reach it with about 7,900 devices, far from the bound
// of devices), until not even a small push finds room.
func fillByBytes(s *Service) {
	payload := string(make([]byte, 4000))
	for i := 0; ; i++ {
		node := "b" + strconv.Itoa(i)
		before := s.redeliver.stats().Dropped
		s.redeliver.keep(redeliveryKey{node: node}, push.Notification{App: "apns", Node: node, Priority: push.PrioritySilent,
			Encrypted: &push.Encrypted{Payload: payload}})
		if s.redeliver.stats().Dropped > before {
			break
		}
	}
	for i := 0; ; i++ {
		node := "c" + strconv.Itoa(i)
		before := s.redeliver.stats().Dropped
		s.redeliver.keep(redeliveryKey{node: node}, push.Notification{App: "apns", Node: node, Priority: push.PrioritySilent})
		if s.redeliver.stats().Dropped > before {
			break
		}
	}
}

// TestLostLeaseLetsGoOfMovedPushMergedIntoStoredWait: this server waits
// for n1 with a silent push the registry holds as it is (written, not
// changed since). It moves a released alert to n1 here (the alert
// replaces the silent push), and before its next write its lease runs
// out: both rows, its own and the moved one, go to another instance,
// which sends the alert. The wait here is nothing but those two rows: it
// must end with the lease, or both instances send the alert.
func TestLostLeaseLetsGoOfMovedPushMergedIntoStoredWait(t *testing.T) {
	for _, replaces := range []bool{true, false} {
		t.Run(strconv.FormatBool(replaces), func(t *testing.T) {
			ctx := context.Background()
			store := memory.New()
			s := redeliveringOn(t, store)
			r := s.redeliver
			r.lease = 50 * time.Millisecond
			key := redeliveryKey{node: "n1"}
			own := push.PrioritySilent
			if !replaces {
				own = push.PriorityHigh
			}
			r.keep(key, push.Notification{App: "apns", Node: "n1", Priority: own})
			if err := s.writePending(ctx); err != nil {
				t.Fatal(err)
			}
			releaseOne(t, store, "n1") // another server's alert to n1, released
			s.takeHeld(ctx)
			if len(r.moved) != 1 {
				t.Fatalf("moved %v", r.moved)
			}
			time.Sleep(100 * time.Millisecond) // the lease runs out before the next write
			other, err := store.TakeHeldPushes(ctx, 10)
			if err != nil || len(other) != 2 {
				t.Fatalf("the other instance took %d, %v", len(other), err)
			}
			err = s.writePending(ctx)
			if !errors.Is(err, registry.ErrLeaseLost) {
				t.Fatalf("write: %v", err)
			}
			if p := r.pending[key]; p != nil {
				t.Fatalf("n1 still waits here (%v) although the other instance took both rows it is made of: sent by both", p.n.Priority)
			}
		})
	}
}

// redeliveringOn is a server with a minute of redelivery on store, and
// the app of the tests' pushes (see heldApps): the tests drive its wait
// directly.
func redeliveringOn(t *testing.T, store registry.Store) *Service {
	t.Helper()
	s, err := New(store, heldApps(), Options{Redelivery: time.Minute}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestStopKeepsMovedPushes: a push this server took from the registry
// stays there, moved to it, until a write holds what it became. If that
// write fails at the stop, the push is still in the registry: released
// for the next server, not counted (and logged) as lost.
func TestStopKeepsMovedPushes(t *testing.T) {
	ctx := context.Background()
	store := memory.New()
	a := redeliveringOn(t, store)
	a.redeliver.keep(redeliveryKey{node: "n1"}, push.Notification{App: "apns", Node: "n1", Priority: push.PriorityHigh})
	a.holdPending()

	b, err := New(failingKeep{store}, heldApps(), Options{Redelivery: time.Minute}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	b.takeHeld(ctx)
	if n := b.redeliver.stats().Pending; n != 1 {
		t.Fatalf("b took %d pushes, want 1", n)
	}
	b.holdPending() // its writes fail
	if st := b.redeliver.stats(); st.Dropped != 0 {
		t.Errorf("the moved push counted as dropped at the stop (%+v), though the registry holds it", st)
	}
	left, err := store.TakeHeldPushes(ctx, 10)
	if err != nil || len(left) != 1 {
		t.Fatalf("after the stop, %d pushes released in the registry (%v), want the moved one", len(left), err)
	}
}

// Token pushes (anyone on the XMPP network may send them) fill a running
// instance's token half. Another instance stops and releases its waits:
// older token pushes, then a registered device's push. The running
// instance has room for the device's push, and must take it, however
// many pages of token pushes it has no room for come first.
func TestTakeHeldNodePushNotStuckBehindTokenPushes(t *testing.T) {
	ctx := context.Background()
	store := memory.New()
	a := redeliveringOn(t, store)
	for i := range 1500 {
		tok := "a" + strconv.Itoa(i)
		a.redeliver.keep(redeliveryKey{app: "apns", token: tok}, push.Notification{App: "apns", Token: tok, Priority: push.PrioritySilent})
	}
	a.holdPending()
	time.Sleep(5 * time.Millisecond)
	releaseOne(t, store, "device")

	b := redeliveringOn(t, store)
	for i := range redeliveryMax / 2 {
		tok := "b" + strconv.Itoa(i)
		b.redeliver.keep(redeliveryKey{app: "apns", token: tok}, push.Notification{App: "apns", Token: tok, Priority: push.PrioritySilent})
	}
	for range 5 { // five polls, 50 s
		b.takeHeld(ctx)
		if err := b.writePending(ctx); err != nil {
			t.Fatal(err)
		}
	}
	b.redeliver.mu.Lock()
	_, taken := b.redeliver.pending[redeliveryKey{node: "device"}]
	b.redeliver.mu.Unlock()
	if !taken {
		t.Fatalf("the registered device's released push not taken by an instance with room for it (%d waiting): stuck behind token pushes", b.redeliver.stats().Pending)
	}
}

// skewedOn is a server with ten minutes of redelivery on store whose
// host's wall clock is off by skew from the test's. Its readings carry no
// monotonic part, as none does once it went through the registry
// (PostgreSQL's timestamptz, SQLite's text).
func skewedOn(t *testing.T, store *memory.Store, skew time.Duration) *Service {
	t.Helper()
	now := time.Now
	if skew != 0 {
		now = func() time.Time { return time.Now().Add(skew).Round(0) }
	}
	s, err := New(store, heldApps(), Options{Redelivery: 10 * time.Minute, Now: now}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestHeldPushSurvivesClockSkewBetweenInstances: two instances share the
// registry, and the stopping one's clock is 11 minutes behind the other's
// (a VM restored from a snapshot, NTP not yet stepped). A push that failed
// there a moment ago and was handed over at the stop must be sent by the
// instance that takes it, not expire at once as if it had waited its
// whole 10-minute redelivery window.
func TestHeldPushSurvivesClockSkewBetweenInstances(t *testing.T) {
	ctx := context.Background()
	store := memory.New()
	key := redeliveryKey{node: "n1"}
	a := skewedOn(t, store, -11*time.Minute)
	a.redeliver.keep(key, push.Notification{App: "apns", Node: "n1", Priority: push.PriorityHigh})
	a.holdPending() // a stops: the push is in the registry, released

	b := skewedOn(t, store, 0)
	b.takeHeld(ctx)
	got := b.redeliver.due(10)
	if st := b.redeliver.stats(); len(got) != 1 {
		t.Fatalf("the push that failed a moment ago on the other instance was not sent (%d due; %+v): expired by the clocks' skew", len(got), st)
	}
}

// TestHeldRetryAfterSurvivesClockSkewBetweenInstances: the push service
// asked the stopping instance, whose clock is 11 minutes ahead, to wait
// 30 s. The instance that takes the push must send it about 30 s later,
// not 11.5 minutes later, past its redelivery window.
func TestHeldRetryAfterSurvivesClockSkewBetweenInstances(t *testing.T) {
	ctx := context.Background()
	store := memory.New()
	key := redeliveryKey{node: "n1"}
	a := skewedOn(t, store, 11*time.Minute)
	a.redeliver.keepChecked(key, push.Notification{App: "apns", Node: "n1", Priority: push.PriorityHigh}, "",
		&push.TemporaryError{Reason: "APNS 429", RetryAfter: 30 * time.Second})
	a.holdPending()

	b := skewedOn(t, store, 0)
	b.takeHeld(ctx)
	p := b.redeliver.pending[key]
	if p == nil {
		t.Fatal("not taken")
	}
	if wait := time.Until(p.due); wait > time.Minute {
		t.Fatalf("the push the service asked to wait 30 s for is due in %s on the instance that took it", wait.Round(time.Second))
	}
}

// heldApps is the app of the pushes these tests hold, so that a server
// takes them from the registry (one of an app it does not have stays
// there). The tests drive the wait directly: nothing is sent.
func heldApps() []App {
	return []App{{Name: "apns", Priority: push.PriorityAuto, Backend: unsent{}}}
}

// unsent is a push service no test reaches.
type unsent struct{}

func (unsent) Send(context.Context, push.Notification) error {
	return errors.New("not sent in these tests")
}

// TestTakeHeldSoonOnlyForOwnApps: pushes handed over for apps this
// server does not have are not looked for at once here: taken, they
// would only be given back, and meanwhile an instance that has the app
// would not find them. A stop's release (no apps named) and a hand-over
// naming one of this server's apps are.
func TestTakeHeldSoonOnlyForOwnApps(t *testing.T) {
	s := redeliveringOn(t, memory.New())
	for _, tc := range []struct {
		apps []string
		want bool
	}{
		{nil, true},
		{[]string{"voip"}, false},
		{[]string{"voip", "apns"}, true},
		{[]string{"apns"}, true},
	} {
		s.redeliver.takeSoon.Store(false)
		s.TakeHeldSoon(tc.apps...)
		if got := s.redeliver.takeSoon.Load(); got != tc.want {
			t.Errorf("held pushes announced for apps %q: looked for at once %v, want %v", tc.apps, got, tc.want)
		}
	}
}
