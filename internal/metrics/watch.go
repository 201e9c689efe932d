package metrics

import (
	"context"
	"errors"
	"log/slog"
	"math"
	"slices"

	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// WatchRegistrations exports push_appserver_registrations{app}, the number
// of registrations per app, read with count now and then every interval
// until ctx ends. Apps listed get a value even without registrations.
func (m *Metrics) WatchRegistrations(ctx context.Context, interval time.Duration, apps []string, count func(context.Context) (map[string]int, error), logger *slog.Logger) {
	g := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "push_appserver_registrations",
		Help: "Registrations in the registry per app (type), refreshed every minute.",
	}, []string{"app"})
	m.reg.MustRegister(g)
	seen := map[string]bool{} // types counted, beyond apps
	refresh := func() {
		cctx, cancel := context.WithTimeout(ctx, interval)
		defer cancel()
		counts, err := count(cctx)
		if err != nil {
			logger.Warn("counting registrations for metrics", "err", err)
			return
		}
		for _, a := range apps {
			g.WithLabelValues(a).Set(float64(counts[a]))
		}
		for a, n := range counts {
			g.WithLabelValues(a).Set(float64(n))
			seen[a] = true
		}
		for a := range seen {
			if _, ok := counts[a]; !ok && !slices.Contains(apps, a) {
				// Its last registrations are gone: no stale count.
				g.DeleteLabelValues(a)
				delete(seen, a)
			}
		}
	}
	refresh()
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			refresh()
		}
	}
}

// ErrNoCertificate is what an expiry function of WatchExpiry returns when
// the setting it watches names no certificate any more (a reload took it
// out): the gauge is then NaN, which no threshold matches, and nothing is
// logged.
var ErrNoCertificate = errors.New("no certificate configured")

// WatchExpiry exports push_appserver_certificate_expiry_seconds{certificate}
// (seconds until the certificate that expiry reads expires; read at each
// scrape, so a certificate renewed and reloaded shows at once) and logs a
// warning once a day while less than warnBefore is left, until ctx ends.
func (m *Metrics) WatchExpiry(ctx context.Context, name string, expiry func() (time.Time, error), warnBefore time.Duration, logger *slog.Logger) {
	m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name:        "push_appserver_certificate_expiry_seconds",
		Help:        "Seconds until the certificate expires (negative: expired).",
		ConstLabels: prometheus.Labels{"certificate": name},
	}, func() float64 {
		t, err := expiry()
		switch {
		case errors.Is(err, ErrNoCertificate):
			return math.NaN()
		case err != nil:
			return 0
		}
		return time.Until(t).Seconds()
	}))
	check := func() {
		t, err := expiry()
		if errors.Is(err, ErrNoCertificate) {
			return
		}
		if err != nil {
			logger.Warn("reading certificate expiry", "certificate", name, "err", err)
			return
		}
		if left := time.Until(t); left < warnBefore {
			logger.Warn("certificate expires soon: renew it and reload (SIGHUP)", "certificate", name,
				"expires", t.UTC().Format(time.RFC3339), "days_left", int(left.Hours()/24))
		}
	}
	check()
	tick := time.NewTicker(24 * time.Hour)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			check()
		}
	}
}
