package main

import (
	"context"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/push-appserver/push-appserver/internal/registry/postgres"
	"github.com/push-appserver/push-appserver/internal/testutil/apnsmock"
	"github.com/push-appserver/push-appserver/internal/testutil/netfreeze"
	"github.com/push-appserver/push-appserver/internal/testutil/pgtest"
	"github.com/push-appserver/push-appserver/internal/testutil/sdnotify"
)

var pg = pgtest.New()

func TestMain(m *testing.M) {
	code := pg.Run(m)
	if built.dir != "" {
		os.RemoveAll(built.dir)
	}
	os.Exit(code)
}

// postgresConfig writes a configuration whose registry is the PostgreSQL
// database named by $PUSH_APPSERVER_DSN, and returns the HTTP API's
// address and the file's path.
func postgresConfig(t *testing.T) (addr, config string) {
	t.Helper()
	dir := t.TempDir()
	addr = freePort(t)
	config = filepath.Join(dir, "push-appserver.toml")
	if err := os.WriteFile(config, []byte(fmt.Sprintf("data_dir = %q\n[http]\nlisten = %q\n[database]\ndriver = \"postgres\"\ndsn = \"env:PUSH_APPSERVER_DSN\"\n",
		filepath.Join(dir, "data"), addr)), 0o600); err != nil {
		t.Fatal(err)
	}
	return addr, config
}

// Two real binaries on one PostgreSQL, the DSN read from the environment as
// the README shows: a device registered on one is pushed through the
// other, and unregistered there it is gone on the first.
func TestServePostgresTwoInstances(t *testing.T) {
	bin := buildBinary(t)
	t.Setenv("PUSH_APPSERVER_DSN", pg.DB(t))
	var srv [2]*server
	for i := range srv {
		addr, config := postgresConfig(t)
		srv[i] = startServer(t, bin, config)
		srv[i].waitHealthy(t, addr)
	}
	a, b := srv[0], srv[1]
	body := a.post(t, "register", url.Values{"type": {"apns"}, "node": {"n1"}, "token": {"ab12"}})
	secret := strings.Split(body, "\n")[2]
	if body := b.post(t, "push", url.Values{"node": {"n1"}, "secret": {secret}}); body != "OK\nn1" {
		t.Fatalf("push via the other instance: %q", body)
	}
	if body := b.post(t, "unregister", url.Values{"type": {"apns"}, "node": {"n1"}}); body != "OK\nn1\n" {
		t.Fatalf("unregister via the other instance: %q", body)
	}
	if body := a.post(t, "push", url.Values{"node": {"n1"}, "secret": {secret}}); !strings.HasPrefix(body, "ERROR\n") {
		t.Fatalf("push after unregister: %q", body)
	}
	for _, s := range srv {
		s.stop(t)
	}
	if _, err := os.Stat(filepath.Join(filepath.Dir(a.cmd.Args[3]), "data", "registry.db")); err == nil {
		t.Fatal("a SQLite registry was created although the driver is postgres")
	}
}

// Registrations answered OK survive PostgreSQL crashing while others are
// under way, batched into commits, and the server registers again once
// the database is back, without a restart of its own.
func TestRegistrationsSurvivePostgresCrash(t *testing.T) {
	bin := buildBinary(t)
	dsn := pgtest.DurableDSN(pg.DB(t))
	t.Setenv("PUSH_APPSERVER_DSN", dsn)
	addr, config := postgresConfig(t)
	s := startServer(t, bin, config)
	s.waitHealthy(t, addr)

	var (
		mu       sync.Mutex
		answered = map[string]string{} // node: secret
		after    int                   // answered OK since the database was last back
		refused  int
		back     atomic.Bool
		stop     = make(chan struct{})
	)
	wait := clients(16, stop, func(g, i int) bool {
		node := fmt.Sprintf("g%d-%d", g, i)
		recovered := back.Load()
		lines, err := s.register(node, fmt.Sprintf("%064x", i<<8|g))
		if err != nil {
			t.Errorf("register %s: %v", node, err)
			return false
		}
		mu.Lock()
		defer mu.Unlock()
		switch {
		case len(lines) == 3 && lines[0] == "OK":
			answered[node] = lines[2]
			if recovered {
				after++
			}
		case lines[0] == "ERROR":
			refused++
		default:
			t.Errorf("register %s: %q", node, lines)
		}
		return true
	})
	// Five crashes, each after the server has registered again for a
	// while: a crash catches a batch between its statements and its
	// commit about one time in three to five.
	for round := range 5 {
		time.Sleep(300 * time.Millisecond)
		back.Store(false)
		pg.Crash(t)
		mu.Lock()
		after = 0
		mu.Unlock()
		back.Store(true)
		deadline := time.Now().Add(20 * time.Second)
		for {
			mu.Lock()
			n := after
			mu.Unlock()
			if n >= 100 {
				break
			}
			if time.Now().After(deadline) {
				close(stop)
				wait()
				t.Fatalf("crash %d: %d registrations answered OK in 20 s after PostgreSQL was back", round, n)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	close(stop)
	wait()
	if got := metric(t, addr, `push_appserver_registration_failures_total{reason="error"}`); got != float64(refused) {
		t.Errorf("registration failures counted as error: %v, want %d", got, refused)
	}
	s.stop(t)
	t.Logf("%d registrations answered OK, %d refused", len(answered), refused)

	store, err := postgres.Open(t.Context(), dsn, postgres.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	answeredKept(t, store, answered)
}

// While PostgreSQL is down, pushes to the devices pushed to shortly before
// reach APNS, as the registry last said, and their secret is still
// checked, unless outage_grace is 0; pushes to the others fail, and are
// sent once the database is back if their secret was right. Once the
// database is back, everything pushes again.
func TestPushesWhilePostgresDown(t *testing.T) {
	for _, tc := range []struct {
		name, option string
		held         bool // whether pushes to the devices pushed to before go out
	}{
		{"default", "", true},
		{"outage_grace off", "outage_grace = \"0s\"\n", false},
	} {
		t.Run(tc.name, func(t *testing.T) { testPushesWhilePostgresDown(t, tc.option, tc.held) })
	}
}

func testPushesWhilePostgresDown(t *testing.T, option string, held bool) {
	bin := buildBinary(t)
	dir := t.TempDir()
	am, _, keyFile, _ := startMocks(t, dir)
	t.Setenv("PUSH_APPSERVER_DSN", pgtest.DurableDSN(pg.DB(t)))
	addr, config := postgresConfig(t)
	base, err := os.ReadFile(config)
	if err != nil {
		t.Fatal(err)
	}
	// Top-level keys go before the tables postgresConfig wrote.
	if err := os.WriteFile(config, fmt.Appendf(nil, "rate_limit = 0\n%s%s\n%s", option, base, am.AppConfig("apns", keyFile)), 0o600); err != nil {
		t.Fatal(err)
	}
	s := startServer(t, bin, config)
	s.waitHealthy(t, addr)

	const n = 20
	hot, cold := map[string]string{}, map[string]string{} // node: secret
	token := map[string]string{}
	for i := range 2*n + 1 {
		node, set := fmt.Sprintf("hot-%d", i), hot
		switch {
		case i == 2*n:
			// Pushed to only with a wrong secret.
			node, set = "guessed", map[string]string{}
		case i >= n:
			node, set = fmt.Sprintf("cold-%d", i), cold
		}
		token[node] = fmt.Sprintf("%064x", i+1)
		lines, err := s.register(node, fmt.Sprintf("%064x", i+1))
		if err != nil || len(lines) != 3 || lines[0] != "OK" {
			t.Fatalf("register %s: %q, %v", node, lines, err)
		}
		set[node] = lines[2]
	}
	requests := func(node string) int {
		k := 0
		for _, r := range am.Requests() {
			if r.Token == token[node] {
				k++
			}
		}
		return k
	}
	push := func(node, secret string) string {
		return s.post(t, "push", url.Values{"node": {node}, "secret": {secret}})
	}
	// Push to the hot devices until each push finds its device in the
	// cache: the change feed announces the registrations above a moment
	// later, and drops what a push cached before that.
	const hits = `push_appserver_registration_cache_lookups_total{result="hit"}`
	for deadline := time.Now().Add(10 * time.Second); ; {
		before := metric(t, addr, hits)
		for node, secret := range hot {
			if body := push(node, secret); body != "OK\n"+node {
				t.Fatalf("push to %s: %q", node, body)
			}
		}
		if metric(t, addr, hits)-before == n {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the hot devices never all found in the cache")
		}
	}

	pg.Down(t)
	// Until the instance has lost its change feed, it serves its cache
	// as usual.
	s.waitLog(t, "registration change feed lost")
	// The health page says the registry is down at its next ping; the
	// instance stays ready, as it still serves these pushes.
	waitRegistryHealth(t, s, "down")
	if body := s.get(t, "ready"); body != "READY\n" {
		t.Errorf("ready while PostgreSQL is down: %q", body)
	}
	const bypassed = "push_appserver_registration_cache_bypassed"
	if got := metric(t, addr, bypassed); got != 1 {
		t.Errorf("%s = %v while PostgreSQL is down, want 1", bypassed, got)
	}
	accepted := am.Accepted()
	for node, secret := range hot {
		if body := push(node, secret); held && body != "OK\n"+node || !held && !strings.HasPrefix(body, "ERROR\n") {
			t.Errorf("push to %s, pushed to before, while PostgreSQL is down: %q", node, body)
		}
		if body := push(node, "wrong"); !strings.HasPrefix(body, "ERROR\n") {
			t.Errorf("push to %s with a wrong secret while PostgreSQL is down: %q", node, body)
		}
	}
	for node, secret := range cold {
		if body := push(node, secret); !strings.HasPrefix(body, "ERROR\n") {
			t.Errorf("push to %s, not pushed to before, while PostgreSQL is down: %q", node, body)
		}
		// Waits beside the push kept above, not in its place.
		if body := push(node, "wrong"); !strings.HasPrefix(body, "ERROR\n") {
			t.Errorf("push to %s with a wrong secret while PostgreSQL is down: %q", node, body)
		}
	}
	if body := push("guessed", "wrong"); !strings.HasPrefix(body, "ERROR\n") {
		t.Errorf("push with a wrong secret to a device not pushed to before, while PostgreSQL is down: %q", body)
	}
	want := 0
	if held {
		want = n
	}
	if got := am.Accepted() - accepted; got != want {
		t.Errorf("APNS accepted %d pushes while PostgreSQL was down, want %d", got, want)
	}
	// Only the pushes with the right secret: a wrong one is answered as
	// for a device not cached, so that the answers do not tell which
	// nodes are registered.
	if got := metric(t, addr, "push_appserver_registration_cache_stale_total"); got != float64(want) {
		t.Errorf("stale cache lookups = %v, want %d", got, want)
	}
	// APNS refuses a push, with a reason PostgreSQL cannot store as it
	// is: its outcome waits for the database.
	const pending = "push_appserver_push_status_pending"
	if held {
		am.FailToken(fmt.Sprintf("%064x", 1), apnsmock.Fault{Status: 400, Reason: "BadPriority\x00"})
		if body := push("hot-0", hot["hot-0"]); !strings.HasPrefix(body, "ERROR\n") {
			t.Errorf("push refused by APNS while PostgreSQL is down: %q", body)
		}
		s.waitLog(t, "writing push outcomes; holding them to write again")
		if got := metric(t, addr, pending); got < 1 {
			t.Errorf("%s = %v while PostgreSQL is down, want at least 1", pending, got)
		}
	}

	pg.Up(t)
	// The pushes that failed for want of their registration go out once
	// the database answers, once each; the one with a wrong secret not.
	failed := maps.Clone(cold)
	if !held {
		maps.Copy(failed, hot)
	}
	before := map[string]int{}
	for node := range failed {
		before[node] = requests(node)
	}
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		missing := 0
		for node := range failed {
			if requests(node) == before[node] {
				missing++
			}
		}
		if missing == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of the %d pushes that failed while PostgreSQL was down not sent 30 s after it is back", missing, len(failed))
		}
	}
	const gone = `push_appserver_redeliveries_total{outcome="gone"}`
	for deadline := time.Now().Add(10 * time.Second); metric(t, addr, gone) < 1; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the push with a wrong secret not dropped 10 s after PostgreSQL is back")
		}
	}
	for node := range failed {
		if got := requests(node) - before[node]; got != 1 {
			t.Errorf("%d pushes to %s sent once PostgreSQL is back, want 1", got, node)
		}
	}
	if got := requests("guessed"); got != 0 {
		t.Errorf("%d pushes sent to a device pushed to with a wrong secret alone", got)
	}
	// Each that failed, and each with a wrong secret: to "guessed";
	// with the devices pushed to before held, to those, no push to
	// them kept before; and beside each push that failed, not in its
	// place (the one kept first may be the guess, and must not keep
	// the right one from going out).
	kept := 2*len(failed) + 1
	if held {
		kept += len(hot)
	}
	if got, want := metric(t, addr, `push_appserver_redeliveries_total{outcome="kept"}`), float64(kept); got != want {
		t.Errorf("pushes kept for redelivery: %v, want %v", got, want)
	}
	node, secret := "cold-"+fmt.Sprint(n), cold["cold-"+fmt.Sprint(n)]
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if body := push(node, secret); body == "OK\n"+node {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("pushes fail 20 s after PostgreSQL is back")
		}
	}
	for node, secret := range cold {
		if body := push(node, secret); body != "OK\n"+node {
			t.Errorf("push to %s after PostgreSQL is back: %q", node, body)
		}
	}
	waitRegistryHealth(t, s, "up")
	for deadline := time.Now().Add(20 * time.Second); metric(t, addr, bypassed) != 0; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%s still not 0 20 s after PostgreSQL is back", bypassed)
		}
	}
	for deadline := time.Now().Add(10 * time.Second); metric(t, addr, pending) != 0; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%s still not 0 10 s after PostgreSQL is back", pending)
		}
	}
	if got := metric(t, addr, "push_appserver_push_status_dropped_total"); got != 0 {
		t.Errorf("%v push outcomes dropped, want none", got)
	}
	s.stop(t)
	if !held {
		return
	}
	store, err := postgres.Open(t.Context(), os.Getenv("PUSH_APPSERVER_DSN"), postgres.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	if r, err := store.Get(t.Context(), "hot-0"); err != nil || r.LastErrorReason != "apns: 400 BadPriority " {
		t.Errorf("the outcome of the push APNS refused while PostgreSQL was down: %q, %v; want its reason written", r.LastErrorReason, err)
	}
}

// A deployment that outgrows SQLite moves its registrations to
// PostgreSQL with `import registry`: a device registered on the SQLite

// TestRedeliveryAfterInstanceDies: of two instances on one PostgreSQL,
// the one keeping a push for redelivery is killed (kill -9: no chance to
// hand it over); the other sends it once the dead one's lease has run
// out and APNS takes pushes again, once.
func TestRedeliveryAfterInstanceDies(t *testing.T) {
	bin := buildBinary(t)
	dir := t.TempDir()
	am, _, keyFile, _ := startMocks(t, dir)
	t.Setenv("PUSH_APPSERVER_DSN", pg.DB(t))
	var srv [2]*server
	for i := range srv {
		addr, config := postgresAPNSConfig(t, am, keyFile)
		srv[i] = startServer(t, bin, config)
		srv[i].waitHealthy(t, addr)
	}
	dies, lives := srv[0], srv[1]
	token := pushDuringOutage(t, dies, am)
	sentOnceAfterKill(t, am, token, killKeeping(dies, am))
	if !strings.Contains(lives.log.String(), "pushes held for redelivery taken from the registry") {
		t.Fatalf("the push was not taken by the other instance:\n%s", lives.log.String())
	}
	lives.stop(t)
}

// server is pushed through the PostgreSQL one with the same secret.
func TestImportRegistryIntoPostgres(t *testing.T) {
	bin := buildBinary(t)
	dir, addr, sqliteCfg := minimalConfig(t)
	a := startServer(t, bin, sqliteCfg)
	a.waitHealthy(t, addr)
	secret := strings.Split(a.post(t, "register", url.Values{"type": {"apns"}, "node": {"n1"}, "token": {"ab12"}}), "\n")[2]
	a.stop(t)
	source := filepath.Join(dir, "data", "registry.db")

	t.Setenv("PUSH_APPSERVER_DSN", pg.DB(t))
	addr, pgCfg := postgresConfig(t)
	run := func(args ...string) (string, error) {
		out, err := exec.Command(bin, append([]string{"import", "registry", "-config"}, args...)...).CombinedOutput()
		return string(out), err
	}
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{pgCfg, filepath.Join(dir, "missing.db")}, "no such file or directory"},
		{[]string{sqliteCfg, source}, "is the configured registry itself"},
		{[]string{pgCfg, "-type-map", "apns=ios", source}, "-type-map is for mod_push_appserver"},
	} {
		if out, err := run(tt.args...); err == nil || !strings.Contains(out, tt.want) {
			t.Errorf("import registry %v: %v\n%s", tt.args, err, out)
		}
	}
	out, err := run(pgCfg, "-dry-run", source)
	if err != nil || !strings.Contains(out, "would copy") || !strings.Contains(out, "\n1 registrations") {
		t.Fatalf("dry run: %v\n%s", err, out)
	}
	out, err = run(pgCfg, source)
	if err != nil || !strings.Contains(out, "1 registrations, 0 of them bound") || !strings.Contains(out, "1 new in the target") {
		t.Fatalf("import: %v\n%s", err, out)
	}

	b := startServer(t, bin, pgCfg)
	b.waitHealthy(t, addr)
	if body := b.post(t, "push", url.Values{"node": {"n1"}, "secret": {secret}}); body != "OK\nn1" {
		t.Fatalf("push on PostgreSQL with the secret registered on SQLite: %q", body)
	}
	b.stop(t)
}

// A server started while PostgreSQL is down waits for it, saying so in
// the log and to systemd, and starts once it is up; told to stop
// meanwhile, it exits cleanly. A database that does not exist is no
// reason to wait: the server exits at once, naming it.
func TestServerWaitsForPostgres(t *testing.T) {
	bin := buildBinary(t)
	dsn := pg.DB(t)
	addr, config := postgresConfig(t)

	t.Run("no such database", func(t *testing.T) {
		u, err := url.Parse(dsn)
		if err != nil {
			t.Fatal(err)
		}
		u.Path = "/no_such_database"
		s := startServerEnv(t, bin, config, "PUSH_APPSERVER_DSN="+u.String())
		done := make(chan error, 1)
		go func() { done <- s.cmd.Wait() }()
		select {
		case err := <-done:
			if err == nil || !strings.Contains(s.log.String(), "no_such_database") {
				t.Fatalf("exit %v; log:\n%s", err, s.log.String())
			}
		case <-time.After(10 * time.Second):
			t.Fatal("the server waits for a database that does not exist")
		}
		if out, err := checkConfigWith(bin, config, u.String()); err == nil {
			t.Fatalf("check-config passes a database that does not exist:\n%s", out)
		}
	})

	pg.Down(t)
	// The unit runs check-config before serve: it must not fail the
	// start that serve would wait through.
	t.Run("check-config while down", func(t *testing.T) {
		out, err := checkConfigWith(bin, config, dsn)
		if err != nil || !strings.Contains(out, "warning: registry not checked") {
			t.Fatalf("check-config while PostgreSQL is down: %v\n%s", err, out)
		}
	})
	t.Run("stopped while waiting", func(t *testing.T) {
		s := startServerEnv(t, bin, config, "PUSH_APPSERVER_DSN="+dsn)
		s.waitLog(t, "PostgreSQL cannot be reached; waiting for it")
		s.stop(t)
	})

	sock := sdnotify.Listen(t)
	// sslmode=prefer, libpq's and pgx's default: each attempt tries TLS,
	// then without, and pgx's error has a line for each.
	prefer := strings.Replace(dsn, "sslmode=disable", "sslmode=prefer", 1)
	s := startServerEnv(t, bin, config, "PUSH_APPSERVER_DSN="+prefer, "NOTIFY_SOCKET="+sock.Path)
	// The status line keeps the cause, which pgx puts on a line of its own.
	if f := sdnotify.Fields(sock.Next(t, 20*time.Second)); !strings.HasPrefix(f["STATUS"], "starting: waiting for PostgreSQL: ") ||
		!strings.Contains(f["STATUS"], "connection refused") || f["READY"] != "" {
		t.Fatalf("first message while PostgreSQL is down: %v", f)
	}
	// Tried again with backoff, not given up.
	for deadline := time.Now().Add(20 * time.Second); strings.Count(s.log.String(), "PostgreSQL cannot be reached") < 3; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("fewer than three attempts in 20 s:\n%s", s.log.String())
		}
	}
	pg.Up(t)
	for {
		f := sdnotify.Fields(sock.Next(t, 30*time.Second))
		if f["READY"] == "1" {
			break
		}
	}
	s.waitHealthy(t, addr)
	if lines, err := s.register("after-the-wait", strings.Repeat("cd", 32)); err != nil || lines[0] != "OK" {
		t.Fatalf("register once PostgreSQL is up: %q, %v", lines, err)
	}
	s.stop(t)
}

// A server waiting for PostgreSQL listens meanwhile: its health page
// answers 200 (a liveness probe lets it wait) and its ready page 503,
// both saying why, with nothing of the DSN (the log names the address);
// a registration is
// answered 503 with Retry-After, never as if it had been stored; metrics
// are served. Once PostgreSQL is up, the connection a client opened
// during the wait gets the full API: a registration stored, ready 200.
func TestServerServesWhileWaitingForPostgres(t *testing.T) {
	bin := buildBinary(t)
	u, err := url.Parse(pg.DB(t))
	if err != nil {
		t.Fatal(err)
	}
	// The test server trusts every login: the password is there to be
	// looked for.
	const password = "pw-Zq81xK3v"
	u.User = url.UserPassword(u.User.Username(), password)
	dir := t.TempDir()
	ports := freePorts(t, 2)
	addr, metricsAddr := ports[0], ports[1]
	config := filepath.Join(dir, "push-appserver.toml")
	if err := os.WriteFile(config, []byte(fmt.Sprintf("data_dir = %q\nmetrics_listen = %q\n[http]\nlisten = %q\n[database]\ndriver = \"postgres\"\ndsn = \"env:PUSH_APPSERVER_DSN\"\n",
		filepath.Join(dir, "data"), metricsAddr, addr)), 0o600); err != nil {
		t.Fatal(err)
	}

	pg.Down(t)
	s := startServerEnv(t, bin, config, "PUSH_APPSERVER_DSN="+u.String())
	s.base = "http://" + addr + "/push_appserver/v1/"

	// One client, whose connections are counted: the API must come to
	// the connection opened while the server waited.
	var dials atomic.Int32
	client := &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, a string) (net.Conn, error) {
			c, err := (&net.Dialer{}).DialContext(ctx, network, a)
			if err == nil && a == addr {
				dials.Add(1)
			}
			return c, err
		},
	}}
	defer client.CloseIdleConnections()
	do := func(method, path string, form url.Values) (*http.Response, string, error) {
		req, err := http.NewRequest(method, s.base+path, strings.NewReader(form.Encode()))
		if err != nil {
			t.Fatal(err)
		}
		if form != nil {
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		}
		resp, err := client.Do(req)
		if err != nil {
			return nil, "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return resp, string(b), err
	}

	// The first attempt may not have failed yet: the page says so once
	// it has.
	var health string
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		resp, body, err := do("GET", "health", nil)
		if err == nil {
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("health while waiting: %d %q", resp.StatusCode, body)
			}
			if strings.Contains(body, "waiting for PostgreSQL") {
				health = body
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("the health page never said it waits for PostgreSQL: %v, %q", err, body)
		}
	}
	if !strings.HasPrefix(health, "STARTING\nwaiting for PostgreSQL: ") || !strings.Contains(health, "connection refused") || strings.Count(health, "\n") != 2 {
		t.Fatalf("health while waiting: %q", health)
	}
	resp, ready, err := do("GET", "ready", nil)
	if err != nil || resp.StatusCode != http.StatusServiceUnavailable || !strings.HasPrefix(ready, "NOT READY\nwaiting for PostgreSQL: ") {
		t.Fatalf("ready while waiting: %v %v %q", err, resp, ready)
	}
	form := url.Values{"type": {"apns"}, "node": {"during-the-wait"}, "token": {strings.Repeat("ef", 32)}}
	resp, reg, err := do("POST", "register", form)
	if err != nil || resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" || !strings.HasPrefix(reg, "ERROR\n") {
		t.Fatalf("register while waiting: %v %v %q", err, resp, reg)
	}
	for _, body := range []string{health, ready, reg, s.log.String()} {
		if strings.Contains(body, password) {
			t.Fatalf("the DSN's password is shown: %q", body)
		}
	}
	// The pages anyone who can reach the API reads say why, but name
	// neither the database nor its address: the log does.
	for _, body := range []string{health, ready} {
		for _, part := range []string{strings.TrimPrefix(u.Path, "/"), u.Host} {
			if strings.Contains(body, part) {
				t.Fatalf("the DSN's %q is shown on a public page: %q", part, body)
			}
		}
	}
	if log := s.log.String(); !strings.Contains(log, u.Host) {
		t.Fatalf("the log does not name the address it waits for:\n%s", log)
	}
	if m := scrape(t, metricsAddr); !strings.Contains(m, "push_appserver_build_info{") || !strings.Contains(m, "\npush_appserver_starting 1\n") {
		t.Fatalf("build info and push_appserver_starting 1 on the metrics listener while waiting:\n%s", m)
	}

	pg.Up(t)
	// Registrations are retried, as Retry-After asks, until one is
	// stored.
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		resp, reg, err = do("POST", "register", form)
		if err != nil {
			t.Fatalf("register once PostgreSQL is up: %v", err)
		}
		if resp.StatusCode == http.StatusOK {
			break
		}
		if resp.StatusCode != http.StatusServiceUnavailable || time.Now().After(deadline) {
			t.Fatalf("register once PostgreSQL is up: %d %q", resp.StatusCode, reg)
		}
	}
	if lines := strings.Split(reg, "\n"); len(lines) != 3 || lines[0] != "OK" || lines[1] != "during-the-wait" {
		t.Fatalf("register once PostgreSQL is up: %q", reg)
	}
	if resp, ready, err := do("GET", "ready", nil); err != nil || resp.StatusCode != http.StatusOK || ready != "READY\n" {
		t.Fatalf("ready once PostgreSQL is up: %v %v %q", err, resp, ready)
	}
	if resp, health, err := do("GET", "health", nil); err != nil || resp.StatusCode != http.StatusOK || !strings.HasPrefix(health, "RUNNING\n") {
		t.Fatalf("health once PostgreSQL is up: %v %v %q", err, resp, health)
	}
	if m := scrape(t, metricsAddr); !strings.Contains(m, "\npush_appserver_starting 0\n") {
		t.Fatalf("push_appserver_starting is not 0 once the server serves:\n%s", m)
	}
	if n := dials.Load(); n != 1 {
		t.Fatalf("%d connections to the API, want the one opened while the server waited", n)
	}
	s.stop(t)
}

// A port taken ends the start at once, before any wait for PostgreSQL:
// the operator sees why without waiting out the database.
func TestServeBindsBeforeWaitingForPostgres(t *testing.T) {
	bin := buildBinary(t)
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	dir := t.TempDir()
	config := filepath.Join(dir, "push-appserver.toml")
	if err := os.WriteFile(config, []byte(fmt.Sprintf("data_dir = %q\n[http]\nlisten = %q\n[database]\ndriver = \"postgres\"\ndsn = \"env:PUSH_APPSERVER_DSN\"\n",
		filepath.Join(dir, "data"), busy.Addr().String())), 0o600); err != nil {
		t.Fatal(err)
	}
	// Nothing listens there: a server that opened the registry first
	// would wait for it for ever.
	s := startServerEnv(t, bin, config, "PUSH_APPSERVER_DSN=postgres://postgres@"+freePort(t)+"/db?sslmode=disable")
	done := make(chan error, 1)
	go func() { done <- s.cmd.Wait() }()
	select {
	case err := <-done:
		log := s.log.String()
		if err == nil || !strings.Contains(log, "listening on "+busy.Addr().String()) || strings.Contains(log, "waiting for it") {
			t.Fatalf("exit %v; log:\n%s", err, log)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("still running with its port taken; log:\n%s", s.log.String())
	}
}

// checkConfigWith runs check-config on config with dsn in the environment, as
// the unit's ExecStartPre does, and returns what it printed.
func checkConfigWith(bin, config, dsn string) (string, error) {
	cmd := exec.Command(bin, "check-config", "-config", config)
	cmd.Env = append(os.Environ(), "PUSH_APPSERVER_DSN="+dsn)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// waitRegistryHealth waits for the health page to show the registry in
// state, which it does at its next ping.
func waitRegistryHealth(t *testing.T, s *server, state string) {
	t.Helper()
	for deadline := time.Now().Add(3 * registryPingEvery); ; time.Sleep(50 * time.Millisecond) {
		body := s.get(t, "health")
		if strings.HasPrefix(body, "RUNNING\n") && strings.HasSuffix(body, "\nregistry: "+state+"\n") {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("health page, waiting for registry: %s: %q", state, body)
		}
	}
}

// A stop while PostgreSQL has gone silent (its host gone, a failover
// that moved its address: connections that neither answer nor close)
// ends within its bound: the push outcomes still pending are dropped and
// counted, not waited for without end.
func TestStopWhilePostgresSilent(t *testing.T) {
	bin := buildBinary(t)
	u, err := url.Parse(pg.DB(t))
	if err != nil {
		t.Fatal(err)
	}
	f := netfreeze.Start(t, u.Host)
	u.Host = f.Addr()
	t.Setenv("PUSH_APPSERVER_DSN", u.String())
	addr, config := postgresConfig(t)
	s := startServer(t, bin, config)
	s.waitHealthy(t, addr)
	body := s.post(t, "register", url.Values{"type": {"apns"}, "node": {"n1"}, "token": {"ab12"}})
	secret := strings.Split(body, "\n")[2]
	if body := s.post(t, "push", url.Values{"node": {"n1"}, "secret": {secret}}); body != "OK\nn1" {
		t.Fatalf("push: %q", body)
	}
	// The push's outcome is written behind, within a second: the
	// database goes silent before.
	f.Freeze()
	time.Sleep(1500 * time.Millisecond)
	start := time.Now()
	s.cmd.Process.Signal(os.Interrupt)
	done := make(chan error, 1)
	go func() { done <- s.cmd.Wait() }()
	select {
	case err := <-done:
		t.Logf("stopped after %v (%v)", time.Since(start).Round(time.Millisecond), err)
	case <-time.After(20 * time.Second):
		t.Fatalf("the server did not stop within 20 s of SIGINT with PostgreSQL silent (systemd's TimeoutStopSec is 30 s); log:\n%s", s.log.String())
	}
}

// postgresAPNSConfig is postgresConfig with no rate limit and the APNS
// app "ios" of am, whose pushes end within a second.
func postgresAPNSConfig(t *testing.T, am *apnsmock.Server, keyFile string) (addr, config string) {
	t.Helper()
	addr, config = postgresConfig(t)
	base, err := os.ReadFile(config)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(config, fmt.Appendf(nil, "rate_limit = 0\n%s\n%spush_deadline = \"1s\"\n", base, am.AppConfig("ios", keyFile)), 0o600); err != nil {
		t.Fatal(err)
	}
	return addr, config
}
