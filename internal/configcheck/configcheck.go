// Package configcheck checks what loading a configuration cannot: that the
// apps' key and certificate files load, that certificates are not about to
// expire, that the data directory is writable, that every registration
// in the registry has an app to be pushed through, and that PostgreSQL
// keeps the registrations it answered OK through a crash and a failover.
package configcheck

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"time"

	"software.sslmate.com/src/go-pkcs12"

	"github.com/push-appserver/push-appserver/internal/config"
)

// ErrUnreachable marks a registry that could not be reached, as
// PostgreSQL still starting at boot: a warning, not an error, since serve
// waits for it, and a unit that runs check-config before serve must not
// fail then.
var ErrUnreachable = errors.New("the registry cannot be reached; serve waits for it")

// ErrSlow marks a count of the registrations that took longer than the
// check allows it: a warning, not an error. The count only looks for
// registrations of apps no longer configured, and a registry of many
// millions on PostgreSQL may take seconds to count, which must neither
// fail a start nor refuse a reload (the unit checks before both).
var ErrSlow = errors.New("counting the registrations took too long")

// Finding is one result: a problem (Error) or a warning.
type Finding struct {
	Error bool
	Text  string
}

func (f Finding) String() string {
	if f.Error {
		return "error: " + f.Text
	}
	return "warning: " + f.Text
}

// Options give the checks what lives outside this package.
type Options struct {
	// BuildApp builds an app's backend the way serve does, loading its
	// keys and certificates; nil skips that check.
	BuildApp func(ctx context.Context, name string, a *config.App) error
	// TypeCounts returns the registry's registrations per type; nil skips
	// that check. An error wrapping ErrUnreachable or ErrSlow is a
	// warning only.
	TypeCounts func(ctx context.Context) (map[string]int, error)
	// Replication returns the warnings about the durability of what
	// the registry commits (a PostgreSQL registry: its
	// synchronous_commit, and standbys that commits do not wait for);
	// nil skips that check. Each is a warning, not an error: the
	// server runs as well either way, and the settings are the DBA's.
	Replication func(ctx context.Context) ([]string, error)
	Now         func() time.Time
}

// Check runs every check on cfg, a configuration that loaded without
// problems.
func Check(ctx context.Context, cfg *config.Config, opts Options) []Finding {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	var out []Finding
	warn := func(format string, args ...any) { out = append(out, Finding{Text: fmt.Sprintf(format, args...)}) }
	fail := func(format string, args ...any) {
		out = append(out, Finding{Error: true, Text: fmt.Sprintf(format, args...)})
	}

	for _, w := range cfg.Warnings {
		warn("%s", w)
	}
	if cfg.Database.Driver == "sqlite" {
		if err := Writable(filepath.Dir(cfg.Database.Path)); err != nil {
			fail("data_dir: %v", err)
		}
	}
	names := make([]string, 0, len(cfg.Apps))
	for n := range cfg.Apps {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		a := cfg.Apps[n]
		if opts.BuildApp != nil && a.Kind != config.KindLog {
			if err := opts.BuildApp(ctx, n, a); err != nil {
				fail("apps.%s: %v", n, err)
			}
		}
		if a.Kind == config.KindAPNS && a.CertFile != "" {
			checkExpiry(&out, "apps."+n+".cert_file", a.CertFile, opts.Now())
		}
		// A PKCS#12 export holds the certificate too: it expires as
		// one on cert_file does, and every push of the app fails then.
		if a.Kind == config.KindAPNS && a.PKCS12File != "" {
			checkExpiryWith(&out, "apps."+n+".pkcs12_file", opts.Now(), func() (time.Time, error) {
				return PKCS12Expiry(a.PKCS12File, a.KeyPassword)
			})
		}
	}
	if cfg.HTTP.TLSListen != "" {
		// As serve loads them: a key that does not match, or cannot be
		// read, stops it.
		if _, err := tls.LoadX509KeyPair(cfg.HTTP.TLSCertFile, cfg.HTTP.TLSKeyFile); err != nil {
			fail("http.tls_key_file: %v", err)
		}
		checkExpiry(&out, "http.tls_cert_file", cfg.HTTP.TLSCertFile, opts.Now())
	}
	if opts.TypeCounts != nil {
		counts, err := opts.TypeCounts(ctx)
		switch {
		case errors.Is(err, ErrUnreachable), errors.Is(err, ErrSlow):
			warn("registry not checked: %v", err)
		case err != nil:
			fail("registry: %v", err)
		}
		types := make([]string, 0, len(counts))
		for t := range counts {
			types = append(types, t)
		}
		sort.Strings(types)
		for _, t := range types {
			switch a := cfg.Apps[t]; {
			case a == nil:
				warn("%d registration(s) of type %q, but no app %q is configured: pushes to them fail (was the app renamed, or dropped because the file defines apps of its own?)", counts[t], t, t)
			case a.Kind == config.KindLog && counts[t] > 0:
				// A file that defines no apps gets the quick start's
				// apns and fcm on the log backend: the pushes of
				// devices registered for real would be answered OK
				// and go nowhere.
				warn("%d registration(s) of type %q, whose app only logs its pushes (kind %q, the default when a file defines no apps): they are answered OK and reach no device; give apps.%s its kind and credentials", counts[t], t, config.KindLog, t)
			}
		}
	}
	if opts.Replication != nil {
		risks, err := opts.Replication(ctx)
		switch {
		case errors.Is(err, ErrUnreachable) && opts.TypeCounts != nil:
			// Said by the count already.
		case err != nil:
			warn("registry: could not tell whether its commits survive a crash and reach PostgreSQL's standbys: %v", err)
		}
		for _, r := range risks {
			warn("registry: %s", r)
		}
	}
	return out
}

func checkExpiry(out *[]Finding, key, path string, now time.Time) {
	checkExpiryWith(out, key, now, func() (time.Time, error) { return CertificateExpiry(path) })
}

// checkExpiryWith is checkExpiry for a certificate that expiry reads.
func checkExpiryWith(out *[]Finding, key string, now time.Time, expiry func() (time.Time, error)) {
	notAfter, err := expiry()
	if err != nil {
		*out = append(*out, Finding{Error: true, Text: fmt.Sprintf("%s: %v", key, err)})
		return
	}
	switch left := notAfter.Sub(now); {
	case left <= 0:
		// A warning, not an error: the unit runs check-config before
		// every start, and the server serves on with it (the other apps
		// push, the registry answers); an error would turn a restart
		// into an outage of everything.
		*out = append(*out, Finding{Text: fmt.Sprintf("%s: the certificate expired on %s: what uses it fails until it is renewed (then reload)", key, notAfter.UTC().Format(time.RFC3339))})
	case left < config.CertificateExpiryWarning:
		*out = append(*out, Finding{Text: fmt.Sprintf("%s: the certificate expires on %s, in %d days", key, notAfter.UTC().Format(time.RFC3339), int(left.Hours()/24))})
	}
}

// PKCS12Expiry returns when the certificate of the PKCS#12 file at path
// expires; password is as the configuration writes key_password (a
// literal, env:NAME or file:/path).
func PKCS12Expiry(path, password string) (time.Time, error) {
	pw, err := config.ResolveSecret(password)
	if err != nil {
		return time.Time{}, fmt.Errorf("key_password: %w", err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return time.Time{}, err
	}
	_, cert, _, err := pkcs12.DecodeChain(data, pw)
	if err != nil {
		return time.Time{}, fmt.Errorf("reading %s: %w", path, err)
	}
	return cert.NotAfter, nil
}

// CertificateExpiry returns when the first certificate in the PEM file at
// path expires.
func CertificateExpiry(path string) (time.Time, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return time.Time{}, err
	}
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			return time.Time{}, errors.New("no PEM certificate in the file")
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return time.Time{}, fmt.Errorf("parsing the certificate: %w", err)
		}
		return c.NotAfter, nil
	}
}

// Writable checks that files can be created in dir, or, when dir does not
// exist yet, in the nearest folder above it that does (serve creates the
// rest). It leaves nothing behind.
func Writable(dir string) error {
	d := filepath.Clean(dir)
	for {
		st, err := os.Stat(d)
		if err == nil {
			if !st.IsDir() {
				return fmt.Errorf("cannot create %s: %s is not a directory", dir, d)
			}
			break
		}
		if !errors.Is(err, os.ErrNotExist) {
			return err
		}
		parent := filepath.Dir(d)
		if parent == d {
			return fmt.Errorf("cannot create %s", dir)
		}
		d = parent
	}
	f, err := os.CreateTemp(d, ".check-config-*")
	if err != nil {
		return fmt.Errorf("%s is not writable: %w", d, err)
	}
	name := f.Name()
	f.Close()
	return os.Remove(name)
}
