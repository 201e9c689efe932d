package main

import (
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/push-appserver/push-appserver/internal/testutil/logbuf"
)

// A registry that Kubernetes' fsGroup gave the pod's group (read and
// write for the group, which the kubelet sets on every mount of the
// volume), owned by a user ID the server does not run as (the volume
// restored into another namespace, whose pods OpenShift gives another
// user ID), is opened and served. The server, not its owner, could not
// take the group's access away, and refused to start: nothing in the pod
// can change a file's owner.
func TestRegistryOfAnotherUserInOurGroup(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("this test gives the registry to another user, which takes root")
	}
	bin := buildBinary(t)
	os.Chmod(filepath.Dir(bin), 0o755)
	dir, addr, config := minimalConfig(t)
	data := filepath.Join(dir, "data")
	first := startServer(t, bin, config)
	first.waitHealthy(t, addr)
	secret := first.registerTo(t, "fcm", "restored", "t1")
	first.stop(t)

	// As the kubelet leaves a volume with fsGroup 0: group 0 may read
	// and write everything, and the files are another user's.
	const otherUID, ourUID = 1000650000, 1000680000
	for p := dir; p != filepath.Clean(os.TempDir()) && p != "/"; p = filepath.Dir(p) {
		os.Chmod(p, 0o750)
	}
	os.Chmod(config, 0o640)
	os.Chmod(data, 0o770)
	entries, err := os.ReadDir(data)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		p := filepath.Join(data, e.Name())
		if err := os.Chown(p, otherUID, 0); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, 0o660); err != nil {
			t.Fatal(err)
		}
	}

	s := &server{log: &logbuf.Buffer{}}
	s.cmd = exec.Command(bin, "serve", "-config", config)
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: ourUID, Gid: 0, Groups: []uint32{0}}}
	s.cmd.Stdout, s.cmd.Stderr = s.log, s.log
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- s.cmd.Wait() }()
	t.Cleanup(func() {
		s.cmd.Process.Kill()
		<-exited
		if t.Failed() {
			t.Logf("server log:\n%s", s.log.String())
		}
	})
	s.base = "http://" + addr + "/push_appserver/v1/"
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		select {
		case err := <-exited:
			exited <- err
			t.Fatalf("the server as user %d exited (%v) on a registry its group may write:\n%s", ourUID, err, s.log.String())
		default:
		}
		if resp, err := http.Get(s.base + "health"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK && !strings.Contains(s.log.String(), "opening the registry") {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("the server as user %d did not answer:\n%s", ourUID, s.log.String())
		}
	}
	if got := s.post(t, "push", url.Values{"node": {"restored"}, "secret": {secret}}); got != "OK\nrestored" {
		t.Fatalf("push to the registration made before: %q", got)
	}
}
