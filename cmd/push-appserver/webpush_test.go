package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/push-appserver/push-appserver/internal/push/webpush"
	"github.com/push-appserver/push-appserver/internal/testutil/webpushmock"
)

// TestWebPushApp: vapid-keygen writes a key and prints its public half; a
// webpush app on that key takes a browser subscription in the HTTP API's
// token field, refuses a bad one, delivers a push the mock decrypts, and
// drops the registration when the push service says the subscription is
// gone.
func TestWebPushApp(t *testing.T) {
	bin := buildBinary(t)
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "vapid.pem")
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(bin, "vapid-keygen", "-out", keyFile)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("vapid-keygen: %v\n%s", err, stderr.String())
	}
	pub := strings.TrimSpace(stdout.String())
	key, err := webpush.LoadVAPIDKey(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	if want, _ := webpush.PublicKeyString(key); pub != want {
		t.Fatalf("printed %q, the file's public key is %q", pub, want)
	}
	if st, _ := os.Stat(keyFile); st.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode %v", st.Mode())
	}
	if err := exec.Command(bin, "vapid-keygen", "-out", keyFile).Run(); err == nil {
		t.Fatal("vapid-keygen overwrote an existing key")
	}

	mock, err := webpushmock.New()
	if err != nil {
		t.Fatal(err)
	}
	defer mock.Close()
	addr := freePort(t)
	config := filepath.Join(dir, "push-appserver.toml")
	os.WriteFile(config, []byte(fmt.Sprintf(`data_dir = %q
rate_limit = 0
[http]
listen = %q
[apps.web]
kind = "webpush"
vapid_key_file = %q
vapid_subject = "mailto:ops@example.org"
ca_path = %q
# The mock listens on loopback on a random port.
allow_private_endpoints = true
endpoint_ports = [%d]
`, filepath.Join(dir, "data"), addr, keyFile, mock.CADir, mock.Port)), 0o600)
	if out, err := exec.Command(bin, "check-config", "-config", config).CombinedOutput(); err != nil {
		t.Fatalf("check-config: %v\n%s", err, out)
	}

	s := startServer(t, bin, config)
	s.waitHealthy(t, addr)
	sub, err := mock.Subscribe(pub)
	if err != nil {
		t.Fatal(err)
	}
	body := s.post(t, "register", url.Values{"type": {"web"}, "node": {"w1"}, "token": {sub.JSON}})
	lines := strings.Split(body, "\n")
	if len(lines) != 3 || lines[0] != "OK" {
		t.Fatalf("register: %q", body)
	}
	bad := strings.Replace(sub.JSON, "https://", "http://", 1)
	if body := s.post(t, "register", url.Values{"type": {"web"}, "node": {"w2"}, "token": {bad}}); !strings.HasPrefix(body, "ERROR\ninvalid push token") {
		t.Fatalf("http endpoint registered: %q", body)
	}
	if body := s.post(t, "push", url.Values{"node": {"w1"}, "secret": {lines[2]}}); body != "OK\nw1" {
		t.Fatalf("push: %q", body)
	}
	ms := mock.Messages()
	if len(ms) != 1 {
		t.Fatalf("mock got %d messages", len(ms))
	}
	var p webpush.Payload
	if err := json.Unmarshal(ms[0].Plaintext, &p); err != nil || p.Node != "w1" {
		t.Fatalf("payload %q: %v", ms[0].Plaintext, err)
	}
	if ms[0].Header.Get("Topic") != webpush.DefaultTopic || ms[0].Header.Get("Urgency") != "normal" { // an HTTP push to an auto app is silent
		t.Fatalf("headers %v", ms[0].Header)
	}

	mock.Unsubscribe(sub.ID)
	if body := s.post(t, "push", url.Values{"node": {"w1"}, "secret": {lines[2]}}); !strings.HasPrefix(body, "ERROR\n") {
		t.Fatalf("push to a gone subscription: %q", body)
	}
	if body := s.post(t, "unregister", url.Values{"type": {"web"}, "node": {"w1"}}); body != "ERROR\nNode not found!" {
		t.Fatalf("registration of the gone subscription kept: %q", body)
	}
	s.stop(t)
	if strings.Contains(s.log.String(), sub.Endpoint) {
		t.Fatal("the subscription endpoint appears in the info-level log")
	}
}
