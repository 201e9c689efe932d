package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/push-appserver/push-appserver/internal/appserver"
	"github.com/push-appserver/push-appserver/internal/config"
	"github.com/push-appserver/push-appserver/internal/httpapi"
	"github.com/push-appserver/push-appserver/internal/logging"
	"github.com/push-appserver/push-appserver/internal/metrics"
	"github.com/push-appserver/push-appserver/internal/procs"
	"github.com/push-appserver/push-appserver/internal/push"
	"github.com/push-appserver/push-appserver/internal/push/apns"
	"github.com/push-appserver/push-appserver/internal/push/logpush"
	"github.com/push-appserver/push-appserver/internal/push/webpush"
	"github.com/push-appserver/push-appserver/internal/registry"
	"github.com/push-appserver/push-appserver/internal/registry/postgres"
	"github.com/push-appserver/push-appserver/internal/registry/sqlite"
	"github.com/push-appserver/push-appserver/internal/reload"
	"github.com/push-appserver/push-appserver/internal/sockio"
	"github.com/push-appserver/push-appserver/internal/systemd"
	"github.com/push-appserver/push-appserver/internal/upgrade"
	"github.com/push-appserver/push-appserver/internal/xmpp/adhoc"
)

// shutdownGrace is how long in-flight requests get to finish on shutdown.
const shutdownGrace = 20 * time.Second

// newLogger returns the server's logger; level is set from the
// configuration and may change on reload.
func newLogger(cfg *config.Config, w io.Writer, level *slog.LevelVar) *slog.Logger {
	var l slog.Level
	_ = l.UnmarshalText([]byte(cfg.LogLevel))
	level.Set(l)
	opts := &slog.HandlerOptions{Level: level}
	var h slog.Handler = slog.NewTextHandler(w, opts)
	if cfg.LogFormat == "json" {
		h = slog.NewJSONHandler(w, opts)
	}
	return slog.New(logging.Redact(h))
}

// signals are the signals serve acts on besides the ones that stop it.
type signals struct {
	// reload: read the configuration again (with serve's load) and apply
	// what can change in place.
	reload <-chan os.Signal
	// upgrade: hand over to a new process of the binary (package upgrade).
	upgrade <-chan os.Signal
}

// upgradeTimeout bounds how long a new process started by an upgrade may
// take to be ready before it is killed and the old one serves on.
const upgradeTimeout = time.Minute

// newProcessGrace bounds how long a process told to stop during an
// upgrade waits for the new process, which it told to stop too, to end:
// the new one heard of the stop a moment later, and writes what its
// core holds after its own shutdown's grace. Past it, the new process is
// killed. Within the unit's TimeoutStopSec (30 s).
const newProcessGrace = shutdownGrace + 5*time.Second

// settleTimeout bounds how long a new process started by an upgrade waits
// for its components to connect (or stand by) before it says it is ready,
// so that the old one does not close its streams before another serves.
const settleTimeout = 20 * time.Second

// serve runs the server until ctx ends, or until a new process it started
// on sig.upgrade took over. load reads the configuration again for a
// reload; its ctx ends when the server stops.
func serve(ctx context.Context, cfg *config.Config, logw io.Writer, sig signals, load func(ctx context.Context) (*config.Config, error)) error {
	// Checked here too: the -pprof flag bypasses the config's validation.
	if err := config.CheckPprofListen(cfg.PprofListen, cfg.PprofAllowRemote); err != nil {
		return fmt.Errorf("pprof: %w", err)
	}
	proxies, err := cfg.HTTP.Proxies()
	if err != nil {
		return fmt.Errorf("http.trusted_proxies: %w", err)
	}
	level := new(slog.LevelVar)
	// A log nobody reads (journald stalled) must not stop the server:
	// lines past what waits are dropped and counted.
	alog := logging.NewAsync(logw, 16384, func(n uint64) []byte {
		var b bytes.Buffer
		newLogger(cfg, &b, new(slog.LevelVar)).Error("log lines dropped: the log was not read", "count", n)
		return b.Bytes()
	})
	defer alog.Drain(5 * time.Second)
	logger := newLogger(cfg, alog, level)
	logger.Info("starting push-appserver", "version", versionString(), "pid", os.Getpid())
	for _, o := range cfg.Obsolete {
		logger.Warn("obsolete option ignored", "option", o)
	}
	for _, w := range cfg.Warnings {
		logger.Warn("configuration: " + w)
	}
	if cfg.Debugging {
		logger.Warn("debugging is on: settings pages and forms are served and show secrets; turn it off in production")
	}
	if procs.Enabled(os.Getenv) {
		// One processor while calm, all of them when busy (package procs).
		go procs.New(logger).Run(ctx)
	}

	// Before anything listens: a process started by an upgrade takes its
	// parent's sockets from here.
	up, err := upgrade.New(logger, upgradeTimeout)
	if err != nil {
		return err
	}
	defer up.Stop()
	// stoppedWithOld: this process, started by an upgrade, stops because
	// the old one does (see below), which is no stop of the service.
	var stoppedWithOld atomic.Bool
	if up.Inherited() {
		logger.Info("started by an upgrade: taking over from the old process once ready")
		// The old process told to stop while this one starts tells
		// this one to stop too, rather than kill it: what its
		// components took is answered as at any stop.
		var stopWithOld context.CancelFunc
		ctx, stopWithOld = context.WithCancel(ctx)
		defer stopWithOld()
		go func() {
			select {
			case <-up.StopRequested():
				logger.Info("the old process stops: this one stops too")
				stoppedWithOld.Store(true)
				stopWithOld()
			case <-ctx.Done():
			}
		}()
	}

	// The HTTP listeners are bound before the registry is opened, so that
	// a port taken ends the start at once rather than after a wait for
	// PostgreSQL, and serve meanwhile a page that says what the server
	// waits for (httpapi.Starting): refused connections had an
	// orchestrator's liveness probe restart the server in a loop. The
	// API takes over on the same listeners once it is built.
	var tlsCert *reload.Certificate
	if cfg.HTTP.TLSListen != "" {
		if tlsCert, err = reload.LoadCertificate(cfg.HTTP.TLSCertFile, cfg.HTTP.TLSKeyFile); err != nil {
			return fmt.Errorf("http.tls_cert_file: %w", err)
		}
	}
	m := metrics.New()
	m.BuildInfo(versionString(), commitString())
	m.WatchLog(alog.Dropped)
	var serving atomic.Bool
	m.Starting(func() bool { return !serving.Load() })
	// draining: a stop waits out shutdown_delay (see delayShutdown).
	var draining atomic.Bool
	// /metrics goes on its own listener when metrics_listen says so, and
	// then not on the API's public port.
	var mh http.Handler
	if *cfg.HTTP.Metrics && cfg.MetricsListen == "" {
		mh = m.Handler()
	}
	starting := httpapi.NewStarting("opening the registry", mh, registryRetryMax)
	api := httpapi.NewSwitch(starting)
	// The API's listeners share the slots the descriptor limit leaves
	// them: together they leave the process the descriptors it needs for
	// its own connections. A client's connections to any of them count
	// against its one share; the trusted proxies have none, every
	// connection behind one being the proxy's.
	slots := httpapi.ConnectionCap()
	var monitoring *httpapi.ConnLimit
	if cfg.MetricsListen != "" {
		// metrics_listen has slots of its own, taken from the API's:
		// the API's clients holding all of theirs (the moment the
		// refusals are counted and alerted on) must not keep the
		// monitoring from scraping them.
		n := min(httpapi.MonitoringSlots, max(slots/2, 1))
		slots = max(slots-n, 1)
		monitoring = httpapi.NewConnLimit(httpapi.ConnLimitOptions{
			Slots:     n,
			PerClient: *cfg.HTTP.MaxConnectionsPerClient,
			Exempt:    proxies,
			Refused:   m.HTTPConnectionRefused,
			Logger:    logger,
		})
	}
	hl := &httpListeners{listen: up.Listen, logger: logger, errc: make(chan error, 4),
		writeTimeout: httpapi.WriteTimeout(cfg.PushTimeout.D()),
		conns: httpapi.NewConnLimit(httpapi.ConnLimitOptions{
			Slots:     slots,
			PerClient: *cfg.HTTP.MaxConnectionsPerClient,
			Exempt:    proxies,
			Refused:   m.HTTPConnectionRefused,
			Logger:    logger,
		})}
	defer hl.close()
	if cfg.HTTP.Listen != "" {
		if err := hl.bind("HTTP API", cfg.HTTP.Listen, api, nil, hl.conns); err != nil {
			return err
		}
	}
	if cfg.HTTP.TLSListen != "" {
		// The certificate comes from the reloadable holder, so SIGHUP
		// picks up a renewed one.
		if err := hl.bind("HTTP API", cfg.HTTP.TLSListen, api, &tls.Config{GetCertificate: tlsCert.GetCertificate}, hl.conns); err != nil {
			return err
		}
	}
	if cfg.MetricsListen != "" {
		mux := http.NewServeMux()
		mux.Handle("GET /metrics", m.Handler())
		if err := hl.bind("metrics", cfg.MetricsListen, mux, nil, monitoring); err != nil {
			return err
		}
	}
	if cfg.PprofListen != "" {
		srv, err := startPprof(cfg.PprofListen, up.Listen, logger)
		if err != nil {
			return err
		}
		hl.servers = append(hl.servers, srv)
	}
	// A process started by an upgrade serves once it can serve in full:
	// until then the old process, which accepts on the same sockets,
	// answers every connection.
	if !up.Inherited() {
		hl.serve()
	}

	// A process started by an upgrade leaves the status line to the one
	// serving until it takes over: that one would not set it back if the
	// upgrade failed.
	var status *systemd.Notifier
	if !up.Inherited() {
		status = systemd.New(logger, func() string { return "starting" })
	}
	// A registry file not there yet is made by the open: at the first
	// start as it should be, but after a change of data_dir or
	// database.path (a typo, a volume mounted elsewhere) every device
	// registered in the old one is unknown here, and its pushes are
	// answered as to a node that is gone. Said once it is open.
	fresh := false
	if cfg.Database.Driver != "postgres" {
		_, err := os.Stat(cfg.Database.Path)
		fresh = errors.Is(err, fs.ErrNotExist)
	}
	store, err := waitForRegistry(ctx, cfg, logger, func(public, detail string) {
		starting.SetReason(public)
		if status != nil {
			status.Status("starting: " + detail)
		}
	})
	if errors.Is(err, errStoppedStarting) {
		// Told to stop before it started: nothing failed.
		logger.Info(err.Error())
		return nil
	}
	if err != nil {
		return fmt.Errorf("opening registry: %w", err)
	}
	defer store.Close()
	starting.SetReason("starting")
	if cfg.Database.Driver == "postgres" {
		logger.Info("registry opened", "driver", cfg.Database.Driver)
	} else if fresh {
		logger.Warn("created a new, empty registry: if this server ran before, data_dir or database.path no longer names its registry, and the devices registered there are unknown here (their pushes are answered as to a node that is gone)", "path", cfg.Database.Path)
	} else {
		logger.Info("registry opened", "driver", cfg.Database.Driver, "path", cfg.Database.Path)
	}

	// Apps of a kind are added only by a restart: the share each WebPush
	// app has holds until then.
	webPush := newWebPushLimits(cfg, httpapi.DescriptorReserve())
	apps, breakers, err := buildApps(ctx, cfg, webPush, logger)
	if err != nil {
		return err
	}
	// Every backend goes behind a swappable one, so a reload can replace
	// it (new key, certificate or options) while pushes go through.
	guardsOf := map[string]appBreaker{}
	for _, b := range breakers {
		guardsOf[b.app] = b
	}
	swaps := map[string]*reload.Backend{}
	credentials := &credentialsGauge{m: m, logger: logger}
	warmups := make(warmSlots, maxWarmups)
	for i := range apps {
		warm(ctx, warmups, apps[i].Name, apps[i].Backend, credentials, logger.With("app", apps[i].Name))
		sw := reload.NewBackend(apps[i].Backend)
		sw.SetPushDeadline(apps[i].Deadline)
		swaps[apps[i].Name] = sw
		apps[i].Backend = sw
	}
	// Every return of serve from here comes once the pushes under way
	// have ended (or the shutdown's grace has passed): the backends'
	// connections to the push services, and their goroutines, go then. A
	// process that runs serve and goes on would otherwise keep them until
	// they idled out, ten minutes, and a backend a reload swapped out
	// until its retirement.
	defer func() {
		for name, sw := range swaps {
			if err := sw.Close(); err != nil {
				logger.Debug("closing the app's push backend", "app", name, "err", err)
			}
		}
	}()
	reloader := reload.New(cfg, reload.Options{
		Logger: logger, Level: level, Apps: swaps, TLS: tlsCert,
		Fingerprints: appFingerprints,
		Kept: func(ctx context.Context, name string, b push.Backend) {
			// A refusal fixed outside the file: check again.
			if credentials.last(name) != metrics.CredentialsAccepted {
				warm(ctx, warmups, name, b, credentials, logger.With("app", name))
			}
		},
		BuildApp: func(ctx context.Context, name string, a *config.App) (push.Backend, error) {
			if a.Kind == config.KindLog {
				return logpush.New(logger.With("app", name)), nil
			}
			// The options or the key files may have changed: the app
			// proves itself again before a refusal counts against a token.
			var br *push.Breaker
			g := guardsOf[name]
			if g.breaker != nil {
				br = g.breaker.Fresh()
			}
			// Whether a WebPush app's push services route to their
			// subscriptions is theirs, not the configuration's: what
			// they answered is kept.
			return newBackend(ctx, name, a, br, g.gone, webPush, logger.With("app", name))
		},
		// Checked once it took the old backend's place: a push the old
		// one carries says nothing of the new one's credentials.
		Swapped: func(ctx context.Context, name string, b push.Backend) {
			warm(ctx, warmups, name, b, credentials, logger.With("app", name))
		},
	})

	m.WatchWebPushBusy(webPush.shared.Refused)
	var appChecks []httpapi.Check
	for _, b := range breakers {
		bad := func() bool { ok, _ := b.breaker.Misconfigured(); return ok }
		m.WatchApp(b.app, bad)
		if b.gone != nil {
			m.WatchGoneHeld(b.app, b.gone.Held)
		}
		// On the health page only: every instance shares the app's
		// configuration, and would leave service together. Credentials
		// the push service refuses fail every push of the app, more
		// surely than a breaker that opened: the page, and the status
		// line systemd shows, say so rather than "up".
		refused := func() bool { return credentials.last(b.app) == metrics.CredentialsRefused }
		appChecks = append(appChecks, httpapi.Check{Name: "app " + b.app, OK: func() bool { return !bad() && !refused() }, HealthOnly: true})
	}
	// A shared registry tells every instance what the others change.
	changes, _ := store.(appserver.ChangeFeed)
	svc, err := appserver.New(store, apps, appserver.Options{
		Changes:     changes,
		RateLimit:   cfg.RateLimit.D(),
		PushTimeout: cfg.PushTimeout.D(),
		TokenBlock:  cfg.TokenBlock.D(),
		CacheSize:   cfg.CacheSize(),
		OutageGrace: cfg.OutageGraceOption(),
		Redelivery:  cfg.RedeliveryOption(),
		HeldFile:    filepath.Join(cfg.DataDir, heldFileName),
		Observer:    &credentialsObserver{Observer: m, g: credentials},

		StrictRegistration:        cfg.StrictRegistration,
		MaxRegistrationsPerDomain: cfg.MaxRegistrationsPerDomain,
		AccountRegisterLimit:      *cfg.AccountRegisterLimit,
		RateLimitPerToken:         *cfg.RateLimitPerToken,
		MaxBlockedTokens:          *cfg.MaxBlockedTokens,
	}, logger)
	if err != nil {
		return err
	}
	// A reload's new backend, or a check that passed, tells the core,
	// which holds an app's pushes while its credentials are refused.
	credentials.setGate(svc)
	m.WatchCache(svc.CacheStats)
	m.WatchStatus(svc.StatusStats)
	m.WatchRedelivery(svc.RedeliveryStats, svc.RedeliveryDrops)

	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	var wg sync.WaitGroup
	wg.Go(func() { svc.Run(runCtx) })
	appNames := make([]string, 0, len(cfg.Apps))
	for n, a := range cfg.Apps {
		appNames = append(appNames, n)
		if a.Kind == config.KindAPNS {
			wg.Go(func() {
				// The certificate the app pushes with, not the file: one
				// renewed in place shows once a reload took it, and so
				// does one a reload put in place of a token key.
				sw := swaps[n]
				m.WatchExpiry(runCtx, "apps."+n+".cert_file", func() (time.Time, error) {
					if t, ok := sw.CertificateExpiry(); ok {
						return t, nil
					}
					return time.Time{}, metrics.ErrNoCertificate
				}, config.CertificateExpiryWarning, logger)
			})
		}
	}
	if cfg.HTTP.TLSListen != "" {
		wg.Go(func() {
			// The certificate served, not the file: one renewed in place
			// shows once a reload took it.
			m.WatchExpiry(runCtx, "http.tls_cert_file", tlsCert.Expiry, config.CertificateExpiryWarning, logger)
		})
	}
	wg.Go(func() { m.WatchRegistrations(runCtx, time.Minute, appNames, store.CountByType, logger) })
	if src, ok := store.(replicationSource); ok {
		wg.Go(func() { watchReplication(runCtx, src, replicationEvery, m.CommitsReplicated(), logger) })
	}

	// The components stop first on shutdown, and on their own context:
	// each serves what its XMPP server still sends until the stream is
	// closed, so the core must outlive them.
	compCtx, stopComponents := context.WithCancel(runCtx)
	defer stopComponents()
	var compWG sync.WaitGroup
	// Whoever stands by for a component (Prosody takes one connection per
	// component) hears at once when another process released it: another
	// instance on a shared registry, or the old process of an upgrade.
	handovers := []handover{up}
	if ho, ok := store.(handover); ok {
		handovers = append(handovers, ho)
	}
	// Pushes waiting for redelivery pass through the registry when a
	// process stops; the one that serves on takes them as soon as it
	// hears of it rather than at its next look (another instance's stop
	// or hand-over the core hears through the registry's change feed).
	// The old process may have reloaded a configuration changed after
	// this one read it (a SIGHUP while this process started): read it
	// again once the old one can take no more reloads.
	oldGone := make(chan struct{}, 1)
	up.OnOldProcessGone(func() {
		svc.TakeHeldSoon()
		oldGone <- struct{}{}
	})
	componentChecks, settled, refused, err := startComponents(compCtx, &compWG, cfg, svc, handovers, m, logger)
	if err != nil {
		stopComponents()
		compWG.Wait()
		cancel()
		wg.Wait()
		return err
	}

	registryChecks := registryCheck(runCtx, store)
	// The watchdog's check, for the live page: an orchestrator without
	// systemd sees a stuck server too.
	liveness := httpapi.StartLiveness(runCtx, httpapi.LivenessOptions{Every: livenessEvery, StuckAfter: livenessStuckAfter}, svc.Alive)
	checks := func() []httpapi.Check {
		return append(append(componentChecks(), appChecks...), registryChecks...)
	}
	handler := httpapi.New(httpapi.Options{
		Service:        svc,
		Registrations:  store,
		Debugging:      cfg.Debugging,
		Metrics:        mh,
		Checks:         checks,
		Stuck:          liveness.Stuck,
		Draining:       draining.Load,
		RegisterLimit:  *cfg.HTTP.RegisterLimit,
		TrustedProxies: proxies,
		Limited:        m.HTTPLimited,
		Panicked:       func() { m.Panicked("http") },
		TigaseDevices:  tigaseDevices(cfg, svc),
		Logger:         logger,
	})

	// From here on every request, on connections opened while the server
	// started too, gets the API.
	api.Set(handler)
	serving.Store(true)

	// tookOver: this process serves as the service's main one, from its
	// start or, started by an upgrade, once it took over.
	tookOver := false
	// Everything serves: systemd may now start what is ordered after us.
	// Whether the last reload failed: a reload that applied nothing, or
	// not all of its file, leaves the server on other settings than the
	// file's, which the status line and a metric say besides the log.
	var reloadFailed atomic.Bool
	m.WatchReload(func() bool { return !reloadFailed.Load() })
	notify := systemd.New(logger, func() string {
		status := serviceStatus(checks(), upgrade.BinaryReplaced())
		if reloadFailed.Load() {
			status += "; last reload failed, running on the earlier settings (see the log)"
		}
		return status
	})

	// upgrading: a new process is starting; upgrades gets the end of its
	// start (see upgrade.Process.Upgrade).
	upgrades := make(chan error, 1)
	upgrading := false
	// A reload runs beside the signal loop (see startReload), on
	// reloadCtx, which a stop ends: one under way gives up, and none
	// applies what it read once the server stops. The stop waits for it
	// (reloads), bounded by its grace.
	reloadCtx, stopReloads := context.WithCancel(runCtx)
	defer stopReloads()
	var reloads sync.WaitGroup
	// reloadsRunning counts the reloads started and not ended: a
	// WaitGroup cannot say, without waiting, that none is under way.
	var reloadsRunning atomic.Int32
	// shutdown ends the server and returns runErr, once what it took is
	// done: the pushes under way answered, their outcomes written. Every
	// end of serve from here goes through it, a new process that does not
	// take over too.
	shutdown := func(handedOver bool, runErr error) error {
		stopped := time.Now()
		stopReloads()
		switch {
		case handedOver:
			notify.HandOver()
		case up.Inherited() && !tookOver:
			// A new process that did not take over: the old one is the
			// service's main process, and STOPPING=1 from this one
			// would be taken for the service's.
			notify.HandOver()
		case upgrading:
			notify.Stopping()
			// Told to stop while a new process starts: it stops too,
			// as on SIGTERM, answering the publishes its components
			// took (ejabberd balances over both streams), rather than
			// be killed with them; it is killed only if it has not
			// ended within newProcessGrace (below).
			if err := up.StopNewProcess(); err != nil {
				logger.Error("cannot tell the new process to stop: it is killed", "err", err)
				up.Stop()
			}
		default:
			notify.Stopping()
			up.Stop()
		}
		// Shutting down loses no push: the components close their
		// streams (after answering the pushes under way) and still push
		// what their XMPP servers had sent them, while the HTTP
		// listeners stop taking connections and finish their requests.
		// Then the core answers anything that still arrives "try again
		// later" (never "cancel") and writes what it holds.
		stopComponents()
		sctx, scancel := context.WithTimeout(context.Background(), shutdownGrace)
		defer scancel()
		var shut sync.WaitGroup
		for _, srv := range hl.servers {
			shut.Go(func() { _ = srv.Shutdown(sctx) })
		}
		shut.Wait()
		compWG.Wait()
		// Before the core and the backends close: a reload swaps
		// backends in.
		joinReload(sctx, &reloads, &reloadsRunning, logger)
		svc.Drain()
		cancel()
		wg.Wait()
		_ = svc.Close()
		// Not after a hand-over: the upgrade's end then comes at once
		// (the new process serves), and is often still unread, since
		// the hand-over and the upgrade's end arrive together.
		if upgrading && !handedOver {
			wait := time.NewTimer(time.Until(stopped.Add(newProcessGrace)))
			select {
			case err := <-upgrades:
				if err == nil {
					// Ready just as the stop came: it heard of the stop
					// all the same, and stops on its own.
					logger.Info("the new process took over as this one stopped: it stops too")
				} else {
					logger.Info("the new process has stopped with this one", "detail", err)
				}
			case <-wait.C:
				logger.Warn("the new process has not stopped within the grace: killing it", "grace", newProcessGrace)
			}
			wait.Stop()
			up.Stop()
		}
		logger.Info("stopped")
		return runErr
	}

	if up.Inherited() {
		// The old process closes its component streams once this one is
		// ready: ejabberd must have ours by then, or it answers publishes
		// in between with an error that deletes push sessions.
		if !waitSettled(ctx, settled, settleTimeout) && ctx.Err() == nil {
			if jids := refused(); len(jids) > 0 {
				// A configuration the XMPP server refuses: taking over
				// would close the old process's working stream. What
				// the components took meanwhile (ejabberd balances
				// publishes over both streams) is finished and written
				// as at any stop.
				return shutdown(false, fmt.Errorf("upgrade: not taking over: the XMPP server refuses component %s (see the log)", strings.Join(jids, ", ")))
			}
			logger.Warn("taking over although not every component is connected or standing by", "waited", settleTimeout)
		}
		if ctx.Err() == nil {
			// Only now: until it takes over, the old process answers
			// every connection, and one told to stop before then (a
			// stop during the upgrade) leaves them all to the old one.
			hl.serve()
			notify.TakeOver()
			tookOver = true
		}
	} else {
		notify.Ready()
		tookOver = true
	}
	if tookOver && !up.Inherited() {
		sharedDataDir(cfg, logger)
	}
	if tookOver {
		// For the reload command, which finds this process by it.
		if held, err := writePIDFile(pidFile(cfg)); err != nil {
			logger.Warn("cannot write the PID file: the reload command needs -pid to find this process", "pid", os.Getpid(), "err", err)
		} else {
			defer removePIDFile(pidFile(cfg), held, logger)
		}
	}
	if !tookOver {
		// Told to stop before taking over: the old process serves on
		// (or stops too); this one neither says it is ready nor takes
		// the service over.
	} else if err := up.Ready(); err != nil {
		logger.Error("cannot tell the old process this one is ready", "err", err)
	}
	wg.Go(func() { notify.Follow(runCtx, statusInterval) })
	// Fed while the core's locks can be taken. Not the health checks:
	// they ask the registry, and a disk or database that hangs is an
	// outage the server rides out with its cache, not a reason to
	// restart it.
	wg.Go(func() { notify.Watchdog(runCtx, svc.Alive) })
	// A reload runs beside this loop: reading its files can hang (a
	// network mount that stops answering), and a stop or an upgrade
	// must still be taken meanwhile. A SIGHUP during a reload asks for
	// one more after it, since the file may have changed again since it
	// was read.
	reloaded := make(chan struct{}, 1)
	reloading, reloadAgain := false, false
	// quiet: a reload of this process's own (see oldGone), of which
	// systemd hears nothing, unless a SIGHUP comes meanwhile.
	quiet := false
	startReload := func() {
		reloading = true
		if !quiet {
			notify.Reloading()
		}
		reloadsRunning.Add(1)
		reloads.Go(func() {
			defer reloadsRunning.Add(-1)
			next, err := load(reloadCtx)
			if reloadCtx.Err() == nil {
				reloadFailed.Store(!reloader.Reload(reloadCtx, next, err).OK())
			}
			reloaded <- struct{}{}
		})
	}

	var runErr error
	handedOver := false
wait:
	for {
		select {
		case <-ctx.Done():
			logger.Info("shutting down: finishing what is under way (a second SIGINT or SIGTERM ends the process at once)")
			break wait
		case runErr = <-hl.errc:
			logger.Error("stopping", "err", runErr)
			break wait
		case <-oldGone:
			if reloading {
				reloadAgain = true
				continue
			}
			logger.Info("the old process has gone: reading the configuration again, which it may have reloaded since this process read it")
			quiet = true
			startReload()
		case <-sig.reload:
			if reloading {
				logger.Info("a reload is under way: the configuration is read again after it (SIGHUP)")
				if quiet {
					quiet = false
					notify.Reloading()
				}
				reloadAgain = true
				continue
			}
			logger.Info("reloading the configuration (SIGHUP)")
			startReload()
		case <-reloaded:
			reloading = false
			if reloadAgain {
				reloadAgain = false
				startReload()
				continue
			}
			// READY=1 after a reload of this process's own too, which
			// told systemd nothing: a SIGHUP the old process took just
			// before the hand-over told it RELOADING=1, which only this
			// ends.
			notify.Ready()
			if quiet {
				quiet = false
				continue
			}
			if upgrade.BinaryReplaced() {
				// A reload after installing a new binary applies the
				// configuration, not the binary.
				logger.Warn("the binary was replaced since this process started, and a reload does not run the new one: SIGUSR2 switches to it without a gap (systemctl kill -s USR2 --kill-whom=main push-appserver)")
			}
		case <-sig.upgrade:
			if upgrading {
				logger.Warn("upgrade (SIGUSR2) ignored: one is under way")
				continue
			}
			upgrading = true
			logger.Info("upgrade (SIGUSR2): starting a new process of the binary", "path", os.Args[0])
			go func() { upgrades <- up.Upgrade() }()
		case err := <-upgrades:
			// On success HandedOver is closed too; the next round of
			// the loop takes it.
			upgrading = false
			if err != nil {
				logger.Error("upgrade failed: this process serves on", "err", err)
			}
		case <-up.HandedOver():
			logger.Info("the new process is ready: handing over to it, finishing what is under way")
			handedOver = true
			break wait
		}
	}
	// Only a stop of the service waits: not a hand-over, whose new
	// process serves on the same sockets, nor a stop during an upgrade
	// or of a new process that has not taken over, which the upgrade
	// bounds, nor a listener that failed.
	if runErr == nil && !handedOver && tookOver && !upgrading && !stoppedWithOld.Load() && cfg.ShutdownDelay > 0 {
		notify.Stopping()
		runErr = delayShutdown(cfg.ShutdownDelay.D(), &draining, hl.errc, logger)
	}
	return shutdown(handedOver, runErr)
}

// delayShutdown answers the ready page 503 (draining) and serves
// everything else as usual for delay, or until a listener fails, whose
// error it returns. Kubernetes removes a stopping pod from its Service's
// endpoints at the moment it sends SIGTERM, and the proxies and load
// balancers that route to it learn of that seconds later: a server that
// closed its listeners at once refused the requests they sent it
// meanwhile. A second SIGTERM or SIGINT ends the process at once, as at
// any stop.
func delayShutdown(delay time.Duration, draining *atomic.Bool, errc <-chan error, logger *slog.Logger) error {
	draining.Store(true)
	logger.Info("stopping after shutdown_delay: the ready page answers 503 meanwhile, everything else is served", "delay", delay)
	t := time.NewTimer(delay)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case err := <-errc:
		logger.Error("stopping", "err", err)
		return err
	}
}

// joinReload waits, at a stop, for the reload under way, if any, until
// ctx ends: one that does not heed the stop (a read that cannot be
// interrupted) is left behind then, and applies nothing.
func joinReload(ctx context.Context, reloads *sync.WaitGroup, running *atomic.Int32, logger *slog.Logger) {
	// Asked of the count, not of a goroutine waiting on reloads: one
	// just started has not run yet, and a stop with no reload under way
	// would say it waits for one.
	if running.Load() == 0 {
		return
	}
	done := make(chan struct{})
	go func() {
		reloads.Wait()
		close(done)
	}()
	logger.Warn("waiting for the reload under way to end")
	select {
	case <-done:
	case <-ctx.Done():
		logger.Error("the reload under way did not end within the shutdown's grace: stopping without it")
	}
}

// The live page's check (see httpapi.Liveness) runs livenessEvery, and
// the server is stuck once one has waited livenessStuckAfter: the core's
// locks are held around work in memory alone, microseconds, so a wait of
// seconds is no load but a lock held for good. Behind a liveness probe
// that fails three times ten seconds apart, a stuck server is restarted
// within 30 to 40 s, about what the unit's WatchdogSec allows.
const (
	livenessEvery      = 5 * time.Second
	livenessStuckAfter = 10 * time.Second
)

// statusInterval is how often the status line systemd shows is brought
// up to date.
const statusInterval = 5 * time.Second

// serviceStatus is the status line systemd shows: the parts of the
// health page that are down, if any, and whether a new binary waits to be
// switched to (replaced: see upgrade.BinaryReplaced), which is what
// `systemctl status` after installing one should say.
func serviceStatus(checks []httpapi.Check, replaced bool) string {
	var down, readOnly []string
	for _, c := range checks {
		switch state, ok := c.State(); {
		case !ok:
			down = append(down, c.Name)
		case state == "read-only":
			readOnly = append(readOnly, c.Name)
		}
	}
	status := "serving"
	if len(down) > 0 {
		status += "; down: " + strings.Join(down, ", ")
	}
	if len(readOnly) > 0 {
		status += "; read-only: " + strings.Join(readOnly, ", ")
	}
	if replaced {
		status += "; a new binary is installed: SIGUSR2 switches to it"
	}
	return status
}

// The waits between attempts to reach PostgreSQL at start.
const (
	registryRetryBase = 500 * time.Millisecond
	registryRetryMax  = 10 * time.Second
)

// errStoppedStarting: the server was told to stop before its registry was
// open, as while it waited for PostgreSQL.
var errStoppedStarting = errors.New("stopped before the registry was open")

// waitForRegistry opens the registry, waiting while PostgreSQL cannot be
// reached (see postgres.Unreachable), with backoff, until ctx ends: a
// server started before its database, at boot or while the database
// restarts, starts once the database answers instead of exiting, and
// systemd does not give up on it after five quick failures. Each time it
// waits it tells waiting why, in one line (`systemctl status` and the
// health page show it); systemd's start timeout still bounds the wait.
func waitForRegistry(ctx context.Context, cfg *config.Config, logger *slog.Logger, waiting func(public, detail string)) (registry.Store, error) {
	wait := push.Backoff{Base: registryRetryBase, Max: registryRetryMax}
	for {
		// Each attempt's connection is bounded (postgres.Options
		// ConnectTimeout), its migrations not.
		store, err := openStore(ctx, cfg, logger)
		switch {
		case err == nil:
			return store, nil
		case ctx.Err() != nil:
			return nil, errStoppedStarting
		case !postgres.Unreachable(err):
			return nil, err
		}
		d := wait.Next()
		logger.Warn("PostgreSQL cannot be reached; waiting for it", "err", err, "retry_in", d.Round(time.Millisecond))
		// pgx's errors span lines, and systemd keeps a status line's
		// first. They name the user, database and address, never the
		// password (postgres.Open words a DSN it cannot parse itself):
		// for the log and systemd's status, not for the health page,
		// which anyone who can reach the API reads.
		waiting("waiting for PostgreSQL: "+postgres.UnreachableCause(err)+" (the log says more)",
			"waiting for PostgreSQL: "+strings.Join(strings.Fields(err.Error()), " "))
		select {
		case <-ctx.Done():
			return nil, errStoppedStarting
		case <-time.After(d):
		}
	}
}

// heldFileName is the file in data_dir that keeps the pushes waiting for
// redelivery at a stop when the registry refuses them, for the next start.
const heldFileName = "held-pushes.json"

// openStore opens the registry the config names.
func openStore(ctx context.Context, cfg *config.Config, logger *slog.Logger) (registry.Store, error) {
	if cfg.Database.Driver == "postgres" {
		dsn, err := config.ResolveSecret(cfg.Database.DSN)
		if err != nil {
			return nil, fmt.Errorf("database.dsn: %w", err)
		}
		return postgres.Open(ctx, dsn, postgres.Options{StatementTimeout: cfg.Database.StatementTimeout.D(), Password: dsnPassword(cfg.Database.DSN), Logger: logger})
	}
	// The registry holds every device's secret: a directory we create is
	// ours alone (the store creates its files 0600).
	if err := os.MkdirAll(filepath.Dir(cfg.Database.Path), 0o700); err != nil {
		return nil, fmt.Errorf("creating data directory: %w", err)
	}
	return sqlite.Open(ctx, cfg.Database.Path)
}

// dsnPassword reads the password of the DSN that setting (database.dsn)
// names anew, for every new connection to PostgreSQL: a password rotated
// in the DSN's file (file:...) is used from then on, without a restart.
// Only the password: the rest of the DSN changes after a restart, as
// every registry setting does.
func dsnPassword(setting string) func() (string, error) {
	return func() (string, error) {
		dsn, err := config.ResolveSecret(setting)
		if err != nil {
			return "", err
		}
		c, err := pgx.ParseConfig(dsn)
		if err != nil {
			// pgx's message may quote the DSN, password included.
			return "", errors.New("database.dsn: not a valid PostgreSQL connection string")
		}
		return c.Password, nil
	}
}

// pinger is a registry that can say whether it answers.
type pinger interface {
	Ping(ctx context.Context) error
}

// The health page's line for the registry comes from a ping every
// registryPingEvery, down when it does not answer within
// registryPingTimeout.
const (
	registryPingEvery   = 2 * time.Second
	registryPingTimeout = time.Second
)

// registryCheck is the health page's line for the registry, if it can be
// pinged, until ctx ends. It is not a condition of readiness. Every
// instance shares the registry, so all would be taken out of service
// together, and an instance that cannot read it still pushes to the
// devices it cached (see appserver).
func registryCheck(ctx context.Context, store any) []httpapi.Check {
	p, ok := store.(pinger)
	if !ok {
		return nil
	}
	probe := httpapi.StartProbe(ctx, registryPingEvery, registryPingTimeout, p.Ping)
	// A registry that refuses writes fails every registration while
	// pushes go on: neither up nor down.
	readOnly := func() bool { return errors.Is(probe.Err(), registry.ErrReadOnly) }
	return []httpapi.Check{{Name: "registry", HealthOnly: true, OK: probe.OK, ReadOnly: readOnly}}
}

// replicationSource is a registry that can say whether what it commits
// survives a crash and a failover (PostgreSQL's).
type replicationSource interface {
	Replication(ctx context.Context) (postgres.Replication, error)
}

// replicationEvery is how often the server asks PostgreSQL again
// whether its commits wait for a standby: a failover moves the pool to
// another server, and a DBA adds a standby or changes the settings,
// without a word to us. One small query a minute.
const replicationEvery = time.Minute

// watchReplication asks src every interval, from the start until ctx
// ends, whether a registration answered OK survives a crash and a
// failover, sets the gauge (see metrics.CommitsReplicated) and logs
// what it found at the start and whenever it changes: the risks at
// warn, each naming the settings that remove it. A check that fails is
// said at warn once until one succeeds again.
func watchReplication(ctx context.Context, src replicationSource, interval time.Duration, set func(int), logger *slog.Logger) {
	var said string // what was logged last
	failing := false
	check := func() {
		cctx, cancel := context.WithTimeout(ctx, interval)
		defer cancel()
		r, err := src.Replication(cctx)
		if err != nil {
			if !failing && ctx.Err() == nil {
				logger.Warn("could not tell whether the registry's commits survive a crash and reach PostgreSQL's standbys; asking again every minute", "err", err)
			}
			failing = true
			return
		}
		failing = false
		set(r.Replicated())
		risks := r.Risks()
		now := fmt.Sprint(r.Replicated(), r.Standbys, risks)
		if now == said {
			return
		}
		said = now
		for _, risk := range risks {
			logger.Warn("registry: " + risk)
		}
		// Last, so that a reader of the log who finds it has the
		// warnings of the same check before it.
		logger.Info("registry replication", "standbys", r.Standbys, "commits_replicated", r.Replicated(),
			"synchronous_standby_names", r.StandbyNames, "synchronous_commit", r.SyncCommit)
	}
	check()
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			check()
		}
	}
}

// appBreaker is an app's misconfiguration breaker, for health and
// metrics, and a WebPush app's guard of its 404 and 410 answers.
type appBreaker struct {
	app     string
	breaker *push.Breaker
	gone    *webpush.GoneGuard
}

// buildApps makes one backend per configured app, and a breaker for each
// backend that talks to a push service; webPush bounds the WebPush apps.
func buildApps(ctx context.Context, cfg *config.Config, webPush webPushLimits, logger *slog.Logger) ([]appserver.App, []appBreaker, error) {
	names := make([]string, 0, len(cfg.Apps))
	for n := range cfg.Apps {
		names = append(names, n)
	}
	sort.Strings(names)
	var apps []appserver.App
	var breakers []appBreaker
	for _, name := range names {
		a := cfg.Apps[name]
		prio, err := push.ParsePriority(a.Priority)
		if err != nil {
			return nil, nil, fmt.Errorf("apps.%s: %w", name, err)
		}
		l := logger.With("app", name)
		attrs := []any{"app", name, "kind", a.Kind, "priority", prio}
		var b push.Backend
		var deadline time.Duration
		switch a.Kind {
		case config.KindLog:
			b = logpush.New(l)
		default:
			deadline = a.PushDeadline.D()
			br := push.NewBreaker(name, push.BreakerOptions{}, logger)
			var gone *webpush.GoneGuard
			if a.Kind == config.KindWebPush {
				gone = webpush.NewGoneGuard(name, webpush.GoneOptions{}, logger)
			}
			b, err = newBackend(ctx, name, a, br, gone, webPush, l)
			if err != nil {
				return nil, nil, fmt.Errorf("apps.%s: %w", name, err)
			}
			breakers = append(breakers, appBreaker{app: name, breaker: br, gone: gone})
		}
		if a.Kind == config.KindAPNS {
			attrs = append(attrs, "environment", apns.Environment(*a.Sandbox, a.Endpoint))
		}
		if a.Kind == config.KindLog {
			// The quick start's apps, and a file's that defines none:
			// their devices' pushes are answered OK and go nowhere.
			logger.Warn("app configured", append(attrs, "delivers", "nowhere: its pushes are only logged")...)
		} else {
			logger.Info("app configured", attrs...)
		}
		apps = append(apps, appserver.App{Name: name, Priority: prio, Backend: b, Deadline: deadline})
	}
	return apps, breakers, nil
}

// httpListeners are the HTTP listeners, bound before they serve (see
// serve).
type httpListeners struct {
	listen func(addr string) (net.Listener, error)
	conns  *httpapi.ConnLimit // the API's; see httpapi.LimitListener
	// writeTimeout bounds a request from its header to its answer: long
	// enough for the longest push push_timeout allows (httpapi.WriteTimeout).
	writeTimeout time.Duration
	logger       *slog.Logger
	servers      []*http.Server
	pending      []func()       // each starts one bound server
	unused       []net.Listener // those of pending
	// errc gets the error of a server that stopped serving on its own.
	errc chan error
}

// bind listens on addr for handler, with TLS when tlsConfig is set,
// holding its connections to the slots of conns; the server serves from
// serve on.
func (h *httpListeners) bind(what, addr string, handler http.Handler, tlsConfig *tls.Config, conns *httpapi.ConnLimit) error {
	l, err := h.listen(addr)
	if err != nil {
		return fmt.Errorf("listening on %s: %w", addr, err)
	}
	ln := httpapi.LimitListener(sockio.Listener{Listener: l}, conns)
	srv := httpapi.NewServer(addr, handler, h.logger)
	if h.writeTimeout > 0 {
		srv.WriteTimeout = h.writeTimeout
	}
	srv.TLSConfig = tlsConfig
	h.servers = append(h.servers, srv)
	h.logger.Info(what+" listening", "addr", ln.Addr().String(), "tls", tlsConfig != nil)
	h.unused = append(h.unused, ln)
	h.pending = append(h.pending, func() {
		var err error
		if tlsConfig != nil {
			err = srv.ServeTLS(ln, "", "")
		} else {
			err = srv.Serve(ln)
		}
		if !errors.Is(err, http.ErrServerClosed) {
			h.errc <- fmt.Errorf("HTTP server on %s: %w", addr, err)
		}
	})
	return nil
}

// serve starts serving on every listener bound so far.
func (h *httpListeners) serve() {
	for _, run := range h.pending {
		go run()
	}
	h.pending, h.unused = nil, nil
}

// close closes the listeners and their connections at once, as when the
// start fails; after a graceful Shutdown it ends what the grace left.
func (h *httpListeners) close() {
	for _, srv := range h.servers {
		_ = srv.Close()
	}
	// A server knows its listener only once it serves.
	for _, ln := range h.unused {
		_ = ln.Close()
	}
}

func startPprof(addr string, listen func(addr string) (net.Listener, error), logger *slog.Logger) (*http.Server, error) {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	ln, err := listen(addr)
	if err != nil {
		return nil, fmt.Errorf("pprof listener: %w", err)
	}
	// No WriteTimeout: a CPU profile or trace streams for as long as
	// asked. Idle connections go, as on every listener.
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 10 * time.Second, IdleTimeout: 90 * time.Second}
	logger.Warn("pprof enabled", "addr", ln.Addr().String())
	go srv.Serve(ln)
	return srv, nil
}

// tigaseDevices is, by component JID in lower case, what serves Siskin's
// unregistration over HTTP for the components with Tigase's commands on:
// their providers and domains, as their register-device has them.
func tigaseDevices(cfg *config.Config, svc *appserver.Service) map[string]httpapi.TigaseDevices {
	devices := map[string]httpapi.TigaseDevices{}
	for _, cc := range cfg.Components {
		if len(cc.TigaseProviders) == 0 {
			continue
		}
		devices[strings.ToLower(cc.JID)] = adhoc.New(svc, adhoc.Options{TigaseProviders: cc.TigaseProviders, Domains: cc.Domains})
	}
	return devices
}
