// Package ejabberd starts a real ejabberd for end-to-end tests: its own
// config, spool and log directories, TLS certificate and free loopback
// ports, and for the app server the operators' example
// (deploy/ejabberd/push-appserver.yml: the component listener and
// mod_push) with the test's port, jid and secret. Erlang distribution uses a fixed port of its own on loopback, so
// no epmd is needed and parallel instances do not meet.
//
// ejabberd comes from Debian's ejabberd package, which scripts/test-deps.sh
// (run by `make test-deps`) installs; when it is missing the test fails and
// says so.
package ejabberd

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/push-appserver/push-appserver/deploy"
	"github.com/push-appserver/push-appserver/internal/testutil/daemon"
	"github.com/push-appserver/push-appserver/internal/testutil/logbuf"
)

// Server is a running ejabberd.
type Server struct {
	Domain          string // the virtual host, "localhost"
	ComponentJID    string
	ComponentSecret string
	C2SAddr         string
	ComponentAddr   string

	t       testing.TB
	dir     string
	ctlArgs []string
	env     []string
	log     string
	mu      sync.Mutex
	cmd     *exec.Cmd
	exited  chan struct{}
}

// Options adjust the generated configuration.
type Options struct {
	// ComponentJID defaults to "push.localhost".
	ComponentJID string
	// Extra is appended to the top level of ejabberd.yml.
	Extra string
	// Component, when set, returns the file that configures the
	// component listener and mod_push for the component port at addr,
	// instead of the operators' example filled in; the component's
	// secret is then the file's.
	Component func(addr string) (string, error)
}

const ctlPath = "/usr/sbin/ejabberdctl"

// Start writes a config and starts ejabberd; it is stopped when the test
// ends.
func Start(t testing.TB, opts Options) *Server {
	t.Helper()
	if _, err := os.Stat(ctlPath); err != nil {
		t.Fatalf("ejabberd is needed for this test and is not installed (%v): run `make test-deps` (scripts/test-deps.sh installs Debian's ejabberd)", err)
	}
	if opts.ComponentJID == "" {
		opts.ComponentJID = "push.localhost"
	}
	dir := t.TempDir()
	addrs := daemon.FreeAddrs(t, 3)
	s := &Server{
		Domain:          "localhost",
		ComponentJID:    opts.ComponentJID,
		ComponentSecret: "component-secret",
		C2SAddr:         addrs[0],
		ComponentAddr:   addrs[1],
		t:               t,
		dir:             dir,
	}
	for _, d := range []string{"spool", "logs", "certs"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o750); err != nil {
			t.Fatal(err)
		}
	}
	cert, key := daemon.WriteCert(t, filepath.Join(dir, "certs"), s.Domain)
	// ejabberd wants certificate and key in one file.
	pemPath := filepath.Join(dir, "certs", "localhost.pem")
	c, _ := os.ReadFile(cert)
	k, _ := os.ReadFile(key)
	if err := os.WriteFile(pemPath, append(c, k...), 0o640); err != nil {
		t.Fatal(err)
	}
	s.log = filepath.Join(dir, "logs", "ejabberd.log")
	// The component listener is the operators' example, with this
	// instance's port, jid and secret.
	example, err := deploy.Fill(deploy.EjabberdExample, deploy.Values{
		Domain: s.Domain, Component: s.ComponentJID, Port: daemon.Port(s.ComponentAddr), Secret: s.ComponentSecret})
	if opts.Component != nil {
		s.ComponentSecret = ""
		example, err = opts.Component(s.ComponentAddr)
	}
	if err != nil {
		t.Fatalf("the component's ejabberd configuration: %v", err)
	}
	examplePath := filepath.Join(dir, "push-appserver.yml")
	if err := os.WriteFile(examplePath, []byte(example), 0o640); err != nil {
		t.Fatal(err)
	}
	cfg := fmt.Sprintf(`# generated for a test
hosts: [%[1]q]
loglevel: info
certfiles: [%[2]q]
listen:
  - {port: %[3]s, ip: "127.0.0.1", module: ejabberd_c2s, starttls: true}
s2s_access: none
auth_method: internal
acl:
  local:
    user_regexp: ""
access_rules:
  local:
    allow: local
modules:
  mod_disco: {}
  mod_roster: {}
  mod_offline: {}
  # no mod_stream_mgmt: a disconnect is final, so the next message pushes
  # The users' side as the example's comment gives it: the main file's,
  # as in Debian's ejabberd.yml, not the included one's.
  mod_push:
    include_body: "New message"
    include_sender: false
  mod_push_keepalive: {}
include_config_file: [%[4]q]
%[5]s
`, s.Domain, pemPath, daemon.Port(s.C2SAddr), examplePath, opts.Extra)
	if err := os.WriteFile(filepath.Join(dir, "ejabberd.yml"), []byte(cfg), 0o640); err != nil {
		t.Fatal(err)
	}
	cookie := make([]byte, 16)
	rand.Read(cookie)
	distPort := daemon.Port(addrs[2])
	// Our own ejabberdctl.cfg, so the system one is not read; the node name
	// and cookie are this instance's alone.
	ctlCfg := fmt.Sprintf("ERLANG_NODE=ejabberd%s@localhost\nERL_OPTIONS=\"-setcookie %s\"\nINET_DIST_INTERFACE=127.0.0.1\nERL_DIST_PORT=%s\n",
		distPort, hex.EncodeToString(cookie), distPort)
	if err := os.WriteFile(filepath.Join(dir, "ejabberdctl.cfg"), []byte(ctlCfg), 0o640); err != nil {
		t.Fatal(err)
	}
	s.ctlArgs = []string{"--config-dir", dir, "--config", filepath.Join(dir, "ejabberd.yml"),
		"--ctl-config", filepath.Join(dir, "ejabberdctl.cfg"),
		"--logs", filepath.Join(dir, "logs"), "--spool", filepath.Join(dir, "spool")}
	s.env = append(os.Environ(), "ERL_DIST_PORT="+distPort, "INET_DIST_INTERFACE=127.0.0.1", "HOME="+dir)
	daemon.Chown(dir, "ejabberd")
	s.start()
	t.Cleanup(func() {
		s.Stop()
		if t.Failed() {
			t.Logf("ejabberd log (tail):\n%s", s.LogTail(60))
		}
	})
	return s
}

func (s *Server) ctl(args ...string) *exec.Cmd {
	cmd := exec.Command(ctlPath, append(append([]string{}, s.ctlArgs...), args...)...)
	cmd.Env = s.env
	cmd.Dir = s.dir
	// As the ejabberd user ourselves: ejabberdctl run as root would su to
	// it, in a session of its own that a kill of our process group misses.
	cmd.SysProcAttr = daemon.SysProcAttr("ejabberd")
	return cmd
}

func (s *Server) start() {
	t := s.t
	t.Helper()
	started := strings.Count(s.Log(), startedLine)
	s.mu.Lock()
	s.cmd = s.ctl("foreground")
	// Read while ejabberd still writes to it, when it is slow to start.
	var out logbuf.Buffer
	s.cmd.Stdout, s.cmd.Stderr = &out, &out
	if err := s.cmd.Start(); err != nil {
		s.mu.Unlock()
		t.Fatalf("starting ejabberd: %v", err)
	}
	exited := make(chan struct{})
	s.exited = exited
	cmd := s.cmd
	go func() { cmd.Wait(); close(exited) }()
	s.mu.Unlock()
	if err := daemon.WaitListening([]string{s.C2SAddr, s.ComponentAddr}, exited, startTimeout); err != nil {
		t.Fatalf("ejabberd: %v\n%s\nlog:\n%s", err, out.String(), s.LogTail(40))
	}
	// The listeners open before every module and table is ready; ejabberd
	// says when it is.
	deadline := time.Now().Add(startTimeout)
	for strings.Count(s.Log(), startedLine) <= started {
		if time.Now().After(deadline) {
			t.Fatalf("ejabberd did not finish starting:\n%s", s.LogTail(40))
		}
		select {
		case <-exited:
			t.Fatalf("ejabberd exited at start:\n%s\n%s", out.String(), s.LogTail(40))
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// startTimeout bounds each of the start's waits: for the listeners, then
// for the line saying ejabberd started. The Erlang VM takes seconds to
// start on an idle machine; on two loaded cores under the race detector it
// took over a minute to open its listeners.
const startTimeout = 3 * time.Minute

// startedLine is what ejabberd logs when it has started.
const startedLine = " is started in the node "

// Stop stops ejabberd as its service does (SIGTERM: Erlang's init:stop,
// which writes mnesia's disc tables out; a SIGKILL would lose the
// accounts) and waits until its whole process group is gone (the shell
// that started the Erlang VM exits first), killing it after 30 s.
func (s *Server) Stop() {
	s.mu.Lock()
	cmd, exited := s.cmd, s.exited
	s.mu.Unlock()
	if cmd == nil || cmd.Process == nil {
		return
	}
	pgid := cmd.Process.Pid
	syscall.Kill(-pgid, syscall.SIGTERM)
	deadline := time.Now().Add(30 * time.Second)
	for syscall.Kill(-pgid, 0) == nil {
		if time.Now().After(deadline) {
			daemon.Kill(pgid)
		}
		time.Sleep(20 * time.Millisecond)
	}
	<-exited
}

// Restart stops ejabberd and starts it again with the same config and
// spool (accounts and push sessions kept).
func (s *Server) Restart() {
	s.Stop()
	s.start()
}

// Register creates a user account with ejabberdctl.
func (s *Server) Register(user, password string) {
	s.t.Helper()
	if out, err := s.ctl("register", user, s.Domain, password).CombinedOutput(); err != nil {
		s.t.Fatalf("ejabberdctl register %s: %v\n%s", user, err, out)
	}
}

// LogTail returns the last n lines of ejabberd's log.
func (s *Server) LogTail(n int) string { return daemon.Tail(s.log, n) }

// Log returns ejabberd's whole log.
func (s *Server) Log() string {
	b, _ := os.ReadFile(s.log)
	return string(b)
}

// Has reports whether ejabberd's log contains substr.
func (s *Server) Has(substr string) bool { return strings.Contains(s.Log(), substr) }
