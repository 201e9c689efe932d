package main

import (
	"encoding/xml"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/push-appserver/push-appserver/internal/registry/sqlite"
	"github.com/push-appserver/push-appserver/internal/testutil/apnsmock"
	"github.com/push-appserver/push-appserver/internal/testutil/daemon"
	"github.com/push-appserver/push-appserver/internal/testutil/xmppfake"
)

// waitLogCount waits until the upgradable server's log holds want n times.
func waitLogCount(t *testing.T, u *daemon.Upgradable, want string, n int, within time.Duration) {
	t.Helper()
	for deadline := time.Now().Add(within); strings.Count(u.Log(), want) < n; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("log never showed %q %d times", want, n)
		}
	}
}

// registerSlow registers n devices of the app ios, nodes n0, n1, ...,
// whose pushes APNS answers delay late, and returns their secrets.
func registerSlow(t *testing.T, s *server, am *apnsmock.Server, n int, delay time.Duration) []string {
	t.Helper()
	secrets := make([]string, n)
	for i := range n {
		token := fmt.Sprintf("%064x", i+1)
		secrets[i] = s.registerTo(t, "ios", fmt.Sprintf("n%d", i), token)
		am.FailToken(token, apnsmock.Fault{Delay: delay})
	}
	return secrets
}

// TestReloadDuringUpgradeReachesNewProcess: a configuration changed and
// reloaded (SIGHUP, "reload: applied") while an upgrade's new process
// is starting is the one that serves after the upgrade. Here the reload
// renews the APNS key: the old process applies it and pushes go
// through; once the new process (which read the file before the change)
// has taken over, every push must still go through.
func TestReloadDuringUpgradeReachesNewProcess(t *testing.T) {
	bin := buildBinary(t)
	dir := t.TempDir()
	m := renewedKey(t, dir)
	addr := freePort(t)
	// A component whose XMPP server is away: the new process waits (up
	// to 20 s) for it before it takes over, the window of this test.
	xmpp := freePort(t)
	config := filepath.Join(dir, "c.toml")
	write := func(keyFile, keyID string) {
		os.WriteFile(config, fmt.Appendf(nil, `data_dir = %q
rate_limit = 0
[http]
listen = %q
[[component]]
jid = "push.example.org"
address = %q
secret = "s3cret"
%spush_deadline = "3s"
`, filepath.Join(dir, "data"), addr, xmpp, m.AppConfigKey("ios", keyFile, keyID)), 0o600)
	}
	write(filepath.Join(dir, "old.p8"), "K1")
	u := daemon.StartUpgradable(t, exec.Command(bin, "serve", "-config", config), 25*time.Second)
	s := &server{}
	s.waitHealthy(t, addr)
	token := strings.Repeat("0c", 32)
	reg := strings.Split(s.post(t, "register", url.Values{"type": {"ios"}, "node": {"n1"}, "token": {token}}), "\n")
	if reg[0] != "OK" {
		t.Fatalf("register: %q", reg)
	}
	push := func() string { return s.post(t, "push", url.Values{"node": {"n1"}, "secret": {reg[2]}}) }

	old := u.PID
	syscall.Kill(old, syscall.SIGUSR2)
	// The new process has read the configuration and built its app.
	waitLogCount(t, u, `msg="app configured"`, 2, 20*time.Second)

	// The operator renews the key and reloads, as systemctl reload does
	// (MAINPID is still the old process).
	write(filepath.Join(dir, "new.p8"), "K2")
	syscall.Kill(old, syscall.SIGHUP)
	waitLogCount(t, u, "reload: applied", 1, 20*time.Second)
	if got := push(); got != "OK\nn1" {
		t.Fatalf("push after the reload, before the hand-over: %q", got)
	}

	if !daemon.WaitExited(old, 40*time.Second) {
		t.Fatal("the old process did not exit after the upgrade")
	}
	pids := startedPIDs(u.Log())
	if len(pids) != 2 {
		t.Fatalf("%d processes started, want 2", len(pids))
	}
	u.PID = pids[1]
	if got := push(); got != "OK\nn1" {
		t.Fatalf("push after the upgrade: %q; the key the operator reloaded before it was dropped", got)
	}
}

// TestStopDuringUpgradeFinishesRequests: a server told to stop while an
// upgrade's new process waits for its components takes that process down
// (TestStopDuringUpgrade); every push under way is answered all the
// same: the new process takes no request before it takes over, so none
// is cut off with it.
func TestStopDuringUpgradeFinishesRequests(t *testing.T) {
	bin := buildBinary(t)
	dir := t.TempDir()
	am, _, keyFile, _ := startMocks(t, dir)
	addr := freePort(t)
	config := filepath.Join(dir, "c.toml")
	if err := os.WriteFile(config, fmt.Appendf(nil, "data_dir = %q\nrate_limit = 0\n[http]\nlisten = %q\n[[component]]\njid = \"push.example.org\"\naddress = %q\nsecret = \"s3cret\"\n%spush_deadline = \"5s\"\n",
		filepath.Join(dir, "data"), addr, freePort(t), am.AppConfig("ios", keyFile)), 0o600); err != nil {
		t.Fatal(err)
	}
	u := daemon.StartUpgradable(t, exec.Command(bin, "serve", "-config", config), 25*time.Second)
	s := &server{}
	s.waitHealthy(t, addr)
	const n = 40
	secrets := registerSlow(t, s, am, n, 1500*time.Millisecond)
	old := u.PID
	syscall.Kill(old, syscall.SIGUSR2)
	waitLogCount(t, u, `msg="starting push-appserver"`, 2, 20*time.Second)
	pids := startedPIDs(u.Log())
	u.PID = pids[1]
	// The new process serves once its components are started: its
	// first failed attempt is logged beside the old process's (a
	// failure that repeats is logged once a minute).
	waitLogCount(t, u, "component connection lost", 2, 10*time.Second)

	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 30 * time.Second}
	answers := make(chan string, n)
	for i := range n {
		go func() {
			resp, err := client.PostForm(s.base+"push", url.Values{"node": {fmt.Sprintf("n%d", i)}, "secret": {secrets[i]}})
			if err != nil {
				answers <- "error: " + err.Error()
				return
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			answers <- string(b)
		}()
	}
	for deadline := time.Now().Add(10 * time.Second); am.Total() < n; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d pushes reached APNS", am.Total(), n)
		}
	}
	syscall.Kill(old, syscall.SIGTERM)
	cut := 0
	for range n {
		if a := <-answers; !strings.HasPrefix(a, "OK") {
			if cut++; cut <= 3 {
				t.Logf("answer: %q", a)
			}
		}
	}
	if cut > 0 {
		t.Errorf("%d of %d pushes, each with APNS when the stop came, got no answer (APNS took all %d)", cut, n, am.Accepted())
	}
}

// TestStopDuringUpgradeAnswersPublishes: a server told to stop while an
// upgrade's new process waits for its components ends that process as a
// stop does, not with a kill: the publishes its connected component took
// (ejabberd balances over both streams) are all answered, and it exits
// within the stop's grace. Killed, it answered none of them, and
// ejabberd took each for lost.
func TestStopDuringUpgradeAnswersPublishes(t *testing.T) {
	bin := buildBinary(t)
	dir := t.TempDir()
	am, _, keyFile, _ := startMocks(t, dir)
	srv, err := xmppfake.Listen(fakeComponentJID, "s3cret")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	addr := freePort(t)
	config := filepath.Join(dir, "c.toml")
	// A second component whose XMPP server is away: the new process
	// waits for it (up to 20 s), the window of this test.
	os.WriteFile(config, fmt.Appendf(nil, `data_dir = %q
rate_limit = 0
[http]
listen = %q
[[component]]
jid = %q
address = %q
secret = "s3cret"
[[component]]
jid = "push2.example.org"
address = %q
secret = "s3cret"
%spush_deadline = "5s"
`, filepath.Join(dir, "data"), addr, fakeComponentJID, srv.Addr(), freePort(t), am.AppConfig("ios", keyFile)), 0o600)
	u := daemon.StartUpgradable(t, exec.Command(bin, "serve", "-config", config), 25*time.Second)
	s := &server{}
	s.waitHealthy(t, addr)
	oldStream, err := srv.Accept(10 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer oldStream.Close()
	const n = 20
	// Under way when the stop comes, and answered within the
	// component's second of grace for them.
	secrets := registerSlow(t, s, am, n, 400*time.Millisecond)

	old := u.PID
	syscall.Kill(old, syscall.SIGUSR2)
	st, err := srv.Accept(20 * time.Second) // the new process's stream
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	pids := startedPIDs(u.Log())
	if len(pids) != 2 {
		t.Fatalf("processes started: %v", pids)
	}
	child := pids[1]
	answers := make(chan string, n)
	// Read until the new process closes its stream, or it never does.
	st.Conn.SetReadDeadline(time.Now().Add(60 * time.Second))
	go func() {
		for {
			tok, err := st.Dec.Token()
			if err != nil {
				close(answers)
				return
			}
			se, ok := tok.(xml.StartElement)
			if !ok || se.Name.Local != "iq" {
				continue
			}
			var reply struct {
				ID   string `xml:"id,attr"`
				Type string `xml:"type,attr"`
			}
			if st.Dec.DecodeElement(&reply, &se) == nil {
				answers <- reply.ID + " " + reply.Type
			}
		}
	}()
	for i := range n {
		st.Send(xmppfake.PublishIQ(fmt.Sprintf("p%d", i), "user.example.org", fakeComponentJID, fmt.Sprintf("n%d", i), secrets[i], true))
	}
	for deadline := time.Now().Add(10 * time.Second); am.Total() < n; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d publishes to the new process reached APNS", am.Total(), n)
		}
	}
	stopped := time.Now()
	syscall.Kill(old, syscall.SIGTERM)
	got := map[string]string{}
	for a := range answers {
		id, typ, _ := strings.Cut(a, " ")
		got[id] = typ
	}
	for i := range n {
		if typ := got[fmt.Sprintf("p%d", i)]; typ != "result" {
			t.Errorf("publish p%d, with APNS when the stop came, answered %q; want result", i, typ)
		}
	}
	if !daemon.WaitExited(old, 30*time.Second) || !daemon.WaitExited(child, time.Second) {
		t.Fatalf("processes still running %v after the stop", time.Since(stopped).Round(time.Millisecond))
	}
	t.Logf("both processes exited %v after the stop; APNS accepted %d", time.Since(stopped).Round(time.Millisecond), am.Accepted())
	if log := u.Log(); strings.Contains(log, "upgrade failed: this process serves on") {
		t.Errorf("the stopping process says it serves on:\n%s", tailLines(log, 8))
	}
}

// TestUpgradeWithRefusedComponentServesOn: an upgrade (SIGUSR2) whose new
// process the XMPP server refuses (here the component secret was changed
// in the file, a setting SIGUSR2 applies, but not at the XMPP server) is
// a broken configuration: the old process, whose stream works, must
// serve on, as for any new process that cannot start. Taking over closes
// the only working stream, and ejabberd then answers every publish with
// an error that deletes the user's push session.
func TestUpgradeWithRefusedComponentServesOn(t *testing.T) {
	bin := buildBinary(t)
	srv, err := xmppfake.Listen(fakeComponentJID, "s3cret")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	dir := t.TempDir()
	addr := freePort(t)
	config := filepath.Join(dir, "c.toml")
	write := func(secret string) {
		os.WriteFile(config, fmt.Appendf(nil, "data_dir = %q\n[http]\nlisten = %q\n[[component]]\njid = %q\naddress = %q\nsecret = %q\n",
			filepath.Join(dir, "data"), addr, fakeComponentJID, srv.Addr(), secret), 0o600)
	}
	write("s3cret")
	u := daemon.StartUpgradable(t, exec.Command(bin, "serve", "-config", config), 25*time.Second)
	s := &server{}
	s.waitHealthy(t, addr)
	st, err := srv.Accept(10 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()

	write("a-new-secret")
	old := u.PID
	syscall.Kill(old, syscall.SIGUSR2)
	waitLogCount(t, u, `msg="starting push-appserver"`, 2, 20*time.Second)
	// The new process gives up when its wait for the components ends.
	for deadline := time.Now().Add(40 * time.Second); !strings.Contains(u.Log(), "upgrade failed: this process serves on"); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) || daemon.Exited(old) {
			break
		}
	}
	if daemon.WaitExited(old, time.Second) {
		pids := startedPIDs(u.Log())
		u.PID = pids[1]
		t.Fatalf("the old process handed over to one the XMPP server refuses; component connections now: %d handshakes, log:\n%s",
			srv.Handshakes(), tailLines(u.Log(), 8))
	}
}

// TestRefusedUpgradeWritesOutcomes: a new process that does not take
// over because the XMPP server refuses one of its components (here the
// second one's secret changed in the file) ends as any stop does for
// what its other component took meanwhile (ejabberd balances publishes
// over both streams): the push under way when its wait ends is finished
// and its outcome written to the registry. Its exit skipped the last
// write of the outcomes, which are written a second at a time.
func TestRefusedUpgradeWritesOutcomes(t *testing.T) {
	bin := buildBinary(t)
	dir := t.TempDir()
	am, _, keyFile, _ := startMocks(t, dir)
	const refusedJID = "push2.example.org"
	var xmpp [2]*xmppfake.Server
	for i, jid := range []string{fakeComponentJID, refusedJID} {
		srv, err := xmppfake.Listen(jid, "s3cret")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(srv.Close)
		xmpp[i] = srv
	}
	addr := freePort(t)
	config := filepath.Join(dir, "c.toml")
	write := func(refusedSecret string) {
		os.WriteFile(config, fmt.Appendf(nil, `data_dir = %q
rate_limit = 0
push_timeout = "40s"
[http]
listen = %q
[[component]]
jid = %q
address = %q
secret = "s3cret"
[[component]]
jid = %q
address = %q
secret = %q
%spush_deadline = "30s"
`, filepath.Join(dir, "data"), addr, fakeComponentJID, xmpp[0].Addr(), refusedJID, xmpp[1].Addr(), refusedSecret, am.AppConfig("ios", keyFile)), 0o600)
	}
	write("s3cret")
	u := daemon.StartUpgradable(t, exec.Command(bin, "serve", "-config", config), 25*time.Second)
	s := &server{}
	s.waitHealthy(t, addr)
	for _, srv := range xmpp {
		st, err := srv.Accept(10 * time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
	}
	token := strings.Repeat("0d", 32)
	secret := s.registerTo(t, "ios", "n1", token)
	// Answered 3 s after the new process's 20 s wait for its components
	// (settleTimeout) has ended, and its stream has closed: the push ends
	// its shutdown, with no regular write of the outcomes (one a
	// second) left before it exits.
	am.FailToken(token, apnsmock.Fault{Delay: 24 * time.Second})

	write("a-new-secret")
	old := u.PID
	syscall.Kill(old, syscall.SIGUSR2)
	st, err := xmpp[0].Accept(20 * time.Second) // the new process's stream
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	go func() {
		// Its closing tag closes the connection, as a server does.
		for {
			tok, err := st.Dec.Token()
			if err != nil {
				return
			}
			if end, ok := tok.(xml.EndElement); ok && end.Name.Local == "stream" {
				st.Close()
				return
			}
		}
	}()
	st.Send(xmppfake.PublishIQ("p1", "user.example.org", fakeComponentJID, "n1", secret, true))
	for deadline := time.Now().Add(10 * time.Second); am.Total() == 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the publish to the new process never reached APNS")
		}
	}
	waitLogCount(t, u, "upgrade failed: this process serves on", 1, 60*time.Second)
	if pids := startedPIDs(u.Log()); len(pids) != 2 || !daemon.WaitExited(pids[1], 10*time.Second) {
		t.Fatalf("processes started: %v; the new one should have exited", pids)
	}
	if am.Accepted() != 1 {
		t.Fatalf("APNS accepted %d pushes, want the new process's one", am.Accepted())
	}
	daemon.Stop(old, 25*time.Second)
	store, err := sqlite.Open(t.Context(), filepath.Join(dir, "data", "registry.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	r, err := store.Get(t.Context(), "n1")
	if err != nil {
		t.Fatal(err)
	}
	if r.LastSuccessfulPush.IsZero() {
		t.Errorf("the push the new process finished as it gave up has no outcome in the registry: %+v", r)
	}
}

func tailLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	var keep []string
	for _, l := range lines {
		if !strings.Contains(l, "component connection lost") || len(keep) == 0 || !strings.Contains(keep[len(keep)-1], "component connection lost") {
			keep = append(keep, l)
		}
	}
	if len(keep) > n {
		keep = keep[len(keep)-n:]
	}
	return strings.Join(keep, "\n")
}

// TestHeldPushesCrossOverlappingRestarts: of two instances on one
// PostgreSQL, one keeping a push for redelivery stops (handing it to the
// registry) while the other restarts at the same moment. The push
// reaches APNS once it is back, once, sent by the restarted instance.
func TestHeldPushesCrossOverlappingRestarts(t *testing.T) {
	bin := buildBinary(t)
	dir := t.TempDir()
	am, _, keyFile, _ := startMocks(t, dir)
	t.Setenv("PUSH_APPSERVER_DSN", pg.DB(t))
	var srv [2]*server
	var configs, addrs [2]string
	for i := range srv {
		addr, config := postgresAPNSConfig(t, am, keyFile)
		configs[i], addrs[i] = config, addr
		srv[i] = startServer(t, bin, config)
		srv[i].waitHealthy(t, addr)
	}
	stops, restarts := srv[0], srv[1]
	token := pushDuringOutage(t, stops, am)
	time.Sleep(1500 * time.Millisecond) // written to the registry
	stops.cmd.Process.Signal(os.Interrupt)
	restarts.cmd.Process.Signal(os.Interrupt)
	stops.cmd.Wait()
	restarts.cmd.Wait()
	again := startServer(t, bin, configs[1])
	again.waitHealthy(t, addrs[1])
	am.Reset()
	back := time.Now()
	for deadline := time.Now().Add(30 * time.Second); am.Accepted() == 0; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the held push never reached APNS; the restarted instance's log:\n%s\nthe stopped one's:\n%s", again.log, stops.log)
		}
	}
	t.Logf("sent %v after APNS was back", time.Since(back).Round(time.Millisecond))
	time.Sleep(time.Second)
	if reqs := am.Requests(); len(reqs) != 1 || reqs[0].Token != token {
		t.Fatalf("APNS got %d requests, want the push once", len(reqs))
	}
	again.stop(t)
}
