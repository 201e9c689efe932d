// Package metrics owns the Prometheus metrics of the app server: what the
// core counts (registrations, pushes by app and outcome, push latency) and
// the state of the XMPP component connections. It keeps its own registry
// rather than the global default one, so tests and several servers in one
// process never collide.
package metrics

import (
	"maps"
	"net/http"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/push-appserver/push-appserver/internal/appserver"
)

// Metrics implements appserver.Observer and serves /metrics.
type Metrics struct {
	reg           *prometheus.Registry
	registrations *prometheus.CounterVec
	unregistered  *prometheus.CounterVec
	pushes        *prometheus.CounterVec
	latency       *prometheus.HistogramVec
	components    *prometheus.GaugeVec
	credentials   *prometheus.GaugeVec
	rejections    *prometheus.CounterVec
	regFailures   *prometheus.CounterVec
	disconnects   *prometheus.CounterVec
	httpLimited   *prometheus.CounterVec
	connRefused   *prometheus.CounterVec
	panics        *prometheus.CounterVec

	// pushed holds the counter and histogram of each app and outcome
	// seen, copied on write: WithLabelValues hashes the labels and
	// looks them up under a lock on every call, which on every push
	// was a visible cost.
	pushedMu sync.Mutex
	pushed   atomic.Pointer[map[pushKey]pushSeries]

	scrapes *scrapes
}

type pushKey struct {
	app     string
	outcome appserver.Outcome
}

type pushSeries struct {
	count   prometheus.Counter
	latency prometheus.Observer
}

var _ appserver.Observer = (*Metrics)(nil)

// New returns metrics registered in a fresh registry, with the Go runtime
// and process collectors.
func New() *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		registrations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "push_appserver_registrations_total",
			Help: "Device registrations, by app and whether an existing one was renewed.",
		}, []string{"app", "renewed"}),
		unregistered: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "push_appserver_unregistrations_total",
			Help: "Removed registrations, by app and reason (request, dead_token).",
		}, []string{"app", "reason"}),
		pushes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "push_appserver_pushes_total",
			Help: "Push requests, by app and outcome (success, not_found, throttled (rate_limit), throttled_device (rate_limit_per_token), dead_token, too_large, failed).",
		}, []string{"app", "outcome"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "push_appserver_push_duration_seconds",
			Help:    "Time from a push request to the push service's answer, by app and outcome.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"app", "outcome"}),
		components: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "push_appserver_component_connected",
			Help: "1 while the XMPP component connection for the JID is established.",
		}, []string{"jid"}),
		credentials: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "push_appserver_app_credentials_accepted",
			Help: "Whether the app's push service accepted its credentials (APNS: key or certificate, and topic; FCM: service account and project) when the server last checked them, at start or reload, or as its latest pushes found them: 1 accepted, 0 refused (every push of the app fails), -1 not known (not checked yet, the service not reachable, or its answer told nothing). APNS and FCM apps only.",
		}, []string{"app"}),
	}
	m.rejections = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "push_appserver_push_rejections_total",
		Help: "Push requests refused before any push service was asked, by reason: not_found (unknown node or wrong secret, one reason on purpose) or malformed.",
	}, []string{"reason"})
	for _, r := range []appserver.RejectReason{appserver.RejectNotFound, appserver.RejectMalformed} {
		m.rejections.WithLabelValues(string(r))
	}
	m.regFailures = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "push_appserver_registration_failures_total",
		Help: "Registrations that stored nothing, by reason: invalid (a value missing or malformed, an unknown app, a token the app refuses), forbidden, quota (max_registrations_per_domain), limited (account_register_limit), or error (the registry could not be written: alert on this one); and unconfirmed, registrations and unregistrations stored but answered as failed because this instance's change feed went down before the other instances confirmed them (PostgreSQL crashed or restarted).",
	}, []string{"reason"})
	for _, r := range []appserver.RegistrationFailure{appserver.RegistrationInvalid, appserver.RegistrationForbidden, appserver.RegistrationQuota, appserver.RegistrationLimited, appserver.RegistrationError, appserver.RegistrationUnconfirmed} {
		m.regFailures.WithLabelValues(string(r))
	}
	m.disconnects = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "push_appserver_component_disconnects_total",
		Help: "Times the XMPP component connection for the JID ended, a shutdown's included: broken by the server, a write that stalled, a ping the server did not answer. The log's \"component connection lost\" lines say why.",
	}, []string{"jid"})
	m.httpLimited = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "push_appserver_http_limited_total",
		Help: "HTTP registrations and unregistrations refused because their client address made more than http.register_limit a minute, by endpoint.",
	}, []string{"endpoint"})
	for _, e := range []string{"register", "unregister"} {
		m.httpLimited.WithLabelValues(e)
	}
	m.connRefused = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "push_appserver_http_connections_refused_total",
		Help: "Connections to the HTTP listeners closed as soon as accepted, by limit: descriptors (the listeners held every connection the descriptor limit leaves them, or an accept failed for want of a descriptor) or per_client (the client address, an IPv6 client's /64, held http.max_connections_per_client).",
	}, []string{"limit"})
	for _, l := range []string{"descriptors", "per_client"} {
		m.connRefused.WithLabelValues(l)
	}
	m.panics = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "push_appserver_panics_total",
		Help: "Panics recovered instead of ending the process, by where: push_service (an app's client of its push service; the push failed, or every push on the connection whose read loop panicked), component (handling an IQ; answered wait), http (handling a request; answered 500). Each is a bug: the log has its stack.",
	}, []string{"where"})
	for _, w := range []string{"push_service", "component", "http"} {
		m.panics.WithLabelValues(w)
	}
	m.reg.MustRegister(m.registrations, m.unregistered, m.pushes, m.latency, m.components, m.credentials, m.rejections, m.regFailures, m.disconnects, m.httpLimited, m.connRefused, m.panics,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m.scrapes = newScrapes(promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{}))
	return m
}

// Registered counts a registration.
func (m *Metrics) Registered(app string, renewed bool) {
	r := "false"
	if renewed {
		r = "true"
	}
	m.registrations.WithLabelValues(app, r).Inc()
}

// Unregistered counts a removed registration.
func (m *Metrics) Unregistered(app, reason string) {
	m.unregistered.WithLabelValues(app, reason).Inc()
}

// Pushed counts a push and its latency.
func (m *Metrics) Pushed(app string, o appserver.Outcome, d time.Duration) {
	s := m.series(pushKey{app, o})
	s.count.Inc()
	s.latency.Observe(d.Seconds())
}

func (m *Metrics) series(k pushKey) pushSeries {
	if p := m.pushed.Load(); p != nil {
		if s, ok := (*p)[k]; ok {
			return s
		}
	}
	m.pushedMu.Lock()
	defer m.pushedMu.Unlock()
	var old map[pushKey]pushSeries
	if p := m.pushed.Load(); p != nil {
		old = *p
	}
	if s, ok := old[k]; ok {
		return s
	}
	next := make(map[pushKey]pushSeries, len(old)+1)
	maps.Copy(next, old)
	s := pushSeries{m.pushes.WithLabelValues(k.app, string(k.outcome)), m.latency.WithLabelValues(k.app, string(k.outcome))}
	next[k] = s
	m.pushed.Store(&next)
	return s
}

// Rejected counts a refused push request.
func (m *Metrics) Rejected(r appserver.RejectReason) {
	m.rejections.WithLabelValues(string(r)).Inc()
}

// RegistrationFailed counts a registration that stored nothing, or a
// change stored but answered as failed (unconfirmed).
func (m *Metrics) RegistrationFailed(r appserver.RegistrationFailure) {
	m.regFailures.WithLabelValues(string(r)).Inc()
}

// HTTPLimited counts a request of the HTTP API refused by the per-client
// registration limit.
func (m *Metrics) HTTPLimited(endpoint string) {
	m.httpLimited.WithLabelValues(endpoint).Inc()
}

// HTTPConnectionRefused counts a connection the HTTP listeners closed at
// once, by the limit it was past (httpapi.RefusedSlots or RefusedClient),
// or an accept that failed for want of a descriptor (RefusedSlots).
func (m *Metrics) HTTPConnectionRefused(limit string) {
	m.connRefused.WithLabelValues(limit).Inc()
}

// Panicked counts a panic recovered where it would have ended the process.
func (m *Metrics) Panicked(where string) {
	m.panics.WithLabelValues(where).Inc()
}

// ComponentState records whether the component connection for jid is up.
// Its disconnect count starts at 0 here, so that the first one shows as
// an increase.
func (m *Metrics) ComponentState(jid string, connected bool) {
	v := 0.0
	if connected {
		v = 1
	}
	m.components.WithLabelValues(jid).Set(v)
	m.disconnects.WithLabelValues(jid)
}

// ComponentDisconnected counts an end of the component connection for
// jid: the gauge alone does not show a stream that keeps breaking and
// coming back between two scrapes.
func (m *Metrics) ComponentDisconnected(jid string) {
	m.disconnects.WithLabelValues(jid).Inc()
}

// Credentials is what an app's push service said of its credentials
// when the server last checked them.
type Credentials int

const (
	CredentialsUnknown  Credentials = -1 // not checked yet, or no answer that tells
	CredentialsRefused  Credentials = 0
	CredentialsAccepted Credentials = 1
)

// AppCredentials records what app's push service said of its credentials
// at the latest check, as push_appserver_app_credentials_accepted{app}.
func (m *Metrics) AppCredentials(app string, c Credentials) {
	m.credentials.WithLabelValues(app).Set(float64(c))
}

// WatchApp exports push_appserver_app_misconfigured{app}: 1 while the
// app's push service answers as if the app itself were misconfigured
// (see push.Breaker), read at each scrape.
func (m *Metrics) WatchApp(app string, misconfigured func() bool) {
	m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name:        "push_appserver_app_misconfigured",
		Help:        "1 while most of the app's recent pushes are refused for their token, which suggests a misconfigured app (e.g. APNS sandbox/production mismatch); registrations are then kept.",
		ConstLabels: prometheus.Labels{"app": app},
	}, func() float64 {
		if misconfigured() {
			return 1
		}
		return 0
	}))
}

// WatchGoneHeld exports push_appserver_webpush_gone_held_total{app}:
// the pushes of a WebPush app whose 404 or 410 answer did not remove the
// registration, since their push service answered no push with success
// lately (see webpush.GoneGuard), read at each scrape.
func (m *Metrics) WatchGoneHeld(app string, held func() uint64) {
	m.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name:        "push_appserver_webpush_gone_held_total",
		Help:        "WebPush pushes answered 404/410 whose registration was kept (and the push answered 'wait'), because their push service answered no push with success lately: a misconfigured reverse proxy or a moved UnifiedPush server answers so for every subscription.",
		ConstLabels: prometheus.Labels{"app": app},
	}, func() float64 { return float64(held()) }))
}

// WatchWebPushBusy exports push_appserver_webpush_busy_total{bound}: the
// WebPush pushes refused at once, and answered wait, because too many
// were under way, by the bound they met (webpush.BusyApp, BusySite,
// BusyQuiet, BusyProcess; refused returns every one), read at each
// scrape.
func (m *Metrics) WatchWebPushBusy(refused func() map[string]uint64) {
	for bound := range refused() {
		m.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name:        "push_appserver_webpush_busy_total",
			Help:        "WebPush pushes refused at once (answered 'wait', kept for redelivery) because too many were under way: bound is app (the app's bound of all), site (one push service's registrable domain), quiet (push services that have not answered lately: hosts that take the connection and say nothing) or process (all WebPush apps together).",
			ConstLabels: prometheus.Labels{"bound": bound},
		}, func() float64 { return float64(refused()[bound]) }))
	}
}

// WatchCache exports the registration cache's lookups by result
// (push_appserver_registration_cache_lookups_total{result="hit"|"miss"}),
// the pushes it served while the registry was unreadable
// (push_appserver_registration_cache_stale_total), its size
// (push_appserver_registration_cache_entries) and whether it is bypassed
// (push_appserver_registration_cache_bypassed), read at each scrape: the
// hit ratio tells whether registration_cache is large enough.
func (m *Metrics) WatchCache(stats func() appserver.CacheStats) {
	registerCounters(m.reg, prometheus.CounterOpts{
		Name: "push_appserver_registration_cache_lookups_total",
		Help: "Pushes that found their registration in the cache (hit) and that read it from the registry (miss).",
	}, "result", stats, []labeled[appserver.CacheStats]{
		{"hit", func(s appserver.CacheStats) uint64 { return s.Hits }},
		{"miss", func(s appserver.CacheStats) uint64 { return s.Misses }},
	})
	m.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "push_appserver_registration_cache_stale_total",
		Help: "Pushes sent to their registration as cached, of those counted as misses, because the registry could not be read while the change feed was down.",
	}, func() float64 { return float64(stats().Stale) }))
	m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "push_appserver_registration_cache_bypassed",
		Help: "1 while the registry's change feed is down (PostgreSQL's LISTEN connection, SQLite's change log), so that every push reads the registry.",
	}, func() float64 {
		if stats().Bypassed {
			return 1
		}
		return 0
	}))
	m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "push_appserver_registration_cache_entries",
		Help: "Entries in the push path's cache: registrations and, for tokenless pushes, device tokens known to be no registration (registration_cache is the most it holds).",
	}, func() float64 { return float64(stats().Entries) }))
}

// WatchStatus exports the write-behind of push outcomes: how many wait to
// be written (push_appserver_push_status_pending), which grows while the
// registry refuses writes, and how many were lost
// (push_appserver_push_status_dropped_total).
func (m *Metrics) WatchStatus(stats func() appserver.StatusStats) {
	m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "push_appserver_push_status_pending",
		Help: "Push outcomes (a device's last success or error) waiting to be written to the registry; they are kept while it refuses writes.",
	}, func() float64 { return float64(stats().Pending) }))
	m.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "push_appserver_push_status_dropped_total",
		Help: "Push outcomes never written: more were waiting than are kept while the registry refuses writes, or the registry refused them at shutdown.",
	}, func() float64 { return float64(stats().Dropped) }))
}

// WatchLog exports push_appserver_log_lines_dropped_total: log lines
// dropped because the log's sink did not read them (a stalled journald,
// a pipe nobody reads). The log says so itself only once the sink reads
// again, so a sink that never does is seen here alone.
func (m *Metrics) WatchLog(dropped func() uint64) {
	m.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "push_appserver_log_lines_dropped_total",
		Help: "Log lines dropped because the log's sink did not take them (journald stalled, a pipe nobody reads); the server goes on without them.",
	}, func() float64 { return float64(dropped()) }))
}

// WatchRedelivery exports the pushes kept to be sent again after a
// failure that may pass: how many devices wait
// (push_appserver_redelivery_pending), what became of them
// (push_appserver_redeliveries_total{outcome}), and, of those dropped,
// whose and why (push_appserver_redelivery_dropped_total{app,reason},
// read from drops). The dropped outcome stays the total, so that the
// alert and dashboards reading it go on as they were.
func (m *Metrics) WatchRedelivery(stats func() appserver.RedeliveryStats, drops func() map[appserver.RedeliveryDrop]uint64) {
	m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "push_appserver_redelivery_pending",
		Help: "Devices whose last push failed for a reason that may pass (the push service's outage, 5xx, 429, a broken connection, the registry unreadable) and that wait for it to be sent again.",
	}, func() float64 { return float64(stats().Pending) }))
	registerCounters(m.reg, prometheus.CounterOpts{
		Name: "push_appserver_redeliveries_total",
		Help: "Failed pushes kept to be sent again (kept; a device's later failures join its wait), and how each wait ended: delivered, superseded (a later push went through), gone (unregistered, its token dead, or a wrong secret found once the registry could be read), expired (still failing after redelivery), failed (a failure that cannot pass), dropped (no room to wait, the place given to another app's push once the room was full, or the registry could not hold them at shutdown), handed_over (to an app this instance does not have, given through the registry to an instance that has it, which counts how it ends there).",
	}, "outcome", stats, []labeled[appserver.RedeliveryStats]{
		{"kept", func(s appserver.RedeliveryStats) uint64 { return s.Kept }},
		{"delivered", func(s appserver.RedeliveryStats) uint64 { return s.Delivered }},
		{"superseded", func(s appserver.RedeliveryStats) uint64 { return s.Superseded }},
		{"gone", func(s appserver.RedeliveryStats) uint64 { return s.Gone }},
		{"expired", func(s appserver.RedeliveryStats) uint64 { return s.Expired }},
		{"failed", func(s appserver.RedeliveryStats) uint64 { return s.Failed }},
		{"dropped", func(s appserver.RedeliveryStats) uint64 { return s.Dropped }},
		{"handed_over", func(s appserver.RedeliveryStats) uint64 { return s.HandedOver }},
	})
	dropped := prometheus.CounterOpts{
		Name: "push_appserver_redelivery_dropped_total",
		Help: "Failed pushes redelivery dropped (the dropped outcome of push_appserver_redeliveries_total), by the push's app (unknown for a push whose registration could not be read yet) and reason: no_room (no room to wait), gave_place (its place given to another app's push once the room was full), shutdown (waiting at shutdown, kept neither by the registry nor in the data directory's file of held pushes), expired_while_stopped (kept in that file at a stop, and its redelivery window passed before the next start).",
	}
	m.reg.MustRegister(dropsCollector{
		desc:  prometheus.NewDesc(dropped.Name, dropped.Help, []string{"app", "reason"}, nil),
		drops: drops,
	})
}

// dropsCollector exports the counts of drops, read at each scrape: their
// apps and reasons are known only then.
type dropsCollector struct {
	desc  *prometheus.Desc
	drops func() map[appserver.RedeliveryDrop]uint64
}

func (c dropsCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c dropsCollector) Collect(ch chan<- prometheus.Metric) {
	for d, n := range c.drops() {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.CounterValue, float64(n), d.App, string(d.Reason))
	}
}

// labeled is one value of a counter's label and how to read its count
// from a stats snapshot of type S.
type labeled[S any] struct {
	value string
	n     func(S) uint64
}

// registerCounters registers the counter opts describes with one series
// per value of label, each read from stats at every scrape.
func registerCounters[S any](reg *prometheus.Registry, opts prometheus.CounterOpts, label string, stats func() S, series []labeled[S]) {
	for _, l := range series {
		o := opts
		o.ConstLabels = prometheus.Labels{label: l.value}
		reg.MustRegister(prometheus.NewCounterFunc(o, func() float64 { return float64(l.n(stats())) }))
	}
}

// BuildInfo exports push_appserver_build_info{version, commit,
// goversion}, always 1: during a rolling upgrade it shows which
// instance runs which build.
func (m *Metrics) BuildInfo(version, commit string) {
	g := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "push_appserver_build_info",
		Help:        "Always 1; its labels name the build the instance runs.",
		ConstLabels: prometheus.Labels{"version": version, "commit": commit, "goversion": runtime.Version()},
	})
	g.Set(1)
	m.reg.MustRegister(g)
}

// WatchReload exports push_appserver_config_last_reload_successful: 1
// while ok says the last reload (SIGHUP) applied its file in full, or
// none has been asked for since the start; 0 after one whose file did not
// load, or that left a setting unapplied (a key that does not load), so
// that the server runs on settings other than the file's. The log says
// why; this is what an alert and a dashboard can see.
func (m *Metrics) WatchReload(ok func() bool) {
	m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "push_appserver_config_last_reload_successful",
		Help: "1 when the last configuration reload (SIGHUP) applied the file in full, or none was asked for since the start; 0 when the file had problems or a setting of it could not be applied (the log says which): the server runs on its earlier settings.",
	}, func() float64 {
		if ok() {
			return 1
		}
		return 0
	}))
}

// Starting exports push_appserver_starting, 1 while starting says the
// server does not serve yet, as while it waits for PostgreSQL. Its
// listeners answer meanwhile, so Prometheus's up is 1 and scrapes
// succeed: this is what tells a server that never got going.
func (m *Metrics) Starting(starting func() bool) {
	m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "push_appserver_starting",
		Help: "1 while the server has not started serving yet (waiting for PostgreSQL, see /push_appserver/v1/health for why), 0 once it serves.",
	}, func() float64 {
		if starting() {
			return 1
		}
		return 0
	}))
}

// CommitsReplicated returns the setter of
// push_appserver_registry_commits_replicated, whether a registration
// answered OK survives a failover to a PostgreSQL standby: 1 commits
// wait for a streaming standby, 0 standbys stream (or one is named)
// and commits do not wait for them, -1 no standby streams. The series
// appears at the first value set: a registry without standbys
// (SQLite) has none, and one not asked yet shows no guess.
func (m *Metrics) CommitsReplicated() func(int) {
	g := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "push_appserver_registry_commits_replicated",
		Help: "Whether a registration's commit waits for a PostgreSQL standby, checked every minute: 1 it does (a failover loses no registration answered OK), 0 standbys stream but commits do not wait for them (a failover may lose the last ones: the log says which settings remove the risk), -1 no standby streams from the server.",
	})
	var once sync.Once
	return func(v int) {
		once.Do(func() { m.reg.MustRegister(g) })
		g.Set(float64(v))
	}
}

// Handler serves the metrics in the Prometheus text format. Every
// handler it returns shares one render at a time (see scrapes), so the
// API's port and metrics_listen together cost no more.
func (m *Metrics) Handler() http.Handler {
	return m.scrapes
}
