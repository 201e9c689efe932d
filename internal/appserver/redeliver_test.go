package appserver

import (
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/push-appserver/push-appserver/internal/push"
	"github.com/push-appserver/push-appserver/internal/testutil/fakeclock"
)

// due is dueBy of every app, as the tests of the bookkeeping take them.
func (r *redeliveries) due(limit int) []redeliveryAttempt {
	return r.dueBy(func(string) int { return limit })
}

func newTestRedeliveries() (*redeliveries, *fakeclock.Clock) {
	c := fakeclock.New(time.Date(2026, 12, 5, 12, 0, 0, 0, time.UTC))
	return newRedeliveries(10*time.Minute, c.Now, ""), c
}

func TestRedeliveryBookkeeping(t *testing.T) {
	r, c := newTestRedeliveries()
	node := redeliveryKey{node: "n1"}
	sum := &push.Summary{LastMessageBody: "hello", HasLastMessageBody: true}
	r.keep(node, push.Notification{App: "apns", Node: "n1", Token: "tok", Account: "a@example.org", Priority: push.PrioritySilent, Summary: sum})
	sum.LastMessageBody = "changed by the stanza's owner"

	if got := r.due(10); len(got) != 0 {
		t.Fatalf("due at once: %v", got)
	}
	c.Advance(redeliveryBase)
	got := r.due(10)
	if len(got) != 1 {
		t.Fatalf("due after the base wait: %d", len(got))
	}
	n := got[0].n
	if n.Token != "" || n.Account != "" {
		t.Errorf("a node's push kept its token or account, which are read again: %+v", n)
	}
	if n.Summary == sum || n.Summary.LastMessageBody != "hello" {
		t.Errorf("summary not copied: %+v", n.Summary)
	}
	if again := r.due(10); len(again) != 0 {
		t.Fatal("an attempt under way taken twice")
	}
	r.done(got[0], redelivered, 0)
	if s := r.stats(); s.Pending != 0 || s.Kept != 1 || s.Delivered != 1 || r.bytes != 0 {
		t.Fatalf("after delivery: %+v, %d bytes", s, r.bytes)
	}
}

// A kept push holds copies of its strings, not cuts of the publish's
// text: a summary's body is a cut of the IQ's (at most 4 KiB of up to
// 64), which would stay alive, uncounted, for as long as the push waits.
func TestRedeliveryKeepsNoCutOfTheStanza(t *testing.T) {
	r, c := newTestRedeliveries()
	text := strings.Repeat("m", 60<<10)
	sum := &push.Summary{LastMessageSender: text[:100], LastMessageBody: text[:4096], HasLastMessageBody: true}
	enc := &push.Encrypted{Payload: text[:1000], IV: text[:16]}
	r.keep(redeliveryKey{app: "apns", token: text[:64]}, push.Notification{App: "apns", Node: text[:10], Token: text[:64], Priority: push.PriorityHigh, Summary: sum, Encrypted: enc})
	c.Advance(redeliveryBase)
	got := r.due(1)
	if len(got) != 1 {
		t.Fatal("not due")
	}
	n := got[0].n
	for name, s := range map[string]string{"sender": n.Summary.LastMessageSender, "body": n.Summary.LastMessageBody,
		"payload": n.Encrypted.Payload, "iv": n.Encrypted.IV, "node": n.Node, "token": n.Token} {
		if unsafe.StringData(s) == unsafe.StringData(text) {
			t.Errorf("the kept %s is a cut of the stanza's text", name)
		}
	}
}

func TestRedeliveryMergesPerDevice(t *testing.T) {
	r, c := newTestRedeliveries()
	key := redeliveryKey{node: "n1"}
	r.keep(key, push.Notification{App: "apns", Node: "n1", Priority: push.PrioritySilent})
	r.keep(key, push.Notification{App: "apns", Node: "n1", Priority: push.PriorityHigh, Summary: &push.Summary{LastMessageBody: "hi", HasLastMessageBody: true}})
	r.keep(key, push.Notification{App: "apns", Node: "n1", Priority: push.PrioritySilent})
	// VoIP pushes are never kept: a call rung late is over.
	r.keep(redeliveryKey{node: "n2"}, push.Notification{App: "voip", Node: "n2", Priority: push.PriorityVoIP})
	if s := r.stats(); s.Pending != 1 || s.Kept != 1 {
		t.Fatalf("%+v", s)
	}
	c.Advance(redeliveryBase)
	got := r.due(10)
	if len(got) != 1 || got[0].n.Priority != push.PriorityHigh || got[0].n.Summary.LastMessageBody != "hi" {
		t.Fatalf("the device should wait for its alert: %+v", got)
	}

	// A push that fails while the attempt is under way is sent too, even
	// when the attempt goes through.
	r.keep(key, push.Notification{App: "apns", Node: "n1", Priority: push.PriorityHigh, Summary: &push.Summary{LastMessageBody: "second", HasLastMessageBody: true}})
	r.done(got[0], redelivered, 0)
	c.Advance(redeliveryBase)
	got = r.due(10)
	if len(got) != 1 || got[0].n.Summary.LastMessageBody != "second" {
		t.Fatalf("the push that failed meanwhile: %+v", got)
	}
	r.done(got[0], redelivered, 0)
	if s := r.stats(); s.Pending != 0 || s.Delivered != 2 {
		t.Fatalf("%+v", s)
	}
}

func TestRedeliverySettled(t *testing.T) {
	r, c := newTestRedeliveries()
	a, b := redeliveryKey{node: "a"}, redeliveryKey{app: "fcm", token: "tok-b"}
	r.keep(a, push.Notification{App: "apns", Node: "a", Priority: push.PrioritySilent})
	r.keep(b, push.Notification{App: "fcm", Token: "tok-b", Priority: push.PriorityHigh})
	r.settled(a)
	c.Advance(redeliveryBase)
	got := r.due(10)
	if len(got) != 1 || got[0].key != b || got[0].n.Token != "tok-b" {
		t.Fatalf("due: %+v", got)
	}
	// A push to b goes through while its redelivery is under way.
	r.settled(b)
	r.done(got[0], redeliverLater, 0)
	if s := r.stats(); s.Pending != 0 || s.Superseded != 2 {
		t.Fatalf("%+v", s)
	}
}

func TestRedeliveryExpires(t *testing.T) {
	r, c := newTestRedeliveries()
	key := redeliveryKey{node: "n1"}
	r.keep(key, push.Notification{App: "apns", Node: "n1", Priority: push.PrioritySilent})
	attempts := 0
	for range 100 {
		c.Advance(redeliveryMaxWait)
		got := r.due(10)
		if len(got) == 0 {
			break
		}
		attempts++
		r.done(got[0], redeliverLater, 0)
	}
	s := r.stats()
	if s.Pending != 0 || s.Expired != 1 || attempts < 5 || attempts > 11 {
		t.Fatalf("%+v after %d attempts", s, attempts)
	}

	// A later failure of the device starts its time again.
	r.keep(key, push.Notification{App: "apns", Node: "n1", Priority: push.PrioritySilent})
	c.Advance(9 * time.Minute)
	r.keep(key, push.Notification{App: "apns", Node: "n1", Priority: push.PrioritySilent})
	c.Advance(2 * time.Minute)
	if got := r.due(10); len(got) != 1 {
		t.Fatal("a push that failed two minutes ago expired")
	}
}

// An unread push that turns out to have a wrong secret ends its wait,
// unless a push whose secret was checked replaced it meanwhile: that one
// still goes out.
func TestUnreadAttemptEndsOnlyItsPush(t *testing.T) {
	r, c := newTestRedeliveries()
	r.keepUnread("n1", unreadPush{secret: "guessed"}, push.Notification{Node: "n1"})
	r.keepUnread("n2", unreadPush{secret: "guessed"}, push.Notification{Node: "n2"})
	c.Advance(redeliveryBase)
	attempts := r.due(10)
	if len(attempts) != 2 {
		t.Fatalf("%d due", len(attempts))
	}
	// While the attempts run, a checked push to n1 fails.
	r.keep(redeliveryKey{node: "n1"}, push.Notification{App: "apns", Node: "n1", Priority: push.PriorityHigh})
	for _, a := range attempts {
		r.done(a, redeliveryGone, 0)
	}
	if s := r.stats(); s.Pending != 1 || s.Gone != 1 {
		t.Fatalf("%+v", s)
	}
	c.Advance(redeliveryBase)
	if got := r.due(10); len(got) != 1 || got[0].key.node != "n1" || got[0].unread != nil || got[0].n.Priority != push.PriorityHigh {
		t.Fatalf("due after the attempts: %+v", got)
	}
}

func TestRedeliveryBounds(t *testing.T) {
	r, _ := newTestRedeliveries()
	big := strings.Repeat("x", 1<<20)
	for i := range 40 {
		r.keep(redeliveryKey{node: string(rune('a'+i)) + "node"}, push.Notification{App: "web", Priority: push.PriorityHigh, Encrypted: &push.Encrypted{Payload: big}})
	}
	if s := r.stats(); s.Pending != 31 || s.Dropped != 9 || r.bytes > redeliveryMaxBytes {
		t.Fatalf("%+v, %d bytes", s, r.bytes)
	}
	r.dropAll()
	for i := range redeliveryMax + 10 {
		r.keep(redeliveryKey{node: strconv.Itoa(i)}, push.Notification{App: "apns", Priority: push.PrioritySilent})
	}
	if s := r.stats(); s.Pending != redeliveryMax {
		t.Fatalf("%+v", s)
	}
	if got := r.due(5); len(got) != 0 {
		t.Fatal("due before its time")
	}

	// Unread pushes take half the room at most: pushes the push
	// service refused still find room after a flood of unknown nodes.
	r.dropAll()
	for i := range redeliveryMax {
		r.keepUnread("u"+strconv.Itoa(i), unreadPush{secret: "s"}, push.Notification{Node: "u" + strconv.Itoa(i)})
	}
	if s := r.stats(); s.Pending != redeliveryMax/2 || r.unread != redeliveryMax/2 {
		t.Fatalf("unread: %+v, %d unread", s, r.unread)
	}
	r.keep(redeliveryKey{node: "checked"}, push.Notification{App: "apns", Priority: push.PrioritySilent})
	if s := r.stats(); s.Pending != redeliveryMax/2+1 {
		t.Fatalf("a checked push found no room after unread ones: %+v", s)
	}
	// A checked push replacing an unread one frees its place.
	r.keep(redeliveryKey{node: "u0"}, push.Notification{App: "apns", Priority: push.PrioritySilent})
	if r.unread != redeliveryMax/2-1 {
		t.Fatalf("%d unread after a checked push replaced one", r.unread)
	}
	r.dropAll()
	if r.unread != 0 || r.bytes != 0 {
		t.Fatalf("%d unread, %d bytes after dropAll", r.unread, r.bytes)
	}
}

// TestRedeliveryRoomShares: one app alone takes the whole room; once it
// is full, another app's push takes the place of the first app's oldest
// (the one whose wait began or last failed longest ago) until each holds
// its share, and the room's bounds hold throughout.
func TestRedeliveryRoomShares(t *testing.T) {
	const room = 8
	r, _ := newTestRedeliveries()
	r.max = room
	keep := func(app, node string) {
		r.keep(redeliveryKey{node: node}, push.Notification{App: app, Node: node, Priority: push.PrioritySilent})
	}
	waiting := func(node string) bool { return r.pending[redeliveryKey{node: node}] != nil }
	r.keep(redeliveryKey{node: "a0"}, push.Notification{App: "apns", Node: "a0", Priority: push.PriorityHigh})
	for i := 1; i < room+1; i++ {
		keep("apns", "a"+strconv.Itoa(i))
	}
	if s := r.stats(); s.Pending != room || s.Dropped != 1 || waiting("a"+strconv.Itoa(room)) {
		t.Fatalf("one app's pushes: %+v; the room is %d, all of it the app's", s, room)
	}
	// A silent push to a0 fails, which leaves its alert waiting: a1 is
	// the oldest now all the same.
	keep("apns", "a0")
	keep("fcm", "f0")
	if s := r.stats(); s.Pending != room || s.Dropped != 2 || !waiting("f0") || waiting("a1") || !waiting("a0") {
		t.Fatalf("another app's push in a room full of the first's: %+v; f0 %v, a0 %v, a1 %v", s, waiting("f0"), waiting("a0"), waiting("a1"))
	}
	for i := 1; i < room; i++ {
		keep("fcm", "f"+strconv.Itoa(i))
	}
	if s := r.stats(); s.Pending != room || r.apps["fcm"].count != room/2 || r.apps["apns"].count != room/2 {
		t.Fatalf("past its share: %+v, fcm %d, apns %d", s, r.apps["fcm"].count, r.apps["apns"].count)
	}
	// Unread pushes take no place: whoever knows a node can send them.
	r.keepUnread("u", unreadPush{secret: "s"}, push.Notification{Node: "u"})
	if waiting("u") || r.apps["apns"].count != room/2 {
		t.Fatal("an unread push took another app's place")
	}

	// The bytes are shared alike.
	r.dropAll()
	r.max, r.maxBytes = redeliveryMax, 8*redeliveryEntryBytes
	body := &push.Summary{LastMessageBody: strings.Repeat("x", redeliveryEntryBytes), HasLastMessageBody: true}
	// Three such pushes fit.
	for i := range 4 {
		r.keep(redeliveryKey{node: "a" + strconv.Itoa(i)}, push.Notification{App: "apns", Priority: push.PriorityHigh, Summary: body})
	}
	if !waiting("a2") || waiting("a3") {
		t.Fatalf("one app's pushes: %d bytes of %d", r.bytes, r.maxBytes)
	}
	r.keep(redeliveryKey{node: "f0"}, push.Notification{App: "fcm", Priority: push.PriorityHigh, Summary: body})
	if !waiting("f0") || r.bytes > r.maxBytes || waiting("a0") || !waiting("a1") {
		t.Fatalf("another app's push in a room whose bytes are full: f0 %v, a0 %v, %d bytes of %d", waiting("f0"), waiting("a0"), r.bytes, r.maxBytes)
	}
}

// TestRedeliverySummary: the log sums up a minute of redelivery when
// something happened in it, and stays quiet otherwise.
func TestRedeliverySummary(t *testing.T) {
	r, c := newTestRedeliveries()
	var log strings.Builder
	s := &Service{redeliver: r, logger: slog.New(slog.NewTextHandler(&log, nil))}
	last := s.summarizeRedelivery(redeliverySummary{})
	if log.Len() != 0 {
		t.Fatalf("summed up nothing: %s", log.String())
	}
	r.keep(redeliveryKey{node: "a"}, push.Notification{App: "apns", Priority: push.PrioritySilent})
	r.keep(redeliveryKey{node: "b"}, push.Notification{App: "apns", Priority: push.PrioritySilent})
	c.Advance(redeliveryBase)
	for _, a := range r.due(1) {
		r.done(a, redelivered, 0)
	}
	last = s.summarizeRedelivery(last)
	if !strings.Contains(log.String(), "kept=2 delivered=1 superseded=0 gone=0 expired=0 failed=0 handed_over=0 dropped=0 waiting=1") {
		t.Fatalf("summary: %s", log.String())
	}
	log.Reset()
	last = s.summarizeRedelivery(last)
	if log.Len() != 0 {
		t.Fatalf("a quiet minute summed up: %s", log.String())
	}

	// Drops name whose pushes were lost and why: an fcm push takes the
	// place of the oldest apns push in a full room, and an unread push,
	// of no app yet, finds none.
	r.max = 2
	r.keep(redeliveryKey{node: "c"}, push.Notification{App: "apns", Priority: push.PrioritySilent})
	r.keep(redeliveryKey{node: "f"}, push.Notification{App: "fcm", Priority: push.PrioritySilent})
	r.keepUnread("u", unreadPush{secret: "s"}, push.Notification{Node: "u"})
	s.summarizeRedelivery(last)
	if !strings.Contains(log.String(), `dropped=2 waiting=2 dropped_by="apns/gave_place=1 unknown/no_room=1"`) {
		t.Fatalf("summary of a minute with drops: %s", log.String())
	}
}

// TestUnreadAgainstChecked: an unread push never displaces a checked one,
// whether the checked one comes from this server's push or from the
// registry; and an unread alert whose secret turns out right is not
// replaced by its sender's later silent push.
func TestUnreadAgainstChecked(t *testing.T) {
	silent := push.Notification{App: "apns", Node: "n1", Priority: push.PrioritySilent}
	alert := push.Notification{App: "apns", Node: "n1", Priority: push.PriorityHigh}
	unread := push.Notification{Node: "n1"}
	key := redeliveryKey{node: "n1"}
	pending := func(r *redeliveries) *pendingPush {
		r.mu.Lock()
		defer r.mu.Unlock()
		return r.pending[key]
	}

	// A checked push taken from the registry replaces a guess waiting
	// here.
	r, _ := newTestRedeliveries()
	r.keepUnread("n1", unreadPush{secret: "guessed", important: true}, unread)
	if !r.restore(key, alert, nil, "", false, r.now(), time.Time{}, true) {
		t.Fatal("not restored")
	}
	if p := pending(r); p.unread != nil || p.n.Priority != push.PriorityHigh {
		t.Fatalf("after taking a checked push from the registry: unread %v, %v", p.unread, p.n.Priority)
	}

	// The sender's own silent push leaves its alert waiting; anyone
	// else's checked push replaces a guess.
	r, _ = newTestRedeliveries()
	r.keepUnread("n1", unreadPush{secret: "right", important: true}, unread)
	r.keepChecked(key, silent, "right", nil)
	if p := pending(r); p.unread == nil || !p.unread.important {
		t.Fatalf("the sender's alert replaced by its silent push: %+v", p)
	}
	r.keepChecked(key, silent, "another", nil)
	if p := pending(r); p.unread != nil || p.n.Priority != push.PrioritySilent {
		t.Fatalf("a checked push did not replace a guess: %+v", p)
	}
}

// TestDeliveredNotRepeated: a push that went through ends the wait when
// the pushes that failed meanwhile did not replace it: the device is
// awake.
func TestDeliveredNotRepeated(t *testing.T) {
	r, _ := newTestRedeliveries()
	key := redeliveryKey{node: "n1"}
	r.keep(key, push.Notification{App: "apns", Node: "n1", Priority: push.PriorityHigh})
	r.mu.Lock()
	r.pending[key].due = r.now()
	r.mu.Unlock()
	attempts := r.due(10)
	if len(attempts) != 1 {
		t.Fatalf("%d due", len(attempts))
	}
	r.keep(key, push.Notification{App: "apns", Node: "n1", Priority: push.PrioritySilent})
	r.done(attempts[0], redelivered, 0)
	if s := r.stats(); s.Pending != 0 || s.Delivered != 1 {
		t.Fatalf("%+v", s)
	}
}

// TestQueuedAttemptCurrent: an attempt taken out and queued is not made
// once its wait ended meanwhile, and makes the push that replaced its own.
func TestQueuedAttemptCurrent(t *testing.T) {
	r, c := newTestRedeliveries()
	a, b := redeliveryKey{node: "a"}, redeliveryKey{node: "b"}
	r.keep(a, push.Notification{App: "apns", Node: "a", Priority: push.PrioritySilent})
	r.keep(b, push.Notification{App: "apns", Node: "b", Priority: push.PrioritySilent})
	c.Advance(redeliveryMaxWait)
	queued := r.due(10)
	if len(queued) != 2 {
		t.Fatalf("%d due", len(queued))
	}
	r.settled(a)
	r.keep(b, push.Notification{App: "apns", Node: "b", Priority: push.PriorityHigh})
	for _, q := range queued {
		got, ok := r.current(q)
		switch q.key {
		case a:
			if ok {
				t.Error("an attempt at a wait that ended is still made")
			}
		case b:
			if !ok || got.n.Priority != push.PriorityHigh || got.gen != q.gen+1 {
				t.Errorf("the attempt at b: %v, %+v; want the alert that replaced its push", ok, got)
			}
		}
	}
}

// TestQueuedAttemptExpires: an attempt that waited in the queue past its
// push's time is not made, and counts as expired.
func TestQueuedAttemptExpires(t *testing.T) {
	r, c := newTestRedeliveries()
	key := redeliveryKey{node: "a"}
	r.keep(key, push.Notification{App: "apns", Node: "a", Priority: push.PrioritySilent})
	c.Advance(redeliveryMaxWait)
	queued := r.due(10)
	if len(queued) != 1 {
		t.Fatalf("%d due", len(queued))
	}
	c.Advance(r.window)
	if _, ok := r.current(queued[0]); ok {
		t.Fatal("an attempt past its push's time is still made")
	}
	if s := r.stats(); s.Pending != 0 || s.Expired != 1 {
		t.Fatalf("%+v", s)
	}
}

// TestRedeliveryBytesBoundOnReplace: the 32 MB bound holds for pushes that
// replace a device's wait too, not only for devices that begin one. A
// silent push kept for many devices, each then replaced by an alert with a
// full summary, must not take the wait past redeliveryMaxBytes.
func TestRedeliveryBytesBoundOnReplace(t *testing.T) {
	r, _ := newTestRedeliveries()
	const devices = 8192
	for i := range devices {
		r.keep(redeliveryKey{node: "n" + strconv.Itoa(i)}, push.Notification{App: "apns", Node: "n" + strconv.Itoa(i), Priority: push.PrioritySilent})
	}
	before := r.bytes
	full := &push.Summary{LastMessageSender: strings.Repeat("s", 4096), LastMessageBody: strings.Repeat("b", 4096), HasLastMessageBody: true}
	for i := range devices {
		r.keep(redeliveryKey{node: "n" + strconv.Itoa(i)}, push.Notification{App: "apns", Node: "n" + strconv.Itoa(i), Priority: push.PriorityHigh, Summary: full})
	}
	if r.bytes > redeliveryMaxBytes {
		t.Fatalf("%d bytes wait (%d before the alerts replaced the silent pushes), bound %d", r.bytes, before, redeliveryMaxBytes)
	}
}

// keys names the devices of attempts.
func keys(as []redeliveryAttempt) []string {
	var out []string
	for _, a := range as {
		out = append(out, a.key.node)
	}
	slices.Sort(out)
	return out
}

// Another push's success through its app makes a push that failed for an
// outage of the push service due at the next tick, but not before the
// service's Retry-After, not one that failed for its own device (a 429 for
// its token), not a push of another app, and, once such an attempt failed
// again, not again before an attempt of its own backoff failed too.
func TestRedeliveryServiceBack(t *testing.T) {
	r, c := newTestRedeliveries()
	notif := func(app, node string) push.Notification {
		return push.Notification{App: app, Node: node, Priority: push.PriorityHigh}
	}
	r.keepChecked(redeliveryKey{node: "down"}, notif("apns", "down"), "", outageErr)
	r.keepChecked(redeliveryKey{node: "throttled"}, notif("apns", "throttled"), "", &push.TemporaryError{Reason: "APNS 429 TooManyRequests"})
	r.keepChecked(redeliveryKey{node: "asked"}, notif("apns", "asked"), "", &push.TemporaryError{Reason: "APNS 503", RetryAfter: 2 * time.Minute, Outage: true})
	r.keepChecked(redeliveryKey{node: "other"}, notif("fcm", "other"), "", outageErr)
	r.took("apns")
	r.appsBack()
	got := r.due(10)
	if k := keys(got); !slices.Equal(k, []string{"down"}) {
		t.Fatalf("due once APNS took a push: %v, want down", k)
	}
	// The hastened attempt fails again: it waits its backoff out.
	r.done(got[0], redeliverAfterOutage, 0)
	r.took("apns")
	r.appsBack()
	if k := keys(r.due(10)); k != nil {
		t.Fatalf("due again at once after a hastened attempt failed: %v", k)
	}
	// An attempt of its own backoff fails: the next success hastens it.
	c.Advance(redeliveryMaxWait)
	for _, a := range r.due(10) {
		if a.key.node == "down" {
			r.done(a, redeliverAfterOutage, 0)
		}
	}
	r.took("apns")
	r.appsBack()
	if k := keys(r.due(10)); !slices.Equal(k, []string{"down"}) {
		t.Fatalf("due after an attempt of its own backoff failed and APNS took a push: %v, want down", k)
	}
	// The Retry-After, two minutes, holds.
	c.Advance(time.Minute)
	if k := keys(r.due(10)); !slices.Contains(k, "asked") {
		t.Fatalf("due after the service's Retry-After: %v", k)
	}
}

// TestRedeliveryRoomSparesAttemptUnderWay: a push whose attempt is under
// way is not given up to make room, though it is its app's oldest: the
// attempt goes on, and given up it would be counted dropped when it
// delivers, its place freed while it is still in memory and with its
// service.
func TestRedeliveryRoomSparesAttemptUnderWay(t *testing.T) {
	r, c := newTestRedeliveries()
	r.max = 2
	r.keep(redeliveryKey{node: "a1"}, push.Notification{App: "a", Node: "a1", Priority: push.PriorityHigh})
	c.Advance(redeliveryBase)
	got := r.due(10)
	if len(got) != 1 {
		t.Fatalf("due: %+v", got)
	}
	a1 := got[0]
	r.keep(redeliveryKey{node: "a2"}, push.Notification{App: "a", Node: "a2", Priority: push.PriorityHigh})
	// While a1's attempt is under way, app b's push needs a place.
	r.keep(redeliveryKey{node: "b1"}, push.Notification{App: "b", Node: "b1", Priority: push.PriorityHigh})
	r.done(a1, redelivered, 0)
	s := r.stats()
	if s.Delivered != 1 || s.Dropped != 1 || r.pending[redeliveryKey{node: "a2"}] != nil {
		t.Errorf("a1 was delivered and a2 should have given its place; stats say delivered %d, dropped %d; a2 waiting: %v",
			s.Delivered, s.Dropped, r.pending[redeliveryKey{node: "a2"}] != nil)
	}
}

// TestStaleSecretAttemptEndsOnlyItsPush: a checked push found gone (its
// node registered afresh, a new secret) ends its own wait, not the push
// checked against the new secret that replaced it while the attempt ran:
// that one is the registration's own.
func TestStaleSecretAttemptEndsOnlyItsPush(t *testing.T) {
	r, c := newTestRedeliveries()
	key := redeliveryKey{node: "n1"}
	r.keepChecked(key, push.Notification{App: "apns", Node: "n1", Priority: push.PriorityHigh}, "old-secret", nil)
	c.Advance(redeliveryBase)
	attempts := r.due(10)
	if len(attempts) != 1 {
		t.Fatalf("%d due", len(attempts))
	}
	// While the attempt runs (its lookup finds the new secret), a push
	// the user's server sent with the new secret fails and is kept.
	r.keepChecked(key, push.Notification{App: "apns", Node: "n1", Priority: push.PriorityHigh}, "new-secret", nil)
	r.done(attempts[0], redeliveryGone, 0)
	if s := r.stats(); s.Pending != 1 {
		t.Fatalf("the push checked against the registration's secret was dropped with the stale one: %+v", s)
	}
}

// TestRestoredStaleSecretDoesNotReplaceFresh: a held push taken from the
// registry, checked against a secret the node's registration no longer
// has (another server kept it before the node was registered afresh),
// does not replace the push this server holds, checked against the new
// secret, however more urgent: of two pushes checked against different
// secrets only the newer can still go out.
func TestRestoredStaleSecretDoesNotReplaceFresh(t *testing.T) {
	r, c := newTestRedeliveries()
	key := redeliveryKey{node: "n1"}
	staleFailed := c.Now()
	c.Advance(time.Second)
	r.keepChecked(key, push.Notification{App: "apns", Node: "n1", Priority: push.PrioritySilent}, "new-secret", nil)
	r.restore(key, push.Notification{App: "apns", Node: "n1", Priority: push.PriorityHigh}, nil, "old-secret", true, staleFailed, time.Time{}, true)
	c.Advance(redeliveryBase)
	got := r.due(10)
	if len(got) != 1 || got[0].secret != "new-secret" {
		t.Fatalf("the older push, checked against a secret now replaced, took the place of the newer: %+v", got)
	}
}

// A kept push's key and secret are copies too, not cuts of the request:
// an HTTP push's node and secret are cut from its body, a publish's from
// its stanza, and the maps the wait keeps its pushes in (and the secret
// an unread push is checked with) would keep the whole alive for as long
// as the push waits, up to 4 KiB (or 64) each where notificationSize
// counts the few bytes of the node and the secret.
func TestRedeliveryKeysHoldNoCutOfTheRequest(t *testing.T) {
	r, _ := newTestRedeliveries()
	var b strings.Builder
	for i := 0; b.Len() < 4<<10; i++ {
		b.WriteString(strconv.Itoa(i))
	}
	text := b.String()
	cut := func(s string) bool {
		p, start := uintptr(unsafe.Pointer(unsafe.StringData(s))), uintptr(unsafe.Pointer(unsafe.StringData(text)))
		return len(s) > 0 && p >= start && p < start+uintptr(len(text))
	}
	node := func(n int) string { return text[n*100 : n*100+10] }
	r.keepUnread(node(1), unreadPush{secret: text[200:232]}, push.Notification{Node: node(1)})
	r.keepUnread(node(1), unreadPush{secret: text[300:332]}, push.Notification{Node: node(1)})
	r.keepUnread(node(1), unreadPush{secret: text[300:332]}, push.Notification{Node: node(1)})
	r.keepChecked(redeliveryKey{node: node(5)}, push.Notification{App: "apns", Node: node(5), Priority: push.PriorityHigh}, text[600:632], nil)
	r.keepChecked(redeliveryKey{app: "apns", token: text[700:764]}, push.Notification{App: "apns", Token: text[700:764], Priority: push.PriorityHigh}, "", nil)

	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.pending) != 4 {
		t.Fatalf("%d pushes waiting, want 4", len(r.pending))
	}
	for key, p := range r.pending {
		if cut(key.node) || cut(key.token) || cut(p.key.node) || cut(p.key.token) {
			t.Errorf("the key of the push to %q is a cut of the request", key.node+key.token)
		}
		if p.unread != nil && cut(p.unread.secret) {
			t.Errorf("the secret of the unread push to %q is a cut of the request", key.node)
		}
		if cut(p.secret) {
			t.Errorf("the secret of the checked push to %q is a cut of the request", key.node)
		}
	}
	for key := range r.dirty {
		if cut(key.node) || cut(key.token) {
			t.Errorf("the key of the push to %q to write is a cut of the request", key.node+key.token)
		}
	}
	for n := range r.others {
		if cut(n) {
			t.Errorf("the node %q of the pushes waiting beside is a cut of the request", n)
		}
	}
}

// An unread push taken from the registry (another server's, held at its
// stop) whose secret is not that of the unread push waiting for the node
// here waits beside it, as one kept here would: merged into the one
// waiting, it was lost, and it may be the user's server's push with the
// right secret while the one waiting here is a guess.
func TestRestoredUnreadPushWaitsBesideAnother(t *testing.T) {
	r, c := newTestRedeliveries()
	r.keepUnread("n1", unreadPush{secret: "guessed"}, push.Notification{Node: "n1"})
	if !r.restore(redeliveryKey{node: "n1"}, push.Notification{Node: "n1"}, &unreadPush{secret: "right", important: true}, "right", false, c.Now(), time.Time{}, false) {
		t.Fatal("the push taken from the registry was not kept")
	}
	if s := r.stats(); s.Pending != 2 {
		t.Fatalf("%d pushes waiting, want the guess and the one taken", s.Pending)
	}
	c.Advance(redeliveryMaxWait)
	var secrets []string
	for _, a := range r.due(10) {
		secrets = append(secrets, a.unread.secret)
	}
	slices.Sort(secrets)
	if !slices.Equal(secrets, []string{"guessed", "right"}) {
		t.Fatalf("attempts with secrets %q, want one with each", secrets)
	}
}
