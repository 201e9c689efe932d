package main

import (
	"encoding/xml"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/push-appserver/push-appserver/internal/testutil/xmppfake"
)

// startWithBlockedLog starts the binary on config with its stdout and
// stderr a pipe nobody reads (journald stalled), and registers devices
// of app, a log line each, until the pipe is far past full or a
// registration hangs on its line. It returns the server and the secrets
// of the devices registered.
func startWithBlockedLog(t *testing.T, bin, config, addr, app string) (*server, map[string]string) {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	cmd := exec.Command(bin, "serve", "-config", config)
	cmd.Stdout, cmd.Stderr = w, w
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	w.Close()
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	s := &server{cmd: cmd}
	s.waitHealthy(t, addr)
	client := &http.Client{Timeout: 2 * time.Second}
	secrets := map[string]string{}
	// About 150 bytes a line: 800 lines are well past a pipe's 64 KiB.
	for i := range 800 {
		node := fmt.Sprintf("n%d", i)
		resp, err := client.PostForm(s.base+"register", url.Values{"type": {app}, "node": {node}, "token": {fmt.Sprintf("%064x", i+1)}})
		if err != nil {
			return s, secrets
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if lines := strings.Split(string(b), "\n"); lines[0] == "OK" {
			secrets[node] = lines[2]
		}
	}
	return s, secrets
}

// TestBlockedLogStallsNoPush: with the log not read (a stalled journald,
// its pipe full), registrations go on, and publishes the server refuses
// and logs (a wrong secret: anyone can send them) hold up nothing: a
// valid publish on the same stream is pushed and answered. Lines that
// find no room are dropped.
func TestBlockedLogStallsNoPush(t *testing.T) {
	bin := buildBinary(t)
	dir := t.TempDir()
	am, _, keyFile, _ := startMocks(t, dir)
	const secret = "s3cret"
	srv, err := xmppfake.Listen(fakeComponentJID, secret)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	addr := freePort(t)
	config := filepath.Join(dir, "push-appserver.toml")
	// Few places on the stream, so that a handful of handlers waiting
	// for the log would stop its reading.
	os.WriteFile(config, fmt.Appendf(nil, "data_dir = %q\nrate_limit = 0\n[http]\nlisten = %q\n%s[[component]]\njid = %q\naddress = %q\nsecret = %q\nmax_in_flight = 4\n",
		filepath.Join(dir, "data"), addr, am.AppConfig("ios", keyFile), fakeComponentJID, srv.Addr(), secret), 0o600)
	_, secrets := startWithBlockedLog(t, bin, config, addr, "ios")
	if len(secrets) < 800 {
		t.Errorf("registrations hung on the log after %d", len(secrets))
	}
	st, err := srv.Accept(10 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	// Replies are read throughout, as a server does.
	good := make(chan string, 1)
	var answered atomic.Int64
	go func() {
		for {
			tok, err := st.Dec.Token()
			if err != nil {
				return
			}
			se, ok := tok.(xml.StartElement)
			if !ok || se.Name.Local != "iq" {
				continue
			}
			var reply struct {
				ID   string `xml:"id,attr"`
				Type string `xml:"type,attr"`
			}
			if err := st.Dec.DecodeElement(&reply, &se); err != nil {
				return
			}
			if reply.ID == "good" {
				good <- reply.Type
				return
			}
			answered.Add(1)
		}
	}()
	// 20 a second for 1.5 s: each second's first 10 are logged
	// (logging.Limited).
	for i := range 30 {
		st.Send(xmppfake.PublishIQ(fmt.Sprintf("bad-%d", i), "user.example.org", fakeComponentJID, "n1", "wrong", true))
		time.Sleep(50 * time.Millisecond)
	}
	st.Send(xmppfake.PublishIQ("good", "user.example.org", fakeComponentJID, "n2", secrets["n2"], true))
	select {
	case typ := <-good:
		if typ != "result" {
			t.Errorf("the valid publish was answered %s", typ)
		}
	case <-time.After(10 * time.Second):
		t.Errorf("a valid publish was not answered within 10 s (%d of 30 refusals answered)", answered.Load())
	}
}
