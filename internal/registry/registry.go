// Package registry owns the registration records (one per push node) and
// their storage. Store is implemented by an embedded SQLite database (the
// default), PostgreSQL (several instances sharing one registry) and an
// in-memory map for tests; all of them pass the same conformance suite in
// storetest.
package registry

import (
	"context"
	"errors"
	"time"
)

// ErrNotFound is returned when no registration matches.
var ErrNotFound = errors.New("registration not found")

// ErrReadOnly is returned by a store's Ping when it answers reads but
// refuses every write: a PostgreSQL standby, or a server set
// read-only (default_transaction_read_only) during maintenance.
// Pushes go on; registrations fail.
var ErrReadOnly = errors.New("registry is read-only")

// ErrConflict is returned by Register when the registration it would store
// collides with another one: its DeviceKey is held by another node, or (in
// stores shared by several processes) another writer created the node first.
// Nothing was changed; the caller may look again and retry.
var ErrConflict = errors.New("registration conflicts with another one")

// ErrUnconfirmed is returned by a store that several instances share
// when a change to a registration was stored but not every other instance
// confirmed that it dropped what it cached of it: the feed that carries
// their confirmations went down first (the database crashed or restarted,
// or the connection was cut). One that did not hear of the change may go
// on pushing with what it cached, for as long as it cannot read the
// database, so the change must not be answered as done: the caller
// answers a transient error and the client tries again. Trying again is
// harmless: the change is stored, so the same registration again finds it
// (a renewal, answered with the secret stored) and an unregistration
// again finds the node gone.
var ErrUnconfirmed = errors.New("stored, but not confirmed by every instance sharing the registry")

// Registration is the record kept for one device, field for field the
// "internal data" of mod_push_appserver plus what we need beyond it.
// Zero times mean "never".
type Registration struct {
	Node   string // unique, chosen by the client (HTTP, v1 commands) or by us (p2 scheme)
	Type   string // the app (push target) this device belongs to
	Token  string // the push service's device token
	Secret string // 64 hex characters, checked on every push

	Registered         time.Time
	Renewed            time.Time
	LastSuccessfulPush time.Time
	LastPushError      time.Time
	LastErrorReason    string

	// Domain and DeviceKey are set only by registration schemes that identify
	// a device by account and device id (Conversations' register-push-*
	// commands): the account's domain, and a salted hash of account JID and
	// device id, never the JID itself.
	Domain    string
	DeviceKey string

	// Owner is set for registrations made over XMPP: a salted hash of the
	// registering account's bare JID. Only that account may change or
	// remove the registration without proving it knows the secret.
	Owner string

	// Account is what a scheme's client needs back in every push: the
	// bare JID the device registered from (Tigase register-device:
	// Siskin's notification extension picks the key that decrypts the
	// push by it), or p2's fingerprints of the account and channel,
	// apart by a space (Conversations' register-push-*). Empty otherwise.
	Account string
}

// PushTarget is what a push needs of a registration: the app, the token to
// send to, the secret to check and the account a dialect sends back. The
// push path caches these rather than whole registrations, which take
// three times the memory.
type PushTarget struct {
	Type, Token, Secret, Account string
}

// Target returns what a push needs of r.
func (r Registration) Target() PushTarget {
	return PushTarget{Type: r.Type, Token: r.Token, Secret: r.Secret, Account: r.Account}
}

// BlockedToken is a device token a push service declared dead that has no
// registration to remove: tokenless pushes name the token directly, so it
// is refused until Until instead.
type BlockedToken struct {
	Type   string
	Token  string
	Since  time.Time // when the service said it died
	Until  time.Time // pushes are refused before this
	Reason string
}

// LastRegistered is when the registration was last created or renewed: the
// time a dead-token report must be later than to remove it.
func (r Registration) LastRegistered() time.Time {
	if r.Renewed.After(r.Registered) {
		return r.Renewed
	}
	return r.Registered
}

// SameAsRead reports whether r is read unchanged in what
// Store.DeleteRead compares: type, token, secret, owner, device key and
// the times of registration and renewal.
func SameAsRead(r, read Registration) bool {
	return r.Type == read.Type && r.Token == read.Token && r.Secret == read.Secret &&
		r.Owner == read.Owner && r.DeviceKey == read.DeviceKey &&
		r.Registered.Equal(read.Registered) && r.Renewed.Equal(read.Renewed)
}

// StillAsRead reports whether a node's registration now (found says
// whether it has one) is still read, as Store.PutRead takes read: the
// zero Registration for a node that had none.
func StillAsRead(now Registration, found bool, read Registration) bool {
	if read.Node == "" {
		return !found
	}
	return found && SameAsRead(now, read)
}

// IdleSince reports whether the registration showed no sign of life
// since t: created, renewed and last pushed to successfully all before
// it. Failed pushes are no sign either way.
func (r Registration) IdleSince(t time.Time) bool {
	return r.LastRegistered().Before(t) && r.LastSuccessfulPush.Before(t)
}

// Decide computes the registration Store.Register writes from the one stored
// now (found false when the node has none).
type Decide func(old Registration, found bool) (Registration, error)

// Renew is the plain registration rule of mod_push_appserver: if the node
// is registered with r.Type, its Token, Domain, DeviceKey, Owner and Account become
// r's, Renewed becomes r.Registered, and the rest (the secret above all) is
// kept; otherwise r is stored as given, replacing a registration of the node
// with another type.
func Renew(r Registration) Decide {
	return func(old Registration, found bool) (Registration, error) {
		if !found || old.Type != r.Type {
			return r, nil
		}
		old.Token, old.Domain, old.DeviceKey, old.Owner, old.Account = r.Token, r.Domain, r.DeviceKey, r.Owner, r.Account
		old.Renewed = r.Registered
		return old, nil
	}
}

// PushStatus is the outcome of one push, written behind in batches.
type PushStatus struct {
	Node    string
	At      time.Time
	Success bool
	Reason  string // error reason when !Success
}

// HeldPush is a push that failed and waits to be sent again, kept in the
// registry so that it outlives the server that keeps it (see KeepPushes).
// Device names the device it is for (a short ASCII name), one push per
// device and owner; Push is the server's encoding of it; FailedAt is when
// the device's latest push failed.
//
// Age is how long ago that was: the writer's reckoning when written, the
// store's when read. A store several hosts share keeps FailedAt on its
// own clock (its now less Age) and reads Age back by it, so that hosts
// whose clocks disagree still agree on how long a push has waited; one
// that leaves it zero makes the reader go by FailedAt.
type HeldPush struct {
	Device   string
	FailedAt time.Time
	Age      time.Duration
	Push     []byte
}

// ImportedNode is a node an import from mod_push_appserver wrote, with
// the time its record there was last registered (see PutImported).
type ImportedNode struct {
	Node       string
	Registered time.Time
}

// ErrLeaseLost is KeepPushes' error for an owner whose lease ran out and
// whose pushes went to whoever takes held pushes.
var ErrLeaseLost = errors.New("the lease on the pushes kept ran out: they were given to other servers")

// HeldMover is a Store that can take held pushes without a moment in which
// only the taker's memory holds them: MoveHeldPushes is TakeHeldPushes,
// but the pushes it returns stay in the registry, moved to owner under a
// lease from now (as KeepPushes would start it, or with renew, renew it:
// ErrLeaseLost when it ran out, as KeepPushes says), each under a Device
// of its own that no KeepPushes of owner writes otherwise. The taker
// deletes them (KeepPushes' del) in the write that holds what it made of
// them; if it dies first, they go to the others once its lease has run
// out.
//
// ReturnHeldPushes gives pushes moved to owner (by their Device) back to
// whoever takes held pushes: those the taker found no room for.
type HeldMover interface {
	MoveHeldPushes(ctx context.Context, owner string, lease time.Duration, renew bool, limit int) ([]HeldPush, error)
	ReturnHeldPushes(ctx context.Context, owner string, devices []string) error
}

// Store persists registrations. Every method is safe for concurrent use.
type Store interface {
	// Get returns the registration for node, or ErrNotFound.
	Get(ctx context.Context, node string) (Registration, error)

	// GetByDeviceKey returns the registration with the given DeviceKey, or
	// ErrNotFound.
	GetByDeviceKey(ctx context.Context, key string) (Registration, error)

	// Register atomically creates, renews or replaces the registration of
	// node: it calls decide with the registration stored now (found false
	// when there is none) and stores, whole, the registration decide
	// returns, which must have Node == node. If decide returns an error,
	// nothing changes and Register returns that error. decide may be called
	// more than once and must not have side effects. A DeviceKey already
	// held by another node gives ErrConflict and changes nothing. It
	// returns the registration as stored.
	Register(ctx context.Context, node string, decide Decide) (Registration, error)

	// Delete removes the registration of node if it has type typ and returns
	// it, or ErrNotFound.
	Delete(ctx context.Context, node, typ string) (Registration, error)

	// DeleteRead removes the registration of r.Node if it is still r as
	// read from this store: the same type, token, secret, owner and
	// device key, registered and renewed at the same times. Every
	// registration, renewal or replacement of the node since the read
	// changes one of them (a renewal at least its Renewed), so what a
	// caller decided on r (the caller's right to remove it, the token a
	// push service declared dead) still holds for what goes. It returns
	// the registration removed, or ErrNotFound when the node has none or
	// another one than r.
	DeleteRead(ctx context.Context, r Registration) (Registration, error)

	// DeleteToken removes every registration of type typ with the given token
	// that was last registered or renewed before the given time, and returns
	// the ones it removed.
	DeleteToken(ctx context.Context, typ, token string, before time.Time) ([]Registration, error)

	// DeleteIdle looks at the at most limit registrations that follow
	// the node after (from the start when after is ""), in node order and
	// of any type, removes those of them idle since before (see
	// Registration.IdleSince) and of type typ (any when typ is ""), and
	// returns them, in no particular order, with next: the greatest node
	// it looked at, from which a next call goes on, or "" when fewer than
	// limit followed after, so none is left to look at. The window is
	// limit registrations whatever is idle and whatever typ is: one call
	// reads that many at most, never a whole registry with few idle ones
	// in it. next is in the store's own order of nodes, so a
	// prune that passes it to the next call reads each registration once
	// and skips none. A window with none idle is only read, with no write
	// lock taken. Each goes in the statement that finds it idle, so a
	// renewal made meanwhile keeps its registration.
	DeleteIdle(ctx context.Context, before time.Time, typ, after string, limit int) (removed []Registration, next string, err error)

	// UpdatePushStatus records push outcomes in one transaction. It never
	// touches token or secret, so it cannot undo a concurrent Register;
	// statuses of nodes that no longer exist are ignored.
	UpdatePushStatus(ctx context.Context, statuses []PushStatus) error

	// Nodes lists registered nodes in order, at most limit of them.
	Nodes(ctx context.Context, limit int) ([]string, error)

	// Count returns the number of registrations.
	Count(ctx context.Context) (int, error)

	// List returns up to limit registrations in node order, starting after
	// the node given (from the start when after is ""): a page of an
	// administrator's listing.
	List(ctx context.Context, after string, limit int) ([]Registration, error)

	// ListDomain is List of the registrations whose Domain is domain
	// (none for ""), read through the domain's index rather than the
	// whole registry: an administrator's listing of a domain of 1,000
	// among 200,000 registrations took 0.9-1.2 s on SQLite reading them
	// all, 0.01-0.05 s through the index.
	ListDomain(ctx context.Context, domain, after string, limit int) ([]Registration, error)

	// CountByType returns the number of registrations of each type.
	CountByType(ctx context.Context) (map[string]int, error)

	// CountMatching returns the number of registrations of type typ
	// (any when "") whose Domain is domain (any when ""), counted by the
	// store in one query: an administrator's count read page by page
	// took 44.6 s for 2,580,000 registrations on PostgreSQL.
	CountMatching(ctx context.Context, typ, domain string) (int, error)

	// Put writes registrations exactly as given, secret and times included,
	// each replacing any registration of its node, all in one transaction.
	// It fails, changing nothing, where one's device key is held by
	// another node: that node's user's server pushes with it.
	// It brings registrations over from another app server; requests go
	// through Register. It returns how many of rs it wrote where their
	// node had no registration (the others replaced one), as the
	// writing statements found it: a count of the registry before and
	// after is off by whatever a running server did meanwhile.
	Put(ctx context.Context, rs []Registration) (added int, err error)

	// PutRead is Put of registrations decided on what the caller read
	// of their nodes from this store: read[i] is rs[i].Node's
	// registration as read (SameAsRead compares), or the zero
	// Registration when the node had none. Only those whose node is
	// still as read, or still has none, are written, in one
	// transaction; the others (registered, renewed, replaced or removed
	// meanwhile, by a server running on the store) stay as they are,
	// and their nodes are returned in changed. A copy into a running
	// registry thus never writes an older registration over the one a
	// device made after the copy judged its node.
	PutRead(ctx context.Context, rs, read []Registration) (added int, changed []string, err error)

	// PutImported is Put for registrations imported from mod_push_appserver:
	// in the same transaction it records each node with its
	// LastRegistered time, which outlives the registration, so that an
	// import run again can tell a registration removed here since from a
	// record newer there (ImportedAt).
	PutImported(ctx context.Context, rs []Registration) error

	// PutImportedRead is PutImported under PutRead's condition: only the
	// registrations whose node is still as read, or still has none, are
	// written and recorded; the others' nodes are returned in changed.
	PutImportedRead(ctx context.Context, rs, read []Registration) (changed []string, err error)

	// ImportedAt returns the time PutImported last recorded for node, or
	// ErrNotFound when no import wrote it.
	ImportedAt(ctx context.Context, node string) (time.Time, error)

	// ImportedNodes returns up to limit of the nodes PutImported recorded,
	// with their times, in node order, starting after the node given (from
	// the start when after is ""): a page of the list a registry moved
	// elsewhere takes along, so that the import run again into the new
	// one still leaves removed registrations removed.
	ImportedNodes(ctx context.Context, after string, limit int) ([]ImportedNode, error)

	// PutImportedNodes records nodes as PutImported would, without writing
	// any registration, all in one transaction. A node already recorded
	// keeps the later of the two times: a later import into this registry
	// saw a newer record than the registry the list comes from.
	PutImportedNodes(ctx context.Context, ns []ImportedNode) error

	// BlockToken records b, replacing an earlier entry of the same type
	// and token.
	BlockToken(ctx context.Context, b BlockedToken) error

	// GetBlockedToken returns the entry for typ and token, expired or not,
	// or ErrNotFound.
	GetBlockedToken(ctx context.Context, typ, token string) (BlockedToken, error)

	// UnblockToken removes the entry for typ and token if it blocks until
	// no later than until (so a newer block written meanwhile stays). It
	// is no error if there is none.
	UnblockToken(ctx context.Context, typ, token string, until time.Time) error

	// PurgeBlockedTokens removes the entries whose block ended before
	// before and returns how many, so the list holds only live blocks.
	PurgeBlockedTokens(ctx context.Context, before time.Time) (int, error)

	// TrimBlockedTokens removes the entries beyond the keep that end
	// latest, those ending soonest first, and returns how many: the
	// block list's cap. Entries ending at the same time go in (type,
	// token) order.
	TrimBlockedTokens(ctx context.Context, keep int) (int, error)

	// CountDomain returns the number of registrations whose Domain is
	// domain, counting no further than limit (an indexed count, for the
	// per-domain quota, which needs to know only whether a domain is at
	// it: a domain of 200,000 registrations read whole took 17 ms on
	// SQLite and up to 118 ms on PostgreSQL per registration); 0 for "".
	CountDomain(ctx context.Context, domain string, limit int) (int, error)

	// KeepPushes writes, in one transaction, what owner keeps waiting for
	// redelivery: each of put replaces owner's push to its Device, each
	// device in del loses owner's push, and owner's lease is extended to
	// lease from now. While its lease lasts, TakeHeldPushes leaves owner's
	// pushes alone; once it has run out they are anyone's. With renew
	// set, an owner whose lease ran out meanwhile gets ErrLeaseLost and
	// nothing is written; without, a new lease starts.
	KeepPushes(ctx context.Context, owner string, lease time.Duration, renew bool, put []HeldPush, del []string) error

	// ReleasePushes ends owner's lease at once, as a server does when it
	// stops: its pushes are anyone's to take.
	ReleasePushes(ctx context.Context, owner string) error

	// TakeHeldPushes removes and returns up to limit pushes that no lease
	// holds (released, or their owner's lease ran out), the oldest, in
	// the order they failed. Several servers taking at once each get
	// different ones.
	TakeHeldPushes(ctx context.Context, limit int) ([]HeldPush, error)

	// InstanceValue returns the value stored under name, creating it with gen
	// on first use. It holds values that all instances sharing the registry
	// must agree on, such as the salt for device keys.
	InstanceValue(ctx context.Context, name string, gen func() (string, error)) (string, error)

	Close() error
}
