package component

import (
	"encoding/xml"
	"errors"
	"io"
	"strconv"

	"github.com/push-appserver/push-appserver/internal/xmpp/xmlwalk"
)

// xmlURL is the name space the prefix xml is bound to by definition.
const xmlURL = "http://www.w3.org/XML/1998/namespace"

// decoder reads the stanzas of a stream: the lexer's raw tokens with name
// spaces resolved and nesting checked, the tokens encoding/xml's
// Decoder.Token would give over the same lexer (FuzzDecoder holds it to
// that), but as an xmlwalk.Reader. encoding/xml's decoder boxed every
// token in an interface a second time and kept a record per element on
// the heap; this one allocates nothing per token once its stacks have
// grown.
type decoder struct {
	lx  *lexer
	err error // sticky

	// ns holds the bindings of the open elements, innermost last: a
	// prefix ("" for the default) is bound to the space of its last
	// entry. A stanza is a few levels deep and binds a few prefixes, so
	// searching this beats a map, which also had to be undone entry by
	// entry at each end.
	ns   []binding
	open []openElement

	// skipping says skipStanza reads: elements are nested, their
	// bindings and names not resolved.
	skipping bool

	// tok is the token Next hands out, overwritten by the next: a Token
	// returned by value was copied at every level of the walks, and a
	// new one each time would be an allocation. Next sets its fields one
	// by one: a struct literal assigned to it is zeroed whole first,
	// which cost a publish IQ some 500 instructions.
	tok xmlwalk.Token
}

// maxBindings bounds the name-space declarations in scope at once, and
// with it the search for a prefix: far more than XMPP ever nests (a
// stanza has a handful), and without it a peer could make every name's
// lookup as long as its stanza.
const maxBindings = 64

// errTooManyBindings is Next's answer to an element that declares more
// than maxBindings in scope. Like errStanzaTooLarge it is not sticky:
// skipStanza reads the rest of the stanza.
var errTooManyBindings error = syntaxError("more than " + strconv.Itoa(maxBindings) + " name-space declarations in scope")

// errStanzaTooLarge is Next's answer once the stanza being read has
// taken more than the decoder's bound. Unlike the stream's errors it
// is not sticky: skipStanza reads the rest of the stanza, and the
// stream goes on.
var errStanzaTooLarge = errors.New("stanza too large")

// binding binds prefix to space.
type binding struct {
	prefix, space string
}

// openElement is an element whose end is still to come. Its raw name,
// as written, is prefix and name.Local: resolving a name changes only
// its space. Seven words, not nine: every element of a stanza is pushed
// here and popped.
type openElement struct {
	name   xml.Name // resolved
	prefix string   // as written
	bound  int      // len(decoder.ns) before its bindings
}

func newDecoder(lx *lexer) *decoder {
	return &decoder{lx: lx}
}

// shrink lets go of buffers a large stanza grew (its text, its nesting)
// past what stanzas need, between stanzas, so that one large message does
// not hold its size for the rest of the connection.
func (d *decoder) shrink() {
	if cap(d.lx.text) > 64<<10 {
		d.lx.text = make([]byte, 0, 512)
	}
	if cap(d.open) > 1024 {
		// Between stanzas only the stream's element is open: it
		// stays, since skipStanza and the bound count the stanza's
		// elements above it.
		d.open = append(make([]openElement, 0, len(d.open)), d.open...)
	}
	if cap(d.ns) > 1024 {
		d.ns = nil
	}
	// An element's attributes: a stanza's have a few, one of a message
	// may have as many as its size allows, and the slice's spare room
	// would keep their values alive too.
	if cap(d.lx.attr) > 64 {
		d.lx.attr = nil
		d.tok.Attr = nil
	}
}

// Next returns the next token, d's own until its next call (see
// xmlwalk.Token), or errStanzaTooLarge once the stanza it is in has
// taken more than d's bound.
func (d *decoder) Next() (*xmlwalk.Token, error) {
	if d.lx.c.over && len(d.open) > 1 {
		return nil, errStanzaTooLarge
	}
	return d.next()
}

// skipStanza reads the rest of the stanza being read, whatever its
// size, keeping nothing of it: what the decoder holds is its nesting and
// the token at hand. The XMPP server writes a stanza in its own
// serialization, which may be far larger than what its sender wrote:
// Prosody and ejabberd write an element's name space on each element
// whose parent's differs, so a prefix bound once to a long name space
// and used by many empty children (<p:a/>) is a message of 37 KB from
// any user and 6 MB on the stream, and grows with the square of the
// sender's size. No bound on the stream's stanzas is safe from that:
// one a stanza passes ended the stream, and the server answered the
// pushes of every user with errors until the component was back.
func (d *decoder) skipStanza() error {
	d.skipping = true
	defer func() { d.skipping = false }()
	for len(d.open) > 1 {
		if _, err := d.next(); err != nil {
			return err
		}
	}
	return nil
}

// setBound bounds what d keeps of a stanza: past bound bytes of the
// stream read since the stanza began (streamConn.newStanza), d hands out
// no more of it (see Next).
func (d *decoder) setBound(bound int64) { d.lx.c.bound = bound }

// next is Next without the bound.
func (d *decoder) next() (*xmlwalk.Token, error) {
	if d.err != nil {
		return nil, d.err
	}
	k, err := d.lx.next()
	if err != nil {
		if err == io.EOF && len(d.open) > 0 {
			err = syntaxError("unexpected EOF")
		}
		d.err = err
		return nil, err
	}
	switch k {
	case xmlwalk.StartElement:
		// Bindings first: they apply to the element's own name and
		// attributes.
		mark := len(d.ns)
		attr := d.lx.attr
		if d.skipping {
			// Nothing of the element is looked at: its nesting is
			// all skipStanza needs.
			d.open = append(d.open, openElement{name: d.lx.elem, prefix: d.lx.elem.Space, bound: mark})
			d.expectEnd()
			t := &d.tok
			t.Kind, t.Name, t.Attr, t.Text = k, d.lx.elem, nil, nil
			return t, nil
		}
		if d.lx.cut {
			// The lexer kept only part of a start tag past the
			// stanza's bound: the element is opened without its
			// bindings, as for too many of them, and the stanza
			// cut there.
			d.open = append(d.open, openElement{name: d.lx.elem, prefix: d.lx.elem.Space, bound: mark})
			d.expectEnd()
			return nil, errStanzaTooLarge
		}
		if d.lx.binds {
			for i := range attr {
				switch a := &attr[i]; {
				case a.Name.Space == "xmlns":
					d.bind(a.Name.Local, a.Value)
				case a.Name.Space == "" && a.Name.Local == "xmlns":
					d.bind("", a.Value)
				}
			}
			if len(d.ns) > maxBindings {
				// Refused, not fatal: the element is opened without
				// its bindings, so that skipStanza can read the
				// stanza to its end. Prosody writes each prefixed
				// attribute with a declaration of its own
				// (xmlns:ns1='u' ns1:a=''), so a user's message of
				// a kilobyte carries more than maxBindings.
				clear(d.ns[mark:])
				d.ns = d.ns[:mark]
				d.open = append(d.open, openElement{name: d.lx.elem, prefix: d.lx.elem.Space, bound: mark})
				d.expectEnd()
				return nil, errTooManyBindings
			}
		}
		name := d.lx.elem
		if name.Space == "" && name.Local != "xmlns" {
			// translate's way for the many names without a prefix,
			// small enough to be inlined here.
			name.Space = d.defaultSpace()
		} else {
			name = d.translate(name, true)
		}
		d.open = append(d.open, openElement{name: name, prefix: d.lx.elem.Space, bound: mark})
		d.expectEnd()
		// An attribute without a prefix, or with xmlns, keeps its raw
		// name (see translate).
		if d.lx.prefixed {
			for i := range attr {
				attr[i].Name = d.translate(attr[i].Name, false)
			}
		}
		t := &d.tok
		t.Kind, t.Name, t.Attr, t.Text = k, name, attr, nil
		return t, nil
	case xmlwalk.EndElement:
		name := d.lx.elem
		if len(d.open) == 0 {
			d.err = syntaxError("unexpected end element </" + name.Local + ">")
			return nil, d.err
		}
		e := &d.open[len(d.open)-1]
		switch {
		case d.lx.closed:
			// The lexer matched it to e already.
		case e.name.Local != name.Local:
			d.err = syntaxError("element <" + e.name.Local + "> closed by </" + name.Local + ">")
			return nil, d.err
		case e.prefix != name.Space:
			space := name.Space
			if space == "" {
				space = `""`
			}
			d.err = syntaxError("element <" + e.name.Local + "> in space " + e.prefix + " closed by </" + name.Local + "> in space " + space)
			return nil, d.err
		}
		// The end's name resolves as its start's did: same raw name,
		// same bindings.
		name, bound := e.name, e.bound
		d.open = d.open[:len(d.open)-1]
		d.expectEnd()
		clear(d.ns[bound:]) // no strings kept alive by dead bindings
		d.ns = d.ns[:bound]
		t := &d.tok
		t.Kind, t.Name, t.Attr, t.Text = k, name, nil, nil
		return t, nil
	}
	t := &d.tok
	t.Kind, t.Name, t.Attr, t.Text = k, xml.Name{}, nil, d.lx.data
	return t, nil
}

// expectEnd tells the lexer the name of the element an end tag would
// close now (see lexer.expect).
func (d *decoder) expectEnd() {
	d.lx.expect = ""
	if n := len(d.open); n > 0 && d.open[n-1].prefix == "" {
		d.lx.expect = d.open[n-1].name.Local
	}
}

func (d *decoder) bind(prefix, space string) {
	d.ns = append(d.ns, binding{prefix: prefix, space: space})
}

// defaultSpace returns the space the default prefix is bound to, ""
// when it is bound to none. Most names are in the default name space.
// Against the constant "" a comparison is a length check; two strings of
// equal length are compared by a call into the runtime.
func (d *decoder) defaultSpace() string {
	for i := len(d.ns) - 1; i >= 0; i-- {
		if d.ns[i].prefix == "" {
			return d.ns[i].space
		}
	}
	return ""
}

// lookup returns the space prefix is bound to, if it is.
func (d *decoder) lookup(prefix string) (string, bool) {
	for i := len(d.ns) - 1; i >= 0; i-- {
		if d.ns[i].prefix == prefix {
			return d.ns[i].space, true
		}
	}
	return "", false
}

// translate resolves a raw name by encoding/xml's rules, quirks
// included: an unbound prefix stays as the name space, an unprefixed
// attribute has none, and neither do xmlns attributes or an element
// named xmlns.
func (d *decoder) translate(n xml.Name, element bool) xml.Name {
	switch {
	case n.Space == "xmlns":
		return n
	case n.Space == "" && !element:
		return n
	case n.Space == "xml":
		n.Space = xmlURL
	case n.Space == "" && n.Local == "xmlns":
		return n
	case n.Space == "":
		n.Space = d.defaultSpace()
		return n
	}
	if v, ok := d.lookup(n.Space); ok {
		n.Space = v
	}
	return n
}

// Skip consumes the rest of the element last started.
func (d *decoder) Skip() error {
	for depth := 0; ; {
		t, err := d.Next()
		if err != nil {
			return err
		}
		switch t.Kind {
		case xmlwalk.StartElement:
			depth++
		case xmlwalk.EndElement:
			if depth == 0 {
				return nil
			}
			depth--
		}
	}
}

// DecodeElement decodes the element that start began into v by
// encoding/xml's reflection, for the stanzas rare enough not to need a
// walk of their own. encoding/xml reads the element from a decoder of
// its own over the tokens of this one, names already resolved.
func (d *decoder) DecodeElement(v any, start *xml.StartElement) error {
	return xml.NewTokenDecoder(&subtree{d: d, start: start}).Decode(v)
}

// subtree hands encoding/xml one element of the stream, its start first,
// and then io.EOF. Its names are resolved already and it holds back the
// xmlns attributes, so that encoding/xml, resolving the names again,
// leaves them as they are: with no bindings, a name space stays. (One
// quirk remains: a prefix bound to the name space "xml" itself comes out
// as the XML name space. Only commands and disco queries come this way.)
type subtree struct {
	d     *decoder
	start *xml.StartElement
	depth int
	done  bool
}

func (s *subtree) Token() (xml.Token, error) {
	if s.done {
		return nil, io.EOF
	}
	if s.start != nil {
		st := xml.StartElement{Name: s.start.Name, Attr: withoutBindings(s.start.Attr)}
		s.start = nil
		return st, nil
	}
	t, err := s.d.Next()
	if err != nil {
		return nil, err
	}
	switch t.Kind {
	case xmlwalk.StartElement:
		s.depth++
		return xml.StartElement{Name: t.Name, Attr: withoutBindings(t.Attr)}, nil
	case xmlwalk.EndElement:
		if s.depth == 0 {
			s.done = true
		}
		s.depth--
		return xml.EndElement{Name: t.Name}, nil
	}
	return xml.CharData(t.Text), nil
}

// withoutBindings returns a copy of attr without the xmlns attributes.
func withoutBindings(attr []xml.Attr) []xml.Attr {
	out := make([]xml.Attr, 0, len(attr))
	for _, a := range attr {
		if a.Name.Space != "xmlns" && !(a.Name.Space == "" && a.Name.Local == "xmlns") {
			out = append(out, a)
		}
	}
	return out
}
