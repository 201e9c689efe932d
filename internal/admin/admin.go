// Package admin owns what an operator does by hand on a running
// installation: list, show, count, delete and prune registrations in the
// registry (beside a running server), copy them into another registry,
// and send one test push through an app. It never shows a secret unless
// asked to.
package admin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/push-appserver/push-appserver/internal/registry"
)

// Store is what the admin commands need of the registry.
type Store interface {
	Get(ctx context.Context, node string) (registry.Registration, error)
	List(ctx context.Context, after string, limit int) ([]registry.Registration, error)
	ListDomain(ctx context.Context, domain, after string, limit int) ([]registry.Registration, error)
	Count(ctx context.Context) (int, error)
	CountMatching(ctx context.Context, typ, domain string) (int, error)
	Delete(ctx context.Context, node, typ string) (registry.Registration, error)
	DeleteIdle(ctx context.Context, before time.Time, typ, after string, limit int) ([]registry.Registration, string, error)
}

// Filter selects registrations; empty fields match everything.
type Filter struct {
	Type string
	// Domain is the account's domain, known only for registrations made
	// with Conversations' register-push-* commands.
	Domain string
}

func (f Filter) match(r registry.Registration) bool {
	return (f.Type == "" || r.Type == f.Type) && (f.Domain == "" || r.Domain == f.Domain)
}

func (f Filter) empty() bool { return f == Filter{} }

const pageSize = 1000

// Progress hears how far a command that reads the whole registry has
// come, after each page or window it read: read is how many
// registrations it has read so far, done how many of them it removed,
// copied or found so far, and neither ever goes down. It decides itself
// whether to say so (the command line prints a line every few seconds);
// nil hears nothing. A registry of 10,000,000 takes minutes to prune or
// copy.
type Progress func(read, done int)

func (p Progress) tell(read, done int) {
	if p != nil {
		p(read, done)
	}
}

// lister is a registry read a page at a time.
type lister interface {
	List(ctx context.Context, after string, limit int) ([]registry.Registration, error)
}

// eachPage calls fn with every page of s's registrations, in node order,
// until fn or a read fails.
func eachPage(ctx context.Context, s lister, fn func([]registry.Registration) error) error {
	for after := ""; ; {
		page, err := s.List(ctx, after, pageSize)
		if err != nil {
			return err
		}
		if len(page) > 0 {
			if err := fn(page); err != nil {
				return err
			}
		}
		if len(page) < pageSize {
			return nil
		}
		after = page[len(page)-1].Node
	}
}

// domainLister reads only the registrations of one domain, a page at a
// time.
type domainLister struct {
	s      Store
	domain string
}

func (d domainLister) List(ctx context.Context, after string, limit int) ([]registry.Registration, error) {
	return d.s.ListDomain(ctx, d.domain, after, limit)
}

// List prints every registration f matches with p, in node order, and
// writes out what p holds after each page read from the registry: with a
// filter, the rows matched by a page are on the output before the next
// page is read. Flushed only every thousand printed rows, the table of
// `registrations list -domain D` for a domain with 10,000 registrations
// among 10,000,000 showed its first line after 3.7 s, and for a domain
// with fewer than a thousand nothing at all until the end, 44 s later.
// A domain is read through its index (Store.ListDomain), not by reading
// the whole registry and matching.
func List(ctx context.Context, s Store, f Filter, p *Printer) error {
	var l lister = s
	if f.Domain != "" {
		l = domainLister{s, f.Domain}
	}
	err := eachPage(ctx, l, func(page []registry.Registration) error {
		for _, r := range page {
			if f.match(r) {
				if err := p.Print(r); err != nil {
					return err
				}
			}
		}
		return p.Flush()
	})
	if ferr := p.Flush(); err == nil {
		err = ferr
	}
	return err
}

// Count counts the registrations f matches, in one query of the store.
func Count(ctx context.Context, s Store, f Filter) (int, error) {
	if f.empty() {
		return s.Count(ctx)
	}
	return s.CountMatching(ctx, f.Type, f.Domain)
}

// Delete removes the registration of node, whatever its type, and returns
// it.
func Delete(ctx context.Context, s Store, node string) (registry.Registration, error) {
	r, err := s.Get(ctx, node)
	if err != nil {
		return r, err
	}
	return s.Delete(ctx, node, r.Type)
}

// Idle counts, by type, the registrations of type typ (every type when
// "") idle since before (registry.Registration.IdleSince), changing
// nothing, telling progress, after each page, how many it read and found
// idle.
func Idle(ctx context.Context, s Store, typ string, before time.Time, progress Progress) (map[string]int, error) {
	n := map[string]int{}
	read, idle := 0, 0
	err := eachPage(ctx, s, func(page []registry.Registration) error {
		for _, r := range page {
			if (typ == "" || r.Type == typ) && r.IdleSince(before) {
				n[r.Type]++
				idle++
			}
		}
		read += len(page)
		progress.tell(read, idle)
		return nil
	})
	return n, err
}

// pruneWindow is how many registrations one statement of Prune looks at,
// idle or not. A running server's registrations wait for each, so each
// stays short however many of its window are idle: on SQLite, deleting a
// window of 2,000 all idle held the write lock about 60 ms (500: 14 ms,
// 10,000: 0.3 s); reading a window of none idle takes 1-3 ms.
const pruneWindow = 2000

// A running server that wants the write lock while a window is being
// deleted waits for it in SQLite's busy handler, which looks again
// after 1, 3, 8, 18, 33, 53, 78, 103, 128, 178 and 228 ms and then every
// 100 ms. Pausing after each window as long as its statement held the
// lock, and at least minPruneGap, puts one of those looks in every pause:
// up to 18 ms of waiting they are at most 10 ms apart, and after t ms of
// it never more than t apart. The server's registration then waits about
// as long as one window's statement, and the prune takes about twice
// its statements' time. A fixed pause of 150 ms after every window (one
// of the busy handler's steps, whatever the window held) made a prune of
// 1,000,000 registrations with 20,000 idle scattered among them take
// 78 s, 500 windows of 8 ms statements each; pausing as long as the
// statement, 7.9-8.8 s, while a registration every 10 ms beside it
// waited at most 65-105 ms (82 ms with the fixed pause; p99 30-38 ms,
// 13 ms): BenchmarkPruneBesideServer.
const (
	minPruneGap = 10 * time.Millisecond
	// maxPruneGap bounds the pause after a window that took long for
	// another reason than the lock (a slow disk, a busy database), where
	// the busy handler looks every 100 ms.
	maxPruneGap = time.Second
)

// pruneGap is the pause after a window whose statement took held.
func pruneGap(held time.Duration) time.Duration {
	return min(max(held, minPruneGap), maxPruneGap)
}

// Prune deletes the registrations Idle counts, a window of the registry
// at a time, and returns how many of each type it deleted. Each is found
// idle in the statement that deletes it: one renewed meanwhile stays.
//
// Each window is the pruneWindow registrations that follow the one
// before, whatever their type and however few are idle, so no statement
// reads more than a window: one that read on until it found 500 idle
// ones read the whole of a registry with few idle, 3,000,010 rows on
// PostgreSQL, and ran into statement_timeout, so that registry could
// never be pruned. The store says where a window ended, in its own order
// of nodes: under a PostgreSQL collation other than C, which orders
// nodes otherwise than Go does, the next window still starts right after
// it and no node is skipped. A registration made behind a window since
// is new, so not idle; one a window skipped because a server was writing
// it (PostgreSQL's SKIP LOCKED) is left to the next prune.
//
// After each window but the last, progress hears how many registrations
// the windows so far held and how many of them were deleted.
func Prune(ctx context.Context, s Store, typ string, before time.Time, progress Progress) (map[string]int, error) {
	return prune(ctx, s, typ, before, progress, realClock{})
}

// clock is what Prune reads the time from and pauses with.
type clock interface {
	Now() time.Time
	// Sleep pauses for d, or until ctx ends, returning its error.
	Sleep(ctx context.Context, d time.Duration) error
}

type realClock struct{}

func (realClock) Now() time.Time { return time.Now() }

func (realClock) Sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

func prune(ctx context.Context, s Store, typ string, before time.Time, progress Progress, c clock) (map[string]int, error) {
	n := map[string]int{}
	read, deleted := 0, 0
	for after := ""; ; {
		start := c.Now()
		removed, next, err := s.DeleteIdle(ctx, before, typ, after, pruneWindow)
		// The whole call, its read of the window beside the lock
		// included: a little more than the lock was held.
		held := c.Now().Sub(start)
		for _, r := range removed {
			n[r.Type]++
		}
		deleted += len(removed)
		if err != nil || next == "" {
			return n, err
		}
		// A window that ends short of the registry held pruneWindow
		// registrations; how many the last one held the store does not
		// say, and the command's summary follows it.
		read += pruneWindow
		progress.tell(read, deleted)
		after = next
		if len(removed) == 0 {
			// The store only read a window with none idle, taking no
			// write lock (or held it a moment, when what it read as idle
			// was renewed before the DELETE): a registry with few idle
			// registrations is read through without waiting.
			continue
		}
		// Let a running server's writes in between two batches: a
		// next batch started at once would take the lock again before
		// the server's busy handler looks, batch after batch.
		if err := c.Sleep(ctx, pruneGap(held)); err != nil {
			return n, err
		}
	}
}

// View is a registration as shown to an operator: JSON field names, times
// in RFC 3339, the secret only when asked for.
type View struct {
	Node               string `json:"node"`
	Type               string `json:"type"`
	Token              string `json:"token"`
	Secret             string `json:"secret,omitempty"`
	Registered         string `json:"registered"`
	Renewed            string `json:"renewed,omitempty"`
	LastSuccessfulPush string `json:"last_successful_push,omitempty"`
	LastPushError      string `json:"last_push_error,omitempty"`
	LastErrorReason    string `json:"last_error_reason,omitempty"`
	Domain             string `json:"domain,omitempty"`
	// Owned tells whether an XMPP account owns the registration; the
	// owner itself is a salted hash and says nothing to a person.
	Owned bool `json:"owned,omitempty"`
}

// NewView makes the view of r.
func NewView(r registry.Registration, showSecret bool) View {
	v := View{
		Node: r.Node, Type: r.Type, Token: r.Token,
		Registered: stamp(r.Registered), Renewed: stamp(r.Renewed),
		LastSuccessfulPush: stamp(r.LastSuccessfulPush), LastPushError: stamp(r.LastPushError),
		LastErrorReason: r.LastErrorReason, Domain: r.Domain, Owned: r.Owner != "",
	}
	if showSecret {
		v.Secret = r.Secret
	}
	return v
}

func stamp(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339)
}

// Printer writes registrations as a table or as JSON (one object a line).
type Printer struct {
	W           io.Writer
	JSON        bool
	ShowSecrets bool

	tw     *tabwriter.Writer
	header bool
	rows   int // rows in tw since its last flush
}

// flushRows is how many rows the table holds before it writes them: a
// tabwriter keeps every row until flushed to align the columns, and a
// registry of millions must not be held whole.
const flushRows = pageSize

// Print writes one registration.
func (p *Printer) Print(r registry.Registration) error {
	v := NewView(r, p.ShowSecrets)
	if p.JSON {
		return json.NewEncoder(p.W).Encode(v)
	}
	if p.tw == nil {
		p.tw = tabwriter.NewWriter(p.W, 0, 4, 2, ' ', 0)
	}
	if !p.header {
		p.header = true
		if p.ShowSecrets {
			fmt.Fprintln(p.tw, "NODE\tTYPE\tTOKEN\tSECRET\tREGISTERED\tLAST SUCCESS\tLAST ERROR")
		} else {
			fmt.Fprintln(p.tw, "NODE\tTYPE\tTOKEN\tREGISTERED\tLAST SUCCESS\tLAST ERROR")
		}
	}
	lastErr := dash(v.LastPushError)
	if v.LastErrorReason != "" {
		lastErr += " " + v.LastErrorReason
	}
	var err error
	if p.ShowSecrets {
		_, err = fmt.Fprintf(p.tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", v.Node, v.Type, v.Token, v.Secret, v.Registered, dash(v.LastSuccessfulPush), lastErr)
	} else {
		_, err = fmt.Fprintf(p.tw, "%s\t%s\t%s\t%s\t%s\t%s\n", v.Node, v.Type, v.Token, v.Registered, dash(v.LastSuccessfulPush), lastErr)
	}
	if p.rows++; err == nil && p.rows >= flushRows {
		// Columns line up within each page of rows.
		p.rows = 0
		err = p.tw.Flush()
	}
	return err
}

// Flush writes what the table holds back.
func (p *Printer) Flush() error {
	if p.tw == nil {
		return nil
	}
	return p.tw.Flush()
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// Show writes every field of one registration.
func Show(w io.Writer, r registry.Registration, asJSON, showSecret bool) error {
	v := NewView(r, showSecret)
	if asJSON {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	secret := "(hidden; --show-secrets shows it)"
	if showSecret {
		secret = v.Secret
	}
	for _, kv := range [][2]string{
		{"node", v.Node}, {"type", v.Type}, {"token", v.Token}, {"secret", secret},
		{"registered", v.Registered}, {"renewed", dash(v.Renewed)},
		{"last successful push", dash(v.LastSuccessfulPush)}, {"last push error", dash(v.LastPushError)},
		{"last error reason", dash(v.LastErrorReason)}, {"domain", dash(v.Domain)}, {"owned by an XMPP account", fmt.Sprint(v.Owned)},
	} {
		fmt.Fprintf(tw, "%s:\t%s\n", kv[0], kv[1])
	}
	return tw.Flush()
}

// IsNotFound tells whether err means there is no such registration.
func IsNotFound(err error) bool { return errors.Is(err, registry.ErrNotFound) }
