package httpapi

import (
	"io"
	"net/url"
	"runtime"
	"strings"
	"testing"
	"testing/iotest"
)

// formCases are bodies that form.parse must read as url.ParseQuery does:
// plain ones it reads itself, and those it leaves to url.ParseQuery.
var formCases = []string{
	"", "node=n1&secret=s1", "node=n1&node=n2", "secret=s&node=n", "node", "node=", "=x&node=n",
	"&&node=n&&", "node=a=b", "nod=x&node=y", "xnode=1&node=2", "node=n&secret", "Node=n",
	"node=n%31", "node=a+b", "node=n;secret=s", "no%64e=n", "node=%zz", "node=\x00\xff&secret=é",
	"node=n&node=%zz", "a=1&b=2&c=3&node=last",
	"a=1&b=2&c=3&a=4", "a=1&b=2&c=3&d=4", "a=1&b=2&c=3&d=4&a=5", "a=1&b=2&c=3&d=4&e=5", "a&b&c&d&a",
	"a=1&b=2&c=3&d=4&e=5&a=6", "a=1&b=2&c=3&d=4&e=5&f=6&a=7",
	"a=1&&&&&&&&b=2&a=3", "b=1&a=1&a=2&b=2",
	"a=1&b=2&c=3&d=4&e=5&f=6&g=7&h=8&i=9&j=10&c=11", "a=1&b=2&c=3&d=4&e=5&f=6&g=7&h=8&i=9&j=10&k=11", "=x&=y", "node&node=", "=&=&h&h",
}

func checkForm(t *testing.T, body string) {
	t.Helper()
	want, wantErr := url.ParseQuery(body)
	var got form
	err := got.parse(body)
	if (err != nil) != (wantErr != nil) {
		t.Fatalf("%q: error %v, url.ParseQuery's %v", body, err, wantErr)
	}
	if err != nil {
		return
	}
	names := []string{"node", "secret", "", "x"}
	for k := range want {
		names = append(names, k)
	}
	for _, field := range strings.Split(body, "&") {
		k, _, _ := strings.Cut(field, "=")
		names = append(names, k)
	}
	for _, n := range names {
		if g, w := got.Get(n), want.Get(n); g != w {
			t.Fatalf("%q: field %q is %q, url.ParseQuery's %q", body, n, g, w)
		}
	}
	dup := false
	for _, v := range want {
		dup = dup || len(v) > 1
	}
	if g, ok := got.duplicate(); ok != dup || ok && len(want[g]) < 2 {
		t.Fatalf("%q: duplicate field %q (%v), url.ParseQuery has one: %v", body, g, ok, dup)
	}
}

func TestFormMatchesParseQuery(t *testing.T) {
	for _, c := range formCases {
		checkForm(t, c)
	}
}

func FuzzForm(f *testing.F) {
	for _, c := range formCases {
		f.Add(c)
	}
	f.Fuzz(checkForm)
}

type closeRecorder struct {
	io.Reader
	closed bool
}

func (c *closeRecorder) Close() error { c.closed = true; return nil }

// A body read whole is closed; one refused as too large is left to
// net/http, which then does not read the rest of it.
func TestReadBodyClosesWhatItRead(t *testing.T) {
	for _, tc := range []struct {
		body   string
		length int64
		closed bool
	}{
		{"node=n", 6, true},
		{"node=n", -1, true},
		{strings.Repeat("x", 20), 20, false},
		{strings.Repeat("x", 20), -1, false},
	} {
		b := &closeRecorder{Reader: strings.NewReader(tc.body)}
		_, msg := readBody(b, tc.length, 10)
		if b.closed != tc.closed || (msg == "") != tc.closed {
			t.Errorf("%q (length %d): closed %t, message %q", tc.body, tc.length, b.closed, msg)
		}
	}
}

// A declared body is not allocated before it arrives: a client that
// declares push-batch's 64 KiB and sends a few bytes costs about what it
// sent. A body that does arrive is read whole, whatever its size.
func TestReadBodyGrowsAsItArrives(t *testing.T) {
	const limit = 64 << 10
	var m0, m1 runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&m0)
	_, msg := readBody(io.NopCloser(strings.NewReader("{\"pushes\":")), limit, limit)
	runtime.ReadMemStats(&m1)
	if msg == "" {
		t.Fatal("a body shorter than declared was read")
	}
	if n := m1.TotalAlloc - m0.TotalAlloc; n > 8<<10 {
		t.Errorf("a 10-byte body declared at %d bytes allocated %d", limit, n)
	}
	for _, n := range []int{0, 1, firstBodyBuffer, firstBodyBuffer + 1, 3 * firstBodyBuffer, limit} {
		body := strings.Repeat("x", n)
		b, msg := readBody(io.NopCloser(iotest.OneByteReader(strings.NewReader(body))), int64(n), limit)
		if msg != "" || string(b) != body {
			t.Errorf("a body of %d bytes read as %d bytes, %q", n, len(b), msg)
		}
	}
}

// TestFormDuplicateInOrder guards the duplicate a push's answer names:
// the first field whose name came before, read in order, whether the
// form is cut into its fields (a few) or read from its text (more).
func TestFormDuplicateInOrder(t *testing.T) {
	for _, tt := range []struct{ body, want string }{
		{"b=1&a=1&a=2&b=2", "a"},
		{"b=1&a=1&b=2&a=2", "b"},
		{"node=n&secret=s&node=m", "node"},
		{"a=1&b=2&c=3&c=4", "c"},
		{"a=1&b=2&c=3&d=4&d=5", "d"},
		{"x=1&y=1&z=1&b=1&a=1&a=2&b=2", "a"},
		{"x=1&y=1&z=1&b=1&a=1&b=2&a=2", "b"},
		{"x=1&y=1&z=1&w=1&v=1&u=1&u=2", "u"},
		{"x=1&y=1&z=1&w=1&v=1&u=1&t=1&x=2", "x"},
	} {
		var f form
		if err := f.parse(tt.body); err != nil {
			t.Fatal(err)
		}
		if got, ok := f.duplicate(); !ok || got != tt.want {
			t.Errorf("%q: duplicate %q (%t), want %q", tt.body, got, ok, tt.want)
		}
	}
}
