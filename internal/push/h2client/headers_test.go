package h2client

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// block encodes fields as one header block.
func block(t *testing.T, enc *hpack.Encoder, buf *bytes.Buffer, fields ...hpack.HeaderField) []byte {
	t.Helper()
	buf.Reset()
	for _, f := range fields {
		if err := enc.WriteField(f); err != nil {
			t.Fatal(err)
		}
	}
	return bytes.Clone(buf.Bytes())
}

func field(name, value string) hpack.HeaderField { return hpack.HeaderField{Name: name, Value: value} }

// testConn is a connection whose read side is driven by hand, with one
// stream open.
func testConn(t *testing.T) (*clientConn, *stream) {
	a, b := net.Pipe()
	t.Cleanup(func() { a.Close(); b.Close() })
	go io.Copy(io.Discard, b) // the RST_STREAM frames of failed streams
	cc := newClientConn(a, func(bool) {})
	st := &stream{id: 1, done: make(chan struct{}, 1)}
	cc.streams[1] = st
	return cc, st
}

// Response header fields become the response's header, repeated names in
// the order sent, also when other names come between them; Get finds a
// name's first value in any case. A block split over frames is the same
// block.
func TestResponseHeaderFields(t *testing.T) {
	var buf bytes.Buffer
	enc := hpack.NewEncoder(&buf)
	b := block(t, enc, &buf, field(":status", "200"),
		field("a", "1"), field("b", "2"), field("a", "3"), field("c", "4"), field("b", "5"))
	for _, split := range []int{len(b), 1, len(b) / 2} {
		cc, st := testConn(t)
		cc.hdr.start(st, true)
		if err := cc.readHeaders(b[:split], split == len(b)); err != nil {
			t.Fatal(err)
		}
		if split < len(b) {
			if err := cc.readHeaders(b[split:], true); err != nil {
				t.Fatal(err)
			}
		}
		<-st.done
		resp := Response{StatusCode: st.status, fields: st.fields}
		want := map[string][]string{"A": {"1", "3"}, "B": {"2", "5"}, "C": {"4"}}
		if h := resp.Header(); st.err != nil || resp.StatusCode != 200 || !reflect.DeepEqual(map[string][]string(h), want) {
			t.Fatalf("split at %d: status %d, header %v, %v; want 200, %v", split, resp.StatusCode, h, st.err, want)
		}
		for name, want := range map[string]string{"a": "1", "B": "2", "c": "4", ":status": "", "d": ""} {
			if got := resp.Get(name); got != want {
				t.Errorf("split at %d: Get(%q) = %q, want %q", split, name, got, want)
			}
		}
	}
}

// A response's header block that breaks HTTP/2's rules fails its stream
// alone; one that HPACK cannot decode fails the connection. Interim (1xx)
// responses are passed over, and a block with no END_STREAM waits for the
// body.
func TestResponseHeaderBlocks(t *testing.T) {
	for _, tc := range []struct {
		name    string
		blocks  [][]hpack.HeaderField
		raw     []byte // instead of blocks
		status  int
		err     string // of the stream; "" for none
		connErr bool   // the block fails the connection
		open    bool   // the stream goes on (no END_STREAM)
	}{
		{name: "ok", blocks: [][]hpack.HeaderField{{field(":status", "410"), field("apns-id", "x")}}, status: 410},
		{name: "interim first", blocks: [][]hpack.HeaderField{{field(":status", "100")}, {field(":status", "200")}}, status: 200},
		{name: "body follows", blocks: [][]hpack.HeaderField{{field(":status", "200")}}, status: 200, open: true},
		{name: "no status", blocks: [][]hpack.HeaderField{{field("apns-id", "x")}}, err: "malformed response headers"},
		{name: "status not three digits", blocks: [][]hpack.HeaderField{{field(":status", "20")}}, err: "malformed response headers"},
		{name: "pseudo after regular", blocks: [][]hpack.HeaderField{{field("a", "1"), field(":status", "200")}}, err: "after a regular"},
		{name: "request pseudo", blocks: [][]hpack.HeaderField{{field(":status", "200"), field(":path", "/")}}, err: "pseudo-header field \":path\""},
		{name: "two statuses", blocks: [][]hpack.HeaderField{{field(":status", "200"), field(":status", "500")}}, err: "two :status"},
		{name: "upper case", blocks: [][]hpack.HeaderField{{field(":status", "200"), field("Apns-Id", "x")}}, err: "invalid header field name"},
		{name: "bad value", blocks: [][]hpack.HeaderField{{field(":status", "200"), field("a", "x\ny")}}, err: "invalid value"},
		{name: "too large", blocks: [][]hpack.HeaderField{{field(":status", "200"), field("a", strings.Repeat("x", maxHeaderListSize))}}, err: "malformed response headers"},
		{name: "endless block", raw: bytes.Repeat([]byte{0x88}, 2*maxHeaderListSize+1), connErr: true},
		{name: "index beyond the tables", raw: []byte{0xff, 0x80, 0x01}, connErr: true},
		{name: "cut short", raw: []byte{0x40, 0x85}, connErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cc, st := testConn(t)
			var buf bytes.Buffer
			enc := hpack.NewEncoder(&buf)
			blocks := [][]byte{tc.raw}
			if tc.raw == nil {
				blocks = nil
				for _, fs := range tc.blocks {
					blocks = append(blocks, block(t, enc, &buf, fs...))
				}
			}
			var err error
			for _, b := range blocks {
				cc.hdr.start(st, !tc.open)
				if err = cc.readHeaders(b, true); err != nil {
					break
				}
			}
			if tc.connErr {
				if err == nil {
					t.Fatal("the connection goes on; want it failed")
				}
				return
			}
			if err != nil {
				t.Fatalf("connection failed: %v", err)
			}
			select {
			case <-st.done:
				if tc.open {
					t.Fatalf("stream ended (%v); want it waiting for its body", st.err)
				}
			default:
				if !tc.open {
					t.Fatal("stream still open")
				}
				if st.status != tc.status {
					t.Fatalf("status %d, want %d", st.status, tc.status)
				}
				return
			}
			switch {
			case tc.err == "" && (st.err != nil || st.status != tc.status):
				t.Fatalf("status %d, %v; want %d", st.status, st.err, tc.status)
			case tc.err != "" && (st.err == nil || !strings.Contains(st.err.Error(), tc.err)):
				t.Fatalf("stream error %v, want one saying %q", st.err, tc.err)
			}
		})
	}
}

// With skipOK, a 2xx response comes without its fields, and any other
// with them. The fields skipped still go into HPACK's table when the
// service indexes them, so a later block that refers to them decodes.
func TestSkipSuccessFields(t *testing.T) {
	cc, _ := testConn(t)
	var buf bytes.Buffer
	enc := hpack.NewEncoder(&buf) // indexes every field, at HPACK's default table size
	for i, tc := range []struct {
		fields []hpack.HeaderField
		skipOK bool
		want   []hpack.HeaderField
	}{
		{[]hpack.HeaderField{field(":status", "200"), field("apns-id", "a1")}, true, nil},
		{[]hpack.HeaderField{field(":status", "204"), field("apns-id", "a2"), field("x", "1")}, true, nil},
		// a1 and a2 are in the table now: they come as indexes.
		{[]hpack.HeaderField{field(":status", "410"), field("apns-id", "a1"), field("x", "1")}, true, []hpack.HeaderField{field("apns-id", "a1"), field("x", "1")}},
		{[]hpack.HeaderField{field(":status", "200"), field("apns-id", "a2")}, false, []hpack.HeaderField{field("apns-id", "a2")}},
		{[]hpack.HeaderField{field(":status", "100"), field("x", "1")}, true, nil},
		{[]hpack.HeaderField{field(":status", "200"), field("apns-id", "a1"), field("x", "1")}, true, nil},
	} {
		id := uint32(2*i + 1)
		st := &stream{id: id, done: make(chan struct{}, 1), skipOK: tc.skipOK}
		cc.streams[id] = st
		cc.hdr.start(st, true)
		if err := cc.readHeaders(block(t, enc, &buf, tc.fields...), true); err != nil {
			t.Fatalf("block %d: %v", i, err)
		}
		if tc.fields[0].Value == "100" {
			if st.gotHeaders {
				t.Fatalf("block %d: an interim response ended the headers", i)
			}
			continue
		}
		<-st.done
		if want, _ := strconv.Atoi(tc.fields[0].Value); st.err != nil || st.status != want || !reflect.DeepEqual(st.fields, tc.want) {
			t.Fatalf("block %d: status %d, fields %v, %v; want %d, %v", i, st.status, st.fields, st.err, want, tc.want)
		}
	}
}

// The client asks the service to keep no HPACK table for its answers, so
// that their ids come as literals, which it need not decode.
func TestAsksForNoHeaderTable(t *testing.T) {
	a, b := net.Pipe()
	t.Cleanup(func() { a.Close(); b.Close() })
	cc := newClientConn(a, func(bool) {})
	started := make(chan error, 1)
	go func() { started <- cc.start(context.Background()) }()
	preface := make([]byte, len(http2.ClientPreface))
	if _, err := io.ReadFull(b, preface); err != nil || string(preface) != http2.ClientPreface {
		t.Fatalf("preface %q, %v", preface, err)
	}
	fr := http2.NewFramer(b, b)
	f, err := fr.ReadFrame()
	if err != nil {
		t.Fatal(err)
	}
	sf, ok := f.(*http2.SettingsFrame)
	if !ok {
		t.Fatalf("first frame %v, want SETTINGS", f.Header().Type)
	}
	if v, ok := sf.Value(http2.SettingHeaderTableSize); !ok || v != 0 {
		t.Fatalf("SETTINGS_HEADER_TABLE_SIZE %d (sent: %v), want 0", v, ok)
	}
	go io.Copy(io.Discard, b) // the window update and the acknowledgement
	if err := fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	if err := <-started; err != nil {
		t.Fatal(err)
	}
}

// An ended stream whose request read its answer serves the connection's
// next request, with nothing of the last answer left on it; one whose
// request gave up waiting is not used again, as the read loop may still
// write an answer to it.
func TestStreamsServeAgain(t *testing.T) {
	cc, _ := testConn(t)
	delete(cc.streams, 1)
	cc.nextID = 3
	var buf bytes.Buffer
	ok := block(t, hpack.NewEncoder(&buf), &buf, field(":status", "200"), field("apns-id", "x"))
	// send starts a request and returns its stream once it is open.
	send := func(ctx context.Context) (*stream, chan error) {
		t.Helper()
		id := cc.nextID
		errc := make(chan error, 1)
		go func() {
			_, err := cc.roundTrip(ctx, &Request{Method: "POST", Authority: "a", Path: "/p", Body: []byte("{}")})
			errc <- err
		}()
		for start := time.Now(); time.Since(start) < 5*time.Second; time.Sleep(time.Millisecond) {
			if st := cc.stream(id); st != nil {
				return st, errc
			}
		}
		t.Fatal("the request opened no stream")
		return nil, nil
	}
	answer := func(st *stream) {
		t.Helper()
		cc.hdr.start(st, true)
		if err := cc.readHeaders(ok, true); err != nil {
			t.Fatal(err)
		}
	}

	first, errc := send(context.Background())
	answer(first)
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	second, errc := send(context.Background())
	if second != first {
		t.Fatal("the second request did not get the first one's ended stream")
	}
	if second.status != 0 || second.fields != nil || second.gotHeaders || second.err != nil {
		t.Fatalf("the reused stream kept its last answer: status %d, fields %v, err %v", second.status, second.fields, second.err)
	}
	answer(second)
	if err := <-errc; err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	abandoned, errc := send(ctx)
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("abandoned request: %v, want the context's error", err)
	}
	next, errc := send(context.Background())
	if next == abandoned {
		t.Fatal("an abandoned stream served another request")
	}
	answer(next)
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
}
