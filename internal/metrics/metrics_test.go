package metrics

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/push-appserver/push-appserver/internal/appserver"
)

// Pushes from many goroutines are counted per app and outcome, each in
// its own series, the first push of a series included.
func TestPushedCountsEverySeries(t *testing.T) {
	m := New()
	apps := []string{"a", "b", ""}
	outcomes := []appserver.Outcome{appserver.OutcomeSuccess, appserver.OutcomeFailed}
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for i := range 300 {
				m.Pushed(apps[i%3], outcomes[i/3%2], time.Millisecond)
			}
		})
	}
	wg.Wait()
	families, err := m.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	counts := map[string]float64{}
	for _, f := range families {
		for _, mt := range f.GetMetric() {
			key := f.GetName()
			for _, l := range mt.GetLabel() {
				key += " " + l.GetName() + "=" + l.GetValue()
			}
			switch f.GetName() {
			case "push_appserver_pushes_total":
				counts[key] = mt.GetCounter().GetValue()
			case "push_appserver_push_duration_seconds":
				counts[key] = float64(mt.GetHistogram().GetSampleCount())
			}
		}
	}
	if len(counts) != 12 {
		t.Fatalf("%d series, want 12: %v", len(counts), counts)
	}
	for k, n := range counts {
		if n != 400 {
			t.Errorf("%s: %v, want 400", k, n)
		}
	}
}

// The build the instance runs is one series, always 1.
func TestBuildInfo(t *testing.T) {
	m := New()
	m.BuildInfo("v1.2.3", "abc123")
	families, err := m.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != "push_appserver_build_info" {
			continue
		}
		labels := map[string]string{}
		for _, l := range f.GetMetric()[0].GetLabel() {
			labels[l.GetName()] = l.GetValue()
		}
		if len(f.GetMetric()) != 1 || f.GetMetric()[0].GetGauge().GetValue() != 1 ||
			labels["version"] != "v1.2.3" || labels["commit"] != "abc123" || labels["goversion"] != runtime.Version() {
			t.Fatalf("build info: %v", f)
		}
		return
	}
	t.Fatal("no push_appserver_build_info")
}

// The pushes redelivery dropped are exported by app and reason beside the
// total, which dashboards and the alert read as they did. Pushes handed
// over to an instance that has their app end in an outcome of their own,
// so that an instance's kept pushes all end in one.
func TestRedeliveryDropsByApp(t *testing.T) {
	m := New()
	m.WatchRedelivery(func() appserver.RedeliveryStats { return appserver.RedeliveryStats{Dropped: 3, HandedOver: 4} },
		func() map[appserver.RedeliveryDrop]uint64 {
			return map[appserver.RedeliveryDrop]uint64{
				{App: "ios", Reason: appserver.DropNoRoom}:               1,
				{App: "ios", Reason: appserver.DropGavePlace}:            2,
				{App: appserver.UnreadApp, Reason: appserver.DropNoRoom}: 0,
			}
		})
	families, err := m.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, f := range families {
		for _, mt := range f.GetMetric() {
			key := f.GetName()
			for _, l := range mt.GetLabel() {
				key += " " + l.GetName() + "=" + l.GetValue()
			}
			got[key] = mt.GetCounter().GetValue()
		}
	}
	for key, want := range map[string]float64{
		"push_appserver_redelivery_dropped_total app=ios reason=no_room":     1,
		"push_appserver_redelivery_dropped_total app=ios reason=gave_place":  2,
		"push_appserver_redelivery_dropped_total app=unknown reason=no_room": 0,
		"push_appserver_redeliveries_total outcome=dropped":                  3,
		"push_appserver_redeliveries_total outcome=handed_over":              4,
	} {
		if v, ok := got[key]; !ok || v != want {
			t.Errorf("%s: %v (exported %v), want %v", key, v, ok, want)
		}
	}
}

// The registrations of an app that is no longer configured (removed at
// a restart, its devices still in the registry) are counted; once an
// operator deletes them, the gauge must fall to 0, not keep its last
// value.
func TestRegistrationsGaugeOfRemovedAppFalls(t *testing.T) {
	m := New()
	var mu sync.Mutex
	counts := map[string]int{"ios": 3, "gone": 5}
	count := func(context.Context) (map[string]int, error) {
		mu.Lock()
		defer mu.Unlock()
		return maps.Clone(counts), nil
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go m.WatchRegistrations(ctx, 20*time.Millisecond, []string{"ios"}, count, slog.New(slog.DiscardHandler))
	gauge := func(app string) float64 {
		families, _ := m.reg.Gather()
		for _, f := range families {
			if f.GetName() != "push_appserver_registrations" {
				continue
			}
			for _, mt := range f.GetMetric() {
				if mt.GetLabel()[0].GetValue() == app {
					return mt.GetGauge().GetValue()
				}
			}
		}
		return -1
	}
	for deadline := time.Now().Add(2 * time.Second); gauge("gone") != 5; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("gauge never read 5")
		}
	}
	mu.Lock()
	delete(counts, "gone") // `registrations delete` removed the last of them
	mu.Unlock()
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		g := gauge("gone")
		if g == 0 || g == -1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("push_appserver_registrations{app=\"gone\"} = %v 5 s after its registrations were all deleted, want 0 (or no series)", g)
		}
	}
}

// Log lines the sink did not take are counted on the page, read at each
// scrape.
func TestLogLinesDropped(t *testing.T) {
	m := New()
	var n uint64 = 3
	m.WatchLog(func() uint64 { return n })
	n = 7
	families, err := m.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() == "push_appserver_log_lines_dropped_total" {
			if v := f.GetMetric()[0].GetCounter().GetValue(); v != 7 {
				t.Fatalf("push_appserver_log_lines_dropped_total = %v, want 7", v)
			}
			return
		}
	}
	t.Fatal("no push_appserver_log_lines_dropped_total")
}

// TestWebPushBusyByBound: the WebPush pushes refused for too many under
// way are counted by the bound they met, one series for each, at zero
// before any is refused.
func TestWebPushBusyByBound(t *testing.T) {
	m := New()
	m.WatchWebPushBusy(func() map[string]uint64 {
		return map[string]uint64{"app": 0, "site": 2, "quiet": 5, "process": 1}
	})
	families, err := m.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, f := range families {
		if f.GetName() != "push_appserver_webpush_busy_total" {
			continue
		}
		for _, mt := range f.GetMetric() {
			for _, l := range mt.GetLabel() {
				got[l.GetName()+"="+l.GetValue()] = mt.GetCounter().GetValue()
			}
		}
	}
	want := map[string]float64{"bound=app": 0, "bound=site": 2, "bound=quiet": 5, "bound=process": 1}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("push_appserver_webpush_busy_total = %v, want %v", got, want)
	}
}
