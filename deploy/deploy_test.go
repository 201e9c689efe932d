package deploy_test

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/push-appserver/push-appserver/deploy"
	"github.com/push-appserver/push-appserver/internal/config"
	"github.com/push-appserver/push-appserver/internal/testutil/daemon"
)

func TestExampleConfigLoads(t *testing.T) {
	t.Setenv("PUSH_APPSERVER_COMPONENT_SECRET", "s3cret")
	cfg, err := config.Load("push-appserver.toml")
	if err != nil {
		t.Fatalf("the example configuration does not load:\n%v", err)
	}
	if cfg.DataDir != "/var/lib/push-appserver" || len(cfg.Components) != 1 || cfg.Components[0].JID != "push.example.org" {
		t.Fatalf("example: data_dir %q, components %+v", cfg.DataDir, cfg.Components)
	}
	if cfg.Apps["apns"] == nil || cfg.Apps["fcm"] == nil {
		t.Fatalf("example apps: %v", cfg.Apps)
	}
}

// The XMPP server examples, which the end-to-end tests run with their own
// values filled in, name the component push-appserver.toml connects as.
func TestXMPPExamplesMatchComponent(t *testing.T) {
	t.Setenv("PUSH_APPSERVER_COMPONENT_SECRET", "s3cret")
	cfg, err := config.Load("push-appserver.toml")
	if err != nil {
		t.Fatal(err)
	}
	c := cfg.Components[0]
	if c.JID != deploy.ExampleComponent || c.Address != "127.0.0.1:"+deploy.ExamplePort {
		t.Fatalf("push-appserver.toml's component is %s at %s, the XMPP examples' %s at port %s", c.JID, c.Address, deploy.ExampleComponent, deploy.ExamplePort)
	}
	v := deploy.Values{Domain: "d.test", Component: "push.d.test", Port: "1234", Secret: "s"}
	for name, example := range map[string]string{"prosody": deploy.ProsodyExample, "ejabberd": deploy.EjabberdExample} {
		filled, err := deploy.Fill(example, v)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		for _, old := range []string{deploy.ExampleComponent, deploy.ExampleSecret, deploy.ExamplePort, `"` + deploy.ExampleDomain + `"`} {
			if strings.Contains(filled, old) {
				t.Errorf("%s: %q left after filling in", name, old)
			}
		}
		if !strings.Contains(filled, "push.d.test") || !strings.Contains(filled, "1234") || !strings.Contains(filled, `"s"`) {
			t.Errorf("%s: the test's values are not in:\n%s", name, filled)
		}
	}
	// What is put in is not replaced again: a secret or a JID holding
	// the example's port keeps it.
	odd := deploy.Values{Domain: "d5347.test", Component: "push.d5347.test", Port: "1234", Secret: "ab5347cd"}
	for name, example := range map[string]string{"prosody": deploy.ProsodyExample, "ejabberd": deploy.EjabberdExample} {
		filled, err := deploy.Fill(example, odd)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(filled, `"ab5347cd"`) || !strings.Contains(filled, "push.d5347.test") {
			t.Errorf("%s: the secret or the component changed in filling in:\n%s", name, filled)
		}
	}
	// An example that no longer names what the tests fill in is an error.
	for _, drop := range []string{deploy.ExampleComponent, deploy.ExamplePort, deploy.ExampleSecret} {
		if _, err := deploy.Fill(strings.ReplaceAll(deploy.ProsodyExample, drop, "x"), v); err == nil {
			t.Errorf("Fill accepted an example without %q", drop)
		}
	}
}

// unit reads a systemd unit's Key=Value lines (all values of a key).
func unit(t *testing.T, path string) map[string][]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string][]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if k, v, ok := strings.Cut(line, "="); ok && !strings.HasPrefix(line, "#") {
			out[k] = append(out[k], v)
		}
	}
	return out
}

func TestSystemdUnit(t *testing.T) {
	u := unit(t, "push-appserver.service")
	for k, want := range map[string]string{
		"Type": "notify", "NotifyAccess": "all", "User": "push-appserver", "StateDirectory": "push-appserver", "ProtectSystem": "strict",
		"NoNewPrivileges": "yes", "ProtectHome": "yes", "PrivateTmp": "yes", "CapabilityBoundingSet": "",
		"WorkingDirectory": "/var/lib/push-appserver", "WatchdogSec": "30s", "Restart": "on-failure", "RestartSec": "100ms",
	} {
		if len(u[k]) == 0 || u[k][0] != want {
			t.Errorf("%s=%v, want %q", k, u[k], want)
		}
	}
	// A reload checks the file before it signals the server: a file
	// with problems fails systemctl reload, which otherwise reported
	// success while the server refused the file and ran on.
	if want := []string{
		"/usr/local/bin/push-appserver check-config -config /etc/push-appserver/push-appserver.toml",
		"/bin/kill -HUP $MAINPID",
	}; !slices.Equal(u["ExecReload"], want) {
		t.Errorf("ExecReload=%q, want %q", u["ExecReload"], want)
	}
	// The user the unit runs as is the one sysusers creates.
	users, _ := os.ReadFile("push-appserver.sysusers")
	if !regexp.MustCompile(`(?m)^u push-appserver `).Match(users) {
		t.Errorf("push-appserver.sysusers does not create the user:\n%s", users)
	}

	// systemd itself checks the unit; it wants the binary to exist, so
	// point it at this test's own executable.
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Fatal("systemd-analyze is missing: run scripts/test-deps.sh (Debian package systemd)")
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	text, _ := os.ReadFile("push-appserver.service")
	tmp := filepath.Join(t.TempDir(), "push-appserver.service")
	os.WriteFile(tmp, []byte(strings.ReplaceAll(string(text), "/usr/local/bin/push-appserver", self)), 0o644)
	out, err := exec.Command(analyze, "verify", tmp).CombinedOutput()
	if err != nil || len(strings.TrimSpace(string(out))) > 0 {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
}

// TestUnitAllowsServersAddressFamilies guards the unit's
// RestrictAddressFamilies against what the server really opens. A listener
// on a zoned IPv6 address ("[fe80::1%eth0]:5280", or a component address
// so written) has Go ask the kernel for the zone's interface index over a
// netlink socket; a family the unit leaves out fails that socket with
// EAFNOSUPPORT, and the server does not start under the unit while it
// starts by hand. The server runs under strace, listening on a zoned
// address (::1 with the zone lo, which binds on any machine), and every
// family it opens a socket of must be in the unit's list.
func TestUnitAllowsServersAddressFamilies(t *testing.T) {
	strace, err := exec.LookPath("strace")
	if err != nil {
		t.Fatal("strace is missing: run scripts/test-deps.sh (Debian package strace)")
	}
	allowed := map[string]bool{}
	for _, v := range unit(t, "push-appserver.service")["RestrictAddressFamilies"] {
		for _, f := range strings.Fields(v) {
			allowed[f] = true
		}
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "push-appserver")
	if out, err := exec.Command("go", "build", "-o", bin, "../cmd/push-appserver").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	port := daemon.Port(daemon.FreeAddr(t))
	cfg := filepath.Join(dir, "push-appserver.toml")
	text := fmt.Sprintf("data_dir = %q\n[http]\nlisten = \"[::1%%lo]:%s\"\n", filepath.Join(dir, "data"), port)
	if err := os.WriteFile(cfg, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	trace := filepath.Join(dir, "strace.out")
	log := filepath.Join(dir, "server.log")
	logFile, err := os.Create(log)
	if err != nil {
		t.Fatal(err)
	}
	defer logFile.Close()
	cmd := exec.Command(strace, "-f", "-qq", "-e", "trace=socket", "-o", trace, bin, "serve", "-config", cfg)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	// A group of its own: strace ignores SIGTERM while it runs a command,
	// so the stop goes to the group, and strace ends with the server.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() { daemon.Kill(cmd.Process.Pid); <-exited })
	if err := daemon.WaitListening([]string{"[::1]:" + port}, exited, 30*time.Second); err != nil {
		t.Fatalf("the server did not listen on [::1%%lo]:%s: %v\n%s", port, err, daemon.Tail(log, 20))
	}
	syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(30 * time.Second):
		t.Fatalf("the server did not stop on SIGTERM:\n%s", daemon.Tail(log, 20))
	}
	traced, err := os.ReadFile(trace)
	if err != nil {
		t.Fatal(err)
	}
	families := regexp.MustCompile(`socket\((AF_[A-Z0-9]+)`).FindAllStringSubmatch(string(traced), -1)
	if len(families) == 0 {
		t.Fatalf("strace saw no socket: %s", traced)
	}
	for _, f := range families {
		if !allowed[f[1]] {
			t.Errorf("the server opens an %s socket, which the unit's RestrictAddressFamilies (%v) refuses", f[1], allowed)
		}
	}
}

func TestContainerfile(t *testing.T) {
	text, err := os.ReadFile("Containerfile")
	if err != nil {
		t.Fatal(err)
	}
	var froms, users []string
	var entry string
	for _, line := range strings.Split(string(text), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		switch f[0] {
		case "FROM":
			froms = append(froms, f[1])
		case "USER":
			users = append(users, f[1])
		case "ENTRYPOINT":
			entry = line
		}
	}
	if len(froms) < 2 || froms[len(froms)-1] != "scratch" {
		t.Fatalf("final stage is %v, want scratch", froms)
	}
	if len(users) != 1 || strings.HasPrefix(users[0], "0") || strings.HasPrefix(users[0], "root") {
		t.Fatalf("USER %v: the image must run as a non-root user", users)
	}
	if !strings.Contains(entry, "/usr/local/bin/push-appserver") || !strings.Contains(string(text), "/src/bin/push-appserver /usr/local/bin/push-appserver") {
		t.Fatalf("ENTRYPOINT %q does not run the binary the image copies", entry)
	}
	// The build stage checks that its CA bundle holds Apple's APNS root,
	// USERTrust RSA; Debian's ca-certificates (the same package the
	// golang:bookworm stage has) does.
	if !strings.Contains(string(text), "USERTrust_RSA_Certification_Authority.pem") {
		t.Fatal("the build stage does not check for the USERTrust RSA root")
	}
	root, err := os.ReadFile("/etc/ssl/certs/USERTrust_RSA_Certification_Authority.pem")
	if err != nil {
		t.Fatalf("Debian's ca-certificates lacks USERTrust RSA: %v", err)
	}
	bundle, _ := os.ReadFile("/etc/ssl/certs/ca-certificates.crt")
	if line := strings.Split(string(root), "\n")[1]; !strings.Contains(string(bundle), line) {
		t.Fatal("the CA bundle does not hold USERTrust RSA")
	}
	// What the build stage copies from the context exists.
	if _, err := os.Stat("push-appserver.toml"); err != nil {
		t.Fatal(err)
	}
}

// TestProsodyExample has Prosody load the example: it must parse, and
// declare the component the example push-appserver.toml connects as.
func TestProsodyExample(t *testing.T) {
	prosodyctl, err := exec.LookPath("prosodyctl")
	if err != nil {
		t.Fatal("prosodyctl is missing: run scripts/test-deps.sh")
	}
	// prosodyctl reads the files as the prosody user: nothing private.
	dir, err := os.MkdirTemp("", "prosody-example-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o755)
	example := filepath.Join(dir, "push-appserver.cfg.lua")
	text, err := os.ReadFile("prosody/push-appserver.cfg.lua")
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(example, text, 0o644)
	cfg := filepath.Join(dir, "prosody.cfg.lua")
	os.WriteFile(cfg, []byte(`pidfile = "`+dir+`/p.pid"
data_path = "`+dir+`"
log = { { levels = { min = "error" }, to = "console" } }
plugin_paths = { "/usr/lib/prosody/modules" }
Include "`+example+`"
`), 0o644)
	out, _ := exec.Command(prosodyctl, "--config", cfg, "check", "config").CombinedOutput()
	if !strings.Contains(string(out), "have been loaded") || !strings.Contains(string(out), example) || strings.Contains(string(out), "problem occurred while reading") {
		t.Fatalf("prosodyctl check config:\n%s", out)
	}
	if !strings.Contains(string(text), `Component "push.example.org"`) || !strings.Contains(string(text), `"cloud_notify"`) {
		t.Fatal("the Prosody example lacks the component or mod_cloud_notify")
	}
}

// The ejabberd example is included from the operator's ejabberd.yml, and
// ejabberd refuses to start when an included file names a module the main
// file names too (Debian's ejabberd.yml enables mod_push and
// mod_push_keepalive): "Duplicated option: mod_push" took the operator's
// whole XMPP server down. So the example names no module.
func TestEjabberdExampleNamesNoModule(t *testing.T) {
	for _, line := range strings.Split(deploy.EjabberdExample, "\n") {
		if strings.HasPrefix(line, "modules:") {
			t.Fatalf("the ejabberd example has a modules: section; included into Debian's ejabberd.yml, ejabberd would not start")
		}
	}
	debian, err := os.ReadFile("/etc/ejabberd/ejabberd.yml")
	if err != nil {
		t.Fatalf("%v: Debian's ejabberd is needed (scripts/test-deps.sh)", err)
	}
	// What the example's comment tells operators holds for Debian's file.
	for _, m := range []string{"  mod_push:", "  mod_push_keepalive:"} {
		if !strings.Contains(string(debian), "\n"+m) {
			t.Errorf("Debian's ejabberd.yml no longer enables %s, as the example's comment says it does", strings.TrimSpace(m))
		}
	}
}

// The Prosody example is included at the end of the operator's
// prosody.cfg.lua, whose VirtualHost may set modules_enabled of its own:
// a modules_enabled set for that host in the example replaced the list,
// and Prosody stopped loading the operator's modules without a word.
func TestProsodyExampleKeepsHostModules(t *testing.T) {
	if _, err := exec.LookPath("prosody"); err != nil {
		t.Fatal("prosody is missing: run scripts/test-deps.sh")
	}
	dir, err := os.MkdirTemp("", "prosody-include-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	addrs := daemon.FreeAddrs(t, 2)
	example, err := deploy.Fill(deploy.ProsodyExample, deploy.Values{Domain: "example.org", Component: "push.example.org", Port: daemon.Port(addrs[1]), Secret: "s"})
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "push-appserver.cfg.lua"), []byte(example), 0o644)
	log := filepath.Join(dir, "prosody.log")
	// The operator's file, with cloud_notify enabled where the example's
	// comment says.
	os.WriteFile(filepath.Join(dir, "prosody.cfg.lua"), []byte(`daemonize = false
pidfile = "`+dir+`/p.pid"
data_path = "`+dir+`"
log = { { levels = { min = "debug" }, to = "file", filename = "`+log+`" } }
plugin_paths = { "/usr/lib/prosody/modules" }
modules_enabled = { "disco" }
modules_disabled = { "s2s", "http", "posix" }
c2s_ports = { `+daemon.Port(addrs[0])+` }
c2s_interfaces = { "127.0.0.1" }
s2s_ports = { }

VirtualHost "example.org"
    modules_enabled = { "uptime", "cloud_notify" }

Include "`+filepath.Join(dir, "push-appserver.cfg.lua")+`"
`), 0o644)
	daemon.Chown(dir, "prosody")
	cmd := exec.Command("prosody", "--config", filepath.Join(dir, "prosody.cfg.lua"))
	cmd.SysProcAttr = daemon.SysProcAttr("prosody")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { daemon.Stop(cmd.Process.Pid, 5*time.Second); cmd.Wait() })
	loaded := func(s, module string) bool {
		return strings.Contains(s, "example.org:"+module) || strings.Contains(s, "mod_"+module)
	}
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		b, _ := os.ReadFile(log)
		if loaded(string(b), "uptime") && loaded(string(b), "cloud_notify") && strings.Contains(string(b), "push.example.org") {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("with the example included, Prosody does not load the host's own mod_uptime and mod_cloud_notify (and the component):\n%s", daemon.Tail(log, 40))
		}
	}
}
