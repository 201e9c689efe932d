package appserver

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/push-appserver/push-appserver/internal/push"
	"github.com/push-appserver/push-appserver/internal/registry"
)

// Redelivery of pushes the push service did not take.
//
// A push that fails for a reason that may pass (the push service's
// outage, its 5xx or 429 answers, a broken connection, a retry budget
// spent) is answered "try again later", but XMPP servers do not try
// again: Prosody and ejabberd send each push once. Without more, a
// message that arrives during a minute of APNS trouble never wakes its
// device. So the core keeps such a push, one per device, and sends it
// again with backoff until it goes through or Options.Redelivery has
// passed since the device's latest failed push.
//
// A push that goes through to the device meanwhile ends its wait: the
// device is awake and fetches every message. A registered node's
// registration is read again before each attempt, so a device that
// unregistered or got a new token meanwhile is never pushed to with what
// it left. VoIP pushes are not kept: iOS rings for each, and a call rung
// minutes late is over.
//
// A push whose registration could not be read (the registry away, the
// device not in the cache, or its outage grace spent) is kept too, with
// the secret it came with: the registration, read when the registry
// answers again, decides whether it goes out at all, to which app, and
// at which priority. Such a push is "unread": it never replaces a push
// to the device whose secret was checked, nor one with another secret,
// since whoever sent it may have guessed the node; one with another
// secret waits beside it instead, since the one waiting may be the
// guess (see keepUnread); and it takes at most
// half the room, so that a flood of unknown nodes during an outage
// cannot crowd out pushes the push service refused.
//
// What waits is written to the registry too, within a second of each
// change (Store.KeepPushes; see redeliver_registry.go), under a lease
// this server renews while it runs, so that no push is lost with the
// process. At a clean stop the server releases them, and the next server
// to start, or an instance still running on the same registry, takes them
// at once; a server that died without a word leaves them to be taken once
// its lease has run out.

// DefaultRedelivery is how long a failed push is tried again unless
// configured: longer than the push services' usual incidents, short
// enough that the wake-up still concerns a recent message.
const DefaultRedelivery = 10 * time.Minute

const (
	// redeliveryMax bounds the devices waiting, and redeliveryMaxBytes
	// the text they hold (summaries, encrypted payloads, tokens): a long
	// outage of a large deployment must not take the server's memory.
	// Unread pushes may take half the devices, and pushes to a token the
	// publish named half of each. The room is all apps', shared as
	// makeRoom says.
	redeliveryMax      = 65536
	redeliveryMaxBytes = 32 << 20
	// redeliveryEntryBytes is what an entry costs beside its text.
	redeliveryEntryBytes = 256
	// redeliveryBase and redeliveryMaxWait shape the backoff between
	// attempts: the push's own retries have just spent seconds, and a
	// recovering service should not get every waiting push at once.
	redeliveryBase    = 5 * time.Second
	redeliveryMaxWait = time.Minute
	// redeliveryConcurrency bounds the attempts of one app under way at
	// once, and redeliveryBatch those of an app taken out at a tick to
	// start as slots free (see redeliverLoop).
	redeliveryConcurrency = 64
	redeliveryBatch       = 4096
	// redeliveryTick is how often due attempts are looked for.
	redeliveryTick = time.Second
	// heldPollInterval is how often the registry is asked for pushes
	// released by instances that stopped or whose lease ran out.
	heldPollInterval = 10 * time.Second
	// redeliveryLease is how long the registry keeps the pushes this
	// server wrote for it alone without hearing from it: a server that
	// died leaves its pushes to the others (or to its successor) after
	// this long. It is renewed every third of it, so that a renewal or
	// two may fail (a slow database) without the lease running out.
	redeliveryLease = 10 * time.Second
	// redeliverySummaryInterval is how often the log sums up what
	// redelivery did, when it did anything.
	redeliverySummaryInterval = time.Minute
	// holdTimeout bounds the write of the waiting pushes at shutdown.
	holdTimeout = 10 * time.Second
)

// RedeliveryStats counts what became of the pushes kept for
// redelivery.
type RedeliveryStats struct {
	Pending int // devices waiting now
	// Kept counts failed pushes kept (a device's later failures, merged
	// into its wait, are not counted again); Dropped those not kept for
	// want of room, or waiting at shutdown when the registry could not
	// hold them.
	Kept, Dropped uint64
	// Delivered went through on a later attempt; Expired were still
	// failing when their time ran out; Gone found the registration
	// removed or the token dead; Failed met a failure that cannot pass
	// (a payload the service refuses; a push to an app left out of the
	// configuration waits instead, since putting it back is ours to do).
	// Superseded ended because a later push to the device went through.
	// Gone also counts unread pushes whose node was not registered or
	// whose secret was not the registration's. HandedOver were to an app
	// this server does not have, and were given through the registry to
	// an instance that has it (see handOver), which counts how they end
	// there.
	Delivered, Expired, Gone, Failed, Superseded, HandedOver uint64
}

// DropReason says why redelivery dropped a push.
type DropReason string

const (
	// DropNoRoom: the push found no room to wait (the room, or the half
	// of it unread pushes or pushes to a named token may take), or
	// would have taken its device's wait past the room's bytes.
	DropNoRoom DropReason = "no_room"
	// DropGavePlace: the push waited, and gave its place to another
	// app's once the room was full (see makeRoom).
	DropGavePlace DropReason = "gave_place"
	// DropShutdown: the push waited at shutdown, and neither the
	// registry nor the held file (Options.HeldFile) kept it.
	DropShutdown DropReason = "shutdown"
	// DropExpiredStopped: the push was kept in the held file at a stop,
	// and its redelivery window passed before the next start read it
	// back: sent that late, it would wake the device for nothing it
	// still waits for.
	DropExpiredStopped DropReason = "expired_while_stopped"
)

// UnreadApp stands for the app of a push whose registration could not
// be read, which only the registration says.
const UnreadApp = "unknown"

// RedeliveryDrop names whose pushes redelivery dropped, and why. App is
// the push's app: a configured one (or one of a push taken from the
// registry, which a server configured with it kept), or UnreadApp; never
// one a publish chose, so the apps stay a handful.
type RedeliveryDrop struct {
	App    string
	Reason DropReason
}

// redeliveryKey names the device of a kept push: a registered node, or
// for token pushes (tokenless, publish-options) the app and token.
type redeliveryKey struct {
	node, app, token string
	// unread, for a push to node whose registration could not be read,
	// names the secret it came with (unreadName) when another push with
	// another secret waited for node first: each waits apart, and the
	// registration, once read, decides which goes out. "" for the first.
	unread string
}

// unreadName is what a key names an unread push's secret by: a hash,
// so that keys, and the device names the registry holds them by, carry
// no secret.
func unreadName(secret string) string {
	h := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(h[:16])
}

type pendingPush struct {
	n push.Notification
	// unread is what a push whose registration could not be read came
	// with, to check once it can be; nil for pushes checked already.
	unread *unreadPush
	// secret is the secret of the registration a checked push to a node
	// was sent with (checked set): redelivery sends it only while the
	// node's registration still has it, since a registration with
	// another secret is one the push's sender never pushed to.
	secret  string
	checked bool
	size    int
	token   bool      // a push to a token the publish named (see tokens)
	failed  time.Time // the device's latest failure; the wait ends Redelivery after it
	due     time.Time
	// notBefore is the push service's Retry-After, which no attempt
	// comes before, even once its service is back (appsBack).
	notBefore time.Time
	wait      push.Backoff
	// outage says the latest failure was the push service's as a whole
	// (see outage), so that another push's success says it may go
	// through now. hastened says appsBack made it due, until an attempt
	// takes it; spent that such an attempt failed: the push then waits
	// for an attempt of its own backoff to fail before appsBack makes it
	// due again, so that a push that keeps failing while the others go
	// through is not sent at every tick.
	outage, hastened, spent bool
	// elsewhere says the push is to an app this server does not have
	// (see handOver): it goes back to the registry, for an instance
	// that has the app, once the registry holds it as it is.
	elsewhere bool
	// sending is set while an attempt is under way; gen counts the
	// failures merged in, so an attempt that went through can tell
	// whether a newer push failed meanwhile.
	sending bool
	gen     uint64

	// key names p's device; room is the share of the room p is counted
	// in (its app's), and older and newer link p among that app's pushes.
	key          redeliveryKey
	room         *appRoom
	older, newer *pendingPush
}

// appRoom is what the pushes of one app hold of the room: the devices
// waiting, the bytes they count, and the pushes in the order their wait
// began or last took a failure here, oldest first, the one given up
// when another app needs the place (see makeRoom). Unread pushes, whose
// app is not known yet, have one under "".
type appRoom struct {
	count, bytes   int
	oldest, newest *pendingPush
}

// unreadPush is what decides, once its registration can be read, whether
// and how a push goes out. It is never changed once made: attempts under
// way share it.
type unreadPush struct {
	secret    string
	important bool // see PushRequest.Important
}

// redeliveryAttempt is one due push, taken out under the lock.
type redeliveryAttempt struct {
	key    redeliveryKey
	p      *pendingPush
	n      push.Notification
	unread *unreadPush
	// secret and checked are the pendingPush's.
	secret  string
	checked bool
	gen     uint64
	// hastened: appsBack made it due (see pendingPush).
	hastened bool
}

type redeliveries struct {
	window time.Duration
	now    func() time.Time
	// base, maxWait, tick, poll and lease are redeliveryBase,
	// redeliveryMaxWait, redeliveryTick, heldPollInterval and
	// redeliveryLease but in tests; max and maxBytes are redeliveryMax
	// and redeliveryMaxBytes.
	base, maxWait, tick, poll, lease time.Duration
	max, maxBytes                    int
	// owner names this server in the registry, whose lease holds the
	// pushes it wrote (see writePending).
	owner string

	mu      sync.Mutex
	pending map[redeliveryKey]*pendingPush
	// others holds, by node, the unread pushes waiting beside the node's
	// first with secrets of their own (redeliveryKey.unread), so that
	// they end with it when the node is gone or a push to it went
	// through.
	others map[string]map[string]struct{}
	bytes  int
	unread int // pending pushes whose registration is still to be read
	// tokens and tokenBytes are the pending pushes to a token the
	// publish named (tokenless, publish-options): anyone may send those,
	// so they take at most half the room, as unread pushes do.
	tokens, tokenBytes int
	// apps holds what each app holding a pending push holds of the room.
	apps map[string]*appRoom
	// dirty holds the devices whose wait changed (began, took another
	// push, ended) since it was last written to the registry.
	dirty map[redeliveryKey]struct{}
	// stored holds the devices whose push the registry may hold: written
	// and not deleted since. Only their end needs writing; a wait that
	// began and ended while the registry refused writes leaves nothing to
	// write, so dirty stays within the wait's bound through an outage.
	stored map[redeliveryKey]struct{}
	// count is len(pending), read without the lock by every push that
	// went through: while nothing waits, that costs one atomic load.
	count atomic.Int64

	// outages counts the pending pushes whose latest failure was an
	// outage of their push service, read without the lock by every push
	// that went through: while none waits, took costs one atomic load.
	outages atomic.Int64

	kept, dropped, delivered, expired, gone, failed, superseded, handedOver atomic.Uint64
	// drops counts what dropped does by app and reason: since apps share
	// the room by eviction, the total does not say whose pushes were
	// lost. Guarded by mu, which every drop holds already.
	drops map[RedeliveryDrop]uint64

	// back holds the apps (name to struct{}) a push went through to
	// since the loop's last tick while outage pushes waited: their
	// service takes pushes again, and the loop makes those pushes due
	// (appsBack). A sync.Map, which finds an app already there without a
	// lock: every push that goes through meanwhile looks.
	back sync.Map

	// takeSoon asks the loop to take what the registry holds at its next
	// tick rather than its next poll (see TakeHeldSoon).
	takeSoon atomic.Bool

	// Of the loop alone: whether this server holds a lease to renew, when
	// it last renewed it, and why the last write failed, if it did.
	leased   bool
	renewed  time.Time
	writeErr error
	// moved names the rows a take moved to this server (see
	// registry.HeldMover), deleted by the next write, which holds what
	// they became here.
	moved []string
	// fromMove holds the devices whose wait is a moved row's push alone,
	// not yet written as this server's: at a lost lease, the row went to
	// the others, and the wait with it. refused names the moved rows
	// whose give-back failed, given back at the next take.
	fromMove map[redeliveryKey]struct{}
	refused  []string

	// file is the held file (Options.HeldFile), "" for none. Of the
	// loop alone: fileSeen is the last one read (or found unreadable and
	// left), not read again; fileRestored says its pushes were taken
	// into the wait, and it is removed once they are safe. fromFile,
	// guarded by mu, holds the devices whose wait holds a push of the
	// file that is neither written to the registry nor ended yet.
	file         string
	fileSeen     os.FileInfo
	fileRestored bool
	fromFile     map[redeliveryKey]struct{}

	// A push kept for redelivery is answered (wait) only once the
	// registry holds it, or a write of it was tried (see awaitWritten):
	// the user's server does not send it again, and a server killed
	// (kill -9, the OOM killer) within the tick before the loop's next
	// write lost it. changes counts the keeps (guarded by mu); tried is
	// the count the last finished write took in, and triedCh is closed
	// when a write finishes (both guarded by mu). writeSoon asks the
	// loop to write at once; looping says the loop runs, and
	// writesFailing that its last write failed: while the registry
	// refuses writes, a failed push is answered at once, as before.
	changes, tried uint64
	triedCh        chan struct{}
	writeSoon      chan struct{}
	looping        atomic.Bool
	writesFailing  atomic.Bool
}

func newRedeliveries(window time.Duration, now func() time.Time, file string) *redeliveries {
	host, _ := os.Hostname()
	return &redeliveries{window: window, now: now, base: redeliveryBase, maxWait: redeliveryMaxWait, tick: redeliveryTick, poll: heldPollInterval,
		lease: redeliveryLease, max: redeliveryMax, maxBytes: redeliveryMaxBytes, owner: fmt.Sprintf("%s/%d/%s", host, os.Getpid(), rand.Text()[:8]),
		pending: map[redeliveryKey]*pendingPush{}, others: map[string]map[string]struct{}{}, apps: map[string]*appRoom{}, drops: map[RedeliveryDrop]uint64{},
		dirty: map[redeliveryKey]struct{}{}, stored: map[redeliveryKey]struct{}{}, fromMove: map[redeliveryKey]struct{}{},
		file: file, fromFile: map[redeliveryKey]struct{}{},
		triedCh: make(chan struct{}), writeSoon: make(chan struct{}, 1)}
}

// keptWriteWait bounds how long a push kept for redelivery waits for the
// write that puts it in the registry before it is answered: a write
// takes milliseconds, and a registry slower than this is in trouble,
// which a push service's outage should not make every answer wait for.
const keptWriteWait = time.Second

// awaitWritten returns once the loop has tried to write what was kept up
// to now to the registry (within keptWriteWait, ctx, and while the loop
// runs and its writes go through), so that a push answered as kept
// survives the process.
func (r *redeliveries) awaitWritten(ctx context.Context) {
	if r == nil || !r.looping.Load() || r.writesFailing.Load() {
		return
	}
	r.mu.Lock()
	want := r.changes
	r.mu.Unlock()
	select {
	case r.writeSoon <- struct{}{}:
	default:
	}
	timer := time.NewTimer(keptWriteWait)
	defer timer.Stop()
	// The push does no work while it waits: it gives its working place
	// up (for a waiting one, as a push waiting on a timer does), or
	// pushes failing during one push service's outage, each waiting for
	// a registry slow to write, would hold every place of the XMPP
	// connection, and every other app's pushes on it with them.
	var paused push.Paused
	pausing := false
	defer func() {
		if pausing {
			paused.Resume(ctx)
		}
	}()
	for {
		r.mu.Lock()
		done, ch := r.tried >= want, r.triedCh
		r.mu.Unlock()
		if done || !r.looping.Load() {
			return
		}
		if !pausing {
			paused, pausing = push.Pause(ctx), true
		}
		select {
		case <-ch:
		case <-timer.C:
			return
		case <-ctx.Done():
			return
		}
	}
}

// writeTried records that a write of what was kept up to changes has
// finished, whatever its outcome, and wakes the pushes waiting for it.
func (r *redeliveries) writeTried(changes uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if changes > r.tried {
		r.tried = changes
	}
	close(r.triedCh)
	r.triedCh = make(chan struct{})
}

// urgency orders priorities: a device waiting for an alert keeps it when
// a silent push to it fails later.
func urgency(p push.Priority) int {
	if p == push.PriorityHigh {
		return 1
	}
	return 0
}

func notificationSize(n *push.Notification, u *unreadPush) int {
	size := redeliveryEntryBytes + len(n.App) + len(n.Node) + len(n.Token) + len(n.Account)
	if u != nil {
		size += len(u.secret)
	}
	if n.Summary != nil {
		size += len(n.Summary.LastMessageSender) + len(n.Summary.LastMessageBody)
	}
	if n.Encrypted != nil {
		size += len(n.Encrypted.Payload) + len(n.Encrypted.IV)
	}
	return size
}

// keep holds n, which just failed for a reason that may pass, for
// redelivery to the device key names.
func (r *redeliveries) keep(key redeliveryKey, n push.Notification) { r.keepChecked(key, n, "", nil) }

// keepChecked is keep for a push to a registered node whose registration
// has secret: an unread push waiting for the device with that same secret
// is the same sender's, and an alert among them is not replaced by a
// silent push. err is the failure: its Retry-After, if the push service
// gave one, and whether it was an outage (see outage).
func (r *redeliveries) keepChecked(key redeliveryKey, n push.Notification, secret string, err error) {
	if r == nil || n.Priority == push.PriorityVoIP {
		return
	}
	if key.node != "" {
		// Read again at each attempt: the registration may change.
		n.Token, n.Account, n.Tigase = "", "", false
	}
	// Copies, as set makes of n's: the key and the secret are cut from
	// the request (an HTTP push's body, a publish's stanza), which the
	// maps and the push would otherwise keep alive, uncounted, while it
	// waits.
	key.node, key.token, secret = strings.Clone(key.node), strings.Clone(key.token), strings.Clone(secret)
	after, down := retryAfter(err), outage(err)
	now := r.now()
	r.mu.Lock()
	defer r.mu.Unlock()
	r.changes++
	defer func() {
		p := r.pending[key]
		if p == nil {
			return
		}
		r.setOutage(p, down)
		if after > 0 {
			p.notBefore = now.Add(after)
			p.due = later(p.due, p.notBefore)
		}
	}()
	if p := r.pending[key]; p != nil {
		p.failed = now
		r.touch(p)
		r.dirty[key] = struct{}{}
		delete(r.fromMove, key)
		// An unread push has no priority yet (the least urgency), so
		// a push that was checked replaces it, unless it is an alert
		// whose secret is now known to be right.
		waiting := urgency(p.n.Priority)
		if p.unread != nil && p.unread.important && secret != "" &&
			subtle.ConstantTimeCompare([]byte(secret), []byte(p.unread.secret)) == 1 {
			waiting = urgency(push.PriorityHigh)
		}
		// A push checked against another secret is the node's
		// registration afresh: the one waiting will not go out.
		renewed := p.checked && subtle.ConstantTimeCompare([]byte(p.secret), []byte(secret)) != 1
		if (urgency(n.Priority) >= waiting || renewed) && r.replace(p, n, nil) {
			// Counted only for a push that replaces: an attempt under
			// way at the one it replaced must send this one too.
			p.gen++
			p.secret, p.checked = secret, key.node != ""
		}
		return
	}
	if r.add(key, n, nil, now, now, true) {
		p := r.pending[key]
		p.secret, p.checked = secret, key.node != ""
		r.kept.Add(1)
	}
}

// keepUnread holds n, a push to node whose registration could not be
// read, for redelivery once it can be, with what decides then whether it
// goes out (see unreadPush). n carries no app, token or priority: only
// the registration, read at each attempt, says these.
func (r *redeliveries) keepUnread(node string, u unreadPush, n push.Notification) {
	if r == nil {
		return
	}
	// Copies, as in keepChecked.
	key := redeliveryKey{node: strings.Clone(node)}
	u.secret = strings.Clone(u.secret)
	now := r.now()
	r.mu.Lock()
	defer r.mu.Unlock()
	// Counted as keepChecked's are: its caller waits for the write too
	// (awaitWritten).
	r.changes++
	if p := r.pending[key]; p != nil {
		// A later push with the same secret is the same sender's:
		// newer, so it is the one to send. One with another secret
		// never takes its place (whoever sent it may have guessed the
		// node), nor is it turned away: the push waiting may be the
		// one with a guessed secret, and it must not keep the user's
		// server's from going out. It waits beside it, under a key of
		// its secret's, and once the registration can be read, each
		// goes out or not by its own secret.
		if p.unread == nil && !p.checked || subtle.ConstantTimeCompare([]byte(u.secret), []byte(p.waitingSecret())) == 1 {
			if p.unread != nil {
				r.renewUnread(key, p, n, u, now)
			}
			return
		}
		key.unread = unreadName(u.secret)
		if p := r.pending[key]; p != nil {
			r.renewUnread(key, p, n, u, now)
			return
		}
	}
	if r.add(key, n, &u, now, now, true) {
		r.kept.Add(1)
	}
}

// waitingSecret is the secret the push p waits with: the one an unread
// push came with, else the one a checked push was checked against.
func (p *pendingPush) waitingSecret() string {
	if p.unread != nil {
		return p.unread.secret
	}
	return p.secret
}

// renewUnread makes n, unread with u, the push p (unread, with u's
// secret) sends, unless it is silent and p's an alert; r.mu is held.
func (r *redeliveries) renewUnread(key redeliveryKey, p *pendingPush, n push.Notification, u unreadPush, now time.Time) {
	p.failed = now
	r.touch(p)
	r.dirty[key] = struct{}{}
	delete(r.fromMove, key)
	if (u.important || !p.unread.important) && r.replace(p, n, &u) {
		p.gen++
	}
}

// replace makes n (unread with u) the push p sends, unless it would take
// the wait past its bytes (then p stays as it is, and n counts as
// dropped); r.mu is held. It reports whether it replaced. The device
// keeps its place, counted in the share of n's app if that changed (a
// registration moved, an unread push read): it takes no other's place.
func (r *redeliveries) replace(p *pendingPush, n push.Notification, u *unreadPush) bool {
	size := notificationSize(&n, u)
	if r.bytes-p.size+size > r.maxBytes || p.token && r.tokenBytes-p.size+size > r.maxBytes/2 {
		r.drop(n.App, DropNoRoom, 1)
		return false
	}
	if p.token {
		r.tokenBytes += size - p.size
	}
	r.bytes -= p.size
	if p.unread != nil {
		r.unread--
	}
	r.release(p)
	p.set(n, u)
	r.hold(p)
	r.bytes += p.size
	if u != nil {
		r.unread++
	}
	return true
}

// add starts the wait of a device that has none (unread with u, when u
// is not nil), unless there is no room for it (for an unread push or one
// to a token, in its half); r.mu is held. When the room is full and
// evict says so, a checked push may take the place of another app's
// (see makeRoom).
func (r *redeliveries) add(key redeliveryKey, n push.Notification, u *unreadPush, failed, now time.Time, evict bool) bool {
	size := notificationSize(&n, u)
	if u != nil && r.unread >= r.max/2 ||
		key.token != "" && (r.tokens >= r.max/2 || r.tokenBytes+size > r.maxBytes/2) ||
		(len(r.pending) >= r.max || r.bytes+size > r.maxBytes) && !(evict && u == nil && r.makeRoom(n.App, size)) {
		r.drop(n.App, DropNoRoom, 1)
		return false
	}
	p := &pendingPush{key: key, failed: failed, wait: push.Backoff{Base: r.base, Max: r.maxWait}, token: key.token != ""}
	p.set(n, u)
	r.hold(p)
	if p.token {
		r.tokens++
		r.tokenBytes += p.size
	}
	p.due = now.Add(p.wait.Next())
	r.pending[key] = p
	if key.unread != "" {
		if r.others[key.node] == nil {
			r.others[key.node] = map[string]struct{}{}
		}
		r.others[key.node][key.unread] = struct{}{}
	}
	r.dirty[key] = struct{}{}
	r.bytes += p.size
	if u != nil {
		r.unread++
	}
	r.count.Store(int64(len(r.pending)))
	return true
}

// makeRoom makes room for a push of app, size bytes, in a full room,
// by giving up the oldest pushes of the app holding the most of it, when
// app holds less than its fair share: the room divided among the apps
// that hold pushes, app among them. It reports whether the push fits
// now; r.mu is held.
//
// The room is one for all apps, so that a single app, the common
// deployment, may fill it all. Without more, one app's long outage (its
// APNS certificate's service down for an hour, 100,000 devices pushed)
// filled it, and then every other app's failed pushes were dropped
// though their services were fine. A share reserved for each app would
// leave the rest of the room empty while one app needs it; here an app
// takes back its share only when it needs it, from the app over its
// share. The push given up is the oldest, the nearest its end and the
// stalest message, and counts as dropped, as a push refused for want of
// room does. Unread pushes give up their place too but take none (anyone
// who knows a node can send them), and a push taken from the registry
// takes none either (see restore).
//
// Shares weigh devices and bytes each against their bound, so the room's
// bounds hold. Each push given up frees redeliveryEntryBytes at least,
// so a push gives up its size over that at most (one, unless the bytes
// are full), each found by a look at the apps holding pushes (the
// configured ones and "", a handful) and taken out of its list in O(1).
func (r *redeliveries) makeRoom(app string, size int) bool {
	apps, mine := len(r.apps), r.apps[app]
	var count, bytes int
	if mine != nil {
		count, bytes = mine.count, mine.bytes
	} else {
		apps++
	}
	if count >= r.max/apps || bytes+size > r.maxBytes/apps {
		return false
	}
	for len(r.pending) >= r.max || r.bytes+size > r.maxBytes {
		// Some other app holds more than its share while app, under
		// its own, finds no room.
		most := r.fullest(app)
		if most == nil {
			return false
		}
		// Not a push whose attempt is under way: it may be delivered
		// yet, and its memory stays taken until the attempt ends.
		p := most.oldest
		for p != nil && p.sending {
			p = p.newer
		}
		if p == nil {
			return false
		}
		r.remove(p.key, p)
		r.drop(p.n.App, DropGavePlace, 1)
	}
	return true
}

// drop counts n pushes of app dropped for reason; r.mu is held.
func (r *redeliveries) drop(app string, reason DropReason, n int) {
	if app == "" {
		app = UnreadApp
	}
	r.drops[RedeliveryDrop{App: app, Reason: reason}] += uint64(n)
	r.dropped.Add(uint64(n))
}

// droppedBy is a copy of drops.
func (r *redeliveries) droppedBy() map[RedeliveryDrop]uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return maps.Clone(r.drops)
}

// fullest is the app other than app that holds the most of the room,
// its devices and bytes each weighed against their bound; r.mu is held.
func (r *redeliveries) fullest(app string) *appRoom {
	var most *appRoom
	used := func(a *appRoom) int { return max(a.count*(r.maxBytes/r.max), a.bytes) }
	for name, a := range r.apps {
		if name != app && (most == nil || used(a) > used(most)) {
			most = a
		}
	}
	return most
}

// hold counts p in its app's share of the room, as its newest push;
// r.mu is held.
func (r *redeliveries) hold(p *pendingPush) {
	a := r.apps[p.n.App]
	if a == nil {
		a = &appRoom{}
		r.apps[p.n.App] = a
	}
	a.count++
	a.bytes += p.size
	p.room, p.older, p.newer = a, a.newest, nil
	if a.newest != nil {
		a.newest.newer = p
	} else {
		a.oldest = p
	}
	a.newest = p
}

// release takes p out of its app's share of the room, before p changes
// or ends; r.mu is held.
func (r *redeliveries) release(p *pendingPush) {
	a := p.room
	a.count--
	a.bytes -= p.size
	if p.older != nil {
		p.older.newer = p.newer
	} else {
		a.oldest = p.newer
	}
	if p.newer != nil {
		p.newer.older = p.older
	} else {
		a.newest = p.older
	}
	p.room, p.older, p.newer = nil, nil, nil
	if a.count == 0 {
		delete(r.apps, p.n.App)
	}
}

// touch makes p, which just took a failure, its app's newest push;
// r.mu is held.
func (r *redeliveries) touch(p *pendingPush) {
	r.release(p)
	r.hold(p)
}

// restore takes back a push another server held at its stop (or this
// one, before a restart), which last failed at failed (unread with u, when
// u is not nil); moved says its row is still in the registry, moved to
// this server (registry.HeldMover), rather than deleted. It reports
// whether the push is kept: it is not when the wait is full. One whose
// time ran out meanwhile is kept and ends as expired at the next look, as
// any other.
//
// The push is due at once (its wait was spent at the server that held
// it, and a stop's hand-over costs a tick at most), but not before
// notBefore, the push service's Retry-After if it gave one that lasts.
func (r *redeliveries) restore(key redeliveryKey, n push.Notification, u *unreadPush, secret string, checked bool, failed, notBefore time.Time, moved bool) bool {
	now := r.now()
	r.mu.Lock()
	defer r.mu.Unlock()
	if p := r.pending[key]; p != nil && u != nil && key.unread == "" && (p.unread != nil || p.checked) {
		// An unread push with another secret than the push waiting
		// here waits beside it, as in keepUnread: merged into it, it
		// would be lost, and it may be the one with the right secret
		// (the user's server's, sent to another instance while this
		// one kept a guess).
		if subtle.ConstantTimeCompare([]byte(u.secret), []byte(p.waitingSecret())) != 1 {
			key.unread = unreadName(u.secret)
		}
	}
	if p := r.pending[key]; p != nil {
		// This server failed to push to the device since: its push is
		// the newer, unless it is unread and the one taken was checked,
		// which an unread push never replaces.
		newer := failed.After(p.failed)
		// A wait the registry holds as it is (written, unchanged since)
		// is, with the moved row, made of rows only: at a lost lease
		// both go to the others, and the wait with them.
		_, stored := r.stored[key]
		_, changed := r.dirty[key]
		clean := stored && !changed
		// A checked push replaces an unread one; between checked pushes
		// the more urgent wins (an alert is not lost to a silent push),
		// and of equal urgency the newer.
		// Checked against different secrets, the node was registered
		// afresh between them: only the newer can still go out.
		resecret := checked && p.checked && subtle.ConstantTimeCompare([]byte(secret), []byte(p.secret)) != 1
		if u == nil && (p.unread != nil || resecret && newer || !resecret && (urgency(n.Priority) > urgency(p.n.Priority) ||
			urgency(n.Priority) == urgency(p.n.Priority) && newer)) {
			if !r.replace(p, n, nil) {
				// Not kept: its row is its only copy.
				return false
			}
			p.gen++
			p.secret, p.checked = secret, checked
		}
		if newer {
			p.failed = failed
		}
		p.notBefore = later(p.notBefore, notBefore)
		p.due = later(p.due, notBefore)
		if clean && moved {
			r.fromMove[key] = struct{}{}
		}
		r.dirty[key] = struct{}{}
		return true
	}
	// Never in another's place: a push refused here stays in the
	// registry, for a server with room or for this one later, while one
	// given up is lost.
	if !r.add(key, n, u, failed, now, false) {
		return false
	}
	p := r.pending[key]
	p.secret, p.checked = secret, checked && u == nil
	p.notBefore = notBefore
	p.due = later(now, notBefore)
	if moved {
		r.fromMove[key] = struct{}{}
	}
	return true
}

// dropAll ends every wait, at shutdown, once the registry holds what
// waits, and returns how many there were.
func (r *redeliveries) dropAll() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := len(r.pending)
	clear(r.pending)
	clear(r.others)
	clear(r.dirty)
	clear(r.stored)
	clear(r.fromMove)
	clear(r.fromFile)
	clear(r.apps)
	r.bytes, r.unread, r.tokens, r.tokenBytes = 0, 0, 0, 0
	r.count.Store(0)
	r.outages.Store(0)
	return n
}

// set makes n the push to send. What it points to is copied: the
// request's summary may hold on to a whole stanza, and an attempt under
// way may still read the push this one replaces.
func (p *pendingPush) set(n push.Notification, u *unreadPush) {
	// Copies, of the strings too: a summary's are cut from the publish
	// IQ's text, and a cut keeps the whole alive, up to 64 KiB where
	// notificationSize counts at most 4 KiB, for as long as the push
	// waits (an outage keeps thousands).
	if n.Summary != nil {
		sum := *n.Summary
		sum.LastMessageSender = strings.Clone(sum.LastMessageSender)
		sum.LastMessageBody = strings.Clone(sum.LastMessageBody)
		n.Summary = &sum
	}
	if n.Encrypted != nil {
		enc := *n.Encrypted
		enc.Payload, enc.IV = strings.Clone(enc.Payload), strings.Clone(enc.IV)
		n.Encrypted = &enc
	}
	n.Node, n.Token, n.Account = strings.Clone(n.Node), strings.Clone(n.Token), strings.Clone(n.Account)
	p.n, p.unread = n, u
	p.size = notificationSize(&n, u)
}

// settled ends the wait of the device key names: a push to it went
// through.
func (r *redeliveries) settled(key redeliveryKey) {
	if r == nil || r.count.Load() == 0 {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if p := r.pending[key]; p != nil {
		r.remove(key, p)
		r.superseded.Add(1)
	}
	// The device is awake: the unread pushes waiting beside the node's
	// have nothing left to wake it for.
	r.removeOthers(key.node, &r.superseded)
}

// removeOthers ends the waits of the unread pushes to node waiting
// beside its first (redeliveryKey.unread), counted in ended; r.mu is
// held.
func (r *redeliveries) removeOthers(node string, ended *atomic.Uint64) {
	if node == "" {
		return
	}
	for name := range r.others[node] {
		key := redeliveryKey{node: node, unread: name}
		if p := r.pending[key]; p != nil {
			r.remove(key, p)
			ended.Add(1)
		}
	}
	delete(r.others, node)
}

// forget ends the wait of the push to node, whose registration with
// secret is gone (unregistered, or its token declared dead): no attempt
// could send it, and what it holds (the summary's sender and body, its
// secret) must not stay in memory and in the registry until its next
// attempt, minutes away with a push service's Retry-After or the
// backoff. Counted as gone, as that attempt would have counted it.
//
// A push checked against another secret stays: it is to a registration
// of the node made after the removal (the device registering anew
// between the store's removal and this call), whose user's server sent
// it, and it goes out as any other.
func (r *redeliveries) forget(node, secret string) {
	if r == nil || r.count.Load() == 0 {
		return
	}
	key := redeliveryKey{node: node}
	r.mu.Lock()
	defer r.mu.Unlock()
	if p := r.pending[key]; p != nil && !(p.checked && subtle.ConstantTimeCompare([]byte(p.secret), []byte(secret)) != 1) {
		r.remove(key, p)
		r.gone.Add(1)
	}
	r.removeOthers(node, &r.gone)
}

// setOutage records whether p's latest failure was an outage of its
// push service; r.mu is held.
func (r *redeliveries) setOutage(p *pendingPush, down bool) {
	if p.outage != down {
		p.outage = down
		if down {
			r.outages.Add(1)
		} else {
			r.outages.Add(-1)
		}
	}
}

// later is the later of a and b.
func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// took notes that app's push service took a push: the loop's next tick
// makes the pushes to app that wait after an outage due (appsBack).
func (r *redeliveries) took(app string) {
	if r == nil || r.outages.Load() == 0 {
		return
	}
	if _, ok := r.back.Load(app); !ok {
		r.back.Store(app, struct{}{})
	}
}

// appsBack makes the pushes that wait after an outage of their push
// service due now (but not before a Retry-After), for the apps a push
// went through to since its last call: their service takes pushes again.
// Each push is made due once between two attempts of its own backoff (see
// pendingPush.spent), and keeps its backoff: a push that fails again
// at once fails for itself, or the service is still unsteady. The loop
// sends them redeliveryConcurrency at a time, as at the end of any
// outage. Called by the loop at each tick, so a push that goes through
// costs no scan.
func (r *redeliveries) appsBack() {
	var apps []string
	r.back.Range(func(app, _ any) bool {
		r.back.Delete(app)
		apps = append(apps, app.(string))
		return true
	})
	if len(apps) == 0 {
		return
	}
	now := r.now()
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, p := range r.pending {
		if p.outage && !p.spent && !p.sending && p.due.After(now) && slices.Contains(apps, p.n.App) {
			p.hastened = true
			p.due = later(now, p.notBefore)
		}
	}
}

// remove deletes p, which key names; r.mu is held.
func (r *redeliveries) remove(key redeliveryKey, p *pendingPush) {
	delete(r.pending, key)
	if key.unread != "" {
		delete(r.others[key.node], key.unread)
		if len(r.others[key.node]) == 0 {
			delete(r.others, key.node)
		}
	}
	delete(r.fromMove, key)
	// Ended: no longer the held file's to keep.
	delete(r.fromFile, key)
	if _, ok := r.stored[key]; ok {
		r.dirty[key] = struct{}{}
	} else {
		delete(r.dirty, key)
	}
	r.bytes -= p.size
	r.release(p)
	if p.unread != nil {
		r.unread--
	}
	if p.token {
		r.tokens--
		r.tokenBytes -= p.size
	}
	r.setOutage(p, false)
	r.count.Store(int64(len(r.pending)))
}

// releaseApp makes the pushes to app due now (but not before a
// Retry-After), and returns how many there are: its push service takes
// its credentials again, and they waited for nothing else (see
// credGate).
func (r *redeliveries) releaseApp(app string) int {
	if r == nil || r.count.Load() == 0 {
		return 0
	}
	now := r.now()
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, p := range r.pending {
		if p.n.App == app && !p.sending {
			p.due = later(now, p.notBefore)
			p.spent = false
			n++
		}
	}
	return n
}

// registryBack makes the unread pushes due at once: the registry answers
// again, and they have waited for nothing else. Their backoff, grown
// while it was away, starts over.
func (r *redeliveries) registryBack() {
	if r == nil || r.count.Load() == 0 {
		return
	}
	now := r.now()
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, p := range r.pending {
		if p.unread != nil && !p.sending {
			p.wait.Reset()
			p.due = now
		}
	}
}

// dueBy takes out the pushes whose next attempt is due, of each app as
// many as take says (asked once per app: none while its queue is not
// empty, one while its credentials gate lets a probe through), and ends
// the waits whose time ran out. A push whose registration is still to be
// read has no app yet: "" stands for it.
func (r *redeliveries) dueBy(take func(app string) int) []redeliveryAttempt {
	if r.count.Load() == 0 {
		return nil
	}
	now := r.now()
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []redeliveryAttempt
	taken, quota := map[string]int{}, map[string]int{}
	may := func(app string) bool {
		q, ok := quota[app]
		if !ok {
			q = take(app)
			quota[app] = q
		}
		return taken[app] < q
	}
	for key, p := range r.pending {
		switch {
		case p.sending:
		case now.Sub(p.failed) > r.window:
			r.remove(key, p)
			r.expired.Add(1)
		case !p.due.After(now) && may(p.n.App):
			taken[p.n.App]++
			p.sending = true
			out = append(out, redeliveryAttempt{key: key, p: p, n: p.n, unread: p.unread, secret: p.secret, checked: p.checked, gen: p.gen, hastened: p.hastened})
			p.hastened = false
		}
	}
	return out
}

// current brings attempt a, taken out by dueBy and queued since, up to
// date: it reports false when its wait ended or began again meanwhile (a
// push went through, the lease was lost, its time ran out in the queue),
// and gives the push that replaced a's meanwhile.
func (r *redeliveries) current(a redeliveryAttempt) (redeliveryAttempt, bool) {
	now := r.now()
	r.mu.Lock()
	defer r.mu.Unlock()
	p := r.pending[a.key]
	if p != a.p {
		return a, false
	}
	if now.Sub(p.failed) > r.window {
		r.remove(a.key, p)
		r.expired.Add(1)
		return a, false
	}
	a.n, a.unread, a.gen, a.secret, a.checked = p.n, p.unread, p.gen, p.secret, p.checked
	return a, true
}

// redeliveryResult is what an attempt came to.
type redeliveryResult int

const (
	redelivered redeliveryResult = iota
	redeliverLater
	redeliveryGone
	redeliveryFailed
	// redeliverAfterOutage is redeliverLater after an outage of the push
	// service (see outage).
	redeliverAfterOutage
)

// done records what attempt a came to. retryAfter is the push service's
// hint when it asked for time.
func (r *redeliveries) done(a redeliveryAttempt, res redeliveryResult, retryAfter time.Duration) {
	now := r.now()
	r.mu.Lock()
	defer r.mu.Unlock()
	p := r.pending[a.key]
	if p != a.p {
		// A push to the device went through meanwhile and ended the
		// wait, counted then as superseded: each wait ends once.
		return
	}
	p.sending = false
	if a.unread != nil && p.unread != a.unread && (res == redeliveryGone || res == redeliveryFailed) {
		// A wrong secret or an unknown node ends the unread push the
		// attempt took, not the push that replaced it meanwhile (one
		// whose secret was checked, say): that one goes out soon.
		p.wait.Reset()
		p.due = now.Add(p.wait.Next())
		return
	}
	if (res == redeliveryGone || res == redeliveryFailed) && a.unread == nil && p.gen != a.gen {
		// Gone (its registration's secret changed, its token dead):
		// the push that replaced it meanwhile, checked against the
		// registration as it is now, has not been tried yet.
		p.wait.Reset()
		p.due = now.Add(p.wait.Next())
		return
	}
	switch res {
	case redelivered:
		// The device is awake, as after a fresh push that went through
		// (settled): the unread pushes waiting beside the node's have
		// nothing left to wake it for, and the one with the
		// registration's secret would wake it a second time. (A push
		// that waited beside is one of them: those left have other
		// secrets, and are refused when read.)
		if a.key.unread == "" {
			r.removeOthers(a.key.node, &r.superseded)
		}
		if p.gen == a.gen {
			// Removed before it is counted, as every end of a wait
			// is: a reader of the stats that sees it delivered sees
			// it gone.
			r.remove(a.key, p)
			r.delivered.Add(1)
			return
		}
		r.delivered.Add(1)
		// A newer push failed while this one went out: send that one
		// too, soon.
		p.wait.Reset()
		p.due = now.Add(p.wait.Next())
		p.spent = false
	case redeliverLater, redeliverAfterOutage:
		p.due = now.Add(max(p.wait.Next(), retryAfter))
		p.notBefore = now.Add(retryAfter)
		if retryAfter > 0 {
			// Written, so that a server that takes the push over
			// honours it too.
			r.dirty[a.key] = struct{}{}
		}
		r.setOutage(p, res == redeliverAfterOutage)
		// Made due again by appsBack only after an attempt of its own
		// backoff failed.
		p.spent = a.hastened
		if p.due.Sub(p.failed) > r.window {
			r.remove(a.key, p)
			r.expired.Add(1)
		}
	case redeliveryGone:
		r.remove(a.key, p)
		r.gone.Add(1)
	default:
		r.remove(a.key, p)
		r.failed.Add(1)
	}
}

func (r *redeliveries) stats() RedeliveryStats {
	if r == nil {
		return RedeliveryStats{}
	}
	return RedeliveryStats{
		Pending: int(r.count.Load()),
		Kept:    r.kept.Load(), Dropped: r.dropped.Load(),
		Delivered: r.delivered.Load(), Expired: r.expired.Load(), Gone: r.gone.Load(),
		Failed: r.failed.Load(), Superseded: r.superseded.Load(), HandedOver: r.handedOver.Load(),
	}
}

// RedeliveryStats reports the pushes kept for redelivery; all zero when
// redelivery is off.
func (s *Service) RedeliveryStats() RedeliveryStats { return s.redeliver.stats() }

// RedeliveryDrops counts the pushes redelivery dropped (RedeliveryStats'
// Dropped) by app and reason; nil when redelivery is off. Each configured
// app and UnreadApp is there with each reason from the start, at 0 until
// a drop: a series that appears with its first drop shows no increase.
func (s *Service) RedeliveryDrops() map[RedeliveryDrop]uint64 {
	if s.redeliver == nil {
		return nil
	}
	drops := s.redeliver.droppedBy()
	for _, reason := range []DropReason{DropNoRoom, DropGavePlace, DropShutdown, DropExpiredStopped} {
		for app := range s.apps {
			drops[RedeliveryDrop{App: app, Reason: reason}] += 0
		}
		drops[RedeliveryDrop{App: UnreadApp, Reason: reason}] += 0
	}
	return drops
}

// retryAfter is the push service's Retry-After in err, or 0.
func retryAfter(err error) time.Duration {
	var te *push.TemporaryError
	if errors.As(err, &te) {
		return te.RetryAfter
	}
	return 0
}

// outage reports whether err, a failure that may pass, was the push
// service's as a whole (push.TemporaryError.Outage): another push's
// success through it then says this push may go through too.
func outage(err error) bool {
	var te *push.TemporaryError
	return errors.As(err, &te) && te.Outage
}

// redeliverable reports whether a push that failed with err may go
// through later.
func redeliverable(err error) bool {
	return push.IsTemporary(err) || errors.Is(err, context.DeadlineExceeded)
}

// redeliverLoop sends the kept pushes as they fall due until ctx is
// done, writes what waits to the registry as it changes, and at the end
// releases it there for the next server. It takes what the registry holds
// at its start and every heldPollInterval after, so that pushes released
// by an instance that stopped or died are sent by one that runs.
func (s *Service) redeliverLoop(ctx context.Context) {
	r := s.redeliver
	var wg sync.WaitGroup
	t := time.NewTicker(r.tick)
	defer t.Stop()
	s.takeHeld(ctx)
	s.writePending(ctx)
	r.looping.Store(true)
	defer r.looping.Store(false)
	lastTake, lastSummary := time.Now(), time.Now()
	summarized := s.redeliverySnapshot()
	// The due pushes are taken out a batch at a time, larger than the
	// attempts that may run at once (after an outage every device falls
	// due within seconds, and taking only the free slots each tick would
	// send 64 a second), and started as slots free up. The loop never
	// waits for a slot: it must write and renew the lease each tick
	// however long the attempts take. freed says one ended.
	//
	// Each app has a queue and slots of its own: an app whose push
	// service stalls holds each attempt for a whole push deadline, and
	// with slots shared its attempts held up every other app's (in the
	// tests, 1,000 stalled APNS pushes kept the 20 FCM ones back 4.3 s
	// after FCM was, not 0.08 s; 10,000 at the default 5 s deadline, 64
	// at a time, take 13 minutes, past the redelivery window). A bound
	// over all apps would bring that back once enough apps stalled; the
	// attempts under way are the operator's apps times
	// redeliveryConcurrency instead, a goroutine each (a few KiB), which
	// ten apps keep within a few MiB. Pushes whose registration is still
	// to be read have no app yet and share a queue of their own.
	queues := map[string][]redeliveryAttempt{}
	var mu sync.Mutex // guards running, which the attempts count down
	running := map[string]int{}
	freed := make(chan struct{}, 1)
	for {
		select {
		case <-ctx.Done():
			// The pushes waiting for a write are answered now; what
			// waits is written by holdPending.
			r.looping.Store(false)
			r.writeTried(0)
			// What is queued stays waiting; holdPending keeps it. The
			// attempts under way finish by their deadline, which may be
			// longer than what is left of the lease: it is renewed
			// meanwhile, or another server takes their pushes and sends
			// them again.
			attempts := make(chan struct{})
			go func() { wg.Wait(); close(attempts) }()
			for waiting := true; waiting; {
				select {
				case <-attempts:
					waiting = false
				case <-t.C:
					s.writePending(context.WithoutCancel(ctx))
				}
			}
			s.holdPending()
			return
		case <-freed:
		case <-r.writeSoon:
			// A push just kept waits for this write to be answered.
			s.writePending(ctx)
			continue
		case <-t.C:
			// Written first: a take may give back this server's own
			// rows once its lease lapsed, and a wait that ended since
			// must be gone from the registry by then.
			s.writePending(ctx)
			s.heldFileSafe()
			s.handOver(ctx)
			if r.takeSoon.Swap(false) || time.Since(lastTake) >= r.poll {
				s.takeHeld(ctx)
				lastTake = time.Now()
				s.writePending(ctx)
			}
			if time.Since(lastSummary) >= redeliverySummaryInterval {
				summarized = s.summarizeRedelivery(summarized)
				lastSummary = time.Now()
			}
			r.appsBack()
			for _, a := range r.dueBy(func(app string) int {
				if len(queues[app]) > 0 {
					return 0
				}
				return s.gateQuota(app, redeliveryBatch)
			}) {
				queues[a.n.App] = append(queues[a.n.App], a)
			}
		}
		mu.Lock()
		for app, queue := range queues {
			for len(queue) > 0 && running[app] < redeliveryConcurrency {
				a, ok := r.current(queue[0])
				queue = queue[1:]
				if !ok {
					continue
				}
				running[app]++
				wg.Go(func() {
					defer func() {
						mu.Lock()
						running[app]--
						mu.Unlock()
						select {
						case freed <- struct{}{}:
						default:
						}
					}()
					res, after := s.redeliverOne(ctx, a)
					r.done(a, res, after)
				})
			}
			if len(queue) == 0 {
				delete(queues, app)
			} else {
				queues[app] = queue
			}
		}
		mu.Unlock()
	}
}

// redeliverySummary is what summarizeRedelivery sums up the next minute
// from.
type redeliverySummary struct {
	stats RedeliveryStats
	drops map[RedeliveryDrop]uint64
}

func (s *Service) redeliverySnapshot() redeliverySummary {
	return redeliverySummary{stats: s.redeliver.stats(), drops: s.redeliver.droppedBy()}
}

// summarizeRedelivery logs what redelivery did since prev, if anything,
// and returns what it summed up: an operator sees an outage's pushes
// arrive (or not) without a metrics system, in a line a minute. Drops
// are named by app and reason (dropped_by="ios/gave_place=3 …"): with
// the room shared among apps, the total does not say whose were lost.
func (s *Service) summarizeRedelivery(prev redeliverySummary) redeliverySummary {
	now := s.redeliverySnapshot()
	cur, last := now.stats, prev.stats
	cur.Pending, last.Pending = 0, 0
	if cur == last {
		return now
	}
	attrs := []any{
		"kept", cur.Kept - last.Kept, "delivered", cur.Delivered - last.Delivered,
		"superseded", cur.Superseded - last.Superseded, "gone", cur.Gone - last.Gone,
		"expired", cur.Expired - last.Expired, "failed", cur.Failed - last.Failed,
		"handed_over", cur.HandedOver - last.HandedOver, "dropped", cur.Dropped - last.Dropped,
		"waiting", now.stats.Pending,
	}
	if cur.Dropped != last.Dropped {
		var by []string
		for d, n := range now.drops {
			if n != prev.drops[d] {
				by = append(by, fmt.Sprintf("%s/%s=%d", d.App, d.Reason, n-prev.drops[d]))
			}
		}
		slices.Sort(by)
		attrs = append(attrs, "dropped_by", strings.Join(by, " "))
	}
	s.logger.Info("redelivery of failed pushes in the last minute", attrs...)
	return now
}

// redeliverOne makes one attempt at a kept push.
func (s *Service) redeliverOne(ctx context.Context, a redeliveryAttempt) (redeliveryResult, time.Duration) {
	n := a.n
	deadline := s.opts.Now().Add(s.opts.PushTimeout)
	if a.key.node != "" {
		var secret *string // checked below, for a push kept unread
		if a.unread != nil {
			secret = &a.unread.secret
		}
		t, _, _, err := s.lookup(ctx, a.key.node, deadline, false, secret)
		switch {
		case errors.Is(err, registry.ErrNotFound):
			if a.unread != nil {
				s.rejected(a.key.node, RejectUnknownNode)
			}
			return redeliveryGone, 0
		case err != nil:
			return redeliverLater, 0
		case a.unread != nil && subtle.ConstantTimeCompare([]byte(a.unread.secret), []byte(t.Secret)) != 1:
			s.rejected(a.key.node, RejectWrongSecret)
			return redeliveryGone, 0
		case a.unread == nil && a.checked && subtle.ConstantTimeCompare([]byte(a.secret), []byte(t.Secret)) != 1:
			// Registered afresh since, with a new secret: another
			// device's, maybe someone's who knew only the node.
			return redeliveryGone, 0
		}
		n.App, n.Token, n.Account, n.Tigase = t.Type, t.Token, t.Account, tigaseTarget(t)
	} else {
		block, err := s.blockOf(ctx, n.App, n.Token)
		switch {
		case err != nil:
			return redeliverLater, 0
		case s.blockHolds(s.opts.Now(), block.Until):
			return redeliveryGone, 0
		}
	}
	app, ok := s.apps[n.App]
	if !ok {
		// Left out of this configuration (renamed, a restart with a
		// mistake, or not here yet in a rolling change of the apps):
		// ours to fix, and the user's server heard wait. Kept until
		// its time runs out, and meanwhile given to the registry for
		// another instance that has the app (handOver).
		s.redeliver.elsewhere(a, n.App)
		return redeliverLater, 0
	}
	if a.key.node == "" && push.TokensNameEndpoints(app.Backend) {
		// A token push kept by a server that still took them for an
		// app whose tokens name their endpoint (see pushToken).
		return redeliveryGone, 0
	}
	if a.unread != nil {
		n.Priority = app.Priority.Resolve(a.unread.important)
		if n.Priority == push.PriorityVoIP {
			// Not kept when checked at once either (see keep).
			return redeliveryFailed, 0
		}
	}
	if dl := app.deadline(); dl > 0 {
		if d := s.opts.Now().Add(dl); d.Before(deadline) {
			deadline = d
		}
	}
	probe, held := app.gate.enter(s.opts.Now)
	if held != nil {
		// Taken out before the app's gate closed, or a push of the
		// app took the probe meanwhile: it waits for the gate to open.
		return redeliverLater, 0
	}
	// Not cut off by the stop: a request already with the push service
	// may have reached the device, and handed to the next server it
	// would be sent again. It ends by its deadline, as the pushes of
	// the component and the HTTP API do at a stop.
	sctx, cancel := s.deadlines.WithDeadline(context.WithoutCancel(ctx), deadline)
	defer cancel()
	sent := time.Now()
	err := s.send(push.WithRedelivery(sctx), app.Backend, n)
	if err != nil || probe {
		s.gateOutcome(&app, probe, err, time.Since(sent))
	}
	if err != nil && ctx.Err() != nil {
		// Stopping: the push waits, for the next server, with the
		// service's Retry-After. One that went through as the stop
		// began is done, not handed over.
		return redeliverLater, retryAfter(err)
	}
	if a.key.node != "" && err != nil {
		err = s.doubtDead(sctx, a.key.node, n.Token, err)
	}
	now := s.opts.Now().UTC()
	switch dead, isDead := push.IsDeadToken(err); {
	case err == nil:
		if a.key.node != "" {
			s.status.addSuccess(a.key.node, n.Token, app.canonical, now)
		}
		s.logger.Debug("push redelivered", "app", n.App, "node", n.Node)
		s.redeliver.took(n.App)
		return redelivered, 0
	case isDead:
		if a.key.node != "" {
			s.status.add(registry.PushStatus{Node: a.key.node, At: now, Reason: storedReason(err.Error())})
			if !s.unregisterDead(context.WithoutCancel(ctx), n.App, n.Token, n.Node, dead) &&
				s.tokenReplaced(context.WithoutCancel(ctx), n.App, a.key.node, n.Token) {
				// A new token registered while this attempt was at
				// the old one: the next attempt reads it.
				return redeliverLater, 0
			}
		} else if berr := s.blockDead(context.WithoutCancel(ctx), n.App, n.Token, n.Node, "", dead); berr != nil {
			return redeliveryFailed, 0
		}
		return redeliveryGone, 0
	case redeliverable(err):
		if outage(err) {
			return redeliverAfterOutage, retryAfter(err)
		}
		return redeliverLater, retryAfter(err)
	default:
		return redeliveryFailed, 0
	}
}
