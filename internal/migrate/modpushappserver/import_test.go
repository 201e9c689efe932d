package modpushappserver

import (
	"bytes"
	"context"
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/push-appserver/push-appserver/internal/registry"
	"github.com/push-appserver/push-appserver/internal/registry/memory"
	"github.com/push-appserver/push-appserver/internal/registry/postgres"
	"github.com/push-appserver/push-appserver/internal/registry/sqlite"
)

var ctx = context.Background()

func openRegistry(t *testing.T) *sqlite.Store {
	t.Helper()
	s, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "registry.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func mustTime(s string) time.Time {
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		panic(err)
	}
	return t
}

// The files in testdata/filestore were written by mod_push_appserver.
func TestImportRealFiles(t *testing.T) {
	const dataPath = "testdata/filestore"
	for _, dir := range []string{dataPath, dataPath + "/push%2eexample%2eorg", dataPath + "/push%2eexample%2eorg/push_appserver"} {
		t.Run(filepath.Base(dir), func(t *testing.T) {
			dst := openRegistry(t)
			var report bytes.Buffer
			sum, err := Import(ctx, FileStore{Dir: dir}, dst, Options{Apps: []string{"apns", "fcm"}, Report: &report})
			if err != nil {
				t.Fatal(err)
			}
			if sum.Total != 3 || sum.Imported != 2 || sum.SkippedTotal() != 1 || sum.Updated != 0 {
				t.Fatalf("summary %+v", sum)
			}
			if !strings.Contains(report.String(), "api02806ed711aa%2dn2.dat: empty token") {
				t.Fatalf("the record without token is not reported:\n%s", report.String())
			}
			got, err := dst.Get(ctx, "api02806ed711aa-e429")
			if err != nil {
				t.Fatal(err)
			}
			want := registry.Registration{
				Node: "api02806ed711aa-e429", Type: "apns",
				Token:      "e429000000000000000000000000000000000000000000000000000000000000",
				Secret:     "6862fc0175dd9c61f168aa8920d2c591a3c4bc628307486dec045df407ad5bd4",
				Registered: mustTime("2026-11-25T02:10:50Z"), LastPushError: mustTime("2026-11-25T02:10:50Z"),
			}
			if got != want {
				t.Fatalf("imported %+v\nwant     %+v", got, want)
			}
			got, err = dst.Get(ctx, "ft-lua-0000-01e94d1c")
			if err != nil || got.Secret != "b6d37d82bc2e0722658895883746d25fd595544874141a7bfc8c22aa04e5c555" ||
				!got.LastSuccessfulPush.Equal(mustTime("2026-11-25T02:14:00Z")) || !got.Registered.Equal(mustTime("2026-11-25T02:13:57Z")) {
				t.Fatalf("imported %+v, %v", got, err)
			}

			// Again: nothing changes.
			sum, err = Import(ctx, FileStore{Dir: dir}, dst, Options{Apps: []string{"apns"}})
			if err != nil {
				t.Fatal(err)
			}
			if sum.Unchanged != 2 || sum.Imported != 0 || sum.Updated != 0 || sum.SkippedTotal() != 1 {
				t.Fatalf("re-run summary %+v", sum)
			}
		})
	}
}

func writeFile(t *testing.T, path, text string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
}

const secret1 = "384e51b4b2d5e4758e5dc342b22dea9217212f2c4886e2a3dcf16f3eb0eb3807"

func TestImportFileStoreProblems(t *testing.T) {
	dir := t.TempDir()
	store := filepath.Join(dir, "push%2eexample%2eorg", "push_appserver")
	writeFile(t, filepath.Join(store, "good.dat"), `return { ["type"] = "apns"; ["token"] = "abcd"; ["secret"] = "`+secret1+`"; ["registered"] = "2017-03-17T02:10:21Z"; ["renewed"] = "2017-03-18T02:54:51Z"; };`)
	writeFile(t, filepath.Join(store, "code.dat"), `return { ["type"] = os.execute("touch `+filepath.Join(dir, "pwned")+`") };`)
	writeFile(t, filepath.Join(store, "garbage.dat"), "\x00\x01\x02")
	writeFile(t, filepath.Join(store, "notes.txt"), "hello")
	writeFile(t, filepath.Join(store, "fcm%2dnode.dat"), `return { type = "fcm", token = "not:hex-token", secret = "`+secret1+`", registered = 1489716621 };`)
	writeFile(t, filepath.Join(store, "other.dat"), `return { type = "webos", token = "abcd", secret = "`+secret1+`" };`)
	writeFile(t, filepath.Join(store, "nosecret.dat"), `return { type = "apns", token = "abcd" };`)
	writeFile(t, filepath.Join(store, "mapped.dat"), `return { type = "apns-voip", token = "abcd", secret = "`+secret1+`", registered = "2017-03-17T02:10:21Z" };`)

	dst := openRegistry(t)
	var report bytes.Buffer
	sum, err := Import(ctx, FileStore{Dir: dir}, dst, Options{Apps: []string{"apns", "fcm", "voip"}, TypeMap: map[string]string{"apns-voip": "voip"}, Report: &report})
	if err != nil {
		t.Fatal(err)
	}
	if sum.Total != 8 || sum.Imported != 3 || sum.SkippedTotal() != 5 {
		t.Fatalf("summary %+v\n%s", sum, report.String())
	}
	for _, want := range []string{"code.dat: not a Prosody data table", "garbage.dat: not a Prosody data table", "notes.txt: not a .dat file",
		`other.dat: type "webos" is not a configured app`, "nosecret.dat: no secret", "fcm%2dnode.dat as stored: token is not hexadecimal"} {
		if !strings.Contains(report.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, report.String())
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "pwned")); err == nil {
		t.Fatal("a data file ran code")
	}
	r, err := dst.Get(ctx, "good")
	if err != nil || !r.Renewed.Equal(mustTime("2017-03-18T02:54:51Z")) || r.Secret != secret1 {
		t.Fatalf("good: %+v %v", r, err)
	}
	r, err = dst.Get(ctx, "fcm-node")
	if err != nil || r.Token != "not:hex-token" || !r.Registered.Equal(time.Unix(1489716621, 0)) {
		t.Fatalf("fcm-node: %+v %v", r, err)
	}
	if r, err := dst.Get(ctx, "mapped"); err != nil || r.Type != "voip" {
		t.Fatalf("mapped: %+v %v", r, err)
	}
	var out bytes.Buffer
	sum.WriteTo(&out)
	for _, want := range []string{"8 record(s) read", "3 imported", "5 skipped", "skipped 1: no secret"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("summary lacks %q:\n%s", want, out.String())
		}
	}
}

func TestImportDryRunAndNewerHere(t *testing.T) {
	dir := t.TempDir()
	store := filepath.Join(dir, "push_appserver")
	writeFile(t, filepath.Join(store, "a.dat"), `return { type = "apns", token = "aa", secret = "`+secret1+`", registered = "2020-01-01T00:00:00Z" };`)
	writeFile(t, filepath.Join(store, "b.dat"), `return { type = "apns", token = "bb", secret = "`+secret1+`", registered = "2020-01-01T00:00:00Z" };`)
	dst := openRegistry(t)

	sum, err := Import(ctx, FileStore{Dir: store}, dst, Options{Apps: []string{"apns"}, DryRun: true})
	if err != nil || sum.Imported != 2 {
		t.Fatalf("dry run: %+v %v", sum, err)
	}
	if n, _ := dst.Count(ctx); n != 0 {
		t.Fatalf("dry run wrote %d registrations", n)
	}

	// b re-registered here after the switch: the import keeps ours. a is
	// older here: the import replaces it.
	mine := registry.Registration{Node: "b", Type: "apns", Token: "new", Secret: "mine", Registered: mustTime("2024-01-01T00:00:00Z")}
	old := registry.Registration{Node: "a", Type: "apns", Token: "old", Secret: "old", Registered: mustTime("2019-01-01T00:00:00Z")}
	if _, err := dst.Put(ctx, []registry.Registration{mine, old}); err != nil {
		t.Fatal(err)
	}
	sum, err = Import(ctx, FileStore{Dir: store}, dst, Options{Apps: []string{"apns"}})
	if err != nil || sum.Updated != 1 || sum.Skipped["registered here more recently than in mod_push_appserver"] != 1 {
		t.Fatalf("summary %+v %v", sum, err)
	}
	if r, _ := dst.Get(ctx, "b"); r.Secret != "mine" {
		t.Fatalf("b overwritten: %+v", r)
	}
	if r, _ := dst.Get(ctx, "a"); r.Secret != secret1 || r.Token != "aa" {
		t.Fatalf("a not updated: %+v", r)
	}
}

// prosodySchema is the table mod_storage_sql (Prosody 0.12) creates.
const prosodySchema = `CREATE TABLE "prosody" ("host" TEXT NOT NULL, "user" TEXT NOT NULL, "store" TEXT NOT NULL,
	"key" TEXT NOT NULL, "type" TEXT NOT NULL, "value" MEDIUMTEXT NOT NULL);
CREATE UNIQUE INDEX "prosody_index" ON "prosody" ("host", "user", "store", "key");`

func TestImportSQLStore(t *testing.T) {
	db, err := sql.Open("sqlite", filepath.Join(t.TempDir(), "prosody.sqlite"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec(prosodySchema); err != nil {
		t.Fatal(err)
	}
	rows := [][]string{
		{"push.example.org", "n1", "push_appserver", "type", "string", "apns"},
		{"push.example.org", "n1", "push_appserver", "token", "string", "abcd"},
		{"push.example.org", "n1", "push_appserver", "secret", "string", secret1},
		{"push.example.org", "n1", "push_appserver", "registered", "string", "2017-03-17T02:10:21Z"},
		{"push.example.org", "n1", "push_appserver", "last_successful_push", "string", "2017-03-18T03:54:24Z"},
		{"push.example.org", "n1", "push_appserver", "node", "string", "n1"},
		// A field kept in the JSON row for non-string keys is merged.
		{"push.example.org", "n2", "push_appserver", "type", "string", "fcm"},
		{"push.example.org", "n2", "push_appserver", "secret", "string", secret1},
		{"push.example.org", "n2", "push_appserver", "", "json", `{"token":"fcm:token"}`},
		{"push.example.org", "n2", "push_appserver", "registered", "number", "1489716621"},
		// Unreadable value.
		{"push.example.org", "n3", "push_appserver", "type", "boolean", "maybe"},
		// A node longer than a registry key may be.
		{"push.example.org", strings.Repeat("n", 1025), "push_appserver", "type", "string", "apns"},
		{"push.example.org", strings.Repeat("n", 1025), "push_appserver", "token", "string", "abcd"},
		{"push.example.org", strings.Repeat("n", 1025), "push_appserver", "secret", "string", secret1},
		// Other stores and hosts' accounts are not ours.
		{"example.org", "alice", "accounts", "password", "string", "secret"},
		{"example.org", "alice", "roster", "", "json", "{}"},
	}
	for _, r := range rows {
		if _, err := db.Exec(`INSERT INTO prosody VALUES (?, ?, ?, ?, ?, ?)`, r[0], r[1], r[2], r[3], r[4], r[5]); err != nil {
			t.Fatal(err)
		}
	}
	dst := openRegistry(t)
	var report bytes.Buffer
	sum, err := Import(ctx, SQLStore{DB: db, Name: "test"}, dst, Options{Apps: []string{"apns", "fcm"}, Report: &report})
	if err != nil {
		t.Fatal(err)
	}
	if sum.Total != 4 || sum.Imported != 2 || sum.SkippedTotal() != 2 {
		t.Fatalf("summary %+v\n%s", sum, report.String())
	}
	if !strings.Contains(report.String(), `user "n3": key "type": invalid boolean`) || !strings.Contains(report.String(), "node longer than 1024 bytes") {
		t.Fatalf("report:\n%s", report.String())
	}
	r, err := dst.Get(ctx, "n1")
	if err != nil || r.Type != "apns" || r.Token != "abcd" || r.Secret != secret1 || !r.LastSuccessfulPush.Equal(mustTime("2017-03-18T03:54:24Z")) {
		t.Fatalf("n1: %+v %v", r, err)
	}
	r, err = dst.Get(ctx, "n2")
	if err != nil || r.Token != "fcm:token" || !r.Registered.Equal(time.Unix(1489716621, 0)) {
		t.Fatalf("n2: %+v %v", r, err)
	}
}

// TestImportMany imports a generated file store in several batches. The
// e2e package imports 100,000 and pushes with them.
func TestImportMany(t *testing.T) {
	n := 3000
	dir := filepath.Join(t.TempDir(), "push_appserver")
	os.MkdirAll(dir, 0o755)
	for i := range n {
		writeFile(t, filepath.Join(dir, fmt.Sprintf("node%%2d%06d.dat", i)),
			fmt.Sprintf("return {\n\t[\"type\"] = \"apns\";\n\t[\"token\"] = \"%064x\";\n\t[\"secret\"] = \"%064x\";\n\t[\"registered\"] = \"2026-11-25T02:10:50Z\";\n};\n", i, i+1))
	}
	dst := openRegistry(t)
	start := time.Now()
	sum, err := Import(ctx, FileStore{Dir: dir}, dst, Options{Apps: []string{"apns"}, BatchSize: 500})
	if err != nil || sum.Imported != n {
		t.Fatalf("%+v %v", sum, err)
	}
	t.Logf("imported %d files in %s", n, time.Since(start))
	if c, _ := dst.Count(ctx); c != n {
		t.Fatalf("%d registrations, want %d", c, n)
	}
	if r, _ := dst.Get(ctx, "node-000042"); r.Secret != fmt.Sprintf("%064x", 43) {
		t.Fatalf("node-000042: %+v", r)
	}
}

// A record with no time takes the import's, newer than anything here: a
// re-run must not let it replace a device's registration made here since
// the switch (a new token, and a new secret its server now pushes with).
func TestImportRerunTimelessRecord(t *testing.T) {
	store := filepath.Join(t.TempDir(), "push_appserver")
	writeFile(t, filepath.Join(store, "n.dat"), `return { type = "apns", token = "aa", secret = "`+secret1+`" };`)
	dst := openRegistry(t)
	t0 := mustTime("2025-01-01T00:00:00Z")
	run := func(now time.Time) Summary {
		t.Helper()
		sum, err := Import(ctx, FileStore{Dir: store}, dst, Options{Apps: []string{"apns"}, Now: func() time.Time { return now }})
		if err != nil {
			t.Fatal(err)
		}
		return sum
	}
	if sum := run(t0); sum.Imported != 1 {
		t.Fatalf("first run: %+v", sum)
	}
	if sum := run(t0.Add(time.Hour)); sum.Unchanged != 1 {
		t.Fatalf("re-run with nothing changed here: %+v, want it unchanged", sum)
	}
	mine := registry.Registration{Node: "n", Type: "apns", Token: "bb", Secret: "mine", Registered: t0.Add(2 * time.Hour)}
	if _, err := dst.Put(ctx, []registry.Registration{mine}); err != nil {
		t.Fatal(err)
	}
	if sum := run(t0.Add(24 * time.Hour)); sum.SkippedTotal() != 1 {
		t.Fatalf("re-run after the device registered here: %+v, want it skipped", sum)
	}
	if r, _ := dst.Get(ctx, "n"); r.Secret != "mine" || r.Token != "bb" {
		t.Fatalf("the registration made here was replaced: %+v", r)
	}
}

// Lua strings are bytes: a record the registry cannot store as text is
// skipped and named, and the records beside it are imported, on
// PostgreSQL too, which refuses a whole batch over one such row.
func TestImportOddRecords(t *testing.T) {
	good := `return { type = "apns", token = "aa", secret = "` + secret1 + `", registered = "2020-01-01T00:00:00Z", last_push_error_reason = "` + strings.Repeat("é", 99) + `x\255" };`
	odd := map[string]string{
		"nul.dat":   `return { type = "apns", token = "b\0b", secret = "` + secret1 + `", registered = "2020-01-01T00:00:00Z" };`,
		"bytes.dat": `return { type = "apns", token = "b\255b", secret = "` + secret1 + `", registered = "2020-01-01T00:00:00Z" };`,
	}
	for _, driver := range []string{"sqlite", "postgres"} {
		t.Run(driver, func(t *testing.T) {
			store := filepath.Join(t.TempDir(), "push_appserver")
			writeFile(t, filepath.Join(store, "good.dat"), good)
			for f, rec := range odd {
				writeFile(t, filepath.Join(store, f), rec)
			}
			var dst registry.Store = openRegistry(t)
			if driver == "postgres" {
				p, err := postgres.Open(ctx, pg.DB(t), postgres.Options{})
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { p.Close() })
				dst = p
			}
			var report bytes.Buffer
			sum, err := Import(ctx, FileStore{Dir: store}, dst, Options{Apps: []string{"apns"}, Report: &report})
			if err != nil {
				t.Fatalf("import failed as a whole: %v\n%s", err, report.String())
			}
			if sum.Imported != 1 || sum.SkippedTotal() != 2 {
				t.Fatalf("summary %+v\n%s", sum, report.String())
			}
			for _, want := range []string{"nul.dat: node, type, token or secret is not UTF-8 text", "bytes.dat: node, type, token or secret is not UTF-8 text"} {
				if !strings.Contains(report.String(), want) {
					t.Errorf("report lacks %q:\n%s", want, report.String())
				}
			}
			if r, err := dst.Get(ctx, "good"); err != nil || !utf8.ValidString(r.LastErrorReason) {
				t.Fatalf("good: %+v, %v", r, err)
			}
		})
	}
}

// racingStore lets a device register through the running server between
// the import's look at its node and the batch's write.
type racingStore struct {
	*sqlite.Store
	node  string
	after func()
}

func (s racingStore) Get(ctx context.Context, node string) (registry.Registration, error) {
	r, err := s.Store.Get(ctx, node)
	if node == s.node && s.after != nil {
		s.after()
	}
	return r, err
}

// A re-run of the import beside the serving push-appserver (README: "a
// device that registered here after the switch keeps its newer
// registration") must not put the old record over a registration the
// device made while the import ran.
func TestImportKeepsRegistrationMadeDuringImport(t *testing.T) {
	dst := openRegistry(t)
	const node = "ft-lua-0000-01e94d1c"
	newer := registry.Registration{Node: node, Type: "apns", Token: "ab12", Secret: "new-secret", Registered: time.Now().UTC()}
	st := racingStore{Store: dst, node: node, after: func() {
		if _, err := dst.Register(ctx, node, func(registry.Registration, bool) (registry.Registration, error) { return newer, nil }); err != nil {
			t.Fatal(err)
		}
	}}
	if _, err := Import(ctx, FileStore{Dir: "testdata/filestore"}, st, Options{Apps: []string{"apns"}}); err != nil {
		t.Fatal(err)
	}
	got, err := dst.Get(ctx, node)
	if err != nil {
		t.Fatal(err)
	}
	if got.Secret != "new-secret" || got.Token != "ab12" {
		t.Fatalf("the registration the device made during the import was replaced by the older record: token %q secret %q", got.Token, got.Secret)
	}
}

// oneRecord is a Source of the records given.
type oneRecord []Record

func (s oneRecord) Count(context.Context) (int, error) { return len(s), nil }
func (s oneRecord) Records(_ context.Context, fn func(Record) error) error {
	for _, r := range s {
		if err := fn(r); err != nil {
			return err
		}
	}
	return nil
}
func (s oneRecord) String() string { return "records" }

// A record left out at the batch's re-check ("registered here while the
// import ran") was not imported: the summary's "imported as stored" must
// not count it.
func TestImportRecheckSummary(t *testing.T) {
	dst := openRegistry(t)
	const node = "n1"
	newer := registry.Registration{Node: node, Type: "apns", Token: "ab12", Secret: "new-secret", Registered: time.Now().UTC()}
	st := racingStore{Store: dst, node: node, after: func() {
		if _, err := dst.Register(ctx, node, func(registry.Registration, bool) (registry.Registration, error) { return newer, nil }); err != nil {
			t.Fatal(err)
		}
	}}
	src := oneRecord{{Source: "n1.dat", Host: "h", Node: node, Fields: map[string]any{
		"node": "other", "type": "apns", "token": "cd34", "secret": "old", "timestamp": float64(time.Now().Add(-time.Hour).Unix())}}}
	sum, err := Import(ctx, src, st, Options{Apps: []string{"apns"}})
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	sum.WriteTo(&b)
	if sum.Imported+sum.Updated != 0 || len(sum.Notes) != 0 {
		t.Fatalf("nothing was imported, yet the summary says:\n%s", b.String())
	}
}

// Times the seed's parser accepts but the registry's nanosecond columns
// cannot hold (after April 2262) must not come back as other times: a
// far-future registration time read back as 1700-something would let a
// prune or a dead-token report remove a registration the import said was
// newer than anything here. Such a time, and one before 1970, is
// unreadable, whether written as text or as Unix seconds.
func TestImportTimeOutOfRange(t *testing.T) {
	for _, tc := range []struct{ name, registered string }{
		{"text after 2262", `"2300-01-01T00:00:00Z"`},
		{"text before 1678", `"1600-01-01T00:00:00Z"`},
		{"text before 1970", `"1969-12-31T23:59:59Z"`},
		{"seconds after 2262", `1e10`},
		{"seconds before 1970", `-86400`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			store := filepath.Join(t.TempDir(), "push_appserver")
			writeFile(t, filepath.Join(store, "far.dat"), `return { type = "apns", token = "abcd", secret = "`+secret1+`", registered = `+tc.registered+`, renewed = "2020-01-01T00:00:00Z" };`)
			dst := openRegistry(t)
			var report bytes.Buffer
			sum, err := Import(ctx, FileStore{Dir: store}, dst, Options{Apps: []string{"apns"}, Report: &report})
			if err != nil {
				t.Fatal(err)
			}
			r, err := dst.Get(ctx, "far")
			if err != nil {
				t.Fatalf("%v\n%+v\n%s", err, sum, report.String())
			}
			want := time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)
			if !r.Registered.Equal(want) || !strings.Contains(report.String(), "unreadable registered") {
				t.Fatalf("registered %s imported as %v, want it unreadable and the renewal %v in its place (report %q)", tc.registered, r.Registered, want, report.String())
			}
		})
	}
}

// README: "Running it again is safe". A registration imported, then
// removed here (its device unregistered, or its push service declared its
// token dead and the server removed it), must not come back when the
// import runs again: the record in mod_push_appserver is older than the
// removal. Nor may one whose record has no time, which the import dates
// itself at each run.
func TestImportRerunDoesNotResurrectRemoved(t *testing.T) {
	for _, driver := range []string{"sqlite", "postgres"} {
		t.Run(driver, func(t *testing.T) {
			store := filepath.Join(t.TempDir(), "push_appserver")
			writeFile(t, filepath.Join(store, "a.dat"), `return { type = "apns", token = "aa", secret = "`+secret1+`", registered = "2020-01-01T00:00:00Z" };`)
			writeFile(t, filepath.Join(store, "b.dat"), `return { type = "apns", token = "bb", secret = "`+secret1+`" };`)
			writeFile(t, filepath.Join(store, "c.dat"), `return { type = "apns", token = "cc", secret = "`+secret1+`", registered = "2020-01-01T00:00:00Z" };`)
			dst := openStore(t, driver)
			if sum, err := Import(ctx, FileStore{Dir: store}, dst, Options{Apps: []string{"apns"}}); err != nil || sum.Imported != 3 {
				t.Fatalf("first run: %+v, %v", sum, err)
			}
			// APNS answers 410 Unregistered for a's token; b's device
			// unregisters.
			if _, err := dst.DeleteToken(ctx, "apns", "aa", time.Now()); err != nil {
				t.Fatal(err)
			}
			if _, err := dst.Delete(ctx, "b", "apns"); err != nil {
				t.Fatal(err)
			}
			// A day later: b's record would be dated then.
			later := func() time.Time { return time.Now().Add(24 * time.Hour) }
			var report bytes.Buffer
			sum, err := Import(ctx, FileStore{Dir: store}, dst, Options{Apps: []string{"apns"}, Report: &report, Now: later})
			if err != nil {
				t.Fatal(err)
			}
			for _, node := range []string{"a", "b"} {
				if r, err := dst.Get(ctx, node); err == nil {
					t.Errorf("the re-run brought back %s, removed here since the first run: %+v", node, r)
				}
			}
			if sum.Imported != 0 || sum.Unchanged != 1 || sum.Skipped["removed here since the last import"] != 2 {
				t.Errorf("re-run: summary %+v, report %q", sum, report.String())
			}
		})
	}
}

// A registration removed here comes back with a re-run when its record
// there is newer than what the last run imported: the device registered
// again on the old server (its app still pointed there), with a new
// token.
func TestImportRerunTakesRecordNewerThere(t *testing.T) {
	for _, driver := range []string{"sqlite", "postgres"} {
		t.Run(driver, func(t *testing.T) {
			store := filepath.Join(t.TempDir(), "push_appserver")
			writeFile(t, filepath.Join(store, "a.dat"), `return { type = "apns", token = "aa", secret = "`+secret1+`", registered = "2020-01-01T00:00:00Z" };`)
			dst := openStore(t, driver)
			if _, err := Import(ctx, FileStore{Dir: store}, dst, Options{Apps: []string{"apns"}}); err != nil {
				t.Fatal(err)
			}
			if _, err := dst.DeleteToken(ctx, "apns", "aa", time.Now()); err != nil {
				t.Fatal(err)
			}
			writeFile(t, filepath.Join(store, "a.dat"), `return { type = "apns", token = "a2", secret = "`+secret1+`", registered = "2020-01-01T00:00:00Z", renewed = "2020-01-02T00:00:00Z" };`)
			sum, err := Import(ctx, FileStore{Dir: store}, dst, Options{Apps: []string{"apns"}})
			if err != nil {
				t.Fatal(err)
			}
			if r, err := dst.Get(ctx, "a"); err != nil || r.Token != "a2" || sum.Imported != 1 {
				t.Fatalf("a record renewed there since the first run: %+v, %v (summary %+v), want it imported with its new token", r, err, sum)
			}
		})
	}
}

// openStore opens an empty registry of the driver given.
func openStore(t *testing.T, driver string) registry.Store {
	t.Helper()
	if driver == "sqlite" {
		return openRegistry(t)
	}
	p, err := postgres.Open(ctx, pg.DB(t), postgres.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

// README: "one line per record not imported as it is". A data file that
// is a symbolic link (a data_path assembled with links, a restored
// backup) is read where it leads to a file, and reported where it leads
// to something else: a FIFO, which opening would wait on forever, or
// nothing.
func TestImportReportsSymlinkedFile(t *testing.T) {
	dir := t.TempDir()
	store := filepath.Join(dir, "push_appserver")
	elsewhere := filepath.Join(dir, "elsewhere")
	writeFile(t, filepath.Join(elsewhere, "a.dat"), `return { type = "apns", token = "aa", secret = "`+secret1+`", registered = "2020-01-01T00:00:00Z" };`)
	if err := syscall.Mkfifo(filepath.Join(elsewhere, "fifo"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(store, 0o755); err != nil {
		t.Fatal(err)
	}
	for link, target := range map[string]string{"a.dat": "a.dat", "fifo.dat": "fifo", "gone.dat": "gone"} {
		if err := os.Symlink(filepath.Join(elsewhere, target), filepath.Join(store, link)); err != nil {
			t.Fatal(err)
		}
	}
	dst := openRegistry(t)
	var report bytes.Buffer
	sum, err := Import(ctx, FileStore{Dir: store}, dst, Options{Apps: []string{"apns"}, Report: &report})
	if err != nil {
		t.Fatal(err)
	}
	if sum.Total != 3 || sum.Imported != 1 || sum.SkippedTotal() != 2 {
		t.Fatalf("symlinked data files: summary %+v, report %q; want 3 read, 1 imported, 2 skipped", sum, report.String())
	}
	for _, name := range []string{"fifo.dat", "gone.dat"} {
		if !strings.Contains(report.String(), name) {
			t.Errorf("the report names no %s: %q", name, report.String())
		}
	}
	if _, err := dst.Get(ctx, "a"); err != nil {
		t.Errorf("the linked a.dat: %v", err)
	}
}

// clockedStore is a registry whose writes take the times given, on a
// clock that moves only by them and by the import's pauses.
type clockedStore struct {
	Store
	now    time.Time
	writes []time.Duration // how long each PutImported takes
	pauses []time.Duration
}

func (s *clockedStore) PutImportedRead(ctx context.Context, rs, read []registry.Registration) ([]string, error) {
	s.now = s.now.Add(s.writes[0])
	s.writes = s.writes[1:]
	return s.Store.PutImportedRead(ctx, rs, read)
}

func (s *clockedStore) clock() time.Time { return s.now }

func (s *clockedStore) sleep(ctx context.Context, d time.Duration) error {
	s.pauses = append(s.pauses, d)
	s.now = s.now.Add(d)
	return ctx.Err()
}

// records is a source of n registrations of distinct nodes.
func records(n int) oneRecord {
	var src oneRecord
	for i := range n {
		src = append(src, Record{Source: fmt.Sprint(i, ".dat"), Host: "h", Node: fmt.Sprintf("node-%05d", i), Fields: map[string]any{
			"type": "apns", "token": fmt.Sprintf("%064x", i), "secret": fmt.Sprintf("%064x", i+1), "timestamp": float64(1_800_000_000)}})
	}
	return src
}

// TestImportPausesBetweenBatches: the import leaves the registry to a
// running server's writes after each batch it wrote, as long as the
// write took and at least 150 ms: on SQLite the server waits for the
// write lock in a busy handler that looks again only every 100 ms, and a
// batch written at once after another takes the lock before it, batch
// after batch. Nothing is paused for after the last batch, nor in a dry
// run, which writes nothing.
func TestImportPausesBetweenBatches(t *testing.T) {
	ms := time.Millisecond
	for _, tt := range []struct {
		name   string
		dryRun bool
		writes []time.Duration
		pauses []time.Duration
	}{
		{"short writes pause 150 ms", false, []time.Duration{40 * ms, 90 * ms, 30 * ms}, []time.Duration{150 * ms, 150 * ms}},
		{"a long write pauses as long", false, []time.Duration{400 * ms, 10 * ms, 30 * ms}, []time.Duration{400 * ms, 150 * ms}},
		{"a dry run does not pause", true, nil, nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dst := &clockedStore{Store: memory.New(), now: time.Unix(1_800_000_000, 0), writes: tt.writes}
			sum, err := Import(ctx, records(2500), dst, Options{Apps: []string{"apns"}, DryRun: tt.dryRun, Now: dst.clock, Sleep: dst.sleep})
			if err != nil || sum.Imported != 2500 {
				t.Fatalf("%+v, %v", sum, err)
			}
			if fmt.Sprint(dst.pauses) != fmt.Sprint(tt.pauses) {
				t.Errorf("paused %v, want %v", dst.pauses, tt.pauses)
			}
		})
	}
}

// TestImportInterruptedInPauseCountsWrittenBatch: an import interrupted
// in the pause after a batch says it imported what it wrote: the summary
// printed then is all the operator has to go by.
func TestImportInterruptedInPauseCountsWrittenBatch(t *testing.T) {
	reg := memory.New()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	dst := &clockedStore{Store: reg, writes: []time.Duration{time.Millisecond}}
	sleep := func(ctx context.Context, d time.Duration) error {
		cancel()
		return dst.sleep(ctx, d)
	}
	sum, err := Import(ctx, records(2500), dst, Options{Apps: []string{"apns"}, Now: dst.clock, Sleep: sleep})
	n, _ := reg.Count(context.Background())
	if err == nil || len(dst.pauses) != 1 {
		t.Fatalf("import not interrupted in its first pause: %d pauses, %v", len(dst.pauses), err)
	}
	if sum.Imported != n || n != 1000 {
		t.Fatalf("summary says %d imported; the registry holds %d, want the first batch of 1000", sum.Imported, n)
	}
}

// Nodes are per host in mod_push_appserver and global here: of two
// hosts' records of one node the first is imported and the second
// skipped with its reason, never written over the first (whose user's
// server would then push with a secret no longer known here).
func TestImportSameNodeOnTwoHosts(t *testing.T) {
	dst := openRegistry(t)
	src := oneRecord{
		{Source: "a/n1.dat", Host: "a.example", Node: "n1", Fields: map[string]any{"type": "apns", "token": "aa11", "secret": "secret-a", "registered": "2020-01-01T00:00:00Z"}},
		{Source: "b/n1.dat", Host: "b.example", Node: "n1", Fields: map[string]any{"type": "apns", "token": "bb22", "secret": "secret-b", "registered": "2021-01-01T00:00:00Z"}},
	}
	var report bytes.Buffer
	sum, err := Import(ctx, src, dst, Options{Apps: []string{"apns"}, Report: &report})
	if err != nil {
		t.Fatal(err)
	}
	if sum.Imported != 1 || sum.Updated != 0 || sum.Skipped["node also registered in a/n1.dat"] != 1 {
		t.Fatalf("summary %+v\n%s", sum, report.String())
	}
	if r, err := dst.Get(ctx, "n1"); err != nil || r.Token != "aa11" || r.Secret != "secret-a" {
		t.Fatalf("n1: %+v, %v; want the first host's registration", r, err)
	}
}

// A record that would have replaced an older registration here, left
// out at the batch's re-check because the device registered again while
// the import ran, is counted as skipped, not as updated.
func TestImportRecheckSummaryOfUpdate(t *testing.T) {
	dst := openRegistry(t)
	const node = "n1"
	now := time.Now().UTC().Truncate(time.Second)
	if _, err := dst.Put(ctx, []registry.Registration{{Node: node, Type: "apns", Token: "ef56", Secret: "oldest", Registered: now.Add(-2 * time.Hour)}}); err != nil {
		t.Fatal(err)
	}
	newer := registry.Registration{Node: node, Type: "apns", Token: "ab12", Secret: "new-secret", Registered: now}
	armed := false
	st := racingStore{Store: dst, node: node, after: func() {
		// The first look judges the record newer than what is here;
		// the device registers before the batch is written.
		if armed {
			return
		}
		armed = true
		if _, err := dst.Register(ctx, node, func(registry.Registration, bool) (registry.Registration, error) { return newer, nil }); err != nil {
			t.Fatal(err)
		}
	}}
	src := oneRecord{{Source: "n1.dat", Host: "h", Node: node, Fields: map[string]any{
		"type": "apns", "token": "cd34", "secret": "old", "registered": now.Add(-time.Hour).Format(time.RFC3339)}}}
	sum, err := Import(ctx, src, st, Options{Apps: []string{"apns"}})
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	sum.WriteTo(&b)
	if sum.Imported+sum.Updated != 0 || sum.Skipped["registered here while the import ran"] != 1 {
		t.Fatalf("nothing was imported, yet the summary says:\n%s", b.String())
	}
	if r, err := dst.Get(ctx, node); err != nil || r.Secret != "new-secret" {
		t.Fatalf("%s: %+v, %v", node, r, err)
	}
}

// A re-run takes a record renewed in mod_push_appserver since the last
// run: the renewal is a sign of life, and left at its older time here a
// prune would take the registration for idle.
func TestImportRerunTakesLaterRenewal(t *testing.T) {
	dst := openRegistry(t)
	rec := func(renewed string) oneRecord {
		return oneRecord{{Source: "n1.dat", Host: "h", Node: "n1", Fields: map[string]any{
			"type": "apns", "token": "ab12", "secret": secret1, "registered": "2020-01-01T00:00:00Z", "renewed": renewed}}}
	}
	if _, err := Import(ctx, rec("2020-02-01T00:00:00Z"), dst, Options{Apps: []string{"apns"}}); err != nil {
		t.Fatal(err)
	}
	sum, err := Import(ctx, rec("2021-02-01T00:00:00Z"), dst, Options{Apps: []string{"apns"}})
	if err != nil || sum.Updated != 1 {
		t.Fatalf("re-run: %+v, %v; want 1 updated", sum, err)
	}
	if r, err := dst.Get(ctx, "n1"); err != nil || !r.Renewed.Equal(mustTime("2021-02-01T00:00:00Z")) {
		t.Fatalf("n1 renewed %v (%v), want the later renewal", r.Renewed, err)
	}
}

// registeredBeforeWrite is a registry on which the device registers
// node (newer) just before the import writes its batch, once.
type registeredBeforeWrite struct {
	*sqlite.Store
	node  string
	newer registry.Registration
	done  bool
}

func (s *registeredBeforeWrite) register(ctx context.Context) error {
	if s.done {
		return nil
	}
	s.done = true
	_, err := s.Store.Register(ctx, s.node, func(registry.Registration, bool) (registry.Registration, error) { return s.newer, nil })
	return err
}

func (s *registeredBeforeWrite) PutImported(ctx context.Context, rs []registry.Registration) error {
	if err := s.register(ctx); err != nil {
		return err
	}
	return s.Store.PutImported(ctx, rs)
}

func (s *registeredBeforeWrite) PutImportedRead(ctx context.Context, rs, read []registry.Registration) ([]string, error) {
	if err := s.register(ctx); err != nil {
		return nil, err
	}
	return s.Store.PutImportedRead(ctx, rs, read)
}

// TestImportKeepsRegistrationMadeBeforeWrite: a registration the device
// makes here between the batch's last look at its node and the batch's
// write stays, as one made before that look does
// (TestImportKeepsRegistrationMadeDuringImport), and the record counts
// as skipped. Written over, the node went back to the record's older
// token and secret, and the user's server, which pushes with the new
// secret, had its pushes refused as unknown.
func TestImportKeepsRegistrationMadeBeforeWrite(t *testing.T) {
	for _, held := range []bool{false, true} {
		t.Run(fmt.Sprintf("held here before: %v", held), func(t *testing.T) {
			dst := openRegistry(t)
			const node = "n1"
			now := time.Now().UTC().Truncate(time.Second)
			if held {
				if _, err := dst.Put(ctx, []registry.Registration{{Node: node, Type: "apns", Token: "ef56", Secret: "oldest", Registered: now.Add(-2 * time.Hour)}}); err != nil {
					t.Fatal(err)
				}
			}
			newer := registry.Registration{Node: node, Type: "apns", Token: "ab12", Secret: "new-secret", Registered: now}
			st := &registeredBeforeWrite{Store: dst, node: node, newer: newer}
			src := oneRecord{{Source: "n1.dat", Host: "h", Node: node, Fields: map[string]any{
				"type": "apns", "token": "cd34", "secret": "old", "registered": now.Add(-time.Hour).Format(time.RFC3339)}}}
			sum, err := Import(ctx, src, st, Options{Apps: []string{"apns"}})
			if err != nil {
				t.Fatal(err)
			}
			if !st.done {
				t.Fatal("the import wrote no batch")
			}
			if r, err := dst.Get(ctx, node); err != nil || r.Secret != "new-secret" || r.Token != "ab12" {
				t.Fatalf("the registration made before the batch's write: %+v, %v; want it kept", r, err)
			}
			if sum.Imported+sum.Updated != 0 || sum.Skipped["registered here while the import ran"] != 1 {
				t.Errorf("summary %+v: want the record skipped as registered here while the import ran", sum)
			}
		})
	}
}
