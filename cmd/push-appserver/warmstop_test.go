package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/push-appserver/push-appserver/internal/testutil/apnsmock"
	"github.com/push-appserver/push-appserver/internal/testutil/netfreeze"
)

// TestStopDuringWarmUpLogsNoOutage: a stop while an app's first check of
// its push service is under way (here the service accepts the connection
// and never answers) ends that check, and says nothing of the push
// service: "not reachable" or "could not check our credentials" at every
// stop that comes soon after a start or a reload would send the operator
// after an outage there is none of.
func TestStopDuringWarmUpLogsNoOutage(t *testing.T) {
	port, accepted := netfreeze.SilentAccepting(t)
	dir, addr, config := minimalConfig(t)
	p8, _, err := apnsmock.TokenKey()
	if err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(dir, "key.p8")
	if err := os.WriteFile(keyFile, p8, 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(config, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(f, "[apps.ios]\nkind = \"apns\"\ntopic = \"im.example.app\"\ntoken_key_file = %q\nkey_id = \"K1\"\nteam_id = \"T1\"\nendpoint = \"https://127.0.0.1:%d\"\n", keyFile, port)
	f.Close()

	s := startServer(t, buildBinary(t), config)
	s.waitHealthy(t, addr)
	select {
	case <-accepted:
	case <-time.After(15 * time.Second):
		t.Fatal("the app did not connect to its push service")
	}
	s.stop(t)
	for _, line := range strings.Split(s.log.String(), "\n") {
		if strings.Contains(line, "not reachable") || strings.Contains(line, "could not check our credentials") {
			t.Errorf("logged at a stop during the warm-up: %s", line)
		}
	}
}
