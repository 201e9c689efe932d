package component

import (
	"encoding/xml"
	"reflect"
	"strings"
	"testing"
)

// reflectIQ has iq's fields and tags but not its UnmarshalXML: encoding/xml
// decodes it by reflection, the reference the walk is held to.
type reflectIQ iq

// checkIQWalk decodes the first element of stanza through the walk and
// by reflection and fails unless both agree: the same fields, or both an
// error.
func checkIQWalk(t *testing.T, stanza string) {
	t.Helper()
	first := func() (*xml.Decoder, xml.StartElement, bool) {
		d := xml.NewDecoder(strings.NewReader(stanza))
		for {
			tok, err := d.Token()
			if err != nil {
				return nil, xml.StartElement{}, false
			}
			if st, ok := tok.(xml.StartElement); ok {
				return d, st, true
			}
		}
	}
	d, start, ok := first()
	if !ok {
		return
	}
	walk := new(iq)
	walkErr := walk.UnmarshalXML(d, start)
	d, start, _ = first()
	refl := new(reflectIQ)
	reflErr := d.DecodeElement(refl, &start)
	if (walkErr == nil) != (reflErr == nil) {
		t.Fatalf("walk error %v, reflection error %v\n%s", walkErr, reflErr, stanza)
	}
	if walkErr != nil {
		return
	}
	if !reflect.DeepEqual(walk, (*iq)(refl)) {
		t.Fatalf("walk    %+v\nreflect %+v\n%s", walk, refl, stanza)
	}
}

var iqWalkCases = []string{
	`<iq type='set' id='1' from='example.org' to='push.example.net'><pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node='n'><item><notification xmlns='urn:xmpp:push:0'><x xmlns='jabber:x:data'><field var='message-count'><value>1</value></field></x></notification></item></publish><publish-options><x xmlns='jabber:x:data' type='submit'><field var='secret'><value>s</value></field></x></publish-options></pubsub></iq>`,
	`<iq/>`,
	`<iq id='a' id='b' xmlns:type='t' type='get'/>`,
	`<iq type='get' id='d'><query xmlns='http://jabber.org/protocol/disco#info' node='x'/></iq>`,
	`<iq type='get' id='d'><query xmlns='http://jabber.org/protocol/disco#items'/><query xmlns='http://jabber.org/protocol/disco#items' node='y'/></iq>`,
	`<iq type='get'><query xmlns='other'/><query/>text<!-- c --></iq>`,
	`<iq type='set' id='c'><command xmlns='http://jabber.org/protocol/commands' node='v1-register-push' action='execute'><x xmlns='jabber:x:data' type='submit'><field var='node'><value>n</value></field></x></command></iq>`,
	`<iq><command node='wrong name space'/><command xmlns='http://jabber.org/protocol/commands'/></iq>`,
	`<iq><pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node='a'/></pubsub><pubsub xmlns='http://jabber.org/protocol/pubsub'><publish-options/></pubsub></iq>`,
	`<iq><pubsub xmlns='other'/><pubsub/></iq>`,
	`<iq xmlns='jabber:component:accept' p:id='x' xmlns:p='urn:p'><a><b><c/></b></a></iq>`,
	`<iq><pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node='a'></pubsub></iq>`,
	`<iq><unclosed></iq>`,
}

func TestIQWalk(t *testing.T) {
	for _, c := range iqWalkCases {
		checkIQWalk(t, c)
	}
}

func FuzzIQWalk(f *testing.F) {
	for _, c := range iqWalkCases {
		f.Add(c)
	}
	f.Fuzz(func(t *testing.T, stanza string) {
		checkIQWalk(t, stanza)
	})
}
