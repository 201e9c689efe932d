package component

import (
	"encoding/xml"
	"reflect"
	"runtime"
	"strings"
	"testing"

	"github.com/push-appserver/push-appserver/internal/testutil/retained"
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
	var start *xmlwalk.Token
	for start == nil || start.Kind != xmlwalk.StartElement {
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

// walkStream walks stanza as read does, and returns what the IQ keeps.
func walkStream(t *testing.T, stanza string) (*streamIQ, int) {
	t.Helper()
	d := newDecoder(lexerOver([]byte(stanza), 4096))
	start, err := d.Next()
	if err != nil {
		t.Fatal(err)
	}
	m := new(streamIQ)
	raised := false
	if err := m.iq.walkIn(d, start, &m.mem, func() { raised = true }); err != nil {
		t.Fatal(err)
	}
	if !raised {
		t.Fatal("the limit was not raised")
	}
	return m, retained.StringBytes(&m.iq)
}

// The budgets of a publish's texts (xep0357 maxNoteText, maxOptionsText)
// are per <pubsub/>: each repeated <pubsub/> of an IQ merges into the
// first but walks with budgets of its own, so an IQ of 16 of them keeps
// 16 times the bound.
func TestRepeatedPubSubSharesTheBudget(t *testing.T) {
	v := strings.Repeat("b", 8000)
	var b strings.Builder
	b.WriteString(`<iq type='set' id='1' from='example.org' to='push.example.net'>`)
	for range 16 {
		b.WriteString(`<pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node='n'><item><notification xmlns='urn:xmpp:push:0'><x xmlns='jabber:x:data'>`)
		for range 6 {
			b.WriteString(`<field var='x-filler'><value>` + v + `</value></field>`)
		}
		b.WriteString(`</x></notification></item></publish></pubsub>`)
	}
	b.WriteString(`</iq>`)
	if b.Len() > 16*64<<10 {
		t.Fatalf("the IQ is %d bytes, more than the component reads", b.Len())
	}
	_, kept := walkStream(t, b.String())
	if kept > 64<<10 {
		t.Errorf("%d bytes kept of a %d-byte IQ; want at most 64 KiB (48 KiB of notification texts, 16 of options)", kept, b.Len())
	}
}

// A <pubsub/> raises the limit for the rest of its IQ, not for itself:
// a command (or disco query) after it is read by reflection, whole, up
// to 16 times MaxStanza, where alone it would have ended the stream at
// MaxStanza.
func TestPayloadAfterPubSubKeptWhole(t *testing.T) {
	stanza := `<iq type='set' id='1' from='a@example.org/r' to='push.example.net'><pubsub xmlns='http://jabber.org/protocol/pubsub'/>` +
		`<command xmlns='http://jabber.org/protocol/commands' node='v1-register-push' action='execute'><x xmlns='jabber:x:data' type='submit'>` +
		`<field var='token'><value>` + strings.Repeat("t", 900<<10) + `</value></field></x></command></iq>`
	_, kept := walkStream(t, stanza)
	if kept > 64<<10 {
		t.Errorf("%d bytes kept of a %d-byte IQ whose only publish is empty; want at most 64 KiB", kept, len(stanza))
	}
}

// What a publish's walk keeps is bounded in bytes of text, but not in
// the number of values it keeps: 16 items, 64 fields of 64 empty values
// each, hold a string header (and a field) per value, about twice the
// bytes of the stanza that carried them.
func TestPublishOfEmptyValuesKeptSmall(t *testing.T) {
	values := strings.Repeat(`<value/>`, 64)
	var form strings.Builder
	form.WriteString(`<x xmlns='jabber:x:data'>`)
	for range 64 {
		form.WriteString(`<field var='f'>` + values + `</field>`)
	}
	form.WriteString(`</x>`)
	var b strings.Builder
	b.WriteString(`<iq type='set' id='1' from='example.org' to='push.example.net'><pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node='n'>`)
	for range 16 {
		b.WriteString(`<item><notification xmlns='urn:xmpp:push:0'>` + form.String() + `</notification></item>`)
	}
	b.WriteString(`</publish><publish-options>` + form.String() + `</publish-options></pubsub></iq>`)
	stanza := b.String()
	if len(stanza) > 16*64<<10 {
		t.Fatalf("the IQ is %d bytes, more than the component reads", len(stanza))
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	m, _ := walkStream(t, stanza)
	runtime.GC()
	runtime.ReadMemStats(&after)
	runtime.KeepAlive(m)
	if held := int64(after.HeapAlloc) - int64(before.HeapAlloc); held > 256<<10 {
		t.Errorf("walk of a %d-byte publish holds %d bytes; want at most 256 KiB", len(stanza), held)
	}
}

// What a publish's walk holds is about its budgets of text (64 KiB: 48
// for the notifications, 16 for the publish options) and a little more.
// Values in xep0357's walk share one strings.Builder: each growth copies
// it, and the strings already taken of the old array keep it alive, so
// eleven 8 KiB values hold about 2.7 times their bytes. A value in two
// pieces (text, then an empty CDATA section) is written to the builder
// twice, first piece and whole: a 91 KB publish then holds half a MiB,
// for each of the up to 2*MaxInFlight pushes waiting at a slow service.
func TestPublishOfLongValuesKeptSmall(t *testing.T) {
	v := strings.Repeat("a", 8191)
	head := `<iq type='set' id='1' from='example.org' to='push.example.net'><pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node='n'><item><notification xmlns='urn:xmpp:push:0'>`
	for _, tc := range []struct{ name, field string }{
		{"one piece", `<field var='f'><value>` + v + `a</value></field>`},
		{"two pieces", `<field var='f'><value>` + v + `<![CDATA[]]>a</value></field>`},
	} {
		form := func(n int) string { return `<x xmlns='jabber:x:data'>` + strings.Repeat(tc.field, n) + `</x>` }
		stanza := head + form(8) + `</notification></item></publish><publish-options>` + form(3) + `</publish-options></pubsub></iq>`
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		m, kept := walkStream(t, stanza)
		runtime.GC()
		runtime.ReadMemStats(&after)
		runtime.KeepAlive(m)
		if held := int64(after.HeapAlloc) - int64(before.HeapAlloc); held > 128<<10 {
			t.Errorf("%s: walk of a %d-byte publish keeps %d bytes of text but holds %d bytes; want at most 128 KiB", tc.name, len(stanza), kept, held)
		}
	}
}
