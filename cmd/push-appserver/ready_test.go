package main

import (
	"encoding/xml"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/push-appserver/push-appserver/internal/testutil/prosody"
	"github.com/push-appserver/push-appserver/internal/testutil/xmppfake"
)

// waitReady polls the ready page until it answers code with a body
// containing want.
func waitReady(t *testing.T, addr string, code int, want string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	var last string
	for time.Now().Before(deadline) {
		resp, err := http.Get("http://" + addr + "/push_appserver/v1/ready")
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			last = fmt.Sprintf("%d %q", resp.StatusCode, b)
			if resp.StatusCode == code && strings.Contains(string(b), want) {
				return
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("ready page never answered %d %q; last %s", code, want, last)
}

// TestReadinessFollowsComponent runs the binary against a real Prosody:
// ready while the component is connected, 503 naming it while Prosody is
// down, ready again once it is back; liveness stays RUNNING throughout.
func TestReadinessFollowsComponent(t *testing.T) {
	bin := buildBinary(t)
	p := prosody.Start(t, prosody.Options{})
	addr := freePort(t)
	cfg := writeConfig(t, fmt.Sprintf("[http]\nlisten = %q\n[[component]]\njid = %q\naddress = %q\nsecret = %q\n",
		addr, p.ComponentJID, p.ComponentAddr, p.ComponentSecret))
	s := startServer(t, bin, cfg)
	s.waitHealthy(t, addr)
	waitReady(t, addr, 200, "READY")

	p.Stop()
	waitReady(t, addr, 503, "component "+p.ComponentJID+": down")
	s.waitHealthy(t, addr)

	p.Restart()
	waitReady(t, addr, 200, "READY")
	s.stop(t)
}

// TestStandbyIsReady: Prosody takes one connection per component, so a
// second instance stands by; it serves its HTTP API and takes over when
// the first goes, so it is ready (else a rolling update that waits for
// the new instance's readiness before stopping the old would wait for
// ever), and its health page says it stands by.
func TestStandbyIsReady(t *testing.T) {
	bin := buildBinary(t)
	p := prosody.Start(t, prosody.Options{})
	component := fmt.Sprintf("[[component]]\njid = %q\naddress = %q\nsecret = %q\n", p.ComponentJID, p.ComponentAddr, p.ComponentSecret)
	first, second := freePort(t), freePort(t)
	s1 := startServer(t, bin, writeConfig(t, fmt.Sprintf("[http]\nlisten = %q\n%s", first, component)))
	waitReady(t, first, 200, "READY")
	s2 := startServer(t, bin, writeConfig(t, fmt.Sprintf("[http]\nlisten = %q\n%s", second, component)))
	s2.waitHealthy(t, second)
	s2.waitLog(t, "standing by")
	waitReady(t, second, 200, "READY")
	if body := s2.get(t, "health"); !strings.Contains(body, "component "+p.ComponentJID+": standing by") {
		t.Fatalf("health of the instance standing by:\n%s", body)
	}
	s1.stop(t)
	s2.stop(t)
}

// fakeComponentJID is the component besideFakeXMPP connects.
const fakeComponentJID = "push.example.org"

// besideFakeXMPP runs the binary with its component on a fake XMPP
// server, top added to its configuration's top level and component to
// its [[component]], and returns the running server, its HTTP address,
// the fake server and the component's first stream.
func besideFakeXMPP(t *testing.T, top, component string) (*server, string, *xmppfake.Server, *xmppfake.Stream) {
	t.Helper()
	bin := buildBinary(t)
	const secret = "s3cret"
	srv, err := xmppfake.Listen(fakeComponentJID, secret)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	addr := freePort(t)
	cfg := writeConfig(t, fmt.Sprintf("%s[http]\nlisten = %q\n[[component]]\njid = %q\naddress = %q\nsecret = %q\n%s",
		top, addr, fakeComponentJID, srv.Addr(), secret, component))
	s := startServer(t, bin, cfg)
	s.waitHealthy(t, addr)
	st, err := srv.Accept(10 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	return s, addr, srv, st
}

// A component stream whose server goes silent is replaced after the
// configured keepalive and three pings half as long apart, and counted in
// push_appserver_component_disconnects_total.
func TestSilentComponentReplaced(t *testing.T) {
	s, addr, srv, _ := besideFakeXMPP(t, "", "keepalive = \"2s\"\n")
	start := time.Now()
	const drops = `push_appserver_component_disconnects_total{jid="push.example.org"}`
	if got := metric(t, addr, drops); got != 0 {
		t.Fatalf("%s = %v while connected, want 0", drops, got)
	}
	// The fake server reads the ping and never answers.
	second, err := srv.Accept(10 * time.Second)
	if err != nil {
		t.Fatalf("the silent stream was not replaced: %v", err)
	}
	defer second.Close()
	if d := time.Since(start); d < 2*time.Second || d > 9*time.Second {
		t.Errorf("replaced %v after connecting, want about 5 s at a keepalive of 2 s", d)
	}
	if got := metric(t, addr, drops); got != 1 {
		t.Errorf("%s = %v after one silent stream, want 1", drops, got)
	}
	s.waitLog(t, "the XMPP server did not answer a ping")
	s.stop(t)
}

// account_register_limit reaches the ad-hoc commands: past it, an
// account's registration is answered wait/resource-constraint, and
// counted as limited.
func TestAccountRegisterLimitFromConfig(t *testing.T) {
	_, addr, _, st := besideFakeXMPP(t, "account_register_limit = 2\n", "")
	const jid = fakeComponentJID
	for i := range 3 {
		err := st.Send(fmt.Sprintf(`<iq type='set' from='mallory@example.org/a' to='%s' id='reg%d'><command xmlns='http://jabber.org/protocol/commands' node='v1-register-push' action='execute'><x xmlns='jabber:x:data' type='submit'><field var='type'><value>apns</value></field><field var='node'><value>n%d</value></field><field var='token'><value>ab12</value></field></x></command></iq>`, jid, i, i))
		if err != nil {
			t.Fatal(err)
		}
	}
	answers := map[string]string{}
	st.Conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	for len(answers) < 3 {
		tok, err := st.Dec.Token()
		if err != nil {
			t.Fatalf("reading answers (have %v): %v", answers, err)
		}
		start, ok := tok.(xml.StartElement)
		if !ok || start.Name.Local != "iq" {
			continue
		}
		var iq struct {
			Type  string `xml:"type,attr"`
			ID    string `xml:"id,attr"`
			Inner string `xml:",innerxml"`
		}
		if err := st.Dec.DecodeElement(&iq, &start); err != nil {
			t.Fatal(err)
		}
		if strings.HasPrefix(iq.ID, "reg") {
			answers[iq.ID] = iq.Type + " " + iq.Inner
		}
	}
	// They are handled at once, so any one of them may be the third.
	var results, waits int
	for _, a := range answers {
		switch {
		case strings.HasPrefix(a, "result "):
			results++
		case strings.HasPrefix(a, "error ") && strings.Contains(a, "type='wait'") && strings.Contains(a, "<resource-constraint"):
			waits++
		}
	}
	if results != 2 || waits != 1 {
		t.Errorf("three registrations in a minute at a limit of 2: %d results, %d wait/resource-constraint: %v", results, waits, answers)
	}
	if v := metric(t, addr, `push_appserver_registration_failures_total{reason="limited"}`); v != 1 {
		t.Errorf("limited registrations counted %v, want 1", v)
	}
}

// rate_limit_per_token reaches the core: a device registered under three
// nodes gets two pushes in a window with a limit of 2, the third push
// answered as the rate limit's and counted as throttled_device.
func TestRateLimitPerTokenFromConfig(t *testing.T) {
	bin := buildBinary(t)
	addr := freePort(t)
	s := startServer(t, bin, writeConfig(t, fmt.Sprintf("rate_limit_per_token = 2\n[http]\nlisten = %q\n", addr)))
	s.waitHealthy(t, addr)
	var answers []string
	for i := range 3 {
		reg, err := s.register(fmt.Sprint("n", i), "ab12")
		if err != nil || len(reg) != 3 || reg[0] != "OK" {
			t.Fatalf("register: %q %v", reg, err)
		}
		answers = append(answers, s.post(t, "push", url.Values{"node": {reg[1]}, "secret": {reg[2]}}))
	}
	want := []string{"OK\nn0", "OK\nn1", "ERROR\nRate limit exceeded, try again later!"}
	if !slices.Equal(answers, want) {
		t.Errorf("a push through each of three nodes of one device, rate_limit_per_token = 2: %q, want %q", answers, want)
	}
	if v := metric(t, addr, `push_appserver_pushes_total{app="apns",outcome="throttled_device"}`); v != 1 {
		t.Errorf("pushes refused by rate_limit_per_token counted %v, want 1", v)
	}
}
