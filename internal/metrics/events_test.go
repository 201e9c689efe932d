package metrics

import (
	"maps"
	"testing"

	dto "github.com/prometheus/client_model/go"

	"github.com/push-appserver/push-appserver/internal/appserver"
)

// sample returns the value of the series of family name whose labels are
// labels (those it has, none missing nor extra), and whether there is one.
func sample(t *testing.T, m *Metrics, name string, labels map[string]string) (float64, bool) {
	t.Helper()
	families, err := m.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		for _, mt := range f.GetMetric() {
			got := map[string]string{}
			for _, l := range mt.GetLabel() {
				got[l.GetName()] = l.GetValue()
			}
			if !maps.Equal(got, labels) {
				continue
			}
			switch f.GetType() {
			case dto.MetricType_COUNTER:
				return mt.GetCounter().GetValue(), true
			case dto.MetricType_GAUGE:
				return mt.GetGauge().GetValue(), true
			default:
				t.Fatalf("%s is a %v", name, f.GetType())
			}
		}
	}
	return 0, false
}

// TestEventsMoveTheirSeries: each event an operator alerts on moves its
// own series by exactly one, and no other series of its family; a series
// exported at zero from the start stays there until its event comes.
func TestEventsMoveTheirSeries(t *testing.T) {
	type series struct {
		name   string
		labels map[string]string
	}
	l := func(kv ...string) map[string]string {
		out := map[string]string{}
		for i := 0; i < len(kv); i += 2 {
			out[kv[i]] = kv[i+1]
		}
		return out
	}
	for _, tt := range []struct {
		event  string
		do     func(m *Metrics)
		moved  series
		still  []series // at 0, exported
		absent []series // not exported
	}{
		{"new registration", func(m *Metrics) { m.Registered("ios", false) },
			series{"push_appserver_registrations_total", l("app", "ios", "renewed", "false")},
			nil, []series{{"push_appserver_registrations_total", l("app", "ios", "renewed", "true")}}},
		{"renewed registration", func(m *Metrics) { m.Registered("ios", true) },
			series{"push_appserver_registrations_total", l("app", "ios", "renewed", "true")},
			nil, []series{{"push_appserver_registrations_total", l("app", "ios", "renewed", "false")}}},
		{"unregistration", func(m *Metrics) { m.Unregistered("ios", "dead_token") },
			series{"push_appserver_unregistrations_total", l("app", "ios", "reason", "dead_token")},
			nil, []series{{"push_appserver_unregistrations_total", l("app", "ios", "reason", "request")}}},
		{"rejection", func(m *Metrics) { m.Rejected(appserver.RejectNotFound) },
			series{"push_appserver_push_rejections_total", l("reason", "not_found")},
			[]series{{"push_appserver_push_rejections_total", l("reason", "malformed")}}, nil},
		{"registration failure", func(m *Metrics) { m.RegistrationFailed(appserver.RegistrationError) },
			series{"push_appserver_registration_failures_total", l("reason", "error")},
			[]series{{"push_appserver_registration_failures_total", l("reason", "invalid")}, {"push_appserver_registration_failures_total", l("reason", "unconfirmed")}}, nil},
		{"http limited", func(m *Metrics) { m.HTTPLimited("unregister") },
			series{"push_appserver_http_limited_total", l("endpoint", "unregister")},
			[]series{{"push_appserver_http_limited_total", l("endpoint", "register")}}, nil},
		{"connection refused", func(m *Metrics) { m.HTTPConnectionRefused("per_client") },
			series{"push_appserver_http_connections_refused_total", l("limit", "per_client")},
			[]series{{"push_appserver_http_connections_refused_total", l("limit", "descriptors")}}, nil},
		{"panic", func(m *Metrics) { m.Panicked("component") },
			series{"push_appserver_panics_total", l("where", "component")},
			[]series{{"push_appserver_panics_total", l("where", "http")}, {"push_appserver_panics_total", l("where", "push_service")}}, nil},
		{"component disconnected", func(m *Metrics) {
			m.ComponentState("push.example.org", true)
			m.ComponentDisconnected("push.example.org")
		},
			series{"push_appserver_component_disconnects_total", l("jid", "push.example.org")},
			nil, nil},
	} {
		t.Run(tt.event, func(t *testing.T) {
			m := New()
			tt.do(m)
			if v, ok := sample(t, m, tt.moved.name, tt.moved.labels); !ok || v != 1 {
				t.Errorf("%s%v = %v (exported %v), want 1", tt.moved.name, tt.moved.labels, v, ok)
			}
			for _, s := range tt.still {
				if v, ok := sample(t, m, s.name, s.labels); !ok || v != 0 {
					t.Errorf("%s%v = %v (exported %v), want 0", s.name, s.labels, v, ok)
				}
			}
			for _, s := range tt.absent {
				if v, ok := sample(t, m, s.name, s.labels); ok {
					t.Errorf("%s%v = %v, want no such series", s.name, s.labels, v)
				}
			}
		})
	}
}

// TestComponentStateGauge: the connected gauge follows the connection,
// and its disconnects counter is exported at 0 from the first state on,
// so that an alert on its increase sees the first disconnect.
func TestComponentStateGauge(t *testing.T) {
	m := New()
	const jid = "push.example.org"
	connected := func(want float64) {
		t.Helper()
		if v, ok := sample(t, m, "push_appserver_component_connected", map[string]string{"jid": jid}); !ok || v != want {
			t.Fatalf("component_connected = %v (exported %v), want %v", v, ok, want)
		}
	}
	m.ComponentState(jid, false)
	connected(0)
	if v, ok := sample(t, m, "push_appserver_component_disconnects_total", map[string]string{"jid": jid}); !ok || v != 0 {
		t.Fatalf("disconnects = %v (exported %v), want 0", v, ok)
	}
	m.ComponentState(jid, true)
	connected(1)
	m.ComponentState(jid, false)
	connected(0)
}

// TestStateGauges: the gauges an operator reads the server's state from
// say what the server says of itself, each way.
func TestStateGauges(t *testing.T) {
	m := New()
	var starting, reloadOK, misconfigured bool
	var cache appserver.CacheStats
	var status appserver.StatusStats
	m.Starting(func() bool { return starting })
	m.WatchReload(func() bool { return reloadOK })
	m.WatchApp("ios", func() bool { return misconfigured })
	m.WatchCache(func() appserver.CacheStats { return cache })
	m.WatchStatus(func() appserver.StatusStats { return status })
	check := func(name string, labels map[string]string, want float64) {
		t.Helper()
		if v, ok := sample(t, m, name, labels); !ok || v != want {
			t.Errorf("%s%v = %v (exported %v), want %v", name, labels, v, ok, want)
		}
	}
	for _, on := range []bool{false, true} {
		starting, reloadOK, misconfigured = on, on, on
		cache = appserver.CacheStats{Bypassed: on}
		want := 0.0
		if on {
			want = 1
		}
		check("push_appserver_starting", map[string]string{}, want)
		check("push_appserver_config_last_reload_successful", map[string]string{}, want)
		check("push_appserver_app_misconfigured", map[string]string{"app": "ios"}, want)
		check("push_appserver_registration_cache_bypassed", map[string]string{}, want)
	}
	cache = appserver.CacheStats{Hits: 5, Misses: 3, Stale: 2, Entries: 7}
	status = appserver.StatusStats{Pending: 4, Dropped: 9}
	check("push_appserver_registration_cache_lookups_total", map[string]string{"result": "hit"}, 5)
	check("push_appserver_registration_cache_lookups_total", map[string]string{"result": "miss"}, 3)
	check("push_appserver_registration_cache_stale_total", map[string]string{}, 2)
	check("push_appserver_registration_cache_entries", map[string]string{}, 7)
	check("push_appserver_push_status_pending", map[string]string{}, 4)
	check("push_appserver_push_status_dropped_total", map[string]string{}, 9)
}

// TestAppCredentialsGauge: refused (0), accepted (1) and not known (-1)
// are three values: a not-known shown as accepted would hide that the
// server never learned whether the app's pushes can go.
func TestAppCredentialsGauge(t *testing.T) {
	m := New()
	for _, c := range []Credentials{CredentialsUnknown, CredentialsAccepted, CredentialsRefused, CredentialsUnknown} {
		m.AppCredentials("ios", c)
		if v, ok := sample(t, m, "push_appserver_app_credentials_accepted", map[string]string{"app": "ios"}); !ok || v != float64(c) {
			t.Errorf("after %d: %v (exported %v)", c, v, ok)
		}
	}
	if CredentialsUnknown != -1 || CredentialsRefused != 0 || CredentialsAccepted != 1 {
		t.Fatalf("the values the metric's help names changed: %d %d %d", CredentialsUnknown, CredentialsRefused, CredentialsAccepted)
	}
}
