package httpapi_test

import (
	"bytes"
	"crypto/tls"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/push-appserver/push-appserver/internal/appserver"
	"github.com/push-appserver/push-appserver/internal/httpapi"
	"github.com/push-appserver/push-appserver/internal/sockio"
	"github.com/push-appserver/push-appserver/internal/testutil/logcore"
)

// http.max_connections_per_client bounds what one client address holds
// (README, "One client holding connections"), but over the TLS
// listener's HTTP/2 a connection carries many requests at once, each a
// handler that may wait up to ReadTimeout (10 s) for a body that never
// comes: with net/http's default of 250, one client's 128 connections
// held 32,000. A connection's streams beyond MaxStreamsPerConnection are
// refused.
func TestHTTP2StreamsPerConnectionBounded(t *testing.T) {
	h := httpapi.New(httpapi.Options{Service: logcore.New(t, appserver.Options{}), Logger: slog.New(slog.DiscardHandler)})
	addr := serveTLSLimited(t, h, httpapi.DefaultMaxConnectionsPerClient, netip.Addr{})

	c, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"h2"}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write([]byte(http2.ClientPreface))
	fr := http2.NewFramer(c, c)
	fr.WriteSettings()
	const streams = 300
	for i := range streams {
		var hb bytes.Buffer
		enc := hpack.NewEncoder(&hb)
		for _, f := range [][2]string{{":method", "POST"}, {":scheme", "https"}, {":authority", "x"}, {":path", "/push_appserver/v1/push-batch"}, {"content-length", "65536"}} {
			enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
		}
		// Headers, and a body that never comes.
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: uint32(2*i + 1), BlockFragment: hb.Bytes(), EndHeaders: true})
	}
	// The refusals come at once; the streams taken are answered when
	// their bodies' wait ends, 10 s on.
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	refused := 0
	for refused < streams-httpapi.MaxStreamsPerConnection {
		f, err := fr.ReadFrame()
		if err != nil {
			t.Fatalf("%d of %d streams refused (%v): a connection carries more than %d requests at once", refused, streams, err, httpapi.MaxStreamsPerConnection)
		}
		if rst, ok := f.(*http2.RSTStreamFrame); ok && rst.ErrCode == http2.ErrCodeRefusedStream {
			refused++
		}
	}
}

// peerListener reports every connection it accepts as coming from peer,
// each on its own port, so that the per-client share applies to a test
// client on loopback.
type peerListener struct {
	net.Listener
	peer netip.Addr
}

func (l peerListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	port := c.RemoteAddr().(*net.TCPAddr).Port
	return peerConnAt{Conn: c, addr: net.TCPAddrFromAddrPort(netip.AddrPortFrom(l.peer, uint16(port)))}, nil
}

type peerConnAt struct {
	net.Conn
	addr *net.TCPAddr
}

func (c peerConnAt) RemoteAddr() net.Addr { return c.addr }

// Over HTTP/2 one connection carries up to MaxStreamsPerConnection
// requests at once, each a handler that may wait ReadTimeout (10 s) for
// a body that never comes, with a body buffer and a goroutine: about
// 28 KiB each, 0.9 MiB a connection, where an HTTP/1.1 connection in the
// same wait holds about 25 KiB. Measured with the binary, one client
// address at its max_connections_per_client (128) held 115 MiB this way,
// and the slots the descriptor limit leaves (49,152 under systemd's
// LimitNOFILE=65536) some 44 GiB, taken by a few hundred addresses (an
// IPv6 /56). A request beyond a connection's first must hold a slot and
// one of its client's share, as a connection of its own would, so that
// a client's HTTP/2 connections hold no more requests than its HTTP/1.1
// connections could.
func TestHTTP2StreamsHoldClientShare(t *testing.T) {
	const perClient = 4
	var entered, exited atomic.Int64
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		entered.Add(1)
		defer exited.Add(1)
		io.Copy(io.Discard, r.Body) // waits for a body that never comes
	})
	client := netip.MustParseAddr("198.51.100.7")
	addr := serveTLSLimited(t, h, perClient, client)

	// open opens a connection of the client, whose frames a reader
	// counts the refused streams of.
	open := func() (*tls.Conn, *http2.Framer, *atomic.Int64) {
		c, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"h2"}})
		if err != nil {
			t.Fatal(err)
		}
		c.Write([]byte(http2.ClientPreface))
		fr := http2.NewFramer(c, c)
		fr.WriteSettings()
		var refused atomic.Int64
		go func() {
			for {
				f, err := fr.ReadFrame()
				if err != nil {
					return
				}
				if _, ok := f.(*http2.RSTStreamFrame); ok {
					refused.Add(1)
				}
			}
		}()
		return c, fr, &refused
	}
	// streams opens n requests on fr whose bodies never come, and
	// returns how many were refused, once each is refused or runs.
	streams := func(fr *http2.Framer, refused *atomic.Int64, n int) int {
		before := entered.Load() - exited.Load()
		for i := range n {
			var hb bytes.Buffer
			enc := hpack.NewEncoder(&hb)
			for _, f := range [][2]string{{":method", "POST"}, {":scheme", "https"}, {":authority", "x"}, {":path", "/push_appserver/v1/push"}, {"content-length", "4096"}} {
				enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
			}
			fr.WriteHeaders(http2.HeadersFrameParam{StreamID: uint32(2*i + 1), BlockFragment: hb.Bytes(), EndHeaders: true})
		}
		for deadline := time.Now().Add(5 * time.Second); int(refused.Load()+entered.Load()-exited.Load()-before) < n && time.Now().Before(deadline); {
			time.Sleep(5 * time.Millisecond)
		}
		return int(refused.Load())
	}

	c, fr, rst := open()
	const n = httpapi.MaxStreamsPerConnection
	refused := streams(fr, rst, n)
	if running := entered.Load() - exited.Load(); running > perClient || refused != n-int(running) {
		t.Fatalf("one connection of a client with a share of %d runs %d requests at once (%d of %d refused): its streams hold no share", perClient, running, refused, n)
	}
	// Connections and requests share the client's share: it is whole.
	if c2, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"h2"}}); err == nil {
		c2.Close()
		t.Fatal("a client whose requests hold its share was given another connection")
	}
	// Requests that end give their slots back.
	c.Close()
	for deadline := time.Now().Add(5 * time.Second); entered.Load() != exited.Load(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d handlers still run after their connection closed", entered.Load()-exited.Load())
		}
	}
	c3, fr3, rst3 := open()
	defer c3.Close()
	if refused := streams(fr3, rst3, perClient); refused != 0 {
		t.Fatalf("after the requests ended, %d of %d refused: their slots were not given back", refused, perClient)
	}
}

// A request refused by its client's share over HTTP/2 is answered 503
// with Retry-After, not reset: a stream reset with INTERNAL_ERROR (the
// only reset a handler can give) is what Go's client and curl give up
// on, and a backend multiplexing its pushes on one connection would take
// the push for failed, where it was never served. It is counted as a
// refusal by the client's share, as a connection over it would be.
func TestHTTP2RequestOverShareAnswered(t *testing.T) {
	release, holding := make(chan struct{}), make(chan struct{})
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/hold" {
			close(holding)
			<-release
		}
		w.Write([]byte("OK\n"))
	})
	var mu sync.Mutex
	var refused []string
	addr := serveTLSLimitedWith(t, h, httpapi.ConnLimitOptions{Slots: 1000, PerClient: 1, Refused: func(why string) {
		mu.Lock()
		defer mu.Unlock()
		refused = append(refused, why)
	}}, netip.MustParseAddr("198.51.100.8"))
	defer close(release)

	tr := &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, ForceAttemptHTTP2: true}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 5 * time.Second}
	url := "https://" + addr
	// One connection, made first: the client's whole share.
	resp, err := client.Get(url + "/push")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	// Its first request, held.
	go func() {
		if resp, err := client.Get(url + "/hold"); err == nil {
			resp.Body.Close()
		}
	}()
	<-holding
	// A second request on the same connection.
	resp, err = client.Get(url + "/push")
	if err != nil {
		t.Fatalf("a request over the client's share: %v, want an answer", err)
	}
	resp.Body.Close()
	if resp.ProtoMajor != 2 || resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("a request over the client's share: HTTP/%d %d, Retry-After %q; want HTTP/2 503 with Retry-After", resp.ProtoMajor, resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	// Counted as a refusal by the client's share, as a connection
	// over it is: the operator's metric of refusals sees it.
	mu.Lock()
	defer mu.Unlock()
	if !slices.Equal(refused, []string{httpapi.RefusedClient}) {
		t.Errorf("refusals told %q, want [%q]", refused, httpapi.RefusedClient)
	}
}

// TestHTTP2RefusedRequestsHoldNothing guards what a client's share bounds
// over HTTP/2: a request refused by it must leave nothing behind. An
// answer with a body waits for the stream's flow-control window, which a
// client grants at will: one that sets it to 0 held each refused
// request's handler, with its stream, until WriteTimeout (40 s), up to
// MaxStreamsPerConnection of them on each of its connections, as many as
// the share was there to refuse. The refusal's answer is headers alone,
// which flow control does not hold.
func TestHTTP2RefusedRequestsHoldNothing(t *testing.T) {
	release, holding := make(chan struct{}), make(chan struct{})
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(holding)
		<-release
	})
	addr := serveTLSLimited(t, h, 1, netip.MustParseAddr("198.51.100.9"))
	defer close(release)

	c, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"h2"}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write([]byte(http2.ClientPreface))
	fr := http2.NewFramer(c, c)
	// No stream may be sent a byte of body.
	fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 0})
	request := func(id uint32) {
		var hb bytes.Buffer
		enc := hpack.NewEncoder(&hb)
		for _, f := range [][2]string{{":method", "GET"}, {":scheme", "https"}, {":authority", "x"}, {":path", "/"}} {
			enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
		}
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: hb.Bytes(), EndHeaders: true, EndStream: true})
	}
	request(1) // the connection's first request, held
	<-holding
	const refused = httpapi.MaxStreamsPerConnection - 1
	for i := range refused {
		request(uint32(2*i + 3))
	}
	// The refusals' headers, which no window holds.
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	answered := map[uint32]bool{}
	for len(answered) < refused {
		f, err := fr.ReadFrame()
		if err != nil {
			t.Fatalf("%d of %d refusals answered: %v", len(answered), refused, err)
		}
		if hf, ok := f.(*http2.HeadersFrame); ok && hf.StreamID != 1 {
			answered[hf.StreamID] = true
		}
	}
	// Then nothing of them may be left but the held request's handler.
	deadline := time.Now().Add(5 * time.Second)
	for {
		n := handlersRunning()
		if n <= 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("5 s after %d refused requests were answered, %d handlers still run (1 held): each refusal waits for a window the client never gives", refused, n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// handlersRunning counts the goroutines running an HTTP/2 handler.
func handlersRunning() int {
	buf := make([]byte, 8<<20)
	buf = buf[:runtime.Stack(buf, true)]
	n := 0
	for _, g := range bytes.Split(buf, []byte("\n\n")) {
		if bytes.Contains(g, []byte("serverConn).runHandler")) {
			n++
		}
	}
	return n
}

// serveTLSLimited serves h over TLS (HTTP/2 offered) on a loopback port
// through a ConnLimit of perClient connections a client, every
// connection counted as peer's when peer is valid, until the test ends,
// and returns its address.
func serveTLSLimited(t *testing.T, h http.Handler, perClient int, peer netip.Addr) string {
	t.Helper()
	return serveTLSLimitedWith(t, h, httpapi.ConnLimitOptions{Slots: 1000, PerClient: perClient}, peer)
}

// serveTLSLimitedWith is serveTLSLimited with the limit's options.
func serveTLSLimitedWith(t *testing.T, h http.Handler, o httpapi.ConnLimitOptions, peer netip.Addr) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var l net.Listener = sockio.Listener{Listener: ln}
	if peer.IsValid() {
		l = peerListener{Listener: l, peer: peer}
	}
	lim := httpapi.NewConnLimit(o)
	srv := httpapi.NewServer(ln.Addr().String(), h, slog.New(slog.DiscardHandler))
	srv.TLSConfig = &tls.Config{Certificates: []tls.Certificate{testCertificate(t)}}
	go srv.ServeTLS(httpapi.LimitListener(l, lim), "", "")
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}
