package main

import (
	"encoding/json"
	"encoding/xml"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/push-appserver/push-appserver/internal/testutil/xmppfake"
)

// nextIQ reads the stream until the IQ with the given id and returns its
// type and inner XML.
func nextIQ(t *testing.T, st *xmppfake.Stream, id string) (typ, inner string) {
	t.Helper()
	st.Conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		tok, err := st.Dec.Token()
		if err != nil {
			t.Fatalf("reading the answer to %s: %v", id, err)
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
		if iq.ID == id {
			return iq.Type, iq.Inner
		}
	}
}

// Siskin IM removes an account whose push is on only once the push
// component has forgotten the device: over XMPP when the account is
// connected, and otherwise, or when that fails, by the push component's
// HTTP API, at https://<component JID>/unregister-device/<component JID>
// and then at .../rest/push/unregister-device/<component JID>, with the
// JSON {"account", "provider", "device-token"}, expecting
// {"result": "success"}; anything else and Siskin refuses to remove the
// account ("Push notifications are enabled for ... They need to be
// disabled before account can be removed"), so an account whose server
// is gone can never be removed (PushEventHandler.unregisterDevice and
// AccountSettingsViewController in tigase/siskin-im). Both paths remove
// the register-device registration of that account and token, and a
// device that is registered no more is success too.
func TestSiskinUnregisterDeviceOverHTTP(t *testing.T) {
	s, addr, _, st := besideFakeXMPP(t, "", "tigase_providers = { \"tigase:messenger:apns:1\" = \"apns\" }\n")
	register := func(id, token string) string {
		t.Helper()
		err := st.Send(fmt.Sprintf(`<iq type='set' from='juliet@example.org/siskin' to='%s' id='%s'><command xmlns='http://jabber.org/protocol/commands' node='register-device'><x xmlns='jabber:x:data' type='submit'><field type='text-single' var='provider'><value>tigase:messenger:apns:1</value></field><field type='text-single' var='device-token'><value>%s</value></field></x></command></iq>`, fakeComponentJID, id, token))
		if err != nil {
			t.Fatal(err)
		}
		typ, inner := nextIQ(t, st, id)
		m := regexp.MustCompile(`<field var="node"[^>]*><value>([^<]+)</value>`).FindStringSubmatch(inner)
		if typ != "result" || m == nil {
			t.Fatalf("register-device: %s %s", typ, inner)
		}
		return m[1]
	}
	unregister := func(path, token string) (int, string) {
		t.Helper()
		body := fmt.Sprintf(`{"account":"juliet@example.org","provider":"tigase:messenger:apns:1","device-token":%q}`, token)
		resp, err := http.Post("http://"+addr+path+fakeComponentJID, "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		var answer struct {
			Result string `json:"result"`
		}
		json.Unmarshal(b, &answer)
		return resp.StatusCode, answer.Result + " " + string(b)
	}
	publishGone := func(id, node string) {
		t.Helper()
		if err := st.Send(fmt.Sprintf(`<iq type='set' from='example.org' to='%s' id='%s'><pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node='%s'><item><notification xmlns='urn:xmpp:push:0'/></item></publish></pubsub></iq>`, fakeComponentJID, id, node)); err != nil {
			t.Fatal(err)
		}
		if typ, inner := nextIQ(t, st, id); typ != "error" || !strings.Contains(inner, "<item-not-found") {
			t.Errorf("publish to a device Siskin unregistered over HTTP: %s %s", typ, inner)
		}
	}

	const token1 = "a1a2a3a4a5a6a7a8a9a0a1a2a3a4a5a6a7a8a9a0a1a2a3a4a5a6a7a8a9a0a1a2"
	node1 := register("r1", token1)
	if code, got := unregister("/unregister-device/", token1); code != http.StatusOK || !strings.HasPrefix(got, "success ") {
		t.Fatalf("POST /unregister-device/%s: %d %s", fakeComponentJID, code, got)
	}
	publishGone("p1", node1)
	// Already gone: nothing left to remove is what Siskin asked for.
	if code, got := unregister("/unregister-device/", token1); code != http.StatusOK || !strings.HasPrefix(got, "success ") {
		t.Errorf("again: %d %s", code, got)
	}

	const token2 = "b1b2b3b4b5b6b7b8b9b0b1b2b3b4b5b6b7b8b9b0b1b2b3b4b5b6b7b8b9b0b1b2"
	node2 := register("r2", token2)
	if code, got := unregister("/rest/push/unregister-device/", token2); code != http.StatusOK || !strings.HasPrefix(got, "success ") {
		t.Fatalf("POST /rest/push/unregister-device/%s: %d %s", fakeComponentJID, code, got)
	}
	publishGone("p2", node2)
	s.stop(t)
}
