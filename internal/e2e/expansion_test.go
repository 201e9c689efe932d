package e2e_test

import (
	"fmt"
	"strings"
	"sync/atomic"
	"testing"

	"mellium.im/xmpp/stanza"

	"github.com/push-appserver/push-appserver/internal/push"
	"github.com/push-appserver/push-appserver/internal/xmpp/component"
)

// discoInfo is a disco#info query, to see the component answer.
type discoInfo struct {
	XMLName struct{} `xml:"http://jabber.org/protocol/disco#info query"`
}

// TestExpandedStanzaKeepsStream: an XMPP server writes a stanza to the
// component in its own serialization, which may be far larger than the
// stanza its sender wrote. Prosody keeps each element's name space and
// writes it out on every element whose parent's differs: a prefix
// declared once, for a name space of 1,000 bytes, and used by 6,000
// empty children (<p:a/>, 6 bytes each) is a message of 36 KB from any
// user, and 6 MB on the component stream. A stanza past the reader's
// bound of skippedStanzas × MaxStanza (4 MiB) ended the stream, and the
// server answered the pushes of every user with errors while the
// component reconnected (ejabberd ends the push session on the first).
// Prosody also writes each prefixed attribute with a declaration of its
// own (xmlns:ns1='u' ns1:a=""): a message of 1.2 KB with 100 of them
// carried more declarations than the decoder resolves, a syntax error
// that ended the stream too. A message carries nothing for us: however
// large, it is skipped, and the stream and its pushes go on.
func TestExpandedStanzaKeepsStream(t *testing.T) { eachServer(t, testExpandedStanzaKeepsStream) }

func testExpandedStanzaKeepsStream(t *testing.T, start startServer) {
	var disconnects atomic.Int32
	s := startStackAppsOn(t, start, map[string]push.Backend{"apns": &recorder{}, "fcm": &recorder{}}, func(o *component.Options) {
		o.OnState = func(connected bool) {
			if !connected {
				disconnects.Add(1)
			}
		}
	})
	mallory := login(t, s.xmpp.C2SAddr, "bob", s.xmpp.Domain, "bob-pw")
	defer mallory.close()

	space := "urn:example:" + strings.Repeat("u", 1000)
	bomb := "<message to='" + s.xmpp.ComponentJID + "' id='bomb'><x xmlns='urn:example:bomb' xmlns:p='" + space + "'>" +
		strings.Repeat("<p:a/>", 6000) + "</x></message>"
	var attrs strings.Builder
	for i := range 100 {
		fmt.Fprintf(&attrs, " p:a%d=''", i)
	}
	attrBomb := "<message to='" + s.xmpp.ComponentJID + "' id='attrs'><x xmlns='urn:example:bomb' xmlns:p='urn:example:p'" + attrs.String() + "/></message>"
	if _, err := mallory.sess.Conn().Write([]byte(attrBomb + bomb)); err != nil {
		t.Fatal(err)
	}
	// The server routes in order: once the component answers a query
	// sent after the message, it has read the message.
	err := mallory.iq(s.xmpp.ComponentJID, stanza.GetIQ, discoInfo{}, nil)
	if n := disconnects.Load(); n != 0 {
		t.Fatalf("messages of %d and %d bytes from a user ended the component's stream %d times (the query after them: %v)", len(attrBomb), len(bomb), n, err)
	}
	if err != nil {
		t.Fatalf("the component's answer after messages of %d and %d bytes: %v", len(attrBomb), len(bomb), err)
	}
}
