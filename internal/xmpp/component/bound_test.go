package component

import (
	"fmt"
	"io"
	"math"
	"strings"
	"testing"

	"github.com/push-appserver/push-appserver/internal/xmpp/xmlwalk"
)

// boundedDecoder is the decoder of a stream of data, past its opening
// tag, bounding what it keeps of a stanza to bound bytes as the
// component's reader does; reset starts a stanza's count.
func boundedDecoder(t *testing.T, data string, bound int64) (d *decoder, reset func()) {
	t.Helper()
	lr := &limitReader{Conn: &chunkConn{data: []byte(data), err: io.EOF, chunk: 4096}}
	lr.limit.Store(math.MaxInt64)
	sc := newStreamConn(lr)
	d = newDecoder(newLexer(sc))
	d.setBound(bound)
	if _, err := d.Next(); err != nil { // the stream's element
		t.Fatal(err)
	}
	return d, sc.newStanza
}

// TestStartTagKeptWithinBound: what the decoder keeps of a stanza is
// bounded, however long one of its start tags is. Prosody writes each
// prefixed attribute of a stanza it routes with a declaration of its
// own (xmlns:ns1='u' ns1:a=”), so a message of 250 KB from any user,
// one name space of 100 KB and 12,000 attributes using it, reaches the
// component as one start tag of 1.2 GB; every attribute of it was kept
// until the tag ended, the whole tag in memory at once, since the bound
// was looked at only between tokens.
func TestStartTagKeptWithinBound(t *testing.T) {
	const bound = 64 << 10
	space := "urn:example:" + strings.Repeat("u", 1000)
	var tag strings.Builder
	for i := range 4000 {
		fmt.Fprintf(&tag, " xmlns:ns%d='%s' ns%d:a=''", i, space, i)
	}
	for _, stanza := range []string{
		// Past maxBindings too, as Prosody writes it.
		"<message><x" + tag.String() + "/></message>",
		// Within maxBindings: one declaration, many attributes.
		"<message><x xmlns:p='u'" + strings.ReplaceAll(tag.String(), "xmlns:ns", "p:b") + "/></message>",
		// The stanza's own start tag.
		"<message" + tag.String() + "><body>hi</body></message>",
	} {
		d, reset := boundedDecoder(t, "<stream>"+stanza+"<iq id='next'/>", bound)
		reset()
		// The message, and the element in it if the message's own
		// tag is not the long one.
		var err error
		for range 2 {
			var tok *xmlwalk.Token
			if tok, err = d.Next(); err != nil || len(tok.Attr) > 0 {
				break
			}
		}
		kept := 0
		for _, a := range d.lx.attr {
			kept += len(a.Name.Space) + len(a.Name.Local) + len(a.Value)
		}
		if kept > 2*bound {
			t.Errorf("%.30q... (%d bytes): %d bytes of one start tag kept at a bound of %d (%v)", stanza, len(stanza), kept, bound, err)
		}
		if err := d.skipStanza(); err != nil {
			t.Fatalf("%.30q...: skipping the stanza: %v", stanza, err)
		}
		d.shrink()
		reset()
		if tok, err := d.Next(); err != nil || tok.Name.Local != "iq" {
			t.Fatalf("%.30q...: the stanza after it: %+v, %v", stanza, tok, err)
		}
	}
}

// TestStanzaOfManyTokensCut: past the bound, the decoder hands out no
// more of a stanza, however small each of its tokens is, and the stanza
// after it is read as usual once this one is skipped.
func TestStanzaOfManyTokensCut(t *testing.T) {
	const bound = 16 << 10
	stanza := "<iq type='set' id='big'>" + strings.Repeat("<a>x</a>", 8*bound/8) + "</iq>"
	d, reset := boundedDecoder(t, "<stream>"+stanza+"<iq id='next'/>", bound)
	reset()
	var err error
	tokens := 0
	for err == nil {
		_, err = d.Next()
		tokens++
	}
	if err != errStanzaTooLarge {
		t.Fatalf("a stanza of %d bytes at a bound of %d: %v after %d tokens, want errStanzaTooLarge", len(stanza), bound, err, tokens)
	}
	if err := d.skipStanza(); err != nil {
		t.Fatal(err)
	}
	reset()
	if tok, err := d.Next(); err != nil || tok.Attr[0].Value != "next" {
		t.Fatalf("the stanza after it: %+v, %v", tok, err)
	}
}
