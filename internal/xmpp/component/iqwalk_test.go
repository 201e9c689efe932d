package component

import (
	"encoding/xml"
	"reflect"
	"strings"
	"testing"

	"github.com/push-appserver/push-appserver/internal/xmpp/xmlwalk"
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

// checkStreamIQWalk is checkIQWalk on the stream's own decoder, whose
// rare payloads go to reflection through a subtree of its tokens. The
// reference is reflection on encoding/xml's decoder over the same lexer.
func checkStreamIQWalk(t *testing.T, stanza string) {
	t.Helper()
	d := newDecoder(lexerOver([]byte(stanza), 3))
	var start xmlwalk.Token
	for start.Kind != xmlwalk.StartElement {
		var err error
		if start, err = d.Next(); err != nil {
			return
		}
	}
	m := new(streamIQ)
	walk := &m.iq
	walkErr := walk.walkIn(d, start, &m.mem, nil)

	rd := xml.NewTokenDecoder(lexerOver([]byte(stanza), 3))
	var rstart xml.StartElement
	for {
		tok, err := rd.Token()
		if err != nil {
			t.Fatalf("reference found no start where the decoder did: %v\n%s", err, stanza)
		}
		if st, ok := tok.(xml.StartElement); ok {
			rstart = st
			break
		}
	}
	refl := new(reflectIQ)
	reflErr := rd.DecodeElement(refl, &rstart)
	if (walkErr == nil) != (reflErr == nil) {
		t.Fatalf("stream walk error %v, reflection error %v\n%s", walkErr, reflErr, stanza)
	}
	if walkErr == nil && !reflect.DeepEqual(walk, (*iq)(refl)) {
		t.Fatalf("stream walk %+v\nreflect     %+v\n%s", walk, refl, stanza)
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
	`<iq type='set' id='c' xmlns:c='http://jabber.org/protocol/commands'><c:command node='n' action='execute' xmlns:x='jabber:x:data'><x:x type='submit'><x:field var='a'><x:value>1</x:value></x:field></x:x></c:command></iq>`,
	`<iq type='get' id='d'><query xmlns='http://jabber.org/protocol/disco#info' xmlns:p='u' p:node='a' node='b'/></iq>`,
}

func TestIQWalk(t *testing.T) {
	for _, c := range iqWalkCases {
		checkIQWalk(t, c)
		checkStreamIQWalk(t, c)
	}
}

func FuzzIQWalk(f *testing.F) {
	for _, c := range iqWalkCases {
		f.Add(c)
	}
	f.Fuzz(func(t *testing.T, stanza string) {
		// The publish walk keeps at most 8 KiB of a text, 64 fields
		// of a form, 64 values of a field and 16 items, where
		// reflection keeps everything.
		if len(stanza) > 8<<10 || strings.Count(stanza, "field") > 64 || strings.Count(stanza, "value") > 64 || strings.Count(stanza, "item") > 16 {
			return
		}
		checkIQWalk(t, stanza)
		checkStreamIQWalk(t, stanza)
	})
}

// BenchmarkStreamIQWalk measures reading one publish IQ, as Prosody sends
// it, off the stream: lexer, decoder and walk.
func BenchmarkStreamIQWalk(b *testing.B) {
	const batch = 1000
	stanza := `<iq type='set' from='example.org' to='push.example.net' id='5c3f'><pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node='0123456789abcdef0123456789abcdef'>` +
		`<item><notification xmlns='urn:xmpp:push:0'><x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE'><value>urn:xmpp:push:summary</value></field><field var='message-count'><value>1</value></field>` +
		`<field var='last-message-body'><value>New Message!</value></field></x></notification></item></publish><publish-options><x xmlns='jabber:x:data' type='submit'>` +
		`<field var='FORM_TYPE'><value>http://jabber.org/protocol/pubsub#publish-options</value></field><field var='secret'><value>0123456789abcdef0123456789abcdef</value></field></x></publish-options></pubsub></iq>`
	data := []byte(strings.Repeat(stanza, batch))
	var d *decoder
	n := 0
	for b.Loop() {
		if n%batch == 0 {
			d = newDecoder(lexerOver(data, 4096))
		}
		n++
		start, err := d.Next()
		if err != nil {
			b.Fatal(err)
		}
		q := new(iq)
		if err := q.walk(d, start); err != nil {
			b.Fatal(err)
		}
	}
}
