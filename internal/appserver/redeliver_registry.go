package appserver

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/push-appserver/push-appserver/internal/push"
	"github.com/push-appserver/push-appserver/internal/registry"
)

// The registry's side of redelivery: what waits is written there as it
// changes, under this server's lease, released at a stop, and taken from
// there when another server released it or died (see redeliver.go).

// device names k's device in the registry (HeldPush.Device): a hash, so
// that a node or token of any length or bytes makes a name every store
// can index, and one push's name cannot fail the write of all the others.
func (k redeliveryKey) device() string {
	var h [sha256.Size]byte
	switch {
	case k.node != "" && k.unread != "":
		h = sha256.Sum256([]byte("node " + k.node + " unread " + k.unread))
	case k.node != "":
		h = sha256.Sum256([]byte("node " + k.node))
	default:
		h = sha256.Sum256([]byte("token " + strconv.Quote(k.app) + " " + k.token))
	}
	return hex.EncodeToString(h[:16])
}

// heldPush is a waiting push as the registry holds it.
type heldPush struct {
	// ByNode: the push is to a registered node, read again before each
	// attempt; otherwise to App's Token (tokenless, publish-options).
	ByNode    bool            `json:"by_node,omitempty"`
	Node      string          `json:"node,omitempty"`
	App       string          `json:"app"`
	Token     string          `json:"token,omitempty"`
	Priority  push.Priority   `json:"priority"`
	Summary   *push.Summary   `json:"summary,omitempty"`
	Encrypted *push.Encrypted `json:"encrypted,omitempty"`
	// Unread: the push's registration could not be read, and Secret
	// and Important are what it came with (see unreadPush); App and
	// Priority are then empty.
	Unread bool   `json:"unread,omitempty"`
	Secret string `json:"secret,omitempty"`
	// Beside: the unread push waits beside another to its node, under
	// a key of its secret's (redeliveryKey.unread).
	Beside bool `json:"beside,omitempty"`
	// Checked: a checked push to a node, sent only while its
	// registration's secret is still Secret (see pendingPush.secret).
	Checked   bool `json:"checked,omitempty"`
	Important bool `json:"important,omitempty"`
	// NotBefore is the push service's Retry-After, while it lasts: the
	// server that takes the push sends it no sooner. Otherwise that
	// server sends it at once, since its wait was spent here.
	NotBefore time.Time `json:"not_before,omitzero"`
	// RetryAfterFailed is NotBefore as a time after the push failed
	// (HeldPush's FailedAt, Age), which the server that takes the push
	// reads on its own clock: NotBefore is the writer's.
	RetryAfterFailed time.Duration `json:"retry_after_failed,omitempty"`
}

// heldPushOf is the push n to the device key names (unread with u, when
// u is not nil) as the registry holds it; wait reads it back.
func heldPushOf(key redeliveryKey, n push.Notification, u *unreadPush, secret string, checked bool) heldPush {
	h := heldPush{ByNode: key.node != "", Node: n.Node, App: n.App, Token: key.token,
		Priority: n.Priority, Summary: n.Summary, Encrypted: n.Encrypted}
	if u != nil {
		h.Unread, h.Secret, h.Important, h.Beside = true, u.secret, u.important, key.unread != ""
	} else if checked {
		h.Checked, h.Secret = true, secret
	}
	return h
}

// wait is the device, push and (for an unread push) what decides it that
// h holds.
func (h heldPush) wait() (redeliveryKey, push.Notification, *unreadPush) {
	key := redeliveryKey{app: h.App, token: h.Token}
	if h.ByNode {
		key = redeliveryKey{node: h.Node}
	}
	n := push.Notification{App: h.App, Node: h.Node, Token: h.Token, Priority: h.Priority, Summary: h.Summary, Encrypted: h.Encrypted}
	var u *unreadPush
	if h.Unread && h.ByNode {
		u = &unreadPush{secret: h.Secret, important: h.Important}
		if h.Beside {
			key.unread = unreadName(h.Secret)
		}
	}
	return key, n, u
}

// pendingWrite is what writePending writes: the devices whose wait
// changed, and for those that still wait, their push.
type pendingWrite struct {
	// changes is redeliveries.changes when the write was taken out:
	// every push kept before it is in the write.
	changes       uint64
	keys          []redeliveryKey
	putKeys, gone []redeliveryKey
	put           []registry.HeldPush
	del           []string
}

// changed takes out the devices whose wait changed since the last write,
// with what the registry is to hold for them.
func (r *redeliveries) changed() pendingWrite {
	type waiting struct {
		key       redeliveryKey
		n         push.Notification
		unread    *unreadPush
		secret    string
		checked   bool
		failed    time.Time
		notBefore time.Time
	}
	now := r.now()
	r.mu.Lock()
	keys := make([]redeliveryKey, 0, len(r.dirty))
	var put []waiting
	var gone []redeliveryKey
	for key := range r.dirty {
		keys = append(keys, key)
		if p := r.pending[key]; p != nil {
			w := waiting{key: key, n: p.n, unread: p.unread, secret: p.secret, checked: p.checked, failed: p.failed}
			if p.notBefore.After(now) {
				w.notBefore = p.notBefore
			}
			put = append(put, w)
		} else {
			gone = append(gone, key)
		}
	}
	clear(r.dirty)
	changes := r.changes
	r.mu.Unlock()
	// Named and encoded outside the lock, which pushes wait for: what set
	// made is never changed.
	w := pendingWrite{changes: changes, keys: keys, gone: gone, del: make([]string, len(gone)), put: make([]registry.HeldPush, 0, len(put))}
	for i, key := range gone {
		w.del[i] = key.device()
	}
	for _, p := range put {
		h := heldPushOf(p.key, p.n, p.unread, p.secret, p.checked)
		h.NotBefore = p.notBefore
		if !p.notBefore.IsZero() {
			h.RetryAfterFailed = p.notBefore.Sub(p.failed)
		}
		b, err := json.Marshal(h)
		if err != nil {
			continue
		}
		w.putKeys = append(w.putKeys, p.key)
		w.put = append(w.put, registry.HeldPush{Device: p.key.device(), FailedAt: p.failed, Age: max(now.Sub(p.failed), 1), Push: b})
	}
	return w
}

// written records that the registry now holds w's puts and none of its
// deletes. A wait that ended while its put was being written is marked
// changed, so that its row is deleted too.
func (r *redeliveries) written(w pendingWrite) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, k := range w.gone {
		delete(r.stored, k)
	}
	for _, k := range w.putKeys {
		r.stored[k] = struct{}{}
		delete(r.fromMove, k)
		// In the registry now: no longer the held file's to keep.
		delete(r.fromFile, k)
		if r.pending[k] == nil {
			r.dirty[k] = struct{}{}
		}
	}
}

// maxUncertain bounds the devices a failed write adds to those
// remembered as stored (see unwritten), so that what is remembered to
// write stays bounded through a long outage.
const maxUncertain = redeliveryMax / 2

// room is how many more devices may wait.
func (r *redeliveries) room() int {
	return r.max - int(r.count.Load())
}

// unwritten marks keys changed again: their write failed. Its puts may
// have been stored all the same (a commit whose answer was lost), so
// they count as stored, for a wait that ends to have its row deleted,
// within a bound: past it, such a row may be sent again by the server
// that takes it after this one stops, a duplicate rather than a loss.
func (r *redeliveries) unwritten(keys, puts []redeliveryKey) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, k := range puts {
		if len(r.stored) < maxUncertain {
			r.stored[k] = struct{}{}
		}
	}
	for _, k := range keys {
		// A wait that ended and was never written leaves nothing to
		// write: remembering it would grow with every device that waits
		// while the registry refuses writes.
		if _, ok := r.stored[k]; ok || r.pending[k] != nil {
			r.dirty[k] = struct{}{}
		}
	}
}

// leaseLost ends the waits the registry gave to other servers when this
// one's lease ran out (keys, whose write was refused, excepted): whoever
// takes them sends them, this server too at its next take. It returns how
// many ended.
func (r *redeliveries) leaseLost(keys []redeliveryKey) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, k := range keys {
		r.dirty[k] = struct{}{}
	}
	n := 0
	for key, p := range r.pending {
		_, changed := r.dirty[key]
		if _, moved := r.fromMove[key]; moved || !changed {
			r.remove(key, p)
			delete(r.dirty, key)
			n++
		}
	}
	// The registry holds nothing of this server's now but what it writes
	// from here on.
	clear(r.stored)
	clear(r.fromMove)
	return n
}

// writePending writes to the registry what changed in the wait since the
// last write, under this server's lease, and renews the lease when it is
// due: a server that dies loses no push it kept more than a tick ago. It
// returns the write's error, if it made one.
func (s *Service) writePending(ctx context.Context) error {
	return s.writePendingWithin(ctx, s.redeliver.lease/3)
}

// writePendingWithin is writePending with the write bounded by within
// (and ctx).
func (s *Service) writePendingWithin(ctx context.Context, within time.Duration) error {
	r := s.redeliver
	w := r.changed()
	defer r.writeTried(w.changes)
	if len(w.keys) == 0 && len(r.moved) == 0 && (!r.leased || time.Since(r.renewed) < r.lease/3) {
		return nil
	}
	moved := len(r.moved)
	w.del = append(w.del, r.moved...)
	started := time.Now()
	// Bounded, so that a registry that hangs does not hold the loop, and
	// the attempts it starts, past a renewal or two.
	wctx, cancel := context.WithTimeout(ctx, within)
	err := s.store.KeepPushes(wctx, r.owner, r.lease, r.leased, w.put, w.del)
	cancel()
	switch {
	case err == nil:
		r.written(w)
		r.writesFailing.Store(false)
		r.moved = r.moved[moved:]
		if r.writeErr != nil {
			s.logger.Info("pushes waiting for redelivery written to the registry again")
		}
		r.writeErr = nil
		// With nothing waiting, the registry holds nothing of this
		// server's: there is no lease to keep.
		r.leased, r.renewed = r.count.Load() > 0, started
	case errors.Is(err, registry.ErrLeaseLost):
		s.lostLease(w.keys)
	default:
		r.writesFailing.Store(true)
		r.unwritten(w.keys, w.putKeys)
		if r.writeErr == nil && ctx.Err() == nil {
			s.logger.Warn("writing the pushes waiting for redelivery to the registry; they are lost if this server dies before a write succeeds", "err", err)
		}
		r.writeErr = err
	}
	return err
}

// holdPending writes what still waits to the registry at shutdown and
// releases it there, for the next server to start (or another instance)
// to send. What the registry refuses goes to the held file, for this
// server's next start (see redeliver_file.go).
func (s *Service) holdPending() {
	r := s.redeliver
	// A held file another process wrote since this one last looked (the
	// old process of an upgrade in place) is taken in first: the file
	// this stop may write replaces it.
	s.restoreHeldFile()
	ctx, cancel := context.WithTimeout(context.Background(), holdTimeout)
	defer cancel()
	// The whole of holdTimeout: no lease needs renewing after this
	// write, and a registry slower than a third of the lease (yet within
	// its statement_timeout) must not cost the pushes.
	if errors.Is(s.writePendingWithin(ctx, holdTimeout), registry.ErrLeaseLost) {
		// What changed since the last write is written under a new
		// lease; the rest went to the other servers.
		s.writePendingWithin(ctx, holdTimeout)
	}
	unwritten := r.unwrittenPushes()
	lost := len(unwritten)
	var fileErr error
	if lost > 0 && r.file != "" {
		// After the registry's attempt, which holdTimeout bounds: a
		// local write of a few MB at most, well within the stop's time.
		var saved int
		saved, fileErr = s.keepInFile(unwritten)
		if saved > 0 {
			s.logger.Warn("pushes waiting for redelivery written to the data directory's file of held pushes: the registry did not keep them; the next start sends them",
				"pushes", saved, "path", r.file, "err", r.writeErr)
		}
		if fileErr == nil && saved < lost {
			fileErr = fmt.Errorf("the file holds %d bytes at most", maxHeldFileBytes)
		}
		unwritten = unwritten[saved:]
	} else if lost == 0 && r.fileRestored {
		// The registry holds every push that waits, those read back
		// from the file among them.
		s.removeHeldFile("pushes read back from the file of held pushes are in the registry or ended: file removed")
	}
	waiting := r.dropAll()
	if len(unwritten) > 0 {
		r.mu.Lock()
		for _, rec := range unwritten {
			r.drop(rec.Push.App, DropShutdown, 1)
		}
		r.mu.Unlock()
		attrs := []any{"pushes", len(unwritten), "err", r.writeErr}
		if fileErr != nil {
			attrs = append(attrs, "path", r.file, "file_err", fileErr)
		}
		s.logger.Error("pushes waiting for redelivery lost at shutdown: neither the registry nor the file of held pushes kept them", attrs...)
	}
	if waiting == lost && !r.leased {
		return
	}
	if err := s.store.ReleasePushes(ctx, r.owner); err != nil {
		s.logger.Warn("releasing the pushes waiting for redelivery; the next server takes them once this one's lease has run out",
			"pushes", waiting-lost, "lease", r.lease, "err", err)
		return
	}
	s.logger.Info("pushes waiting for redelivery kept in the registry for the next start", "pushes", waiting-lost)
}

// TakeHeldSoon says another process has just released its waiting pushes
// in the registry (an instance that stopped, the old process of an upgrade)
// or, with apps named, handed over pushes of those apps, which it does not
// have: they are taken within a second instead of at the next look, up to
// heldPollInterval later. Handed-over pushes are looked for only by a
// server that has one of their apps: another would take them only to give
// them back, and meanwhile hide them from the one that has it. It does
// nothing while redelivery is off.
func (s *Service) TakeHeldSoon(apps ...string) {
	if s.redeliver == nil {
		return
	}
	if len(apps) > 0 && !slices.ContainsFunc(apps, func(app string) bool { _, ok := s.apps[app]; return ok }) {
		return
	}
	s.redeliver.takeSoon.Store(true)
}

// lostLease ends the waits the registry gave to other servers when this
// server's lease ran out (keys, whose write was refused, excepted; see
// leaseLost).
func (s *Service) lostLease(keys []redeliveryKey) {
	r := s.redeliver
	// The rows moved here went to the others with the rest.
	r.moved, r.refused = nil, nil
	n := r.leaseLost(keys)
	r.leased = false
	r.takeSoon.Store(true)
	s.logger.Warn("the registry gave the pushes this server kept for redelivery to other servers: it had not renewed its lease in time",
		"pushes", n, "lease", r.lease)
}

// takeHeld takes the pushes the registry holds (see holdPending), and
// those of the held file (see restoreHeldFile), into this server's wait.
func (s *Service) takeHeld(ctx context.Context) {
	// This server's own, before what others left: the registry's may be
	// older copies of the same waits.
	s.restoreHeldFile()
	const page = 1000
	kept := 0
	// Bounded as writePending is: the loop must not hang on it.
	tctx, cancel := context.WithTimeout(ctx, s.redeliver.lease/3)
	defer cancel()
	// Rows this server has no room for (in the token or unread half, or
	// the bytes) stay moved to it until the pages are read, so that the
	// next page is the rows behind them, then go back all at once: given
	// back at once, the oldest page would come first again at each take,
	// and a registered device's push behind it would never be taken.
	var allRefused []string
	leaseLost := false
	defer func() {
		m, _ := s.store.(registry.HeldMover)
		if len(allRefused) == 0 || leaseLost {
			return
		}
		// Back to whoever takes held pushes, this server too once it
		// has room: a row left under its lease would wait for its stop,
		// past the push's window. A context of its own: the pages may
		// have spent tctx.
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.redeliver.lease/3)
		defer cancel()
		if err := m.ReturnHeldPushes(rctx, s.redeliver.owner, allRefused); err != nil {
			// Under this server's lease, given back at the next take
			// (or with the rest at its stop).
			s.logger.Warn("giving back held pushes this server has no room for", "err", err)
			s.redeliver.refused = append(s.redeliver.refused, allRefused...)
		}
	}()
	if m, ok := s.store.(registry.HeldMover); ok && len(s.redeliver.refused) > 0 {
		if err := m.ReturnHeldPushes(tctx, s.redeliver.owner, s.redeliver.refused); err != nil {
			if ctx.Err() == nil {
				s.logger.Warn("giving back held pushes this server has no room for", "err", err)
			}
			return
		}
		s.redeliver.refused = nil
	}
	for range (s.redeliver.max + page - 1) / page {
		// Only what finds room: a push taken is gone from the registry,
		// and one this server has no room for is better left there for
		// an instance that has (or for this one, later).
		limit := min(page, s.redeliver.room())
		if limit <= 0 {
			break
		}
		var held []registry.HeldPush
		var err error
		m, moving := s.store.(registry.HeldMover)
		if moving {
			// Moved rather than deleted: until the write that holds what
			// they become here, the registry still has them, under this
			// server's lease (renewed, when it holds one: a lease that
			// ran out is lost, not started afresh).
			held, err = m.MoveHeldPushes(tctx, s.redeliver.owner, s.redeliver.lease, s.redeliver.leased, limit)
			if err == nil && len(held) > 0 {
				s.redeliver.leased, s.redeliver.renewed = true, time.Now()
			}
		} else {
			held, err = s.store.TakeHeldPushes(tctx, limit)
		}
		if errors.Is(err, registry.ErrLeaseLost) {
			// The rows moved here went to the others with the rest.
			leaseLost = true
			s.lostLease(nil)
			return
		}
		if err != nil {
			if ctx.Err() == nil {
				s.logger.Warn("reading the pushes held for redelivery", "err", err)
			}
			return
		}
		var refused []string
		for _, hp := range held {
			var h heldPush
			if err := json.Unmarshal(hp.Push, &h); err != nil || h.App == "" && !(h.Unread && h.ByNode) {
				s.redeliver.failed.Add(1)
				s.logger.Warn("a push held for redelivery cannot be read; skipped", "err", err)
				if moving {
					s.redeliver.moved = append(s.redeliver.moved, hp.Device)
				}
				continue
			}
			key, n, u := h.wait()
			// Held by a server whose app showed the summary's text
			// (another instance, or this one before a restart or a
			// reload): kept here only if this server's app shows it.
			n.Summary = s.keptSummary(n.App, n.Summary)
			// On this server's clock, when the store says how long ago
			// the push failed: the writer's may disagree with it.
			failed, notBefore := hp.FailedAt, h.NotBefore
			if hp.Age != 0 {
				failed = s.redeliver.now().Add(-hp.Age)
				if h.RetryAfterFailed > 0 {
					notBefore = failed.Add(h.RetryAfterFailed)
				}
			}
			if _, known := s.apps[h.App]; moving && h.App != "" && !known && s.redeliver.now().Sub(failed) <= s.redeliver.window {
				// An app this server does not have (added on another
				// instance and not yet here, in a rolling change of the
				// configuration): it could only keep the push until its
				// time ran out. Given back, it is sent by an instance
				// that has the app, or by this one once it has it. One
				// whose time ran out is taken, and ends as expired.
				refused = append(refused, hp.Device)
				continue
			}
			if s.redeliver.restore(key, n, u, h.Secret, h.Checked && h.ByNode, failed, notBefore, moving) {
				kept++
				if moving {
					s.redeliver.moved = append(s.redeliver.moved, hp.Device)
				}
			} else if moving {
				// No room (the wait's bytes, or its unread half).
				refused = append(refused, hp.Device)
			}
		}
		allRefused = append(allRefused, refused...)
		if len(held) < limit {
			break
		}
	}
	if kept > 0 {
		s.logger.Info("pushes held for redelivery taken from the registry", "pushes", kept)
	}
}

// elsewhere marks the push attempt a took as one to an app this server
// does not have: counted in that app's share of the room and written
// with its name, so that no instance without the app takes it from the
// registry (takeHeld), and handed over there once written (handOver).
func (r *redeliveries) elsewhere(a redeliveryAttempt, app string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	p := r.pending[a.key]
	if p != a.p || p.elsewhere && p.n.App == app {
		return
	}
	if p.n.App != app {
		r.release(p)
		p.n.App = app
		r.hold(p)
	}
	p.elsewhere = true
	r.dirty[a.key] = struct{}{}
}

// handOverAnnouncer is a registry that tells the other instances on it
// about pushes handed over, and for which apps (PostgreSQL's NOTIFY): one
// that has such an app takes them at once rather than at its next look.
type handOverAnnouncer interface {
	HandOverPushes(ctx context.Context, owner string, devices, apps []string) error
}

// handOver gives the registry back the pushes to apps this server does
// not have (see elsewhere) whose rows hold them as they are, and ends
// their waits here: an instance that has the app takes them, where this
// one could only keep them until their time ran out. In a rolling change
// that adds an app, the user's server sends pushes of the app to the
// instances without it too.
func (s *Service) handOver(ctx context.Context) {
	r := s.redeliver
	m, ok := s.store.(registry.HeldMover)
	if !ok || r.count.Load() == 0 {
		return
	}
	var keys []redeliveryKey
	var devices, apps []string
	r.mu.Lock()
	for key, p := range r.pending {
		_, stored := r.stored[key]
		_, changed := r.dirty[key]
		_, moved := r.fromMove[key]
		if p.elsewhere && !p.sending && stored && !changed && !moved {
			keys = append(keys, key)
			devices = append(devices, key.device())
			if !slices.Contains(apps, p.n.App) {
				apps = append(apps, p.n.App)
			}
		}
	}
	r.mu.Unlock()
	if len(keys) == 0 {
		return
	}
	rctx, cancel := context.WithTimeout(ctx, r.lease/3)
	var err error
	if a, ok := s.store.(handOverAnnouncer); ok {
		err = a.HandOverPushes(rctx, r.owner, devices, apps)
	} else {
		err = m.ReturnHeldPushes(rctx, r.owner, devices)
	}
	cancel()
	if err != nil {
		if ctx.Err() == nil {
			s.logger.Warn("giving back held pushes of apps this server does not have", "err", err)
		}
		return
	}
	n := 0
	r.mu.Lock()
	for _, key := range keys {
		// Its row is the registry's now, not this server's.
		delete(r.stored, key)
		// A push merged in meanwhile is written as this server's again,
		// and handed over in turn.
		if p := r.pending[key]; p != nil && !p.sending {
			if _, changed := r.dirty[key]; !changed {
				r.remove(key, p)
				r.handedOver.Add(1)
				n++
			}
		}
	}
	r.mu.Unlock()
	s.logger.Info("pushes of apps this server does not have left in the registry for an instance that has them", "pushes", n)
}
