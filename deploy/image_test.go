package deploy_test

import (
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/push-appserver/push-appserver/internal/testutil/daemon"
)

// podman runs podman on a store of its own under dir: nothing of the
// machine's images, containers or state is used or left behind. vfs
// needs no overlay support; runc rather than crun, which refuses the
// hybrid cgroup layouts some hosts have; cgroupfs and no event log, so
// nothing needs systemd or journald.
type podman struct {
	t    *testing.T
	bin  string
	args []string
}

func newPodman(t *testing.T, dir string) *podman {
	t.Helper()
	bin, err := exec.LookPath("podman")
	if err != nil {
		t.Fatal("podman is missing: run scripts/test-deps.sh (Debian packages podman and runc)")
	}
	runc, err := exec.LookPath("runc")
	if err != nil {
		t.Fatal("runc is missing: run scripts/test-deps.sh (Debian package runc)")
	}
	return &podman{t: t, bin: bin, args: []string{
		"--root", filepath.Join(dir, "root"), "--runroot", filepath.Join(dir, "run"), "--tmpdir", filepath.Join(dir, "tmp"),
		"--storage-driver", "vfs", "--runtime", runc, "--cgroup-manager", "cgroupfs", "--events-backend", "none",
	}}
}

func (p *podman) cmd(args ...string) *exec.Cmd {
	return exec.Command(p.bin, append(append([]string{}, p.args...), args...)...)
}

// run runs podman and returns its output; a failure fails the test.
func (p *podman) run(args ...string) string {
	p.t.Helper()
	out, err := p.cmd(args...).CombinedOutput()
	if err != nil {
		p.t.Fatalf("podman %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out))
}

// finalStage returns the Containerfile's last stage, its COPY --from=build
// lines copying from the build context's build-root/ instead, and the
// paths those lines copy from the build stage.
func finalStage(t *testing.T, text string) (stage string, from []string) {
	t.Helper()
	lines := strings.Split(text, "\n")
	last := -1
	for i, l := range lines {
		if strings.HasPrefix(l, "FROM ") {
			last = i
		}
	}
	if last < 0 || strings.TrimSpace(lines[last]) != "FROM scratch" {
		t.Fatalf("the Containerfile's last stage is not FROM scratch")
	}
	copyFrom := regexp.MustCompile(`^COPY --from=build((?: --\S+)*) /(\S+) (\S+)$`)
	var out []string
	for _, l := range lines[last:] {
		if strings.HasSuffix(l, `\`) {
			t.Fatalf("the final stage has a continued line, which this test cannot rewrite: %s", l)
		}
		if m := copyFrom.FindStringSubmatch(l); m != nil {
			from = append(from, m[2])
			l = "COPY" + m[1] + " build-root/" + m[2] + " " + m[3]
		} else if strings.HasPrefix(l, "COPY ") || strings.HasPrefix(l, "ADD ") || strings.HasPrefix(l, "RUN ") {
			t.Fatalf("the final stage has a line this test does not know: %s", l)
		}
		out = append(out, l)
	}
	return strings.Join(out, "\n"), from
}

// buildImage builds the image's final stage, as the Containerfile has
// it, from what its build stage would produce (see TestContainerImage),
// tagged localhost/push-appserver:test in a podman store of its own under
// a directory it returns, removed after the test.
func buildImage(t *testing.T) (*podman, string) {
	t.Helper()
	dir, err := os.MkdirTemp("", "push-appserver-image-")
	if err != nil {
		t.Fatal(err)
	}
	// Cleanup runs after the containers are removed (it was added first).
	t.Cleanup(func() { os.RemoveAll(dir) })
	pm := newPodman(t, dir)
	text, err := os.ReadFile("Containerfile")
	if err != nil {
		t.Fatal(err)
	}
	stage, from := finalStage(t, string(text))
	ctx := filepath.Join(dir, "context")
	root := filepath.Join(ctx, "build-root")
	build := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w -X main.version=image-test",
		"-o", filepath.Join(root, "src/bin/push-appserver"), "../cmd/push-appserver")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	copyFile(t, "/etc/ssl/certs/ca-certificates.crt", filepath.Join(root, "etc/ssl/certs/ca-certificates.crt"))
	copyFile(t, "push-appserver.toml", filepath.Join(root, "out/etc/push-appserver/push-appserver.toml"))
	// As the build stage makes it: group 0 may write (see the
	// Containerfile).
	if err := os.MkdirAll(filepath.Join(root, "out/var/lib/push-appserver"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Join(root, "out/var/lib/push-appserver"), 0o770); err != nil {
		t.Fatal(err)
	}
	for _, f := range from {
		if _, err := os.Stat(filepath.Join(root, f)); err != nil {
			t.Fatalf("the final stage copies /%s from the build stage, which this test does not make: %v", f, err)
		}
	}
	if err := os.WriteFile(filepath.Join(ctx, "Containerfile"), []byte(stage), 0o644); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	pm.run("build", "--quiet", "-t", "localhost/push-appserver:test", "-f", filepath.Join(ctx, "Containerfile"), ctx)
	t.Logf("image built in %v", time.Since(start).Round(time.Millisecond))
	return pm, dir
}

// TestContainerImage builds the image's final stage, as the Containerfile
// has it, with podman, from what its build stage would produce (that
// stage needs the golang image from a registry: this binary, built the
// same way, Debian's CA bundle, the example configuration, an empty data
// directory), runs it as the README says and checks it serves: health,
// a registration stored in the volume, the live page, a reload by the
// reload command run in the container (there is no kill), as the
// unprivileged user, a graceful stop; and that the configuration baked
// into it passes check-config inside the image.
func TestContainerImage(t *testing.T) {
	pm, dir := buildImage(t)
	if user := pm.run("image", "inspect", "--format", "{{.Config.User}}", "localhost/push-appserver:test"); user != "65532:65532" {
		t.Fatalf("image user %q", user)
	}

	// Explicit limits: podman's defaults raise them, which a host without
	// CAP_SYS_RESOURCE refuses.
	limits := []string{"--ulimit", "nofile=4096:4096", "--ulimit", "nproc=4096:4096"}

	// The configuration in the image, as it ships.
	check := pm.cmd(append(append([]string{"run", "--rm", "--network", "none"}, limits...),
		"-e", "PUSH_APPSERVER_COMPONENT_SECRET=s3cret", "localhost/push-appserver:test",
		"check-config", "-config", "/etc/push-appserver/push-appserver.toml")...)
	if out, err := check.CombinedOutput(); err != nil {
		t.Fatalf("check-config in the image: %v\n%s", err, out)
	}

	// Served as the README says: the configuration mounted over the
	// example, the registry in the volume. Host networking, on a free
	// loopback port: nothing of the host's network is changed.
	addr := freeAddr(t)
	cfg := filepath.Join(dir, "push-appserver.toml")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf("data_dir = \"/var/lib/push-appserver\"\n[http]\nlisten = %q\n[apps.fcm]\nkind = \"log\"\n", addr)), 0o644); err != nil {
		t.Fatal(err)
	}
	id := pm.run(append(append([]string{"run", "-d", "--network", "host"}, limits...),
		"-v", cfg+":/etc/push-appserver/push-appserver.toml:ro", "localhost/push-appserver:test")...)
	t.Cleanup(func() { pm.cmd("rm", "-f", "-v", id).Run() })
	registerInContainer(t, pm, id, addr, "image-node", nil)
	if resp, err := http.Get("http://" + addr + "/push_appserver/v1/live"); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("live page: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}
	// No kill in the image: the binary tells the server to reload, as
	// kubectl exec runs it, with the configuration the image's
	// environment names.
	if out := pm.run("exec", id, "/usr/local/bin/push-appserver", "reload"); !strings.Contains(out, "(PID 1)") {
		t.Fatalf("reload in the container: %s", out)
	}
	for deadline := time.Now().Add(10 * time.Second); !strings.Contains(pm.run("logs", id), "reload: nothing changed"); {
		if time.Now().After(deadline) {
			t.Fatalf("no reload in the log after the reload command:\n%s", pm.run("logs", id))
		}
		time.Sleep(100 * time.Millisecond)
	}
	pid := pm.run("inspect", "--format", "{{.State.Pid}}", id)
	status, err := os.ReadFile("/proc/" + pid + "/status")
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`(?m)^Uid:\s+65532\s`).Match(status) {
		t.Fatalf("the server does not run as 65532:\n%s", status)
	}
	// An upgrade (SIGUSR2) would end the container with its entry point,
	// so it is refused there, and the server serves on.
	pm.run("kill", "-s", "USR2", id)
	for deadline := time.Now().Add(10 * time.Second); !strings.Contains(pm.run("logs", id), "upgrade failed"); {
		if time.Now().After(deadline) {
			t.Fatalf("no refused upgrade in the log:\n%s", pm.run("logs", id))
		}
		time.Sleep(100 * time.Millisecond)
	}
	if logs := pm.run("logs", id); !strings.Contains(logs, "PID 1") {
		t.Fatalf("the refusal does not say why:\n%s", logs)
	}
	time.Sleep(300 * time.Millisecond)
	if resp, err := http.Get("http://" + addr + "/push_appserver/v1/health"); err != nil {
		t.Fatalf("after SIGUSR2: %v\n%s", err, pm.run("logs", id))
	} else {
		resp.Body.Close()
	}
	pm.run("stop", "-t", "20", id)
	if code := pm.run("inspect", "--format", "{{.State.ExitCode}}", id); code != "0" {
		t.Fatalf("exit code %s after SIGTERM\n%s", code, pm.run("logs", id))
	}
	if logs := pm.run("logs", id); !strings.Contains(logs, "version=image-test") || !strings.Contains(logs, "stopped") {
		t.Fatalf("log:\n%s", logs)
	}
}

// registerInContainer waits up to 30 s for the server of container id,
// listening at addr, to say RUNNING with its registry up (calling
// running, if given, before each look, to fail early), then registers
// node of the app fcm and checks the answer.
func registerInContainer(t *testing.T, pm *podman, id, addr, node string, running func()) {
	t.Helper()
	base := "http://" + addr + "/push_appserver/v1/"
	for deadline := time.Now().Add(30 * time.Second); ; {
		if running != nil {
			running()
		}
		resp, err := http.Get(base + "health")
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK && string(b) == "RUNNING\nregistry: up\n" {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no RUNNING from /push_appserver/v1/health: %v\n%s", err, pm.run("logs", id))
		}
		time.Sleep(100 * time.Millisecond)
	}
	resp, err := http.PostForm(base+"register", url.Values{"type": {"fcm"}, "node": {node}, "token": {"t"}})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.HasPrefix(string(b), "OK\n"+node+"\n") {
		t.Fatalf("register: %q\n%s", b, pm.run("logs", id))
	}
}

func copyFile(t *testing.T, src, dst string) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func freeAddr(t *testing.T) string {
	t.Helper()
	return daemon.FreeAddr(t)
}

// TestContainerUpgradeRefusedInSharedPIDNamespace guards the refusal of
// an upgrade (SIGUSR2) by a server that is its container's main process
// without being PID 1: in a pod whose containers share one PID namespace
// (Kubernetes' shareProcessNamespace; here, podman's --pid container:)
// another process is PID 1, yet the container ends when the server
// exits and takes the new process with it. The server must refuse, say
// why, and serve on, as it does as PID 1.
func TestContainerUpgradeRefusedInSharedPIDNamespace(t *testing.T) {
	pm, dir := buildImage(t)
	limits := []string{"--ulimit", "nofile=4096:4096", "--ulimit", "nproc=4096:4096"}
	// PID 1 of the shared namespace, as a pod's pause process is: the
	// image's own server, on no network.
	holder := pm.run(append(append([]string{"run", "-d", "--network", "none"}, limits...),
		"-e", "PUSH_APPSERVER_COMPONENT_SECRET=s3cret", "localhost/push-appserver:test")...)
	t.Cleanup(func() { pm.cmd("rm", "-f", "-v", holder).Run() })
	addr := freeAddr(t)
	cfg := filepath.Join(dir, "push-appserver.toml")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf("data_dir = \"/var/lib/push-appserver\"\n[http]\nlisten = %q\n[apps.fcm]\nkind = \"log\"\n", addr)), 0o644); err != nil {
		t.Fatal(err)
	}
	id := pm.run(append(append([]string{"run", "-d", "--network", "host", "--pid", "container:" + holder}, limits...),
		"-v", cfg+":/etc/push-appserver/push-appserver.toml:ro", "localhost/push-appserver:test")...)
	t.Cleanup(func() { pm.cmd("rm", "-f", "-v", id).Run() })
	health := "http://" + addr + "/push_appserver/v1/health"
	for deadline := time.Now().Add(30 * time.Second); ; {
		resp, err := http.Get(health)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no health: %v\n%s", err, pm.run("logs", id))
		}
		time.Sleep(100 * time.Millisecond)
	}
	// The server is not PID 1 of its namespace (the holder is).
	status, err := os.ReadFile("/proc/" + pm.run("inspect", "--format", "{{.State.Pid}}", id) + "/status")
	if err != nil {
		t.Fatal(err)
	}
	if m := regexp.MustCompile(`(?m)^NSpid:\s+[0-9]+\s+([0-9]+)$`).FindSubmatch(status); m == nil || string(m[1]) == "1" {
		t.Fatalf("the server is not a process beside PID 1 of a PID namespace:\n%s", status)
	}
	pm.run("kill", "-s", "USR2", id)
	for deadline := time.Now().Add(20 * time.Second); ; {
		if state := pm.run("inspect", "--format", "{{.State.Status}}", id); state != "running" {
			t.Fatalf("the container %s after SIGUSR2, and the new process with it:\n%s", state, pm.run("logs", id))
		}
		if strings.Contains(pm.run("logs", id), "upgrade failed") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no refused upgrade in the log:\n%s", pm.run("logs", id))
		}
		time.Sleep(100 * time.Millisecond)
	}
	if logs := pm.run("logs", id); !strings.Contains(logs, "PID namespace") {
		t.Fatalf("the refusal does not say why:\n%s", logs)
	}
	resp, err := http.Get(health)
	if err != nil {
		t.Fatalf("after SIGUSR2: %v\n%s", err, pm.run("logs", id))
	}
	resp.Body.Close()
	pm.run("stop", "-t", "20", id)
	if code := pm.run("inspect", "--format", "{{.State.ExitCode}}", id); code != "0" {
		t.Fatalf("exit code %s after SIGTERM\n%s", code, pm.run("logs", id))
	}
}

// TestContainerImageArbitraryUID runs the image as OpenShift's restricted
// policy does: an arbitrary user ID with group 0 (not the image's user),
// the root file system read-only, the data directory the image's own.
// Images for it give group 0 what their user may do on the paths it
// writes; the data directory was its user's alone, and the server could
// not create its registry there.
func TestContainerImageArbitraryUID(t *testing.T) {
	pm, dir := buildImage(t)
	limits := []string{"--ulimit", "nofile=4096:4096", "--ulimit", "nproc=4096:4096"}
	addr := freeAddr(t)
	cfg := filepath.Join(dir, "push-appserver.toml")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf("data_dir = \"/var/lib/push-appserver\"\n[http]\nlisten = %q\n[apps.fcm]\nkind = \"log\"\n", addr)), 0o644); err != nil {
		t.Fatal(err)
	}
	id := pm.run(append(append([]string{"run", "-d", "--network", "host", "--read-only", "--user", "1000680000:0"}, limits...),
		"-v", cfg+":/etc/push-appserver/push-appserver.toml:ro", "localhost/push-appserver:test")...)
	t.Cleanup(func() { pm.cmd("rm", "-f", "-v", id).Run() })
	registerInContainer(t, pm, id, addr, "uid-node", func() {
		if state := pm.run("inspect", "--format", "{{.State.Status}}", id); state != "running" {
			t.Fatalf("the server %s as user 1000680000:0:\n%s", state, pm.run("logs", id))
		}
	})
	pm.run("stop", "-t", "20", id)
	if code := pm.run("inspect", "--format", "{{.State.ExitCode}}", id); code != "0" {
		t.Fatalf("exit code %s after SIGTERM\n%s", code, pm.run("logs", id))
	}
}
