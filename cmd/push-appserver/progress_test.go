package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/push-appserver/push-appserver/internal/registry"
	"github.com/push-appserver/push-appserver/internal/registry/sqlite"
)

// TestProgressLinesEveryInterval guards the pace and the words of the
// progress of `registrations prune` and `import registry`: a line at
// most once per interval (none in a run shorter than it), each a line of
// its own, saying how many registrations were read of how many, how
// many were dealt with, and about how long is left; without a count,
// what was read; with an interval of 0, nothing.
func TestProgressLinesEveryInterval(t *testing.T) {
	start := time.Unix(1_800_000_000, 0)
	for _, tt := range []struct {
		name  string
		every time.Duration
		total int
		calls []time.Duration // after the start: (read, done) = (1000, 10) × call number
		want  string
	}{
		{"a fast run prints nothing", 5 * time.Second, 10000, []time.Duration{time.Second, 2 * time.Second, 4 * time.Second}, ""},
		{"a line when the interval has passed", 5 * time.Second, 10000,
			[]time.Duration{time.Second, 5 * time.Second, 6 * time.Second, 9 * time.Second, 10 * time.Second},
			"p: 2000 of 10000 registrations read (20%), 20 deleted in 5s, about 20s to go\n" +
				"p: 5000 of 10000 registrations read (50%), 50 deleted in 10s, about 10s to go\n"},
		{"without a count", 5 * time.Second, -1, []time.Duration{6 * time.Second},
			"p: 1000 registrations read, 10 deleted in 6s\n"},
		{"more read than counted at the start", 5 * time.Second, 500, []time.Duration{6 * time.Second},
			"p: 1000 registrations read, 10 deleted in 6s\n"},
		{"all read", time.Second, 2000, []time.Duration{time.Second, 2 * time.Second},
			"p: 1000 of 2000 registrations read (50%), 10 deleted in 1s, about 1s to go\n" +
				"p: 2000 of 2000 registrations read (100%), 20 deleted in 2s\n"},
		{"off", 0, 10000, []time.Duration{time.Minute}, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var out bytes.Buffer
			now := start
			p := &progressLines{w: &out, prefix: "p", every: tt.every, now: func() time.Time { return now }, last: start}
			progress := p.pass("", tt.total, "deleted")
			if tt.every == 0 && progress != nil {
				t.Fatal("a Progress with the lines off")
			}
			for i, d := range tt.calls {
				now = start.Add(d)
				if progress != nil {
					progress(1000*(i+1), 10*(i+1))
				}
			}
			if out.String() != tt.want {
				t.Errorf("wrote\n%s\nwant\n%s", out.String(), tt.want)
			}
		})
	}
}

// registryOf writes a configuration whose SQLite registry holds n
// registrations, every other one idle for a year, and returns the
// configuration and the registry's path.
func registryOf(t *testing.T, n int) (cfg, db string) {
	t.Helper()
	cfg = writeConfig(t, "[apps.apns]\nkind = \"log\"\n")
	dir := filepath.Join(filepath.Dir(cfg), "data")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	db = filepath.Join(dir, "registry.db")
	s, err := sqlite.Open(t.Context(), db)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var rs []registry.Registration
	for i := range n {
		r := registry.Registration{Node: fmt.Sprintf("node-%05d", i), Type: "apns", Token: fmt.Sprintf("%064x", i), Secret: "s", Registered: time.Now()}
		if i%2 == 0 {
			r.Registered = time.Now().Add(-365 * 24 * time.Hour)
		}
		rs = append(rs, r)
	}
	if _, err := s.Put(t.Context(), rs); err != nil {
		t.Fatal(err)
	}
	return cfg, db
}

// TestProgressOnStderr: `registrations prune` and `import registry` say
// on stderr how far they have come, one line each time -progress has
// passed (made tiny here, so every page or window past the first
// reports), of the registrations counted at the start; what they write
// on stdout, which scripts read, is the same with the lines as without;
// with the default interval a run of seconds writes no line, and
// -quiet keeps an import's lines off.
func TestProgressOnStderr(t *testing.T) {
	const n = 5000 // three windows of prune, five pages of the rest
	// Each run is on a registry of its own, made at its own second.
	stamp := regexp.MustCompile(`\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ|/\S+/data/registry\.db`)
	for _, tt := range []struct {
		name  string
		args  func(t *testing.T) []string // the command, on a registry of n
		flags []string
		lines string // what every line of stderr matches; "" for none
		min   int    // lines at least
	}{
		{"prune -yes", func(t *testing.T) []string {
			cfg, _ := registryOf(t, n)
			return []string{"registrations", "-config", cfg, "prune", "-idle", "30d", "-yes"}
		}, []string{"-progress", "1ns"}, `push-appserver registrations prune: (checking that not every registration is idle: \d+ of 5000 registrations read \(\d+%\), \d+ idle|\d+ of 5000 registrations read \(\d+%\), \d+ deleted) in \d+s(, about \S+ to go)?`, 3},
		{"prune, counting", func(t *testing.T) []string {
			cfg, _ := registryOf(t, n)
			return []string{"registrations", "-config", cfg, "prune", "-idle", "30d"}
		}, []string{"-progress", "1ns"}, `push-appserver registrations prune: \d+ of 5000 registrations read \(\d+%\), \d+ idle in \d+s(, about \S+ to go)?`, 4},
		{"prune, default interval", func(t *testing.T) []string {
			cfg, _ := registryOf(t, n)
			return []string{"registrations", "-config", cfg, "prune", "-idle", "30d", "-yes"}
		}, nil, `push-appserver registrations prune: .*`, 0},
		{"import registry", func(t *testing.T) []string {
			_, src := registryOf(t, n)
			return []string{"import", "-config", writeConfig(t, ""), "registry", src}
		}, []string{"-progress", "1ns"}, `push-appserver import registry: \d+ of 5000 registrations read \(\d+%\), \d+ copied in \d+s(, about \S+ to go)?`, 4},
		{"import registry -dry-run", func(t *testing.T) []string {
			_, src := registryOf(t, n)
			return []string{"import", "-config", writeConfig(t, ""), "registry", "-dry-run", src}
		}, []string{"-progress", "1ns"}, `push-appserver import registry: \d+ of 5000 registrations read \(\d+%\), \d+ to copy in \d+s(, about \S+ to go)?`, 4},
		{"import registry -quiet", func(t *testing.T) []string {
			_, src := registryOf(t, n)
			return []string{"import", "-config", writeConfig(t, ""), "registry", src}
		}, []string{"-progress", "1ns", "-quiet"}, "", 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var quietOut, quietErr bytes.Buffer
			if code := run(append(tt.args(t), "-progress", "0"), &quietOut, &quietErr); code != 0 || quietErr.Len() > 0 {
				t.Fatalf("without progress: exit %d\n%s\n%s", code, quietOut.String(), quietErr.String())
			}
			var out, errb bytes.Buffer
			args := tt.args(t)
			start := time.Now()
			if code := run(append(args, tt.flags...), &out, &errb); code != 0 {
				t.Fatalf("exit %d\n%s\n%s", code, out.String(), errb.String())
			}
			// With the default interval, a line at most every 5 s
			// of the run: none on a quiet machine, where it takes a
			// second or two, and a few where it is slowed.
			most := -1
			switch {
			case tt.flags == nil:
				most = int(time.Since(start) / (5 * time.Second))
			case tt.lines == "":
				most = 0
			}
			if got, want := stamp.ReplaceAllString(out.String(), "T"), stamp.ReplaceAllString(quietOut.String(), "T"); got != want {
				t.Errorf("stdout with progress:\n%s\nwithout:\n%s", got, want)
			}
			lines := strings.Split(strings.TrimSuffix(errb.String(), "\n"), "\n")
			if errb.Len() == 0 {
				lines = nil
			}
			if len(lines) < tt.min || most >= 0 && len(lines) > most {
				t.Fatalf("%d lines on stderr, want at least %d and at most %d (-1: any):\n%s", len(lines), tt.min, most, errb.String())
			}
			re := regexp.MustCompile(`^` + tt.lines + `$`)
			for _, l := range lines {
				if !re.MatchString(l) || strings.Contains(l, "\r") {
					t.Errorf("stderr line %q does not match %s", l, re)
				}
			}
		})
	}
}
