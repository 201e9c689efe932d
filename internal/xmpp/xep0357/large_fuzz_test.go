package xep0357_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/push-appserver/push-appserver/internal/xmpp/xep0357"
)

// FuzzSecretSurvivesLargePublish builds publishes far past the walk's
// bounds in their notifications (long bodies, many fields, many items)
// with a handful of publish options before the secret, as servers send
// them: node and secret read through the walk are the ones reflection
// reads, whatever the summary holds.
func FuzzSecretSurvivesLargePublish(f *testing.F) {
	f.Add(uint16(100), uint8(3), uint8(1), uint8(2), uint8(10), uint8(0))
	f.Add(uint16(60000), uint8(200), uint8(40), uint8(15), uint8(200), uint8(3))
	f.Add(uint16(9000), uint8(70), uint8(17), uint8(20), uint8(64), uint8(1))
	f.Fuzz(func(t *testing.T, bodyLen uint16, nFields, nItems, nOpts, optLen, markup uint8) {
		var b strings.Builder
		b.WriteString(`<iq type='set' id='1'><pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node='the-node'>`)
		body := strings.Repeat("x", int(bodyLen))
		if markup%2 == 1 {
			body = strings.Repeat("&lt;b&gt;", int(bodyLen)/9)
		}
		for i := 0; i < int(nItems%48)+1; i++ {
			b.WriteString(`<item><notification xmlns='urn:xmpp:push:0'><x xmlns='jabber:x:data'><field var='FORM_TYPE'><value>urn:xmpp:push:summary</value></field>`)
			for j := 0; j < int(nFields); j++ {
				fmt.Fprintf(&b, `<field var='f%d'><value>v</value><value>w</value></field>`, j)
			}
			fmt.Fprintf(&b, `<field var='last-message-body'><value>%s</value></field></x>`, body)
			if markup%4 >= 2 {
				fmt.Fprintf(&b, `<encrypted xmlns='tigase:push:encrypt:0' iv='aXY='>%s</encrypted>`, strings.Repeat("QUFB", int(bodyLen)/4))
			}
			b.WriteString(`</notification></item>`)
		}
		b.WriteString(`</publish><publish-options><x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE'><value>http://jabber.org/protocol/pubsub#publish-options</value></field>`)
		for j := 0; j < int(nOpts%24); j++ {
			fmt.Fprintf(&b, `<field var='o%d'><value>%s</value></field>`, j, strings.Repeat("o", int(optLen)))
		}
		b.WriteString(`<field var='secret'><value>0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef</value></field></x></publish-options></pubsub></iq>`)
		stanza := b.String()
		walk, refl, werr, rerr := decodeBoth(stanza)
		if werr != nil || rerr != nil {
			t.Fatalf("decode: walk %v, reflection %v", werr, rerr)
		}
		if walk.Publish == nil || walk.Publish.Node != refl.Publish.Node {
			t.Fatalf("node: walk %+v", walk.Publish)
		}
		rw, ew := parseFrom(walk)
		rr, er := parseFrom(refl)
		if rw.Node != rr.Node || rw.Secret != rr.Secret || (ew == nil) != (er == nil) {
			t.Fatalf("walk read node %q secret %q (%v); reflection node %q secret %q (%v); stanza %d bytes", rw.Node, rw.Secret, ew, rr.Node, rr.Secret, er, len(stanza))
		}
	})
}

func parseFrom(ps *xep0357.PubSub) (xep0357.Request, error) { return xep0357.Parse(ps) }
