package modpushappserver

import (
	"database/sql"
	"os"
	"strings"
	"testing"

	"github.com/push-appserver/push-appserver/internal/testutil/mariadbtest"
	"github.com/push-appserver/push-appserver/internal/testutil/pgtest"
)

var (
	pg  = pgtest.New()
	mdb = mariadbtest.New()
)

func TestMain(m *testing.M) {
	code := pg.Run(m)
	mdb.Stop()
	os.Exit(code)
}

// Prosody's mod_storage_sql creates the same table in PostgreSQL, with
// TEXT columns.
func TestImportPostgreSQLStore(t *testing.T) {
	dsn := pg.DB(t)
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec(`CREATE TABLE "prosody" ("host" TEXT NOT NULL, "user" TEXT NOT NULL, "store" TEXT NOT NULL,
		"key" TEXT NOT NULL, "type" TEXT NOT NULL, "value" TEXT NOT NULL);
		CREATE UNIQUE INDEX "prosody_index" ON "prosody" ("host", "user", "store", "key")`); err != nil {
		t.Fatal(err)
	}
	for _, r := range [][]string{
		{"n1", "type", "string", "apns"}, {"n1", "token", "string", "abcd"}, {"n1", "secret", "string", secret1},
		{"n1", "registered", "string", "2017-03-17T02:10:21Z"},
		{"n2", "type", "string", "apns"}, {"n2", "token", "string", ""}, {"n2", "secret", "string", secret1},
	} {
		if _, err := db.Exec(`INSERT INTO prosody VALUES ('push.example.org', $1, 'push_appserver', $2, $3, $4)`, r[0], r[1], r[2], r[3]); err != nil {
			t.Fatal(err)
		}
	}
	url := dsn
	if !strings.HasPrefix(url, "postgres") {
		t.Fatalf("pgtest DSN %q is not a URL", dsn)
	}
	src, closer, err := OpenSource(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer closer.Close()
	dst := openRegistry(t)
	sum, err := Import(ctx, src, dst, Options{Apps: []string{"apns"}})
	if err != nil || sum.Imported != 1 || sum.Skipped["empty token: there is no device to push to"] != 1 {
		t.Fatalf("%+v %v", sum, err)
	}
	if r, err := dst.Get(ctx, "n1"); err != nil || r.Secret != secret1 || r.Token != "abcd" {
		t.Fatalf("n1: %+v %v", r, err)
	}
	if _, _, err := OpenSource(ctx, "postgres://nobody:pw@127.0.0.1:1/none"); err == nil || strings.Contains(err.Error(), "pw") {
		t.Fatalf("bad URL: %v", err)
	}
}
