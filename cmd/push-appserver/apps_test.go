package main

import (
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/push-appserver/push-appserver/internal/testutil/apnsmock"
	"github.com/push-appserver/push-appserver/internal/testutil/fcmmock"
)

// TestSeveralApps runs the binary with two FCM projects and two APNS apps
// (normal and VoIP topic) against the mocks: each registration's type picks
// its app, and each push reaches its own service.
func TestSeveralApps(t *testing.T) {
	bin := buildBinary(t)
	dir := t.TempDir()

	var fcms [2]*fcmmock.Server
	var accounts [2]string
	for i := range fcms {
		m, err := fcmmock.New(fmt.Sprintf("project-%d", i))
		if err != nil {
			t.Fatal(err)
		}
		defer m.Close()
		d := filepath.Join(dir, fmt.Sprint("sa", i))
		os.Mkdir(d, 0o700)
		if accounts[i], err = m.WriteServiceAccount(d); err != nil {
			t.Fatal(err)
		}
		fcms[i] = m
	}
	p8, pub, _ := apnsmock.TokenKey()
	keyFile := filepath.Join(dir, "key.p8")
	os.WriteFile(keyFile, p8, 0o600)
	apnsMock, err := apnsmock.New(apnsmock.Config{TokenKey: pub, KeyID: "K1", TeamID: "T1", Topic: "im.example.app"})
	if err != nil {
		t.Fatal(err)
	}
	defer apnsMock.Close()

	addr := freePort(t)
	config := filepath.Join(dir, "push-appserver.toml")
	cfg := fmt.Sprintf(`data_dir = %q
rate_limit = 0
[http]
listen = %q
`, filepath.Join(dir, "data"), addr)
	for i, m := range fcms {
		cfg += fmt.Sprintf("[apps.android%d]\nkind = \"fcm\"\nservice_account_file = %q\nendpoint = %q\nca_path = %q\n", i, accounts[i], m.URL, m.CADir)
	}
	for _, name := range []string{"ios", "ios-voip"} {
		prio := "auto"
		if name == "ios-voip" {
			prio = "voip"
		}
		cfg += fmt.Sprintf("[apps.%s]\nkind = \"apns\"\ntopic = \"im.example.app\"\npriority = %q\ntoken_key_file = %q\nkey_id = \"K1\"\nteam_id = \"T1\"\nendpoint = %q\nca_path = %q\n",
			name, prio, keyFile, apnsMock.URL, apnsMock.CADir)
	}
	os.WriteFile(config, []byte(cfg), 0o600)

	s := startServer(t, bin, config)
	s.waitHealthy(t, addr)
	apnsToken := strings.Repeat("0a", 32)
	for _, r := range []struct{ typ, node, token string }{
		{"android0", "a0", "fcm-token-0"},
		{"android1", "a1", "fcm-token-1"},
		{"ios", "i0", apnsToken},
		{"ios-voip", "v0", apnsToken},
	} {
		body := s.post(t, "register", url.Values{"type": {r.typ}, "node": {r.node}, "token": {r.token}})
		lines := strings.Split(body, "\n")
		if len(lines) != 3 || lines[0] != "OK" {
			t.Fatalf("register %s: %q", r.typ, body)
		}
		if body := s.post(t, "push", url.Values{"node": {r.node}, "secret": {lines[2]}}); body != "OK\n"+r.node {
			t.Fatalf("push %s: %q", r.typ, body)
		}
	}
	if body := s.post(t, "register", url.Values{"type": {"ios"}, "node": {"bad"}, "token": {"not-hex"}}); !strings.HasPrefix(body, "ERROR\n") {
		t.Fatalf("invalid APNS token accepted: %q", body)
	}
	for i, m := range fcms {
		reqs := m.Requests()
		if len(reqs) != 1 || reqs[0].Message["token"] != fmt.Sprint("fcm-token-", i) {
			t.Fatalf("FCM project %d got %+v", i, reqs)
		}
	}
	reqs := apnsMock.Requests()
	// An HTTP push carries no summary: priority auto sends it silent.
	if len(reqs) != 2 || reqs[0].PushType != "background" || reqs[1].PushType != "voip" || reqs[1].Topic != "im.example.app.voip" {
		t.Fatalf("APNS got %+v", reqs)
	}
	s.stop(t)
}
