package main

import (
	"encoding/base64"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/push-appserver/push-appserver/internal/testutil/fcmmock"
	"github.com/push-appserver/push-appserver/internal/testutil/webpushmock"
)

// TestNoTokensOrSecretsInLogsDuringOutages runs sustained failures through
// the real binary logging at info: an APNS key revoked while pushes go
// on, FCM access tokens revoked, WebPush services answering errors or
// unreachable, and a stranger sending wrong secrets, devices' tokens as
// nodes, and malformed registrations carrying secrets. No device token,
// WebPush endpoint or browser key, registration secret, or provider or
// access token may appear in the log.
func TestNoTokensOrSecretsInLogsDuringOutages(t *testing.T) {
	bin := buildBinary(t)
	dir := t.TempDir()
	am, fm, keyFile, sa := startMocks(t, dir)
	wm, vapidKey, vapidPub := webpushmock.Start(t)
	ports := freePorts(t, 2)
	addr := ports[0]
	_, closedPort, _ := strings.Cut(ports[1], ":")
	config := filepath.Join(dir, "push-appserver.toml")
	os.WriteFile(config, fmt.Appendf(nil, `data_dir = %q
rate_limit = 0
log_level = "info"
[http]
listen = %q
%spush_deadline = "1s"
[apps.android]
kind = "fcm"
service_account_file = %q
endpoint = %q
ca_path = %q
push_deadline = "1s"
[apps.web]
kind = "webpush"
vapid_key_file = %q
vapid_subject = "mailto:ops@example.org"
ca_path = %q
push_deadline = "1s"
allow_private_endpoints = true
endpoint_ports = [%d, %s]
`, filepath.Join(dir, "data"), addr, am.AppConfig("ios", keyFile), sa, fm.URL, fm.CADir, vapidKey, wm.CADir, wm.Port, closedPort), 0o600)

	secrets := map[string]string{}
	type device struct{ typ, node, token, secret string }
	var devices []*device
	add := func(typ, token string) *device {
		d := &device{typ: typ, node: "node-" + randomHex(t, 8), token: token}
		devices = append(devices, d)
		secrets["token of "+d.node] = token
		return d
	}
	for range 5 {
		add("ios", randomHex(t, 32))
		add("android", "fcm-"+randomHex(t, 24))
	}
	var subs []webpushmock.Subscription
	for i := range 6 {
		sub, err := wm.Subscribe(vapidPub)
		if err != nil {
			t.Fatal(err)
		}
		if i == 5 { // its push service is not there
			sub.Endpoint = strings.Replace(sub.Endpoint, fmt.Sprint(":", wm.Port), ":"+closedPort, 1)
			sub.JSON = strings.Replace(sub.JSON, fmt.Sprint(":", wm.Port), ":"+closedPort, 1)
		}
		subs = append(subs, sub)
		add("web", sub.JSON)
		secrets["endpoint of "+sub.ID] = sub.Endpoint
		secrets["subscription ID "+sub.ID] = sub.ID
		secrets["auth of "+sub.ID] = base64.RawURLEncoding.EncodeToString(sub.Auth)
		secrets["p256dh of "+sub.ID] = base64.RawURLEncoding.EncodeToString(sub.Key.PublicKey().Bytes())
	}

	s := startServer(t, bin, config)
	s.waitHealthy(t, addr)
	for _, d := range devices {
		lines := strings.Split(s.post(t, "register", url.Values{"type": {d.typ}, "node": {d.node}, "token": {d.token}}), "\n")
		if len(lines) != 3 || lines[0] != "OK" {
			t.Fatalf("register %s: %q", d.typ, lines)
		}
		d.secret = lines[2]
		secrets["secret of "+d.node] = d.secret
	}

	// The outages: every push of every app fails, for a while.
	am.Revoke(true)
	fm.RevokeTokens()
	for _, d := range devices {
		if d.typ == "android" {
			fm.FailToken(d.token, fcmmock.Fault{Status: 503, Code: "UNAVAILABLE"}, fcmmock.Fault{Status: 503, Code: "UNAVAILABLE"}, fcmmock.Fault{Status: 500, Code: "INTERNAL"})
		}
	}
	statuses := []int{503, 500, 429, 404, 410}
	for i, sub := range subs[:5] {
		for range 3 {
			wm.Fail(sub.ID, webpushmock.Fault{Status: statuses[i], RetryAfter: "1"})
		}
	}
	var wg sync.WaitGroup
	for round := range 3 {
		for _, d := range devices {
			// A stranger: wrong secrets, the device's token as node
			// (a tokenless push), its secret as the node.
			wrong := randomHex(t, 32)
			secrets[fmt.Sprint("wrong secret ", d.node, round)] = wrong
			wg.Go(func() {
				s.post(t, "push", url.Values{"node": {d.node}, "secret": {d.secret}})
				s.post(t, "push", url.Values{"node": {d.node}, "secret": {wrong}})
				s.post(t, "push", url.Values{"node": {d.token}, "secret": {wrong}})
				s.post(t, "push", url.Values{"node": {d.secret}, "secret": {d.secret}})
				s.post(t, "unregister", url.Values{"type": {d.typ}, "node": {d.secret}})
			})
		}
		wg.Wait()
	}
	malformed := "not-hex-" + randomHex(t, 16)
	secrets["malformed token"] = malformed
	s.post(t, "register", url.Values{"type": {"ios"}, "node": {"node-bad"}, "token": {malformed}})
	s.post(t, "register", url.Values{"type": {"web"}, "node": {"node-bad2"}, "token": {`{"endpoint":"https://127.0.0.1:1/push/` + malformed + `"}`}})
	am.Revoke(false)
	s.stop(t)

	addBearers(secrets, am, fm)
	log := s.log.String()
	for _, want := range []string{"app=ios", "app=android", "app=web", `msg="push rejected"`} {
		if !strings.Contains(log, want) {
			t.Fatalf("the log has no line with %s: the outages did not run\n%s", want, log)
		}
	}
	for what, v := range secrets {
		if strings.Contains(log, v) {
			t.Errorf("%s appears in the info-level log", what)
		}
	}
}
