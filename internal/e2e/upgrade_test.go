package e2e_test

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/push-appserver/push-appserver/internal/testutil/daemon"
	"github.com/push-appserver/push-appserver/internal/testutil/netfreeze"
	"github.com/push-appserver/push-appserver/internal/testutil/sdnotify"
)

// One real instance on the default SQLite registry behind a real XMPP
// server, pushing to the APNS mock while bob writes to alice (offline,
// push enabled) every 20 ms, is upgraded in place twice with SIGUSR2, as
// an operator does after installing a new binary: the new process
// inherits the HTTP listener, connects its component beside the old one's
// (ejabberd) or stands by for it (Prosody), 3 s late, tells systemd
// it is the main process now, and only then does the old one shut down. No push session
// is disabled, every message gives a push but for the XMPP server's own
// handover window, and the HTTP API never refuses a connection.
//
// A restart instead (stop, then start) leaves a gap in which ejabberd
// answers publishes itself, with auth/forbidden, and deletes the push
// session of everyone messaged in it.
func TestUpgradeInPlace(t *testing.T) {
	t.Run("ejabberd", func(t *testing.T) { upgradeInPlace(t, startEjabberd(t), false) })
	t.Run("Prosody", func(t *testing.T) { upgradeInPlace(t, startProsody(t), true) })
}

func upgradeInPlace(t *testing.T, x *xmppServer, standby bool) {
	dir := t.TempDir()
	mock, keyFile := slowAPNS(t, dir)

	// The component connects through a forwarder that makes the new
	// process's connection 3 s late at each upgrade, later than the old
	// one takes to close its stream.
	proxy := netfreeze.Start(t, x.ComponentAddr)
	addr := daemon.FreeAddr(t)
	config := filepath.Join(dir, "push-appserver.toml")
	os.WriteFile(config, fmt.Appendf(nil, `data_dir = %q
rate_limit = 0
[http]
listen = %q
[[component]]
jid = %q
address = %q
secret = %q
%s`, filepath.Join(dir, "data"), addr, x.ComponentJID, proxy.Addr(), x.ComponentSecret, mock.AppConfig("apns", keyFile)), 0o600)

	sock := sdnotify.Listen(t)
	cmd := exec.Command(buildServer(t), "serve", "-config", config)
	cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+sock.Path)
	server := daemon.StartUpgradable(t, cmd, 30*time.Second)
	if f := sdnotify.Fields(sock.Next(t, 20*time.Second)); f["READY"] != "1" {
		t.Fatalf("first message: %v", f)
	}
	up := func() bool { return componentUp(addr) }
	waitFor(t, up)

	tr := startTraffic(t, x, addr, mock)
	// The HTTP API is asked every 5 ms throughout.
	stop := make(chan struct{})
	var refused atomic.Int32
	var firstRefusal atomic.Value
	var wg sync.WaitGroup
	wg.Go(func() {
		client := &http.Client{Timeout: 5 * time.Second}
		for {
			select {
			case <-stop:
				return
			case <-time.After(5 * time.Millisecond):
			}
			resp, err := client.Get("http://" + addr + "/push_appserver/v1/health")
			if err != nil {
				if refused.Add(1) == 1 {
					firstRefusal.Store(err.Error())
				}
				continue
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	})
	halt := sync.OnceFunc(func() { close(stop); wg.Wait() })
	t.Cleanup(halt)

	var afterClose []time.Duration
	for round := range 2 {
		old := server.PID
		// The old process must not close its stream before the new one
		// has its own (ejabberd) or stands by (Prosody), or ejabberd
		// answers the publishes in between with auth/forbidden. Only
		// the new process's first connection is late: a standby's
		// retries are not held up by a test slow to end a delay, which
		// would keep it in a 3 s handshake when the old one released.
		proxy.DelayNext(3 * time.Second)
		// The new process stood by, and connects when the old one
		// released the component. From the old stream's end (the only
		// connection carried now) until then, Prosody has no component;
		// watched from the start, as the new process answers the HTTP
		// API from then on.
		type handover struct{ closed, up time.Time }
		handed := make(chan handover, 1)
		if standby {
			ended := proxy.Ended()
			go func() {
				var h handover
				select {
				case h.closed = <-ended:
				case <-time.After(60 * time.Second):
					handed <- h
					return
				}
				for !up() && time.Since(h.closed) < 10*time.Second {
					time.Sleep(5 * time.Millisecond)
				}
				h.up = time.Now()
				handed <- h
			}()
		}
		signalled := time.Now()
		syscall.Kill(old, syscall.SIGUSR2)
		f := sdnotify.Fields(sock.Next(t, 60*time.Second))
		took := time.Since(signalled)
		next, _ := strconv.Atoi(f["MAINPID"])
		if next == 0 || next == old || f["READY"] != "1" {
			t.Fatalf("upgrade %d: the new process said %v, want MAINPID (not %d) and READY=1", round+1, f, old)
		}
		// Ready once its component is connected, or stands by: 3 s and
		// the start, not the 20 s a new process waits at most.
		if took > 10*time.Second {
			t.Fatalf("upgrade %d: the new process took over after %v", round+1, took)
		}
		t.Logf("upgrade %d: the new process took over after %v", round+1, took.Round(time.Millisecond))
		server.PID = next
		// The old process goes once it has finished what it had under
		// way, and says nothing more to systemd: a STOPPING=1 now would
		// be taken for the service's.
		if round == 0 {
			select {
			case err := <-server.Exited:
				if err != nil {
					t.Fatalf("the old process exited with %v", err)
				}
			case <-time.After(30 * time.Second):
				t.Fatal("the old process did not exit after the upgrade")
			}
		} else {
			if !daemon.WaitExited(old, 30*time.Second) {
				t.Fatalf("upgrade %d: the old process did not exit", round+1)
			}
		}
		// The new process reads the configuration again once the old
		// one has gone and says READY=1 after it, which ends a reload
		// the old one may have announced at the hand-over; then
		// nothing more.
		if f := sdnotify.Fields(sock.Next(t, 20*time.Second)); f["READY"] != "1" {
			t.Fatalf("upgrade %d: after the old process went, the new one said %v, want READY=1", round+1, f)
		}
		sock.Quiet(t, 200*time.Millisecond)
		if standby {
			h := <-handed
			if h.closed.IsZero() {
				t.Fatalf("upgrade %d: the old process's component stream did not end", round+1)
			}
			if !up() {
				t.Fatalf("upgrade %d: the new process did not connect once the old one released the component", round+1)
			}
			// Told through the pipe, the new process connects at once;
			// left to its retries, 0.4 to 1.8 s apart by then, it would
			// connect up to that much later, and the messages of that
			// window would find no component. This bounds the window
			// by the old stream's end, not by how many messages fell
			// into it, which depends on the machine's speed.
			d := h.up.Sub(h.closed)
			afterClose = append(afterClose, d)
			if d > 500*time.Millisecond {
				t.Fatalf("upgrade %d: the new process connected %v after the old one's stream ended, want at once (not at its next retry)", round+1, d.Round(time.Millisecond))
			}
		}
		tr.waitPushes(t, 5)
	}
	halt()
	// A message may find the XMPP server between two connections (see
	// TestRollingRestart): ejabberd between reading the old stream's close
	// and dropping its route, once an upgrade at most; Prosody between the
	// old close and the new handshake, a window bounded above, which it
	// answers itself, with wait, and logs. Neither disables the session
	// for it. Behind Prosody every message lost must be one it answered:
	// how many fall into that window depends on the machine's speed, a
	// message lost anywhere else does not.
	allowed := 2
	if standby {
		allowed = tr.bounced()
	}
	sent, delivered := tr.check(t, allowed)
	t.Logf("two upgrades behind %s: %d messages, %d pushes at the APNS mock, %d of them answered by %s for want of a component, %d HTTP requests refused; the new process connected %v after the old stream ended",
		x.Name, sent, delivered, tr.bounced(), x.Name, refused.Load(), afterClose)
	if n := refused.Load(); n != 0 {
		t.Fatalf("%d HTTP requests failed during the upgrades, the first: %v", n, firstRefusal.Load())
	}
}
