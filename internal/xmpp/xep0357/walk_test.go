package xep0357_test

import (
	"encoding/xml"
	"reflect"
	"strings"
	"testing"

	"github.com/push-appserver/push-appserver/internal/testutil/retained"
	"github.com/push-appserver/push-appserver/internal/xmpp/xep0357"
	"github.com/push-appserver/push-appserver/internal/xmpp/xmlwalk"
)

// reflectPubSub has PubSub's fields and tags but not its UnmarshalXML:
// encoding/xml decodes it by reflection, the reference the token walk is
// held to. Being the same struct type, it follows any field added to
// PubSub or the types under it.
type reflectPubSub xep0357.PubSub

// decodeBoth decodes stanza once through the walk and once by reflection.
func decodeBoth(stanza string) (walk, refl *xep0357.PubSub, walkErr, reflErr error) {
	var w struct {
		PubSub *xep0357.PubSub `xml:"http://jabber.org/protocol/pubsub pubsub"`
	}
	var r struct {
		PubSub *reflectPubSub `xml:"http://jabber.org/protocol/pubsub pubsub"`
	}
	walkErr = xml.Unmarshal([]byte(stanza), &w)
	reflErr = xml.Unmarshal([]byte(stanza), &r)
	return w.PubSub, (*xep0357.PubSub)(r.PubSub), walkErr, reflErr
}

func checkSame(t *testing.T, stanza string) {
	t.Helper()
	walk, refl, walkErr, reflErr := decodeBoth(stanza)
	if (walkErr == nil) != (reflErr == nil) {
		t.Fatalf("walk error %v, reflection error %v\n%s", walkErr, reflErr, stanza)
	}
	if walkErr != nil {
		return
	}
	if !reflect.DeepEqual(walk, refl) {
		t.Fatalf("walk    %s\nreflect %s\n%s", dump(walk), dump(refl), stanza)
	}
	wr, werr := xep0357.Parse(walk)
	rr, rerr := xep0357.Parse(refl)
	if !reflect.DeepEqual(wr, rr) || (werr == nil) != (rerr == nil) {
		t.Fatalf("Parse: walk %+v, %v; reflect %+v, %v", wr, werr, rr, rerr)
	}
}

func dump(ps *xep0357.PubSub) string {
	b, _ := xml.Marshal((*reflectPubSub)(ps))
	return string(b)
}

var walkCases = []string{
	// Fields with more than one value, between fields with one.
	`<iq><pubsub xmlns='http://jabber.org/protocol/pubsub'><publish-options><x xmlns='jabber:x:data'><field var='a'><value>1</value><value>2</value></field><field var='b'><value>3</value></field><field var='c'><value>4</value><value>5</value><value>6</value></field><field var='d'><value>7</value></field></x></publish-options></pubsub></iq>`,
	prosodyPublish,
	`<iq><pubsub xmlns='http://jabber.org/protocol/pubsub'/></iq>`,
	`<iq><pubsub xmlns='other'><publish node='n'/></pubsub></iq>`,
	// Repeated elements merge the way reflection merges them.
	`<iq><pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node='a'><item/></publish><publish><item><notification xmlns='urn:xmpp:push:0'/></item></publish></pubsub>` +
		`<pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node='b'/></pubsub></iq>`,
	// Names matched by local name alone, or by name and namespace.
	`<iq><pubsub xmlns='http://jabber.org/protocol/pubsub'><p:publish xmlns:p='x' p:node='n' node='m'><item><notification xmlns='urn:xmpp:push:1'><x xmlns='jabber:x:data'/></notification></item></p:publish></pubsub></iq>`,
	`<iq><pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node='n' xmlns:node='urn:x'><item><notification xmlns='urn:xmpp:push:0'><x xmlns='jabber:x:data' type='submit' xmlns:type='t'><f:field xmlns:f='y' var='a' type='b'><f:value>1</f:value><value>2<b>3</b>4</value><value/></f:field></x><x xmlns='other'><field var='c'/></x></notification></item></publish></pubsub></iq>`,
	// Priority markers, one of them with markup and split text.
	`<iq><pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node='n'><item><notification xmlns='urn:xmpp:push:0'><priority xmlns='tigase:push:priority:0'>high</priority><priority xmlns='tigase:push:priority:0'> lo<x/>w <![CDATA[x]]>&amp;</priority><priority xmlns='other'>high</priority></notification></item></publish></pubsub></iq>`,
	// Encrypted notifications (Prosody's and Tigase's), repeated, with
	// markup inside and attributes in other namespaces.
	`<iq><pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node='n'><item><notification xmlns='urn:xmpp:push:0'><encrypted xmlns='tigase:push:encrypt:0' iv='aXY=' type='aes'>cGF5<b>x</b>bG9hZA==</encrypted><encrypted xmlns='tigase:push:encrypt:0' xmlns:e='e' e:iv='other'/><encrypted xmlns='urn:other' iv='no'>no</encrypted></notification></item></publish></pubsub></iq>`,
	// publish-options with two forms and comments.
	`<iq><pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node='n'/><publish-options><!-- c --><x xmlns='jabber:x:data'><field var='secret'><value>s</value></field></x><x xmlns='jabber:x:data' type='t'><field var='k'><value>v</value></field></x></publish-options></pubsub></iq>`,
	// More than the memory a walk takes at once: two items with a
	// notification each, a form of eight fields, more forms after it.
	`<iq><pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node='n'><item><notification xmlns='urn:xmpp:push:0'><x xmlns='jabber:x:data'>` +
		`<field var='a'><value>1</value></field><field var='b'><value>2</value><value>3</value></field><field var='c'><value>4</value></field><field var='d'><value>5</value></field>` +
		`<field var='e'><value>6</value></field><field var='f'><value>7</value></field><field var='g'><value>8</value></field><field var='h'><value>9</value></field></x>` +
		`<x xmlns='jabber:x:data'><field var='i'><value>10</value></field></x></notification></item>` +
		`<item><notification xmlns='urn:xmpp:push:0'><x xmlns='jabber:x:data'><field var='j'><value>11</value></field></x></notification></item></publish>` +
		`<publish-options><x xmlns='jabber:x:data'><field var='secret'><value>s</value></field></x></publish-options></pubsub></iq>`,
	// Broken XML inside the payload.
	`<iq><pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node='n'><item></publish></pubsub></iq>`,
	`<iq><pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node='n'><item><notification xmlns='urn:xmpp:push:0'><x xmlns='jabber:x:data'><field var='a'><value>&bogus;</value></field></x></notification></item></publish></pubsub></iq>`,
}

func TestWalkMatchesReflection(t *testing.T) {
	for _, c := range walkCases {
		checkSame(t, c)
	}
	// And the walk really is what decodes a PubSub.
	walk, _, err, _ := decodeBoth(prosodyPublish)
	if err != nil || walk.Publish == nil || walk.Publish.Node != "NODE" || len(walk.Publish.Items) != 1 {
		t.Fatalf("%+v, %v", walk, err)
	}
}

// Directly decoding something that is not a pubsub element fails, as it
// does by reflection.
func TestWalkWrongElement(t *testing.T) {
	for _, s := range []string{`<x/>`, `<pubsub/>`, `<pubsub xmlns='urn:other'/>`} {
		var w xep0357.PubSub
		var r reflectPubSub
		werr, rerr := xml.Unmarshal([]byte(s), &w), xml.Unmarshal([]byte(s), &r)
		if werr == nil || rerr == nil {
			t.Errorf("%s: walk %v, reflection %v", s, werr, rerr)
		}
	}
}

func FuzzWalkMatchesReflection(f *testing.F) {
	for _, c := range walkCases {
		f.Add(c)
	}
	f.Fuzz(func(t *testing.T, stanza string) {
		// The walk keeps at most 8 KiB of a text, 64 fields of a
		// form, 64 values of a field and 16 items (see maxValue and
		// the rest), where reflection keeps everything.
		if len(stanza) > 8<<10 || strings.Count(stanza, "field") > 64 || strings.Count(stanza, "value") > 64 || strings.Count(stanza, "item") > 16 {
			return
		}
		checkSame(t, stanza)
	})
}

func BenchmarkParseReflection(b *testing.B) {
	data := []byte(prosodyPublish)
	for b.Loop() {
		var v struct {
			PubSub *reflectPubSub `xml:"http://jabber.org/protocol/pubsub pubsub"`
		}
		if err := xml.Unmarshal(data, &v); err != nil {
			b.Fatal(err)
		}
		if _, err := xep0357.Parse((*xep0357.PubSub)(v.PubSub)); err != nil {
			b.Fatal(err)
		}
	}
}

// A Memory serves one walk: a second walk given it takes memory of its
// own, leaving the first one's tree as it was.
func TestWalkInMemoryServesOnce(t *testing.T) {
	walkIn := func(stanza string, mem *xep0357.Memory) *xep0357.PubSub {
		t.Helper()
		d := xml.NewDecoder(strings.NewReader(stanza))
		var st xml.StartElement
		for st.Name.Local != "pubsub" {
			tok, err := d.Token()
			if err != nil {
				t.Fatal(err)
			}
			st, _ = tok.(xml.StartElement)
		}
		ps := new(xep0357.PubSub)
		if err := ps.WalkIn(&xmlwalk.Decoder{Decoder: d}, &xmlwalk.Token{Kind: xmlwalk.StartElement, Name: st.Name, Attr: st.Attr}, mem); err != nil {
			t.Fatal(err)
		}
		return ps
	}
	first, second := prosodyPublish, strings.Replace(prosodyPublish, "<publish node='", "<publish node='other-", 1)
	mem := new(xep0357.Memory)
	a := walkIn(first, mem)
	want := dump(a)
	b := walkIn(second, mem)
	if got := dump(a); got != want {
		t.Fatalf("the first walk's tree changed with the second:\n was %s\n now %s", want, got)
	}
	if a.Publish.Node == b.Publish.Node || b.Publish.Node == "" {
		t.Fatalf("nodes %q and %q", a.Publish.Node, b.Publish.Node)
	}
}

// TestWalkKeepsLittleOfALargeTree: a publish may be far larger than a
// push uses of it (a long message's whole body), and the component reads
// it rather than drop its stream. The walk keeps a few KiB of it, and
// Parse answers as it would for the whole tree.
func TestWalkKeepsLittleOfALargeTree(t *testing.T) {
	field := func(v, value string) string {
		return `<field var='` + v + `'><value>` + value + `</value></field>`
	}
	form := func(typ string, fields ...string) string {
		return `<x xmlns='jabber:x:data' type='submit'>` + field("FORM_TYPE", typ) + strings.Join(fields, "") + `</x>`
	}
	tree := func(node, note, options string) string {
		return `<pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node='` + node + `'><item><notification xmlns='urn:xmpp:push:0'>` + note +
			`</notification></item></publish><publish-options>` + options + `</publish-options></pubsub>`
	}
	secret := form(xep0357.FormPublish, field("secret", "s3cr3t"))
	long := strings.Repeat("é", 100<<10)
	many := strings.Repeat(field("x-filler", "abc"), 1000)
	values := `<field var='x-values'>` + strings.Repeat(`<value>v</value>`, 1000) + `</field>`
	for _, tc := range []struct {
		name, tree string
		body       int    // bytes of the summary's body; -1: a body cut anyhow
		err        string // of Parse, "" for none
	}{
		{"long body", tree("n", form(xep0357.FormSummary, field("last-message-body", long), field("last-message-sender", long)), secret), 4096, ""},
		{"many fields", tree("n", form(xep0357.FormSummary, field("last-message-body", "hi"), many, values), secret), 2, ""},
		{"many long fields", tree("n", form(xep0357.FormSummary, strings.Repeat(field("x-filler", long[:20<<10]), 20), field("last-message-body", "hi")), secret), -1, ""},
		{"long secret", tree("n", "", form(xep0357.FormPublish, field("secret", long))), 0, "secret too long"},
		{"long node", tree(strings.Repeat("n", 100<<10), "", secret), 0, "node too long"},
		{"long encrypted payload", tree("n", `<encrypted xmlns='tigase:push:encrypt:0' iv='aXY='>`+strings.Repeat("QUFB", 20<<10)+`</encrypted>`, secret), 0, "too large"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var ps xep0357.PubSub
			if err := xml.Unmarshal([]byte(tc.tree), &ps); err != nil {
				t.Fatal(err)
			}
			kept := len(ps.Publish.Node)
			for _, it := range ps.Publish.Items {
				if n := it.Notification; n != nil {
					if n.Encrypted != nil {
						kept += len(n.Encrypted.Payload)
					}
					if n.Form != nil {
						if len(n.Form.Fields) > 64 {
							t.Errorf("%d fields kept", len(n.Form.Fields))
						}
						for _, f := range n.Form.Fields {
							if len(f.Values) > 64 {
								t.Errorf("%d values kept of %s", len(f.Values), f.Var)
							}
							for _, v := range f.Values {
								kept += len(v)
							}
						}
					}
				}
			}
			if kept > 64<<10 {
				t.Errorf("%d bytes of text kept", kept)
			}
			r, err := xep0357.Parse(&ps)
			switch {
			case tc.err == "" && err != nil:
				t.Fatal(err)
			case tc.err != "":
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("Parse = %v, want %q", err, tc.err)
				}
				return
			}
			if r.Secret != "s3cr3t" {
				t.Errorf("secret %q", r.Secret)
			}
			if s := r.Summary; tc.body >= 0 && (s == nil || len(s.LastMessageBody) != tc.body || !strings.HasPrefix(long, s.LastMessageBody) && s.LastMessageBody != "hi") {
				t.Errorf("summary %+v, want a body of %d bytes", s, tc.body)
			}
		})
	}
}

// TestWalkKeepsLittleOfLongAttributes: the bounds on what a walk keeps
// (TestWalkKeepsLittleOfALargeTree) cover texts only. A field's var and
// type, and an encrypted payload's iv and type, are kept whole, so a
// publish of the 16x MaxStanza the component now reads is kept nearly
// whole while its push is under way, and it still pushes (the summary
// skips fields it does not know).
func TestWalkKeepsLittleOfLongAttributes(t *testing.T) {
	long := strings.Repeat("v", 8000)
	var fields strings.Builder
	for i := range 60 {
		fields.WriteString(`<field var='x-` + string(rune('a'+i%26)) + long + `' type='` + long + `'/>`)
	}
	tree := `<pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node='n'><item><notification xmlns='urn:xmpp:push:0'>` +
		`<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE'><value>urn:xmpp:push:summary</value></field>` +
		`<field var='last-message-body'><value>hi</value></field>` + fields.String() + `</x>` +
		`</notification></item></publish><publish-options><x xmlns='jabber:x:data' type='submit'>` +
		`<field var='FORM_TYPE'><value>http://jabber.org/protocol/pubsub#publish-options</value></field>` +
		`<field var='secret'><value>s3cr3t</value></field></x></publish-options></pubsub>`
	var ps xep0357.PubSub
	if err := xml.Unmarshal([]byte(tree), &ps); err != nil {
		t.Fatal(err)
	}
	if _, err := xep0357.Parse(&ps); err != nil {
		t.Fatalf("Parse: %v", err)
	}
	if kept := retained.StringBytes(&ps); kept > 64<<10 {
		t.Errorf("%d bytes kept of a %d-byte publish that pushes; want at most 64 KiB", kept, len(tree))
	}
}

// The walk's budgets are "above what Parse takes, so it answers as it
// would for the whole tree": but the publish options' 16 KiB are shared
// by every field, and options Parse accepts (each under 4 KiB, the 17th
// on not even looked at) spend it before the secret. The secret is then
// cut or not kept, and a publish the whole tree pushes is refused.
func TestWalkOptionsDoNotCrowdOutTheSecret(t *testing.T) {
	var opts strings.Builder
	for i := range 20 {
		opts.WriteString(`<field var='opt` + string(rune('a'+i)) + `'><value>` + strings.Repeat("o", 900) + `</value></field>`)
	}
	stanza := `<iq><pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node='n'/><publish-options><x xmlns='jabber:x:data' type='submit'>` +
		`<field var='FORM_TYPE'><value>http://jabber.org/protocol/pubsub#publish-options</value></field>` + opts.String() +
		`<field var='secret'><value>s3cr3t</value></field></x></publish-options></pubsub></iq>`
	walk, refl, werr, rerr := decodeBoth(stanza)
	if werr != nil || rerr != nil {
		t.Fatal(werr, rerr)
	}
	wr, werr := xep0357.Parse(walk)
	rr, rerr := xep0357.Parse(refl)
	if rerr != nil {
		t.Fatalf("setup: the whole tree does not parse: %v", rerr)
	}
	if werr != nil || wr.Secret != rr.Secret {
		t.Fatalf("walk: secret %q, %v; the whole tree: secret %q", wr.Secret, werr, rr.Secret)
	}
}

// The walk's budget for the notifications' texts is shared by the summary
// form and the encrypted payload: a summary that spends it (its fields
// each under what Parse takes) leaves the encrypted payload that follows
// cut, and a payload that is cut where base64 allows goes on as a shorter
// ciphertext the device cannot decrypt, where the whole tree pushes it
// whole.
func TestWalkEncryptedPayloadNotCrowdedOut(t *testing.T) {
	payload := strings.Repeat("QUFB", 3000) // 12,000 bytes, under maxEncrypted
	for pad := 0; pad < 4; pad++ {
		walk, refl, werr, rerr := decodeBoth(encryptedAfterSummary(pad, "aXZpdml2aXZpdml2", payload))
		if werr != nil || rerr != nil {
			t.Fatal(werr, rerr)
		}
		rr, rerr := xep0357.Parse(refl)
		if rerr != nil || rr.Encrypted == nil || rr.Encrypted.Payload != payload {
			t.Fatalf("setup: the whole tree: %+v, %v", rr.Encrypted, rerr)
		}
		wr, werr := xep0357.Parse(walk)
		if werr != nil || wr.Encrypted == nil || wr.Encrypted.Payload != payload {
			got := -1
			if wr.Encrypted != nil {
				got = len(wr.Encrypted.Payload)
			}
			t.Errorf("pad %d: walk: %d-byte payload, %v; the whole tree: the %d-byte payload", pad, got, werr, len(payload))
		}
	}
}

// As TestWalkEncryptedPayloadNotCrowdedOut, for the IV: a summary that
// leaves less of the budget than the IV takes cuts the IV, and an IV cut
// to a multiple of 4 still passes as base64, so the push goes out with
// the whole ciphertext and a wrong IV, which the whole tree does not do.
func TestWalkEncryptedIVNotCrowdedOut(t *testing.T) {
	payload := strings.Repeat("QUFB", 300)
	const iv = "aXZpdml2aXZpdml2"
	bad := 0
	for pad := 8356; pad < 8372; pad++ {
		walk, refl, werr, rerr := decodeBoth(encryptedAfterSummary(pad, iv, payload))
		if werr != nil || rerr != nil {
			t.Fatal(werr, rerr)
		}
		rr, rerr := xep0357.Parse(refl)
		if rerr != nil || rr.Encrypted == nil || rr.Encrypted.IV != iv {
			continue
		}
		wr, werr := xep0357.Parse(walk)
		if werr == nil && wr.Encrypted != nil && wr.Encrypted.IV != iv {
			t.Errorf("pad %d: walk pushes IV %q and the whole %d-byte payload; the whole tree pushes IV %q", pad, wr.Encrypted.IV, len(wr.Encrypted.Payload), iv)
			if bad++; bad > 3 {
				return
			}
		}
	}
}

// encryptedAfterSummary is a publish whose notification holds a summary
// form of about 40 KB, and pad bytes more in fields of at most 4,000
// (each under what Parse takes), before an encrypted payload.
func encryptedAfterSummary(pad int, iv, payload string) string {
	var fields strings.Builder
	for i := range 5 {
		fields.WriteString(`<field var='x-` + string(rune('a'+i)) + `'><value>` + strings.Repeat("f", 8000) + `</value></field>`)
	}
	fields.WriteString(`<field var='x-pad'><value>` + strings.Repeat("p", pad%4000) + `</value></field>`)
	fields.WriteString(strings.Repeat(`<field var='x-q'><value>`+strings.Repeat("q", 4000)+`</value></field>`, pad/4000))
	return `<iq><pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node='n'><item><notification xmlns='urn:xmpp:push:0'>` +
		`<x xmlns='jabber:x:data' type='form'><field var='FORM_TYPE'><value>urn:xmpp:push:summary</value></field>` + fields.String() + `</x>` +
		`<encrypted xmlns='tigase:push:encrypt:0' iv='` + iv + `'>` + payload + `</encrypted>` +
		`</notification></item></publish><publish-options><x xmlns='jabber:x:data' type='submit'>` +
		`<field var='FORM_TYPE'><value>http://jabber.org/protocol/pubsub#publish-options</value></field>` +
		`<field var='secret'><value>s3cr3t</value></field></x></publish-options></pubsub></iq>`
}
