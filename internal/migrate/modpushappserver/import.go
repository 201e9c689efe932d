// Package modpushappserver brings the registrations of Prosody's
// mod_push_appserver into our registry: it reads Prosody's file store (Lua
// data files, parsed as data, never run) or its SQL store, keeps node,
// secret, type, token and timestamps so the users' XMPP servers go on
// pushing with what they stored, and reports every record it does not
// import with the reason.
package modpushappserver

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"sort"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/push-appserver/push-appserver/internal/push"
	"github.com/push-appserver/push-appserver/internal/registry"
)

// Store is what the import needs of the registry: it writes with
// PutImported, so that a registration removed here since an earlier run
// is not brought back (ImportedAt).
type Store interface {
	Get(ctx context.Context, node string) (registry.Registration, error)
	PutImportedRead(ctx context.Context, rs, read []registry.Registration) (changed []string, err error)
	ImportedAt(ctx context.Context, node string) (time.Time, error)
}

// Options control an import.
type Options struct {
	// Apps are the configured app names: a record whose type (after
	// TypeMap) is none of them could not be pushed and is skipped.
	Apps []string
	// TypeMap renames types, e.g. {"apns": "ios"}.
	TypeMap map[string]string
	// DryRun reports what would happen and writes nothing.
	DryRun bool
	// BatchSize is how many registrations one transaction writes; default 1000 (short enough not to hold up a running server's writes).
	BatchSize int
	// Progress, when set, gets a progress line now and then (a terminal).
	Progress io.Writer
	// Report, when set, gets one line per record not imported as it is.
	Report io.Writer
	// Now is the clock; time.Now when nil.
	Now func() time.Time
	// Sleep pauses for d, or until ctx ends, returning its error; a
	// timer when nil.
	Sleep func(ctx context.Context, d time.Duration) error
}

// batchGap is the least pause after a batch written (see Import): longer
// than the step of SQLite's busy handler (100 ms), as between the pages
// of an import from another push-appserver registry.
const batchGap = 150 * time.Millisecond

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// Outcome of one record.
const (
	Imported  = "imported"
	Updated   = "updated"
	Unchanged = "unchanged"
	Skipped   = "skipped"
)

// Summary is the result of an import.
type Summary struct {
	Total     int
	Imported  int            // new here
	Updated   int            // replaced an older registration of the node here
	Unchanged int            // already here as it is (a re-run)
	Skipped   map[string]int // reason → count
	// Notes counts records imported as they are although our API would
	// refuse them today, by reason.
	Notes    map[string]int
	Duration time.Duration
	DryRun   bool
}

// SkippedTotal is the number of records not imported.
func (s Summary) SkippedTotal() int {
	n := 0
	for _, c := range s.Skipped {
		n += c
	}
	return n
}

// WriteTo prints the summary for an operator.
func (s Summary) WriteTo(w io.Writer) (int64, error) {
	var b strings.Builder
	verb := ""
	if s.DryRun {
		verb = " (dry run: nothing written)"
	}
	fmt.Fprintf(&b, "%d record(s) read in %s%s: %d imported, %d updated, %d unchanged, %d skipped\n",
		s.Total, s.Duration.Round(time.Millisecond), verb, s.Imported, s.Updated, s.Unchanged, s.SkippedTotal())
	for _, k := range sortedKeys(s.Skipped) {
		fmt.Fprintf(&b, "  skipped %d: %s\n", s.Skipped[k], k)
	}
	for _, k := range sortedKeys(s.Notes) {
		fmt.Fprintf(&b, "  imported as stored %d: %s\n", s.Notes[k], k)
	}
	n, err := io.WriteString(w, b.String())
	return int64(n), err
}

func sortedKeys(m map[string]int) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// Import reads every record of src and writes it into dst, a batch at a
// time. After each batch written it pauses as long as the write took,
// and at least batchGap, for a server running on the registry to write
// in between: on SQLite that server waits for the write lock in a busy
// handler that looks again only every 100 ms, and a batch written at once
// after another takes the lock before it, batch after batch (importing
// 978,010 registrations from another registry beside a server without
// pauses, its registrations waited up to 3.5 s).
func Import(ctx context.Context, src Source, dst Store, opts Options) (Summary, error) {
	if opts.BatchSize <= 0 {
		opts.BatchSize = 1000
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Sleep == nil {
		opts.Sleep = sleep
	}
	apps := map[string]bool{}
	for _, a := range opts.Apps {
		apps[a] = true
	}
	start := opts.Now()
	sum := Summary{Skipped: map[string]int{}, Notes: map[string]int{}, DryRun: opts.DryRun}
	total, err := src.Count(ctx)
	if err != nil {
		return sum, fmt.Errorf("%s: %w", src, err)
	}
	prog := newProgress(opts.Progress, total, opts.Now)

	// pending is a record to write, with what the registry held of its
	// node when it was judged (found says whether it held any).
	type pending struct {
		rec   Record
		r     registry.Registration
		old   registry.Registration
		found bool
		note  string
	}
	var batch, kept []pending
	var rs, asRead []registry.Registration
	seen := map[string]string{} // node → source, across hosts
	skip := func(rec Record, reason string) {
		sum.Skipped[reason]++
		if opts.Report != nil {
			fmt.Fprintf(opts.Report, "skipped %s: %s\n", rec.Source, reason)
		}
	}
	// changedMeanwhile takes p out of the counts: a server running on
	// the registry registered its node since it was judged.
	changedMeanwhile := func(p pending) {
		if p.found {
			sum.Updated--
		} else {
			sum.Imported--
		}
		if p.note != "" {
			if sum.Notes[p.note]--; sum.Notes[p.note] == 0 {
				delete(sum.Notes, p.note)
			}
		}
		skip(p.rec, "registered here while the import ran")
	}
	// flush writes the batch, saying whether it wrote anything and how
	// long that took.
	flush := func() (wrote bool, took time.Duration, err error) {
		if len(batch) == 0 || opts.DryRun {
			batch = batch[:0]
			return false, 0, nil
		}
		// A server running on the registry may have registered a node
		// since it was judged (a device re-registering): its newer
		// registration stays. What changes between this look and the
		// write is left too: each is written only where its node is
		// still as judged (PutImportedRead).
		rs, asRead, kept = rs[:0], asRead[:0], kept[:0]
		for _, p := range batch {
			now, err := dst.Get(ctx, p.r.Node)
			found := err == nil
			if err != nil && !errors.Is(err, registry.ErrNotFound) {
				return false, 0, fmt.Errorf("reading registration %s: %w", p.r.Node, err)
			}
			if found != p.found || found && !sameRegistration(now, p.old) {
				changedMeanwhile(p)
				continue
			}
			var read registry.Registration
			if found {
				read = now
			}
			rs, asRead, kept = append(rs, p.r), append(asRead, read), append(kept, p)
		}
		batch = batch[:0]
		if len(rs) == 0 {
			return false, 0, nil
		}
		start := opts.Now()
		changed, err := dst.PutImportedRead(ctx, rs, asRead)
		if err != nil {
			return false, 0, fmt.Errorf("writing registrations: %w", err)
		}
		for _, p := range kept {
			if slices.Contains(changed, p.r.Node) {
				changedMeanwhile(p)
			}
		}
		return len(changed) < len(rs), opts.Now().Sub(start), nil
	}
	err = src.Records(ctx, func(rec Record) error {
		sum.Total++
		prog.update(sum.Total)
		if rec.Err != nil {
			skip(rec, rec.Err.Error())
			return nil
		}
		r, timeless, note, problem := convert(rec, opts.TypeMap, apps, start)
		if problem != "" {
			skip(rec, problem)
			return nil
		}
		if other, dup := seen[r.Node]; dup {
			// Nodes are global here, per host there.
			skip(rec, "node also registered in "+other)
			return nil
		}
		seen[r.Node] = rec.Source
		old, err := dst.Get(ctx, r.Node)
		switch {
		case errors.Is(err, registry.ErrNotFound):
			// An earlier run imported it, and it was removed here since
			// (unregistered, its token dead): it comes back only when its
			// record is newer than what that run imported, the device
			// having registered there again. A record without a time
			// cannot be.
			at, ierr := dst.ImportedAt(ctx, r.Node)
			if ierr != nil && !errors.Is(ierr, registry.ErrNotFound) {
				return fmt.Errorf("reading registration %s: %w", r.Node, ierr)
			}
			if ierr == nil && (timeless || !r.LastRegistered().After(at)) {
				skip(rec, "removed here since the last import")
				return nil
			}
			sum.Imported++
		case err != nil:
			return fmt.Errorf("reading registration %s: %w", r.Node, err)
		case sameRegistration(old, r), timeless && sameDevice(old, r):
			sum.Unchanged++
			return nil
		case timeless:
			// Its time would be this run's, newer than anything here:
			// a device that registered here since the switch (a new
			// token, and with it a new secret its server now uses)
			// would be put back to what it had there.
			skip(rec, "registered here, and the record has no time to tell which is newer")
			return nil
		case old.LastRegistered().After(r.LastRegistered()):
			skip(rec, "registered here more recently than in mod_push_appserver")
			return nil
		default:
			sum.Updated++
		}
		if note != "" {
			sum.Notes[note]++
			if opts.Report != nil {
				fmt.Fprintf(opts.Report, "imported %s as stored: %s\n", rec.Source, note)
			}
		}
		batch = append(batch, pending{rec: rec, r: r, old: old, found: err == nil, note: note})
		if len(batch) >= opts.BatchSize {
			wrote, took, err := flush()
			if err != nil || !wrote {
				return err
			}
			// The batch is counted already, so an import interrupted
			// in the pause says it wrote it.
			return opts.Sleep(ctx, max(batchGap, took))
		}
		return nil
	})
	if err == nil {
		_, _, err = flush()
	}
	prog.done(sum.Total)
	sum.Duration = opts.Now().Sub(start)
	if err != nil {
		return sum, fmt.Errorf("%s: %w", src, err)
	}
	return sum, nil
}

// sameRegistration tells whether a re-run would change what matters: the
// push status written here since stays.
func sameRegistration(a, b registry.Registration) bool {
	return sameDevice(a, b) && a.Registered.Equal(b.Registered) && a.Renewed.Equal(b.Renewed)
}

// sameDevice tells whether two registrations push to the same device
// with the same secret.
func sameDevice(a, b registry.Registration) bool {
	return a.Type == b.Type && a.Token == b.Token && a.Secret == b.Secret
}

// Limits of what a record may hold, as for registrations over the API.
// A node is the registry's key: PostgreSQL's index takes keys up to about
// 2,700 bytes, and the API's nodes are at most 256.
const (
	maxField = 4096
	maxNode  = 1024
)

// convert makes a registration of a record, or says why it cannot be
// pushed (problem), or imports it with a note on what our API would refuse.
// timeless is set when the record gave no time and the import's is used.
func convert(rec Record, typeMap map[string]string, apps map[string]bool, now time.Time) (r registry.Registration, timeless bool, note, problem string) {
	str := func(k string) (string, bool) {
		switch v := rec.Fields[k].(type) {
		case string:
			return v, true
		case nil:
			return "", true
		default:
			return "", false
		}
	}
	r.Node = rec.Node
	if n, ok := str("node"); ok && n != "" && n != rec.Node {
		// mod_push_appserver looks registrations up by the store key,
		// which is what the user's server sends.
		note = fmt.Sprintf("node field %q differs from its key; the key is kept", n)
	}
	typ, okT := str("type")
	token, okTok := str("token")
	secret, okS := str("secret")
	switch {
	case r.Node == "":
		return r, false, "", "empty node"
	case !okT || !okTok || !okS:
		return r, false, "", "type, token or secret is not a string"
	case len(r.Node) > maxNode:
		return r, false, "", fmt.Sprintf("node longer than %d bytes", maxNode)
	case len(token) > maxField || len(secret) > maxField || len(typ) > maxField:
		return r, false, "", fmt.Sprintf("a field longer than %d bytes", maxField)
	case !text(r.Node) || !text(typ) || !text(token) || !text(secret):
		// Lua strings are bytes; the registry's are text (PostgreSQL
		// refuses such a row, and the batch it is in with it).
		return r, false, "", "node, type, token or secret is not UTF-8 text, or holds a NUL"
	case secret == "":
		return r, false, "", "no secret: the user's server could not authenticate its pushes"
	case typ == "":
		return r, false, "", "no type"
	case token == "":
		return r, false, "", "empty token: there is no device to push to"
	}
	if m, ok := typeMap[typ]; ok {
		typ = m
	}
	if !apps[typ] {
		return r, false, "", fmt.Sprintf("type %q is not a configured app (configure it, or rename it with --type-map %s=APP)", typ, typ)
	}
	r.Type, r.Token, r.Secret = typ, token, secret
	if !isHex(token) && note == "" {
		note = "token is not hexadecimal"
	}
	if len(secret) != 64 || !isHex(secret) {
		if note == "" {
			note = "secret is not 64 hexadecimal characters"
		}
	}
	var bad []string
	times := []struct {
		key string
		t   *time.Time
	}{{"registered", &r.Registered}, {"renewed", &r.Renewed}, {"last_successful_push", &r.LastSuccessfulPush}, {"last_push_error", &r.LastPushError}}
	for _, f := range times {
		t, err := timestamp(rec.Fields[f.key])
		if err != nil {
			bad = append(bad, f.key)
			continue
		}
		*f.t = t
	}
	if reason, ok := str("last_push_error_reason"); ok {
		r.LastErrorReason = push.Truncate(strings.ToValidUTF8(strings.ReplaceAll(reason, "\x00", ""), "?"), 200)
	}
	if len(bad) > 0 && note == "" {
		note = "unreadable " + strings.Join(bad, ", ") + " left empty"
	}
	if r.Registered.IsZero() {
		// The registry needs a registration time; the renewal is the
		// closest thing, else the import.
		r.Registered = r.Renewed
		if r.Registered.IsZero() {
			r.Registered = now.UTC().Truncate(time.Second)
			timeless = true
			if note == "" {
				note = "no registration time: the import's time is used"
			}
		}
	}
	return r, timeless, note, ""
}

// text reports whether s is UTF-8 without NUL, as the registry stores.
func text(s string) bool {
	return utf8.ValidString(s) && strings.IndexByte(s, 0) < 0
}

// timestamp reads mod_push_appserver's times: ISO 8601 strings as
// Prosody's util.datetime writes them, or Unix seconds.
func timestamp(v any) (time.Time, error) {
	switch v := v.(type) {
	case nil:
		return time.Time{}, nil
	case string:
		if v == "" {
			return time.Time{}, nil
		}
		t, err := time.Parse(time.RFC3339Nano, v)
		if err != nil {
			return time.Time{}, err
		}
		if !inRange(t) {
			return time.Time{}, fmt.Errorf("time %s out of range", v)
		}
		return t.UTC(), nil
	case float64:
		// Bounded before the conversion, which would overflow.
		if v <= 0 || v >= maxUnix {
			return time.Time{}, fmt.Errorf("time %v out of range", v)
		}
		sec := int64(v)
		return time.Unix(sec, int64((v-float64(sec))*1e9)).UTC(), nil
	}
	return time.Time{}, fmt.Errorf("time of type %T", v)
}

// maxUnix bounds the times the registry holds, in seconds: SQLite keeps
// them as nanoseconds since 1970 in 64 bits (until April 2262), and one
// past that would come back as a time in 1677, older than anything here.
const maxUnix = math.MaxInt64 / 1_000_000_000

// inRange tells whether the registry keeps t as it is. Times before 1970,
// which SQLite could hold, are refused too, as they were in seconds: no
// registration is that old.
func inRange(t time.Time) bool {
	return t.Unix() > 0 && t.Unix() < maxUnix
}

func isHex(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
			return false
		}
	}
	return s != ""
}
