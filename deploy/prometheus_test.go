package deploy_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// The alerting rules load in Prometheus's promtool, their own unit tests
// (each alert firing, or not, on made-up series) pass, and every metric
// they name is one the server exports: a metric renamed in the code
// fails here rather than leave an alert that never fires.
func TestAlertRules(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Fatalf("promtool (scripts/test-deps.sh installs it): %v", err)
	}
	const rules = "prometheus/push-appserver.rules.yml"
	for _, args := range [][]string{{"check", "rules", rules}, {"test", "rules", "prometheus/push-appserver.rules_test.yml"}} {
		if out, err := exec.Command(promtool, args...).CombinedOutput(); err != nil {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}

	text, err := os.ReadFile(rules)
	if err != nil {
		t.Fatal(err)
	}
	exported := exportedMetrics(t)
	named := namedMetrics(string(text))
	if len(named) == 0 {
		t.Fatal("the rules name no metric")
	}
	for m := range named {
		if !exported[m] {
			t.Errorf("the rules name %s, which the server does not export", m)
		}
	}
}

// exportedMetrics is the set of push_appserver_ metrics the server
// declares in internal/metrics, found by their Name: fields.
func exportedMetrics(t *testing.T) map[string]bool {
	t.Helper()
	exported := map[string]bool{}
	sources, err := filepath.Glob("../internal/metrics/*.go")
	if err != nil {
		t.Fatal(err)
	}
	declared := regexp.MustCompile(`Name:\s*"(push_appserver_\w+)"`)
	for _, f := range sources {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range declared.FindAllSubmatch(b, -1) {
			exported[string(m[1])] = true
		}
	}
	if len(exported) < 10 {
		t.Fatalf("found %d metric names in internal/metrics; has the way they are declared changed?", len(exported))
	}
	return exported
}

// namedMetrics is the set of push_appserver_ metrics text names, a
// histogram's series by the histogram's name.
func namedMetrics(text string) map[string]bool {
	named := map[string]bool{}
	for _, m := range regexp.MustCompile(`push_appserver_\w+`).FindAllString(text, -1) {
		for _, s := range []string{"_bucket", "_count", "_sum"} {
			m = strings.TrimSuffix(m, s)
		}
		named[m] = true
	}
	return named
}
