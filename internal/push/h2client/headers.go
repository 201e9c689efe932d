package h2client

import (
	"errors"
	"fmt"
	"strings"

	"golang.org/x/net/http/httpguts"
	"golang.org/x/net/http2/hpack"
)

// headerReader decodes the header blocks of responses, one HEADERS frame
// and the CONTINUATION frames after it at a time.
//
// x/net's Framer can do this itself (ReadMetaHeaders), but for every
// block it allocates a frame, an emit closure and the variables the
// closure shares, and grows the field slice from nothing: about ten of
// a push's allocations, for a response that is a status and two ids.
// Here the decoder and its emit function are made once per connection
// and the fields are collected in a buffer that is reused; a response
// keeps a copy of exactly its own fields.
//
// It checks what the Framer checks of a response: only :status as a
// pseudo-header field, before every regular one and once; names in
// lower case and values without forbidden bytes; the list no larger
// than maxHeaderListSize. The fields of a 2xx response whose caller
// reads none (Request.SkipSuccessFields) are neither checked nor kept.
type headerReader struct {
	dec *hpack.Decoder

	// The block being decoded, and its stream: nil if the stream is
	// gone (abandoned, or never ours).
	st        *stream
	endStream bool
	status    string
	fields    []hpack.HeaderField
	left      uint32 // room left under maxHeaderListSize
	read      int    // bytes of the block so far
	regular   bool   // a regular field came: no pseudo-header field may follow
	invalid   error
	truncated bool
}

func newHeaderReader() *headerReader {
	h := &headerReader{}
	// Our SETTINGS ask the service for a table of 0 bytes, which it
	// says with a size update in its next header block; until then,
	// and should it never do so, the table is HPACK's default.
	h.dec = hpack.NewDecoder(4096, h.field)
	h.dec.SetMaxStringLength(maxHeaderListSize)
	return h
}

// start begins the block of a HEADERS frame on st. When st's caller
// reads no field of a success (skipOK), the fields that follow a 2xx
// :status are not decoded, unless HPACK's table needs them.
func (h *headerReader) start(st *stream, endStream bool) {
	h.st, h.endStream = st, endStream
	h.status, h.fields, h.left, h.read = "", h.fields[:0], maxHeaderListSize, 0
	h.regular, h.invalid, h.truncated = false, nil, false
	h.dec.SetEmitEnabled(true)
}

// write decodes a fragment of the block. Its error is the connection's:
// HPACK's state is shared by every stream, and a block that cannot be
// decoded leaves it unknown (RFC 9113 4.3).
func (h *headerReader) write(fragment []byte) error {
	// Fields past the list's limit are not kept, but a block that goes
	// on and on would keep the read loop busy (CVE-2023-45288): twice
	// the limit is more than any field list under it can take, however
	// it is encoded.
	if h.read += len(fragment); h.read > 2*maxHeaderListSize {
		return errors.New("h2client: response header block too large")
	}
	if _, err := h.dec.Write(fragment); err != nil {
		return fmt.Errorf("h2client: decoding response headers: %w", err)
	}
	return nil
}

// end finishes the block; its error is the connection's, as write's.
func (h *headerReader) end() error {
	if err := h.dec.Close(); err != nil {
		return fmt.Errorf("h2client: decoding response headers: %w", err)
	}
	return nil
}

// kept returns a copy of the block's regular fields, nil if none.
func (h *headerReader) kept() []hpack.HeaderField {
	if len(h.fields) == 0 {
		return nil
	}
	return append([]hpack.HeaderField(nil), h.fields...)
}

// field is the decoder's emit function.
func (h *headerReader) field(f hpack.HeaderField) {
	if h.invalid != nil || h.truncated {
		return
	}
	// HPACK's size of a field (RFC 7541 4.1), as SETTINGS_MAX_HEADER_LIST_SIZE
	// counts it; the decoder stops decoding values once over.
	size := f.Size()
	if size > h.left {
		h.truncated = true
		h.dec.SetEmitEnabled(false)
		return
	}
	h.left -= size
	if strings.HasPrefix(f.Name, ":") {
		switch {
		case h.regular:
			h.invalid = errors.New("pseudo-header field after a regular one")
		case f.Name != ":status":
			h.invalid = fmt.Errorf("pseudo-header field %q in a response", f.Name)
		case h.status != "":
			h.invalid = errors.New("two :status fields")
		default:
			h.status = f.Value
			if h.st != nil && h.st.skipOK && len(f.Value) == 3 && f.Value[0] == '2' {
				h.dec.SetEmitEnabled(false)
			}
		}
		return
	}
	h.regular = true
	if !validWireName(f.Name) {
		h.invalid = fmt.Errorf("invalid header field name %q", f.Name)
		return
	}
	if !httpguts.ValidHeaderFieldValue(f.Value) {
		h.invalid = fmt.Errorf("invalid value of header field %q", f.Name)
		return
	}
	h.fields = append(h.fields, f)
}

// validWireName says whether name may be a header field's name in HTTP/2,
// where names are in lower case (RFC 9113 8.2.1).
func validWireName(name string) bool {
	if !httpguts.ValidHeaderFieldName(name) {
		return false
	}
	for i := 0; i < len(name); i++ {
		if 'A' <= name[i] && name[i] <= 'Z' {
			return false
		}
	}
	return true
}
