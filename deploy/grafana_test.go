package deploy_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/push-appserver/push-appserver/internal/metrics"
)

// dashboard is what the test reads of a Grafana dashboard.
type dashboard struct {
	UID    string `json:"uid"`
	Panels []struct {
		ID         int    `json:"id"`
		Title      string `json:"title"`
		Datasource struct {
			UID string `json:"uid"`
		} `json:"datasource"`
		Targets []struct {
			Expr string `json:"expr"`
		} `json:"targets"`
	} `json:"panels"`
}

// The Grafana dashboard's queries are valid PromQL (promtool checks them
// as recording rules, with Grafana's variables filled in), they name only
// metrics the server exports, and every metric the server exports is on
// it, so a new metric comes with its panel.
func TestGrafanaDashboard(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Fatalf("promtool (scripts/test-deps.sh installs it): %v", err)
	}
	text, err := os.ReadFile("grafana/push-appserver.json")
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	if err := json.Unmarshal(text, &d); err != nil {
		t.Fatalf("the dashboard is not JSON: %v", err)
	}
	if d.UID == "" || len(d.Panels) < 10 {
		t.Fatalf("uid %q, %d panels", d.UID, len(d.Panels))
	}
	fill := strings.NewReplacer("$__rate_interval", "5m", "$instance", ".*")
	var rules strings.Builder
	rules.WriteString("groups:\n  - name: dashboard\n    rules:\n")
	ids := map[int]bool{}
	var queries strings.Builder
	for _, p := range d.Panels {
		if p.Title == "" || p.Datasource.UID != "${datasource}" || len(p.Targets) == 0 || ids[p.ID] {
			t.Errorf("panel %d %q: a title, the data source variable, queries and an id of its own are wanted", p.ID, p.Title)
		}
		ids[p.ID] = true
		for i, q := range p.Targets {
			expr := fill.Replace(q.Expr)
			if strings.Contains(expr, "$") {
				t.Errorf("panel %q: a variable the test does not fill in: %s", p.Title, q.Expr)
			}
			fmt.Fprintf(&rules, "      - record: dashboard:panel%d:query%d\n        expr: %q\n", p.ID, i, expr)
			queries.WriteString(expr + "\n")
		}
	}
	file := filepath.Join(t.TempDir(), "dashboard.rules.yml")
	if err := os.WriteFile(file, []byte(rules.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(promtool, "check", "rules", file).CombinedOutput(); err != nil {
		t.Errorf("promtool check rules on the dashboard's queries: %v\n%s", err, out)
	}

	exported := exportedMetrics(t)
	named := namedMetrics(queries.String())
	for m := range named {
		if !exported[m] {
			t.Errorf("the dashboard queries %s, which the server does not export", m)
		}
	}
	for m := range exported {
		if !named[m] {
			t.Errorf("the server exports %s, which no panel of the dashboard shows", m)
		}
	}
}

// The dashboard shows one instance or all. Its Instance variable lists
// the instances that have a series of the metric it queries: one that
// has pushed nothing yet (a standby, one whose component is down, one
// waiting for PostgreSQL) must be listed too, since those are the ones
// an operator looks at in an incident.
func TestDashboardInstanceVariableListsIdleInstances(t *testing.T) {
	text, err := os.ReadFile("grafana/push-appserver.json")
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		Templating struct {
			List []struct {
				Name       string `json:"name"`
				Definition string `json:"definition"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(text, &d); err != nil {
		t.Fatal(err)
	}
	var metric string
	for _, v := range d.Templating.List {
		if v.Name == "instance" {
			if m := regexp.MustCompile(`label_values\((\w+)`).FindStringSubmatch(v.Definition); m != nil {
				metric = m[1]
			}
		}
	}
	if metric == "" {
		t.Fatal("no instance variable with label_values(...)")
	}
	// A server as serve sets it up before any push or registration.
	m := metrics.New()
	m.BuildInfo("dev", "unknown")
	m.Starting(func() bool { return true })
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	body, _ := io.ReadAll(rec.Body)
	if !regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(metric) + `[{ ]`).Match(body) {
		t.Errorf("the Instance variable reads label_values(%s, instance), but an instance that has not pushed exports no %s series: it cannot be picked\n(exported: %s)",
			metric, metric, strings.Join(regexp.MustCompile(`(?m)^push_appserver_\w+`).FindAllString(string(body), -1), " "))
	}
}
