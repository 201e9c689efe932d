package h2client

import (
	"fmt"
	"net/http"
	"strings"

	"golang.org/x/net/http/httpguts"
	"golang.org/x/net/http2/hpack"
)

// Fields are header fields checked and put in the form HTTP/2 sends them
// once, for requests that send the same ones again and again: a push
// service's authorization, topic and priority. A connection also keeps
// their HPACK encoding and sends it again as long as its table has not
// changed since; encoding them anew each time was a tenth of the
// instructions of an APNS push, most of it hashing the provider token to
// look it up in the table. Fields must not be changed once made.
type Fields struct {
	list []hpack.HeaderField
}

// NewFields makes Fields of h: names in lower case, connection-specific
// fields left out as Do leaves them out of a Request's Header.
func NewFields(h http.Header) (*Fields, error) {
	if err := checkHeaders(h); err != nil {
		return nil, err
	}
	fs := &Fields{}
	for k, vv := range h {
		name := strings.ToLower(k)
		if skipHeaders[name] {
			continue
		}
		for _, v := range vv {
			fs.list = append(fs.list, hpack.HeaderField{Name: name, Value: v})
		}
	}
	return fs, nil
}

// checkHeaders refuses what cannot be sent as HTTP/2 header fields, before
// a stream is opened for it.
func checkHeaders(h http.Header) error {
	for k, vv := range h {
		if !httpguts.ValidHeaderFieldName(k) {
			return fmt.Errorf("h2client: invalid header name %q", k)
		}
		for _, v := range vv {
			if !httpguts.ValidHeaderFieldValue(v) {
				return fmt.Errorf("h2client: invalid value of header %q", k)
			}
		}
	}
	return nil
}

// Connection-specific fields, which HTTP/2 forbids (RFC 9113 8.2.2), and
// the ones written from the request itself.
var skipHeaders = map[string]bool{
	"connection": true, "proxy-connection": true, "keep-alive": true,
	"transfer-encoding": true, "upgrade": true, "te": true,
	"host": true, "content-length": true,
}

// changesTable reports whether a header block representation that starts
// with b adds an entry to the HPACK table or resizes it (RFC 7541 6.2.1,
// 6.3): either moves the indexes of the entries already there.
func changesTable(b byte) bool { return b&0xc0 == 0x40 || b&0xe0 == 0x20 }
