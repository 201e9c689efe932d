package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/push-appserver/push-appserver/internal/appserver"
	"github.com/push-appserver/push-appserver/internal/config"
	"github.com/push-appserver/push-appserver/internal/httpapi"
	"github.com/push-appserver/push-appserver/internal/metrics"
	"github.com/push-appserver/push-appserver/internal/push"
	"github.com/push-appserver/push-appserver/internal/push/apns"
	"github.com/push-appserver/push-appserver/internal/push/fcm"
	"github.com/push-appserver/push-appserver/internal/push/webpush"
	"github.com/push-appserver/push-appserver/internal/xmpp/adhoc"
	"github.com/push-appserver/push-appserver/internal/xmpp/component"
)

// warmer is a backend that can connect to its push service before its
// first push (apns.Backend.Warm, fcm.Backend.Warm).
type warmer interface {
	Warm(ctx context.Context) error
}

// credentialsChecker is a backend that can ask its push service whether
// it takes the app's credentials, delivering nothing
// (apns.Backend.CheckCredentials, fcm.Backend.CheckCredentials).
type credentialsChecker interface {
	CheckCredentials(ctx context.Context) error
}

// warmTimeout bounds a backend's warm-up: a dial's own bound, and an
// access token's fetch. It bounds the credentials check after it too.
const warmTimeout = 15 * time.Second

// warmSlots bounds the warm-ups under way at once (maxWarmups): a server
// of many apps would otherwise dial every push service, and fetch every
// FCM access token, in one burst at its start, and services and egress
// proxies that bound new connections refuse part of such a burst.
type warmSlots chan struct{}

// maxWarmups is how many apps warm up at once. Each takes a few round
// trips: 500 apps 100 ms away warm up in about 7 s, while pushes that
// come first connect as they always do.
const maxWarmups = 8

// warm connects b to its push service in the background, and says in the
// log whether that worked: after a start or a reload the first push then
// finds its connection up, and a service the server cannot reach (the
// network, a proxy, a client certificate refused) shows in the log at
// once, not at the first push. Then it checks the app's credentials with
// the service, which reaching it does not prove (an APNS key of another
// team, a wrong topic, an FCM project the service account may not send
// to), and records the outcome in g as app's. It waits for one of slots
// first.
func warm(ctx context.Context, slots warmSlots, app string, b push.Backend, g *credentialsGauge, logger *slog.Logger) {
	w, ok := b.(warmer)
	if !ok {
		return
	}
	c, check := b.(credentialsChecker)
	var report func(metrics.Credentials) bool
	if check {
		report = g.start(app)
		// A backend built or kept by a reload: while the app's pushes
		// are held for a refusal of its credentials, one tries them
		// now rather than at its turn of the backoff.
		g.changed(app)
	}
	go func() {
		select {
		case slots <- struct{}{}:
			defer func() { <-slots }()
		case <-ctx.Done():
			return
		}
		wctx, cancel := context.WithTimeout(ctx, warmTimeout)
		defer cancel()
		start := time.Now()
		err := w.Warm(wctx)
		var refused *push.CredentialsRefusedError
		switch {
		case check && errors.As(err, &refused):
			// Google refused the FCM service account's key: FCM
			// need not be asked.
		case err != nil && ctx.Err() != nil:
			// The server stops (or the reload that started the check
			// does): the check was cut short, which says nothing of
			// the push service.
			logger.Debug("push service check ended by the stop", "err", err)
			return
		case err != nil:
			logger.Warn("push service not reachable yet; each push tries again", "err", err)
			return
		default:
			logger.Info("push service reachable", "took", time.Since(start).Round(time.Millisecond))
			if !check {
				return
			}
			cctx, cancel := context.WithTimeout(ctx, warmTimeout)
			defer cancel()
			err = c.CheckCredentials(cctx)
		}
		switch {
		case err == nil:
			if report(metrics.CredentialsAccepted) {
				logger.Info("push service accepted our credentials")
				g.accepted(app)
			}
		case errors.As(err, &refused):
			if report(metrics.CredentialsRefused) {
				logger.Error("push service refused our credentials; every push of the app fails until the configuration is fixed and reloaded",
					"reason", refused.Reason, "check", refused.Check)
			}
		default:
			// A check the stop cut short says nothing of the
			// credentials either.
			if report(metrics.CredentialsUnknown) && ctx.Err() == nil {
				logger.Warn("could not check our credentials with the push service; pushes will tell", "err", err)
			}
		}
	}()
}

// credentialsGauge passes the outcome of each app's latest credentials
// check to the metrics: a reload may start a check of the new backend
// while the old one's is under way, and the old one's outcome, which
// may come last, says nothing of the configuration running. A push the
// app's service took is proof too (tookPush): a refusal that passed by
// itself (a clock set right after boot, a role granted at Google's)
// does not leave the gauge at 0, and its alert firing, until a reload.
type credentialsGauge struct {
	m      *metrics.Metrics
	logger *slog.Logger
	// open counts the apps checked whose last outcome is not an
	// acceptance: while it is 0, a push costs the gauge one atomic load.
	open   atomic.Int32
	mu     sync.Mutex
	checks map[string]int // how many checks of each app started
	lasts  map[string]metrics.Credentials
	// since is when each app's latest check started: a push that began
	// before it may have gone through the backend a reload replaced.
	since map[string]time.Time
	// gate is the core's, told of each check that starts and each that
	// passed; nil until the core is made (the start's checks begin
	// before it, while no app's pushes can be held).
	gate credentialsGate
}

// credentialsGate holds an app's pushes while its push service refuses
// the app's credentials (appserver.Service).
type credentialsGate interface {
	CredentialsChanged(app string)
	CredentialsAccepted(app string)
}

// setGate makes gate the one told of app's checks.
func (g *credentialsGauge) setGate(gate credentialsGate) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.gate = gate
}

func (g *credentialsGauge) gateOf() credentialsGate {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.gate
}

// changed tells the gate that app's credentials are being checked again:
// a reload may have changed them.
func (g *credentialsGauge) changed(app string) {
	if gate := g.gateOf(); gate != nil {
		gate.CredentialsChanged(app)
	}
}

// accepted tells the gate that the latest check of app's credentials
// passed.
func (g *credentialsGauge) accepted(app string) {
	if gate := g.gateOf(); gate != nil {
		gate.CredentialsAccepted(app)
	}
}

// last is app's latest recorded outcome (CredentialsUnknown before any).
func (g *credentialsGauge) last(app string) metrics.Credentials {
	g.mu.Lock()
	defer g.mu.Unlock()
	if c, ok := g.lasts[app]; ok {
		return c
	}
	return metrics.CredentialsUnknown
}

// set records c as app's outcome; g.mu is held.
func (g *credentialsGauge) set(app string, c metrics.Credentials) {
	if g.lasts == nil {
		g.lasts = map[string]metrics.Credentials{}
	}
	before, seen := g.lasts[app]
	wasOpen, isOpen := seen && before != metrics.CredentialsAccepted, c != metrics.CredentialsAccepted
	switch {
	case isOpen && !wasOpen:
		g.open.Add(1)
	case !isOpen && wasOpen:
		g.open.Add(-1)
	}
	g.lasts[app] = c
	g.m.AppCredentials(app, c)
}

// start marks app's credentials as not known, and returns the function
// that records a check's outcome, and reports whether it did: not once a
// later check of app started, or a push of it was taken.
func (g *credentialsGauge) start(app string) func(metrics.Credentials) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.checks == nil {
		g.checks = map[string]int{}
	}
	g.checks[app]++
	n := g.checks[app]
	if g.since == nil {
		g.since = map[string]time.Time{}
	}
	g.since[app] = time.Now()
	g.set(app, metrics.CredentialsUnknown)
	return func(c metrics.Credentials) bool {
		g.mu.Lock()
		defer g.mu.Unlock()
		if g.checks[app] != n {
			return false
		}
		g.set(app, c)
		return true
	}
}

// tookPush records that app's push service took one of its pushes: it
// takes the app's credentials, whatever a check said before.
func (g *credentialsGauge) tookPush(app string, took time.Duration) {
	if g.open.Load() == 0 {
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	c, ok := g.lasts[app]
	if !ok || c == metrics.CredentialsAccepted || time.Now().Add(-took).Before(g.since[app]) {
		return
	}
	// A check under way says no more than this push did.
	g.checks[app]++
	g.set(app, metrics.CredentialsAccepted)
	if c == metrics.CredentialsRefused {
		g.logger.Info("push service took a push of the app: it accepts our credentials now", "app", app)
	}
}

// refusedPush records that app's push service refused one of its pushes
// for the app's credentials: a key revoked or mistyped since the last
// check, which said it took them.
func (g *credentialsGauge) refusedPush(app string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if c, ok := g.lasts[app]; ok && c == metrics.CredentialsRefused {
		return
	}
	// A check under way says no more than this push did.
	if g.checks == nil {
		g.checks = map[string]int{}
	}
	g.checks[app]++
	if g.since == nil {
		g.since = map[string]time.Time{}
	}
	g.since[app] = time.Now()
	g.set(app, metrics.CredentialsRefused)
	g.logger.Warn("push service refused our credentials for a push of the app: every push of it fails, and waits for redelivery, until the configuration is mended", "app", app)
}

// credentialsObserver is the metrics' observer of the core, telling g of
// each push a push service took, or refused for the app's credentials.
type credentialsObserver struct {
	appserver.Observer
	g *credentialsGauge
}

func (o *credentialsObserver) CredentialsRefused(app string) { o.g.refusedPush(app) }

func (o *credentialsObserver) CredentialsTaken(app string, d time.Duration) { o.g.tookPush(app, d) }

func (o *credentialsObserver) Pushed(app string, outcome appserver.Outcome, d time.Duration) {
	o.Observer.Pushed(app, outcome, d)
	if outcome == appserver.OutcomeSuccess {
		o.g.tookPush(app, d)
	}
}

// newBackend builds the push backend for an app of kind apns, fcm or
// webpush; br judges its answers that may mean a misconfigured app, and
// gone a WebPush app's 404 and 410 answers (a private guard when nil).
// wp bounds the WebPush apps' connections and pushes under way.
func newBackend(ctx context.Context, name string, a *config.App, br *push.Breaker, gone *webpush.GoneGuard, wp webPushLimits, logger *slog.Logger) (push.Backend, error) {
	switch a.Kind {
	case config.KindAPNS:
		password, err := config.ResolveSecret(a.KeyPassword)
		if err != nil {
			return nil, fmt.Errorf("key_password: %w", err)
		}
		return apns.New(apns.Options{
			Topic:          a.Topic,
			Sandbox:        *a.Sandbox,
			Endpoint:       a.Endpoint,
			CAPath:         a.CAPath,
			CertFile:       a.CertFile,
			KeyFile:        a.KeyFile,
			PKCS12File:     a.PKCS12File,
			KeyPassword:    password,
			TokenKeyFile:   a.TokenKeyFile,
			KeyID:          a.KeyID,
			TeamID:         a.TeamID,
			AlertTitle:     a.AlertTitle,
			AlertBody:      a.AlertBody,
			Sound:          a.Sound,
			TTL:            a.TTL.D(),
			MutableContent: *a.MutableContent,
			Collapse:       *a.Collapse,
			IncludeSummary: a.IncludeSummary,
			PushDeadline:   a.PushDeadline.D(),
			Breaker:        br,
		}, logger)
	case config.KindFCM:
		return fcm.New(fcm.Options{
			ServiceAccountFile: a.ServiceAccountFile,
			ProjectID:          a.ProjectID,
			Endpoint:           a.Endpoint,
			TokenURL:           a.TokenURL,
			CAPath:             a.CAPath,
			Priority:           a.AndroidPriority,
			TTL:                a.TTL.D(),
			CollapseKey:        a.CollapseKey,
			NotificationTitle:  a.NotificationTitle,
			NotificationBody:   a.NotificationBody,
			IncludeSummary:     a.IncludeSummary,
			PushDeadline:       a.PushDeadline.D(),
			Breaker:            br,
		}, logger)
	case config.KindWebPush:
		return webpush.New(webpush.Options{
			VAPIDKeyFile:   a.VAPIDKeyFile,
			VAPIDSubject:   a.VAPIDSubject,
			TTL:            a.TTL.D(),
			Collapse:       *a.Collapse,
			IncludeSummary: a.IncludeSummary,
			PushDeadline:   a.PushDeadline.D(),
			CAPath:         a.CAPath,
			Breaker:        br,
			Gone:           gone,
			MaxConnections: min(webpush.DefaultMaxConnections, wp.conns),
			Shared:         wp.shared,
			Guard: webpush.Guard{
				AllowPrivate: a.AllowPrivateEndpoints,
				Ports:        a.EndpointPorts,
				Hosts:        a.EndpointHosts,
			},
		}, logger)
	}
	return nil, fmt.Errorf("unknown kind %q", a.Kind)
}

// webPushBound is how many connections to push services each WebPush
// app of cfg may have: half of reserve, the descriptors the HTTP listeners leave the process
// (httpapi.DescriptorReserve), shared between them. Subscriptions choose
// their push service, and anyone can subscribe at many origins of their
// own: with webpush's default of 1,024 under a limit of 1,024
// descriptors, about 250 origins took every descriptor the APNS and FCM
// dials, the registry and the component needed, for as long as the idle
// connections stayed (5 minutes). At most webpush's defaults apply.
func webPushBound(cfg *config.Config, reserve int) int {
	apps := 0
	for _, a := range cfg.Apps {
		if a.Kind == config.KindWebPush {
			apps++
		}
	}
	return max(reserve/2/max(apps, 1), 1)
}

// webPushLimits bound the WebPush apps' share of the process's
// descriptors. The zero value leaves webpush's defaults, for a one-off
// command.
type webPushLimits struct {
	// conns is each app's connections to push services (webPushBound).
	conns int
	// shared bounds the pushes under way of all the apps together, each
	// of which may hold a descriptor, to half the reserve: a share of
	// its own for each app would refuse one app's burst while the
	// others, idle, hold nothing.
	shared *webpush.SharedBound
}

// newWebPushLimits are the limits for cfg's WebPush apps within reserve,
// the descriptors the HTTP listeners leave the process.
func newWebPushLimits(cfg *config.Config, reserve int) webPushLimits {
	return webPushLimits{conns: webPushBound(cfg, reserve), shared: webpush.NewSharedBound(max(reserve/2, 1))}
}

// handover is what a process standing by for a component (Prosody takes
// one connection per component) hears from the one that serves it: the
// other instances on a shared registry, or the old process of an upgrade.
// The process that closes its connection for a component says so, and
// the one standing by connects at once instead of at its next retry.
type handover interface {
	ReleaseComponent(ctx context.Context, jid string) error
	OnComponentReleased(fn func(jid string))
}

// startComponents connects every configured XMPP component. It returns
// the health checks for them, and a function that reports whether every
// component is connected or standing by for another process's connection.
func startComponents(ctx context.Context, wg *sync.WaitGroup, cfg *config.Config, svc *appserver.Service, handovers []handover, m *metrics.Metrics, logger *slog.Logger) (func() []httpapi.Check, func() bool, func() []string, error) {
	var checks []httpapi.Check
	var conns []*component.Conn
	peers := &component.Peers{}
	retry := map[string]chan struct{}{}
	for _, cc := range cfg.Components {
		retry[cc.JID] = make(chan struct{}, 1)
	}
	for _, ho := range handovers {
		ho.OnComponentReleased(func(jid string) {
			select {
			case retry[jid] <- struct{}{}:
			default: // already pending, or not one of ours (a nil channel)
			}
		})
	}
	for _, cc := range cfg.Components {
		secret, err := config.ResolveSecret(cc.Secret)
		if err != nil {
			return nil, nil, nil, fmt.Errorf("component %s: %w", cc.JID, err)
		}
		jid := cc.JID
		m.ComponentState(jid, false)
		conn := component.New(component.Options{
			Addr:   cc.Address,
			JID:    jid,
			Secret: secret,
			Commands: adhoc.Options{
				V1:         *cc.V1Commands,
				DefaultApp: cc.DefaultApp,
				FCMApp:     *cc.FCMCommandApp,
				APNSApp:    *cc.APNSCommandApp,
				WebPushApp: cc.WebPushCommandApp,

				TigaseProviders: cc.TigaseProviders,
				MaxPayloadSize:  cc.TigaseMaxPayloadSize,
				Domains:         cc.Domains,
			},
			Dialects: component.Dialects{
				Tokenless:            cc.Tokenless,
				TokenlessApp:         cc.TokenlessApp,
				PublishOptionsTokens: cc.PublishOptionsTokens,
				PublishOptionsApps:   cc.PublishOptionsApps,
			},
			MaxInFlight: cc.MaxInFlight,
			KeepAlive:   time.Duration(cc.KeepAlive),
			Peers:       peers,
			OnState: func(up bool) {
				m.ComponentState(jid, up)
				if !up {
					m.ComponentDisconnected(jid)
				}
			},
			OnPanic: func() { m.Panicked("component") },
			Retry:   retry[jid],
			Released: func() {
				rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
				defer cancel()
				for _, ho := range handovers {
					if err := ho.ReleaseComponent(rctx, jid); err != nil {
						logger.Warn("could not tell the processes standing by that this one released the component", "component", jid, "err", err)
					}
				}
			},
			Logger: logger,
		}, svc)
		wg.Go(func() { conn.Run(ctx) })
		conns = append(conns, conn)
		checks = append(checks, httpapi.Check{Name: "component " + jid, OK: conn.Connected, StandingBy: conn.StandingBy})
	}
	settled := func() bool {
		for _, c := range conns {
			if !c.Connected() && !c.StandingBy() {
				return false
			}
		}
		return true
	}
	// The components whose XMPP server refused their last handshake for
	// our configuration (a wrong secret, a JID it does not have).
	refused := func() []string {
		var jids []string
		for i, c := range conns {
			if c.Refused() {
				jids = append(jids, cfg.Components[i].JID)
			}
		}
		return jids
	}
	return func() []httpapi.Check { return checks }, settled, refused, nil
}

// waitSettled waits until settled reports true, for at most timeout, and
// reports whether it did.
func waitSettled(ctx context.Context, settled func() bool, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for !settled() {
		if time.Now().After(deadline) || ctx.Err() != nil {
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
	return true
}

// appFingerprints sums up, for each app, what its backend reads besides
// its options: the contents of its key, certificate and service-account
// files, those of its CA directory, and its key password as resolved. A
// file that cannot be read makes a fingerprint of its own, so the reload
// tries the app again and says why it cannot. A CA directory is read
// once however many apps name it: hundreds of apps on /etc/ssl/certs
// would otherwise read its files hundreds of times at every reload.
func appFingerprints(apps map[string]*config.App) map[string]string {
	cas := map[string][]byte{}
	prints := make(map[string]string, len(apps))
	for n, a := range apps {
		h := sha256.New()
		for _, f := range []string{a.CertFile, a.KeyFile, a.PKCS12File, a.TokenKeyFile, a.ServiceAccountFile, a.VAPIDKeyFile} {
			b, err := os.ReadFile(f)
			fmt.Fprintf(h, "%q %d %v\n", f, len(b), err)
			h.Write(b)
		}
		if a.CAPath != "" {
			sum, ok := cas[a.CAPath]
			if !ok {
				sum = caDirSum(a.CAPath)
				cas[a.CAPath] = sum
			}
			fmt.Fprintf(h, "ca %q %x\n", a.CAPath, sum)
		}
		pw, err := config.ResolveSecret(a.KeyPassword)
		fmt.Fprintf(h, "pw %d %v\n", len(pw), err)
		h.Write([]byte(pw))
		prints[n] = hex.EncodeToString(h.Sum(nil))
	}
	return prints
}

// caDirSum sums up the certificates of dir as h2client.LoadCAs reads
// them: its regular files, by name and contents.
func caDirSum(dir string) []byte {
	h := sha256.New()
	entries, err := os.ReadDir(dir)
	fmt.Fprintf(h, "%v\n", err)
	for _, e := range entries {
		p := filepath.Join(dir, e.Name())
		if st, err := os.Stat(p); err != nil || !st.Mode().IsRegular() {
			continue
		}
		if b, err := os.ReadFile(p); err == nil {
			fmt.Fprintf(h, "%q %d\n", e.Name(), len(b))
			h.Write(b)
		}
	}
	return h.Sum(nil)
}
