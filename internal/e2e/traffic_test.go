package e2e_test

import (
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/push-appserver/push-appserver/internal/testutil/apnsmock"
)

// traffic is bob writing to alice every 20 ms, alice offline with push
// enabled at the app server, while a test changes the app server under
// them (restarts, upgrades).
type traffic struct {
	x    *xmppServer
	mock *apnsmock.Server
	bob  *client
	stop chan struct{}
	wg   sync.WaitGroup
	once sync.Once
	sent int // messages written; read after halt
}

// startTraffic registers alice's phone over the HTTP API at addr, has
// alice enable push with it and go offline, and has bob write to her
// until halt (at the latest when the test ends, before his connection is
// closed). It returns once the mock took 5 pushes.
func startTraffic(t *testing.T, x *xmppServer, addr string, mock *apnsmock.Server) *traffic {
	t.Helper()
	token := strings.Repeat("ab", 32)
	resp, err := http.PostForm("http://"+addr+"/push_appserver/v1/register", url.Values{"type": {"apns"}, "node": {"alice-phone"}, "token": {token}})
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	lines := strings.Split(string(body), "\n")
	if len(lines) != 3 || lines[0] != "OK" {
		t.Fatalf("register: %q", body)
	}
	alice := login(t, x.C2SAddr, "alice", x.Domain, "alice-pw")
	alice.enablePush(x.ComponentJID, lines[1], lines[2])
	alice.close()
	tr := &traffic{x: x, mock: mock, bob: login(t, x.C2SAddr, "bob", x.Domain, "bob-pw"), stop: make(chan struct{})}
	tr.wg.Go(func() {
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-tr.stop:
				return
			case <-tick.C:
			}
			tr.bob.sendChat("alice@"+x.Domain, fmt.Sprintf("message %d", tr.sent))
			tr.sent++
		}
	})
	t.Cleanup(tr.halt)
	waitFor(t, func() bool { return mock.Accepted() >= 5 })
	return tr
}

// halt stops bob's writing.
func (tr *traffic) halt() {
	tr.once.Do(func() { close(tr.stop); tr.wg.Wait() })
}

// waitPushes waits until the mock took n more pushes than now.
func (tr *traffic) waitPushes(t *testing.T, n int) {
	t.Helper()
	at := tr.mock.Accepted()
	waitFor(t, func() bool { return tr.mock.Accepted() >= at+n })
}

// check halts the writing and waits for the pushes of every message. It
// fails the test when the XMPP server disabled a push session, when there
// were more pushes than messages, or when more than allowed messages gave
// none; then one more message must push, as the session is still there.
// It returns the messages and their pushes.
func (tr *traffic) check(t *testing.T, allowed int) (sent, delivered int) {
	t.Helper()
	tr.halt()
	deadline := time.Now().Add(10 * time.Second)
	for tr.mock.Accepted() < tr.sent && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	sent, delivered = tr.sent, tr.mock.Accepted()
	if disabled := strings.Count(tr.x.Log(), "disabling push"); disabled != 0 {
		t.Fatalf("%s disabled %d push sessions:\n%s", tr.x.Name, disabled, tr.x.Log())
	}
	if delivered > sent {
		t.Fatalf("%d pushes for %d messages", delivered, sent)
	}
	if lost := sent - delivered; lost > allowed {
		t.Fatalf("%d of %d messages gave no push, want at most %d", lost, sent, allowed)
	}
	tr.bob.sendChat("alice@"+tr.x.Domain, "one more")
	waitFor(t, func() bool { return tr.mock.Accepted() == delivered+1 })
	return sent, delivered
}

// bounced counts the publishes Prosody answered itself, with wait, as
// no connection had the component: their messages give no push. It logs
// each; ejabberd has no such window, and logs none.
func (tr *traffic) bounced() int {
	n := 0
	for _, l := range strings.Split(tr.x.Log(), "\n") {
		if strings.Contains(l, "Component not connected, bouncing error for: <iq") && strings.Contains(l, "type='set'") {
			n++
		}
	}
	return n
}

// slowAPNS is an APNS mock answering in 200 ms, which keeps pushes under
// way whenever the app server changes, and the p8 key file for it in dir.
func slowAPNS(t *testing.T, dir string) (*apnsmock.Server, string) {
	t.Helper()
	p8, pub, err := apnsmock.TokenKey()
	if err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(dir, "key.p8")
	if err := os.WriteFile(keyFile, p8, 0o600); err != nil {
		t.Fatal(err)
	}
	mock, err := apnsmock.New(apnsmock.Config{TokenKey: pub, KeyID: "K1", TeamID: "T1", Topic: "im.example.app", Latency: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(mock.Close)
	return mock, keyFile
}

// componentUp reports whether the server at addr says its component is
// connected.
func componentUp(addr string) bool {
	resp, err := http.Get("http://" + addr + "/push_appserver/v1/health")
	if err != nil {
		return false
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return strings.Contains(string(body), "component push.localhost: up")
}
