package main

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/push-appserver/push-appserver/internal/testutil/ejabberd"
	"github.com/push-appserver/push-appserver/internal/testutil/prosody"
)

// TestInitConnects: what init writes works as written. A real Prosody,
// and a real ejabberd, run init's file for them, and the binary, on
// init's configuration (its registry and HTTP API moved into the test's
// directory), connects to each as the component with the secret init
// drew.
func TestInitConnects(t *testing.T) {
	bin := buildBinary(t)
	for _, server := range []struct {
		name, file string
		start      func(t *testing.T, component func(addr string) (string, error))
	}{
		{"Prosody", "prosody-push-appserver.cfg.lua", func(t *testing.T, c func(string) (string, error)) {
			prosody.Start(t, prosody.Options{Component: c})
		}},
		{"ejabberd", "ejabberd-push-appserver.yml", func(t *testing.T, c func(string) (string, error)) {
			ejabberd.Start(t, ejabberd.Options{Component: c})
		}},
	} {
		t.Run(server.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "etc")
			server.start(t, func(addr string) (string, error) {
				out, err := exec.Command(bin, "init", "-jid", "push.localhost", "-domain", "localhost", "-address", addr, "-dir", dir).CombinedOutput()
				if err != nil {
					return "", fmt.Errorf("init: %v\n%s", err, out)
				}
				b, err := os.ReadFile(filepath.Join(dir, server.file))
				return string(b), err
			})
			initConnects(t, bin, dir)
		})
	}
}

// initConnects checks the files init wrote in dir and runs the binary on
// its configuration until the component is connected.
func initConnects(t *testing.T, bin, dir string) {
	secret, err := os.ReadFile(filepath.Join(dir, "component-secret"))
	if err != nil || !regexp.MustCompile(`^[0-9a-f]{64}\n$`).Match(secret) {
		t.Fatalf("component-secret: %q, %v", secret, err)
	}
	checkInitModes(t, dir, systemGroup)

	text, err := os.ReadFile(filepath.Join(dir, "push-appserver.toml"))
	if err != nil {
		t.Fatal(err)
	}
	addr := freePort(t)
	moved := strings.NewReplacer(`data_dir = "/var/lib/push-appserver"`, fmt.Sprintf("data_dir = %q", filepath.Join(dir, "data")),
		`listen = "127.0.0.1:5280"`, fmt.Sprintf("listen = %q", addr)).Replace(string(text))
	if moved == string(text) || strings.Contains(moved, "/var/lib/push-appserver\"") {
		t.Fatalf("the example's data_dir or listen changed; the test moves them:\n%s", text)
	}
	config := filepath.Join(dir, "test.toml")
	os.WriteFile(config, []byte(moved), 0o600)
	s := startServer(t, bin, config)
	s.waitHealthy(t, addr)
	deadline := time.Now().Add(15 * time.Second)
	for {
		resp, err := http.Get("http://" + addr + "/push_appserver/v1/health")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if strings.Contains(string(body), "component push.localhost: up") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the component did not connect with init's files:\n%s", body)
		}
		time.Sleep(100 * time.Millisecond)
	}

	// init writes only new files.
	out, err := exec.Command(bin, "init", "-jid", "push.localhost", "-domain", "localhost", "-dir", dir).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "exists already") {
		t.Fatalf("init over its own files: %v\n%s", err, out)
	}
	if again, _ := os.ReadFile(filepath.Join(dir, "component-secret")); string(again) != string(secret) {
		t.Fatal("the secret changed")
	}
}

// checkInitModes checks that each file init wrote in dir is its group's
// to read where group finds it, and its owner's alone elsewhere.
func checkInitModes(t *testing.T, dir string, group lookupGroup) {
	t.Helper()
	for name, g := range map[string]string{"component-secret": "push-appserver", "push-appserver.toml": "push-appserver", "prosody-push-appserver.cfg.lua": "prosody", "ejabberd-push-appserver.yml": "ejabberd"} {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		gid, ok := group(g)
		mode := os.FileMode(0o600)
		if ok {
			mode = 0o640
		}
		if fi.Mode().Perm() != mode || ok && int(fi.Sys().(*syscall.Stat_t).Gid) != gid {
			t.Errorf("%s: mode %v, group %d; want %v, group %s (%d, %v)", name, fi.Mode(), fi.Sys().(*syscall.Stat_t).Gid, mode, g, gid, ok)
		}
	}
}

// TestInitGroups: the service that reads each file can, where its group
// exists (the unit runs as push-appserver, Prosody and ejabberd as users
// of their own), and where it does not yet, nobody but the owner can and
// init says how to hand the file over.
func TestInitGroups(t *testing.T) {
	for _, tc := range []struct {
		name   string
		groups map[string]bool
	}{
		{"every group", map[string]bool{"push-appserver": true, "prosody": true, "ejabberd": true}},
		{"no service user yet", map[string]bool{"prosody": true}},
		{"none", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// Groups are faked as the test's own, which it may give files to.
			group := func(name string) (int, bool) { return os.Getgid(), tc.groups[name] }
			dir := filepath.Join(t.TempDir(), "etc")
			var out strings.Builder
			if err := initFiles("push.example.org", "example.org", "127.0.0.1:5347", dir, group, &out); err != nil {
				t.Fatal(err)
			}
			checkInitModes(t, dir, group)
			for _, g := range []string{"push-appserver", "prosody", "ejabberd"} {
				if hint := "chgrp " + g + " "; strings.Contains(out.String(), hint) == tc.groups[g] {
					t.Errorf("group %s here: %v, but the output's hint %q is there: %v\n%s", g, tc.groups[g], hint, !tc.groups[g], out.String())
				}
			}
		})
	}
}

// TestInitDirectory: the directory init makes is searchable by others
// whatever the umask, so that Prosody and ejabberd, running as users of
// their own, reach the files given to their groups; the files' modes
// guard the rest.
func TestInitDirectory(t *testing.T) {
	old := syscall.Umask(0o077)
	defer syscall.Umask(old)
	dir := filepath.Join(t.TempDir(), "etc")
	group := func(string) (int, bool) { return os.Getgid(), true }
	if err := initFiles("push.example.org", "example.org", "127.0.0.1:5347", dir, group, io.Discard); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o751 {
		t.Fatalf("directory %v, %v; want mode 0751", fi.Mode(), err)
	}
	checkInitModes(t, dir, group)
}

// TestInitNotRoot: run by someone who may not give files to the
// services' groups (not root), init still writes every file, its owner's
// alone, and says what to run; it does not stop half-way, which would
// leave files that a second run refuses to overwrite.
func TestInitNotRoot(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "etc")
	var out []byte
	var err error
	if os.Geteuid() == 0 {
		// As nobody, with the real groups of this machine (the test
		// dependencies install Prosody and ejabberd).
		bin := buildBinary(t)
		os.Chmod(filepath.Dir(bin), 0o755)
		// Only the test's own directories: /tmp above them is 1777,
		// and made 0755 it is closed to every other user.
		for p := filepath.Dir(dir); p != filepath.Clean(os.TempDir()) && p != "/"; p = filepath.Dir(p) {
			os.Chmod(p, 0o755)
		}
		os.Chmod(filepath.Dir(dir), 0o777)
		u, lerr := user.Lookup("nobody")
		if lerr != nil {
			t.Fatal(lerr)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		cmd := exec.Command(bin, "init", "-jid", "push.example.org", "-domain", "example.org", "-dir", dir)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: []uint32{}}}
		out, err = cmd.CombinedOutput()
	} else {
		// Root's group, which is not ours to give files to.
		var b bytes.Buffer
		err = initFiles("push.example.org", "example.org", "127.0.0.1:5347", dir, func(string) (int, bool) { return 0, true }, &b)
		out = b.Bytes()
	}
	if err != nil {
		t.Fatalf("init: %v\n%s", err, out)
	}
	for _, name := range []string{"push-appserver.toml", "component-secret", "prosody-push-appserver.cfg.lua", "ejabberd-push-appserver.yml"} {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: %v, %v; want mode 0600", name, fi, err)
		}
		if !strings.Contains(string(out), filepath.Join(dir, name)) {
			t.Errorf("no chgrp printed for %s:\n%s", name, out)
		}
	}
}

// TestInitParentDirectories: "made so past the umask" holds for the
// directory init makes, not for the parents MkdirAll makes on the way
// (-dir /srv/xmpp/push-appserver on a new /srv/xmpp): under umask 077
// they are 0700, and Prosody and ejabberd, running as users of their
// own, cannot reach the files given to their groups.
func TestInitParentDirectories(t *testing.T) {
	old := syscall.Umask(0o077)
	defer syscall.Umask(old)
	top := t.TempDir()
	dir := filepath.Join(top, "srv", "xmpp", "push-appserver")
	group := func(string) (int, bool) { return os.Getgid(), true }
	if err := initFiles("push.example.org", "example.org", "127.0.0.1:5347", dir, group, io.Discard); err != nil {
		t.Fatal(err)
	}
	for p := dir; p != top; p = filepath.Dir(p) {
		if fi, err := os.Stat(p); err != nil || fi.Mode().Perm()&0o001 == 0 {
			t.Errorf("%s: %v, %v; others may not search it", p, fi.Mode(), err)
		}
	}
}

// TestInitIPv6LoopbackAddress: init -address "[::1]:5347" (an IPv6-only
// host's loopback) writes XMPP server files that listen where the
// configuration connects: on ::1, not on 127.0.0.1.
func TestInitIPv6LoopbackAddress(t *testing.T) {
	dir := t.TempDir()
	var out bytes.Buffer
	group := func(string) (int, bool) { return os.Getgid(), true }
	if err := initFiles("push.example.org", "example.org", "[::1]:5347", dir, group, &out); err != nil {
		t.Fatal(err)
	}
	toml, _ := os.ReadFile(filepath.Join(dir, "push-appserver.toml"))
	if !strings.Contains(string(toml), `"[::1]:5347"`) {
		t.Fatalf("push-appserver.toml does not connect to [::1]:5347:\n%s", toml)
	}
	for file, want := range map[string]string{
		"prosody-push-appserver.cfg.lua": `component_interfaces = { "::1" }`,
		"ejabberd-push-appserver.yml":    `ip: "::1"`,
	} {
		b, _ := os.ReadFile(filepath.Join(dir, file))
		if !strings.Contains(string(b), want) {
			t.Errorf("%s does not listen where push-appserver.toml connects ([::1]:5347); want %s in:\n%s", file, want, grepLines(string(b), "127.0.0.1"))
		}
	}
	t.Logf("init's output:\n%s", out.String())
}

func grepLines(s, sub string) string {
	var b strings.Builder
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			b.WriteString(l + "\n")
		}
	}
	return b.String()
}

// Another loopback address must also give XMPP server files that listen
// where push-appserver.toml connects (the component dials
// 127.0.0.2, Prosody listens on 127.0.0.1 alone: connection refused, and
// no hint since 127.0.0.2 is loopback). The unspecified address, which the
// component dials as this machine, must not be called another machine
// whose XMPP server should listen on "::" (every interface).
func TestInitOtherLocalAddresses(t *testing.T) {
	group := func(string) (int, bool) { return os.Getgid(), true }
	dir := t.TempDir()
	var out bytes.Buffer
	if err := initFiles("push.example.org", "example.org", "127.0.0.2:5347", dir, group, &out); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(filepath.Join(dir, "prosody-push-appserver.cfg.lua"))
	if !strings.Contains(string(b), `component_interfaces = { "127.0.0.2" }`) {
		t.Errorf("-address 127.0.0.2:5347: Prosody's file has %s", strings.TrimSpace(grepLines(string(b), "component_interfaces")))
	}
	for _, addr := range []string{"[::]:5347", "0.0.0.0:5347"} {
		out.Reset()
		if err := initFiles("push.example.org", "example.org", addr, t.TempDir(), group, &out); err != nil {
			t.Fatal(err)
		}
		if strings.Contains(out.String(), "not on this machine") {
			t.Errorf("-address %s (this machine, as dialled): init says %q", addr, strings.TrimSpace(grepLines(out.String(), "not on this machine")))
		}
	}
}
