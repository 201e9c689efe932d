package metrics

import (
	"context"
	"errors"
	"log/slog"
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
// the setting it watches names no certificate (an APNS app on a token
// key, which a reload may switch to a certificate, or back): the series
// is then left out, and nothing is logged.
var ErrNoCertificate = errors.New("no certificate configured")

// WatchExpiry exports push_appserver_certificate_expiry_seconds{certificate}
// (seconds until the certificate that expiry reads expires; read at each
// scrape, so a certificate renewed and reloaded shows at once) and logs a
// warning once a day while less than warnBefore is left, until ctx ends.
func (m *Metrics) WatchExpiry(ctx context.Context, name string, expiry func() (time.Time, error), warnBefore time.Duration, logger *slog.Logger) {
	opts := prometheus.GaugeOpts{
		Name: "push_appserver_certificate_expiry_seconds",
		Help: "Seconds until the certificate expires (negative: expired).",
	}
	m.reg.MustRegister(expiryCollector{
		desc:   prometheus.NewDesc(opts.Name, opts.Help, nil, prometheus.Labels{"certificate": name}),
		expiry: expiry,
	})
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

// expiryCollector exports one certificate's expiry, read at each scrape,
// and nothing while there is no certificate to read.
type expiryCollector struct {
	desc   *prometheus.Desc
	expiry func() (time.Time, error)
}

func (c expiryCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c expiryCollector) Collect(ch chan<- prometheus.Metric) {
	t, err := c.expiry()
	var left float64
	switch {
	case errors.Is(err, ErrNoCertificate):
		return
	case err == nil:
		left = time.Until(t).Seconds()
	}
	ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, left)
}
