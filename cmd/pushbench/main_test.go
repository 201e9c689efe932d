package main

import (
	"crypto/sha1"
	"encoding/hex"
	"encoding/xml"
	"testing"
	"time"

	"github.com/push-appserver/push-appserver/internal/xmpp/xep0357"
)

func TestHandshakeCheck(t *testing.T) {
	sum := sha1.Sum([]byte("id1" + "secret"))
	good := hex.EncodeToString(sum[:])
	if !handshakeOK("id1", "secret", good) || !handshakeOK("id1", "secret", " "+good+"\n") {
		t.Fatal("good handshake refused")
	}
	if handshakeOK("id1", "other", good) || handshakeOK("id2", "secret", good) || handshakeOK("id1", "secret", "") {
		t.Fatal("bad handshake accepted")
	}
}

func TestPercentile(t *testing.T) {
	var d []time.Duration
	for i := 1; i <= 100; i++ {
		d = append(d, time.Duration(i)*time.Millisecond)
	}
	for pct, want := range map[float64]time.Duration{50: 50 * time.Millisecond, 90: 90 * time.Millisecond, 99: 99 * time.Millisecond, 100: 100 * time.Millisecond} {
		if got := percentile(d, pct); got != want {
			t.Errorf("p%v = %v, want %v", pct, got, want)
		}
	}
	if percentile(nil, 50) != 0 {
		t.Error("empty")
	}
}

// The benchmark's IQ must be a push request our parser accepts, shaped
// like Prosody's.
func TestPublishIQParses(t *testing.T) {
	var iq struct {
		ID     string          `xml:"id,attr"`
		PubSub *xep0357.PubSub `xml:"http://jabber.org/protocol/pubsub pubsub"`
	}
	if err := xml.Unmarshal([]byte(publishIQ("x1", "example.org", "push.bench", "node-1", "s3cret")), &iq); err != nil {
		t.Fatal(err)
	}
	r, err := xep0357.Parse(iq.PubSub)
	if err != nil || iq.ID != "x1" || r.Node != "node-1" || r.Secret != "s3cret" || r.Summary == nil || !r.Summary.HasLastMessageBody {
		t.Fatalf("%+v %+v %v", iq, r, err)
	}
}
