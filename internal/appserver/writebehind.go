package appserver

import (
	"context"
	"hash/maphash"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/push-appserver/push-appserver/internal/push"
	"github.com/push-appserver/push-appserver/internal/registry"
)

// statusWriter collects push outcomes and writes them in one transaction per
// interval, or sooner once earlyBatch are pending, so the push path never
// waits for the disk. Outcomes for the same node and kind (success or
// error) pending together collapse into the latest, which is all the
// record keeps anyway, and a device's success is written at most once
// every successResolution.
//
// A write the store refuses (PostgreSQL down, a full disk) is not lost:
// its outcomes stay pending, at most maxHeld of them, and are written
// again at the next interval. Writing an outcome twice is harmless, as
// the store keeps the later of two times.
type statusWriter struct {
	store  registry.Store
	logger *slog.Logger
	// maxHeld bounds pending, so that an outage of the store costs a
	// bounded amount of memory; outcomes beyond it are dropped.
	maxHeld int

	mu      sync.Mutex
	pending map[statusKey]registry.PushStatus
	kick    chan struct{}
	// writing is how many outcomes the write under way carries.
	writing int
	// dropped counts the outcomes lost: beyond maxHeld, or pending
	// when a last write at Close failed.
	dropped uint64
	// failing is when the store began refusing writes, zero while it
	// takes them; loggedAt is when that was last logged.
	failing, loggedAt time.Time

	// written holds the nodes whose success was handed to the store
	// since writtenSince: a later success of theirs is dropped until the
	// set is emptied, successResolution after writtenSince.
	written      *recentSet
	writtenSince time.Time
	seed         maphash.Seed

	// changes holds, for tokenChangeMemory after a renewal brought a
	// node another token, that token (as its app compares tokens): a push
	// that set out to the old token and is answered after the renewal
	// took the old token's push, and its success must not become the new
	// token's proof (tokenWorked). prunedAt is when changes last shed its
	// old entries.
	changes  map[string]tokenChange
	nChanges atomic.Int64 // len(changes), read without the lock
	prunedAt time.Time
}

// tokenChange is a node's new token and when it was set (this process's
// clock, monotonic).
type tokenChange struct {
	token string
	at    time.Time
}

// tokenChangeMemory is how long a token change is remembered: longer than
// a push can be on its way, from the read of its registration through
// the throttle's wait and the push service's answer.
const tokenChangeMemory = 10 * time.Minute

// successResolution is how often at most a device's success is written: a
// registration's last_successful_push lags its last push by at most this.
// A device pushed to every few seconds (a busy group chat) would
// otherwise have its row rewritten every interval. On SQLite each row
// written is a page read and a page in the write-ahead log, and that page
// takes the place of one the push path's reads keep in the shared page
// cache. Errors are rare, carry a reason, and are all written.
const successResolution = time.Minute

// writtenBuckets sizes written: 262,144 nodes in 1 MB, allocated once. A
// map of as many hashes, filled by pushes to a million devices, raised
// the server's peak RSS from 125.6 to 140.1 MB (the garbage collector
// lets the heap grow in proportion to what it holds); this set to 129.2.
const writtenBuckets = 1 << 16

type statusKey struct {
	node    string
	success bool
}

// maxPending is how many outcomes trigger a write before the interval ends.
const maxPending = 4096

// maxHeld is how many outcomes (one per device and kind) wait while the
// store refuses them: about 8 MB, minutes of pushes to distinct devices
// on a busy server, while a device pushed to again takes no more room.
const maxHeld = 1 << 16

// failureLogEvery spaces the log lines of a store that keeps refusing
// outcomes: one a minute rather than one a write.
const failureLogEvery = time.Minute

// statusWriteTimeout bounds one write of outcomes: a database that went
// silent (its host gone, its address moved) must neither stop the
// write-behind for good nor hold a shutdown past its bound.
const statusWriteTimeout = 5 * time.Second

// earlyBatch outcomes pending trigger a write earlyGap after the last
// one, before the interval ends. A write is a burst of the writer's CPU
// (about 7 µs a row on SQLite): at 2,000 pushes/s a second's outcomes in
// one go showed in the p99 of every push (12-18 ms; 4.4-5.0 ms written
// every 100 ms). Writing whatever is pending every 100 ms instead cost
// the closed loops a few per cent, as each commit empties the SQLite
// read connections' page caches; a server with little to write still
// writes once an interval.
const (
	earlyBatch = 256
	earlyGap   = 100 * time.Millisecond
)

func newStatusWriter(store registry.Store, logger *slog.Logger) *statusWriter {
	return &statusWriter{
		store:   store,
		logger:  logger,
		maxHeld: maxHeld,
		pending: make(map[statusKey]registry.PushStatus),
		kick:    make(chan struct{}, 1),
		written: newRecentSet(writtenBuckets),
		seed:    maphash.MakeSeed(),
		changes: make(map[string]tokenChange),
	}
}

func (w *statusWriter) add(s registry.PushStatus) {
	k := statusKey{s.Node, s.Success}
	w.mu.Lock()
	// A success pending already is replaced by the later one, as before:
	// the resolution is between writes, not within one.
	_, pending := w.pending[k]
	if !pending && s.Success && !w.record(s) {
		w.mu.Unlock()
		return
	}
	if !pending && len(w.pending) >= w.maxHeld {
		w.dropped++
		w.mu.Unlock()
		return
	}
	w.pending[k] = s
	n := len(w.pending)
	w.mu.Unlock()
	if n == earlyBatch || n >= maxPending {
		select {
		case w.kick <- struct{}{}:
		default:
		}
	}
}

// record says whether success s is to be written, and notes it if so.
// w.mu must be held.
func (w *statusWriter) record(s registry.PushStatus) bool {
	if s.At.Sub(w.writtenSince) >= successResolution {
		w.written.clear()
		w.writtenSince = s.At
	}
	return !w.written.add(maphash.String(w.seed, s.Node))
}

// pendingSuccess returns node's success not written to the store yet,
// if there is one.
func (w *statusWriter) pendingSuccess(node string) (time.Time, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	st, ok := w.pending[statusKey{node, true}]
	return st.At, ok
}

// forget drops what record noted of node, so that its next success is
// written: a node registered afresh starts without outcomes.
func (w *statusWriter) forget(node string) {
	h := maphash.String(w.seed, node)
	w.mu.Lock()
	w.written.remove(h)
	w.mu.Unlock()
}

// addSuccess records a push to node's token that went through; token is
// the token the push went to, canon (nil for none) how its app compares
// tokens. A push that set out before a renewal brought the node another
// token is not recorded: the success is the old token's, and says
// nothing of the new one. Without a renewal of that kind lately, which
// is nearly always, it costs the push one atomic load.
func (w *statusWriter) addSuccess(node, token string, canon push.TokenCanonicalizer, at time.Time) {
	if w.nChanges.Load() > 0 {
		w.mu.Lock()
		c, changed := w.changes[node]
		w.mu.Unlock()
		if changed && c.token != token && (canon == nil || c.token != canon.CanonicalToken(token)) {
			return
		}
	}
	w.add(registry.PushStatus{Node: node, At: at, Success: true})
}

// tokenSet notes that a renewal gave node token (as its app compares
// tokens), once the registry holds it, and drops node's pending success:
// whatever push it records set out before, to the old token (or, in
// the moment since the write, to the new one: a proof lost, not a false
// one made).
func (w *statusWriter) tokenSet(node, token string) {
	now := time.Now()
	w.mu.Lock()
	defer w.mu.Unlock()
	delete(w.pending, statusKey{node, true})
	w.changes[node] = tokenChange{token: token, at: now}
	w.pruneChangesLocked(now)
}

// pruneChanges forgets the token changes older than tokenChangeMemory,
// once a minute at most: called by the writer's loop too, so that the
// pushes' check ends once the last change is forgotten.
func (w *statusWriter) pruneChanges(now time.Time) {
	if w.nChanges.Load() == 0 {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.pruneChangesLocked(now)
}

func (w *statusWriter) pruneChangesLocked(now time.Time) {
	if now.Sub(w.prunedAt) >= time.Minute {
		w.prunedAt = now
		for n, c := range w.changes {
			if now.Sub(c.at) > tokenChangeMemory {
				delete(w.changes, n)
			}
		}
	}
	w.nChanges.Store(int64(len(w.changes)))
}

// run writes pending outcomes every interval, and sooner when earlyBatch
// or maxPending of them are pending, until ctx is done.
func (w *statusWriter) run(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	last := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-w.kick:
			if w.retrying() {
				// A store that refused the last write is tried again
				// once an interval, not at every outcome past
				// maxPending.
				continue
			}
			if wait := earlyGap - time.Since(last); wait > 0 && w.pendingLen() < maxPending {
				select {
				case <-ctx.Done():
					return
				case <-time.After(wait):
				}
			}
		}
		if ctx.Err() != nil {
			// Told to stop while its ticker was ready too: select
			// picks either, and each write that takes its timeout on
			// a silent database adds it to the stop. close makes the
			// last attempt.
			return
		}
		w.flush(ctx)
		last = time.Now()
		w.pruneChanges(last)
	}
}

func (w *statusWriter) pendingLen() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.pending)
}

func (w *statusWriter) retrying() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return !w.failing.IsZero()
}

// StatusStats describes the write-behind of push outcomes.
type StatusStats struct {
	// Pending is how many outcomes wait to be written, or are being
	// written: since the last write, or since the store began refusing
	// them.
	Pending int
	// Dropped counts the outcomes never written: beyond the maxHeld
	// waiting, or still refused when the service closed.
	Dropped uint64
}

func (w *statusWriter) stats() StatusStats {
	w.mu.Lock()
	defer w.mu.Unlock()
	return StatusStats{Pending: len(w.pending) + w.writing, Dropped: w.dropped}
}

// flush writes what is pending now. What the store refuses stays pending.
func (w *statusWriter) flush(ctx context.Context) {
	w.mu.Lock()
	if len(w.pending) == 0 {
		w.mu.Unlock()
		return
	}
	batch := make([]registry.PushStatus, 0, len(w.pending))
	for _, s := range w.pending {
		batch = append(batch, s)
	}
	clear(w.pending)
	w.writing += len(batch)
	w.mu.Unlock()
	// In the order of the store's key, consecutive outcomes find their
	// rows on the page the one before read, not wherever the map's order
	// and devices' scattered nodes would send each: writing 5,000
	// outcomes to scattered devices among 100,000 on SQLite took 7.4-7.8
	// us a row sorted, 10.5-10.7 not.
	slices.SortFunc(batch, func(a, b registry.PushStatus) int { return strings.Compare(a.Node, b.Node) })
	// At most maxPending a transaction: what was held through an outage
	// does not hold the registry's write lock, or run into PostgreSQL's
	// statement_timeout, in one go.
	var err error
	written := 0
	for written < len(batch) && err == nil {
		chunk := batch[written:min(written+maxPending, len(batch))]
		wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), statusWriteTimeout)
		err = w.store.UpdatePushStatus(wctx, chunk)
		cancel()
		if err == nil {
			written += len(chunk)
		}
	}
	now := time.Now()
	w.mu.Lock()
	defer w.mu.Unlock()
	w.writing -= len(batch)
	if err == nil {
		if !w.failing.IsZero() {
			w.logger.Info("push outcomes written again", "count", len(batch), "refused_for", now.Sub(w.failing).Round(time.Second), "dropped", w.dropped)
			w.failing = time.Time{}
		}
		return
	}
	// Put back what is not written nor pending anew: a later outcome for
	// the same node and kind, added during the write, replaces the older
	// one.
	for _, s := range batch[written:] {
		k := statusKey{s.Node, s.Success}
		if _, newer := w.pending[k]; newer {
			continue
		}
		if len(w.pending) >= w.maxHeld {
			w.dropped++
			continue
		}
		w.pending[k] = s
	}
	if w.failing.IsZero() {
		w.failing = now
	} else if now.Sub(w.loggedAt) < failureLogEvery {
		return
	}
	w.loggedAt = now
	w.logger.Error("writing push outcomes; holding them to write again", "held", len(w.pending), "dropped", w.dropped, "since", w.failing.Format(time.RFC3339), "err", err)
}

// close writes what is pending a last time, and counts as dropped what the
// store still refuses.
func (w *statusWriter) close(ctx context.Context) {
	w.flush(ctx)
	w.mu.Lock()
	defer w.mu.Unlock()
	if n := len(w.pending); n > 0 {
		w.dropped += uint64(n)
		clear(w.pending)
		w.logger.Error("push outcomes not written before stopping", "count", n)
	}
}

// recentSet is a set of 64-bit hashes in fixed memory that forgets when
// full: buckets of four 32-bit fingerprints, a bucket chosen by a hash's
// low bits and the fingerprint taken from its high ones. A hash added to
// a full bucket takes the place of one of the four. What it forgets only
// costs a write, and what it wrongly holds (another hash with the same
// bucket and fingerprint, one chance in 2^32 per lookup) a minute of a
// timestamp.
type recentSet struct {
	buckets [][4]uint32
}

// newRecentSet makes a set of n buckets, a power of two.
func newRecentSet(n int) *recentSet {
	return &recentSet{buckets: make([][4]uint32, n)}
}

// slot returns h's bucket and fingerprint; 0 marks a free place, so a
// fingerprint is never 0.
func (s *recentSet) slot(h uint64) (*[4]uint32, uint32) {
	return &s.buckets[h&uint64(len(s.buckets)-1)], uint32(h>>32) | 1
}

// add reports whether h was in the set, and adds it if it was not.
func (s *recentSet) add(h uint64) bool {
	b, fp := s.slot(h)
	free := -1
	for i, v := range b {
		if v == fp {
			return true
		}
		if v == 0 && free < 0 {
			free = i
		}
	}
	if free < 0 {
		free = int(h>>16) & 3
	}
	b[free] = fp
	return false
}

func (s *recentSet) remove(h uint64) {
	b, fp := s.slot(h)
	for i, v := range b {
		if v == fp {
			b[i] = 0
		}
	}
}

func (s *recentSet) clear() { clear(s.buckets) }
