package xmlwalk

import (
	"encoding/xml"
	"strings"
	"testing"
	"unsafe"
)

// start returns a Decoder over doc positioned after its first start tag.
func start(t *testing.T, doc string) *Decoder {
	t.Helper()
	d := &Decoder{Decoder: xml.NewDecoder(strings.NewReader(doc))}
	if tok, err := d.Next(); err != nil || tok.Kind != StartElement {
		t.Fatalf("%s: first token %+v, %v", doc, tok, err)
	}
	return d
}

func TestText(t *testing.T) {
	for doc, want := range map[string]string{
		`<a>one</a>`: "one",
		`<a></a>`:    "",
		`<a>x<b>skipped<c/></b>y<![CDATA[<z>]]></a>`: "xy<z>",
		`<a><!-- c -->x&amp;y</a>`:                   "x&y",
	} {
		got, err := Text(start(t, doc))
		if err != nil || got != want {
			t.Errorf("%s: Text %q, %v; want %q", doc, got, err, want)
		}
	}
	if _, err := Text(start(t, `<a>x<b></a>`)); err == nil {
		t.Error("mismatched end: no error")
	}
}

// TextIn hands back the known string itself for a text equal to it,
// in one piece or several, and a copy of any other.
func TestTextInKnown(t *testing.T) {
	known := []string{"urn:one", "urn:two"}
	for _, tc := range []struct {
		doc, want string
		kept      bool
	}{
		{`<a>urn:two</a>`, "urn:two", true},
		{`<a>urn:<b/>one</a>`, "urn:one", true},
		{`<a>urn:three</a>`, "urn:three", false},
		{`<a>urn:on</a>`, "urn:on", false},
	} {
		got, err := TextIn(start(t, tc.doc), nil, known...)
		if err != nil || got != tc.want {
			t.Fatalf("%s: %q, %v; want %q", tc.doc, got, err, tc.want)
		}
		kept := false
		for _, k := range known {
			kept = kept || unsafe.StringData(got) == unsafe.StringData(k)
		}
		if kept != tc.kept {
			t.Errorf("%s: the known string itself %v, want %v", tc.doc, kept, tc.kept)
		}
	}
}

// TextIn with a buffer gives the texts it gives without, writing those
// it copies to the buffer; a text handed out stays as it was while the
// buffer takes more and grows.
func TestTextIn(t *testing.T) {
	known := []string{"urn:one"}
	var buf strings.Builder
	buf.Grow(32)
	capacity := buf.Cap()
	type text struct{ got, want string }
	var texts []text
	for _, doc := range []string{
		`<a>first</a>`, `<a>urn:one</a>`, `<a></a>`, `<a>x<b>skipped</b>y</a>`, `<a>urn:<b/>one</a>`,
		`<a>` + strings.Repeat("long ", 20) + `</a>`, `<a>&lt;last&gt;</a>`,
	} {
		want, err := TextIn(start(t, doc), nil, known...)
		if err != nil {
			t.Fatal(err)
		}
		got, err := TextIn(start(t, doc), &buf, known...)
		if err != nil || got != want {
			t.Fatalf("%s: %q, %v; want %q", doc, got, err, want)
		}
		texts = append(texts, text{got, want})
	}
	for _, x := range texts {
		if x.got != x.want {
			t.Fatalf("a text became %q, was %q", x.got, x.want)
		}
	}
	if b := buf.String(); !strings.HasPrefix(b, "first") || !strings.HasSuffix(b, "<last>") || strings.Contains(b, "urn:one") {
		t.Fatalf("the buffer holds %q: not the texts copied, or a known one", b)
	}
	if buf.Cap() != capacity {
		t.Fatalf("the buffer grew from %d to %d bytes: the strings taken of it keep each old array", capacity, buf.Cap())
	}
}

func TestChild(t *testing.T) {
	d := start(t, `<a>text<b x='1'/> <c/></a>`)
	var names []string
	for {
		tok, ok, err := Child(d)
		if err != nil {
			t.Fatal(err)
		}
		if !ok {
			break
		}
		names = append(names, tok.Name.Local)
		if err := d.Skip(); err != nil {
			t.Fatal(err)
		}
	}
	if strings.Join(names, ",") != "b,c" {
		t.Fatalf("children %v, want b,c", names)
	}
}

func TestExpect(t *testing.T) {
	tok := &Token{Kind: StartElement, Name: xml.Name{Space: "u", Local: "a"}}
	if err := Expect(tok, "u", "a"); err != nil {
		t.Error(err)
	}
	if err := Expect(tok, "v", "a"); err == nil {
		t.Error("other name space: no error")
	}
	if err := Expect(tok, "u", "b"); err == nil {
		t.Error("other name: no error")
	}
}

// TextCut keeps at most max bytes, never half of a UTF-8 sequence, in
// one piece or several, and consumes the whole element all the same.
func TestTextCut(t *testing.T) {
	for _, tc := range []struct {
		doc  string
		max  int
		want string
	}{
		{`<a>abcdef</a>`, 4, "abcd"},
		{`<a>abc</a>`, 4, "abc"},
		{`<a>abcdef</a>`, 0, ""},
		{`<a>aé</a>`, 2, "a"}, // é is two bytes
		{`<a>aé</a>`, 3, "aé"},
		{`<a>ab<b/>cd<b/>ef</a>`, 3, "abc"},
		{`<a>ab<b/>cd&amp;ef</a>`, 5, "abcd&"},
		{`<a>a<b/>éé</a>`, 4, "aé"},
	} {
		d := start(t, tc.doc+`<next/>`)
		got, err := TextCut(d, nil, tc.max)
		if err != nil || got != tc.want {
			t.Errorf("%s, %d: %q, %v; want %q", tc.doc, tc.max, got, err, tc.want)
		}
	}
}

// What TextCut keeps of a text in several pieces is the start of the
// text: a piece cut short before a UTF-8 sequence ends the text kept, and
// a later piece's first bytes do not fill the room it left.
func TestTextCutKeepsAPrefix(t *testing.T) {
	for _, tc := range []struct {
		doc  string
		max  int
		want string
	}{
		{`<a>abcdé<![CDATA[xyz]]></a>`, 5, "abcd"},
		{`<a>ab<b/>cdé<b/>xyz</a>`, 5, "abcd"},
	} {
		d := start(t, tc.doc+`<next/>`)
		got, err := TextCut(d, nil, tc.max)
		if err != nil || got != tc.want {
			t.Errorf("%s, %d: %q, %v; want %q", tc.doc, tc.max, got, err, tc.want)
		}
	}
}
