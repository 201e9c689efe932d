// Package daemon holds what the launchers of real servers in tests (Prosody,
// ejabberd) share: free loopback ports, a self-signed certificate, running
// the server as its Debian service user when the tests run as root, waiting
// for its ports, reading its log, and telling when a process is gone.
package daemon

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// FreeAddr returns a loopback address with a port nobody listens on now.
func FreeAddr(t testing.TB) string {
	t.Helper()
	return FreeAddrs(t, 1)[0]
}

// FreeAddrs returns n distinct loopback addresses nobody listens on now,
// all held open together so none is handed out twice. The ports are picked
// below the kernel's ephemeral range: a port from there, released again
// while the server starts, is soon taken by some outgoing connection on a
// busy machine.
func FreeAddrs(t testing.TB, n int) []string {
	t.Helper()
	addrs := make([]string, n)
	for i := range addrs {
		ln, err := listenLow()
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		addrs[i] = ln.Addr().String()
	}
	return addrs
}

// FreePort is FreeAddr's port, for callers without a testing.TB.
func FreePort() (int, error) {
	ln, err := listenLow()
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// listenLow listens on a random loopback port below the ephemeral range.
func listenLow() (net.Listener, error) {
	for range 1000 {
		port, err := rand.Int(rand.Reader, big.NewInt(32768-10000))
		if err != nil {
			return nil, err
		}
		if ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", 10000+port.Int64())); err == nil {
			return ln, nil
		}
	}
	return nil, errors.New("no free port found below 32768")
}

// Port returns the port of a host:port address.
func Port(addr string) string {
	_, p, _ := net.SplitHostPort(addr)
	return p
}

// WriteCert writes a self-signed certificate for host as dir/host.crt and
// its key as dir/host.key, and returns both paths.
func WriteCert(t testing.TB, dir, host string) (certPath, keyPath string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: host},
		DNSNames:     []string{host},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalECPrivateKey(key)
	certPath, keyPath = filepath.Join(dir, host+".crt"), filepath.Join(dir, host+".key")
	if err := os.WriteFile(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o640); err != nil {
		t.Fatal(err)
	}
	return certPath, keyPath
}

// ServiceUser returns the ids of the named system user when we run as
// root: the servers are then run as their own user, as their packages do,
// so every file they write belongs to one user.
func ServiceUser(name string) (uid, gid int, ok bool) {
	if os.Geteuid() != 0 {
		return 0, 0, false
	}
	u, err := user.Lookup(name)
	if err != nil {
		return 0, 0, false
	}
	uid, _ = strconv.Atoi(u.Uid)
	gid, _ = strconv.Atoi(u.Gid)
	return uid, gid, true
}

// SysProcAttr runs a process in its own process group (so Kill reaches its
// children), as the named user when we are root.
func SysProcAttr(userName string) *syscall.SysProcAttr {
	a := &syscall.SysProcAttr{Setpgid: true}
	if uid, gid, ok := ServiceUser(userName); ok {
		a.Credential = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
	}
	return a
}

// Chown hands dir and everything in it to the named user when we are root,
// and makes the temporary directory's parents traversable.
func Chown(dir, userName string) {
	uid, gid, ok := ServiceUser(userName)
	if !ok {
		return
	}
	for d := dir; d != "/" && d != "."; d = filepath.Dir(d) {
		if st, err := os.Stat(d); err == nil && st.Mode().Perm()&0o001 == 0 {
			os.Chmod(d, st.Mode().Perm()|0o011)
		}
		if d == os.TempDir() {
			break
		}
	}
	filepath.Walk(dir, func(p string, _ os.FileInfo, _ error) error {
		os.Lchown(p, uid, gid)
		return nil
	})
}

// WaitListening returns once every address accepts connections, or an
// error when exited is closed first or timeout passes.
func WaitListening(addrs []string, exited <-chan struct{}, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for _, addr := range addrs {
		for {
			c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
			if err == nil {
				c.Close()
				break
			}
			select {
			case <-exited:
				return fmt.Errorf("exited before listening on %s", addr)
			case <-time.After(50 * time.Millisecond):
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("not listening on %s after %s", addr, timeout)
			}
		}
	}
	return nil
}

// WaitReady returns once ready succeeds (each try bounded to 5 s), or an
// error naming what, with the tail of its log, when exited is closed first
// or timeout passes.
func WaitReady(what string, ready func(context.Context) error, exited <-chan struct{}, log string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err := ready(ctx)
		cancel()
		if err == nil {
			return nil
		}
		select {
		case <-exited:
			return fmt.Errorf("%s exited at start:\n%s", what, Tail(log, 20))
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s did not accept connections in %s: %v\n%s", what, timeout, err, Tail(log, 20))
		}
	}
}

// Kill kills the process group of pid (SIGKILL, as a crash would).
func Kill(pid int) {
	syscall.Kill(-pid, syscall.SIGKILL)
}

// Exited reports whether process pid has exited. A process the test did
// not start is reaped by whoever adopted it, perhaps never: a zombie has
// exited.
func Exited(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	// The state follows the command name, which is in parentheses.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] == 'Z'
}

// WaitExited waits up to timeout for process pid to exit, and reports
// whether it did.
func WaitExited(pid int, timeout time.Duration) bool {
	for deadline := time.Now().Add(timeout); !Exited(pid); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			return false
		}
	}
	return true
}

// Stop ends process pid, which need not be the test's child (the new
// process of a server's upgrade is its parent's): SIGTERM, and SIGKILL
// if it has not exited within timeout.
func Stop(pid int, timeout time.Duration) {
	syscall.Kill(pid, syscall.SIGTERM)
	if !WaitExited(pid, timeout) {
		syscall.Kill(pid, syscall.SIGKILL)
	}
}

// Upgradable is a server whose process upgrades in place replace. Its log
// goes to a file, which the new processes write to after the first has
// gone; the test sets PID to the process that serves, which is stopped
// when the test ends.
type Upgradable struct {
	PID int
	// Exited receives the first process's exit, which the test started.
	Exited  <-chan error
	logFile string
}

// Log returns what the server's processes have logged so far.
func (u *Upgradable) Log() string {
	b, _ := os.ReadFile(u.logFile)
	return string(b)
}

// StartUpgradable starts cmd, a server, with its output going to a file.
// When the test ends it stops the process u.PID names then, waiting up
// to stopWait for it, and shows the log if the test failed.
func StartUpgradable(t testing.TB, cmd *exec.Cmd, stopWait time.Duration) *Upgradable {
	t.Helper()
	u := &Upgradable{logFile: filepath.Join(t.TempDir(), "server.log")}
	logw, err := os.Create(u.logFile)
	if err != nil {
		t.Fatal(err)
	}
	defer logw.Close()
	cmd.Stdout, cmd.Stderr = logw, logw
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	u.PID, u.Exited = cmd.Process.Pid, exited
	t.Cleanup(func() {
		// After an upgrade the process that serves is no child of ours.
		Stop(u.PID, stopWait)
		if t.Failed() {
			t.Logf("server log:\n%s", u.Log())
		}
	})
	return u
}

// Tail returns the last n lines of the file at path.
func Tail(path string, n int) string {
	b, _ := os.ReadFile(path)
	lines := strings.Split(string(b), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
