package component

import (
	"encoding/xml"
	"fmt"
	"io"
	"reflect"
	"strings"
	"testing"

	"github.com/push-appserver/push-appserver/internal/xmpp/xmlwalk"
)

// decoderTokens reads every token of the decoder up to the first error,
// as encoding/xml tokens; eof says whether that error was the input's end.
func decoderTokens(d *decoder) (toks []xml.Token, eof bool, err error) {
	for len(toks) < 10000 {
		t, err := d.Next()
		if err != nil {
			return toks, err == io.EOF, err
		}
		switch t.Kind {
		case xmlwalk.StartElement:
			toks = append(toks, xml.StartElement{Name: t.Name, Attr: append([]xml.Attr{}, t.Attr...)})
		case xmlwalk.EndElement:
			toks = append(toks, xml.EndElement{Name: t.Name})
		case xmlwalk.CharData:
			toks = append(toks, xml.CharData(append([]byte{}, t.Text...)))
		default:
			panic("unknown kind")
		}
	}
	return toks, false, nil
}

// compareDecoder holds the decoder to encoding/xml's name-space and
// nesting layer over the same lexer.
func compareDecoder(t *testing.T, data []byte, chunk int) {
	t.Helper()
	want, wantEOF := tokens(lexerOver(data, chunk))
	got, gotEOF, err := decoderTokens(newDecoder(lexerOver(data, chunk)))
	if err == errTooManyBindings && len(got) <= len(want) {
		// Where the decoder stops on purpose, encoding/xml goes on.
		want, wantEOF = want[:len(got)], false
	}
	if !reflect.DeepEqual(got, want) || gotEOF != wantEOF {
		t.Fatalf("input %q (reads of %d bytes):\n decoder:      %#v (ended at EOF: %t)\n encoding/xml: %#v (ended at EOF: %t)", data, chunk, got, gotEOF, want, wantEOF)
	}
}

var decoderCases = []string{
	`<a xmlns='u'><b/><p:c xmlns:p='v' p:x='1' y='2'/><p:d/></a>`,
	`<a xmlns:p='v'><p:b xmlns:p='w'><p:c/></p:b><p:d/></a>`,
	`<a xmlns='u'><b xmlns=''><c/></b><d/></a>`,
	`<xml:a xml:lang='en'/>`, `<xmlns/>`, `<xmlns:a/>`, `<a xmlns:xmlns='x' xmlns:xml='y'><xml:b/></a>`,
	`<q:a/>`, `<a q:b='1'/>`, `<a xmlns='u' xmlns='v'/>`, `<a xmlns:p='u' xmlns:p='v'><p:b/></a>`,
	`<p:a xmlns:p='u'></a>`, `<p:a xmlns:p='u'></q:a>`, `<a></p:a>`, `<a><b></a></b>`,
	`</a>`, `<a>`, `<a><b>`, `<a/></a>`, `<a>text<b>more</b>tail</a>`,
	`<p:a xmlns:p='u'><x/></p:a><p:b/>`,
	"<stream:stream xmlns:stream='http://etherx.jabber.org/streams' xmlns='jabber:component:accept'><iq/><stream:error/></stream:stream>",
	// End tags the lexer takes without reading their names, and those
	// that only look like them.
	`<a></ab>`, `<ab></a>`, `<a></a >`, "<a></a\n>", `<a></a/>`, `<a></a`, `<a></`, `<a><b></b><c/></a>`,
	`<a xmlns='u'><a></a></a>`, `<a:b xmlns:a='u'><b></b></a:b>`, `<:a></:a>`, `<a:></a:>`,
}

// Name-space declarations in scope are bounded; siblings' do not add up.
func TestTooManyBindings(t *testing.T) {
	nested := func(n int) string {
		return strings.Repeat("<a xmlns:p='u'>", n) + strings.Repeat("</a>", n)
	}
	siblings := "<a>" + strings.Repeat("<b xmlns:p='u' xmlns:q='v'/>", 100) + "</a>"
	for _, tt := range []struct {
		in   string
		fail bool
	}{{nested(64), false}, {nested(65), true}, {siblings, false}} {
		_, _, err := decoderTokens(newDecoder(lexerOver([]byte(tt.in), 4096)))
		if (err == errTooManyBindings) != tt.fail {
			t.Errorf("%.40q...: %v", tt.in, err)
		}
	}
}

func TestDecoderMatchesEncodingXML(t *testing.T) {
	for _, cases := range [][]string{decoderCases, lexerCases, iqWalkCases} {
		for _, c := range cases {
			for _, chunk := range []int{1, 3, 4096} {
				compareDecoder(t, []byte(c), chunk)
			}
		}
	}
}

func FuzzDecoder(f *testing.F) {
	for _, cases := range [][]string{decoderCases, lexerCases, iqWalkCases} {
		for _, c := range cases {
			f.Add([]byte(c), uint8(3))
		}
	}
	f.Fuzz(func(t *testing.T, data []byte, chunk uint8) {
		compareDecoder(t, data, int(chunk))
	})
}

// The stream's error says what went wrong: its condition and its text.
func TestStreamErrorSaysWhy(t *testing.T) {
	for in, want := range map[string]string{
		"<stream:error><conflict xmlns='urn:ietf:params:xml:ns:xmpp-streams'/><text xmlns='urn:ietf:params:xml:ns:xmpp-streams'>Replaced by new connection</text></stream:error>":      `stream error from server: conflict ("Replaced by new connection")`,
		"<stream:error><text xmlns='urn:ietf:params:xml:ns:xmpp-streams'>x</text><host-unknown xmlns='urn:ietf:params:xml:ns:xmpp-streams'/><app xmlns='urn:example'/></stream:error>": `stream error from server: host-unknown ("x")`,
		"<stream:error/>": "stream error from server: undefined-condition",
		"<stream:error><conflict xmlns='urn:ietf:params:xml:ns:xmpp-streams'></stream:error>": "stream error from server, unreadable: XML syntax error: element <conflict> closed by </error>",
	} {
		sc := newStreamConn(&limitReader{Conn: &chunkConn{data: []byte(in), err: io.EOF, chunk: 5}})
		sc.limitReader.limit.Store(1 << 20)
		d, err := stanzaDecoder(sc)
		if err != nil {
			t.Fatal(err)
		}
		start, err := d.Next()
		if err != nil || start.Name.Space != nsStream || start.Name.Local != "error" {
			t.Fatalf("%s: first token %+v, %v", in, start, err)
		}
		if got := readStreamError(d, start); got == nil || !strings.HasPrefix(got.Error(), want) {
			t.Errorf("%s:\n got  %v\n want %s", in, got, want)
		}
	}
}

// A subtree ends with its element: what follows stays in the stream.
func TestSubtreeEndsWithItsElement(t *testing.T) {
	d := newDecoder(lexerOver([]byte(`<a xmlns='u' xmlns:p='v'><b p:x='1'><c/>t</b><next/></a>`), 2))
	for range 2 {
		if _, err := d.Next(); err != nil {
			t.Fatal(err)
		}
	}
	// d's last token was <b>: hand it and what it holds to a subtree.
	s := &subtree{d: d, start: &xml.StartElement{Name: xml.Name{Space: "u", Local: "b"}, Attr: []xml.Attr{{Name: xml.Name{Local: "xmlns"}, Value: "u"}, {Name: xml.Name{Space: "v", Local: "x"}, Value: "1"}}}}
	got, eof := tokens(s)
	want := []xml.Token{
		xml.StartElement{Name: xml.Name{Space: "u", Local: "b"}, Attr: []xml.Attr{{Name: xml.Name{Space: "v", Local: "x"}, Value: "1"}}},
		xml.StartElement{Name: xml.Name{Space: "u", Local: "c"}, Attr: []xml.Attr{}},
		xml.EndElement{Name: xml.Name{Space: "u", Local: "c"}},
		xml.CharData("t"),
		xml.EndElement{Name: xml.Name{Space: "u", Local: "b"}},
	}
	if !eof || !reflect.DeepEqual(got, want) {
		t.Fatalf("subtree gave %#v (EOF %t), want %#v", got, eof, want)
	}
	if next, err := d.Next(); err != nil || next.Name.Local != "next" {
		t.Fatalf("after the subtree: %+v, %v; want <next/>", next, err)
	}
}

// Reading a stanza's tokens, through the walks' helpers as a push's walk
// does, allocates nothing once the decoder's stacks have grown: the
// decoder hands out a token of its own rather than a new one each time.
func TestWalkReadsWithoutAllocating(t *testing.T) {
	const stanza = `<a xmlns='u'><b>text</b> <c><d/></c></a>`
	const runs = 100
	d := newDecoder(lexerOver([]byte("<stream>"+strings.Repeat(stanza, runs+2)), 4096))
	if _, err := d.Next(); err != nil { // <stream>
		t.Fatal(err)
	}
	// One stanza, as a walk reads it: its start, a child's text, a
	// child skipped, its end.
	stanzaRead := func() error {
		if a, err := d.Next(); err != nil || a.Name.Local != "a" {
			return fmt.Errorf("%+v, %v; want <a>", a, err)
		}
		if b, _, err := xmlwalk.Child(d); err != nil || b.Name.Local != "b" {
			return fmt.Errorf("%+v, %v; want <b>", b, err)
		}
		if text, err := xmlwalk.TextIn(d, nil, "text"); err != nil || text != "text" {
			return fmt.Errorf("text %q, %v", text, err)
		}
		if c, _, err := xmlwalk.Child(d); err != nil || c.Name.Local != "c" {
			return fmt.Errorf("%+v, %v; want <c>", c, err)
		}
		if err := d.Skip(); err != nil {
			return err
		}
		if end, ok, err := xmlwalk.Child(d); ok || err != nil || end.Kind != xmlwalk.EndElement {
			return fmt.Errorf("%+v, %v; want </a>", end, err)
		}
		return nil
	}
	read := func() {
		if err := stanzaRead(); err != nil {
			t.Fatal(err)
		}
	}
	read() // the stacks grow, the names are interned
	if n := testing.AllocsPerRun(runs, read); n != 0 {
		t.Fatalf("%.1f allocations a stanza", n)
	}
}

// A large stanza skipped between small ones leaves no buffer of its size
// behind: shrink lets go of the text and nesting it grew.
func TestDecoderShrinksAfterLargeStanza(t *testing.T) {
	big := "<message><body>" + strings.Repeat("x&amp;", 40<<10) + "</body>" +
		strings.Repeat("<a>", 2000) + strings.Repeat("</a>", 2000) + "</message><iq/>"
	d := newDecoder(lexerOver([]byte("<stream>"+big), 4096))
	if _, err := d.Next(); err != nil { // <stream>
		t.Fatal(err)
	}
	if _, err := d.Next(); err != nil { // <message>
		t.Fatal(err)
	}
	if err := d.Skip(); err != nil {
		t.Fatal(err)
	}
	if cap(d.lx.text) <= 64<<10 || cap(d.open) <= 1024 {
		t.Fatalf("the large stanza grew nothing to let go of: text %d, open %d", cap(d.lx.text), cap(d.open))
	}
	d.shrink()
	if cap(d.lx.text) > 64<<10 || cap(d.open) > 1024 {
		t.Fatalf("after shrink: text %d bytes, nesting %d", cap(d.lx.text), cap(d.open))
	}
	if tok, err := d.Next(); err != nil || tok.Name.Local != "iq" {
		t.Fatalf("the next stanza: %+v, %v", tok, err)
	}
}
