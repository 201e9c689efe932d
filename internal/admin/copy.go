package admin

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"

	"github.com/push-appserver/push-appserver/internal/appserver"
	"github.com/push-appserver/push-appserver/internal/registry"
)

// CopySource is what Copy reads of the registry it copies from.
type CopySource interface {
	List(ctx context.Context, after string, limit int) ([]registry.Registration, error)
	InstanceValue(ctx context.Context, name string, gen func() (string, error)) (string, error)
}

// CopyTarget is what Copy needs of the registry it copies into.
type CopyTarget interface {
	Count(ctx context.Context) (int, error)
	Get(ctx context.Context, node string) (registry.Registration, error)
	GetByDeviceKey(ctx context.Context, key string) (registry.Registration, error)
	Delete(ctx context.Context, node, typ string) (registry.Registration, error)
	Put(ctx context.Context, rs []registry.Registration) error
	InstanceValue(ctx context.Context, name string, gen func() (string, error)) (string, error)
}

// CopySummary is what Copy did, or with DryRun would do.
type CopySummary struct {
	// Copied counts the registrations written, by type.
	Copied map[string]int
	// Bound counts those bound to an XMPP account or device, whose
	// owner and device-key hashes need the source's salt.
	Bound int
	// New is how many more registrations the target holds after the
	// copy than before; the rest replaced registrations of the same node.
	New int
	// Salt says what became of the source's salt: "none" (it has none,
	// so nothing is bound), "copied", "same" (the target had it), or that
	// the target keeps its own, the source having nothing bound.
	Salt string
	// Kept counts registrations of the source not copied because their
	// device is registered here under another node more recently.
	Kept int
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
		pr("%d not copied: their device registered here under another node more recently\n", s.Kept)
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
// each replacing a registration of the same node. A registry copied this
// way serves the same devices: the secrets their users' servers hold
// still work, and their accounts may still change them.
//
// Accounts and devices are known only by hashes salted with a value of
// the registry's own, so that goes along: into a target without one,
// before any registration. A target that has another salt takes no
// registration bound to an account or device (ErrSaltMismatch, nothing
// copied); one that holds nothing can be emptied of it by hand.
//
// The block list of dead tokens is not copied: its entries end within
// token_block, and the push services name dead tokens again.
func Copy(ctx context.Context, dst CopyTarget, src CopySource, dryRun bool) (CopySummary, error) {
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
	before, err := dst.Count(ctx)
	if err != nil {
		return sum, fmt.Errorf("counting the target's registrations: %w", err)
	}
	err = eachPage(ctx, src, func(page []registry.Registration) error {
		page, err := settleDevices(ctx, dst, page, dryRun, &sum)
		if err != nil {
			return err
		}
		if !dryRun && len(page) > 0 {
			if err := dst.Put(ctx, page); err != nil {
				return fmt.Errorf("writing %d registrations from node %q on (the %d before are copied): %w", len(page), page[0].Node, sum.Total(), err)
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
		return nil
	})
	if err != nil {
		return sum, fmt.Errorf("copying: %w", err)
	}
	if dryRun {
		return sum, nil
	}
	n, err := dst.Count(ctx)
	if err != nil {
		return sum, fmt.Errorf("counting the target's registrations: %w", err)
	}
	sum.New = n - before
	return sum, nil
}

// settleDevices returns page without the registrations whose device key
// another node holds in dst and registered more recently (counted in
// sum.Kept); an older such node, the device's registration before it
// moved on the source, is deleted from dst (unless dryRun), as the copy
// replaces what the source replaced.
func settleDevices(ctx context.Context, dst CopyTarget, page []registry.Registration, dryRun bool, sum *CopySummary) ([]registry.Registration, error) {
	out := page[:0:0]
	for _, r := range page {
		if r.DeviceKey == "" {
			out = append(out, r)
			continue
		}
		held, err := dst.GetByDeviceKey(ctx, r.DeviceKey)
		switch {
		case errors.Is(err, registry.ErrNotFound) || err == nil && held.Node == r.Node:
		case err != nil:
			return nil, fmt.Errorf("reading the target: %w", err)
		case slices.ContainsFunc(page, func(o registry.Registration) bool { return o.Node == held.Node }):
			// Written with this page: Put judges it.
		case held.LastRegistered().After(r.LastRegistered()):
			sum.Kept++
			continue
		case !dryRun:
			if _, err := dst.Delete(ctx, held.Node, held.Type); err != nil && !errors.Is(err, registry.ErrNotFound) {
				return nil, fmt.Errorf("replacing node %q of the same device: %w", held.Node, err)
			}
		}
		out = append(out, r)
	}
	return out, nil
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
