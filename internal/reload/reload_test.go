package reload

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/push-appserver/push-appserver/internal/config"
	"github.com/push-appserver/push-appserver/internal/push"
)

type named string

func (n named) Send(context.Context, push.Notification) error { return errors.New(string(n)) }

func parse(t *testing.T, text string) *config.Config {
	t.Helper()
	c, err := config.Parse(text, "")
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestReload(t *testing.T) {
	base := "[apps.a]\nkind = \"log\"\n[apps.b]\nkind = \"log\"\n"
	running := parse(t, base)
	swA, swB := NewBackend(named("a1")), NewBackend(named("b1"))
	level := new(slog.LevelVar)
	builds := 0
	r := New(running, Options{
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Level: level,
		Apps: map[string]*Backend{"a": swA, "b": swB},
		BuildApp: func(ctx context.Context, name string, a *config.App) (push.Backend, error) {
			builds++
			if a.Alert == "broken" {
				return nil, errors.New("bad key")
			}
			return named(name + "2"), nil
		},
	})
	next := parse(t, "log_level = \"debug\"\n[http]\nlisten = \"127.0.0.1:1\"\n[apps.a]\nkind = \"log\"\n[apps.b]\nkind = \"log\"\nalert = \"broken\"\n[apps.c]\nkind = \"log\"\n")
	res := r.Reload(context.Background(), next, nil)
	if want := []string{"log_level debug", "apps.a"}; !reflect.DeepEqual(res.Applied, want) {
		t.Errorf("applied %v, want %v", res.Applied, want)
	}
	if len(res.Failed) != 1 || res.Failed[0] != "apps.b: bad key" {
		t.Errorf("failed %v", res.Failed)
	}
	if want := []string{"http.listen", "apps.c added"}; !reflect.DeepEqual(res.NeedsRestart, want) {
		t.Errorf("needs restart %v, want %v", res.NeedsRestart, want)
	}
	if level.Level() != slog.LevelDebug {
		t.Errorf("level %v", level.Level())
	}
	if err := swA.Send(context.Background(), push.Notification{}); err.Error() != "a2" {
		t.Errorf("app a not swapped: %v", err)
	}
	if err := swB.Send(context.Background(), push.Notification{}); err.Error() != "b1" {
		t.Errorf("app b swapped to a broken backend: %v", err)
	}

	res = r.Reload(context.Background(), nil, errors.New("rate_limit: not a duration"))
	if res.ConfigProblems == nil || len(res.Applied) != 0 || builds != 2 {
		t.Errorf("a config with problems: %+v, %d builds", res, builds)
	}
}

// With a Fingerprint, an app whose options and files are what they were
// keeps its running backend, and with it its connections; a file renewed
// in place or a changed option rebuilds it.
func TestReloadKeepsUnchangedApps(t *testing.T) {
	base := "[apps.a]\nkind = \"log\"\n[apps.b]\nkind = \"log\"\n"
	swA, swB := NewBackend(named("a0")), NewBackend(named("b0"))
	files := map[string]string{"a": "key 1", "b": "key 1"}
	builds := map[string]int{}
	r := New(parse(t, base), Options{
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Apps:   map[string]*Backend{"a": swA, "b": swB},
		Fingerprints: func(apps map[string]*config.App) map[string]string {
			prints := map[string]string{}
			for n, a := range apps {
				prints[n] = a.Alert + "|" + files[a.Alert]
			}
			return prints
		},
		BuildApp: func(ctx context.Context, name string, a *config.App) (push.Backend, error) {
			builds[name]++
			return named(fmt.Sprint(name, builds[name])), nil
		},
	})
	for _, step := range []struct {
		name, config string
		renew        string
		want         map[string]int
	}{
		{"unchanged", base, "", map[string]int{}},
		{"an option of a changed", "[apps.a]\nkind = \"log\"\nalert = \"a\"\n[apps.b]\nkind = \"log\"\n", "", map[string]int{"a": 1}},
		{"unchanged again", "[apps.a]\nkind = \"log\"\nalert = \"a\"\n[apps.b]\nkind = \"log\"\n", "", map[string]int{"a": 1}},
		{"a's file renewed in place", "[apps.a]\nkind = \"log\"\nalert = \"a\"\n[apps.b]\nkind = \"log\"\n", "a", map[string]int{"a": 2}},
	} {
		if step.renew != "" {
			files[step.renew] += ", renewed"
		}
		r.Reload(context.Background(), parse(t, step.config), nil)
		if !reflect.DeepEqual(builds, step.want) {
			t.Fatalf("%s: builds %v, want %v", step.name, builds, step.want)
		}
	}
	if err := swB.Send(context.Background(), push.Notification{}); err.Error() != "b0" {
		t.Errorf("app b, never changed, was rebuilt: %v", err)
	}
}

// A reload's push_deadline reaches the core with the rebuilt backend
// (appserver.PushDeadliner): a longer one too, which the core's cap at
// the old value would otherwise cut.
func TestReloadPushDeadline(t *testing.T) {
	key := filepath.Join(t.TempDir(), "vapid.pem")
	os.WriteFile(key, []byte("key"), 0o600)
	app := "[apps.web]\nkind = \"webpush\"\nvapid_key_file = %q\nvapid_subject = \"mailto:ops@example.org\"\npush_deadline = %q\n"
	running := parse(t, fmt.Sprintf(app, key, "1s"))
	sw := NewBackend(named("w1"))
	sw.SetPushDeadline(time.Second)
	r := New(running, Options{
		Logger: slog.New(slog.DiscardHandler),
		Apps:   map[string]*Backend{"web": sw},
		BuildApp: func(ctx context.Context, name string, a *config.App) (push.Backend, error) {
			return named("w2"), nil
		},
	})
	res := r.Reload(context.Background(), parse(t, fmt.Sprintf(app, key, "6s")), nil)
	if len(res.Applied) != 1 || sw.PushDeadline() != 6*time.Second {
		t.Fatalf("applied %v, push deadline %v, want 6s", res.Applied, sw.PushDeadline())
	}
}

// closer is a backend that records when it is closed.
type closer struct {
	named
	closed chan time.Time
}

func newCloser(name string) *closer {
	return &closer{named: named(name), closed: make(chan time.Time, 1)}
}

func (c *closer) Close() error {
	c.closed <- time.Now()
	return nil
}

// A reload closes the backend it replaced (its connections to the push
// service), once push_timeout and a second have passed since the swap,
// by when every push that took it has ended; not before, and not the
// new one, nor an app's whose rebuilt backend failed.
func TestReloadClosesReplacedBackend(t *testing.T) {
	const pushTimeout = time.Second
	base := fmt.Sprintf("rate_limit = 0\npush_timeout = %q\n[apps.a]\nkind = \"log\"\n[apps.b]\nkind = \"log\"\n", pushTimeout)
	oldA, oldB, newA := newCloser("a1"), newCloser("b1"), newCloser("a2")
	r := New(parse(t, base), Options{
		Logger: slog.New(slog.DiscardHandler),
		Apps:   map[string]*Backend{"a": NewBackend(oldA), "b": NewBackend(oldB)},
		BuildApp: func(ctx context.Context, name string, a *config.App) (push.Backend, error) {
			if name == "b" {
				return nil, errors.New("bad key")
			}
			return newA, nil
		},
	})
	start := time.Now()
	if res := r.Reload(context.Background(), parse(t, base), nil); len(res.Applied) != 1 {
		t.Fatalf("applied %v", res.Applied)
	}
	select {
	case at := <-oldA.closed:
		if d := at.Sub(start); d < pushTimeout+time.Second {
			t.Fatalf("the replaced backend closed %v after the reload, before push_timeout and a second (%v)", d, pushTimeout+time.Second)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the replaced backend was not closed")
	}
	select {
	case <-newA.closed:
		t.Fatal("the new backend was closed")
	case <-oldB.closed:
		t.Fatal("the backend kept, its replacement broken, was closed")
	default:
	}
}

// At a stop, Close closes the backend in use and one swapped out whose
// retirement has not come yet; not one its retirement closed already.
func TestBackendClose(t *testing.T) {
	first, second, third := newCloser("1"), newCloser("2"), newCloser("3")
	b := NewBackend(first)
	b.Swap(second, 0)
	<-first.closed // retired at once
	b.Swap(third, time.Hour)
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	for _, c := range []*closer{second, third} {
		select {
		case <-c.closed:
		default:
			t.Errorf("backend %s not closed", c.named)
		}
	}
	if len(first.closed) != 0 {
		t.Error("the retired backend was closed again")
	}
	if err := NewBackend(named("x")).Close(); err != nil {
		t.Errorf("a backend without Close: %v", err)
	}
}

// A reload that applies a setting the start would warn about (here a
// vapid_subject Apple's push service refuses) says so in the log too: the
// operator who reloads sees no start log.
func TestReloadLogsConfigurationWarnings(t *testing.T) {
	key := filepath.Join(t.TempDir(), "vapid.pem")
	os.WriteFile(key, []byte("key"), 0o600)
	app := "[apps.web]\nkind = \"webpush\"\nvapid_key_file = %q\nvapid_subject = %q\n"
	running := parse(t, fmt.Sprintf(app, key, "mailto:ops@example.org"))
	next := parse(t, fmt.Sprintf(app, key, "mailto:ops@localhost"))
	if len(next.Warnings) == 0 {
		t.Fatal("the configuration draws no warning")
	}
	var log strings.Builder
	r := New(running, Options{
		Logger: slog.New(slog.NewTextHandler(&log, nil)),
		Apps:   map[string]*Backend{"web": NewBackend(named("w1"))},
		BuildApp: func(ctx context.Context, name string, a *config.App) (push.Backend, error) {
			return named("w2"), nil
		},
	})
	if res := r.Reload(context.Background(), next, nil); len(res.Applied) != 1 {
		t.Fatalf("applied %v", res.Applied)
	}
	if !strings.Contains(log.String(), "vapid_subject") {
		t.Errorf("the reload applied a configuration whose warning %q the start logs, and logged none:\n%s", next.Warnings[0], log.String())
	}
}

// The listener's certificate expiry is the one it serves: a renewal
// written over the old certificate before its key is refused, and the
// old certificate, still served, is what expires.
func TestCertificateExpiryIsTheServedOne(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, notAfter time.Time) (certFile, keyFile string) {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name}, NotBefore: time.Now().Add(-time.Hour), NotAfter: notAfter}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
		if err != nil {
			t.Fatal(err)
		}
		kder, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			t.Fatal(err)
		}
		certFile, keyFile = filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key")
		os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
		os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), 0o600)
		return certFile, keyFile
	}
	soon := time.Now().Add(48 * time.Hour).Truncate(time.Second)
	oldCert, oldKey := write("old", soon)
	newCert, _ := write("new", time.Now().Add(90*24*time.Hour))
	c, err := LoadCertificate(oldCert, oldKey)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Load(newCert, oldKey); err == nil {
		t.Fatal("a certificate loaded with another's key")
	}
	if got, err := c.Expiry(); err != nil || !got.Equal(soon) {
		t.Fatalf("Expiry = %v, %v; want the served certificate's %v", got, err, soon)
	}
}

// A reload that changes nothing says so, as README has it, on a server
// with an HTTPS listener too: its certificate files, unchanged, are no
// "applied".
func TestReloadUnchangedWithTLSSaysNothingChanged(t *testing.T) {
	dir := t.TempDir()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "x"}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(48 * time.Hour)}
	der, _ := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	kder, _ := x509.MarshalPKCS8PrivateKey(key)
	certFile, keyFile := filepath.Join(dir, "c.crt"), filepath.Join(dir, "c.key")
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), 0o600)
	text := fmt.Sprintf("[http]\ntls_listen = \"127.0.0.1:0\"\ntls_cert_file = %q\ntls_key_file = %q\n", certFile, keyFile)
	c, err := LoadCertificate(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	var log strings.Builder
	r := New(parse(t, text), Options{Logger: slog.New(slog.NewTextHandler(&log, nil)), TLS: c})
	res := r.Reload(context.Background(), parse(t, text), nil)
	if len(res.Applied) != 0 || !strings.Contains(log.String(), "reload: nothing changed") {
		t.Fatalf("an unchanged reload: applied %v\n%s", res.Applied, log.String())
	}
}

// What only a restart applies is named as such on every reload until the
// restart, and changes nothing meanwhile: an app's kind (its backend is
// not rebuilt as another kind's), its priority (its backend kept), and a
// top-level option.
func TestReloadNamesWhatNeedsRestart(t *testing.T) {
	saFile := filepath.Join(t.TempDir(), "sa.json")
	if err := os.WriteFile(saFile, []byte("{}"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, next string
		want       []string
	}{
		{"kind", fmt.Sprintf("[apps.a]\nkind = \"fcm\"\nservice_account_file = %q\n", saFile), []string{"apps.a.kind"}},
		{"priority", "[apps.a]\nkind = \"log\"\npriority = \"high\"\n", []string{"apps.a.priority"}},
		{"top-level option", "rate_limit = 2\n[apps.a]\nkind = \"log\"\n", []string{"rate_limit"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sw := NewBackend(named("a0"))
			builds := 0
			r := New(parse(t, "[apps.a]\nkind = \"log\"\n"), Options{
				Logger: slog.New(slog.DiscardHandler),
				Apps:   map[string]*Backend{"a": sw},
				BuildApp: func(context.Context, string, *config.App) (push.Backend, error) {
					builds++
					return named("a1"), nil
				},
				Fingerprints: func(apps map[string]*config.App) map[string]string {
					return map[string]string{"a": "files"}
				},
			})
			for i := range 2 {
				res := r.Reload(context.Background(), parse(t, tc.next), nil)
				if !reflect.DeepEqual(res.NeedsRestart, tc.want) || len(res.Applied) != 0 || len(res.Failed) != 0 {
					t.Errorf("reload %d: needs restart %v, applied %v, failed %v; want needs restart %v and nothing applied", i+1, res.NeedsRestart, res.Applied, res.Failed, tc.want)
				}
			}
			if err := sw.Send(context.Background(), push.Notification{}); builds != 0 || err.Error() != "a0" {
				t.Errorf("the running backend was rebuilt %d times (now %v), want it kept", builds, err)
			}
		})
	}
}

// A certificate renewed in place (same file names, new contents) is
// reported applied at the reload that loads it, and a reload after that,
// with nothing changed since, says nothing changed.
func TestReloadTLSCertificateRenewedInPlace(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "c.crt"), filepath.Join(dir, "c.key")
	write := func(certFile, keyFile string) {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "x"}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(48 * time.Hour)}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
		if err != nil {
			t.Fatal(err)
		}
		kder, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	config := func(certFile, keyFile string) string {
		return fmt.Sprintf("[http]\ntls_listen = \"127.0.0.1:0\"\ntls_cert_file = %q\ntls_key_file = %q\n", certFile, keyFile)
	}
	write(certFile, keyFile)
	c, err := LoadCertificate(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	r := New(parse(t, config(certFile, keyFile)), Options{Logger: slog.New(slog.DiscardHandler), TLS: c})
	write(certFile, keyFile)
	if res := r.Reload(context.Background(), parse(t, config(certFile, keyFile)), nil); !reflect.DeepEqual(res.Applied, []string{"http.tls_cert_file"}) {
		t.Fatalf("certificate renewed in place: applied %v, want http.tls_cert_file", res.Applied)
	}
	// Files of other names, then the same configuration again.
	otherCert, otherKey := filepath.Join(dir, "d.crt"), filepath.Join(dir, "d.key")
	write(otherCert, otherKey)
	if res := r.Reload(context.Background(), parse(t, config(otherCert, otherKey)), nil); !reflect.DeepEqual(res.Applied, []string{"http.tls_cert_file"}) {
		t.Fatalf("certificate files renamed: applied %v, want http.tls_cert_file", res.Applied)
	}
	if res := r.Reload(context.Background(), parse(t, config(otherCert, otherKey)), nil); len(res.Applied) != 0 || len(res.NeedsRestart) != 0 {
		t.Fatalf("a reload changing nothing: applied %v, needs restart %v", res.Applied, res.NeedsRestart)
	}
}

// An app whose priority changed with another option is rebuilt for the
// other option, and its priority stays the running one: every reload
// until the restart names it again.
func TestReloadPriorityNeedsRestartAfterRebuild(t *testing.T) {
	sw := NewBackend(named("a0"))
	r := New(parse(t, "[apps.a]\nkind = \"log\"\n"), Options{
		Logger:   slog.New(slog.DiscardHandler),
		Apps:     map[string]*Backend{"a": sw},
		BuildApp: func(context.Context, string, *config.App) (push.Backend, error) { return named("a1"), nil },
	})
	next := "[apps.a]\nkind = \"log\"\npriority = \"high\"\nalert = \"x\"\n"
	res := r.Reload(context.Background(), parse(t, next), nil)
	if !reflect.DeepEqual(res.Applied, []string{"apps.a"}) || !reflect.DeepEqual(res.NeedsRestart, []string{"apps.a.priority"}) {
		t.Fatalf("first reload: applied %v, needs restart %v", res.Applied, res.NeedsRestart)
	}
	res = r.Reload(context.Background(), parse(t, next), nil)
	if !reflect.DeepEqual(res.NeedsRestart, []string{"apps.a.priority"}) {
		t.Fatalf("second reload: needs restart %v, want apps.a.priority still", res.NeedsRestart)
	}
}
