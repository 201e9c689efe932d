package appserver

import (
	"context"
	"hash/maphash"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/push-appserver/push-appserver/internal/registry"
)

// statusWriter collects push outcomes and writes them in one transaction per
// interval, so the push path never waits for the disk. Outcomes for the
// same node and kind (success or error) within one interval collapse into
// the latest, which is all the record keeps anyway, and a device's success
// is written at most once every successResolution.
type statusWriter struct {
	store  registry.Store
	logger *slog.Logger

	mu      sync.Mutex
	pending map[statusKey]registry.PushStatus
	kick    chan struct{}

	// written holds the nodes whose success was handed to the store
	// since writtenSince: a later success of theirs is dropped until the
	// set is emptied, successResolution after writtenSince. Nodes are kept
	// as a 64-bit hash: as strings, with a time each, 65,536 of them added
	// 29 MB to the server's peak RSS in pushbench. Two nodes sharing a
	// hash would cost one of them a minute of its timestamp.
	written      map[uint64]struct{}
	writtenSince time.Time
	seed         maphash.Seed
}

// successResolution is how often at most a device's success is written: a
// registration's last_successful_push lags its last push by at most this.
// A device pushed to every few seconds (a busy group chat) would
// otherwise have its row rewritten every interval. On SQLite each row
// written is a page read and a page in the write-ahead log, and that page
// takes the place of one the push path's reads keep in the shared page
// cache. Errors are rare, carry a reason, and are all written.
const successResolution = time.Minute

// maxWritten bounds written (about 10 bytes a node, 2.5 MB in all);
// successes to devices beyond it are written every interval.
const maxWritten = 1 << 18

type statusKey struct {
	node    string
	success bool
}

// maxPending is how many outcomes trigger a write before the interval ends.
const maxPending = 4096

func newStatusWriter(store registry.Store, logger *slog.Logger) *statusWriter {
	return &statusWriter{
		store:   store,
		logger:  logger,
		pending: make(map[statusKey]registry.PushStatus),
		kick:    make(chan struct{}, 1),
		written: make(map[uint64]struct{}),
		seed:    maphash.MakeSeed(),
	}
}

func (w *statusWriter) add(s registry.PushStatus) {
	k := statusKey{s.Node, s.Success}
	w.mu.Lock()
	// A success pending already is replaced by the later one, as before:
	// the resolution is between writes, not within one.
	if _, pending := w.pending[k]; !pending && s.Success && !w.record(s) {
		w.mu.Unlock()
		return
	}
	w.pending[k] = s
	n := len(w.pending)
	w.mu.Unlock()
	if n >= maxPending {
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
		clear(w.written)
		w.writtenSince = s.At
	}
	h := maphash.String(w.seed, s.Node)
	if _, ok := w.written[h]; ok {
		return false
	}
	if len(w.written) < maxWritten {
		w.written[h] = struct{}{}
	}
	return true
}

// forget drops what record noted of node, so that its next success is
// written: a node registered afresh starts without outcomes.
func (w *statusWriter) forget(node string) {
	h := maphash.String(w.seed, node)
	w.mu.Lock()
	delete(w.written, h)
	w.mu.Unlock()
}

// run writes pending outcomes every interval until ctx is done.
func (w *statusWriter) run(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-w.kick:
		}
		w.flush(ctx)
	}
}

// flush writes what is pending now.
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
	w.mu.Unlock()
	// In the order of the store's key, consecutive outcomes find their
	// rows on the page the one before read, not wherever the map's order
	// and devices' scattered nodes would send each: writing 5,000
	// outcomes to scattered devices among 100,000 on SQLite took 7.4-7.8
	// us a row sorted, 10.5-10.7 not.
	slices.SortFunc(batch, func(a, b registry.PushStatus) int { return strings.Compare(a.Node, b.Node) })
	// A failed write loses only timestamps, never a registration; log it
	// rather than retry forever against a broken disk.
	if err := w.store.UpdatePushStatus(context.WithoutCancel(ctx), batch); err != nil {
		w.logger.Error("writing push status", "count", len(batch), "err", err)
	}
}
