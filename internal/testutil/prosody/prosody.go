// Package prosody starts a real Prosody XMPP server for end-to-end tests:
// its own config, data directory, TLS certificate and free ports, and for
// the app server the operators' example
// (deploy/prosody/push-appserver.cfg.lua: the component and
// mod_cloud_notify) with the test's domain, port, jid and secret.
// Prosody comes from Debian's prosody and prosody-modules packages, which
// scripts/test-deps.sh (make test-deps) installs; when they are missing the
// test fails saying so. Nothing is installed from inside a test.
package prosody

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/push-appserver/push-appserver/deploy"
	"github.com/push-appserver/push-appserver/internal/testutil/daemon"
	"github.com/push-appserver/push-appserver/internal/testutil/logbuf"
)

// Server is a running Prosody.
type Server struct {
	Domain          string // the VirtualHost, "localhost"
	ComponentJID    string
	ComponentSecret string
	C2SAddr         string
	ComponentAddr   string

	t       testing.TB
	dir     string
	cfgPath string
	cmd     *exec.Cmd
	log     string
	mu      sync.Mutex
	exited  chan struct{}
}

// Options adjust the generated configuration.
type Options struct {
	// ComponentJID defaults to "push.localhost".
	ComponentJID string
	// Extra is appended to the global section of the config.
	Extra string
	// Component, when set, returns the file that configures the
	// component and mod_cloud_notify (with VirtualHost "localhost") for
	// the component port at addr, instead of the operators' example
	// filled in; the component's secret is then the file's.
	Component func(addr string) (string, error)
}

// Start writes a config and starts Prosody (the test fails if it is not
// installed). It is stopped when the test ends.
func Start(t testing.TB, opts Options) *Server {
	t.Helper()
	ensureInstalled(t)
	if opts.ComponentJID == "" {
		opts.ComponentJID = "push.localhost"
	}
	dir := t.TempDir()
	addrs := daemon.FreeAddrs(t, 2)
	s := &Server{
		Domain:          "localhost",
		ComponentJID:    opts.ComponentJID,
		ComponentSecret: "component-secret",
		C2SAddr:         addrs[0],
		ComponentAddr:   addrs[1],
		t:               t,
		dir:             dir,
		cfgPath:         filepath.Join(dir, "prosody.cfg.lua"),
		log:             filepath.Join(dir, "prosody.log"),
	}
	for _, d := range []string{"data", "certs"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o750); err != nil {
			t.Fatal(err)
		}
	}
	daemon.WriteCert(t, filepath.Join(dir, "certs"), s.Domain)
	// The component, its port and mod_cloud_notify's options are the
	// operators' example, with this instance's domain, port, jid and
	// secret; mod_cloud_notify is enabled in the main file, as the
	// example asks.
	example, err := deploy.Fill(deploy.ProsodyExample, deploy.Values{
		Domain: s.Domain, Component: s.ComponentJID, Port: daemon.Port(s.ComponentAddr), Secret: s.ComponentSecret})
	if opts.Component != nil {
		s.ComponentSecret = ""
		example, err = opts.Component(s.ComponentAddr)
	}
	if err != nil {
		t.Fatalf("the component's Prosody configuration: %v", err)
	}
	examplePath := filepath.Join(dir, "push-appserver.cfg.lua")
	if err := os.WriteFile(examplePath, []byte(example), 0o640); err != nil {
		t.Fatal(err)
	}
	cfg := fmt.Sprintf(`-- generated for a test
daemonize = false
pidfile = %[1]q
data_path = %[2]q
log = { { levels = { min = "debug" }, to = "file", filename = %[3]q } }
plugin_paths = { "/usr/lib/prosody/modules" }
modules_enabled = { "roster", "saslauth", "tls", "disco", "ping", "offline", "cloud_notify" }
modules_disabled = { "s2s", "http", "posix" }
c2s_ports = { %[4]s }
c2s_interfaces = { "127.0.0.1" }
s2s_ports = { }
authentication = "internal_plain"
storage = "internal"
c2s_require_encryption = false
allow_unencrypted_plain_auth = true
certificates = %[5]q
ssl = { certificate = %[6]q, key = %[7]q }
%[8]s

Include %[9]q
`, filepath.Join(dir, "prosody.pid"), filepath.Join(dir, "data"), s.log, daemon.Port(s.C2SAddr),
		filepath.Join(dir, "certs"), filepath.Join(dir, "certs", "localhost.crt"), filepath.Join(dir, "certs", "localhost.key"),
		opts.Extra, examplePath)
	if err := os.WriteFile(s.cfgPath, []byte(cfg), 0o640); err != nil {
		t.Fatal(err)
	}
	daemon.Chown(s.dir, "prosody")
	s.start()
	t.Cleanup(func() {
		s.Stop()
		if t.Failed() {
			t.Logf("prosody log (tail):\n%s", s.LogTail(60))
		}
	})
	return s
}

// ensureInstalled fails the test when Prosody or mod_cloud_notify is
// missing. Installing is make's job (scripts/test-deps.sh), never a test's.
func ensureInstalled(t testing.TB) {
	t.Helper()
	if err := checkInstalled(); err != nil {
		t.Fatalf("%v: `make test-deps` (scripts/test-deps.sh) installs it", err)
	}
}

// pluginFiles are where Debian's prosody-modules may put mod_cloud_notify,
// the same places scripts/test-deps.sh accepts.
var pluginFiles = []string{
	"/usr/lib/prosody/modules/mod_cloud_notify/mod_cloud_notify.lua",
	"/usr/lib/prosody/modules/mod_cloud_notify.lua",
}

func checkInstalled() error {
	if _, err := exec.LookPath("prosody"); err != nil {
		return errors.New("prosody is not installed (Debian package prosody)")
	}
	for _, f := range pluginFiles {
		if _, err := os.Stat(f); err == nil {
			return nil
		}
	}
	return fmt.Errorf("mod_cloud_notify is not installed (Debian package prosody-modules; looked for %s)", strings.Join(pluginFiles, ", "))
}

func (s *Server) start() {
	t := s.t
	t.Helper()
	s.mu.Lock()
	s.cmd = exec.Command("prosody", "--config", s.cfgPath)
	// Read while Prosody still writes to it, when it is slow to start.
	var out logbuf.Buffer
	s.cmd.Stdout, s.cmd.Stderr = &out, &out
	s.cmd.SysProcAttr = daemon.SysProcAttr("prosody")
	if err := s.cmd.Start(); err != nil {
		s.mu.Unlock()
		t.Fatalf("starting prosody: %v", err)
	}
	exited := make(chan struct{})
	s.exited = exited
	cmd := s.cmd
	go func() { cmd.Wait(); close(exited) }()
	s.mu.Unlock()
	if err := daemon.WaitListening([]string{s.C2SAddr, s.ComponentAddr}, exited, 20*time.Second); err != nil {
		t.Fatalf("prosody: %v:\n%s\nlog:\n%s", err, out.String(), s.LogTail(40))
	}
}

// Stop kills Prosody (as a crash would) and waits for it to go.
func (s *Server) Stop() {
	s.mu.Lock()
	cmd, exited := s.cmd, s.exited
	s.mu.Unlock()
	if cmd == nil || cmd.Process == nil {
		return
	}
	daemon.Kill(cmd.Process.Pid)
	<-exited
}

// Restart stops Prosody and starts it again with the same config and data.
func (s *Server) Restart() {
	s.Stop()
	s.start()
}

// Register creates a user account with prosodyctl.
func (s *Server) Register(user, password string) {
	s.t.Helper()
	cmd := exec.Command("prosodyctl", "--config", s.cfgPath, "register", user, s.Domain, password)
	cmd.SysProcAttr = daemon.SysProcAttr("prosody")
	if out, err := cmd.CombinedOutput(); err != nil {
		s.t.Fatalf("prosodyctl register %s: %v\n%s", user, err, out)
	}
}

// LogTail returns the last n lines of Prosody's log.
func (s *Server) LogTail(n int) string { return daemon.Tail(s.log, n) }

// Log returns Prosody's whole log.
func (s *Server) Log() string {
	b, _ := os.ReadFile(s.log)
	return string(b)
}
