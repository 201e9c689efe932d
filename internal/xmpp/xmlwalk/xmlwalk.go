// Package xmlwalk is what the stanza walks (xep0357's publish, the
// component's IQ) read: XML tokens with their name spaces resolved, as
// encoding/xml's Decoder.Token returns them, but handed over as a plain
// struct. Boxing every token in an xml.Token interface, and the attribute
// slice of every start tag, was a large share of the allocations of a
// push; a Reader may reuse both, and the Token itself: handed over by
// value, its eleven words were copied at every level of a walk (about 5 %
// of a push's instructions), and a pointer to a fresh one would escape.
//
// Decoder adapts an *xml.Decoder, so a walk written once serves both the
// component stream's own reader and encoding/xml (UnmarshalXML, and the
// tests that hold the walks to encoding/xml's reflection).
package xmlwalk

import (
	"encoding/xml"
	"fmt"
	"math"
	"strings"
	"unicode/utf8"
)

// Kind tells the tokens a walk sees apart. Comments, processing
// instructions and directives are not handed to walks: none of them
// means anything inside a stanza.
type Kind uint8

const (
	StartElement Kind = iota + 1
	EndElement
	CharData
)

// Token is one token. Name holds for StartElement and EndElement, Attr
// for StartElement, Text for CharData. A Reader hands out a Token of its
// own, as bufio.Scanner does its bytes: the Token, its Attr slice and its
// Text are valid until the Reader's next call (Next, Skip, or any other
// of its methods), which may overwrite them. The strings in Name and Attr
// are the caller's to keep; anything else kept past that call must be
// copied.
type Token struct {
	Kind Kind
	Name xml.Name
	Attr []xml.Attr
	Text []byte
}

// Reader is a token stream positioned somewhere inside a document.
type Reader interface {
	// Next returns the next token, which is the Reader's and valid
	// until its next call (see Token); nil with an error. An end tag
	// that closes no element, an end tag that does not match its start,
	// and the input ending inside an element are errors, as
	// encoding/xml has them.
	Next() (*Token, error)
	// Skip consumes the rest of the element whose start was the last
	// token returned, up to and including its end.
	Skip() error
}

// Decoder reads an *xml.Decoder as a Reader: &Decoder{Decoder: d}. Its
// Skip and DecodeElement are the decoder's own.
type Decoder struct {
	*xml.Decoder
	tok Token // what Next hands out
}

// Next returns the decoder's next start tag, end tag or text.
func (d *Decoder) Next() (*Token, error) {
	for {
		tok, err := d.Token()
		if err != nil {
			return nil, err
		}
		switch t := tok.(type) {
		case xml.StartElement:
			d.tok = Token{Kind: StartElement, Name: t.Name, Attr: t.Attr}
		case xml.EndElement:
			d.tok = Token{Kind: EndElement, Name: t.Name}
		case xml.CharData:
			d.tok = Token{Kind: CharData, Text: t}
		default:
			continue
		}
		return &d.tok, nil
	}
}

// Child returns the next child element of the element being read, or ok
// false at its end (or on an error). Text between children is passed
// over. The token is r's, as Next's is.
func Child(r Reader) (t *Token, ok bool, err error) {
	for {
		t, err := r.Next()
		if err != nil {
			return t, false, err
		}
		switch t.Kind {
		case StartElement:
			return t, true, nil
		case EndElement:
			return t, false, nil
		}
	}
}

// Text returns the character data directly inside the element just
// started, skipping child elements, and consumes the element.
func Text(r Reader) (string, error) { return TextIn(r, nil) }

// TextIn is Text, but a text equal to one of known comes back as that
// string instead of a copy (a data form's FORM_TYPE, which every push
// carries, costs no allocation), and any other text that fits in buf's
// room (buf not nil), is written to buf without growing it and comes back
// as the part of buf.String() it took:
// the texts of one tree then share an allocation or two, as a
// strings.Builder never changes what it holds. (A text in several pieces
// may leave its first in buf twice.)
func TextIn(r Reader, buf *strings.Builder, known ...string) (string, error) {
	return TextCut(r, buf, math.MaxInt, known...)
}

// TextCut is TextIn keeping at most max bytes of the text, cut where a
// UTF-8 sequence begins: the rest is read and dropped, so that a text
// far longer than anything its reader uses takes no more memory than
// that.
func TextCut(r Reader, buf *strings.Builder, max int, known ...string) (string, error) {
	var s string
	var pieces []byte // only when the text comes in several pieces
	for {
		t, err := r.Next()
		if err != nil {
			return "", err
		}
		switch t.Kind {
		case CharData:
			kept := len(s)
			if pieces != nil {
				kept = len(pieces)
			}
			text := cut(t.Text, max-kept)
			if len(text) < len(t.Text) {
				// Cut short: what follows is not the text's start.
				max = kept + len(text)
			}
			if pieces == nil && s == "" {
				s = among(text, known, buf)
				continue
			}
			if pieces == nil {
				pieces = append([]byte(s), text...)
			} else {
				pieces = append(pieces, text...)
			}
		case StartElement:
			if err := r.Skip(); err != nil {
				return "", err
			}
		case EndElement:
			if pieces != nil {
				return among(cut(pieces, max), known, buf), nil
			}
			return s, nil
		}
	}
}

// cut returns at most max bytes of b, ending before a UTF-8 sequence
// that would not fit whole.
func cut(b []byte, max int) []byte {
	if len(b) <= max {
		return b
	}
	if max <= 0 {
		return nil
	}
	i := max
	for i > 0 && !utf8.RuneStart(b[i]) {
		i--
	}
	return b[:i]
}

// among returns the string of known equal to b, or else b as a new
// string, written to buf if buf has room for it without growing.
func among(b []byte, known []string, buf *strings.Builder) string {
	for _, k := range known {
		if string(b) == k {
			return k
		}
	}
	if buf == nil || len(b) == 0 || len(b) > buf.Cap()-buf.Len() {
		// Only what fits: a growth would copy buf, and the strings
		// already taken of it would keep the old array alive.
		return string(b)
	}
	start := buf.Len()
	buf.Write(b)
	return buf.String()[start:]
}

// Expect fails unless t is the start of local in name space space, with
// the errors encoding/xml's reflection gives for an XMLName of that name.
func Expect(t *Token, space, local string) error {
	if t.Name.Local != local {
		return xml.UnmarshalError("expected element type <" + local + "> but have <" + t.Name.Local + ">")
	}
	if t.Name.Space != space {
		return xml.UnmarshalError(fmt.Sprintf("expected element <%s> in name space %s but have %q", local, space, t.Name.Space))
	}
	return nil
}
