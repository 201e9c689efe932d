package httpapi

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/push-appserver/push-appserver/internal/testutil/logbuf"
)

// Past its slots the listener closes what it accepts at once; a slot
// comes back when a connection closes.
func TestLimitListener(t *testing.T) {
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var refused []string
	ln := LimitListener(raw, NewConnLimit(ConnLimitOptions{Slots: 2, PerClient: 1, Refused: func(why string) { refused = append(refused, why) }}))
	defer ln.Close()
	accepted := make(chan net.Conn, 8)
	next := func() net.Conn {
		t.Helper()
		select {
		case c := <-accepted:
			return c
		case <-time.After(5 * time.Second):
			t.Fatal("a connection within the slots was not accepted")
			return nil
		}
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted <- c
		}
	}()
	dial := func() net.Conn {
		c, err := net.Dial("tcp", raw.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	closed := func(c net.Conn) bool {
		c.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
		_, err := c.Read(make([]byte, 1))
		return err == io.EOF
	}
	// Both from loopback, which the per-client cap does not bound.
	dial()
	dial()
	first := next()
	next()
	third := dial()
	if !closed(third) {
		t.Fatal("a connection past the slots stayed open")
	}
	first.Close()
	fourth := dial()
	next()
	if closed(fourth) {
		t.Fatal("the connection in the freed slot was closed")
	}
	// Read after the accept that followed the refusal.
	if strings.Join(refused, " ") != RefusedSlots {
		t.Fatalf("refusals told: %q, want one %q", refused, RefusedSlots)
	}
}

// The cap leaves descriptors for the process's own connections: a
// quarter of the limit, at least 100, and the reserve is what it leaves.
func TestConnectionCap(t *testing.T) {
	if n := ConnectionCap(); n < 16 || n > 1<<16 {
		t.Fatalf("ConnectionCap() = %d", n)
	}
	if n := DescriptorReserve(); n < 0 || n > 1<<18 {
		t.Fatalf("DescriptorReserve() = %d", n)
	}
	for _, tt := range []struct{ limit, cap, reserve int }{
		{0, 1 << 16, 1 << 16}, // unknown, or over 2^20
		{16, 16, 0},
		{64, 16, 48},
		{128, 28, 100},
		{1024, 768, 256},      // a shell's usual limit
		{65536, 49152, 16384}, // deploy/push-appserver.service
		{1 << 20, 786432, 262144},
	} {
		if c, r := connectionCap(tt.limit), descriptorReserve(tt.limit); c != tt.cap || r != tt.reserve {
			t.Errorf("limit %d: cap %d, reserve %d; want %d, %d", tt.limit, c, r, tt.cap, tt.reserve)
		}
	}
}

// queueListener hands out the connections queued in it, then errDrained:
// a refused connection shows as the error, without a network or a
// goroutine between the test and Accept.
type queueListener struct {
	net.Listener
	queue []net.Conn
}

var errDrained = errors.New("no connection queued")

func (l *queueListener) Accept() (net.Conn, error) {
	if len(l.queue) == 0 {
		return nil, errDrained
	}
	c := l.queue[0]
	l.queue = l.queue[1:]
	return c, nil
}

// peerConn is a connection from peer that only records its Close.
type peerConn struct {
	net.Conn
	peer   *net.TCPAddr
	closed int
}

func (c *peerConn) RemoteAddr() net.Addr { return c.peer }
func (c *peerConn) Close() error         { c.closed++; return nil }

// limitHarness accepts connections from given addresses through a
// LimitListener of lim.
type limitHarness struct {
	t   *testing.T
	lim *ConnLimit
	ql  *queueListener
	ln  net.Listener
}

func newLimitHarness(t *testing.T, o ConnLimitOptions) *limitHarness {
	lim := NewConnLimit(o)
	ql := &queueListener{}
	return &limitHarness{t: t, lim: lim, ql: ql, ln: LimitListener(ql, lim)}
}

// accept offers a connection from peer ("198.51.100.7", "2001:db8::1")
// and returns it when it was admitted, nil when it was closed at once.
func (h *limitHarness) accept(peer string) net.Conn {
	h.t.Helper()
	pc := &peerConn{peer: net.TCPAddrFromAddrPort(netip.AddrPortFrom(netip.MustParseAddr(peer), 4711))}
	if a := netip.MustParseAddr(peer); a.Is4() {
		// As net reports an IPv4 peer: in 16 bytes.
		pc.peer.IP = pc.peer.IP.To16()
	}
	h.ql.queue = append(h.ql.queue, pc)
	c, err := h.ln.Accept()
	switch {
	case err == nil && pc.closed == 0:
		return c
	case errors.Is(err, errDrained) && pc.closed == 1:
		return nil
	default:
		h.t.Fatalf("a connection from %s: %v, closed %d times", peer, err, pc.closed)
		return nil
	}
}

// clients is how many clients the limit keeps an entry for.
func (h *limitHarness) clients() int {
	h.lim.mu.Lock()
	defer h.lim.mu.Unlock()
	return len(h.lim.clients)
}

// A client at its share is refused while another is admitted; a close
// frees the share; the bookkeeping is gone once every connection is.
func TestPerClientLimit(t *testing.T) {
	var refused []string
	log := &logbuf.Buffer{}
	h := newLimitHarness(t, ConnLimitOptions{Slots: 100, PerClient: 2, Refused: func(why string) { refused = append(refused, why) },
		Logger: slog.New(slog.NewTextHandler(log, nil))})
	a1, a2 := h.accept("198.51.100.7"), h.accept("198.51.100.7")
	if a1 == nil || a2 == nil {
		t.Fatal("a client's first two connections were refused")
	}
	if h.accept("198.51.100.7") != nil {
		t.Fatal("a client's third connection was admitted")
	}
	b := h.accept("198.51.100.8")
	if b == nil {
		t.Fatal("another client was refused while the first was at its share")
	}
	if h.accept("::ffff:198.51.100.7") != nil {
		t.Fatal("the client, mapped into IPv6, was admitted past its share")
	}
	a1.Close()
	a1.Close()
	a3 := h.accept("198.51.100.7")
	if a3 == nil {
		t.Fatal("the share a close freed was not given")
	}
	if h.accept("198.51.100.7") != nil {
		t.Fatal("a connection closed twice freed two of its client's share")
	}
	if got := strings.Join(refused, " "); got != "per_client per_client per_client" {
		t.Errorf("refusals told: %q", got)
	}
	if !strings.Contains(log.String(), "client=198.51.100.7 max=2") {
		t.Errorf("the log does not name the refused client:\n%s", log.String())
	}
	for _, c := range []net.Conn{a2, a3, b} {
		c.Close()
	}
	if n := h.clients(); n != 0 {
		t.Fatalf("%d clients kept after all their connections closed", n)
	}
	if h.lim.held != 0 {
		t.Fatalf("%d slots held after all connections closed", h.lim.held)
	}
}

// An IPv6 client is its /64: a host has all of it to pick addresses from.
func TestPerClientLimitIPv6(t *testing.T) {
	h := newLimitHarness(t, ConnLimitOptions{Slots: 100, PerClient: 1})
	if h.accept("2001:db8:1:2::1") == nil {
		t.Fatal("the first connection of a /64 was refused")
	}
	if h.accept("2001:db8:1:2:ffff:ffff:ffff:fffe") != nil {
		t.Fatal("another address of the same /64 was admitted past its share")
	}
	if h.accept("2001:db8:1:3::1") == nil {
		t.Fatal("the next /64 was refused")
	}
	if h.accept("fe80::1%eth0") == nil {
		t.Fatal("a link-local address with a zone was refused")
	}
	if h.accept("fe80::2%eth1") != nil {
		t.Fatal("link-local addresses on other interfaces were counted apart")
	}
}

// Loopback and the trusted proxies, through which other clients come,
// are bounded by the slots alone; a cap of 0 bounds no client.
func TestPerClientLimitExempt(t *testing.T) {
	proxies := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("2001:db8:ffff::/48")}
	for _, tt := range []struct {
		name      string
		perClient int
		peer      string
		exempt    bool
	}{
		{"IPv4 loopback", 1, "127.0.0.1", true},
		{"another IPv4 loopback address", 1, "127.3.2.1", true},
		{"IPv6 loopback", 1, "::1", true},
		{"IPv4 loopback mapped into IPv6", 1, "::ffff:127.0.0.1", true},
		{"a trusted proxy", 1, "10.1.2.3", true},
		{"a trusted IPv6 proxy", 1, "2001:db8:ffff:1::5", true},
		{"a trusted proxy mapped into IPv6", 1, "::ffff:10.1.2.3", true},
		{"another client", 1, "192.168.1.1", false},
		{"an IPv6 client beside the proxies", 1, "2001:db8:fffe::1", false},
		{"no per-client cap", 0, "198.51.100.7", true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			h := newLimitHarness(t, ConnLimitOptions{Slots: 3, PerClient: tt.perClient, Exempt: proxies})
			var held []net.Conn
			for range 3 {
				if c := h.accept(tt.peer); c != nil {
					held = append(held, c)
				}
			}
			admitted, clients := 1, 1
			if tt.exempt {
				admitted, clients = 3, 0
			}
			if len(held) != admitted {
				t.Fatalf("%d of 3 connections admitted, want %d", len(held), admitted)
			}
			if tt.exempt && h.accept(tt.peer) != nil {
				t.Fatal("admitted past the slots")
			}
			if n := h.clients(); n != clients {
				t.Fatalf("%d clients kept, want %d", n, clients)
			}
			for _, c := range held {
				c.Close()
			}
			if n := h.clients(); n != 0 {
				t.Fatalf("%d clients kept after their connections closed", n)
			}
		})
	}
}

// A client over its share is named as such even when the slots are gone
// too; one that was refused for the slots takes no share.
func TestPerClientLimitAndSlots(t *testing.T) {
	var refused []string
	h := newLimitHarness(t, ConnLimitOptions{Slots: 2, PerClient: 1, Refused: func(why string) { refused = append(refused, why) }})
	h.accept("198.51.100.7")
	h.accept("198.51.100.8")
	h.accept("198.51.100.7")
	h.accept("198.51.100.9")
	if got := strings.Join(refused, " "); got != "per_client descriptors" {
		t.Errorf("refusals told: %q", got)
	}
	if n := h.clients(); n != 2 {
		t.Fatalf("%d clients kept, want the 2 admitted", n)
	}
}

// publicPeerListener makes every accepted connection look as if it came
// from 198.51.100.7, so that the per-client cap applies on loopback.
type publicPeerListener struct{ net.Listener }

type publicPeerConn struct{ net.Conn }

func (c publicPeerConn) RemoteAddr() net.Addr {
	return net.TCPAddrFromAddrPort(netip.MustParseAddrPort("198.51.100.7:4711"))
}

func (l publicPeerListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return publicPeerConn{c}, nil
}

func (l *ConnLimit) counts() (int, int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.held, len(l.clients)
}

func waitReleased(t *testing.T, lim *ConnLimit, what string) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		h, c := lim.counts()
		if h == 0 && c == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %d slots, %d clients still held", what, h, c)
		}
	}
}

// Every way a connection ends gives its slot and its client's share back.
func TestConnLimitClosePaths(t *testing.T) {
	lim := NewConnLimit(ConnLimitOptions{Slots: 100, PerClient: 4})
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "OK\n") }))
	srv.Listener.Close()
	srv.Listener = LimitListener(publicPeerListener{raw}, lim)
	srv.Config.ReadHeaderTimeout = 300 * time.Millisecond
	srv.Config.IdleTimeout = 300 * time.Millisecond
	srv.EnableHTTP2 = true
	srv.StartTLS()
	defer srv.Close()
	addr := raw.Addr().String()

	// Garbage instead of a handshake.
	c, _ := net.Dial("tcp", addr)
	io.WriteString(c, "GET / HTTP/1.1\r\n\r\n")
	io.Copy(io.Discard, c)
	c.Close()
	waitReleased(t, lim, "TLS handshake failed")

	// Nothing sent: the handshake times out.
	c, _ = net.Dial("tcp", addr)
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	io.Copy(io.Discard, c)
	c.Close()
	waitReleased(t, lim, "TLS handshake timed out")

	// HTTP/2, idle after a request.
	client := srv.Client()
	resp, err := client.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.ProtoMajor != 2 {
		t.Fatalf("HTTP/%d", resp.ProtoMajor)
	}
	waitReleased(t, lim, "HTTP/2 idle")

	// HTTP/1.1 kept alive, the client hangs up mid-request.
	tc, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"http/1.1"}})
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(tc, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nab")
	tc.Close()
	waitReleased(t, lim, "client hung up mid-request")

	// Kept alive, then Shutdown.
	tc, err = tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"h2"}})
	if err != nil {
		t.Fatal(err)
	}
	defer tc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	srv.Config.Shutdown(ctx)
	srv.Config.Close()
	waitReleased(t, lim, "Shutdown, then Close")
}

// An IPv4 client translated into IPv6 (RFC 6052's 64:ff9b::/96, as a
// server behind SIIT-DC or a NAT46 front sees every IPv4 client) is its
// IPv4 address, not the translator's /64: two IPv4 clients are two.
func TestPerClientLimitNAT64(t *testing.T) {
	h := newLimitHarness(t, ConnLimitOptions{Slots: 100, PerClient: 1})
	if h.accept("64:ff9b::c633:6407") == nil { // 198.51.100.7
		t.Fatal("the first IPv4 client was refused")
	}
	if h.accept("64:ff9b::cb00:7105") == nil { // 203.0.113.5
		t.Fatal("another IPv4 client, translated by the same NAT64 prefix, was refused: all IPv4 clients share one share")
	}
}

// The local-use NAT64 prefix (RFC 8215's 64:ff9b:1::/48, here with the
// common /96 embedding), which a SIIT-DC or NAT46 front of an IPv6-only
// site may use in place of 64:ff9b::/96 (and which the WebPush guard
// knows as NAT64): two IPv4 clients are still two, not one /64.
func TestPerClientLimitLocalUseNAT64(t *testing.T) {
	a := clientKey(netip.MustParseAddr("64:ff9b:1::c633:6407")) // 198.51.100.7
	b := clientKey(netip.MustParseAddr("64:ff9b:1::cb00:7105")) // 203.0.113.5
	if a == b {
		t.Fatalf("two IPv4 clients behind a local-use NAT64 prefix share one limit: both counted as %s", a)
	}
}

// errListener fails every Accept with err.
type errListener struct {
	net.Listener
	err error
}

func (l errListener) Accept() (net.Conn, error) { return nil, l.err }

// An accept that fails for want of a descriptor counts as a connection
// refused by the descriptor limit: the client waits in the backlog while
// net/http retries, and without the count only the log would say so.
// Other errors count as nothing.
func TestAcceptOutOfDescriptorsCounted(t *testing.T) {
	acceptErr := func(errno syscall.Errno) error {
		return &net.OpError{Op: "accept", Net: "tcp", Err: os.NewSyscallError("accept4", errno)}
	}
	for _, tt := range []struct {
		err  error
		want string
	}{
		{acceptErr(syscall.EMFILE), RefusedSlots},
		{acceptErr(syscall.ENFILE), RefusedSlots},
		{acceptErr(syscall.ECONNABORTED), ""},
		{net.ErrClosed, ""},
	} {
		var refused []string
		ln := LimitListener(errListener{err: tt.err}, NewConnLimit(ConnLimitOptions{Slots: 2, Refused: func(why string) { refused = append(refused, why) }}))
		if _, err := ln.Accept(); err != tt.err {
			t.Errorf("%v: Accept returned %v", tt.err, err)
		}
		if got := strings.Join(refused, " "); got != tt.want {
			t.Errorf("%v: refusals told %q, want %q", tt.err, got, tt.want)
		}
	}
}

// Connections refused because every slot is taken are logged, as a
// client past its share is: from then on every client is refused, and
// without a line an operator whose /metrics is on the same listeners
// (refused too) sees nothing at all. The line comes at most once a
// second, however many connections are refused.
func TestSlotsFullLogged(t *testing.T) {
	log := &logbuf.Buffer{}
	h := newLimitHarness(t, ConnLimitOptions{Slots: 2, PerClient: 128, Logger: slog.New(slog.NewTextHandler(log, nil))})
	if h.accept("198.51.100.7") == nil || h.accept("198.51.100.8") == nil {
		t.Fatal("a connection within the slots was refused")
	}
	for i := range 100 {
		if h.accept(fmt.Sprintf("198.51.100.%d", 10+i)) != nil {
			t.Fatal("a connection past the slots was admitted")
		}
	}
	if n := strings.Count(log.String(), "every connection slot"); n != 1 {
		t.Fatalf("%d lines for 100 connections refused past the slots in a moment, want 1:\n%s", n, log.String())
	}
	if !strings.Contains(log.String(), "slots=2") {
		t.Errorf("the line does not say how many slots there are:\n%s", log.String())
	}
}
