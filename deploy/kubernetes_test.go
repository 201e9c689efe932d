package deploy_test

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/push-appserver/push-appserver/internal/config"
	"github.com/push-appserver/push-appserver/internal/testutil/logbuf"
)

// manifest is deploy/kubernetes/push-appserver.yaml, read as text: the
// few values the tests need are found by their keys.
type manifest struct {
	t    *testing.T
	text string
}

func readManifest(t *testing.T) manifest {
	t.Helper()
	b, err := os.ReadFile("kubernetes/push-appserver.yaml")
	if err != nil {
		t.Fatal(err)
	}
	return manifest{t: t, text: string(b)}
}

// after returns the value of the first "key: value" line that follows
// the line holding anchor.
func (m manifest) after(anchor, key string) string {
	m.t.Helper()
	i := strings.Index(m.text, anchor)
	if i < 0 {
		m.t.Fatalf("the manifest has no %q", anchor)
	}
	v := regexp.MustCompile(`(?m)^\s*-?\s*` + regexp.QuoteMeta(key) + `:\s*(\S.*?)\s*$`).FindStringSubmatch(m.text[i+len(anchor):])
	if v == nil {
		m.t.Fatalf("the manifest has no %s after %q", key, anchor)
	}
	return v[1]
}

// config returns the ConfigMap's push-appserver.toml.
func (m manifest) config() string {
	m.t.Helper()
	_, rest, ok := strings.Cut(m.text, "  push-appserver.toml: |\n")
	if !ok {
		m.t.Fatal("the manifest's ConfigMap has no push-appserver.toml")
	}
	var b strings.Builder
	for line := range strings.Lines(rest) {
		if strings.TrimSpace(line) != "" && !strings.HasPrefix(line, "    ") {
			break
		}
		b.WriteString(strings.TrimPrefix(line, "    "))
	}
	return b.String()
}

// drainGrace is how long the server's drain after shutdown_delay takes
// at most (cmd/push-appserver's shutdownGrace).
const drainGrace = 20 * time.Second

// TestKubernetesManifest guards the manifest's settings against the
// binary: the configuration is valid and has a shutdown_delay, which
// the pod's grace covers together with the drain (else the kubelet
// kills the server in its drain); the server reads the configuration
// where the ConfigMap is mounted, as serve and the commands run with
// kubectl exec do; each container mounts what it names.
func TestKubernetesManifest(t *testing.T) {
	m := readManifest(t)
	t.Setenv("PUSH_APPSERVER_COMPONENT_SECRET", "s3cret")
	t.Setenv("PUSH_APPSERVER_DSN", "postgres://u@db/push")
	cfg, err := config.Parse(m.config(), t.TempDir())
	if err != nil {
		t.Fatalf("the manifest's configuration: %v", err)
	}
	if len(cfg.Warnings) > 0 {
		t.Errorf("the manifest's configuration draws warnings: %q", cfg.Warnings)
	}
	if cfg.ShutdownDelay <= 0 {
		t.Fatal("the manifest's configuration has no shutdown_delay")
	}
	if cfg.HTTP.Listen != ":5280" {
		t.Errorf("http.listen %q: the probes and the Service use port 5280 on every address", cfg.HTTP.Listen)
	}
	grace, err := strconv.Atoi(m.after("template:", "terminationGracePeriodSeconds"))
	if err != nil {
		t.Fatal(err)
	}
	if need := cfg.ShutdownDelay.D() + drainGrace; time.Duration(grace)*time.Second <= need {
		t.Errorf("terminationGracePeriodSeconds %d does not cover shutdown_delay and the drain (%v)", grace, need)
	}
	if dir := m.after("- name: config\n", "mountPath"); m.after("- name: PUSH_APPSERVER_CONFIG", "value") != dir+"/push-appserver.toml" {
		t.Errorf("PUSH_APPSERVER_CONFIG is not the ConfigMap's file under %s", dir)
	}
	if m.after("- name: data\n", "mountPath") != cfg.DataDir {
		t.Errorf("the data volume is not mounted at data_dir %s, where the PID file the reload command reads goes", cfg.DataDir)
	}
	if regexp.MustCompile(`(?m)^\s*subPath:`).MatchString(m.text) {
		t.Error("a subPath mount is never updated: a renewed certificate in it would not reach the server")
	}
}

// TestKubernetesProbes runs the binary on the manifest's configuration
// (the registry on SQLite, its XMPP server absent) and asks the pages
// its probes name: the liveness probe's answers 200, and so does the
// readiness probe's although the component is down, since the Service
// carries HTTP only; from SIGTERM on the readiness probe's answers 503
// while the liveness probe's still answers 200.
func TestKubernetesProbes(t *testing.T) {
	m := readManifest(t)
	live := m.after("livenessProbe:", "path")
	ready := m.after("readinessProbe:", "path")
	dir := t.TempDir()
	bin := filepath.Join(dir, "push-appserver")
	if out, err := exec.Command("go", "build", "-o", bin, "../cmd/push-appserver").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	addr, absent := freeAddr(t), freeAddr(t)
	text := m.config()
	for _, r := range [][2]string{
		{`driver = "postgres"`, `driver = "sqlite"`},
		{`dsn = "env:PUSH_APPSERVER_DSN"`, ``},
		{`listen = ":5280"`, fmt.Sprintf("listen = %q", addr)},
		{`data_dir = "/var/lib/push-appserver"`, fmt.Sprintf("data_dir = %q", filepath.Join(dir, "data"))},
		{`address = "xmpp.example.org:5347"`, fmt.Sprintf("address = %q", absent)},
	} {
		if !strings.Contains(text, r[0]) {
			t.Fatalf("the manifest's configuration has no %s", r[0])
		}
		text = strings.Replace(text, r[0], r[1], 1)
	}
	cfgFile := filepath.Join(dir, "push-appserver.toml")
	if err := os.WriteFile(cfgFile, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	log := &logbuf.Buffer{}
	cmd := exec.Command(bin, "serve", "-config", cfgFile)
	cmd.Env = append(os.Environ(), "PUSH_APPSERVER_COMPONENT_SECRET=s3cret")
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			t.Logf("server log:\n%s", log.String())
		}
	})
	get := func(path string) (int, string) {
		resp, err := http.Get("http://" + addr + path)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	// waitFor polls path until it answers code.
	waitFor := func(path string, code int) string {
		t.Helper()
		for deadline := time.Now().Add(15 * time.Second); ; {
			got, body := get(path)
			if got == code {
				return body
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: %d %q, want %d", path, got, body, code)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	waitFor(ready, 200)
	if code, body := get("/push_appserver/v1/health"); !strings.Contains(body, "component push.example.org: down") {
		t.Fatalf("health: %d %q, want the component down", code, body)
	}
	if code, body := get(live); code != 200 {
		t.Fatalf("%s: %d %q", live, code, body)
	}
	cmd.Process.Signal(syscall.SIGTERM)
	if body := waitFor(ready, 503); body != "NOT READY\nshutting down\n" {
		t.Fatalf("%s while stopping: %q", ready, body)
	}
	if code, body := get(live); code != 200 {
		t.Fatalf("%s while stopping: %d %q", live, code, body)
	}
}
