package postgres

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/push-appserver/push-appserver/internal/registry"
)

// defaultAckWait bounds how long a write waits for the other instances
// to confirm they dropped what they cached (Options.AckWait).
const defaultAckWait = time.Second

// errCut is the error of a committed write whose wait for the others'
// acks the feed going down ended.
var errCut = fmt.Errorf("the change feed went down before the other instances confirmed the change: %w", registry.ErrUnconfirmed)

// ackPrefix starts the name of the channel on which an instance hears that
// the others handled its change (ackPrefix + its writer id).
const ackPrefix = "push_appserver_ack_"

// barrier makes a change to a registration take effect everywhere before
// the write returns: a device unregistered through one instance is never
// pushed from another one's cache after the answer, and a new token is the
// one every instance uses from then on.
//
// A write made while this store is followed names its writer id in the
// transaction (push_appserver.writer), and the trigger puts it in front of
// the node in the notification. Every other instance, having dropped the
// node from its cache, answers with a notification on the writer's ack
// channel. The write returns when as many acks as there were other
// listening instances at the time of the write have arrived, or after
// ackWait: an instance that does not answer in time is hung or gone (and
// one whose feed broke bypasses its cache anyway, unless it cannot read
// the database either: see appserver's cache). When this store's own
// feed goes down first, no ack can come, and the write fails with
// registry.ErrUnconfirmed (see wait). Writes by a store that is not
// followed (the admin commands, an import) carry no writer id and wait
// for nothing; the other instances still drop what they change.
type barrier struct {
	id      string        // this store's writer id; hex, so it fits in a channel name
	ackWait time.Duration // see defaultAckWait

	mu      sync.Mutex
	live    bool
	waiting map[string][]*waiter
}

type waiter struct {
	need int // acks still to come
	done chan struct{}
	cut  bool // done was closed by the feed going down, not by the acks; under barrier.mu
}

func newBarrier(ackWait time.Duration) barrier {
	b := make([]byte, 8)
	rand.Read(b)
	return barrier{id: hex.EncodeToString(b), ackWait: ackWait}
}

// ackChannel is where this store hears acks.
func (b *barrier) ackChannel() string { return ackPrefix + b.id }

// name marks tx as this store's write, for the trigger, and returns how
// many other instances listen now; 0 when this store is not followed (then
// tx carries no writer id and nobody acks).
func (b *barrier) name(ctx context.Context, tx pgx.Tx) (int, error) {
	b.mu.Lock()
	live := b.live
	b.mu.Unlock()
	if !live {
		return 0, nil
	}
	var others int
	err := tx.QueryRow(ctx, `SELECT set_config('push_appserver.writer', $1, true), (SELECT count(*) - 1 FROM pg_stat_activity
		WHERE datname = current_database() AND application_name = $2)`, b.id, listenAppName).Scan(nil, &others)
	return others, err
}

// announced reports whether writing r where old was (found: there was a
// row) makes the trigger announce the node, as 007_quiet_renewals.sql
// decides: a new row, or one whose watched columns change; not a renewal,
// which writes them as they were. Only for those are acks expected. The
// values compared are those stored: a device key "" is stored as NULL and
// read back as "".
func announced(old registry.Registration, found bool, r registry.Registration) bool {
	return !found || old.Node != r.Node || old.Type != r.Type || old.Token != r.Token || old.Secret != r.Secret ||
		old.Domain != r.Domain || old.DeviceKey != r.DeviceKey || old.Owner != r.Owner || old.Account != r.Account
}

// expect registers a wait for others' acks of node, before the commit
// that makes them come; nil when there is nobody to wait for.
func (b *barrier) expect(node string, others int) *waiter {
	if others <= 0 {
		return nil
	}
	w := &waiter{need: others, done: make(chan struct{})}
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.live {
		// The feed went down since name counted the others: their acks
		// cannot come, as for a wait the feed's end cut short.
		w.cut = true
		close(w.done)
		return w
	}
	if b.waiting == nil {
		b.waiting = map[string][]*waiter{}
	}
	b.waiting[node] = append(b.waiting[node], w)
	return w
}

// wait waits for w's acks when committed is true, then forgets w. It
// returns errCut when the feed went down before the acks came: the other
// instances' feeds most likely went down with the database, and one that
// cannot read the database then serves what it cached (appserver's
// outage grace), the registration as it was before this write. The
// change is stored, but answering it as done would be a promise broken
// for minutes; an error makes the client try again, which the stored
// change makes harmless.
//
// Acks that do not come within ackWait while the feed is up are no error:
// an instance that does not answer is hung (it serves nothing meanwhile)
// or gone, or its LISTEN connection went silent, which its probe finds
// within a heartbeat, after which it bypasses its cache. Failing writes
// for it would fail every registration through every instance for as
// long as PostgreSQL counts such a listener (a dead connection, until TCP
// gives up: many minutes), and a retry would wait for the same ack in
// vain, where a feed gone down is this instance's own and back within
// seconds of the database.
func (b *barrier) wait(ctx context.Context, node string, w *waiter, committed bool) error {
	if w == nil {
		return nil
	}
	if committed {
		t := time.NewTimer(b.ackWait)
		defer t.Stop()
		select {
		case <-w.done:
		case <-t.C:
		case <-ctx.Done():
		}
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.remove(node, w)
	if committed && w.cut {
		return errCut
	}
	return nil
}

// acks are the waits of one transaction that wrote several nodes.
type acks []nodeWait

type nodeWait struct {
	node string
	w    *waiter
}

// expect adds the wait for node's acks, if there is anyone to wait for.
func (a *acks) expect(b *barrier, node string, others int) {
	if w := b.expect(node, others); w != nil {
		*a = append(*a, nodeWait{node, w})
	}
}

// waitAll is wait for every one of a, within one ackWait in all. It
// returns the nodes whose wait the feed going down cut short (see wait).
func (b *barrier) waitAll(a acks, committed bool) (cut []string) {
	if len(a) == 0 {
		return nil
	}
	if committed {
		t := time.NewTimer(b.ackWait)
		defer t.Stop()
	wait:
		for _, nw := range a {
			select {
			case <-nw.w.done:
			case <-t.C:
				break wait
			}
		}
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, nw := range a {
		b.remove(nw.node, nw.w)
		if committed && nw.w.cut {
			cut = append(cut, nw.node)
		}
	}
	return cut
}

func (b *barrier) remove(node string, w *waiter) {
	ws := b.waiting[node]
	for i, x := range ws {
		if x == w {
			ws = append(ws[:i], ws[i+1:]...)
			break
		}
	}
	if len(ws) == 0 {
		delete(b.waiting, node)
	} else {
		b.waiting[node] = ws
	}
}

// acked counts one instance's ack for node.
func (b *barrier) acked(node string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	ws := b.waiting[node]
	keep := ws[:0] // filtering in place: nothing is written ahead of the read
	for _, w := range ws {
		if w.need--; w.need == 0 {
			close(w.done)
			continue
		}
		keep = append(keep, w)
	}
	clear(ws[len(keep):])
	if len(keep) == 0 {
		delete(b.waiting, node)
	} else {
		b.waiting[node] = keep
	}
}

// setLive records whether Follow listens; when it stops, no ack can
// arrive and every waiting write is released, unconfirmed.
func (b *barrier) setLive(live bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.live = live
	if !live {
		for node, ws := range b.waiting {
			for _, w := range ws {
				w.cut = true
				close(w.done)
			}
			delete(b.waiting, node)
		}
	}
}

// parseChange splits a change notification's payload into the writer id
// (empty for writes that wait for nobody) and the node.
func parseChange(payload string) (writer, node string) {
	writer, node, ok := strings.Cut(payload, " ")
	if !ok {
		return "", payload
	}
	return writer, node
}

// isWriterID reports whether s is a writer id as newBarrier makes them:
// anything else (a change made outside an instance, a hand-made payload)
// names no ack channel.
func isWriterID(s string) bool {
	if len(s) != 16 {
		return false
	}
	_, err := hex.DecodeString(s)
	return err == nil
}
