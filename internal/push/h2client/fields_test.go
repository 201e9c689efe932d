package h2client

import (
	"bytes"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strings"
	"testing"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// The encodings a connection keeps of Fields and of the pseudo-header
// fields decode, with the service's own decoder and table, to what each
// request sends: after the table grew, when it shrinks by the service's
// SETTINGS (whose size update must open the next block), and between
// requests with fields in a Header that change the table.
func TestKeptEncodings(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	cc := newClientConn(a, func(bool) {})
	dec := hpack.NewDecoder(4096, nil)
	must := func(h http.Header) *Fields {
		fs, err := NewFields(h)
		if err != nil {
			t.Fatal(err)
		}
		return fs
	}
	fsA := must(http.Header{"Authorization": {"bearer one"}, "Apns-Topic": {"org.example"}, "Apns-Priority": {"10"}})
	fsB := must(http.Header{"Authorization": {"bearer two"}, "Apns-Topic": {"org.example"}, "Apns-Priority": {"5"}})
	id := uint32(1)
	send := func(step string, fs *Fields, h http.Header, body int, kept bool) {
		t.Helper()
		_, keptBefore := cc.encoded[fs]
		req := &Request{Method: http.MethodPost, Authority: "push.example", Path: fmt.Sprintf("/3/device/%d", id), Fields: fs, Header: h, Body: make([]byte, body)}
		cc.out.b = cc.out.b[:0]
		cc.writeHeaders(id, req, 16<<10)
		id += 2
		if fs != nil && keptBefore != kept {
			t.Errorf("%s: sent from a kept encoding %v, want %v", step, keptBefore, kept)
		}
		fr := http2.NewFramer(nil, bytes.NewReader(cc.out.b))
		f, err := fr.ReadFrame()
		if err != nil {
			t.Fatalf("%s: %v", step, err)
		}
		got, err := dec.DecodeFull(f.(*http2.HeadersFrame).HeaderBlockFragment())
		if err != nil {
			t.Fatalf("%s: the service cannot decode the block: %v", step, err)
		}
		want := []hpack.HeaderField{{Name: ":method", Value: "POST"}, {Name: ":scheme", Value: "https"},
			{Name: ":authority", Value: "push.example"}, {Name: ":path", Value: req.Path, Sensitive: true}}
		if fs != nil {
			want = append(want, fs.list...)
		}
		for k, vv := range h {
			for _, v := range vv {
				want = append(want, hpack.HeaderField{Name: http.CanonicalHeaderKey(k), Value: v})
			}
		}
		want = append(want, hpack.HeaderField{Name: "content-length", Value: fmt.Sprint(body), Sensitive: true})
		norm := func(l []hpack.HeaderField) []string {
			var s []string
			for _, f := range l {
				s = append(s, fmt.Sprintf("%s: %s", http.CanonicalHeaderKey(f.Name), f.Value))
			}
			slices.Sort(s)
			return s
		}
		if g, w := norm(got), norm(want); !slices.Equal(g, w) {
			t.Fatalf("%s: the service decoded\n%q\nwant\n%q", step, g, w)
		}
	}
	send("first", fsA, nil, 10, false)
	send("again", fsA, nil, 11, false)
	send("third", fsA, nil, 12, true)
	send("another token", fsB, nil, 10, false)
	send("the first after it", fsA, nil, 10, false)
	send("kept again", fsA, nil, 10, true)
	send("a new field in a header", fsA, http.Header{"X-New": {"1"}}, 10, true)
	send("after it", fsA, nil, 10, false)
	send("kept after it", fsA, nil, 10, true)

	// The service allows no table: the entries are evicted, the size
	// update must come first in the next block, and the fields go as
	// literals from then on, which never change the table.
	dec.SetAllowedMaxDynamicTableSize(0)
	cc.setTableSizeLimit(0)
	send("table gone", fsA, nil, 10, false)
	if got := cc.hbuf.Bytes()[0]; got&0xe0 != 0x20 {
		t.Fatalf("block after the table went begins with %#x, not a size update", got)
	}
	send("no table, kept", fsA, nil, 10, true)
	send("no table, other", fsB, nil, 10, false)
	send("no table, first again", fsA, nil, 10, true)
}

// Fields refuse what a Header would be refused for, and leave out what
// HTTP/2 does not send.
func TestNewFields(t *testing.T) {
	for _, h := range []http.Header{{"Bad Name": {"x"}}, {"X": {"a\nb"}}} {
		if _, err := NewFields(h); err == nil {
			t.Errorf("NewFields(%q) succeeded", h)
		}
	}
	fs, err := NewFields(http.Header{"Connection": {"close"}, "Content-Length": {"3"}, "X-Two": {"1", "2"}})
	if err != nil {
		t.Fatal(err)
	}
	if want := []hpack.HeaderField{{Name: "x-two", Value: "1"}, {Name: "x-two", Value: "2"}}; !slices.Equal(fs.list, want) {
		t.Fatalf("fields %v, want %v", fs.list, want)
	}
}

// :path and content-length go as never-indexed literals, their values as
// they are, and decode to the same field for lengths on either side of
// each boundary of HPACK's integers.
func TestLiteralFields(t *testing.T) {
	dec := hpack.NewDecoder(4096, nil)
	for _, n := range []int{0, 1, 126, 127, 128, 254, 255, 16510, 16511, 70000} {
		value := strings.Repeat("d", n)
		for _, f := range []struct {
			name  string
			index uint64
		}{{":path", staticPath}, {"content-length", staticContentLength}} {
			var buf bytes.Buffer
			if f.index == staticPath {
				// In two parts, as a path and its token.
				writeLiteral(&buf, f.index, value[:n/2], value[n/2:])
			} else {
				writeLiteral(&buf, f.index, []byte(value), "")
			}
			block := buf.Bytes()
			got, err := dec.DecodeFull(block)
			want := []hpack.HeaderField{{Name: f.name, Value: value, Sensitive: true}}
			if err != nil || !slices.Equal(got, want) {
				t.Fatalf("%s of %d bytes: decoded %.60v, %v", f.name, n, got, err)
			}
			if !bytes.HasSuffix(block, []byte(value)) {
				t.Fatalf("%s of %d bytes: the value is not sent as it is", f.name, n)
			}
		}
	}
}
