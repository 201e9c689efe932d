package sqlite_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/push-appserver/push-appserver/internal/procs"
	"github.com/push-appserver/push-appserver/internal/registry"
	"github.com/push-appserver/push-appserver/internal/registry/sqlite"
	"github.com/push-appserver/push-appserver/internal/registry/storetest"
	"github.com/push-appserver/push-appserver/internal/testutil/oldregistry"
)

func open(t testing.TB, path string) *sqlite.Store {
	t.Helper()
	s, err := sqlite.Open(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestStore(t *testing.T) {
	storetest.Run(t, func(t *testing.T) registry.Store {
		s := open(t, filepath.Join(t.TempDir(), "registry.db"))
		t.Cleanup(func() { s.Close() })
		return s
	})
}

func TestSurvivesReopen(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "registry.db")
	s := open(t, path)
	at := time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)
	if _, err := register(s, registry.Registration{Node: "n", Type: "apns", Token: "t", Secret: "s", Registered: at}); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s = open(t, path)
	defer s.Close()
	r, err := s.Get(ctx, "n")
	if err != nil || r.Secret != "s" || !r.Registered.Equal(at) {
		t.Fatalf("after reopen: %+v, %v", r, err)
	}
}

// The registry holds every secret: its files are the server's alone,
// whatever the umask, and a file made readable by others is closed again.
func TestFileModes(t *testing.T) {
	old := syscall.Umask(0o022)
	defer syscall.Umask(old)
	dir := t.TempDir()
	path := filepath.Join(dir, "registry.db")
	s := open(t, path)
	if _, err := register(s, registry.Registration{Node: "n", Type: "apns", Token: "t", Secret: "s", Registered: time.Now()}); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{path, path + "-wal", path + "-shm"} {
		st, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != 0o600 {
			t.Errorf("%s has mode %v, want 0600", filepath.Base(p), st.Mode().Perm())
		}
	}
	s.Close()

	loose := filepath.Join(dir, "loose.db")
	open(t, loose).Close()
	if err := os.Chmod(loose, 0o644); err != nil {
		t.Fatal(err)
	}
	open(t, loose).Close()
	if st, _ := os.Stat(loose); st.Mode().Perm() != 0o600 {
		t.Errorf("reopened registry has mode %v, want 0600", st.Mode().Perm())
	}
}

func TestNewerSchemaRefused(t *testing.T) {
	path := filepath.Join(t.TempDir(), "registry.db")
	open(t, path).Close()
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`PRAGMA user_version = 999`); err != nil {
		t.Fatal(err)
	}
	db.Close()
	_, err = sqlite.Open(context.Background(), path)
	if err == nil || !strings.Contains(err.Error(), "newer than this program knows") {
		t.Fatalf("Open of a newer schema = %v", err)
	}
}

func TestBadPath(t *testing.T) {
	dir := t.TempDir()
	junk := filepath.Join(dir, "junk.db")
	os.WriteFile(junk, []byte(strings.Repeat("not a database ", 100)), 0o600)
	for _, p := range []string{filepath.Join(dir, "missing-dir", "registry.db"), junk} {
		if s, err := sqlite.Open(context.Background(), p); err == nil {
			s.Close()
			t.Errorf("Open(%s) succeeded", p)
		} else if !strings.Contains(err.Error(), p) {
			t.Errorf("error %q does not name the file", err)
		}
	}
}

// BenchmarkGet looks registrations of real size and scattered nodes,
// pushed to before, up under a context with a deadline, as the push path
// does: whole, with their push outcomes (Get, a join), and what a push
// needs (GetPushTarget).
func BenchmarkGet(b *testing.B) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Hour)
	defer cancel()
	s := open(b, filepath.Join(b.TempDir(), "registry.db"))
	defer s.Close()
	const n = 10000
	nodes := scattered(n)
	var pushed []registry.PushStatus
	for i, node := range nodes {
		register(s, registry.Registration{Node: node, Type: "apns", Token: fmt.Sprintf("%064x", i), Secret: fmt.Sprintf("%064x", -i), Registered: time.Now()})
		pushed = append(pushed, registry.PushStatus{Node: node, At: time.Now(), Success: true})
	}
	if err := s.UpdatePushStatus(ctx, pushed); err != nil {
		b.Fatal(err)
	}
	for _, get := range []struct {
		name string
		fn   func(context.Context, string) error
	}{
		{"Get", func(ctx context.Context, node string) error { _, err := s.Get(ctx, node); return err }},
		{"GetPushTarget", func(ctx context.Context, node string) error { _, err := s.GetPushTarget(ctx, node); return err }},
	} {
		b.Run(get.name, func(b *testing.B) {
			b.RunParallel(func(pb *testing.PB) {
				i := 0
				for pb.Next() {
					if err := get.fn(ctx, nodes[i%n]); err != nil {
						b.Fatal(err)
					}
					i++
				}
			})
		})
	}
}

// GetPushTarget reads what a push needs, the same as Get's.
func TestGetPushTarget(t *testing.T) {
	ctx := context.Background()
	s := open(t, filepath.Join(t.TempDir(), "registry.db"))
	defer s.Close()
	at := time.Date(2026, 5, 6, 7, 8, 9, 123456789, time.UTC)
	r := registry.Registration{Node: "n", Type: "apns", Token: "tok", Secret: "sec", Registered: at, Renewed: at.Add(time.Hour),
		Domain: "example.org", DeviceKey: "key", Owner: "owner", Account: "user@example.org"}
	if _, err := register(s, r); err != nil {
		t.Fatal(err)
	}
	want := registry.PushTarget{Type: "apns", Token: "tok", Secret: "sec", Account: "user@example.org"}
	if full, err := s.Get(ctx, "n"); err != nil || full.Target() != want {
		t.Fatalf("Get = %+v, %v", full, err)
	}
	got, err := s.GetPushTarget(ctx, "n")
	if err != nil {
		t.Fatal(err)
	}
	if got != want {
		t.Fatalf("GetPushTarget = %+v\nwant            %+v", got, want)
	}
	if _, err := s.GetPushTarget(ctx, "unknown"); !errors.Is(err, registry.ErrNotFound) {
		t.Fatalf("unknown node: %v", err)
	}
	done, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := s.GetPushTarget(done, "n"); !errors.Is(err, context.Canceled) {
		t.Fatalf("under an ended context: %v", err)
	}
}

// GetPushTarget reads its four values as one text and splits it by
// their byte lengths, so values holding colons, digits or characters of
// several bytes come back as they were stored.
func TestGetPushTargetAnyText(t *testing.T) {
	ctx := context.Background()
	s := open(t, filepath.Join(t.TempDir(), "registry.db"))
	defer s.Close()
	for i, want := range []registry.PushTarget{
		{Type: "app:2", Token: "12:ab€", Secret: "3:s:", Account: "ü@example.org/ré:s"},
		{Type: "fcm", Token: "dGVzdA==:APA91b", Secret: "00", Account: ""},
		{Type: "€", Token: "€€", Secret: "€€€", Account: "€"},
	} {
		node := fmt.Sprintf("node-%d", i)
		r := registry.Registration{Node: node, Type: want.Type, Token: want.Token, Secret: want.Secret, Account: want.Account, Registered: time.Now()}
		if _, err := register(s, r); err != nil {
			t.Fatal(err)
		}
		got, err := s.GetPushTarget(ctx, node)
		if err != nil || got != want {
			t.Errorf("GetPushTarget(%s) = %+v, %v\nwant %+v", node, got, err, want)
		}
	}
}

// A text that is not selectTarget's shape is refused, not split at a
// guess.
func TestParseTargetRefusesMalformed(t *testing.T) {
	for _, v := range []string{"", "4:", "4:1:1", "a:1:1:xxx", "-1:1:1:xxx", "1:1:1:xx", "99999999999999999999:0:0:x", "0:0:0",
		"9223372036854775807:9223372036854775807:2:xx"} {
		if got, ok := sqlite.ParseTarget(v); ok {
			t.Errorf("ParseTarget(%q) = %+v, true; want false", v, got)
		}
	}
	if got, ok := sqlite.ParseTarget("0:0:0:"); !ok || got != (registry.PushTarget{}) {
		t.Errorf("ParseTarget(\"0:0:0:\") = %+v, %v; want empty values", got, ok)
	}
}

// TestWritePragmas reads back the writer's settings that nothing else
// would notice, since SQLite ignores a pragma it does not know: the log
// checkpointed every walCheckpoint pages, not every 1,000 (SQLite's
// default), and synchronous=FULL, without which a commit in WAL mode
// reaches the disk only at the next checkpoint, so a power cut loses
// registrations already answered with OK.
func TestWritePragmas(t *testing.T) {
	s := open(t, filepath.Join(t.TempDir(), "registry.db"))
	defer s.Close()
	for _, tc := range []struct {
		pragma string
		want   int
	}{
		{"wal_autocheckpoint", 30000},
		{"synchronous", 2}, // FULL
	} {
		if n, err := sqlite.WritePragma(s, tc.pragma); err != nil || n != tc.want {
			t.Errorf("%s = %d, %v; want %d", tc.pragma, n, err, tc.want)
		}
	}
}

func BenchmarkRegister(b *testing.B) {
	s := open(b, filepath.Join(b.TempDir(), "registry.db"))
	defer s.Close()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		if _, err := register(s, registry.Registration{Node: fmt.Sprintf("node-%d", i), Type: "apns", Token: "t", Secret: "s", Registered: time.Now()}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkUpdatePushStatus writes the outcomes of 1,000 pushes to
// distinct devices among 20,000, each newer than the last, in node order:
// what the write-behind does every interval under load. Rows are the size
// of real ones (an APNS token and a secret of 64 hex digits each), and
// nodes are scattered as real ones are (in order, consecutive rows would
// share pages).
func BenchmarkUpdatePushStatus(b *testing.B) {
	// Under a deadline, as the write-behind writes.
	ctx, cancel := context.WithTimeout(context.Background(), time.Hour)
	defer cancel()
	s := open(b, filepath.Join(b.TempDir(), "registry.db"))
	defer s.Close()
	const devices, batchSize = 20000, 1000
	nodes := scattered(devices)
	for i, node := range nodes {
		register(s, registry.Registration{Node: node, Type: "apns", Token: fmt.Sprintf("%064x", i), Secret: fmt.Sprintf("%064x", -i), Registered: time.Now()})
	}
	batch := make([]registry.PushStatus, batchSize)
	at := time.Now()
	cpu0 := procs.CPUTime()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		at = at.Add(time.Millisecond)
		for j := range batch {
			batch[j] = registry.PushStatus{Node: nodes[(i*batchSize+j*7)%devices], At: at, Success: j%10 != 0, Reason: "x"}
		}
		slices.SortFunc(batch, func(a, b registry.PushStatus) int { return strings.Compare(a.Node, b.Node) })
		if err := s.UpdatePushStatus(ctx, batch); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*batchSize), "ns/row")
	// The writes wait for the disk: their CPU is what the push path's
	// processors lose to them.
	b.ReportMetric(float64((procs.CPUTime()-cpu0).Nanoseconds())/float64(b.N*batchSize), "cpu-ns/row")
}

// scattered returns n nodes spread over the key space as real devices'
// are; in order, consecutive rows would share the table's pages.
func scattered(n int) []string {
	nodes := make([]string, n)
	for i := range nodes {
		h := sha256.Sum256(fmt.Appendf(nil, "node %d", i))
		nodes[i] = hex.EncodeToString(h[:16])
	}
	return nodes
}

func register(s *sqlite.Store, r registry.Registration) (registry.Registration, error) {
	return s.Register(context.Background(), r.Node, registry.Renew(r))
}

// The block list is what tokenless pushes have instead of deleting a
// registration: it must outlive a restart (fpush keeps it in memory and
// forgets it).
func TestBlockedTokenSurvivesReopen(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "registry.db")
	s := open(t, path)
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	b := registry.BlockedToken{Type: "apns", Token: "ab12", Since: at, Until: at.Add(24 * time.Hour), Reason: "Unregistered"}
	if err := s.BlockToken(ctx, b); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s = open(t, path)
	defer s.Close()
	got, err := s.GetBlockedToken(ctx, "apns", "ab12")
	if err != nil || !got.Until.Equal(b.Until) || got.Reason != b.Reason {
		t.Fatalf("after reopening: %+v, %v; want %+v", got, err, b)
	}
}

// Prosody's data folders are named like push%2eexample%2eorg; a path is
// a path, not a URI.
func TestPathWithURICharacters(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "push%2eexample?x#y")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	s := open(t, filepath.Join(dir, "registry.db"))
	defer s.Close()
	if _, err := s.Count(context.Background()); err != nil {
		t.Fatal(err)
	}
	// The push path's lookups open the file on connections of their own.
	if _, err := register(s, registry.Registration{Node: "n", Type: "apns", Token: "t", Secret: "s", Registered: time.Now()}); err != nil {
		t.Fatal(err)
	}
	if got, err := s.GetPushTarget(context.Background(), "n"); err != nil || got.Token != "t" {
		t.Fatalf("GetPushTarget = %+v, %v", got, err)
	}
	if _, err := os.Stat(filepath.Join(dir, "registry.db")); err != nil {
		t.Fatalf("the database is not where it was asked for: %v", err)
	}
}

// Get reads under a context that can end, and refuses one that has.
func TestGetHonoursContext(t *testing.T) {
	s := open(t, filepath.Join(t.TempDir(), "registry.db"))
	defer s.Close()
	if _, err := register(s, registry.Registration{Node: "n", Type: "apns", Token: "t", Secret: "s", Registered: time.Now()}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	if r, err := s.Get(ctx, "n"); err != nil || r.Secret != "s" {
		t.Fatalf("Get = %+v, %v", r, err)
	}
	cancel()
	if _, err := s.Get(ctx, "n"); !errors.Is(err, context.Canceled) {
		t.Fatalf("Get after the context ended = %v, want context.Canceled", err)
	}
}

// A registry written before push outcomes had a table of their own keeps
// them across the upgrade, and a server of the previous version still
// running on the file (an upgraded binary's command run before the
// server's restart) can still read and write it.
func TestPushStatusMoved(t *testing.T) {
	path := filepath.Join(t.TempDir(), "registry.db")
	at := time.Date(2026, 5, 6, 7, 8, 9, 123456789, time.UTC)
	oldregistry.Write(t, path, "migrations", 5, `INSERT INTO registrations (node, type, token, secret, registered, last_successful_push, last_push_error, last_error_reason)
		VALUES ('pushed', 'apns', 't', 's', 1, ?1, ?2, 'BadDeviceToken'), ('never', 'apns', 't', 's', 1, NULL, NULL, '')`, at.UnixNano(), at.Add(time.Second).UnixNano())

	s := open(t, path)
	defer s.Close()
	r, err := s.Get(context.Background(), "pushed")
	if err != nil {
		t.Fatal(err)
	}
	if !r.LastSuccessfulPush.Equal(at) || !r.LastPushError.Equal(at.Add(time.Second)) || r.LastErrorReason != "BadDeviceToken" {
		t.Fatalf("after the upgrade: %+v", r)
	}
	if r, err := s.Get(context.Background(), "never"); err != nil || !r.LastSuccessfulPush.IsZero() || r.LastErrorReason != "" {
		t.Fatalf("never pushed: %+v, %v", r, err)
	}
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var n int
	if err := db.QueryRow(`SELECT COUNT(*) FROM push_status`).Scan(&n); err != nil || n != 1 {
		t.Fatalf("push_status rows: %d, %v; want 1", n, err)
	}
	// What a server of version 5 reads and writes.
	for _, q := range []string{
		`SELECT node, type, token, secret, registered, renewed, last_successful_push, last_push_error, last_error_reason,
			domain, device_key, owner, account FROM registrations WHERE node = 'pushed'`,
		`UPDATE registrations SET last_push_error = 1, last_error_reason = 'x' WHERE node = 'pushed'`,
		`INSERT INTO registrations (node, type, token, secret, registered, renewed, last_successful_push, last_push_error,
			last_error_reason, domain, device_key, owner, account) VALUES ('v5', 'apns', 't', 's', 1, NULL, NULL, NULL, '', '', NULL, '', '')`,
	} {
		if _, err := db.Exec(q); err != nil {
			t.Errorf("a statement of the previous version: %v\n%s", err, q)
		}
	}
}

// Ping reads the registry: it fails when the read cannot be made.
func TestPing(t *testing.T) {
	s := open(t, filepath.Join(t.TempDir(), "registry.db"))
	if err := s.Ping(t.Context()); err != nil {
		t.Fatalf("Ping of an open registry: %v", err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := s.Ping(ctx); err == nil {
		t.Error("Ping under an ended context succeeded")
	}
	s.Close()
	if err := s.Ping(t.Context()); err == nil {
		t.Error("Ping of a closed registry succeeded")
	}
}

// A backup killed midway (kill -9, which no deferred removal survives)
// left a copy that was not whole under the backup's own name, which
// push-appserver-backup.service's retention counts as a backup. The name
// now appears only once the copy is whole and checked: whenever it is
// seen while the backup runs, it names the whole copy.
func TestBackupNameOnlyWhole(t *testing.T) {
	ctx := t.Context()
	dir := t.TempDir()
	path := filepath.Join(dir, "registry.db")
	s := open(t, path)
	defer s.Close()
	// Large enough that copying it takes a while to watch.
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM c WHERE i < 100000)
		INSERT INTO registrations (node, type, token, secret, registered) SELECT printf('n%07d', i), 'apns', printf('%064d', i), printf('%064d', -i), 1 FROM c`); err != nil {
		t.Fatal(err)
	}
	db.Close()
	backup := filepath.Join(dir, "backup.db")
	done := make(chan error, 1)
	go func() { _, err := s.Backup(ctx, backup); done <- err }()
	seen := int64(-1)
	for finished := false; !finished; {
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
			finished = true
		default:
		}
		if fi, err := os.Stat(backup); err == nil && seen < 0 {
			seen = fi.Size()
		}
	}
	fi, err := os.Stat(backup)
	if err != nil {
		t.Fatal(err)
	}
	if seen != fi.Size() {
		t.Errorf("the backup's name named %d bytes while the backup ran, the whole copy is %d: a backup killed then leaves a copy that is not whole", seen, fi.Size())
	}
	if left, _ := filepath.Glob(filepath.Join(dir, ".backup.db.partial-*")); len(left) > 0 {
		t.Errorf("left behind: %v", left)
	}
}

// A backup is the registry as it was, secrets and salt included, made
// while it is written, readable by its owner alone; it never overwrites
// a file, and one that failed leaves nothing behind.
func TestBackup(t *testing.T) {
	ctx := t.Context()
	dir := t.TempDir()
	s := open(t, filepath.Join(dir, "registry.db"))
	defer s.Close()
	want := map[string]string{}
	for i := range 500 {
		node := fmt.Sprintf("n%d", i)
		r, err := s.Register(ctx, node, func(registry.Registration, bool) (registry.Registration, error) {
			return registry.Registration{Node: node, Type: "apns", Token: fmt.Sprintf("%064x", i), Secret: fmt.Sprintf("secret-%d", i), Registered: time.Now()}, nil
		})
		if err != nil {
			t.Fatal(err)
		}
		want[node] = r.Secret
	}
	salt, err := s.InstanceValue(ctx, "device-key-salt", func() (string, error) { return "the-salt", nil })
	if err != nil {
		t.Fatal(err)
	}
	// Registrations go on while the backup is made.
	stop := make(chan struct{})
	writing := make(chan error, 1)
	go func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				writing <- nil
				return
			default:
			}
			node := fmt.Sprintf("during-%d", i)
			if _, err := s.Register(ctx, node, func(registry.Registration, bool) (registry.Registration, error) {
				return registry.Registration{Node: node, Type: "apns", Token: "t", Secret: "s", Registered: time.Now()}, nil
			}); err != nil {
				writing <- err
				return
			}
		}
	}()
	path := filepath.Join(dir, "backup.db")
	n, err := s.Backup(ctx, path)
	close(stop)
	if werr := <-writing; werr != nil {
		t.Fatalf("registering during the backup: %v", werr)
	}
	if err != nil {
		t.Fatal(err)
	}
	if n < len(want) {
		t.Errorf("the backup holds %d registrations, want at least %d", n, len(want))
	}
	if st, err := os.Stat(path); err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("backup's mode: %v, %v; want 0600", st.Mode(), err)
	}

	b := open(t, path)
	defer b.Close()
	for node, secret := range want {
		r, err := b.Get(ctx, node)
		if err != nil || r.Secret != secret {
			t.Fatalf("backup's %s: %+v, %v", node, r, err)
		}
	}
	if got, err := b.InstanceValue(ctx, "device-key-salt", func() (string, error) { return "another salt", nil }); err != nil || got != salt {
		t.Errorf("backup's salt: %q, %v; want %q", got, err, salt)
	}
	if count, err := b.Count(ctx); err != nil || count != n {
		t.Errorf("backup opened holds %d registrations (%v); Backup said %d", count, err, n)
	}

	if _, err := s.Backup(ctx, path); err == nil || !errors.Is(err, fs.ErrExist) {
		t.Errorf("a backup over an existing file: %v, want it refused", err)
	}
	missing := filepath.Join(dir, "no-such-dir", "backup.db")
	if _, err := s.Backup(ctx, missing); err == nil {
		t.Error("a backup into a missing directory succeeded")
	}
	canceled, cancel := context.WithCancel(ctx)
	cancel()
	failed := filepath.Join(dir, "failed.db")
	if _, err := s.Backup(canceled, failed); err == nil {
		t.Error("a backup under an ended context succeeded")
	}
	if _, err := os.Stat(failed); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("a failed backup left its file behind: %v", err)
	}
}

// Restore puts a backup in place of a registry nobody has open, keeps
// the registry it replaces beside it, and refuses, changing nothing, while
// the registry is open or when the backup is not one it can use.
func TestRestore(t *testing.T) {
	ctx := t.Context()
	dir := t.TempDir()
	path := filepath.Join(dir, "registry.db")
	s := open(t, path)
	reg := func(s *sqlite.Store, node string) {
		t.Helper()
		if _, err := s.Register(ctx, node, func(registry.Registration, bool) (registry.Registration, error) {
			return registry.Registration{Node: node, Type: "apns", Token: "t-" + node, Secret: "s-" + node, Registered: time.Now()}, nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 10 {
		reg(s, fmt.Sprint("n", i))
	}
	backup := filepath.Join(dir, "backup.db")
	if _, err := s.Backup(ctx, backup); err != nil {
		t.Fatal(err)
	}
	reg(s, "after-backup")

	count := func(p string) int {
		t.Helper()
		s := open(t, p)
		defer s.Close()
		n, err := s.Count(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	if _, _, err := sqlite.Restore(ctx, backup, path); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("restore while the registry is open: %v", err)
	}
	s.Close()
	if n := count(path); n != 11 {
		t.Fatalf("after a refused restore the registry holds %d, want 11", n)
	}

	// Not a registry, and a registry of a newer version: refused too.
	junk := filepath.Join(dir, "junk.db")
	os.WriteFile(junk, []byte("not a database at all, not even close to one"), 0o600)
	newer := filepath.Join(dir, "newer.db")
	if err := copyTo(backup, newer); err != nil {
		t.Fatal(err)
	}
	db, err := sql.Open("sqlite", newer)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`PRAGMA user_version = 1000`); err != nil {
		t.Fatal(err)
	}
	db.Close()
	for _, bad := range []string{junk, newer, filepath.Join(dir, "missing.db")} {
		if _, _, err := sqlite.Restore(ctx, bad, path); err == nil {
			t.Errorf("restore of %s succeeded", filepath.Base(bad))
		}
	}
	if n := count(path); n != 11 {
		t.Fatalf("after refused restores the registry holds %d, want 11", n)
	}

	n, aside, err := sqlite.Restore(ctx, backup, path)
	if err != nil {
		t.Fatal(err)
	}
	if n != 10 {
		t.Errorf("restored %d registrations, want 10", n)
	}
	if aside == "" || count(aside) != 11 {
		t.Errorf("the registry replaced is not kept whole at %q", aside)
	}
	r := open(t, path)
	defer r.Close()
	if got, err := r.Get(ctx, "n3"); err != nil || got.Secret != "s-n3" {
		t.Errorf("restored n3: %+v, %v", got, err)
	}
	if _, err := r.Get(ctx, "after-backup"); !errors.Is(err, registry.ErrNotFound) {
		t.Errorf("a registration made after the backup is in the restored registry: %v", err)
	}
	if st, err := os.Stat(path); err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("restored registry's mode: %v, %v; want 0600", st.Mode(), err)
	}

	// Where there is no registry yet, nothing is kept aside; but a log
	// left under its name, which SQLite would apply to the copy, stops it.
	fresh := filepath.Join(t.TempDir(), "registry.db")
	os.WriteFile(fresh+"-wal", []byte("a stray log"), 0o600)
	if _, _, err := sqlite.Restore(ctx, backup, fresh); err == nil {
		t.Error("restore beside a stray log succeeded")
	}
	if _, err := os.Stat(fresh); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("restore beside a stray log put the copy in place: %v", err)
	}
	os.Remove(fresh + "-wal")
	if n, aside, err := sqlite.Restore(ctx, backup, fresh); err != nil || n != 10 || aside != "" {
		t.Errorf("restore where there was no registry: %d, %q, %v", n, aside, err)
	}
}

func copyTo(src, dst string) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	return os.WriteFile(dst, b, 0o600)
}

// BenchmarkKeepPushes writes what a server keeps for redelivery during a
// push service's outage: a second's worth of failed pushes, each to
// another device, replaced a second later. It reports the cost per push.
func BenchmarkKeepPushes(b *testing.B) {
	s := open(b, filepath.Join(b.TempDir(), "registry.db"))
	defer s.Close()
	const perWrite = 2000
	put := make([]registry.HeldPush, perWrite)
	for i := range put {
		put[i] = registry.HeldPush{Device: fmt.Sprintf("node %064x", i), FailedAt: time.Now(), Push: bytes.Repeat([]byte("x"), 300)}
	}
	ctx := context.Background()
	for i := 0; b.Loop(); i++ {
		if err := s.KeepPushes(ctx, "bench", time.Minute, i > 0, put, nil); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N*perWrite), "µs/push")
}

// Two processes opening a registry of an older schema at once (a new
// binary's server starting while its backup timer or an admin command
// runs): the second must wait for the first's migration, not run it again.
func TestConcurrentOpensMigrateOnce(t *testing.T) {
	for round := range 5 {
		path := filepath.Join(t.TempDir(), "registry.db")
		oldregistry.Write(t, path, "migrations", 5, `INSERT INTO registrations (node, type, token, secret, registered) VALUES ('n', 'apns', 't', 's', 1)`)
		errs := make(chan error, 2)
		for range 2 {
			go func() {
				s, err := sqlite.Open(context.Background(), path)
				if err == nil {
					s.Close()
				}
				errs <- err
			}()
		}
		for range 2 {
			if err := <-errs; err != nil {
				t.Fatalf("round %d: a second process opening the registry while the first migrates it: %v", round, err)
			}
		}
	}
}

// A restore that fails after the checks (a .restoring file left by an
// interrupted restore; FILE naming the registry itself) must leave the
// registry where it was: a server started next would otherwise create an
// empty one and answer every push item-not-found.
func TestRestoreFailureKeepsRegistry(t *testing.T) {
	for _, tc := range []string{"leftover temporary file", "backup is the registry"} {
		t.Run(tc, func(t *testing.T) {
			ctx := t.Context()
			dir := t.TempDir()
			path := filepath.Join(dir, "registry.db")
			s := open(t, path)
			if _, err := s.Register(ctx, "n1", func(registry.Registration, bool) (registry.Registration, error) {
				return registry.Registration{Node: "n1", Type: "apns", Token: "t", Secret: "s", Registered: time.Now()}, nil
			}); err != nil {
				t.Fatal(err)
			}
			backup := filepath.Join(dir, "backup.db")
			if _, err := s.Backup(ctx, backup); err != nil {
				t.Fatal(err)
			}
			s.Close()
			if tc == "leftover temporary file" {
				os.WriteFile(path+".restoring", []byte("partial"), 0o600)
			} else {
				backup = path
			}
			_, aside, err := sqlite.Restore(ctx, backup, path)
			t.Logf("restore: aside %q, err %v", aside, err)
			if err == nil {
				return
			}
			if _, serr := os.Stat(path); serr != nil {
				t.Fatalf("the restore failed (%v) and left no registry at %s: %v", err, path, serr)
			}
		})
	}
}

// Two restores in a row (the wrong backup, then the right one) keep the
// registry the first replaced: each restore keeps what it replaces.
func TestRestoreTwiceKeepsFirstReplaced(t *testing.T) {
	ctx := t.Context()
	dir := t.TempDir()
	path := filepath.Join(dir, "registry.db")
	mk := func(p string, nodes ...string) {
		s := open(t, p)
		for _, n := range nodes {
			if _, err := s.Register(ctx, n, func(registry.Registration, bool) (registry.Registration, error) {
				return registry.Registration{Node: n, Type: "apns", Token: "t", Secret: "s", Registered: time.Now()}, nil
			}); err != nil {
				t.Fatal(err)
			}
		}
		s.Close()
	}
	mk(path, "original")
	a, b := filepath.Join(dir, "a.db"), filepath.Join(dir, "b.db")
	mk(a, "from-a")
	mk(b, "from-b")
	_, aside1, err := sqlite.Restore(ctx, a, path)
	if err != nil {
		t.Fatal(err)
	}
	_, aside2, err := sqlite.Restore(ctx, b, path)
	if err != nil {
		t.Fatal(err)
	}
	s := open(t, aside1)
	defer s.Close()
	if _, err := s.Get(ctx, "original"); err != nil {
		t.Fatalf("the registry the first restore replaced is gone (first kept at %s, second at %s): %v", aside1, aside2, err)
	}
}

// Released held pushes are taken through their index, in its order: no
// sort of the whole released set for each page, under the write lock.
func TestReleasedPushesIndexed(t *testing.T) {
	path := filepath.Join(t.TempDir(), "registry.db")
	open(t, path).Close()
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	rows, err := db.Query(`EXPLAIN QUERY PLAN `+sqlite.ReleasedPushes, 100)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var plan []string
	for rows.Next() {
		var id, parent, notused int
		var detail string
		if err := rows.Scan(&id, &parent, &notused, &detail); err != nil {
			t.Fatal(err)
		}
		plan = append(plan, detail)
	}
	if p := strings.Join(plan, "; "); !strings.Contains(p, "held_pushes_released") || strings.Contains(p, "TEMP B-TREE") {
		t.Fatalf("plan of taking released pushes: %s", p)
	}
}

// OpenCopy reads a registry without writing it: the copy holds its
// registrations, the file stays as it was, and closing the copy removes it.
func TestOpenCopy(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "registry.db")
	s := open(t, path)
	if _, err := s.Register(ctx, "n1", func(registry.Registration, bool) (registry.Registration, error) {
		return registry.Registration{Node: "n1", Type: "apns", Token: "t", Secret: "s", Registered: time.Now()}, nil
	}); err != nil {
		t.Fatal(err)
	}
	s.Close()
	before, _ := os.Stat(path)
	c, err := sqlite.OpenCopy(ctx, path, "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Get(ctx, "n1"); err != nil {
		t.Fatalf("the copy: %v", err)
	}
	dir := sqlite.CopyDir(c)
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the copy's directory %s after Close: %v", dir, err)
	}
	if after, _ := os.Stat(path); !after.ModTime().Equal(before.ModTime()) || after.Mode() != before.Mode() {
		t.Errorf("the registry copied changed: %v %v, was %v %v", after.ModTime(), after.Mode(), before.ModTime(), before.Mode())
	}
	if _, err := sqlite.OpenCopy(ctx, filepath.Join(t.TempDir(), "none.db"), ""); err == nil {
		t.Error("a copy of a registry that is not there")
	}
}

// TestHeldPushesOfAClockThatSteppedBack: a server ran with its clock a day
// fast, kept a push for redelivery under its 10 s lease, and died; the
// clock was stepped back (NTP) before the next server started. The dead
// server's lease ran out long ago by any real clock, but its stored end is
// a day ahead of the new clock: the push must not wait a day (its
// redelivery window is minutes) for the lease to lapse. No lease is ever
// written more than its length ahead of its writer's clock.
func TestHeldPushesOfAClockThatSteppedBack(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "registry.db")
	s := open(t, path)
	if err := s.KeepPushes(ctx, "dead-server", 10*time.Second, false,
		[]registry.HeldPush{{Device: "d1", FailedAt: time.Now().Add(24 * time.Hour), Push: []byte(`{"app":"apns"}`)}}, nil); err != nil {
		t.Fatal(err)
	}
	s.Close()
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	// As the fast clock wrote it: it ran out a second ago by that clock.
	if _, err := db.Exec(`UPDATE redelivery_owners SET lease_until = ?`, time.Now().Add(24*time.Hour-time.Second).UnixNano()); err != nil {
		t.Fatal(err)
	}
	db.Close()
	s = open(t, path)
	defer s.Close()
	held, err := s.MoveHeldPushes(ctx, "next-server", 10*time.Second, false, 100)
	if err != nil || len(held) != 1 {
		t.Fatalf("the next server took %d held pushes (%v), want the dead server's 1: its lease ends a day from now by the stepped-back clock", len(held), err)
	}
}

// A registry copied off a machine whose server died (the file and its
// log, as any file copy of a data directory takes them) is restored
// whole: checkCopy counts what the log holds, so must the restore.
func TestRestoreOfRegistryWithLog(t *testing.T) {
	ctx := t.Context()
	dir := t.TempDir()
	file := copiedWithLog(t, dir, 20)
	path := filepath.Join(dir, "registry.db")
	n, _, err := sqlite.Restore(ctx, file, path)
	if err != nil {
		t.Fatal(err)
	}
	if n != 20 {
		t.Fatalf("restored %d registrations of the 20 %s holds", n, filepath.Base(file))
	}
	if st, err := os.Stat(path); err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("restored registry's mode: %v, %v; want 0600", st.Mode(), err)
	}
	db, err := sql.Open("sqlite", path+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var mode string
	if err := db.QueryRow(`PRAGMA journal_mode`).Scan(&mode); err != nil || mode != "wal" {
		t.Errorf("restored registry's journal mode: %q, %v; want wal", mode, err)
	}
}

// copiedWithLog registers n devices in a registry under dir and copies
// it, file and log, as a copy of a live data directory takes them, to
// dir/old-machine.db before the registry closes (which would fold the
// log into the file); it returns the copy's path.
func copiedWithLog(t *testing.T, dir string, n int) string {
	t.Helper()
	live := filepath.Join(dir, "live", "registry.db")
	os.MkdirAll(filepath.Dir(live), 0o700)
	s := open(t, live)
	defer s.Close()
	for i := range n {
		node := fmt.Sprint("n", i)
		if _, err := s.Register(t.Context(), node, func(registry.Registration, bool) (registry.Registration, error) {
			return registry.Registration{Node: node, Type: "apns", Token: "t-" + node, Secret: "s-" + node, Registered: time.Now()}, nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	file := filepath.Join(dir, "old-machine.db")
	for _, suffix := range []string{"", "-wal"} {
		if err := copyTo(live+suffix, file+suffix); err != nil {
			t.Fatal(err)
		}
	}
	return file
}

// A backup with a log that SQLite cannot read (it needs to make the
// log's index, FILE-shm, and the backup's directory is not the user's to
// write; a link to a directory that does not exist, in the index's place,
// stands in for that here, as tests run as root) is refused, saying why,
// and nothing changes: the file alone would be less than the backup.
func TestRestoreOfRegistryWithUnreadableLog(t *testing.T) {
	ctx := t.Context()
	dir := t.TempDir()
	file := copiedWithLog(t, dir, 1)
	if err := os.Symlink(filepath.Join(dir, "no", "such", "directory"), file+"-shm"); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "registry.db")
	_, _, err := sqlite.Restore(ctx, file, path)
	if err == nil || !strings.Contains(err.Error(), file+"-wal") {
		t.Fatalf("restore of a backup whose log cannot be read: %v; want a refusal naming the log", err)
	}
	if _, err := os.Stat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the refused restore left a registry at %s: %v", path, err)
	}
}

// TestPushStatusUnderDeadlineAllocatesAsWithout holds the write of push
// outcomes, which the write-behind makes under a deadline, to what it
// costs without one. The driver watches a statement whose context can end
// from a goroutine of its own, two a device's first outcome.
func TestPushStatusUnderDeadlineAllocatesAsWithout(t *testing.T) {
	s := open(t, filepath.Join(t.TempDir(), "registry.db"))
	defer s.Close()
	const rows = 1000
	nodes := scattered(2 * rows)
	for i, node := range nodes {
		if _, err := register(s, registry.Registration{Node: node, Type: "apns", Token: fmt.Sprintf("%064x", i), Secret: "s", Registered: time.Now()}); err != nil {
			t.Fatal(err)
		}
	}
	// Each device's first outcome: an update that finds no row, then
	// the row's insert.
	perRow := func(ctx context.Context, nodes []string) float64 {
		batch := make([]registry.PushStatus, len(nodes))
		for i, node := range nodes {
			batch[i] = registry.PushStatus{Node: node, At: time.Now(), Success: true}
		}
		slices.SortFunc(batch, func(a, b registry.PushStatus) int { return strings.Compare(a.Node, b.Node) })
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		if err := s.UpdatePushStatus(ctx, batch); err != nil {
			t.Fatal(err)
		}
		runtime.ReadMemStats(&after)
		return float64(after.Mallocs-before.Mallocs) / float64(len(batch))
	}
	without := perRow(context.Background(), nodes[:rows])
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	with := perRow(ctx, nodes[rows:])
	if with > without+1 {
		t.Errorf("allocations a row: %.1f under a deadline, %.1f without", with, without)
	}
}

// TestPushStatusHonoursItsContext: a write of outcomes whose context has
// ended writes nothing.
func TestPushStatusHonoursItsContext(t *testing.T) {
	s := open(t, filepath.Join(t.TempDir(), "registry.db"))
	defer s.Close()
	if _, err := register(s, registry.Registration{Node: "n", Type: "apns", Token: "t", Secret: "s", Registered: time.Now()}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := s.UpdatePushStatus(ctx, []registry.PushStatus{{Node: "n", At: time.Now(), Success: true}}); !errors.Is(err, context.Canceled) {
		t.Fatalf("UpdatePushStatus with its context ended: %v", err)
	}
	r, err := s.Get(context.Background(), "n")
	if err != nil || !r.LastSuccessfulPush.IsZero() {
		t.Fatalf("after a write whose context ended: %+v, %v", r, err)
	}
}

// A block whose end is past 2262, where UnixNano wraps, is stored as the
// latest time the registry can name, not as one centuries ago.
func TestBlockUntilFarFutureRoundTrips(t *testing.T) {
	ctx := context.Background()
	s := open(t, filepath.Join(t.TempDir(), "registry.db"))
	defer s.Close()
	now := time.Now().UTC()
	b := registry.BlockedToken{Type: "apns", Token: "ab12", Since: now, Until: now.Add(2190000 * time.Hour), Reason: "410"}
	if err := s.BlockToken(ctx, b); err != nil {
		t.Fatal(err)
	}
	got, err := s.GetBlockedToken(ctx, "apns", "ab12")
	if err != nil {
		t.Fatal(err)
	}
	if !got.Until.After(now) {
		t.Fatalf("blocked until %v, read back as until %v: not blocked", b.Until, got.Until)
	}
}

// TestRegisterRefusedWhenFileMoved: once the registry's file is removed
// or replaced under an open store (its directory cleaned up, a volume
// swapped), a registration is refused, saying so, rather than answered
// OK from a file no name reaches any more, lost at the next start.
func TestRegisterRefusedWhenFileMoved(t *testing.T) {
	for _, tc := range []struct {
		name string
		move func(path string) error
	}{
		{"removed", func(path string) error {
			for _, suffix := range []string{"", "-wal", "-shm"} {
				if err := os.Remove(path + suffix); err != nil {
					return err
				}
			}
			return nil
		}},
		{"replaced", func(path string) error {
			other := path + ".new"
			if err := os.WriteFile(other, nil, 0o600); err != nil {
				return err
			}
			return os.Rename(other, path)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "registry.db")
			s := open(t, path)
			defer s.Close()
			if _, err := register(s, registry.Registration{Node: "before", Type: "a", Token: "t1", Secret: "s", Registered: time.Now()}); err != nil {
				t.Fatal(err)
			}
			if err := tc.move(path); err != nil {
				t.Fatal(err)
			}
			_, err := register(s, registry.Registration{Node: "after", Type: "a", Token: "t2", Secret: "s", Registered: time.Now()})
			if err == nil || !strings.Contains(err.Error(), "removed or replaced") {
				t.Fatalf("registration with the registry's file %s: %v", tc.name, err)
			}
		})
	}
}

// TestWritesRefusedWhenFileReplaced: a write with the registry's file
// replaced under the server (a volume swapped, an older copy put back) is
// refused, as a registration is: answered OK, it would be written to the
// open file no name reaches, and at the next start what it changed would
// be undone. A registration the user removed, or whose token its push
// service declared dead, would be there again and pushed to; one pruned
// would be back; one imported would be missing, and so would the pushes
// held for redelivery at a stop (kept in the held file when refused).
func TestWritesRefusedWhenFileReplaced(t *testing.T) {
	registered := time.Now().Add(-time.Hour)
	for _, tc := range []struct {
		name  string
		write func(ctx context.Context, s *sqlite.Store) error
	}{
		{"unregistration", func(ctx context.Context, s *sqlite.Store) error {
			_, err := s.Delete(ctx, "n1", "a")
			return err
		}},
		{"dead token", func(ctx context.Context, s *sqlite.Store) error {
			_, err := s.DeleteToken(ctx, "a", "t1", time.Now())
			return err
		}},
		{"prune", func(ctx context.Context, s *sqlite.Store) error {
			_, _, err := s.DeleteIdle(ctx, time.Now(), "", "", 100)
			return err
		}},
		{"import", func(ctx context.Context, s *sqlite.Store) error {
			_, err := s.Put(ctx, []registry.Registration{{Node: "n2", Type: "a", Token: "t2", Secret: "s", Registered: registered}})
			return err
		}},
		{"imported nodes", func(ctx context.Context, s *sqlite.Store) error {
			return s.PutImportedNodes(ctx, []registry.ImportedNode{{Node: "n2", Registered: registered}})
		}},
		// The pushes held at a stop: answered written, they would not
		// go to the held file, and the next start would find none.
		{"held pushes", func(ctx context.Context, s *sqlite.Store) error {
			return s.KeepPushes(ctx, "server", time.Minute, false,
				[]registry.HeldPush{{Device: "d1", FailedAt: registered, Age: time.Minute, Push: []byte(`{}`)}}, nil)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := t.Context()
			dir := t.TempDir()
			path := filepath.Join(dir, "registry.db")
			s := open(t, path)
			defer s.Close()
			if _, err := register(s, registry.Registration{Node: "n1", Type: "a", Token: "t1", Secret: "s", Registered: registered}); err != nil {
				t.Fatal(err)
			}
			// The copy that will be put in place (a backup taken now).
			if _, err := s.Backup(ctx, filepath.Join(dir, "copy.db")); err != nil {
				t.Fatal(err)
			}
			if err := os.Rename(filepath.Join(dir, "copy.db"), path); err != nil {
				t.Fatal(err)
			}
			err := tc.write(ctx, s)
			if err == nil || !strings.Contains(err.Error(), "removed or replaced") {
				t.Fatalf("%s with the registry's file replaced: %v, want it refused, saying so", tc.name, err)
			}
		})
	}
}

// TestRestoreRefusesBackupItCannotOpenBeforeChange guards restore's
// promise to refuse a FILE this version cannot use before anything
// changes. A copy rebuilt from sqlite3's .dump (a common way to back up
// an SQLite file) holds every table but no schema version: the checks
// passed it, the registry was moved aside and the copy put in its place,
// and only then did opening it fail (migration 1: table registrations
// already exists). The server could not start on what was left, and the
// command's error did not say where the registry had gone.
func TestRestoreRefusesBackupItCannotOpenBeforeChange(t *testing.T) {
	ctx := t.Context()
	dir := t.TempDir()
	path := filepath.Join(dir, "registry.db")
	s := open(t, path)
	for i := range 3 {
		node := fmt.Sprint("n", i)
		if _, err := s.Register(ctx, node, func(registry.Registration, bool) (registry.Registration, error) {
			return registry.Registration{Node: node, Type: "apns", Token: "t-" + node, Secret: "s-" + node, Registered: time.Now()}, nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	dumped := filepath.Join(dir, "from-dump.db")
	if _, err := s.Backup(ctx, dumped); err != nil {
		t.Fatal(err)
	}
	s.Close()
	// What sqlite3 registry.db .dump | sqlite3 from-dump.db leaves: the
	// same tables and rows, user_version 0.
	db, err := sql.Open("sqlite", dumped)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`PRAGMA user_version = 0`); err != nil {
		t.Fatal(err)
	}
	db.Close()

	_, aside, err := sqlite.Restore(ctx, dumped, path)
	if err == nil {
		t.Fatal("restore of a file without a schema version succeeded")
	}
	t.Logf("restore: %v", err)
	if aside != "" {
		t.Errorf("the refused restore moved the registry aside to %s", aside)
	}
	r, err := sqlite.Open(ctx, path)
	if err != nil {
		t.Fatalf("after the refused restore the registry cannot be opened (a server cannot start): %v", err)
	}
	defer r.Close()
	if n, err := r.Count(ctx); err != nil || n != 3 {
		t.Fatalf("after the refused restore the registry holds %d, %v; want 3", n, err)
	}
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if strings.Contains(e.Name(), ".replaced-") || strings.Contains(e.Name(), ".restoring-") {
			t.Errorf("the refused restore left %s", e.Name())
		}
	}
}
