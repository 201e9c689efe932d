package component

import (
	"bytes"
	"encoding/binary"
	"encoding/xml"
	"errors"
	"io"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/push-appserver/push-appserver/internal/xmpp/xmlwalk"
)

// lexer splits the component stream into raw XML tokens: the tokens
// encoding/xml's Decoder.RawToken returns in strict mode, for every input
// (FuzzLexer holds it to that), except that it refuses comments,
// processing instructions and directives, which XMPP forbids anywhere in a
// stream (RFC 6120 §11.1). The decoder above it checks nesting and
// resolves name spaces.
//
// Why not encoding/xml's tokenizer: it reads through an io.ByteReader, a
// method call per byte with line counting, and copies every name into a
// fresh string. That was a fifth of a push's CPU. This one scans the
// connection's buffer directly, copies runs of plain text at once and
// keeps the names and name-space URIs a stream repeats (bounded), so most
// stanzas allocate nothing for them.
type lexer struct {
	c       *streamConn
	err     error  // sticky, as encoding/xml's
	scratch []byte // the name being read
	text    []byte // readText's buffer

	// The token last read (see next).
	elem xml.Name
	attr []xml.Attr
	data []byte

	// Of the last start tag's attributes: whether one binds a name space
	// (xmlns, xmlns:p) and whether one has another prefix, whose name
	// space the decoder resolves. Most of a stanza's elements have
	// neither, and the decoder then need not look at each attribute
	// again.
	binds, prefixed bool

	// closed says the last end tag closes the element the decoder
	// expects it to: a self-closing tag's own, or the one named by
	// expect. The decoder then need not compare the names.
	closed bool

	needClose bool // the last StartElement was self-closing
	toClose   xml.Name

	// expect is the name of the element an end tag would close, when it
	// has no prefix (the decoder sets it; "" otherwise). An end tag that
	// is exactly "</"+expect+">" is taken as it stands, without reading
	// and interning its name: half a stanza's names are in its end tags.
	expect string

	// known holds names and values seen, one per slot of a hash of a few
	// of their bytes: cheaper than a map, bounded, and a peer sending
	// ever new names only makes them allocate, as encoding/xml would.
	known [1024]string
	// verbatim says a slot of known holds a string that came as it
	// stands in the stream, and so holds nothing an attribute value
	// may not hold as it stands: no '<', no '&', no '\r' or '\n', only
	// XML characters. A name qualifies too. Bytes between quotes equal
	// to it need no look of their own (knownValue).
	verbatim [1024]bool

	// raw says the last text readText returned is the stream's bytes
	// as they stand (see verbatim).
	raw bool

	// Past the stanza's bound (streamConn.over), a start tag's further
	// attributes are read and not kept, and cut says the last start tag
	// lost some. The decoder looks at
	// its bound between tokens only, and a start tag is one token of
	// any length: Prosody writes each prefixed attribute of a stanza
	// with a name-space declaration of its own, so a user's message of
	// 250 KB, one name space of 100 KB and 12,000 attributes in it,
	// reaches us as a start tag of 1.2 GB.
	cut bool
}

func newLexer(c *streamConn) *lexer {
	return &lexer{c: c, scratch: make([]byte, 0, 64), text: make([]byte, 0, 512)}
}

// syntaxError is a malformed stream.
type syntaxError string

func (e syntaxError) Error() string { return "XML syntax error: " + string(e) }

func (l *lexer) fail(msg string) {
	l.err = syntaxError(msg)
}

// getc returns the next byte; at the end of the input or on a read error
// it returns false with the error in l.err. A byte already in the
// buffer is returned without a further call: getc runs for many bytes of
// a stanza.
func (l *lexer) getc() (byte, bool) {
	if c := l.c; c.r < c.w {
		b := c.buf[c.r]
		c.r++
		return b, true
	}
	return l.getcFill()
}

// getcFill is getc once the buffer is read out.
func (l *lexer) getcFill() (byte, bool) {
	c := l.c
	if l.err != nil {
		return 0, false
	}
	if err := c.fill(); err != nil {
		l.err = err
		return 0, false
	}
	b := c.buf[c.r]
	c.r++
	return b, true
}

// mustgetc is getc where the input may not end.
func (l *lexer) mustgetc() (byte, bool) {
	if c := l.c; c.r < c.w {
		b := c.buf[c.r]
		c.r++
		return b, true
	}
	b, ok := l.getcFill()
	if !ok && l.err == io.EOF {
		l.fail("unexpected EOF")
	}
	return b, ok
}

// ungetc puts back the byte the last getc returned. That byte is always
// in the buffer still: the buffer is refilled only once it is read out.
func (l *lexer) ungetc() { l.c.r-- }

// maxInterned is the longest name or value intern keeps. What repeats
// from stanza to stanza (name-space URIs, element names, types, vars, a
// server's domain) is far shorter; anyone who can send our JID a message
// chooses the rest, and kept at any length, the 1,024 slots of known
// would hold as many of the longest strings a stanza may carry (tens of
// MiB a stream at a 64 KiB stanza limit) for as long as the stream
// lasts. Bounded, they hold 512 KiB at most.
const maxInterned = 512

// intern returns b as a string: the one its slot of known holds when
// that is b, so that names and values a stream repeats allocate nothing.
// b is as it stood in the stream (see verbatim): a name, or a value
// readText handed out of the buffer. A value it decoded goes through
// internDecoded.
func (l *lexer) intern(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	if len(b) > maxInterned {
		return string(b)
	}
	i := knownSlot(b)
	l.verbatim[i] = true
	if slot := &l.known[i]; *slot != string(b) {
		*slot = string(b)
	}
	return l.known[i]
}

// internDecoded is intern for a value readText decoded or rewrote: its
// bytes are not the stream's, so its slot is not verbatim unless the
// same string came verbatim before.
func (l *lexer) internDecoded(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	if len(b) > maxInterned {
		return string(b)
	}
	i := knownSlot(b)
	if slot := &l.known[i]; *slot != string(b) {
		*slot = string(b)
		l.verbatim[i] = false
	}
	return l.known[i]
}

// knownSlot is b's slot of lexer.known.
func knownSlot(b []byte) uint32 {
	n := len(b)
	h := uint32(n)*0x9E3779B1 ^ uint32(b[0])*0x85EBCA77 ^ uint32(b[n/2])*0xC2B2AE3D ^ uint32(b[n-1])*0x27D4EB2F
	return (h ^ h>>15) % 1024
}

// knownValue takes an attribute value quoted by quote, whose opening
// quote is read, when it is one seen verbatim before: its end is found by
// bytes.IndexByte and its bytes compared at once, where readText would
// judge them one by one. Name-space URIs, types and vars repeat in every
// stanza. The value is known to hold no quote (it ends at the first), and
// a verbatim one holds nothing else readText would stop at.
func (l *lexer) knownValue(quote byte) (string, bool) {
	c := l.c
	rest := c.buf[c.r:c.w]
	n := bytes.IndexByte(rest, quote)
	if n <= 0 {
		return "", false
	}
	v := rest[:n]
	i := knownSlot(v)
	if !l.verbatim[i] || l.known[i] != string(v) {
		return "", false
	}
	c.r += n + 1
	return l.known[i], true
}

// Token returns the next raw token, as encoding/xml's RawToken would.
// CharData refers to the lexer's buffer and is valid until the next call,
// as encoding/xml's.
func (l *lexer) Token() (xml.Token, error) {
	k, err := l.next()
	if err != nil {
		return nil, err
	}
	switch k {
	case xmlwalk.StartElement:
		return xml.StartElement{Name: l.elem, Attr: append([]xml.Attr{}, l.attr...)}, nil
	case xmlwalk.EndElement:
		return xml.EndElement{Name: l.elem}, nil
	}
	return xml.CharData(l.data), nil
}

// next reads the next raw token into l.elem and l.attr (a start tag),
// l.elem (an end tag) or l.data (text). Names are raw: Name.Space holds
// the prefix.
func (l *lexer) next() (xmlwalk.Kind, error) {
	if l.err != nil {
		return 0, l.err
	}
	if l.needClose {
		l.needClose = false
		l.elem, l.closed = l.toClose, true
		return xmlwalk.EndElement, nil
	}
	b, ok := l.getc()
	if !ok {
		return 0, l.err
	}
	if b != '<' {
		l.ungetc()
		if l.data = l.readText(-1, false); l.data == nil {
			return 0, l.err
		}
		return xmlwalk.CharData, nil
	}
	if b, ok = l.mustgetc(); !ok {
		return 0, l.err
	}
	switch b {
	case '/':
		if e := l.expect; e != "" {
			c := l.c
			if rest := c.buf[c.r:c.w]; len(rest) > len(e) && rest[len(e)] == '>' && string(rest[:len(e)]) == e {
				c.r += len(e) + 1
				l.elem, l.closed = xml.Name{Local: e}, true
				return xmlwalk.EndElement, nil
			}
		}
		name, ok := l.nsname()
		if !ok {
			if l.err == nil {
				l.fail("expected element name after </")
			}
			return 0, l.err
		}
		l.space()
		if b, ok = l.mustgetc(); !ok {
			return 0, l.err
		}
		if b != '>' {
			l.fail("invalid characters between </" + name.Local + " and >")
			return 0, l.err
		}
		l.elem, l.closed = name, false
		return xmlwalk.EndElement, nil
	case '?':
		l.err = errors.New("XML processing instruction in the stream")
		return 0, l.err
	case '!':
		if b, ok = l.mustgetc(); !ok {
			return 0, l.err
		}
		switch b {
		case '-':
			l.err = errors.New("XML comment in the stream")
		case '[':
			for i := range 6 {
				if b, ok = l.mustgetc(); !ok {
					return 0, l.err
				}
				if b != "CDATA["[i] {
					l.fail("invalid <![ sequence")
					return 0, l.err
				}
			}
			if l.data = l.readText(-1, true); l.data == nil {
				return 0, l.err
			}
			return xmlwalk.CharData, nil
		default:
			l.err = errors.New("XML directive in the stream")
		}
		return 0, l.err
	}
	l.ungetc()
	return l.startElement()
}

func (l *lexer) startElement() (xmlwalk.Kind, error) {
	name, ok := l.nsname()
	if !ok {
		if l.err == nil {
			l.fail("expected element name after <")
		}
		return 0, l.err
	}
	attr := l.attr[:0]
	binds, prefixed := false, false
	empty, cut := false, false
	for {
		l.space()
		b, ok := l.mustgetc()
		if !ok {
			return 0, l.err
		}
		if b == '/' {
			empty = true
			if b, ok = l.mustgetc(); !ok {
				return 0, l.err
			}
			if b != '>' {
				l.fail("expected /> in element")
				return 0, l.err
			}
			break
		}
		if b == '>' {
			break
		}
		l.ungetc()
		var a xml.Attr
		if a.Name, ok = l.nsname(); !ok {
			if l.err == nil {
				l.fail("expected attribute name in element")
			}
			return 0, l.err
		}
		if b, ok = l.equalsQuote(); !ok {
			return 0, l.err
		}
		// Name-space URIs, the values of type and var, and the addresses
		// (a user's server sends all its pushes from its domain, to our
		// JID) repeat from stanza to stanza; ids and nodes do not.
		intern := false
		switch a.Name.Space {
		case "":
			binds = binds || a.Name.Local == "xmlns"
			intern = internedAttr(a.Name.Local)
		case "xmlns":
			binds, intern = true, true
		default:
			prefixed = true
		}
		if l.c.over {
			// Past the stanza's bound: read, not kept (see cut).
			if l.readText(int(b), false) == nil {
				return 0, l.err
			}
			cut = true
			continue
		}
		if intern {
			if a.Value, ok = l.knownValue(b); ok {
				attr = append(attr, a)
				continue
			}
		}
		data := l.readText(int(b), false)
		if data == nil {
			return 0, l.err
		}
		if intern {
			if l.raw {
				a.Value = l.intern(data)
			} else {
				a.Value = l.internDecoded(data)
			}
		} else {
			a.Value = string(data)
		}
		attr = append(attr, a)
	}
	// The previous element's attributes past this one's stay in the
	// slice's spare room, their values with them: a stranger's messages,
	// each with one attribute fewer than the last and a large value at
	// its end, would leave up to 64 such values held for as long as the
	// stream lasts. Only what the previous element had past this one's
	// count is looked at, and only a large one let go: a stanza's short
	// names and values hold next to nothing, and clearing every entry
	// each time an element has fewer attributes than the one before
	// costs a publish IQ about 500 instructions.
	for i := len(attr); i < len(l.attr); i++ {
		if a := &l.attr[i]; len(a.Name.Space)+len(a.Name.Local)+len(a.Value) > maxInterned {
			*a = xml.Attr{}
		}
	}
	l.attr, l.binds, l.prefixed, l.cut = attr, binds, prefixed, cut
	if empty {
		l.needClose = true
		l.toClose = name
	}
	l.elem = name
	return xmlwalk.StartElement, nil
}

// equalsQuote reads what comes between an attribute's name and its
// value: '=' and the quote, which it returns, with white space around
// the '='. Mostly they are the buffer's next two bytes.
func (l *lexer) equalsQuote() (byte, bool) {
	if c := l.c; c.r+1 < c.w && c.buf[c.r] == '=' && (c.buf[c.r+1] == '\'' || c.buf[c.r+1] == '"') {
		c.r += 2
		return c.buf[c.r-1], true
	}
	l.space()
	b, ok := l.mustgetc()
	if !ok {
		return 0, false
	}
	if b != '=' {
		l.fail("attribute name without = in element")
		return 0, false
	}
	l.space()
	if b, ok = l.mustgetc(); !ok {
		return 0, false
	}
	if b != '"' && b != '\'' {
		l.fail("unquoted or missing attribute value in element")
		return 0, false
	}
	return b, true
}

func internedAttr(local string) bool {
	switch local {
	case "xmlns", "type", "var", "from", "to":
		return true
	}
	return false
}

// space skips white space. Mostly there is none, or one byte of it,
// which this checks without the call to spaceRun.
func (l *lexer) space() {
	if c := l.c; c.r >= c.w || spaceByte[c.buf[c.r]] {
		l.spaceRun()
	}
}

func (l *lexer) spaceRun() {
	for {
		c := l.c
		buf, i := c.buf[:c.w], c.r
		for i < len(buf) && isSpaceByte(buf[i]) {
			i++
		}
		c.r = i
		if i < len(buf) {
			return
		}
		// The buffer is read out: see whether more space follows.
		b, ok := l.getc()
		if !ok {
			return
		}
		l.ungetc()
		if !isSpaceByte(b) {
			return
		}
	}
}

func isSpaceByte(b byte) bool { return spaceByte[b] }

var spaceByte = [256]bool{' ': true, '\r': true, '\n': true, '\t': true}

// nsname reads a name with at most one colon, the part before which is
// the prefix (Name.Space in a raw token).
func (l *lexer) nsname() (xml.Name, bool) {
	s, colon, ok := l.name()
	if !ok {
		return xml.Name{}, false
	}
	if !colon {
		return xml.Name{Local: s}, true
	}
	i := strings.IndexByte(s, ':')
	switch {
	case strings.IndexByte(s[i+1:], ':') >= 0:
		return xml.Name{}, false
	case i == 0 || i == len(s)-1:
		return xml.Name{Local: s}, true
	}
	return xml.Name{Space: s[:i], Local: s[i+1:]}, true
}

// name reads a name and reports whether it holds a colon, so that
// nsname need not look for one in the many names without.
func (l *lexer) name() (s string, colon, ok bool) {
	// Mostly the whole name is in the buffer: take it from there
	// without copying it to scratch first.
	c := l.c
	rest := c.buf[c.r:c.w]
	var seen byte // the nameClass bits of every byte of the name
	n := 0
	for n < len(rest) {
		k := nameClass[rest[n]]
		if k == 0 {
			break
		}
		seen |= k
		n++
	}
	if n > 0 && n < len(rest) {
		name := rest[:n]
		// An ASCII name of name bytes only needs its first byte
		// judged; isName would look at every byte again.
		if seen&nameNonASCII == 0 && !isNameStart(name[0]) || seen&nameNonASCII != 0 && !isName(name) {
			l.fail("invalid XML name: " + string(name))
			return "", false, false
		}
		c.r += n
		return l.intern(name), seen&nameColon != 0, true
	}
	l.scratch = l.scratch[:0]
	if !l.readName() {
		return "", false, false
	}
	if !isName(l.scratch) {
		l.fail("invalid XML name: " + string(l.scratch))
		return "", false, false
	}
	return l.intern(l.scratch), bytes.IndexByte(l.scratch, ':') >= 0, true
}

// readName appends the bytes of a name to l.scratch: up to the first
// ASCII byte that cannot be in a name. Other bytes are checked by isName.
func (l *lexer) readName() bool {
	b, ok := l.mustgetc()
	if !ok {
		return false
	}
	if !nameByte[b] {
		l.ungetc()
		return false
	}
	l.scratch = append(l.scratch, b)
	for {
		c := l.c
		buf, i := c.buf[:c.w], c.r
		for i < len(buf) && nameByte[buf[i]] {
			i++
		}
		l.scratch = append(l.scratch, buf[c.r:i]...)
		c.r = i
		if i < len(buf) {
			return true
		}
		if b, ok = l.mustgetc(); !ok {
			return false
		}
		if !nameByte[b] {
			l.ungetc()
			return true
		}
		l.scratch = append(l.scratch, b)
	}
}

// nameByte holds the ASCII bytes a name may hold, and every byte outside
// ASCII, which isName judges.
var nameByte = func() (t [256]bool) {
	for c := range t {
		t[c] = 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' ||
			c == '_' || c == ':' || c == '.' || c == '-' || c >= utf8.RuneSelf
	}
	return t
}()

// nameClass tells name's scan what a byte is: not in a name (0), or in
// one (nameIn) and also a colon or outside ASCII.
var nameClass = func() (t [256]byte) {
	for c := range t {
		switch {
		case c == ':':
			t[c] = nameIn | nameColon
		case c >= utf8.RuneSelf:
			t[c] = nameIn | nameNonASCII
		case nameByte[c]:
			t[c] = nameIn
		}
	}
	return t
}()

const (
	nameIn = 1 << iota
	nameColon
	nameNonASCII
)

// isNameStart reports whether the name byte c may start a name: in ASCII
// a name may not start with a digit, '.' or '-'.
func isNameStart(c byte) bool { return !('0' <= c && c <= '9' || c == '.' || c == '-') }

// isName checks a name read by readName the way encoding/xml does.
func isName(s []byte) bool {
	if len(s) == 0 {
		return false
	}
	if isASCII(s) {
		return isNameStart(s[0])
	}
	// The rest of XML's name characters are Unicode tables that
	// encoding/xml keeps to itself: ask it. Names outside ASCII are rare
	// in XMPP. Colons are valid anywhere in a name; they are replaced so
	// that only the characters are judged, not the prefix syntax.
	probe := "<" + strings.ReplaceAll(string(s), ":", "a") + "/>"
	_, err := xml.NewDecoder(strings.NewReader(probe)).RawToken()
	return err == nil
}

// readText reads character data into l.text, as encoding/xml's text():
// in an attribute value quoted by quote (>= 0), in a CDATA section, or
// up to the next '<'. It decodes the five predefined entities and
// character references, rewrites "\r\n" and "\r" to "\n" and checks that
// the result is UTF-8 of XML characters. It returns nil on error.
func (l *lexer) readText(quote int, cdata bool) []byte {
	l.raw = false
	plain := plainIn(quote, cdata)
	if !cdata {
		// Mostly the text ends in the buffer with nothing in it to
		// decode or rewrite: hand it out from there, uncopied. It stays
		// valid until the next call, as the buffer is refilled only
		// then. Its printable ASCII start needs no further check.
		c := l.c
		rest := c.buf[c.r:c.w]
		checked := 0
		for t := printableIn(quote); checked < len(rest) && t[rest[checked]]; {
			checked++
		}
		n := checked
		for n < len(rest) && plain[rest[n]] {
			n++
		}
		if n < len(rest) && (quote >= 0 && int(rest[n]) == quote || quote < 0 && rest[n] == '<') {
			data := rest[:n]
			if checked < n && !l.xmlChars(data[checked:]) {
				return nil
			}
			if quote >= 0 {
				n++ // the closing quote
			}
			c.r += n
			l.raw = true
			return data
		}
	}
	l.text = l.text[:0]
	var b0, b1 byte
	trunc := 0
	for {
		c := l.c
		// Copy a run of bytes that need no attention at once.
		if buf := c.buf[:c.w]; c.r < len(buf) {
			i := c.r
			for i < len(buf) && plain[buf[i]] {
				i++
			}
			if n := i - c.r; n > 0 {
				l.text = append(l.text, c.buf[c.r:i]...)
				if n >= 2 {
					b0, b1 = c.buf[i-2], c.buf[i-1]
				} else {
					b0, b1 = b1, c.buf[i-1]
				}
				c.r = i
			}
		}
		b, ok := l.getc()
		if !ok {
			if cdata {
				if l.err == io.EOF {
					l.fail("unexpected EOF in CDATA section")
				}
				return nil
			}
			break
		}
		if quote < 0 && b0 == ']' && b1 == ']' && b == '>' {
			if cdata {
				trunc = 2
				break
			}
			l.fail("unescaped ]]> not in CDATA section")
			return nil
		}
		if b == '<' && !cdata {
			if quote >= 0 {
				l.fail("unescaped < inside quoted string")
				return nil
			}
			l.ungetc()
			break
		}
		if quote >= 0 && b == byte(quote) {
			break
		}
		if b == '&' && !cdata {
			if !l.entity() {
				return nil
			}
			b0, b1 = 0, 0
			continue
		}
		switch {
		case b == '\r':
			l.text = append(l.text, '\n')
		case b1 == '\r' && b == '\n':
			// "\r\n": the '\n' is written already.
		default:
			l.text = append(l.text, b)
		}
		b0, b1 = b1, b
	}
	data := l.text[:len(l.text)-trunc]
	if !l.xmlChars(data) {
		return nil
	}
	return data
}

// xmlChars checks that data is UTF-8 of XML characters.
func (l *lexer) xmlChars(data []byte) bool {
	for i := 0; i < len(data); {
		if len(data)-i >= 8 && plainASCII(binary.LittleEndian.Uint64(data[i:])) {
			i += 8
			continue
		}
		if b := data[i]; b < utf8.RuneSelf {
			if b < 0x20 && b != '\t' && b != '\n' && b != '\r' {
				l.fail("illegal character code " + strconv.QuoteRune(rune(b)))
				return false
			}
			i++
			continue
		}
		r, size := utf8.DecodeRune(data[i:])
		if r == utf8.RuneError && size == 1 {
			l.fail("invalid UTF-8")
			return false
		}
		if !inCharacterRange(r) {
			l.fail("illegal character code " + strconv.QuoteRune(r))
			return false
		}
		i += size
	}
	return true
}

// plainIn returns the table of the bytes that need no look in text of
// that kind: they end nothing, start no entity and are not a '\r' to
// rewrite. A byte right after '\r' is never plain either, since "\r\n"
// becomes one '\n'.
func plainIn(quote int, cdata bool) *[256]bool {
	switch {
	case cdata:
		return &plainTables[0]
	case quote == '"':
		return &plainTables[1]
	case quote == '\'':
		return &plainTables[2]
	}
	return &plainTables[3]
}

// plainTables are plainIn's: CDATA, attribute values in double and in
// single quotes, and text between tags.
var plainTables = func() (t [4][256]bool) {
	for i := range t {
		for b := range 256 {
			t[i][b] = b != '\r' && b != '\n'
		}
	}
	for _, q := range []int{1, 2, 3} {
		t[q]['<'], t[q]['&'] = false, false
	}
	t[1]['"'], t[2]['\''] = false, false
	// The end of "]]>": a CDATA section's, and what text may not hold.
	t[0]['>'], t[3]['>'] = false, false
	return t
}()

// printableIn returns the table of the plain bytes in text outside
// CDATA that are also XML characters by themselves: printable ASCII and
// tab. Text of these alone needs no xmlChars.
func printableIn(quote int) *[256]bool {
	switch quote {
	case '"':
		return &printableTables[0]
	case '\'':
		return &printableTables[1]
	}
	return &printableTables[2]
}

// printableTables are printableIn's: attribute values in double and in
// single quotes, and text between tags.
var printableTables = func() (t [3][256]bool) {
	for i, p := range []*[256]bool{&plainTables[1], &plainTables[2], &plainTables[3]} {
		for b := range 256 {
			t[i][b] = p[b] && (b == '\t' || ' ' <= b && b < utf8.RuneSelf)
		}
	}
	return t
}()

// isASCII reports whether s is all ASCII, eight bytes at a time.
func isASCII(s []byte) bool {
	for len(s) >= 8 {
		if binary.LittleEndian.Uint64(s)&0x8080808080808080 != 0 {
			return false
		}
		s = s[8:]
	}
	for _, b := range s {
		if b >= utf8.RuneSelf {
			return false
		}
	}
	return true
}

// plainASCII reports whether the eight bytes of w are all ASCII at or
// above ' ': XML characters that need no closer look.
func plainASCII(w uint64) bool {
	const high, space = 0x8080808080808080, 0x2020202020202020
	// A byte below 0x20 borrows in w-space and sets its high bit there
	// while clear in w (the classic "has less than" test).
	return w&high == 0 && (w-space)&^w&high == 0
}

func inCharacterRange(r rune) bool {
	return r == 0x09 || r == 0x0A || r == 0x0D ||
		r >= 0x20 && r <= 0xD7FF ||
		r >= 0xE000 && r <= 0xFFFD ||
		r >= 0x10000 && r <= 0x10FFFF
}

var entities = map[string]byte{"lt": '<', "gt": '>', "amp": '&', "apos": '\'', "quot": '"'}

// entity reads what follows a '&' in text and appends what it stands for:
// one of the five predefined entities or a character reference. Anything
// else is an error, as in encoding/xml's strict mode.
func (l *lexer) entity() bool {
	b, ok := l.mustgetc()
	if !ok {
		return false
	}
	if b == '#' {
		if b, ok = l.mustgetc(); !ok {
			return false
		}
		base := 10
		if b == 'x' {
			base = 16
			if b, ok = l.mustgetc(); !ok {
				return false
			}
		}
		l.scratch = l.scratch[:0]
		for '0' <= b && b <= '9' || base == 16 && ('a' <= b && b <= 'f' || 'A' <= b && b <= 'F') {
			l.scratch = append(l.scratch, b)
			if b, ok = l.mustgetc(); !ok {
				return false
			}
		}
		if b == ';' {
			n, err := strconv.ParseUint(string(l.scratch), base, 64)
			if err == nil && n <= unicode.MaxRune {
				// As encoding/xml: a surrogate or other invalid
				// code point becomes U+FFFD.
				l.text = utf8.AppendRune(l.text, rune(n))
				return true
			}
		}
		l.fail("invalid character entity &#" + string(l.scratch))
		return false
	}
	l.ungetc()
	l.scratch = l.scratch[:0]
	if !l.readName() && l.err != nil {
		return false
	}
	if b, ok = l.mustgetc(); !ok {
		return false
	}
	if b == ';' && isName(l.scratch) {
		if r, ok := entities[string(l.scratch)]; ok {
			l.text = append(l.text, r)
			return true
		}
	}
	l.fail("invalid character entity &" + string(l.scratch))
	return false
}
