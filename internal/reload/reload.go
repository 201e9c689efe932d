// Package reload applies a changed configuration to a running server (on
// SIGHUP): the log level, the apps' options and their certificates and keys
// (each app's backend is rebuilt and swapped in, or kept when the new one
// cannot be built), and the HTTPS listener's certificate. What cannot change
// without a restart is named in the log, never half applied.
package reload

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"reflect"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/push-appserver/push-appserver/internal/config"
	"github.com/push-appserver/push-appserver/internal/push"
)

// Backend is an app's push backend that a reload can replace while pushes
// go through it.
type Backend struct {
	p        atomic.Pointer[push.Backend]
	deadline atomic.Int64 // the app's push_deadline, in nanoseconds

	mu sync.Mutex
	// retiring are the backends swapped out and not closed yet, by the
	// timer that closes each.
	retiring map[*time.Timer]io.Closer
}

// NewBackend wraps b.
func NewBackend(b push.Backend) *Backend {
	s := &Backend{}
	s.p.Store(&b)
	return s
}

func (s *Backend) current() push.Backend { return *s.p.Load() }

// Send sends through the current backend.
func (s *Backend) Send(ctx context.Context, n push.Notification) error {
	return s.current().Send(ctx, n)
}

// ValidateToken asks the current backend, when it validates tokens.
func (s *Backend) ValidateToken(token string) error {
	if v, ok := s.current().(push.TokenValidator); ok {
		return v.ValidateToken(token)
	}
	return nil
}

// CanonicalToken asks the current backend, when it has canonical tokens.
func (s *Backend) CanonicalToken(token string) string {
	if c, ok := s.current().(push.TokenCanonicalizer); ok {
		return c.CanonicalToken(token)
	}
	return token
}

// DeviceKey asks the current backend, when it has device keys.
func (s *Backend) DeviceKey(token string) string {
	if c, ok := s.current().(push.DeviceKeyer); ok {
		return c.DeviceKey(token)
	}
	return s.CanonicalToken(token)
}

// CertificateExpiry is when the client certificate of the backend in use
// expires, ok false when it has none (or does not say).
func (s *Backend) CertificateExpiry() (time.Time, bool) {
	if c, ok := s.current().(interface{ CertificateExpiry() (time.Time, bool) }); ok {
		return c.CertificateExpiry()
	}
	return time.Time{}, false
}

// TokensNameEndpoints asks the current backend.
func (s *Backend) TokensNameEndpoints() bool { return push.TokensNameEndpoints(s.current()) }

// CarriesSummaryText asks the current backend.
func (s *Backend) CarriesSummaryText() bool { return push.CarriesSummaryText(s.current()) }

// Swap replaces the backend; pushes already under way finish on the old,
// which is closed (when it is an io.Closer: its connections to the push
// service) after retire, by when they have ended. Left open, each reload
// would leave its connections, and their goroutines, until they had idled
// for minutes: a server reloaded by automation piles them up.
func (s *Backend) Swap(b push.Backend, retire time.Duration) {
	old := *s.p.Swap(&b)
	if c, ok := old.(interface{ CloseIdleConnections() }); ok {
		// No push takes the old backend any more: its idle connections
		// would only add to the new one's, past the bound each has.
		c.CloseIdleConnections()
	}
	if c, ok := old.(io.Closer); ok {
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.retiring == nil {
			s.retiring = map[*time.Timer]io.Closer{}
		}
		var t *time.Timer
		// Under mu: the timer's function reads t only once it is set.
		t = time.AfterFunc(retire, func() {
			s.mu.Lock()
			delete(s.retiring, t)
			s.mu.Unlock()
			c.Close()
		})
		s.retiring[t] = c
	}
}

// Close closes the current backend and those swapped out and not closed
// yet, when they are io.Closers: their connections to the push services.
// Call it once the pushes under way have ended, at a stop: left open,
// the connections, and their goroutines, outlived the server in a process
// that embeds it until they idled out, and a swapped-out backend until
// its retirement.
func (s *Backend) Close() error {
	s.mu.Lock()
	retiring := s.retiring
	s.retiring = nil
	s.mu.Unlock()
	var errs []error
	for t, c := range retiring {
		if t.Stop() { // else its timer closes it
			errs = append(errs, c.Close())
		}
	}
	if c, ok := s.current().(io.Closer); ok {
		errs = append(errs, c.Close())
	}
	return errors.Join(errs...)
}

// PushDeadline is the app's push deadline, which the core gives each push
// (appserver.PushDeadliner): it changes with the backend at a reload.
func (s *Backend) PushDeadline() time.Duration { return time.Duration(s.deadline.Load()) }

// SetPushDeadline sets what PushDeadline says.
func (s *Backend) SetPushDeadline(d time.Duration) { s.deadline.Store(int64(d)) }

// Certificate is a TLS certificate and key read from files, reloadable.
type Certificate struct {
	mu   sync.RWMutex
	cert *tls.Certificate
}

// LoadCertificate reads the pair.
func LoadCertificate(certFile, keyFile string) (*Certificate, error) {
	c := &Certificate{}
	if err := c.Load(certFile, keyFile); err != nil {
		return nil, err
	}
	return c, nil
}

// Load reads the pair again; on error the previous one stays.
func (c *Certificate) Load(certFile, keyFile string) error {
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return fmt.Errorf("loading %s and %s: %w", certFile, keyFile, err)
	}
	c.mu.Lock()
	c.cert = &cert
	c.mu.Unlock()
	return nil
}

// Expiry is when the certificate in use expires: the one served, not the
// file on disk, which may have been renewed without a reload, or replaced
// by one a reload refused.
func (c *Certificate) Expiry() (time.Time, error) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if c.cert.Leaf == nil {
		return time.Time{}, errors.New("no certificate")
	}
	return c.cert.Leaf.NotAfter, nil
}

// der is the served certificate chain's leaf, as read.
func (c *Certificate) der() []byte {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if c.cert == nil || len(c.cert.Certificate) == 0 {
		return nil
	}
	return c.cert.Certificate[0]
}

// GetCertificate is for tls.Config.
func (c *Certificate) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.cert, nil
}

// Options name what a reload may change.
type Options struct {
	Logger *slog.Logger
	Level  *slog.LevelVar
	// Apps are the running apps' backends by name.
	Apps map[string]*Backend
	// BuildApp builds an app's backend from its new options (reading its
	// key and certificate files again).
	BuildApp func(ctx context.Context, name string, a *config.App) (push.Backend, error)
	// TLS is the HTTPS listener's certificate, nil without one.
	TLS *Certificate
	// Fingerprints, when set, sums up for each app of a configuration
	// what its backend reads besides its options (its key and
	// certificate files, their password): an app whose options and
	// fingerprint are what they were keeps its backend, and its
	// connections, across a reload. One call a configuration, so that
	// what apps share (a CA directory) is read once.
	Fingerprints func(apps map[string]*config.App) map[string]string
	// Kept, when set, is called with the running backend of each app a
	// reload keeps (its options and fingerprint unchanged): what the
	// operator fixed outside the file (a role granted, a key's topics)
	// can be checked again.
	Kept func(ctx context.Context, name string, b push.Backend)
	// Swapped, when set, is called with each backend BuildApp built once
	// it took the place of the old one: every push from then on goes
	// through it.
	Swapped func(ctx context.Context, name string, b push.Backend)
}

// Reloader applies new configurations to a running server.
type Reloader struct {
	Options
	mu      sync.Mutex
	running *config.Config
	prints  map[string]string // Fingerprint of each running app
}

// New returns a reloader for a server started with running; it keeps
// running up to date with what it applies.
func New(running *config.Config, opts Options) *Reloader {
	r := &Reloader{Options: opts, running: running, prints: map[string]string{}}
	if opts.Fingerprints != nil {
		r.prints = opts.Fingerprints(running.Apps)
	}
	return r
}

// Result says what a reload did.
type Result struct {
	Applied        []string
	Failed         []string // could be applied, but the new setting is broken: the old stays
	NeedsRestart   []string
	ConfigProblems error // the file did not load: nothing was applied
}

// OK reports whether the reload applied what the file asked for, as far
// as a reload can (settings that need a restart aside).
func (r Result) OK() bool { return r.ConfigProblems == nil && len(r.Failed) == 0 }

// Running calls read with the running configuration, as the last reload
// left it, under the lock reloads take.
func (r *Reloader) Running(read func(*config.Config)) {
	r.mu.Lock()
	defer r.mu.Unlock()
	read(r.running)
}

// Reload applies next, the configuration as loaded again (loadErr its
// problems), and logs what happened.
func (r *Reloader) Reload(ctx context.Context, next *config.Config, loadErr error) Result {
	r.mu.Lock()
	defer r.mu.Unlock()
	var res Result
	if loadErr != nil {
		res.ConfigProblems = loadErr
		r.Logger.Error("reload: configuration not reloaded, it has problems; the running one stays", "err", loadErr)
		return res
	}
	cur := r.running
	// What the start would warn of, the reload does too: the operator
	// who reloads reads this log, not the start's.
	for _, w := range next.Warnings {
		r.Logger.Warn("configuration: " + w)
	}

	if next.LogLevel != cur.LogLevel {
		var l slog.Level
		if err := l.UnmarshalText([]byte(next.LogLevel)); err == nil && r.Level != nil {
			r.Level.Set(l)
			res.Applied = append(res.Applied, "log_level "+next.LogLevel)
			cur.LogLevel = next.LogLevel
		}
	}

	res.NeedsRestart = append(res.NeedsRestart, restartOnly(cur, next)...)

	names := map[string]bool{}
	for n := range cur.Apps {
		names[n] = true
	}
	for n := range next.Apps {
		names[n] = true
	}
	// The new configuration's fingerprints, taken at the first app that
	// needs them: a reload that changes apps' kinds only reads nothing.
	var prints map[string]string
	for _, n := range sortedKeys(names) {
		old, nw := cur.Apps[n], next.Apps[n]
		key := "apps." + n
		switch {
		case old == nil:
			res.NeedsRestart = append(res.NeedsRestart, key+" added")
			continue
		case nw == nil:
			res.NeedsRestart = append(res.NeedsRestart, key+" removed")
			continue
		case old.Kind != nw.Kind:
			res.NeedsRestart = append(res.NeedsRestart, key+".kind")
			continue
		case old.Priority != nw.Priority:
			res.NeedsRestart = append(res.NeedsRestart, key+".priority")
		}
		sw := r.Apps[n]
		if sw == nil || r.BuildApp == nil {
			continue
		}
		// Rebuilt when the options changed, or the key or certificate
		// files were renewed in place; otherwise the running backend
		// and its warm connections stay.
		var fp string
		if r.Fingerprints != nil {
			if prints == nil {
				prints = r.Fingerprints(next.Apps)
			}
			fp = prints[n]
			cmp := *nw
			cmp.Priority = old.Priority
			if reflect.DeepEqual(*old, cmp) && fp == r.prints[n] {
				if r.Kept != nil {
					r.Kept(ctx, n, sw.current())
				}
				continue
			}
		}
		b, err := r.BuildApp(ctx, n, nw)
		if err != nil {
			res.Failed = append(res.Failed, fmt.Sprintf("%s: %v", key, err))
			continue
		}
		// push_timeout bounds a push end to end, retries included: a
		// second after it, nothing is left on the old backend.
		sw.Swap(b, cur.PushTimeout.D()+time.Second)
		if r.Swapped != nil {
			r.Swapped(ctx, n, b)
		}
		if r.Fingerprints != nil {
			r.prints[n] = fp
		}
		if nw.Kind != config.KindLog {
			sw.SetPushDeadline(nw.PushDeadline.D())
		}
		prio := old.Priority
		*old = *nw
		old.Priority = prio // still the running one until a restart
		res.Applied = append(res.Applied, key)
	}

	if r.TLS != nil {
		before := r.TLS.der()
		if err := r.TLS.Load(next.HTTP.TLSCertFile, next.HTTP.TLSKeyFile); err != nil {
			res.Failed = append(res.Failed, fmt.Sprintf("http.tls_cert_file: %v", err))
		} else {
			if !bytes.Equal(before, r.TLS.der()) || cur.HTTP.TLSCertFile != next.HTTP.TLSCertFile || cur.HTTP.TLSKeyFile != next.HTTP.TLSKeyFile {
				res.Applied = append(res.Applied, "http.tls_cert_file")
			}
			cur.HTTP.TLSCertFile, cur.HTTP.TLSKeyFile = next.HTTP.TLSCertFile, next.HTTP.TLSKeyFile
		}
	}

	if len(res.Applied) > 0 {
		r.Logger.Info("reload: applied", "what", strings.Join(res.Applied, ", "))
	} else if len(res.Failed) == 0 && len(res.NeedsRestart) == 0 {
		r.Logger.Info("reload: nothing changed")
	}
	for _, f := range res.Failed {
		r.Logger.Error("reload: not applied, the running setting stays", "err", f)
	}
	if len(res.NeedsRestart) > 0 {
		r.Logger.Warn("reload: changed, but takes effect only after a restart", "what", strings.Join(res.NeedsRestart, ", "))
	}
	return res
}

// restartOnly names the top-level settings that differ between cur and
// next and that only a restart applies: everything but the log level, the
// apps and the HTTPS certificate files, which Reload handles itself.
func restartOnly(cur, next *config.Config) []string {
	a, b := *cur, *next
	a.LogLevel, b.LogLevel = "", ""
	a.Apps, b.Apps = nil, nil
	a.Obsolete, b.Obsolete = nil, nil
	a.HTTP.TLSCertFile, b.HTTP.TLSCertFile = "", ""
	a.HTTP.TLSKeyFile, b.HTTP.TLSKeyFile = "", ""
	var out []string
	va, vb := reflect.ValueOf(a), reflect.ValueOf(b)
	t := va.Type()
	for i := range t.NumField() {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		name, _, _ := strings.Cut(f.Tag.Get("toml"), ",")
		if name == "" || name == "-" {
			continue
		}
		if f.Type.Kind() == reflect.Struct {
			for j := range f.Type.NumField() {
				sf := f.Type.Field(j)
				sub, _, _ := strings.Cut(sf.Tag.Get("toml"), ",")
				if sf.IsExported() && sub != "" && sub != "-" &&
					!reflect.DeepEqual(va.Field(i).Field(j).Interface(), vb.Field(i).Field(j).Interface()) {
					out = append(out, name+"."+sub)
				}
			}
			continue
		}
		if !reflect.DeepEqual(va.Field(i).Interface(), vb.Field(i).Interface()) {
			out = append(out, name)
		}
	}
	return out
}

func sortedKeys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
