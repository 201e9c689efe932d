package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"sync"
	"syscall"
	"time"

	"github.com/push-appserver/push-appserver/internal/config"
	"github.com/push-appserver/push-appserver/internal/configcheck"
	"github.com/push-appserver/push-appserver/internal/gctune"
	"github.com/push-appserver/push-appserver/internal/push"
	"github.com/push-appserver/push-appserver/internal/push/apns"
	"github.com/push-appserver/push-appserver/internal/push/webpush"
	"github.com/push-appserver/push-appserver/internal/registry"
	"github.com/push-appserver/push-appserver/internal/registry/postgres"
)

func runServe(args []string, stdout, stderr io.Writer) int {
	f := newFlags("serve", "serve [-config file] [-pprof addr]", stdout, stderr)
	cfgPath := f.configFlag()
	pprofAddr := f.String("pprof", "", "serve net/http/pprof on this `address` (overrides pprof_listen; keep it on loopback)")
	if rest, code, ok := f.parse(args); !ok {
		return code
	} else if len(rest) > 0 {
		f.usage(stderr)
		return 2
	}
	// SIGHUP reloads; caught from the start, so one that comes early does
	// not kill the process (its default action).
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	// SIGUSR2 hands over to a new process of the binary (package
	// upgrade); caught from the start for the same reason.
	usr2 := make(chan os.Signal, 1)
	signal.Notify(usr2, syscall.SIGUSR2)
	defer signal.Stop(usr2)
	cfg, ok := loadConfig(*cfgPath, stderr)
	if !ok {
		return 1
	}
	load := func(ctx context.Context) (*config.Config, error) {
		type loaded struct {
			cfg *config.Config
			err error
		}
		// A read that hangs (a network mount that stopped answering)
		// cannot be interrupted: a stop leaves it behind, and its
		// result is dropped.
		done := make(chan loaded, 1)
		go func() {
			next, err := reloadConfig(*cfgPath)
			done <- loaded{next, err}
		}()
		select {
		case l := <-done:
			if l.err == nil && *pprofAddr != "" {
				l.cfg.PprofListen = *pprofAddr
			}
			return l.cfg, l.err
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	if *pprofAddr != "" {
		cfg.PprofListen = *pprofAddr
	}
	gctune.Apply(os.Getenv)
	gctune.ApplyMemoryLimit(os.Getenv, os.ReadFile)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// The first signal starts an orderly stop, which may take the
	// shutdown's grace; a second ends the process at once, as the
	// signal does by default: someone who presses Ctrl-C again, or kills
	// the stopping server again, does not want to wait for it.
	context.AfterFunc(ctx, stop)
	if err := serve(ctx, cfg, stderr, signals{reload: hup, upgrade: usr2}, load); err != nil {
		if cfg.LogFormat == "json" {
			// One JSON record like the log's others: a collector that
			// parses each line keeps the one that says why the
			// server ended, with its time and level.
			newLogger(cfg, stderr, new(slog.LevelVar)).Error("push-appserver stopped", "err", err)
		} else {
			fmt.Fprintf(stderr, "push-appserver: %v\n", err)
		}
		return 1
	}
	return 0
}

// typeCountLimit bounds check-config's count of the registrations by
// type: the unit runs check-config before every start and reload, and
// the count is advice (registrations of apps gone), not worth a refused
// reload on a registry too large to count quickly.
const typeCountLimit = 10 * time.Second

func runCheckConfig(args []string, stdout, stderr io.Writer) int {
	f := newFlags("check-config", "check-config [-config file]", stdout, stderr)
	cfgPath := f.configFlag()
	if rest, code, ok := f.parse(args); !ok {
		return code
	} else if len(rest) > 0 {
		f.usage(stderr)
		return 2
	}
	cfg, err := config.Load(*cfgPath)
	if code := checkConfig(cfg, err, stdout, stderr); code != 0 {
		return code
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	quiet := slog.New(slog.DiscardHandler)
	opts := configcheck.Options{
		BuildApp: func(ctx context.Context, name string, a *config.App) error {
			_, err := newBackend(ctx, name, a, push.NewBreaker(name, push.BreakerOptions{}, quiet), nil, webPushLimits{}, quiet)
			return err
		},
	}
	// The registry is opened once, for every check that reads it.
	var (
		opened  sync.Once
		store   registry.Store
		openErr error
	)
	openRegistry := func(ctx context.Context) (registry.Store, error) {
		opened.Do(func() {
			store, openErr = openStore(ctx, cfg, quiet)
			if openErr != nil {
				// A nil *postgres.Store in the interface is no nil
				// store: the close below would call it.
				store = nil
			}
			if cfg.Database.Driver == "postgres" && postgres.Unreachable(openErr) {
				openErr = fmt.Errorf("%w: %w", configcheck.ErrUnreachable, openErr)
			}
		})
		return store, openErr
	}
	defer func() {
		if store != nil {
			store.Close()
		}
	}()
	// The registry is read only when it exists: check-config creates
	// nothing.
	if _, err := os.Stat(cfg.Database.Path); cfg.Database.Driver != "sqlite" || err == nil {
		opts.TypeCounts = func(ctx context.Context) (map[string]int, error) {
			store, err := openRegistry(ctx)
			if err != nil {
				return nil, err
			}
			cctx, cancel := context.WithTimeout(ctx, typeCountLimit)
			defer cancel()
			counts, err := store.CountByType(cctx)
			// Out of time either way: these 10 s, or first the
			// server's statement timeout (5 s by default), which a
			// slow count meets sooner on PostgreSQL.
			if err != nil && ctx.Err() == nil && (cctx.Err() != nil || postgres.TimedOut(err)) {
				return nil, fmt.Errorf("%w (over %s): %w", configcheck.ErrSlow, typeCountLimit, err)
			}
			return counts, err
		}
	}
	if cfg.Database.Driver == "postgres" {
		opts.Replication = func(ctx context.Context) ([]string, error) {
			store, err := openRegistry(ctx)
			if err != nil {
				return nil, err
			}
			src, ok := store.(replicationSource)
			if !ok {
				return nil, nil
			}
			r, err := src.Replication(ctx)
			return r.Risks(), err
		}
	}
	findings := configcheck.Check(ctx, cfg, opts)
	if _, err := os.Stat(cfg.Database.Path); cfg.Database.Driver == "sqlite" && errors.Is(err, fs.ErrNotExist) {
		// Right at the first start; after a change of data_dir or
		// database.path, serve would start on an empty registry, and
		// answer the pushes of every device registered in the old one
		// as to nodes that are gone.
		findings = append(findings, configcheck.Finding{Text: fmt.Sprintf("no registry at %s: serve creates a new, empty one; if the server ran before, data_dir or database.path no longer names its registry", cfg.Database.Path)})
	}
	failed := false
	for _, f := range findings {
		if f.Error {
			failed = true
			fmt.Fprintln(stderr, f)
		} else {
			fmt.Fprintln(stdout, f)
		}
	}
	if failed {
		fmt.Fprintln(stderr, "configuration has problems (see above)")
		return 1
	}
	fmt.Fprintln(stdout, "configuration OK")
	return 0
}

func checkConfig(cfg *config.Config, err error, stdout, stderr io.Writer) int {
	if err != nil {
		fmt.Fprintf(stderr, "configuration has problems:\n%v\n", err)
		return 1
	}
	for _, o := range cfg.Obsolete {
		fmt.Fprintf(stdout, "warning: %s is obsolete and ignored\n", o)
	}
	if cfg.Debugging {
		fmt.Fprintln(stdout, "warning: debugging is on: the settings pages show every secret; never in production")
	}
	names := make([]string, 0, len(cfg.Apps))
	for n := range cfg.Apps {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		// A production app left on the seed's default (sandbox) loses
		// every push to BadDeviceToken: say which one each app uses.
		if a := cfg.Apps[n]; a.Kind == config.KindAPNS {
			fmt.Fprintf(stdout, "app %s: APNS %s\n", n, apns.Environment(*a.Sandbox, a.Endpoint))
		}
		// A key file that exists but is no P-256 key would only fail at
		// serve; the public key is what web clients need.
		if a := cfg.Apps[n]; a.Kind == config.KindWebPush {
			key, err := webpush.LoadVAPIDKey(a.VAPIDKeyFile)
			if err != nil {
				fmt.Fprintf(stderr, "configuration has problems:\napps.%s.vapid_key_file: %v\n", n, err)
				return 1
			}
			pub, _ := webpush.PublicKeyString(key)
			fmt.Fprintf(stdout, "app %s: WebPush, VAPID public key %s\n", n, pub)
			if a.AllowPrivateEndpoints {
				fmt.Fprintf(stdout, "warning: app %s: allow_private_endpoints is on: registrations can make us POST into our own network\n", n)
			}
		}
	}
	registryName := cfg.Database.Path
	if cfg.Database.Driver == "postgres" {
		registryName = "PostgreSQL (database.dsn)"
	}
	fmt.Fprintf(stdout, "configuration loaded: %d app(s), %d component(s), HTTP on %q, registry %s\n",
		len(cfg.Apps), len(cfg.Components), cfg.HTTP.Listen, registryName)
	return 0
}

// reloadConfig reads the configuration again for a reload. An empty file
// is one being written (an editor's or a configuration tool's truncation
// caught mid-write), not a configuration to apply the defaults of; the
// bytes judged empty or not are the bytes parsed, so a truncation cannot
// fall between the two.
func reloadConfig(path string) (*config.Config, error) {
	if path == "" {
		return config.Load("")
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading config: %w", err)
	}
	if len(bytes.TrimSpace(b)) == 0 {
		return nil, fmt.Errorf("%s is empty", path)
	}
	return config.Parse(string(b), filepath.Dir(path))
}
