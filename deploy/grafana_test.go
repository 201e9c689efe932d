package deploy_test

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
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
