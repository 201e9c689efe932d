package deploy_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/push-appserver/push-appserver/internal/registry"
	"github.com/push-appserver/push-appserver/internal/registry/sqlite"
)

// The backup timer's units pass systemd-analyze verify, and the commands
// of the service, run as written with the test's paths put in, back up a
// registry into a file only its owner reads and keep the 14 newest
// backups.
func TestBackupTimer(t *testing.T) {
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Fatal("systemd-analyze is missing: run scripts/test-deps.sh (Debian package systemd)")
	}
	bin, state, paths := installed(t)
	dir := filepath.Dir(bin)
	for _, name := range []string{"push-appserver-backup.service", "push-appserver-backup.timer"} {
		text, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), []byte(strings.ReplaceAll(string(text), "/usr/local/bin/push-appserver", bin)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	out, err := exec.Command(analyze, "verify", filepath.Join(dir, "push-appserver-backup.service"), filepath.Join(dir, "push-appserver-backup.timer")).CombinedOutput()
	if err != nil || len(strings.TrimSpace(string(out))) > 0 {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
	u := unit(t, "push-appserver-backup.service")
	if u["User"][0] != "push-appserver" || u["UMask"][0] != "0077" || len(u["ExecStartPre"]) != 1 || len(u["ExecStart"]) != 1 || len(u["ExecStartPost"]) != 1 {
		t.Fatalf("unit: %v", u)
	}

	// A registry with one registration, and 15 backups of earlier days.
	if err := os.MkdirAll(state, 0o750); err != nil {
		t.Fatal(err)
	}
	store, err := sqlite.Open(context.Background(), filepath.Join(state, "registry.db"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := store.Register(context.Background(), "n1", registry.Renew(registry.Registration{Node: "n1", Type: "apns", Token: "ab12", Secret: strings.Repeat("5", 64), Registered: time.Now()})); err != nil {
		t.Fatal(err)
	}
	store.Close()
	backups := filepath.Join(state, "backups")
	if err := os.MkdirAll(backups, 0o700); err != nil {
		t.Fatal(err)
	}
	// What a run killed midway left.
	partial := filepath.Join(backups, ".registry-20261201T000000Z.db.partial-123")
	os.WriteFile(partial, []byte("half"), 0o600)
	os.WriteFile(partial+"-journal", nil, 0o600)
	for _, p := range []string{partial, partial + "-journal"} {
		at := time.Now().Add(-2 * time.Hour)
		os.Chtimes(p, at, at)
	}
	// What a manual backup is writing meanwhile stays.
	writing := filepath.Join(backups, ".registry-manual.db.partial-456")
	os.WriteFile(writing, []byte("being written"), 0o600)
	for i := 1; i <= 15; i++ {
		old := filepath.Join(backups, fmt.Sprintf("registry-old%02d.db", i))
		os.WriteFile(old, nil, 0o600)
		at := time.Now().Add(-time.Duration(i) * 24 * time.Hour)
		os.Chtimes(old, at, at)
	}

	run := func(key string) {
		t.Helper()
		// systemd expands %X specifiers in command lines; these use
		// none, so a lone % would be one (date's %Y is the unit's
		// directory there).
		if strings.Contains(strings.ReplaceAll(u[key][0], "%%", ""), "%") {
			t.Fatalf("%s has a %% systemd would expand: %s", key, u[key][0])
		}
		line := paths.Replace(u[key][0])
		cmd := exec.Command("/bin/sh", "-c", line)
		cmd.Dir = state
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("%s=%s: %v\n%s", key, line, err, out)
		}
	}
	for _, key := range []string{"ExecStartPre", "ExecStart", "ExecStartPost"} {
		run(key)
	}

	made, _ := filepath.Glob(filepath.Join(backups, "registry-2*.db"))
	if len(made) != 1 {
		t.Fatalf("backups made: %v", made)
	}
	if fi, err := os.Stat(made[0]); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("backup %s: %v, %v", made[0], fi.Mode(), err)
	}
	backup, err := sqlite.Open(context.Background(), made[0])
	if err != nil {
		t.Fatal(err)
	}
	defer backup.Close()
	if r, err := backup.Get(context.Background(), "n1"); err != nil || r.Secret != strings.Repeat("5", 64) {
		t.Fatalf("the backup's registration: %+v, %v", r, err)
	}
	all, _ := filepath.Glob(filepath.Join(backups, "registry-*.db"))
	if len(all) != 14 {
		t.Fatalf("%d backups kept, want the 14 newest: %v", len(all), all)
	}
	if _, err := os.Stat(writing); err != nil {
		t.Errorf("a partial copy a backup is writing was removed: %v", err)
	}
	for _, gone := range []string{"registry-old14.db", "registry-old15.db", filepath.Base(partial), filepath.Base(partial) + "-journal"} {
		if _, err := os.Stat(filepath.Join(backups, gone)); !os.IsNotExist(err) {
			t.Errorf("%s, among the oldest, was kept", gone)
		}
	}
}

// TestBackupTimerAfterClockSteppedBack: backups written while the clock
// was a year ahead (set right since) carry times a year from now. The
// backup a run makes now is kept, and so are they (nothing says which
// clock was right); they do not count among the 14 newest, which would
// otherwise push every new backup out the moment it is made, for a year.
func TestBackupTimerAfterClockSteppedBack(t *testing.T) {
	_, state, paths := installed(t)
	if err := os.MkdirAll(state, 0o750); err != nil {
		t.Fatal(err)
	}
	store, err := sqlite.Open(context.Background(), filepath.Join(state, "registry.db"))
	if err != nil {
		t.Fatal(err)
	}
	store.Close()
	backups := filepath.Join(state, "backups")
	if err := os.MkdirAll(backups, 0o700); err != nil {
		t.Fatal(err)
	}
	var ahead []string
	for i := 1; i <= 14; i++ {
		name := fmt.Sprintf("registry-ahead%02d.db", i)
		ahead = append(ahead, name)
		p := filepath.Join(backups, name)
		os.WriteFile(p, nil, 0o600)
		at := time.Now().Add(365*24*time.Hour - time.Duration(i)*24*time.Hour)
		os.Chtimes(p, at, at)
	}
	u := unit(t, "push-appserver-backup.service")
	for _, key := range []string{"ExecStartPre", "ExecStart", "ExecStartPost"} {
		cmd := exec.Command("/bin/sh", "-c", paths.Replace(u[key][0]))
		cmd.Dir = state
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("%s: %v\n%s", key, err, out)
		}
	}
	made, _ := filepath.Glob(filepath.Join(backups, "registry-2*.db"))
	if len(made) != 1 {
		t.Fatalf("the backup just made was not kept: %v", made)
	}
	for _, name := range ahead {
		if _, err := os.Stat(filepath.Join(backups, name)); err != nil {
			t.Errorf("a backup of the time the clock was ahead was removed: %v", err)
		}
	}
}

// installed builds the binary into a directory of the test's with a
// configuration whose data_dir is state there, and returns the replacer
// that puts those paths in place of an installation's in a unit's
// commands (%% is how a unit writes %).
func installed(t *testing.T) (bin, state string, paths *strings.Replacer) {
	t.Helper()
	dir := t.TempDir()
	bin = filepath.Join(dir, "push-appserver")
	if out, err := exec.Command("go", "build", "-o", bin, "../cmd/push-appserver").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	state = filepath.Join(dir, "state")
	config := filepath.Join(dir, "push-appserver.toml")
	if err := os.WriteFile(config, fmt.Appendf(nil, "data_dir = %q\n", state), 0o600); err != nil {
		t.Fatal(err)
	}
	paths = strings.NewReplacer(
		"/usr/local/bin/push-appserver", bin,
		"/etc/push-appserver/push-appserver.toml", config,
		"/var/lib/push-appserver", state,
		"%%", "%",
	)
	return bin, state, paths
}
