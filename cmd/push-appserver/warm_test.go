package main

import (
	"fmt"
	"net/url"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"
)

// After a start, and after a reload, each app connects to its push
// service before its first push (FCM fetches its access token too), and
// the log says whether it could: the first push finds its connection
// up, and a service the server cannot reach shows at once.
func TestPushServicesWarmedAtStart(t *testing.T) {
	am, fm, keyFile, account := startMocks(t, t.TempDir())
	s := startWithApps(t, am.AppConfig("ios", keyFile)+fmt.Sprintf("[apps.android]\nkind = \"fcm\"\nservice_account_file = %q\nendpoint = %q\nca_path = %q\n"+
		"[apps.gone]\nkind = \"apns\"\ntopic = \"im.example.app\"\ntoken_key_file = %q\nkey_id = \"K1\"\nteam_id = \"T1\"\nendpoint = \"https://%s\"\nca_path = %q\n",
		account, fm.URL, fm.CADir, keyFile, freePort(t), am.CADir))
	waitFor := func(what string, ok func() bool) {
		t.Helper()
		for deadline := time.Now().Add(15 * time.Second); !ok(); time.Sleep(10 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("%s\n%s", what, s.log)
			}
		}
	}
	logged := func(app, msg string) func() bool {
		return func() bool {
			for _, l := range strings.Split(s.log.String(), "\n") {
				if strings.Contains(l, "app="+app) && strings.Contains(l, msg) {
					return true
				}
			}
			return false
		}
	}
	waitFor("no connection to APNS before the first push", func() bool { return am.OpenConnections() == 1 })
	waitFor("no FCM access token and connection before the first push", func() bool { return fm.TokenRequests() == 1 && fm.OpenConnections() == 1 })
	waitFor("the reachable apps not logged", func() bool {
		return logged("ios", "push service reachable")() && logged("android", "push service reachable")()
	})
	waitFor("the unreachable app not logged", logged("gone", "push service not reachable yet"))

	secret := s.registerTo(t, "ios", "n1", strings.Repeat("0a", 32))
	if got := s.post(t, "push", url.Values{"node": {"n1"}, "secret": {secret}}); got != "OK\nn1" {
		t.Fatalf("push: %q", got)
	}
	if n := am.Connections(); n != 1 {
		t.Fatalf("%d connections to APNS: the push did not take the one opened at start", n)
	}

	// A reload that changes nothing keeps each app's backend and its
	// connection: a new one for each app at once, on a server of many
	// apps, meets services and proxies that bound new connections.
	s.cmd.Process.Signal(syscall.SIGHUP)
	waitFor("the unchanged reload not logged", func() bool { return strings.Contains(s.log.String(), "reload: nothing changed") })
	if n, tokens := am.Connections(), fm.TokenRequests(); n != 1 || tokens != 1 {
		t.Fatalf("a reload that changed nothing: %d connections to APNS, %d FCM token requests; want 1 and 1", n, tokens)
	}

	// The key renewed in place: the app's backend is rebuilt.
	key, _ := os.ReadFile(keyFile)
	os.WriteFile(keyFile, append(key, '\n'), 0o600)
	s.cmd.Process.Signal(syscall.SIGHUP)
	waitFor("no connection from the reloaded backend before its first push", func() bool { return am.Connections() == 2 })
}
