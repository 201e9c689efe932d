// Package logging owns what the server's log may show at which level.
// Tokens and secrets appear only at debug. Nodes are a capability in
// mod_push_appserver's API (whoever names an unbound node may unregister
// it, see README "Security"), so above debug a node appears only as
// node_ref, a short hash that lets an operator follow one device through
// the log without the log handing nodes out. The rule is applied here,
// once, to every record, rather than at each place that logs. Limited
// bounds how often one kind of line is written, so that no flood of bad
// input fills the disk.
package logging

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"log/slog"
)

// Ref is how a node appears in logs above debug: the first 12 hex digits
// of its SHA-256, as `printf %s NODE | sha256sum | cut -c1-12` prints them.
func Ref(node string) string {
	sum := sha256.Sum256([]byte(node))
	return hex.EncodeToString(sum[:6])
}

// Redact wraps h so that records above debug level carry node_ref instead
// of node, and no token or secret value.
func Redact(h slog.Handler) slog.Handler {
	return &redactor{plain: h, safe: h}
}

type redactor struct {
	// plain gets debug records with every attribute; safe gets the rest,
	// built from redacted attributes.
	plain, safe slog.Handler
}

func (r *redactor) Enabled(ctx context.Context, l slog.Level) bool {
	return r.plain.Enabled(ctx, l)
}

func (r *redactor) Handle(ctx context.Context, rec slog.Record) error {
	if rec.Level <= slog.LevelDebug {
		return r.plain.Handle(ctx, rec)
	}
	out := slog.NewRecord(rec.Time, rec.Level, rec.Message, rec.PC)
	rec.Attrs(func(a slog.Attr) bool {
		out.AddAttrs(redact(a))
		return true
	})
	return r.safe.Handle(ctx, out)
}

func (r *redactor) WithAttrs(attrs []slog.Attr) slog.Handler {
	safe := make([]slog.Attr, len(attrs))
	for i, a := range attrs {
		safe[i] = redact(a)
	}
	return &redactor{plain: r.plain.WithAttrs(attrs), safe: r.safe.WithAttrs(safe)}
}

func (r *redactor) WithGroup(name string) slog.Handler {
	return &redactor{plain: r.plain.WithGroup(name), safe: r.safe.WithGroup(name)}
}

func redact(a slog.Attr) slog.Attr {
	v := a.Value.Resolve()
	switch {
	case v.Kind() == slog.KindGroup:
		g := v.Group()
		out := make([]slog.Attr, len(g))
		for i, ga := range g {
			out[i] = redact(ga)
		}
		return slog.Attr{Key: a.Key, Value: slog.GroupValue(out...)}
	case a.Key == "node":
		return slog.String("node_ref", Ref(v.String()))
	case a.Key == "token" || a.Key == "secret":
		return slog.String(a.Key, "[only at debug]")
	}
	return slog.Attr{Key: a.Key, Value: v}
}
