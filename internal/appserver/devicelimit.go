package appserver

import (
	"hash/maphash"
	"sync"
	"time"
)

// DefaultRateLimitPerToken is the configuration's default for
// Options.RateLimitPerToken. The throttle lets each node send one push per
// window and priority, so a phone with 16 accounts on one app and one
// server, each sending an alert and a silent push in the same window,
// stays within it; a phone registered under hundreds of nodes by a
// stranger, who pushes through them from one address, does not.
const DefaultRateLimitPerToken = 32

// maxLimitedDevices bounds the devices the per-device limit tracks at
// once, each with each source that pushed to it (53 bytes each as
// measured, 14 MB in all): those pushed to within one window, which for
// a server that is not flooded are far fewer.
const maxLimitedDevices = 1 << 18

// deviceLimiter bounds the pushes to one device (an app and its device
// token, in the canonical spelling) that one source asks for to limit
// per window, whatever nodes they come through. The throttle goes by
// node, and registration is open: whoever knows a token can register it
// under any number of nodes and push through each, a push per node and
// window. This limit is looser than the throttle, and only that case
// reaches it.
//
// Each source has a budget of its own (PushRequest.Source: the user's
// XMPP server, or the HTTP client's address). Were the device's budget
// one for all, a stranger who registered its token under limit nodes
// would spend it at the start of every window, and the pushes of the
// user's own server would be refused, each a notification lost. Per
// source, the stranger spends their own, and the user's server keeps
// its limit; a stranger with many addresses or domains gets limit
// pushes through each, as they could send before this limit from as
// many nodes.
//
// A window starts at a device's first push from a source and lasts
// window; the pushes past limit in it are refused, as the throttle
// refuses its own overflow. None waits for this limit: a push waits for
// its node's window at most, which the throttle bounds by the push's
// deadline.
//
// A device and source are keyed by a 64-bit hash of the token, the app
// and the source, with secret seeds: a key costs the same whatever the
// token's length (a WebPush endpoint may take 4 KB), the map holds no
// pointers for the collector to follow, and no one can pick tokens or
// sources that share a count with someone else's. Three hashes xored
// cost less than the strings joined, which maphash.Hash would copy into
// its buffer.
type deviceLimiter struct {
	window     time.Duration
	limit      uint32
	maxDevices int
	now        func() time.Time
	base       time.Time    // windows are kept as offsets from it
	seed       maphash.Seed // the token's
	appSeed    maphash.Seed
	sourceSeed maphash.Seed
	overflowed func() // called once, under mu, when maxDevices are tracked

	mu        sync.Mutex
	devices   map[uint64]deviceWindow
	lastSweep time.Duration
	warned    bool
}

type deviceWindow struct {
	start time.Duration // since base
	n     uint32        // pushes admitted in the window
}

// newDeviceLimiter returns a limit of limit pushes per window and device,
// tracking maxDevices at most, or nil, which admits everything, when
// window or limit is not positive.
func newDeviceLimiter(window time.Duration, limit, maxDevices int, now func() time.Time, overflowed func()) *deviceLimiter {
	if window <= 0 || limit <= 0 {
		return nil
	}
	return &deviceLimiter{
		window:     window,
		limit:      uint32(min(limit, 1<<31)),
		maxDevices: maxDevices,
		now:        now,
		base:       now(),
		seed:       maphash.MakeSeed(),
		appSeed:    maphash.MakeSeed(),
		sourceSeed: maphash.MakeSeed(),
		overflowed: overflowed,
		devices:    make(map[uint64]deviceWindow),
	}
}

// admit counts a push to token of app that source asked for, sent at
// at, and says whether it may be sent.
//
// A device and source seen first while maxDevices are tracked within their window
// is let through uncounted: under a flood of distinct tokens, refusing it
// would keep every other device's pushes from going out, while the
// devices already tracked, the one pushed to through many nodes among
// them, stay limited.
func (l *deviceLimiter) admit(app, token, source string, at time.Time) bool {
	if l == nil {
		return true
	}
	key := maphash.String(l.seed, token) ^ maphash.String(l.appSeed, app) ^ maphash.String(l.sourceSeed, source)
	now := at.Sub(l.base)
	l.mu.Lock()
	defer l.mu.Unlock()
	w, ok := l.devices[key]
	switch {
	case ok && now-w.start < l.window:
		if w.n >= l.limit {
			return false
		}
		w.n++
	case !ok && len(l.devices) >= l.maxDevices && !l.makeRoom(now):
		return true
	default:
		w = deviceWindow{start: now, n: 1}
	}
	l.devices[key] = w
	return true
}

// makeRoom sweeps the ended windows out, at most once a second: a flood
// of new devices while the map is full of live windows must not make
// every push walk it. It reports whether there is room now.
func (l *deviceLimiter) makeRoom(now time.Duration) bool {
	if now-l.lastSweep >= time.Second {
		l.lastSweep = now
		l.sweepLocked(now)
	}
	if len(l.devices) < l.maxDevices {
		return true
	}
	if !l.warned && l.overflowed != nil {
		l.overflowed()
	}
	l.warned = true
	return false
}

// sweep drops the devices whose window has ended, which are as good as
// never seen: memory follows the devices pushed to within a window.
func (l *deviceLimiter) sweep() {
	if l == nil {
		return
	}
	now := l.now().Sub(l.base)
	l.mu.Lock()
	l.sweepLocked(now)
	l.mu.Unlock()
}

func (l *deviceLimiter) sweepLocked(now time.Duration) {
	for k, w := range l.devices {
		if now-w.start >= l.window {
			delete(l.devices, k)
		}
	}
}

// size returns the number of devices tracked.
func (l *deviceLimiter) size() int {
	if l == nil {
		return 0
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.devices)
}
