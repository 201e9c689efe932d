package component

import (
	"bytes"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"math/rand"
	"reflect"
	"strings"
	"testing"
	"unsafe"

	"github.com/push-appserver/push-appserver/internal/xmpp/xmlwalk"
)

func lexerOver(data []byte, chunk int) *lexer {
	lr := &limitReader{Conn: &chunkConn{data: data, err: io.EOF, chunk: max(chunk, 1)}}
	lr.limit.Store(1 << 30)
	return newLexer(newStreamConn(lr))
}

// reference is encoding/xml's tokenizer with what a stream may not carry
// refused: what the lexer must equal.
type reference struct{ d *xml.Decoder }

func (r reference) Token() (xml.Token, error) {
	tok, err := r.d.RawToken()
	if err != nil {
		return nil, err
	}
	switch tok.(type) {
	case xml.Comment, xml.ProcInst, xml.Directive:
		return nil, errors.New("refused")
	}
	return tok, nil
}

// tokens reads every token through encoding/xml's name-space layer, as
// the component does, up to the first error; eof says whether that error
// was the input's end.
func tokens(r xml.TokenReader) (toks []xml.Token, eof bool) {
	d := xml.NewTokenDecoder(r)
	for len(toks) < 10000 {
		tok, err := d.Token()
		if err != nil {
			return toks, err == io.EOF
		}
		toks = append(toks, xml.CopyToken(tok))
	}
	return toks, false
}

func compareLexer(t *testing.T, data []byte, chunk int) {
	t.Helper()
	want, wantEOF := tokens(reference{xml.NewDecoder(bytes.NewReader(data))})
	got, gotEOF := tokens(lexerOver(data, chunk))
	if !reflect.DeepEqual(got, want) || gotEOF != wantEOF {
		t.Fatalf("input %q (reads of %d bytes):\n lexer:        %#v (ended at EOF: %t)\n encoding/xml: %#v (ended at EOF: %t)", data, chunk, got, gotEOF, want, wantEOF)
	}
}

var lexerCases = []string{
	`<stream:stream xmlns:stream='http://etherx.jabber.org/streams' xmlns='jabber:component:accept'>`,
	`<iq type='set' from='example.org' to='push.example.net' id='a1'><pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node='n'><item><notification xmlns='urn:xmpp:push:0'><x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' type='hidden'><value>urn:xmpp:push:summary</value></field><field var='message-count'><value>1</value></field></x></notification></item></publish></pubsub></iq>`,
	`<a b="1" c='2'/><a b = "x" ></a >`,
	// Between an attribute's name and its value: the quick path and
	// every way off it.
	`<a b='1'c="2" d= '3' e ='4' f=5/>`, `<a b=>`, `<a b='>`, `<a b="x'/>`, `<a b=`, `<a b`, "<a b\t=\n'1'/>", `<a b=x/ c=x/>`,
	`<a b='1'c='2'/>`,
	`<a:b:c/>`, `<:a/>`, `<a:/>`, `<p:a xmlns:p='u' p:x='1'/>`,
	`<a>x &lt;&gt;&amp;&apos;&quot; &#65;&#x42;&#x10FFFF;&#xD800;</a>`,
	`<a>&#X41;</a>`, `<a>&#;</a>`, `<a>&#x;</a>`, `<a>&nbsp;</a>`, `<a>&lt</a>`, `<a>&#1114112;</a>`, `<a>&#0;</a>`, `<a>&99999999999999999999999;</a>`, `<a>& lt;</a>`,
	`<a b='&lt;&#x3C;'/>`, `<a b='x<y'/>`, `<a b='x>y]]>'/>`, `<a b=x/>`, `<a b/>`, `<a b=/>`,
	"<a>line\r\nbreak\rlone\n\r\r\n</a>", "<a b='\r\n\t'/>",
	`<a><![CDATA[<x>&amp;]]]]></a>`, `<a><![CDATA[unterminated`, `<a><![CDAT[x]]></a>`, "<a><![CDATA[a\r\nb]]></a>",
	`<a>x]]>y</a>`, `<a>]]</a>`, `<a>]</a>]>`,
	`<a><!-- c --></a>`, `<?xml version='1.0'?><a/>`, `<!DOCTYPE a><a/>`, `<a><!x></a>`,
	"<a>\x00</a>", "<a>x\x1fy</a>", "<a b='\x11'/>", "<a b=\"\x7f\x01\"/>", "<a>\x7f \xc3\xa9\x02</a>", "<a>\xff</a>", "<a>\xef\xbf\xbe</a>", "<a>é ü 日本</a>", "<é/>", "<a\xcc\x80/>", "<\xcc\x80a/>", "<a é='1'/>",
	`<1a/>`, `<-a/>`, `<.a/>`, `<_a/>`, `<a.b-c_d1/>`,
	`</a>`, `</a b>`, `</ a>`, `<a></b>`, `<a>`, `<a`, `<a b='1`, `<`, `x`, ``, `   `, `<a/><b/>`,
	"</stream:stream>",
	// A value seen before as it stands is taken by comparison alone
	// (knownValue); one that was decoded, or that the stream may not
	// hold as it stands, must still be judged.
	`<a type='x&amp;y'/><a type='x&y'/>`, `<a type='x&lt;y'/><a type='x<y'/>`, "<a type='x&#13;y'/><a type='x\ry'/>",
	`<a type="x'y"/><a type='x'y'/>`, `<a type='x"y'/><a type="x"y"/>`, `<a type='x'/><a type='x`, `<a type='x'/><a type=''/><a type='x'/>`,
	// "xaaay" and "x<a>y" share a slot of the lexer's (same length,
	// first, middle and last byte).
	`<a type='xaaay'/><a type='x&lt;a&gt;y'/><a type='x<a>y'/>`,
	`<field type='field'/><a var='field' xmlns='field'/>`, "<a type='\t\xc3\xa9'/><a type='\t\xc3\xa9'/>", "<a to='\xc3\xa9'/><a to='\xc3'/>",
}

func TestLexerMatchesEncodingXML(t *testing.T) {
	for _, c := range lexerCases {
		for _, chunk := range []int{1, 2, 3, 7, 4096} {
			compareLexer(t, []byte(c), chunk)
		}
	}
	long := "<iq id='" + strings.Repeat("i", 9000) + "'><v>" + strings.Repeat("text&amp;\r\n", 2000) + "</v></iq>"
	compareLexer(t, []byte(long), 4096)
	compareLexer(t, []byte(long), 1000)
}

// The lexer refuses what XMPP forbids in a stream, as the reader did.
func TestLexerRefusesCommentsAndProcessingInstructions(t *testing.T) {
	for _, in := range []string{`<a><!-- c --></a>`, `<a><?pi x?></a>`, `<a><!DOCTYPE a></a>`} {
		toks, eof := tokens(lexerOver([]byte(in), 4096))
		if eof || len(toks) != 1 {
			t.Errorf("%s: %d tokens then EOF %t, want an error after the first", in, len(toks), eof)
		}
	}
}

func FuzzLexer(f *testing.F) {
	for _, c := range lexerCases {
		f.Add([]byte(c), uint8(3))
	}
	f.Fuzz(func(t *testing.T, data []byte, chunk uint8) {
		compareLexer(t, data, int(chunk))
	})
}

// Values that repeat from stanza to stanza are interned: the second IQ's
// share the first's memory, so reading them allocates nothing. Ids do not
// repeat and are not.
func TestLexerInternsRepeatedValues(t *testing.T) {
	iq := `<iq type='set' from='example.org' to='push.example.net' id='%s'/>`
	l := lexerOver([]byte(fmt.Sprintf(iq, "push-1")+fmt.Sprintf(iq, "push-1")), 1<<10)
	var seen []map[string]string
	for range 2 {
		if k, err := l.next(); err != nil || k != xmlwalk.StartElement {
			t.Fatalf("next = %v, %v", k, err)
		}
		vals := map[string]string{}
		for _, a := range l.attr {
			vals[a.Name.Local] = a.Value
		}
		seen = append(seen, vals)
		if k, err := l.next(); err != nil || k != xmlwalk.EndElement {
			t.Fatalf("next = %v, %v", k, err)
		}
	}
	for name, interned := range map[string]bool{"type": true, "from": true, "to": true, "id": false} {
		a, b := seen[0][name], seen[1][name]
		if a != b || a == "" {
			t.Fatalf("%s: %q and %q", name, a, b)
		}
		if shared := unsafe.StringData(a) == unsafe.StringData(b); shared != interned {
			t.Errorf("%s: the two values share memory: %t, want %t", name, shared, interned)
		}
	}
}

// Streams of interned attributes whose values come again, as they stand
// and escaped, in either order: what knownValue takes by comparison must
// be what encoding/xml would take, and what it refuses refused.
func TestLexerRepeatedValuesMatchEncodingXML(t *testing.T) {
	// Each atom as it stands and escaped; some may not stand in a value.
	atoms := [][2]string{
		{"a", "a"}, {"a", "&#x61;"}, {":", ":"}, {"\xc3\xa9", "&#233;"}, {"&", "&amp;"}, {"<", "&lt;"}, {">", "&gt;"},
		{"'", "&apos;"}, {"\"", "&quot;"}, {"\r", "&#13;"}, {"\n", "&#10;"}, {"\t", "&#9;"}, {"\x01", "&#1;"}, {"\xc3", "\xc3"},
	}
	names := []string{"type", "var", "to", "from", "xmlns", "xmlns:a", "id"}
	rng := rand.New(rand.NewSource(1))
	for range 3000 {
		var vals [2][][2]string
		for i := range vals {
			for range 1 + rng.Intn(3) {
				vals[i] = append(vals[i], atoms[rng.Intn(len(atoms))])
			}
		}
		var s strings.Builder
		for range 1 + rng.Intn(6) {
			q := "'"
			if rng.Intn(2) == 0 {
				q = "\""
			}
			s.WriteString("<a " + names[rng.Intn(len(names))] + "=" + q)
			form := rng.Intn(2)
			for _, a := range vals[rng.Intn(len(vals))] {
				s.WriteString(a[form])
			}
			s.WriteString(q + "/>")
		}
		data := []byte(s.String())
		for _, chunk := range []int{1, 3, 4096} {
			compareLexer(t, data, chunk)
			compareDecoder(t, append([]byte("<r xmlns=\"u\" xmlns:a=\"v\">"), data...), chunk)
		}
	}
}
