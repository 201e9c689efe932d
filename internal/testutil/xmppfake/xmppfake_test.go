package xmppfake_test

import (
	"crypto/sha1"
	"encoding/hex"
	"encoding/xml"
	"testing"

	"github.com/push-appserver/push-appserver/internal/testutil/xmppfake"
	"github.com/push-appserver/push-appserver/internal/xmpp/xep0357"
)

func TestHandshakeOK(t *testing.T) {
	sum := sha1.Sum([]byte("id1" + "secret"))
	good := hex.EncodeToString(sum[:])
	if !xmppfake.HandshakeOK("id1", "secret", good) || !xmppfake.HandshakeOK("id1", "secret", " "+good+"\n") {
		t.Fatal("good handshake refused")
	}
	if xmppfake.HandshakeOK("id1", "other", good) || xmppfake.HandshakeOK("id2", "secret", good) || xmppfake.HandshakeOK("id1", "secret", "") {
		t.Fatal("bad handshake accepted")
	}
}

// The publish IQ must be a push request our parser accepts, shaped like
// Prosody's: important with the placeholder body, unimportant without.
func TestPublishIQParses(t *testing.T) {
	for _, important := range []bool{true, false} {
		var iq struct {
			ID     string          `xml:"id,attr"`
			PubSub *xep0357.PubSub `xml:"http://jabber.org/protocol/pubsub pubsub"`
		}
		if err := xml.Unmarshal([]byte(xmppfake.PublishIQ("x1", "example.org", "push.bench", "node-1", "s3cret", important)), &iq); err != nil {
			t.Fatal(err)
		}
		r, err := xep0357.Parse(iq.PubSub)
		if err != nil || iq.ID != "x1" || r.Node != "node-1" || r.Secret != "s3cret" || r.Summary == nil || r.Summary.HasLastMessageBody != important {
			t.Fatalf("%+v %+v %v", iq, r, err)
		}
	}
}
