package e2e_test

import (
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/push-appserver/push-appserver/internal/testutil/daemon"
)

// TestAppAddedOnOneInstanceFirst guards a rolling change that adds an
// app, with real processes on one PostgreSQL: the app is configured on
// instance A and not yet on B. A push of the app that reaches B (a load
// balancer, or ejabberd's, spreads pushes over both) is answered ERROR by
// B, which cannot send it, and is sent by A within the redelivery
// hand-over (B's first retry, a write, A's next look for held pushes),
// not kept by B until its time runs out.
func TestAppAddedOnOneInstanceFirst(t *testing.T) {
	dsn := pg.DB(t)
	dir := t.TempDir()
	bin := buildServer(t)
	start := func(name, apps string) *binary {
		addr := daemon.FreeAddr(t)
		config := filepath.Join(dir, name+".toml")
		cfg := fmt.Sprintf(`data_dir = %q
rate_limit = 0
[http]
listen = %q
[database]
driver = "postgres"
dsn = %q
%s`, filepath.Join(dir, name), addr, dsn, apps)
		if err := os.WriteFile(config, []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
		b := &binary{t: t, bin: bin, config: config, addr: addr}
		b.startServing(false)
		t.Cleanup(func() {
			if b.cmd.ProcessState == nil {
				b.stop()
			}
			if t.Failed() {
				t.Logf("instance %s log:\n%s", name, b.String())
			}
		})
		return b
	}
	a := start("a", "[apps.fcm]\nkind = \"log\"\n[apps.voip]\nkind = \"log\"\n")
	b := start("b", "[apps.fcm]\nkind = \"log\"\n")

	post := func(in *binary, path string, form url.Values) string {
		t.Helper()
		resp, err := http.PostForm("http://"+in.addr+"/push_appserver/v1/"+path, form)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return string(body)
	}
	reg := post(a, "register", url.Values{"type": {"voip"}, "node": {"n1"}, "token": {"t1"}})
	lines := strings.Split(reg, "\n")
	if len(lines) < 3 || lines[0] != "OK" {
		t.Fatalf("register on A: %q", reg)
	}
	if got := post(b, "push", url.Values{"node": {"n1"}, "secret": {lines[2]}}); !strings.HasPrefix(got, "ERROR") {
		t.Fatalf("push on B, which lacks the app: %q", got)
	}
	sent := func() bool { return strings.Contains(a.String(), `msg="push (log backend, not delivered)" app=voip`) }
	for deadline := time.Now().Add(40 * time.Second); !sent(); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the push B answered was never sent by A, which has the app")
		}
	}
}
