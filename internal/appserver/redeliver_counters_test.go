package appserver

import (
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/push-appserver/push-appserver/internal/push"
)

// checkRedeliveryCounters recounts pending and compares with the
// counters kept along.
func checkRedeliveryCounters(t *testing.T, r *redeliveries, step int, op string) {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	bytes, unread, tokens, tokenBytes, outages := 0, 0, 0, 0, int64(0)
	for k, p := range r.pending {
		if p.outage {
			outages++
		}
		if p.size != notificationSize(&p.n, p.unread) {
			t.Fatalf("step %d (%s): %v size %d, counts %d", step, op, k, p.size, notificationSize(&p.n, p.unread))
		}
		if p.token != (k.token != "") {
			t.Fatalf("step %d (%s): %v token mark %v", step, op, k, p.token)
		}
		bytes += p.size
		if p.unread != nil {
			unread++
		}
		if p.token {
			tokens++
			tokenBytes += p.size
		}
	}
	if bytes != r.bytes || unread != r.unread || tokens != r.tokens || tokenBytes != r.tokenBytes || int64(len(r.pending)) != r.count.Load() {
		t.Fatalf("step %d (%s): counters bytes %d unread %d tokens %d tokenBytes %d count %d; recount %d %d %d %d %d",
			step, op, r.bytes, r.unread, r.tokens, r.tokenBytes, r.count.Load(), bytes, unread, tokens, tokenBytes, len(r.pending))
	}
	if outages != r.outages.Load() {
		t.Fatalf("step %d (%s): %d outage pushes counted, %d recounted", step, op, r.outages.Load(), outages)
	}
	if len(r.pending) > r.max || r.bytes > r.maxBytes {
		t.Fatalf("step %d (%s): %d devices, %d bytes wait; the room is %d, %d", step, op, len(r.pending), r.bytes, r.max, r.maxBytes)
	}
	// Each app's share: its count and bytes, and its list of pushes,
	// which holds each of its pending pushes once.
	type share struct{ count, bytes int }
	recount := map[string]share{}
	for k, p := range r.pending {
		if p.key != k || p.room == nil || r.apps[p.n.App] != p.room {
			t.Fatalf("step %d (%s): %v counted in another app's share than its own, %q", step, op, k, p.n.App)
		}
		sh := recount[p.n.App]
		sh.count++
		sh.bytes += p.size
		recount[p.n.App] = sh
	}
	if len(recount) != len(r.apps) {
		t.Fatalf("step %d (%s): %d apps hold a share, %d hold pushes", step, op, len(r.apps), len(recount))
	}
	for app, a := range r.apps {
		if sh := recount[app]; a.count != sh.count || a.bytes != sh.bytes {
			t.Fatalf("step %d (%s): app %q counted %d pushes, %d bytes; recount %d, %d", step, op, app, a.count, a.bytes, sh.count, sh.bytes)
		}
		n := 0
		var older *pendingPush
		for p := a.oldest; p != nil; p = p.newer {
			if p.older != older || r.pending[p.key] != p {
				t.Fatalf("step %d (%s): app %q's list broken at %v", step, op, app, p.key)
			}
			older = p
			n++
		}
		if n != a.count || a.newest != older {
			t.Fatalf("step %d (%s): app %q lists %d pushes, counts %d", step, op, app, n, a.count)
		}
	}
}

// outageErr is a failure of the push service as a whole.
var outageErr = &push.TemporaryError{Reason: "503 ServiceUnavailable", Outage: true}

// The wait's counters (bytes, unread and token pushes, devices, each
// app's share) bound it, so they must match what it holds after any
// sequence of what happens to waits: random ones, from fixed seeds, in a
// room small enough that apps take each other's places.
func TestRedeliveryCountersRandom(t *testing.T) {
	for seed := range uint64(200) {
		rng := rand.New(rand.NewPCG(seed, 7))
		r, c := newTestRedeliveries()
		r.max, r.maxBytes = 8, 8*redeliveryEntryBytes
		keys := []redeliveryKey{}
		for i := range 6 {
			keys = append(keys, redeliveryKey{node: "n" + strconv.Itoa(i)})
			app := []string{"apns", "fcm"}[i%2]
			keys = append(keys, redeliveryKey{app: app, token: "t" + strconv.Itoa(i)})
		}
		var queued []redeliveryAttempt
		notif := func(k redeliveryKey) push.Notification {
			prios := []push.Priority{push.PrioritySilent, push.PriorityHigh}
			// A node's registration may move to another app.
			app := k.app
			if k.node != "" {
				app = []string{"apns", "fcm", "web"}[rng.IntN(3)]
			}
			n := push.Notification{App: app, Node: k.node, Token: k.token, Priority: prios[rng.IntN(2)]}
			if rng.IntN(2) == 0 {
				n.Summary = &push.Summary{LastMessageBody: strings.Repeat("b", rng.IntN(300)), HasLastMessageBody: true}
			}
			return n
		}
		for step := range 400 {
			k := keys[rng.IntN(len(keys))]
			var op string
			switch rng.IntN(13) {
			case 0, 1:
				op = "keep"
				r.keepChecked(k, notif(k), []string{"", "s", "x"}[rng.IntN(3)], []error{nil, outageErr}[rng.IntN(2)])
			case 2:
				op = "keepUnread"
				if k.node != "" {
					n := notif(k)
					n.App, n.Priority = "", ""
					r.keepUnread(k.node, unreadPush{secret: []string{"s", "x"}[rng.IntN(2)], important: rng.IntN(2) == 0}, n)
				}
			case 3:
				op = "restore"
				n := notif(k)
				var u *unreadPush
				if k.node != "" && rng.IntN(2) == 0 {
					u = &unreadPush{secret: "s"}
				}
				r.restore(k, n, u, "", false, c.Now().Add(-time.Duration(rng.IntN(700))*time.Second), c.Now().Add(time.Duration(rng.IntN(3))*time.Minute), rng.IntN(2) == 0)
			case 4:
				op = "due"
				queued = append(queued, r.due(rng.IntN(5))...)
			case 5, 6:
				op = "done"
				if len(queued) > 0 {
					i := rng.IntN(len(queued))
					a := queued[i]
					queued = append(queued[:i], queued[i+1:]...)
					if a2, ok := r.current(a); ok {
						r.done(a2, redeliveryResult(rng.IntN(5)), time.Duration(rng.IntN(3))*time.Minute)
					}
				}
			case 7:
				op = "settled"
				r.settled(k)
			case 8:
				op = "write"
				w := r.changed()
				switch rng.IntN(3) {
				case 0:
					r.written(w)
				case 1:
					r.unwritten(w.keys, w.putKeys)
				default:
					r.leaseLost(w.keys)
				}
			case 9:
				op = "advance"
				c.Advance(time.Duration(rng.IntN(200)) * time.Second)
			case 10:
				op = "registryBack"
				r.registryBack()
			case 11:
				op = "dropAll"
				if rng.IntN(10) == 0 {
					r.dropAll()
				}
			case 12:
				op = "appsBack"
				r.took("apns")
				r.appsBack()
			}
			checkRedeliveryCounters(t, r, step, op)
		}
	}
}

// The token half is a bound, not a leak: once every token push ended, a
// new one finds room again.
func TestRedeliveryTokenHalfFreed(t *testing.T) {
	r, _ := newTestRedeliveries()
	for i := range redeliveryMax {
		k := redeliveryKey{app: "apns", token: "t" + strconv.Itoa(i)}
		r.keep(k, push.Notification{App: "apns", Token: k.token, Priority: push.PrioritySilent})
	}
	if r.tokens != redeliveryMax/2 {
		t.Fatalf("%d token pushes kept", r.tokens)
	}
	for i := range redeliveryMax {
		r.settled(redeliveryKey{app: "apns", token: "t" + strconv.Itoa(i)})
	}
	if r.tokens != 0 || r.tokenBytes != 0 || r.bytes != 0 {
		t.Fatalf("after every wait ended: %d tokens, %d token bytes, %d bytes", r.tokens, r.tokenBytes, r.bytes)
	}
	r.keep(redeliveryKey{app: "apns", token: "again"}, push.Notification{App: "apns", Token: "again", Priority: push.PrioritySilent})
	if r.tokens != 1 {
		t.Fatal("a token push refused after the others ended")
	}
}
