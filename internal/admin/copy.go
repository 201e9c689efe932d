package admin

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"time"

	"github.com/push-appserver/push-appserver/internal/appserver"
	"github.com/push-appserver/push-appserver/internal/registry"
)

// CopySource is what Copy reads of the registry it copies from.
type CopySource interface {
	List(ctx context.Context, after string, limit int) ([]registry.Registration, error)
	ImportedNodes(ctx context.Context, after string, limit int) ([]registry.ImportedNode, error)
	InstanceValue(ctx context.Context, name string, gen func() (string, error)) (string, error)
}

// CopyTarget is what Copy needs of the registry it copies into.
type CopyTarget interface {
	Get(ctx context.Context, node string) (registry.Registration, error)
	GetByDeviceKey(ctx context.Context, key string) (registry.Registration, error)
	DeleteRead(ctx context.Context, r registry.Registration) (registry.Registration, error)
	PutRead(ctx context.Context, rs, read []registry.Registration) (added int, changed []string, err error)
	PutImportedNodes(ctx context.Context, ns []registry.ImportedNode) error
	InstanceValue(ctx context.Context, name string, gen func() (string, error)) (string, error)
}

// CopySummary is what Copy did, or with DryRun would do.
type CopySummary struct {
	// Copied counts the registrations written, by type.
	Copied map[string]int
	// Bound counts those bound to an XMPP account or device, whose
	// owner and device-key hashes need the source's salt.
	Bound int
	// New is how many of those written had no registration of their
	// node in the target, as the statements writing them found it; the
	// rest replaced one. (The target's count after the copy less the
	// count before it is off by what a server running on the target
	// registered and deleted meanwhile.)
	New int
	// Salt says what became of the source's salt: "none" (it has none,
	// so nothing is bound), "copied", "same" (the target had it), or that
	// the target keeps its own, the source having nothing bound.
	Salt string
	// Kept counts registrations of the source not copied because their
	// node, or their device under another node, is registered here more
	// recently.
	Kept int
	// Imported counts the nodes listed as written by the
	// mod_push_appserver import that went along.
	Imported int
	// Held counts the pushes waiting for redelivery moved along.
	Held int
	// HeldLeftTo, when not 0, is how many servers run on the source:
	// the pushes waiting for redelivery there were left to them.
	HeldLeftTo int
}

// Total is the number of registrations copied.
func (s CopySummary) Total() int {
	n := 0
	for _, c := range s.Copied {
		n += c
	}
	return n
}

// WriteTo prints the summary, a line per type.
func (s CopySummary) WriteTo(w io.Writer) (int64, error) {
	var n int64
	pr := func(format string, args ...any) {
		k, _ := fmt.Fprintf(w, format, args...)
		n += int64(k)
	}
	for _, typ := range slices.Sorted(maps.Keys(s.Copied)) {
		pr("%-24s %d\n", typ, s.Copied[typ])
	}
	pr("%d registrations, %d of them bound to an account or device (salt: %s); %d new in the target, %d replaced one of the same node\n",
		s.Total(), s.Bound, s.Salt, s.New, s.Total()-s.New)
	if s.Kept > 0 {
		pr("%d not copied: registered here more recently (the node itself, or its device under another node), so the target's token and secret stay\n", s.Kept)
	}
	if s.Imported > 0 {
		pr("%d nodes listed as imported from mod_push_appserver, so that running that import again leaves those removed since removed\n", s.Imported)
	}
	if s.Held > 0 {
		pr("%d pushes waiting for redelivery moved along, for the target's servers to send\n", s.Held)
	}
	if s.HeldLeftTo > 0 {
		pr("pushes waiting for redelivery left in the source, for the %d servers running on it to send: stop them and run this again to move what they leave\n", s.HeldLeftTo)
	}
	return n, nil
}

// ErrSaltMismatch is Copy's refusal to copy registrations bound to an
// account or device into a registry whose salt differs: their hashes
// would match no account or device there.
var ErrSaltMismatch = errors.New("the target registry has a salt of its own")

var errNoValue = errors.New("no such value")

// Copy copies every registration of src into dst exactly as it is
// (secret, times, push outcomes, owner, device key), a page at a time,
// each replacing a registration of the same node unless dst's was
// registered or renewed later (settleDevices). A registry copied this
// way serves the same devices: the secrets their users' servers hold
// still work, and their accounts may still change them.
//
// Accounts and devices are known only by hashes salted with a value of
// the registry's own, so that goes along: into a target without one,
// before any registration. A target that has another salt takes no
// registration bound to an account or device (ErrSaltMismatch, nothing
// copied); one that holds nothing can be emptied of it by hand.
//
// The list of the nodes the mod_push_appserver import wrote goes along
// (registry.Store's ImportedNodes), each keeping the later time where the
// target lists it too: without it the import run again into the target
// brings back the registrations removed since, with their dead tokens
// and the secrets their servers were told are gone.
//
// The block list of dead tokens is not copied: its entries end within
// token_block, and the push services name dead tokens again.
//
// Between two pages it writes comes a pause as long as the page's write
// took (pruneGap: 10 ms at least, 1 s at most), in which a running
// server's writes go through, as between Prune's windows: SQLite's busy
// handler, in which a waiting write sits, looks again within that time.
// A fixed pause of 150 ms after every page of 1,000 made the copy of
// 10,000,000 registrations take 34 minutes, three quarters of it
// asleep (4,900 registrations a second, each page written in 54 ms).
//
// After each page of registrations, progress hears how many of src's
// it has read and how many of them it copied (with dryRun, would copy).
func Copy(ctx context.Context, dst CopyTarget, src CopySource, dryRun bool, progress Progress) (CopySummary, error) {
	return copyRegistry(ctx, dst, src, dryRun, progress, realClock{})
}

func copyRegistry(ctx context.Context, dst CopyTarget, src CopySource, dryRun bool, progress Progress, c clock) (CopySummary, error) {
	sum := CopySummary{Copied: map[string]int{}, Salt: "none"}
	srcSalt, err := value(ctx, src, appserver.SaltName)
	if err != nil {
		return sum, fmt.Errorf("reading the source's salt: %w", err)
	}
	dstSalt, err := value(ctx, dst, appserver.SaltName)
	if err != nil {
		return sum, fmt.Errorf("reading the target's salt: %w", err)
	}
	if srcSalt != "" {
		sum.Salt = "same"
		if dstSalt == "" {
			sum.Salt = "copied"
			if !dryRun {
				// Whoever wrote first wins: a server started on the
				// target meanwhile may have made one.
				got, err := dst.InstanceValue(ctx, appserver.SaltName, func() (string, error) { return srcSalt, nil })
				if err != nil {
					return sum, fmt.Errorf("writing the salt: %w", err)
				}
				dstSalt = got
			}
		}
		if dstSalt != "" && dstSalt != srcSalt {
			if err := mismatch(ctx, src); err != nil {
				return sum, err
			}
			sum.Salt = "the target's, as nothing is bound"
		}
	}
	read := 0
	err = eachPage(ctx, src, func(page []registry.Registration) error {
		read += len(page)
		page, asRead, err := settleDevices(ctx, dst, page, dryRun, &sum)
		if err != nil {
			return err
		}
		var pause time.Duration
		if !dryRun && len(page) > 0 {
			start := c.Now()
			// Each goes only where its node is still as settleDevices
			// judged it: one a running server registered, renewed or
			// removed since stays as the device left it.
			added, changed, err := dst.PutRead(ctx, page, asRead)
			if err != nil {
				return fmt.Errorf("writing %d registrations from node %q on (the %d before are copied): %w", len(page), page[0].Node, sum.Total(), err)
			}
			sum.New += added
			pause = pruneGap(c.Now().Sub(start))
			if len(changed) > 0 {
				sum.Kept += len(changed)
				page = slices.DeleteFunc(page, func(r registry.Registration) bool { return slices.Contains(changed, r.Node) })
			}
		}
		for _, r := range page {
			sum.Copied[r.Type]++
			if bound(r) {
				sum.Bound++
			}
			if dryRun {
				switch _, err := dst.Get(ctx, r.Node); {
				case errors.Is(err, registry.ErrNotFound):
					sum.New++
				case err != nil:
					return fmt.Errorf("reading the target: %w", err)
				}
			}
		}
		progress.tell(read, sum.Total())
		if pause > 0 {
			// Let a running server's writes in between two pages (see
			// Copy); the page is counted first, so an interrupted copy
			// says it.
			if err := c.Sleep(ctx, pause); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return sum, fmt.Errorf("copying: %w", err)
	}
	if err := copyImported(ctx, dst, src, dryRun, &sum); err != nil {
		return sum, err
	}
	if dryRun {
		return sum, nil
	}
	if err := copyHeld(ctx, dst, src, &sum); err != nil {
		return sum, err
	}
	return sum, nil
}

// copyImported writes src's list of the nodes the mod_push_appserver
// import wrote into dst (unless dryRun), a page at a time, counting them
// in sum.Imported.
func copyImported(ctx context.Context, dst CopyTarget, src CopySource, dryRun bool, sum *CopySummary) error {
	for after := ""; ; {
		page, err := src.ImportedNodes(ctx, after, pageSize)
		if err != nil {
			return fmt.Errorf("reading the nodes imported from mod_push_appserver (%d copied): %w", sum.Imported, err)
		}
		if len(page) == 0 {
			return nil
		}
		if !dryRun {
			if err := dst.PutImportedNodes(ctx, page); err != nil {
				return fmt.Errorf("writing the nodes imported from mod_push_appserver, from node %q on (the %d before are copied): %w", page[0].Node, sum.Imported, err)
			}
		}
		sum.Imported += len(page)
		if len(page) < pageSize {
			return nil
		}
		after = page[len(page)-1].Node
	}
}

// settleDevices returns page without the registrations whose node dst
// holds registered or renewed more recently, or whose device key another
// node holds in dst and registered more recently (both counted in
// sum.Kept); an older such node, the device's registration before it
// moved on the source, is deleted from dst (unless dryRun), as the copy
// replaces what the source replaced. With each registration it returns
// its node's in dst as it read it (asRead; the zero Registration for
// none), for PutRead.
func settleDevices(ctx context.Context, dst CopyTarget, page []registry.Registration, dryRun bool, sum *CopySummary) (out, asRead []registry.Registration, err error) {
	out = page[:0:0]
	for _, r := range page {
		// A node registered again here since the source was written (a
		// backup copied into the running registry, a second copy after
		// the servers moved) holds the device's newer token and the
		// secret its user's server now pushes with: the source's older
		// registration would put back a secret that server no longer
		// holds, and its pushes would be refused as unknown.
		cur, err := dst.Get(ctx, r.Node)
		switch {
		case errors.Is(err, registry.ErrNotFound):
			cur = registry.Registration{}
		case err != nil:
			return nil, nil, fmt.Errorf("reading the target: %w", err)
		case cur.LastRegistered().After(r.LastRegistered()):
			sum.Kept++
			continue
		}
		if r.DeviceKey != "" {
			keep, err := settleDevice(ctx, dst, page, r, dryRun)
			if err != nil {
				return nil, nil, err
			}
			if !keep {
				sum.Kept++
				continue
			}
		}
		out = append(out, r)
		asRead = append(asRead, cur)
	}
	return out, asRead, nil
}

// settleDevice is settleDevices for r, which has a device key: it says
// whether r is to be written, deleting the older node that holds its
// device key in dst (unless dryRun). The node goes only as read: one the
// device renewed on a running server since is judged again, and may be
// the newer one.
func settleDevice(ctx context.Context, dst CopyTarget, page []registry.Registration, r registry.Registration, dryRun bool) (bool, error) {
	for attempt := 0; ; attempt++ {
		held, err := dst.GetByDeviceKey(ctx, r.DeviceKey)
		switch {
		case errors.Is(err, registry.ErrNotFound) || err == nil && held.Node == r.Node:
			return true, nil
		case err != nil:
			return false, fmt.Errorf("reading the target: %w", err)
		case slices.ContainsFunc(page, func(o registry.Registration) bool { return o.Node == held.Node }):
			// Written with this page: Put judges it.
			return true, nil
		case held.LastRegistered().After(r.LastRegistered()):
			return false, nil
		case dryRun:
			return true, nil
		}
		_, err = dst.DeleteRead(ctx, held)
		switch {
		case err == nil:
			return true, nil
		case !errors.Is(err, registry.ErrNotFound):
			return false, fmt.Errorf("replacing node %q of the same device: %w", held.Node, err)
		case attempt >= 5:
			return false, fmt.Errorf("replacing node %q of the same device: it changed %d times meanwhile", held.Node, attempt+1)
		}
	}
}

// mismatch is ErrSaltMismatch with how many registrations it concerns,
// or nil when none of src's is bound to an account or device: the
// others need no salt.
func mismatch(ctx context.Context, src CopySource) error {
	n := 0
	err := eachPage(ctx, src, func(page []registry.Registration) error {
		for _, r := range page {
			if bound(r) {
				n++
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("reading the source: %w", err)
	}
	if n == 0 {
		return nil
	}
	return fmt.Errorf("%w, and %d of the registrations to copy are bound to an account or device by the source's: copy into a registry without registrations, or delete its device-key-salt from instance_values first", ErrSaltMismatch, n)
}

func bound(r registry.Registration) bool { return r.Owner != "" || r.DeviceKey != "" }

// value returns the instance value name of s, or "" when it has none,
// without making one.
func value(ctx context.Context, s interface {
	InstanceValue(ctx context.Context, name string, gen func() (string, error)) (string, error)
}, name string) (string, error) {
	v, err := s.InstanceValue(ctx, name, func() (string, error) { return "", errNoValue })
	if errors.Is(err, errNoValue) {
		return "", nil
	}
	return v, err
}

// heldSource is a registry holding pushes for redelivery that it hands
// over without a moment in which this process alone holds them.
type heldSource interface {
	registry.HeldMover
	KeepPushes(ctx context.Context, owner string, lease time.Duration, renew bool, put []registry.HeldPush, del []string) error
	ReleasePushes(ctx context.Context, owner string) error
}

// heldTarget is a registry that keeps pushes for redelivery.
type heldTarget interface {
	KeepPushes(ctx context.Context, owner string, lease time.Duration, renew bool, put []registry.HeldPush, del []string) error
	ReleasePushes(ctx context.Context, owner string) error
}

// listened is a registry that knows how many servers run on it
// (PostgreSQL: each listens for its changes).
type listened interface {
	Listeners(ctx context.Context) (int, error)
}

// copyHeld moves the pushes stopped servers handed to src for
// redelivery (a server stopped during a push service's outage) into dst,
// released there for its servers to take: the registrations they are for
// came along, and left behind they would never be sent.
//
// Each page stays in src, under a lease of this copy's, until dst holds
// it, and is deleted from src only then: a failure in between leaves it
// in src (given back at once, or when the lease runs out), at worst in
// both, never in neither. A push sent twice wakes a device twice; one
// lost leaves it asleep.
//
// While servers run on src, its released pushes are theirs to take:
// nothing is moved, and sum.HeldLeftTo says how many servers run there.
func copyHeld(ctx context.Context, dst CopyTarget, src CopySource, sum *CopySummary) (err error) {
	from, ok1 := src.(heldSource)
	to, ok2 := dst.(heldTarget)
	if !ok1 || !ok2 {
		return nil
	}
	if l, ok := src.(listened); ok {
		n, err := l.Listeners(ctx)
		if err != nil {
			return fmt.Errorf("counting the servers running on the source: %w", err)
		}
		if n > 0 {
			sum.HeldLeftTo = n
			return nil
		}
	}
	const owner = "import-registry"
	const lease = time.Minute
	// What was moved and not yet deleted goes back to the source's
	// servers, whatever stopped the copy.
	defer func() {
		if rerr := from.ReleasePushes(context.WithoutCancel(ctx), owner); rerr != nil && err == nil {
			err = fmt.Errorf("giving the source back the pushes waiting for redelivery not moved (they are anyone's in a minute): %w", rerr)
		}
	}()
	for {
		held, err := from.MoveHeldPushes(ctx, owner, lease, false, pageSize)
		if err != nil {
			return fmt.Errorf("reading the pushes waiting for redelivery (%d moved): %w", sum.Held, err)
		}
		if len(held) == 0 {
			return nil
		}
		// Each under a name of its own (MoveHeldPushes'): KeepPushes
		// keeps one push per device name.
		if err := to.KeepPushes(ctx, owner, lease, false, held, nil); err != nil {
			return fmt.Errorf("writing the pushes waiting for redelivery (%d moved; the rest stay in the source): %w", sum.Held, err)
		}
		if err := to.ReleasePushes(ctx, owner); err != nil {
			return fmt.Errorf("releasing the pushes waiting for redelivery in the target (%d moved; %d more are in both, the target's servers take them in a minute): %w", sum.Held, len(held), err)
		}
		devices := make([]string, len(held))
		for i, h := range held {
			devices[i] = h.Device
		}
		if err := from.KeepPushes(ctx, owner, lease, false, nil, devices); err != nil {
			return fmt.Errorf("deleting the pushes waiting for redelivery moved from the source (%d moved; %d more are in both and may be sent twice): %w", sum.Held, len(held), err)
		}
		sum.Held += len(held)
	}
}
