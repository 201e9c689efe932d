package main

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
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
	for name, mode := range map[string]os.FileMode{"component-secret": 0o600, "prosody-push-appserver.cfg.lua": 0o600, "ejabberd-push-appserver.yml": 0o600, "push-appserver.toml": 0o640} {
		if fi, err := os.Stat(filepath.Join(dir, name)); err != nil || fi.Mode().Perm() != mode {
			t.Errorf("%s: %v, %v; want mode %v", name, fi.Mode(), err, mode)
		}
	}

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
