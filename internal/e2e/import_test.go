package e2e_test

import (
	"context"
	"database/sql"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/push-appserver/push-appserver/internal/migrate/modpushappserver"
	"github.com/push-appserver/push-appserver/internal/push"
	"github.com/push-appserver/push-appserver/internal/registry/sqlite"
)

// writeProsodySQLStore writes n registrations the way mod_push_appserver
// stores them through Prosody's mod_storage_sql in SQLite: one row per
// field, all strings. Record i has node "node-i", token tokenFor(i) and
// secret secretFor(i); every tenth is an FCM registration with a token
// that is not hexadecimal.
func writeProsodySQLStore(t *testing.T, path string, n int) {
	t.Helper()
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec(`CREATE TABLE "prosody" ("host" TEXT NOT NULL, "user" TEXT NOT NULL, "store" TEXT NOT NULL,
		"key" TEXT NOT NULL, "type" TEXT NOT NULL, "value" MEDIUMTEXT NOT NULL);
		CREATE UNIQUE INDEX "prosody_index" ON "prosody" ("host", "user", "store", "key");`); err != nil {
		t.Fatal(err)
	}
	tx, err := db.Begin()
	if err != nil {
		t.Fatal(err)
	}
	ins, err := tx.Prepare(`INSERT INTO "prosody" VALUES ('push.example.org', ?, 'push_appserver', ?, 'string', ?)`)
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		node := fmt.Sprintf("node-%d", i)
		typ := "apns"
		if i%10 == 9 {
			typ = "fcm"
		}
		for _, kv := range [][2]string{{"node", node}, {"type", typ}, {"token", tokenFor(i)}, {"secret", secretFor(i)}, {"registered", "2026-11-25T02:10:50Z"}} {
			if _, err := ins.Exec(node, kv[0], kv[1]); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
}

func tokenFor(i int) string {
	if i%10 == 9 {
		return fmt.Sprintf("fcm:token-%d", i)
	}
	return fmt.Sprintf("%064x", i)
}

func secretFor(i int) string { return fmt.Sprintf("%064x", 1_000_000+i) }

// TestImportedRegistrationsPush imports a generated store of 100,000
// mod_push_appserver registrations (5,000 under the race detector), then
// has Prosody push to imported nodes with the secrets it had stored: the
// pushes reach the devices.
func TestImportedRegistrationsPush(t *testing.T) {
	n := 100_000
	if raceEnabled {
		n = 5_000
	}
	dir := t.TempDir()
	start := time.Now()
	writeProsodySQLStore(t, filepath.Join(dir, "prosody.sqlite"), n)
	t.Logf("generated %d records in %s", n, time.Since(start))

	store, err := sqlite.Open(context.Background(), filepath.Join(dir, "registry.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	src, closer, err := modpushappserver.OpenSource(context.Background(), filepath.Join(dir, "prosody.sqlite"))
	if err != nil {
		t.Fatal(err)
	}
	defer closer.Close()
	start = time.Now()
	sum, err := modpushappserver.Import(context.Background(), src, store, modpushappserver.Options{Apps: []string{"apns", "fcm"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("imported %d records in %s", n, time.Since(start))
	if sum.Imported != n || sum.SkippedTotal() != 0 || sum.Notes["token is not hexadecimal"] != n/10 {
		t.Fatalf("summary %+v", sum)
	}

	rec := &recorder{}
	s := startStackOnRegistry(t, startProsody, store, map[string]push.Backend{"apns": rec, "fcm": rec})
	s.backend = rec
	for _, i := range []int{n - 1, 42} { // an FCM one with a non-hex token, an APNS one
		alice := login(t, s.xmpp.C2SAddr, "alice", s.xmpp.Domain, "alice-pw")
		s.offlineMessage(t, alice, fmt.Sprintf("node-%d", i), secretFor(i))
		s.waitPushes(t, tokenFor(i), 1)
	}
}
