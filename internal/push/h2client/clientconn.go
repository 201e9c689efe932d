package h2client

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/push-appserver/push-appserver/internal/push"
	"github.com/push-appserver/push-appserver/internal/sockio"
)

// clientConn is one HTTP/2 connection to a push service, written on
// x/net/http2's Framer and HPACK codec rather than net/http's client.
//
// A push service connection carries thousands of small requests a second
// whose headers differ only in the path. net/http writes each request's
// HEADERS and DATA frames as two TLS records with a write syscall each,
// and enters every header into HPACK's table, so each device path evicts
// another entry: together over a quarter of our CPU per push. Here the
// frames of every request queued while one write is under way leave
// together in one write, and the path goes out as a literal that is never
// indexed. Responses are small JSON documents and are read whole before
// roundTrip returns.
type clientConn struct {
	nc  net.Conn
	raw net.Conn // the connection under TLS, for its socket's send queue (see watch)
	fr  *http2.Framer
	hdr *headerReader // the read loop's
	// hook is told whenever room may have opened: for one request when a
	// stream ended (all false), for any number when the connection's
	// state changed (all true).
	hook func(all bool)

	pings       pings
	idleTimeout time.Duration // close after this long without requests

	// Write side. wmu orders frames: stream IDs must rise and the HPACK
	// encoder's state must follow the order in which frames leave.
	wmu     sync.Mutex
	out     frameBuf // frames not yet written to nc
	spare   []byte
	writing bool // a goroutine is writing to nc; it sends out before it stops
	werr    error
	henc    *hpack.Encoder
	hbuf    bytes.Buffer
	// encoded keeps the encoding of the Fields sent since the HPACK
	// table last changed, and prefix that of the pseudo-header fields
	// before the path; both are forgotten whenever it changes, as every
	// index in them may then point elsewhere.
	encoded map[*Fields][]byte
	prefix  struct {
		method, authority string
		block             []byte
	}
	nextID uint32
	lower  map[string]string // header names as sent, by canonical key

	// State shared with the read loop.
	mu          sync.Mutex
	streams     map[uint32]*stream
	free        []*stream // ended streams to use again (newStreamLocked)
	reserved    int
	maxStreams  int
	maxFrame    uint32 // the service's SETTINGS_MAX_FRAME_SIZE
	initWindow  int64  // the service's SETTINGS_INITIAL_WINDOW_SIZE
	sendWindow  int64  // connection-level send window
	windowGrew  chan struct{}
	draining    bool  // GOAWAY received or stream IDs used up: no new requests
	closed      error // why the connection ended; nil while open
	idleSince   time.Time
	tableSize   uint32
	tableUpdate bool

	busy      atomic.Int32 // len(streams), readable without mu
	answered  atomic.Bool  // a response arrived, or a GOAWAY that will answer some
	frames    atomic.Int64 // frames read, for the liveness check
	readDone  chan struct{}
	recvTaken int64 // connection-level receive window used; read loop only
}

// pings say when a quiet connection is pinged (after) and when it is
// taken for dead (timeout later).
type pings struct{ after, timeout time.Duration }

type stream struct {
	id uint32
	// done receives one value when the response is complete or failed,
	// sent by end. A value rather than a close, so the stream can serve
	// another request (see recycle).
	done chan struct{}

	// Set by the read loop before end, read after.
	status     int
	fields     []hpack.HeaderField // regular header fields, in the order they came
	skipOK     bool                // Request.SkipSuccessFields; set before the read loop can see the stream
	body       []byte
	err        error
	gotHeaders bool

	sendWindow int64 // guarded by clientConn.mu
	sending    bool  // request body not fully sent; guarded by mu
}

// end records the stream's outcome and wakes the request waiting for it.
// Only whoever took the stream out of clientConn.streams calls it, so it
// runs once per request.
func (st *stream) end(err error) {
	st.err = err
	st.done <- struct{}{}
}

// maxFree bounds the ended streams a connection keeps for new requests:
// as many as are usually under way at once.
const maxFree = 256

// newStreamLocked returns a stream for a new request, an ended one if
// the connection has one; mu is held.
func (cc *clientConn) newStreamLocked() *stream {
	if n := len(cc.free); n > 0 {
		st := cc.free[n-1]
		cc.free = cc.free[:n-1]
		return st
	}
	return &stream{done: make(chan struct{}, 1)}
}

// recycle keeps st, whose answer its request has received and read, for
// a later request on the connection: two allocations fewer per request.
// Only a stream the read loop ended with its answer comes here, and
// nothing holds it then: it left streams before end, and the read loop
// finds streams only there (its header reader's is replaced at the next
// HEADERS frame). Not so a stream that failed, which another goroutine
// may have ended (closeWith) while the read loop was writing its answer
// to it, nor an abandoned one, whose answer may still come.
func (cc *clientConn) recycle(st *stream) {
	*st = stream{done: st.done}
	cc.mu.Lock()
	if len(cc.free) < maxFree {
		cc.free = append(cc.free, st)
	}
	cc.mu.Unlock()
}

// frameBuf collects the framer's output until it is written to the
// connection.
type frameBuf struct{ b []byte }

func (f *frameBuf) Write(p []byte) (int, error) {
	f.b = append(f.b, p...)
	return len(p), nil
}

const (
	// Response bodies are kept whole; push services answer with a few
	// hundred bytes. A larger body fails its request.
	maxResponseBody = 256 << 10
	maxRequestBody  = 1 << 20
	// The receive windows we grant: no response ever waits for a window
	// update on its stream.
	streamRecvWindow  = 1 << 20
	connRecvWindow    = 4 << 20
	maxHeaderListSize = 64 << 10
	// Until the service's SETTINGS say otherwise (RFC 9113 6.5.2 leaves
	// it unlimited; 100 is the recommended minimum).
	defaultMaxStreams = 100
	maxStreamID       = 1<<31 - 1
	// The largest buffer kept for the next write once written.
	maxSpare = 1 << 20
	// The most Fields' encodings a connection keeps: a push service
	// backend sends a few (one per priority).
	maxEncoded = 64
)

var (
	// errUnprocessed marks errors of requests the service never
	// processed (RFC 9113 8.7): they can be sent again safely.
	errUnprocessed  = errors.New("h2client: request not processed")
	errGoneAway     = errors.New("h2client: the service closed the connection (GOAWAY)")
	errIdle         = errors.New("h2client: idle connection closed")
	errNoRoom       = errors.New("h2client: connection at its stream limit")
	errBodyTooLarge = errors.New("h2client: response body too large")
)

// streamReset is the error of a request whose stream the service reset.
type streamReset struct {
	id   uint32
	code http2.ErrCode
}

func (e streamReset) Error() string {
	return fmt.Sprintf("h2client: stream %d reset by the service: %v", e.id, e.code)
}

// goneAway is errGoneAway with what the GOAWAY frame said: its code and
// debug data, where APNS names its reason ({"reason":"Shutdown"}, a
// certificate it refuses): all an operator may learn of why the service
// ended the connection.
type goneAway struct {
	code  http2.ErrCode
	debug string
}

// maxGoAwayDebug bounds the debug data kept of a GOAWAY: APNS's is a
// small JSON object, and the error ends up in logs.
const maxGoAwayDebug = 256

func newGoneAway(f *http2.GoAwayFrame) error {
	debug := f.DebugData()
	if len(debug) > maxGoAwayDebug {
		debug = debug[:maxGoAwayDebug]
	}
	// The service's bytes, into a log line: no invalid UTF-8 or
	// control characters.
	text := strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, strings.ToValidUTF8(string(debug), "\uFFFD"))
	return &goneAway{code: f.ErrCode, debug: strings.TrimSpace(text)}
}

func (e *goneAway) Error() string {
	msg := errGoneAway.Error()
	if e.code != http2.ErrCodeNo {
		msg += " " + e.code.String()
	}
	if e.debug != "" {
		msg += ": " + e.debug
	}
	return msg
}

func (e *goneAway) Unwrap() error { return errGoneAway }

// unprocessedError wraps the reason a request never reached the service.
func unprocessedError(reason error) error { return fmt.Errorf("%w: %w", errUnprocessed, reason) }

// dialConn opens a connection to addr: TLS with ALPN h2, the client
// preface, and the service's first SETTINGS, so that its stream limit is
// known before the first request. The TCP connection under TLS is a
// sockio.Conn, whose reads and writes cost the runtime less at moderate
// rates.
func dialConn(ctx context.Context, d *net.Dialer, cfg *tls.Config, addr string, proxy *url.URL, p pings, hook func(all bool)) (*clientConn, error) {
	raw, err := dialTCP(ctx, d, addr, proxy)
	if err != nil {
		return nil, err
	}
	if cfg.ServerName == "" {
		// As tls.Dialer does: the certificate must name the host dialled.
		host, _, err := net.SplitHostPort(addr)
		if err != nil {
			raw.Close()
			return nil, fmt.Errorf("h2client: %w", err)
		}
		cfg = cfg.Clone()
		cfg.ServerName = host
	}
	nc := tls.Client(sockio.Wrap(raw), cfg)
	if err := nc.HandshakeContext(ctx); err != nil {
		raw.Close()
		return nil, err
	}
	if p := nc.ConnectionState().NegotiatedProtocol; p != "h2" {
		nc.Close()
		return nil, fmt.Errorf("h2client: %s does not offer HTTP/2 (ALPN %q)", addr, p)
	}
	cc := newClientConn(nc, hook)
	cc.pings = p
	cc.raw = raw
	if err := cc.start(ctx); err != nil {
		nc.Close()
		return nil, fmt.Errorf("h2client: starting HTTP/2 with %s: %w", addr, err)
	}
	go cc.readLoop()
	go cc.watch()
	return cc, nil
}

// dialTCP connects to addr: directly, or through proxy's HTTP CONNECT
// tunnel, over TLS when the proxy's URL is https. Its errors name the
// proxy without its password.
func dialTCP(ctx context.Context, d *net.Dialer, addr string, proxy *url.URL) (net.Conn, error) {
	if proxy == nil {
		return d.DialContext(ctx, "tcp", addr)
	}
	fail := func(err error) error {
		return fmt.Errorf("h2client: proxy %s, tunnel to %s: %w", proxy.Redacted(), addr, err)
	}
	paddr := proxy.Host
	switch proxy.Scheme {
	case "http":
		if proxy.Port() == "" {
			paddr = net.JoinHostPort(proxy.Hostname(), "80")
		}
	case "https":
		if proxy.Port() == "" {
			paddr = net.JoinHostPort(proxy.Hostname(), "443")
		}
	default:
		return nil, fail(fmt.Errorf("scheme %q not supported (http or https)", proxy.Scheme))
	}
	raw, err := d.DialContext(ctx, "tcp", paddr)
	if err != nil {
		return nil, fail(err)
	}
	c := raw
	if proxy.Scheme == "https" {
		tc := tls.Client(raw, &tls.Config{ServerName: proxy.Hostname(), MinVersion: tls.VersionTLS12})
		if err := tc.HandshakeContext(ctx); err != nil {
			raw.Close()
			return nil, fail(err)
		}
		c = tc
	}
	// The dial's deadline bounds the proxy's answer too.
	if deadline, ok := ctx.Deadline(); ok {
		c.SetDeadline(deadline)
	}
	req := "CONNECT " + addr + " HTTP/1.1\r\nHost: " + addr + "\r\n"
	if u := proxy.User; u != nil {
		pass, _ := u.Password()
		req += "Proxy-Authorization: Basic " + base64.StdEncoding.EncodeToString([]byte(u.Username()+":"+pass)) + "\r\n"
	}
	if _, err := io.WriteString(c, req+"\r\n"); err != nil {
		c.Close()
		return nil, fail(err)
	}
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
	if err != nil {
		c.Close()
		return nil, fail(err)
	}
	if resp.StatusCode != http.StatusOK {
		c.Close()
		return nil, fail(fmt.Errorf("the proxy answered %s", resp.Status))
	}
	// The tunnel starts after the blank line: a 2xx answer's
	// Content-Length and Transfer-Encoding are to be ignored (RFC 9110
	// 9.3.6), and its body is not read. The service speaks only after
	// our TLS hello, so bytes already there are the proxy's, and would
	// be lost with br.
	if br.Buffered() > 0 {
		c.Close()
		return nil, fail(errors.New("the proxy sent data after its answer"))
	}
	c.SetDeadline(time.Time{})
	return c, nil
}

func newClientConn(nc net.Conn, hook func(all bool)) *clientConn {
	cc := &clientConn{
		nc:          nc,
		hook:        hook,
		pings:       pings{after: 30 * time.Second, timeout: 10 * time.Second},
		idleTimeout: 10 * time.Minute,
		nextID:      1,
		lower:       map[string]string{},
		streams:     map[uint32]*stream{},
		maxStreams:  defaultMaxStreams,
		maxFrame:    16 << 10,
		initWindow:  65535,
		sendWindow:  65535,
		windowGrew:  make(chan struct{}),
		idleSince:   time.Now(),
		readDone:    make(chan struct{}),
	}
	cc.fr = http2.NewFramer(&cc.out, bufio.NewReaderSize(nc, 16<<10))
	// DATA frames are copied from before the next is read.
	cc.fr.SetReuseFrames()
	cc.hdr = newHeaderReader()
	cc.henc = hpack.NewEncoder(&cc.hbuf)
	return cc
}

func (cc *clientConn) start(ctx context.Context) error {
	cc.out.b = append(cc.out.b, http2.ClientPreface...)
	cc.fr.WriteSettings(
		http2.Setting{ID: http2.SettingEnablePush, Val: 0},
		http2.Setting{ID: http2.SettingInitialWindowSize, Val: streamRecvWindow},
		http2.Setting{ID: http2.SettingMaxHeaderListSize, Val: maxHeaderListSize},
		// No dynamic table for the service's header fields: an
		// answer's ids are new with every answer, and a table only
		// makes us decode them to keep it, even when the caller reads
		// none (Request.SkipSuccessFields). The fields that repeat,
		// :status 200 above all, are in HPACK's static table. Our
		// decoder's table stays at the default (headerReader), so a
		// service that goes on indexing is still understood.
		http2.Setting{ID: http2.SettingHeaderTableSize, Val: 0},
	)
	cc.fr.WriteWindowUpdate(0, connRecvWindow-65535)
	if deadline, ok := ctx.Deadline(); ok {
		cc.nc.SetDeadline(deadline)
		defer cc.nc.SetDeadline(time.Time{})
	}
	if _, err := cc.nc.Write(cc.out.b); err != nil {
		return err
	}
	cc.out.b = cc.out.b[:0]
	f, err := cc.fr.ReadFrame()
	if err != nil {
		return err
	}
	sf, ok := f.(*http2.SettingsFrame)
	if !ok || sf.IsAck() {
		return fmt.Errorf("first frame is %v, not SETTINGS", f.Header().Type)
	}
	cc.frames.Add(1)
	if err := cc.onSettings(sf); err != nil {
		return err
	}
	cc.flush() // the acknowledgement
	cc.wmu.Lock()
	err = cc.werr
	cc.wmu.Unlock()
	return err
}

// Reserve sets a stream aside for one roundTrip, or says why the
// connection cannot take one now. more reports whether it has room for
// another.
func (cc *clientConn) Reserve() (more bool, err error) {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	if err := cc.usableLocked(); err != nil {
		return false, err
	}
	if len(cc.streams)+cc.reserved >= cc.maxStreams {
		return false, errNoRoom
	}
	cc.reserved++
	return len(cc.streams)+cc.reserved < cc.maxStreams, nil
}

// InFlight counts the requests under way and reserved.
func (cc *clientConn) InFlight() int {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	return len(cc.streams) + cc.reserved
}

func (cc *clientConn) unreserve() {
	cc.mu.Lock()
	if cc.reserved > 0 {
		cc.reserved--
	}
	cc.mu.Unlock()
	cc.released()
}

// Err is nil while the connection takes new requests.
func (cc *clientConn) Err() error {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	return cc.usableLocked()
}

// Answered reports whether the service answered a request on the
// connection, or said with its GOAWAY that it will.
func (cc *clientConn) Answered() bool { return cc.answered.Load() }

func (cc *clientConn) usableLocked() error {
	switch {
	case cc.closed != nil:
		return cc.closed
	case cc.draining:
		return errGoneAway
	}
	return nil
}

// roundTrip sends req on a stream reserved with Reserve and returns the
// whole response. Errors wrapping errUnprocessed mean the service never
// saw the request.
func (cc *clientConn) roundTrip(ctx context.Context, req *Request) (Response, error) {
	if err := checkHeaders(req.Header); err != nil {
		cc.unreserve()
		return Response{}, err
	}
	if err := ctx.Err(); err != nil {
		// Its caller gave up already (it waited for room until its
		// deadline): sent now, the push would be delivered and yet
		// counted as failed, and sent again later.
		cc.unreserve()
		return Response{}, err
	}
	body := req.Body

	cc.wmu.Lock()
	cc.mu.Lock()
	// The reservation becomes the stream under the same lock, so the
	// count Reserve checks never dips in between.
	if cc.reserved > 0 {
		cc.reserved--
	}
	err := cc.usableLocked()
	if err == nil {
		err = cc.werr
	}
	if err != nil {
		// Nothing of the request was written.
		cc.mu.Unlock()
		cc.wmu.Unlock()
		cc.hook(true)
		return Response{}, unprocessedError(err)
	}
	st := cc.newStreamLocked()
	st.skipOK = req.SkipSuccessFields
	st.id = cc.nextID
	cc.nextID += 2
	if cc.nextID > maxStreamID {
		cc.draining = true
	}
	st.sendWindow = cc.initWindow
	st.sending = len(body) > 0
	cc.streams[st.id] = st
	cc.busy.Store(int32(len(cc.streams)))
	maxFrame := cc.maxFrame
	cc.mu.Unlock()
	cc.writeHeaders(st.id, req, maxFrame)
	sent := 0
	if len(body) > 0 {
		sent = cc.writeData(st, body)
	}
	cc.flushLocked()
	ended := false
	if sent < len(body) {
		ended = cc.sendRest(ctx, st, body[sent:])
	}

	if !ended {
		select {
		case <-st.done:
		case <-ctx.Done():
			cc.abandon(st, http2.ErrCodeCancel)
			return Response{}, ctx.Err()
		}
	}
	if st.err != nil {
		return Response{}, st.err
	}
	resp := Response{StatusCode: st.status, Body: st.body, fields: st.fields}
	cc.recycle(st)
	return resp, nil
}

// writeHeaders queues the request's HEADERS (and CONTINUATION) frames;
// wmu is held.
func (cc *clientConn) writeHeaders(id uint32, req *Request, maxFrame uint32) {
	cc.hbuf.Reset()
	if p := &cc.prefix; p.block != nil && p.method == req.Method && p.authority == req.Authority {
		cc.hbuf.Write(p.block)
	} else if cc.writeFields(hpack.HeaderField{Name: ":method", Value: req.Method},
		hpack.HeaderField{Name: ":scheme", Value: "https"},
		hpack.HeaderField{Name: ":authority", Value: req.Authority}) {
		p.method, p.authority, p.block = req.Method, req.Authority, bytes.Clone(cc.hbuf.Bytes())
	}
	// Never indexed: device tokens make every path new, and indexing
	// them would only evict the fields that do repeat.
	writeLiteral(&cc.hbuf, staticPath, req.Path, req.PathTail)
	if fs := req.Fields; fs != nil {
		if b, ok := cc.encoded[fs]; ok {
			cc.hbuf.Write(b)
		} else if start := cc.hbuf.Len(); cc.writeFields(fs.list...) {
			if cc.encoded == nil || len(cc.encoded) >= maxEncoded {
				// A caller that makes new Fields for each request
				// would otherwise fill it while the table stays.
				cc.encoded = map[*Fields][]byte{}
			}
			cc.encoded[fs] = bytes.Clone(cc.hbuf.Bytes()[start:])
		}
	}
	for k, vv := range req.Header {
		name, ok := cc.lower[k]
		if !ok {
			name = strings.ToLower(k)
			if len(cc.lower) < 64 {
				cc.lower[k] = name
			}
		}
		if skipHeaders[name] {
			continue
		}
		for _, v := range vv {
			cc.writeFields(hpack.HeaderField{Name: name, Value: v})
		}
	}
	bodyLen := len(req.Body)
	if bodyLen > 0 || req.Method == http.MethodPost || req.Method == http.MethodPut {
		// Not indexed either: payloads of many lengths would each add
		// an entry, and every entry added makes the encodings kept
		// above useless.
		var digits [20]byte
		writeLiteral(&cc.hbuf, staticContentLength, strconv.AppendInt(digits[:0], int64(bodyLen), 10), "")
	}
	block := cc.hbuf.Bytes()
	first := block[:min(len(block), int(maxFrame))]
	block = block[len(first):]
	cc.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: first, EndStream: bodyLen == 0, EndHeaders: len(block) == 0})
	for len(block) > 0 {
		frag := block[:min(len(block), int(maxFrame))]
		block = block[len(frag):]
		cc.fr.WriteContinuation(id, len(block) == 0, frag)
	}
}

// Entries of HPACK's static table (RFC 7541 Appendix A) whose names
// writeLiteral sends.
const (
	staticPath          = 4  // :path /
	staticContentLength = 28 // content-length
)

// writeLiteral writes to a header block a field whose name is entry
// index of HPACK's static table, never indexed, its value as it is (RFC
// 7541 6.2.3).
//
// The encoder would Huffman-code the value: a device token's path came
// out a quarter shorter, for 1,800 instructions a push, of a request
// whose payload is several times larger anyway. Its API has no way to
// leave the code out, and these few bytes need none of its state:
// a never-indexed field leaves the table alone. A value in bytes (the
// length's digits, made on the stack) costs no string, and one in two
// parts (value, then tail: a path and its token) no joining.
func writeLiteral[T string | []byte](block *bytes.Buffer, index uint64, value T, tail string) {
	b := block.AvailableBuffer()
	b = appendInt(b, 4, 0x10, index)
	b = appendInt(b, 7, 0, uint64(len(value)+len(tail))) // 0: not Huffman-coded
	block.Write(append(append(b, value...), tail...))
}

// appendInt appends HPACK's representation of i on an n-bit prefix (RFC
// 7541 5.1), the bits above the prefix in its first byte being flags.
func appendInt(b []byte, n uint, flags byte, i uint64) []byte {
	limit := uint64(1)<<n - 1
	if i < limit {
		return append(b, flags|byte(i))
	}
	b = append(b, flags|byte(limit))
	for i -= limit; i >= 0x80; i >>= 7 {
		b = append(b, 0x80|byte(i&0x7f))
	}
	return append(b, byte(i))
}

// writeFields encodes fs into the header block and reports whether the
// HPACK table stayed as it was; if it changed, the encodings kept from
// before no longer hold and are dropped. wmu is held.
func (cc *clientConn) writeFields(fs ...hpack.HeaderField) (unchanged bool) {
	unchanged = true
	for _, f := range fs {
		n := cc.hbuf.Len()
		cc.henc.WriteField(f)
		if changesTable(cc.hbuf.Bytes()[n]) {
			unchanged = false
		}
	}
	if !unchanged {
		cc.forgetEncodings()
	}
	return unchanged
}

// setTableSizeLimit applies the service's SETTINGS_HEADER_TABLE_SIZE.
// wmu is held.
func (cc *clientConn) setTableSizeLimit(size uint32) {
	cc.henc.SetMaxDynamicTableSizeLimit(size)
	// The encoder may now owe the service a size update, which must
	// open the next block: only the encoder can write it there.
	cc.forgetEncodings()
}

// forgetEncodings drops the encodings kept while the HPACK table was as it
// no longer is. wmu is held.
func (cc *clientConn) forgetEncodings() {
	clear(cc.encoded)
	cc.prefix.block = nil
}

// writeData queues as much of body as the send windows allow and returns
// how much that was; wmu is held.
func (cc *clientConn) writeData(st *stream, body []byte) int {
	cc.mu.Lock()
	n := min(int64(len(body)), st.sendWindow, cc.sendWindow)
	if n < 0 {
		n = 0
	}
	st.sendWindow -= n
	cc.sendWindow -= n
	if n == int64(len(body)) {
		st.sending = false
	}
	maxFrame := int(cc.maxFrame)
	cc.mu.Unlock()
	p := body[:n]
	for len(p) > 0 {
		chunk := p[:min(len(p), maxFrame)]
		p = p[len(chunk):]
		cc.fr.WriteData(st.id, len(p) == 0 && int(n) == len(body), chunk)
	}
	return int(n)
}

// sendRest sends what of a request body the windows held back, as the
// service grants more. It reports whether it received the stream's end,
// which the caller then must not wait for.
func (cc *clientConn) sendRest(ctx context.Context, st *stream, rest []byte) (ended bool) {
	for len(rest) > 0 {
		cc.mu.Lock()
		grew := cc.windowGrew
		_, live := cc.streams[st.id]
		cc.mu.Unlock()
		if !live {
			return false
		}
		cc.wmu.Lock()
		n := cc.writeData(st, rest)
		cc.flushLocked()
		rest = rest[n:]
		if n == 0 {
			select {
			case <-grew:
			case <-st.done:
				return true
			case <-ctx.Done():
				return false
			}
		}
	}
	return false
}

// write queues the frames fn writes and sends them.
func (cc *clientConn) write(fn func(*http2.Framer) error) {
	cc.wmu.Lock()
	fn(cc.fr)
	cc.flushLocked()
}

// flushLocked sends the queued frames and unlocks wmu. If another
// goroutine is writing, it leaves them to it: a writer looks at the queue
// again after each write, so whatever was queued during one write leaves
// in the next, in one syscall and as few TLS records as it fills.
func (cc *clientConn) flushLocked() {
	if cc.writing {
		cc.wmu.Unlock()
		return
	}
	cc.writing = true
	if cc.busy.Load() > 1 {
		// Let the other requests under way run first: the frames they
		// queue meanwhile leave in this write instead of one of their
		// own (see the component's writer).
		cc.wmu.Unlock()
		runtime.Gosched()
		cc.wmu.Lock()
	}
	for len(cc.out.b) > 0 && cc.werr == nil {
		buf := cc.out.b
		cc.out.b = cc.spare[:0]
		cc.wmu.Unlock()
		// The goroutine writing is a request's, which waits for no
		// context meanwhile: a socket that takes nothing for as long
		// as a ping may go unanswered ends the connection, rather than
		// hold that request until the ping check (sockio notes the
		// deadline; it costs a timer only when the write waits).
		cc.nc.SetWriteDeadline(time.Now().Add(cc.pings.timeout))
		_, err := cc.nc.Write(buf)
		cc.wmu.Lock()
		if cap(buf) <= maxSpare {
			cc.spare = buf[:0]
		} else {
			cc.spare = nil
		}
		if err != nil {
			cc.werr = err
		}
	}
	cc.writing = false
	err := cc.werr
	cc.out.b = cc.out.b[:0]
	cc.wmu.Unlock()
	if err != nil {
		cc.closeWith(fmt.Errorf("h2client: writing to the service: %w", err))
	}
}

// abandon forgets a stream the caller no longer waits for and resets it.
func (cc *clientConn) abandon(st *stream, code http2.ErrCode) {
	cc.mu.Lock()
	_, live := cc.streams[st.id]
	if live {
		delete(cc.streams, st.id)
		cc.busy.Store(int32(len(cc.streams)))
	}
	cc.mu.Unlock()
	if !live {
		return
	}
	cc.write(func(fr *http2.Framer) error { return fr.WriteRSTStream(st.id, code) })
	cc.released()
}

// finish ends a stream with err (nil: its response is complete).
func (cc *clientConn) finish(st *stream, err error) {
	cc.mu.Lock()
	if cc.streams[st.id] != st {
		cc.mu.Unlock()
		return
	}
	delete(cc.streams, st.id)
	cc.busy.Store(int32(len(cc.streams)))
	stopSending := err == nil && st.sending
	id := st.id // st may serve another request once ended
	st.end(err)
	cc.mu.Unlock()
	if stopSending {
		// The service answered before the whole body was sent: stop.
		cc.write(func(fr *http2.Framer) error { return fr.WriteRSTStream(id, http2.ErrCodeCancel) })
	}
	cc.released()
}

// released runs after a stream ended: the pool may use the room, and a
// draining connection closes with its last stream.
func (cc *clientConn) released() {
	cc.mu.Lock()
	empty := len(cc.streams) == 0 && cc.reserved == 0
	if empty {
		cc.idleSince = time.Now()
	}
	drained := empty && cc.draining
	cc.mu.Unlock()
	if drained {
		cc.closeWith(errGoneAway)
		return
	}
	cc.hook(false)
}

// closeWith ends the connection and fails every request under way with
// err.
func (cc *clientConn) closeWith(err error) {
	cc.mu.Lock()
	if cc.closed != nil {
		cc.mu.Unlock()
		return
	}
	cc.closed = err
	for id, st := range cc.streams {
		delete(cc.streams, id)
		st.end(err)
	}
	cc.busy.Store(0)
	close(cc.windowGrew)
	cc.windowGrew = make(chan struct{})
	cc.mu.Unlock()
	// Not tls.Conn's Close: with no write under way it sends close_notify
	// under a write deadline of its own, 5 s, and waits for it. On a
	// connection that failed because the service stopped reading, a
	// socket buffer too full for even that alert held the goroutine
	// here (the request that was writing, or the ping watch) 5 s longer.
	if tc, ok := cc.nc.(*tls.Conn); ok {
		tc.NetConn().Close()
	} else {
		cc.nc.Close()
	}
	cc.hook(true)
}

// drain takes no new requests on the connection, as after a GOAWAY: the
// requests under way end as they would, and the connection closes with
// the last of them.
func (cc *clientConn) drain() {
	cc.mu.Lock()
	cc.draining = true
	cc.mu.Unlock()
	cc.released()
	cc.hook(true) // waiters may now dial instead
}

// Close ends the connection; requests under way fail.
func (cc *clientConn) Close() error {
	cc.closeWith(net.ErrClosed)
	return nil
}

func (cc *clientConn) readLoop() {
	defer close(cc.readDone)
	err := cc.readFramesRecovered()
	cc.closeWith(fmt.Errorf("h2client: connection lost: %w", err))
}

// readFramesRecovered is readFrames, with a panic turned into the end of
// the connection (a *push.PanicError): a bug that one odd frame from a
// push service sets off fails the requests on this connection, which
// callers retry on another, rather than the process. Unless the panic
// left one of the connection's locks held (it came inside a section that
// unlocks without defer): then nothing can end the connection cleanly,
// and the panic goes on as before.
func (cc *clientConn) readFramesRecovered() (err error) {
	defer func() {
		p := recover()
		if p == nil {
			return
		}
		if !cc.unlocked(100 * time.Millisecond) {
			panic(p)
		}
		err = &push.PanicError{Value: p, Stack: debug.Stack()}
	}()
	return cc.readFrames()
}

// unlocked reports whether both of the connection's locks can be taken
// within wait: held that long, one was left held. Another goroutine
// holds either for microseconds at a time.
func (cc *clientConn) unlocked(wait time.Duration) bool {
	for deadline := time.Now().Add(wait); ; time.Sleep(time.Millisecond) {
		if cc.mu.TryLock() {
			ok := cc.wmu.TryLock()
			if ok {
				cc.wmu.Unlock()
			}
			cc.mu.Unlock()
			if ok {
				return true
			}
		}
		if time.Now().After(deadline) {
			return false
		}
	}
}

func (cc *clientConn) readFrames() error {
	for {
		f, err := cc.fr.ReadFrame()
		if err != nil {
			var se http2.StreamError
			if errors.As(err, &se) {
				cc.resetStream(se.StreamID, se.Code, fmt.Errorf("h2client: malformed response: %w", err))
				continue
			}
			return err
		}
		cc.frames.Add(1)
		switch f := f.(type) {
		case *http2.HeadersFrame:
			// The framer sees to it that the block's CONTINUATION
			// frames come next, and nothing else.
			cc.hdr.start(cc.stream(f.StreamID), f.StreamEnded())
			if err := cc.readHeaders(f.HeaderBlockFragment(), f.HeadersEnded()); err != nil {
				return err
			}
		case *http2.ContinuationFrame:
			if err := cc.readHeaders(f.HeaderBlockFragment(), f.HeadersEnded()); err != nil {
				return err
			}
		case *http2.DataFrame:
			cc.onData(f)
		case *http2.RSTStreamFrame:
			if st := cc.stream(f.StreamID); st != nil {
				cc.finish(st, streamReset{id: f.StreamID, code: f.ErrCode})
			}
		case *http2.SettingsFrame:
			if f.IsAck() {
				continue
			}
			if err := cc.onSettings(f); err != nil {
				return err
			}
			cc.flush()
		case *http2.PingFrame:
			if !f.IsAck() {
				cc.write(func(fr *http2.Framer) error { return fr.WritePing(true, f.Data) })
			}
		case *http2.GoAwayFrame:
			cc.onGoAway(f)
		case *http2.WindowUpdateFrame:
			if err := cc.onWindowUpdate(f); err != nil {
				return err
			}
		case *http2.PushPromiseFrame:
			return errors.New("h2client: server push, which the client disabled")
		}
		// PRIORITY and unknown frames are ignored (RFC 9113 5.5).
	}
}

func (cc *clientConn) stream(id uint32) *stream {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	return cc.streams[id]
}

// resetStream fails a stream the read loop found at fault and resets it.
func (cc *clientConn) resetStream(id uint32, code http2.ErrCode, err error) {
	st := cc.stream(id)
	if st == nil {
		return
	}
	cc.finish(st, err)
	cc.write(func(fr *http2.Framer) error { return fr.WriteRSTStream(id, code) })
}

// readHeaders decodes a fragment of a response's header block, and acts
// on the block once it ended.
func (cc *clientConn) readHeaders(fragment []byte, ended bool) error {
	if err := cc.hdr.write(fragment); err != nil {
		return err
	}
	if !ended {
		return nil
	}
	if err := cc.hdr.end(); err != nil {
		return err
	}
	cc.onHeaders(cc.hdr)
	return nil
}

// onHeaders acts on a header block the read loop decoded.
//
// The stream is the one found when the block began. Abandoned since,
// it is ended already: finish and resetStream then do nothing, and the
// status and fields set on it are read by no one.
func (cc *clientConn) onHeaders(h *headerReader) {
	st := h.st
	if st == nil {
		return // abandoned
	}
	if !st.gotHeaders {
		if h.invalid != nil {
			cc.resetStream(st.id, http2.ErrCodeProtocol, fmt.Errorf("h2client: malformed response headers: %w", h.invalid))
			return
		}
		code, err := strconv.Atoi(h.status)
		if err != nil || len(h.status) != 3 || h.truncated {
			cc.resetStream(st.id, http2.ErrCodeProtocol, fmt.Errorf("h2client: malformed response headers (:status %q)", h.status))
			return
		}
		if code < 200 {
			return // interim response (1xx)
		}
		st.status = code
		st.fields = h.kept()
		st.gotHeaders = true
		cc.answered.Store(true)
	}
	// Later HEADERS are trailers, which no push service sends.
	if h.endStream {
		cc.finish(st, nil)
	}
}

func (cc *clientConn) onData(f *http2.DataFrame) {
	// Flow control counts the whole frame, padding too, on every stream,
	// abandoned ones included.
	if n := int64(f.Length); n > 0 {
		cc.recvTaken += n
		if cc.recvTaken >= connRecvWindow/2 {
			incr := uint32(cc.recvTaken)
			cc.recvTaken = 0
			cc.write(func(fr *http2.Framer) error { return fr.WriteWindowUpdate(0, incr) })
		}
	}
	st := cc.stream(f.StreamID)
	if st == nil {
		return
	}
	if !st.gotHeaders {
		cc.resetStream(f.StreamID, http2.ErrCodeProtocol, errors.New("h2client: DATA before the response headers"))
		return
	}
	data := f.Data()
	if len(st.body)+len(data) > maxResponseBody {
		cc.resetStream(f.StreamID, http2.ErrCodeCancel, errBodyTooLarge)
		return
	}
	st.body = append(st.body, data...)
	if f.StreamEnded() {
		cc.finish(st, nil)
	}
}

// onSettings applies the service's settings and queues the
// acknowledgement, which the caller sends.
func (cc *clientConn) onSettings(f *http2.SettingsFrame) error {
	cc.mu.Lock()
	err := f.ForeachSetting(func(s http2.Setting) error {
		switch s.ID {
		case http2.SettingMaxConcurrentStreams:
			cc.maxStreams = int(min(s.Val, 1<<16))
		case http2.SettingInitialWindowSize:
			// Valid range checked by the framer; the change applies
			// to the open streams too (RFC 9113 6.9.2).
			delta := int64(s.Val) - cc.initWindow
			for _, st := range cc.streams {
				st.sendWindow += delta
			}
			cc.initWindow = int64(s.Val)
		case http2.SettingMaxFrameSize:
			cc.maxFrame = s.Val
		case http2.SettingHeaderTableSize:
			cc.tableSize = s.Val
			cc.tableUpdate = true
		}
		return nil
	})
	close(cc.windowGrew)
	cc.windowGrew = make(chan struct{})
	update, size := cc.tableUpdate, cc.tableSize
	cc.tableUpdate = false
	cc.mu.Unlock()
	if err != nil {
		return err
	}
	cc.wmu.Lock()
	if update {
		cc.setTableSizeLimit(size)
	}
	cc.fr.WriteSettingsAck()
	cc.wmu.Unlock()
	cc.hook(true)
	return nil
}

// flush sends whatever is queued.
func (cc *clientConn) flush() {
	cc.wmu.Lock()
	cc.flushLocked()
}

func (cc *clientConn) onGoAway(f *http2.GoAwayFrame) {
	if f.LastStreamID > 0 {
		// The service took requests and will answer them. net/http's
		// server sends this GOAWAY before the answer it comes with, and
		// the pool must not take the connection for one that died
		// unanswered.
		cc.answered.Store(true)
	}
	cc.mu.Lock()
	cc.draining = true
	excluded := unprocessedError(newGoneAway(f))
	for id, st := range cc.streams {
		if id > f.LastStreamID {
			delete(cc.streams, id)
			st.end(excluded)
		}
	}
	cc.busy.Store(int32(len(cc.streams)))
	cc.mu.Unlock()
	cc.released()
	cc.hook(true) // waiters may now dial instead
}

func (cc *clientConn) onWindowUpdate(f *http2.WindowUpdateFrame) error {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	incr := int64(f.Increment)
	if f.StreamID == 0 {
		if cc.sendWindow+incr > maxStreamID {
			return errors.New("h2client: the service overflowed the connection's window")
		}
		cc.sendWindow += incr
	} else if st := cc.streams[f.StreamID]; st != nil {
		st.sendWindow += incr
	}
	close(cc.windowGrew)
	cc.windowGrew = make(chan struct{})
	return nil
}

// watch pings a connection that has been quiet for pingAfter and closes
// it when nothing arrives within pingTimeout after; it also closes a
// connection unused for idleTimeout. It looks at the count of frames read
// watchLooks times per pingAfter, rather than have the read loop note the
// time of every frame, which every push would pay for: a connection is
// pinged between pingAfter and a quarter more after its last frame. (It
// once looked once per pingAfter, and a frame just after one look put the
// ping off to the look after next: almost twice as late.)
//
// Requests that have waited stallAfter with nothing at all read on the
// connection get it pinged at once, and closed when that ping goes
// unanswered for stallPingTimeout: a push service answers in
// milliseconds, and a path gone dead under a connection (a NAT or
// firewall that forgot it) otherwise held every push sent on it, each
// to its deadline, for up to pingAfter and pingTimeout, 40 s.
func (cc *clientConn) watch() {
	look := min(cc.pings.after/watchLooks, stallAfter/2)
	t := time.NewTimer(look)
	defer t.Stop()
	seen, quietSince := cc.frames.Load(), time.Now()
	var waitingSince time.Time // requests under way with nothing read since; zero: none
	for {
		select {
		case <-cc.readDone:
			return
		case <-t.C:
		}
		if cc.closeIfIdle() {
			return
		}
		now := time.Now()
		if n := cc.frames.Load(); n != seen {
			seen, quietSince, waitingSince = n, now, time.Time{}
		}
		switch busy := cc.busy.Load() > 0; {
		case !busy:
			waitingSince = time.Time{}
		case waitingSince.IsZero():
			waitingSince = now
		}
		var timeout time.Duration
		switch {
		case now.Sub(quietSince) >= cc.pings.after:
			timeout = cc.pings.timeout
		case !waitingSince.IsZero() && now.Sub(waitingSince) >= stallAfter:
			timeout = min(cc.pings.timeout, stallPingTimeout)
		default:
			t.Reset(look)
			continue
		}
		cc.write(func(fr *http2.Framer) error { return fr.WritePing(false, [8]byte{'p', 'u', 's', 'h'}) })
		queued, known := sendQueued(cc.raw)
		for {
			t.Reset(timeout)
			select {
			case <-cc.readDone:
				return
			case <-t.C:
			}
			if cc.frames.Load() != seen {
				break
			}
			// Unanswered. While the service's end still takes our
			// bytes (the socket's queue of bytes not yet acked
			// shrank), the path is slow, not dead: the ping may be
			// behind them (a large body on a slow uplink).
			if q, ok := sendQueued(cc.raw); known && ok && q < queued {
				queued = q
				continue
			}
			cc.closeWith(fmt.Errorf("h2client: no answer to a ping in %s", timeout))
			return
		}
		seen, quietSince, waitingSince = cc.frames.Load(), time.Now(), time.Time{}
		t.Reset(look)
	}
}

// stallAfter is how long requests may wait on a connection from which
// nothing is read before it is pinged at once, and stallPingTimeout how
// long that ping may go unanswered (see watch).
const (
	stallAfter       = 2 * time.Second
	stallPingTimeout = 2 * time.Second
)

// watchLooks is how many times per pingAfter watch looks.
const watchLooks = 4

func (cc *clientConn) closeIfIdle() bool {
	cc.mu.Lock()
	idle := len(cc.streams) == 0 && cc.reserved == 0 && cc.closed == nil && time.Since(cc.idleSince) >= cc.idleTimeout
	if idle {
		// Set under the lock that Reserve takes: nothing is reserved
		// on the connection after this.
		cc.closed = errIdle
	}
	cc.mu.Unlock()
	if !idle {
		return false
	}
	cc.write(func(fr *http2.Framer) error { return fr.WriteGoAway(0, http2.ErrCodeNo, nil) })
	cc.nc.Close()
	cc.hook(true)
	return true
}
