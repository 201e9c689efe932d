package main

import (
	"bytes"
	"database/sql"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/push-appserver/push-appserver/internal/registry"
	"github.com/push-appserver/push-appserver/internal/registry/postgres"
)

// withPassword puts a password into a PostgreSQL URL of the test server,
// which trusts loopback and so ignores it: the URL is then the one an
// operator would give, secret included.
func withPassword(t *testing.T, dsn string) string {
	t.Helper()
	const user = "postgres@"
	if !strings.Contains(dsn, user) {
		t.Fatalf("unexpected test DSN %q", dsn)
	}
	return strings.Replace(dsn, user, "postgres:hunter2@", 1)
}

// TestImportSourceOutOfProcessList guards that an import's source
// database, whose URL carries a password, can be named as env:NAME or
// file:/path, as the configuration's own secrets can: a URL on the
// command line is readable by every user of the machine in ps and
// /proc/PID/cmdline for as long as the import runs. A literal URL with a
// password is still taken, with a warning saying so.
func TestImportSourceOutOfProcessList(t *testing.T) {
	prosody := withPassword(t, pg.DB(t))
	db, err := sql.Open("pgx", prosody)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec(`CREATE TABLE "prosody" ("host" TEXT NOT NULL, "user" TEXT NOT NULL, "store" TEXT NOT NULL,
		"key" TEXT NOT NULL, "type" TEXT NOT NULL, "value" TEXT NOT NULL)`); err != nil {
		t.Fatal(err)
	}
	for _, kv := range [][2]string{{"type", "apns"}, {"token", "abcd"}, {"secret", strings.Repeat("5", 64)}, {"registered", "2017-03-17T02:10:21Z"}} {
		if _, err := db.Exec(`INSERT INTO prosody VALUES ('push.example.org', 'n1', 'push_appserver', $1, 'string', $2)`, kv[0], kv[1]); err != nil {
			t.Fatal(err)
		}
	}

	other := withPassword(t, pg.DB(t))
	src, err := postgres.Open(t.Context(), other, postgres.Options{})
	if err != nil {
		t.Fatal(err)
	}
	_, err = src.Put(t.Context(), []registry.Registration{{Node: "n2", Type: "apns", Token: "ef01", Secret: strings.Repeat("6", 64), Registered: time.Now()}})
	src.Close()
	if err != nil {
		t.Fatal(err)
	}
	urlFile := filepath.Join(t.TempDir(), "source-url")
	if err := os.WriteFile(urlFile, []byte(other+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PROSODY_DSN", prosody)

	cfg := writeConfig(t, "[apps.apns]\nkind = \"log\"\n")
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"import", "-config", cfg, "mod_push_appserver", "env:PROSODY_DSN"}, "1 imported"},
		{[]string{"import", "-config", cfg, "registry", "file:" + urlFile}, "1 new in the target"},
	} {
		var out, errb bytes.Buffer
		if code := run(tt.args, &out, &errb); code != 0 || !strings.Contains(out.String(), tt.want) {
			t.Errorf("%v: exit %d, want %q\nstdout:\n%s\nstderr:\n%s", tt.args, code, tt.want, out.String(), errb.String())
		}
		if strings.Contains(out.String()+errb.String(), "hunter2") {
			t.Errorf("%v printed the source's password:\n%s%s", tt.args, out.String(), errb.String())
		}
	}

	// file: names a file holding the URL; an SQLite file given so is
	// refused, saying why, not read as a path of binary bytes.
	var out, errb bytes.Buffer
	if code := run([]string{"import", "-config", cfg, "-dry-run", "registry", "file:../../internal/registry/sqlite/testdata/missing.db"}, &out, &errb); code != 1 {
		t.Errorf("file: naming no file: exit %d, want 1\n%s", code, errb.String())
	}
	out.Reset()
	errb.Reset()
	backup := filepath.Join(t.TempDir(), "backup.db")
	if code := run([]string{"backup", "-config", cfg, backup}, &out, &errb); code != 0 {
		t.Fatalf("backup: exit %d\n%s", code, errb.String())
	}
	out.Reset()
	errb.Reset()
	if code := run([]string{"import", "-config", cfg, "-dry-run", "registry", "file:" + backup}, &out, &errb); code != 1 || !strings.Contains(errb.String(), "holds no URL or path") {
		t.Errorf("file: naming an SQLite file: exit %d\n%s", code, errb.String())
	}
	out.Reset()
	errb.Reset()
	if code := run([]string{"import", "-config", cfg, "-dry-run", "registry", other}, &out, &errb); code != 0 {
		t.Fatalf("a literal URL: exit %d\n%s%s", code, out.String(), errb.String())
	}
	if !strings.Contains(errb.String(), "env:NAME") {
		t.Errorf("a password on the command line goes unremarked:\n%s", errb.String())
	}
}
