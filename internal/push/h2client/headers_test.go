package h2client

import (
	"net"
	"reflect"
	"testing"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// Response header fields become the response's header, repeated names in
// the order sent, also when other names come between them; Get finds a
// name's first value in any case.
func TestResponseHeaderFields(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	cc := newClientConn(a, func(bool) {})
	st := &stream{id: 1, done: make(chan struct{})}
	cc.streams[1] = st
	f := &http2.MetaHeadersFrame{
		HeadersFrame: &http2.HeadersFrame{FrameHeader: http2.FrameHeader{Type: http2.FrameHeaders, StreamID: 1, Flags: http2.FlagHeadersEndHeaders | http2.FlagHeadersEndStream}},
		Fields: []hpack.HeaderField{
			{Name: ":status", Value: "200"},
			{Name: "a", Value: "1"}, {Name: "b", Value: "2"}, {Name: "a", Value: "3"}, {Name: "c", Value: "4"}, {Name: "b", Value: "5"},
		},
	}
	cc.onHeaders(f)
	resp := Response{StatusCode: st.status, fields: st.fields}
	want := map[string][]string{"A": {"1", "3"}, "B": {"2", "5"}, "C": {"4"}}
	if h := resp.Header(); resp.StatusCode != 200 || !reflect.DeepEqual(map[string][]string(h), want) {
		t.Fatalf("status %d, header %v; want 200, %v", resp.StatusCode, h, want)
	}
	for name, want := range map[string]string{"a": "1", "B": "2", "c": "4", ":status": "", "d": ""} {
		if got := resp.Get(name); got != want {
			t.Errorf("Get(%q) = %q, want %q", name, got, want)
		}
	}
}
