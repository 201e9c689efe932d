package httpapi

import (
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/push-appserver/push-appserver/internal/testutil/logbuf"
)

func TestClientOfRequest(t *testing.T) {
	l := newClientLimit(60, DefaultTrustedProxies(), nil)
	tests := []struct {
		name   string
		peer   string
		xff    []string
		client string // "" when not limited
	}{
		{"direct", "198.51.100.7:4711", nil, "198.51.100.7"},
		{"direct, its own X-Forwarded-For ignored", "198.51.100.7:4711", []string{"203.0.113.9"}, "198.51.100.7"},
		{"IPv4 mapped into IPv6", "[::ffff:198.51.100.7]:4711", nil, "198.51.100.7"},
		{"IPv6 counted by its /64", "[2001:db8:1:2:aaaa::1]:4711", nil, "2001:db8:1:2::"},
		{"through the local proxy", "127.0.0.1:4711", []string{"198.51.100.7"}, "198.51.100.7"},
		{"what the client wrote before its address", "127.0.0.1:4711", []string{"203.0.113.9, 198.51.100.7"}, "198.51.100.7"},
		{"two trusted proxies", "127.0.0.1:4711", []string{"198.51.100.7, 10.1.2.3"}, "198.51.100.7"},
		{"several header lines", "127.0.0.1:4711", []string{"203.0.113.9", "198.51.100.7,10.1.2.3"}, "198.51.100.7"},
		{"an address with a port", "127.0.0.1:4711", []string{"[2001:db8::1]:443"}, "2001:db8::"},
		{"IPv4 with a port", "127.0.0.1:4711", []string{"198.51.100.7:443 "}, "198.51.100.7"},
		{"spaces and empty entries", "127.0.0.1:4711", []string{" 198.51.100.7 , ,"}, "198.51.100.7"},
		{"a proxy's garbage counts against the proxy", "10.1.2.3:4711", []string{"unknown"}, "10.1.2.3"},
		{"garbage behind the client is not read", "127.0.0.1:4711", []string{"unknown, 198.51.100.7"}, "198.51.100.7"},
		{"no client named", "127.0.0.1:4711", nil, ""},
		{"only trusted hops", "127.0.0.1:4711", []string{"10.9.9.9, 127.0.0.1"}, ""},
		{"IPv6 loopback", "[::1]:4711", nil, ""},
		{"no address", "@", nil, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := &http.Request{RemoteAddr: tt.peer, Header: http.Header{}}
			for _, v := range tt.xff {
				r.Header.Add("X-Forwarded-For", v)
			}
			c, limited := l.client(r)
			got := ""
			if limited {
				got = c.String()
			}
			if got != tt.client {
				t.Errorf("client = %q, want %q", got, tt.client)
			}
		})
	}
}

func TestClientOfRequestBoundsHops(t *testing.T) {
	l := newClientLimit(60, []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}, nil)
	r := &http.Request{RemoteAddr: "10.0.0.1:1", Header: http.Header{}}
	xff := "198.51.100.7"
	for range maxHops {
		xff += ", 10.0.0.2"
	}
	r.Header.Set("X-Forwarded-For", xff)
	// The client is one entry beyond the bound: the walk stops at the
	// last trusted proxy and counts the request against it.
	if c, limited := l.client(r); !limited || c.String() != "10.0.0.2" {
		t.Errorf("client = %v (limited %v), want the last proxy read, 10.0.0.2", c, limited)
	}
	r.Header.Set("X-Forwarded-For", xff[len("198.51.100.7, "):]+", 198.51.100.7")
	if c, _ := l.client(r); c.String() != "198.51.100.7" {
		t.Errorf("client = %v, want 198.51.100.7", c)
	}
}

// A client over its limit is told when to come back, in whole seconds.
func TestClientLimitRetryAfter(t *testing.T) {
	l := newClientLimit(3, nil, nil)
	r := &http.Request{RemoteAddr: "198.51.100.7:1", Header: http.Header{}}
	for range 3 {
		l.allow(r)
	}
	ok, wait := l.allow(r)
	// 3 a minute: one every 20 s.
	if ok || wait < 19*time.Second || wait > 20*time.Second || retryAfter(wait) != "20" {
		t.Errorf("fourth request: allowed %v, wait %v, Retry-After %q; want refused, 20", ok, wait, retryAfter(wait))
	}
	if got := retryAfter(time.Millisecond); got != "1" {
		t.Errorf("Retry-After for 1ms = %q, want 1", got)
	}
}

func TestNoClientLimit(t *testing.T) {
	l := newClientLimit(0, nil, nil)
	for range 1000 {
		if ok, _ := l.allow(&http.Request{RemoteAddr: "198.51.100.7:1"}); !ok {
			t.Fatal("refused with the limit off")
		}
	}
}

// A proxy left out of trusted_proxies makes its clients one: the log
// says so when that one is limited, and not when a client named by a
// trusted proxy is.
func TestClientLimitWarnsOfUntrustedProxy(t *testing.T) {
	for _, tt := range []struct {
		peer string
		warn bool
	}{
		{"203.0.113.5:1", true},
		{"127.0.0.1:1", false},
	} {
		var log logbuf.Buffer
		l := newClientLimit(1, DefaultTrustedProxies(), slog.New(slog.NewTextHandler(&log, nil)))
		r := &http.Request{RemoteAddr: tt.peer, Header: http.Header{"X-Forwarded-For": {"198.51.100.7"}}}
		l.allow(r)
		if ok, _ := l.allow(r); ok {
			t.Fatalf("%s: second request allowed", tt.peer)
		}
		if got := strings.Contains(log.String(), "not in http.trusted_proxies"); got != tt.warn {
			t.Errorf("%s: warned %v, want %v:\n%s", tt.peer, got, tt.warn, log.String())
		}
	}
}

// BenchmarkClientLimit is what the limit adds to a registration: the
// client read from X-Forwarded-For behind the local proxy, and its
// bucket, among 10,000 clients.
func BenchmarkClientLimit(b *testing.B) {
	l := newClientLimit(1<<30, DefaultTrustedProxies(), nil)
	reqs := make([]*http.Request, 10000)
	for i := range reqs {
		reqs[i] = &http.Request{RemoteAddr: "127.0.0.1:4711", Header: http.Header{
			"X-Forwarded-For": {netip.AddrFrom4([4]byte{198, 51, byte(i >> 8), byte(i)}).String()}}}
	}
	i := 0
	for b.Loop() {
		if ok, _ := l.allow(reqs[i%len(reqs)]); !ok {
			b.Fatal("refused")
		}
		i++
	}
}

// Refused clients are named in the log, at most once a second.
func TestClientLimitLogsRefusals(t *testing.T) {
	var log logbuf.Buffer
	l := newClientLimit(1, nil, slog.New(slog.NewTextHandler(&log, nil)))
	r := &http.Request{RemoteAddr: "198.51.100.7:1", Header: http.Header{}}
	l.allow(r)
	for range 3 {
		if ok, _ := l.allow(r); ok {
			t.Fatal("allowed past the limit")
		}
	}
	if n := strings.Count(log.String(), `msg="registration refused by the per-client limit" client=198.51.100.7`); n != 1 {
		t.Errorf("%d log lines for three refusals within a second, want 1:\n%s", n, log.String())
	}
}

// Whatever X-Forwarded-For holds, the client read from it is the peer,
// an address written in it, or nobody.
func FuzzClientOfRequest(f *testing.F) {
	for _, xff := range []string{"198.51.100.7", "203.0.113.9, 198.51.100.7", "unknown, 10.0.0.1", "[2001:db8::1]:443",
		" , ,", "::ffff:192.0.2.1", strings.Repeat("10.0.0.1,", 40), "fe80::1%eth0"} {
		f.Add("127.0.0.1:4711", xff)
	}
	f.Add("198.51.100.7:4711", "10.0.0.1")
	f.Add("[::1]:4711", "2001:db8:1:2::3")
	l := newClientLimit(60, DefaultTrustedProxies(), nil)
	f.Fuzz(func(t *testing.T, peer, xff string) {
		r := &http.Request{RemoteAddr: peer, Header: http.Header{"X-Forwarded-For": {xff}}}
		c, limited := l.client(r)
		if !limited {
			return
		}
		var candidates []netip.Addr
		if ap, err := netip.ParseAddrPort(peer); err == nil {
			candidates = append(candidates, clientKey(ap.Addr().Unmap()))
		}
		for _, entry := range strings.Split(xff, ",") {
			if a, ok := parseHop(strings.TrimSpace(entry)); ok {
				candidates = append(candidates, clientKey(a))
			}
		}
		for _, a := range candidates {
			if a == c {
				return
			}
		}
		t.Fatalf("client %v is neither the peer %q nor in X-Forwarded-For %q", c, peer, xff)
	})
}

// TestClientOfRequestIPv6Zones: a reverse proxy reaching us over an IPv6
// link-local address (RemoteAddr "[fe80::1%eth0]:port", as Go writes it)
// is a trusted proxy when trusted_proxies lists it (the connection limit
// sees it so); its clients are each counted by their own address, not all
// against the proxy. Bracketed X-Forwarded-For entries without a port are
// addresses too.
func TestClientOfRequestIPv6Zones(t *testing.T) {
	l := newClientLimit(60, []netip.Prefix{netip.MustParsePrefix("fe80::/10"), netip.MustParsePrefix("::1/128")}, nil)
	for _, tt := range []struct{ name, peer, xff, client string }{
		{"link-local proxy with its zone", "[fe80::1%eth0]:4711", "2001:db8:1::7", "2001:db8:1::"},
		{"bracketed entry without a port", "[::1]:4711", "[2001:db8:2::7]", "2001:db8:2::"},
	} {
		r := &http.Request{RemoteAddr: tt.peer, Header: http.Header{"X-Forwarded-For": {tt.xff}}}
		c, limited := l.client(r)
		if got := c.String(); !limited || got != tt.client {
			t.Errorf("%s: client = %q (limited %v), want %q", tt.name, got, limited, tt.client)
		}
	}
}

// TestUntrustedProxyWarningNamesIPv6Proxy: the warning that tells the
// operator an X-Forwarded-For came from an address missing in
// http.trusted_proxies must name that address. An IPv6 proxy named by
// its /64's first address (2001:db8:1:2::) is an address that, copied
// into trusted_proxies, trusts nothing: the proxy stays untrusted and its
// clients keep sharing one limit.
func TestUntrustedProxyWarningNamesIPv6Proxy(t *testing.T) {
	var log logbuf.Buffer
	l := newClientLimit(1, DefaultTrustedProxies(), slog.New(slog.NewTextHandler(&log, nil)))
	r := &http.Request{RemoteAddr: "[2001:db8:1:2::5]:4711", Header: http.Header{"X-Forwarded-For": {"198.51.100.7"}}}
	l.allow(r)
	l.allow(r)
	var warning string
	for _, line := range strings.Split(log.String(), "\n") {
		if strings.Contains(line, "not in http.trusted_proxies") {
			warning = line
		}
	}
	if !strings.Contains(warning, "addr=2001:db8:1:2::5") {
		t.Fatalf("warning does not name the proxy 2001:db8:1:2::5:\n%s", warning)
	}
}

// pushSource names a client it named lately without an allocation, and
// never by another's name, however their addresses share its slots.
func TestPushSourceNamedOnce(t *testing.T) {
	a := &api{}
	from := func(addr string) *http.Request {
		r := httptest.NewRequest(http.MethodPost, "/", nil)
		r.RemoteAddr = addr
		return r
	}
	r := from("198.51.100.7:5222")
	if got := a.pushSource(r); got != "198.51.100.7" {
		t.Fatalf("source %q", got)
	}
	if n := testing.AllocsPerRun(100, func() { a.pushSource(r) }); n != 0 {
		t.Errorf("%v allocations naming a client named before", n)
	}
	for round := range 2 {
		for i := range 2048 {
			want := fmt.Sprintf("10.%d.%d.1", i>>8, i&255)
			if i%2 == 1 {
				want = fmt.Sprintf("2001:db8:%x::", i)
			}
			addr := want
			if i%2 == 1 {
				addr = "[" + want + "1]"
			}
			if got := a.pushSource(from(addr + ":5222")); got != want {
				t.Fatalf("round %d: client %s named %q", round, want, got)
			}
		}
	}
}

// TestPushSourcePeerKept guards the peers pushSource keeps by RemoteAddr:
// what it keeps is the peer alone, so that X-Forwarded-For is still read
// from each request of a trusted proxy's connection, and a peer whose
// address shares a slot with another is never taken for it.
func TestPushSourcePeerKept(t *testing.T) {
	a := &api{Options: Options{TrustedProxies: DefaultTrustedProxies()}}
	req := func(remote string, forwarded ...string) *http.Request {
		r := httptest.NewRequest(http.MethodPost, "/", nil)
		r.RemoteAddr = remote
		if forwarded != nil {
			r.Header["X-Forwarded-For"] = forwarded
		}
		return r
	}
	for _, tt := range []struct {
		r    *http.Request
		want string
	}{
		{req("127.0.0.1:4711", "198.51.100.7"), "198.51.100.7"},
		{req("127.0.0.1:4711", "203.0.113.9"), "203.0.113.9"},
		{req("127.0.0.1:4711"), "127.0.0.1"},
		{req("127.0.0.1:4711", "203.0.113.9, 10.0.0.2"), "203.0.113.9"},
		{req("198.51.100.7:4711", "203.0.113.9"), "198.51.100.7"},
		{req("198.51.100.7:4711"), "198.51.100.7"},
		{req("[2001:db8:1:2::5]:4711", "203.0.113.9"), "2001:db8:1:2::"},
		{req("[::ffff:127.0.0.1]:4712", "198.51.100.8"), "198.51.100.8"},
		{req("not an address"), ""},
		{req("not an address"), ""},
	} {
		if got := a.pushSource(tt.r); got != tt.want {
			t.Errorf("source of a request from %s, X-Forwarded-For %q: %q, want %q", tt.r.RemoteAddr, tt.r.Header["X-Forwarded-For"], got, tt.want)
		}
	}
	// Every address in its own slot or sharing one, in two rounds: each
	// named as itself.
	for round := range 2 {
		for i := range 1024 {
			want := fmt.Sprintf("198.51.%d.%d", i>>8, i&255)
			if got := a.pushSource(req(fmt.Sprintf("%s:%d", want, 1024+i%7))); got != want {
				t.Fatalf("round %d: peer %s named %q", round, want, got)
			}
		}
	}
}

// TestClientLimitOneNetworkCannotTakeEveryBucket guards the limiter's
// buckets against a client with a network of addresses: the 65,536 /64s
// of one IPv6 /48 (or the 256 addresses of an IPv4 /24, then more /24s)
// each registering once must leave every other client a limit of its own,
// rather than send them all to the one bucket beyond the limiter's
// table, where 60 registrations a minute would be everyone's.
func TestClientLimitOneNetworkCannotTakeEveryBucket(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	l := newClientLimitAt(60, nil, nil, func() time.Time { return now })
	req := func(a netip.Addr) *http.Request {
		return &http.Request{RemoteAddr: netip.AddrPortFrom(a, 4711).String(), Header: http.Header{}}
	}
	// Each /64 of 2001:db8:aaaa::/48 registers once: 65,536 clients.
	for i := range 1 << 16 {
		a := netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 0xaa, 0xaa, byte(i >> 8), byte(i), 15: 1})
		if ok, _ := l.allow(req(a)); !ok && i < 64 {
			t.Fatalf("the /48's client %d refused its first registration", i)
		}
	}
	// 120 clients elsewhere, twice as many as one bucket's burst, each
	// register once: each is within its own limit.
	for i := range 120 {
		a := netip.AddrFrom4([4]byte{198, 51, byte(i), 7})
		if i%2 == 1 {
			a = netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 0xbb, byte(i), 15: 1})
		}
		if ok, _ := l.allow(req(a)); !ok {
			t.Fatalf("client %d of %v, elsewhere, refused its first registration after one /48 registered from each of its /64s", i, a)
		}
	}
}

// BenchmarkClientLimitAllow is the limit's cost per registration: one
// client again and again, and ever new clients, 256 per /48.
func BenchmarkClientLimitAllow(b *testing.B) {
	req := func(i int) *http.Request {
		a := netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, byte(i >> 16), byte(i >> 8), byte(i), 15: 1})
		return &http.Request{RemoteAddr: netip.AddrPortFrom(a, 4711).String(), Header: http.Header{}}
	}
	b.Run("same client", func(b *testing.B) {
		l := newClientLimit(1<<30, nil, nil)
		r := req(0)
		for b.Loop() {
			l.allow(r)
		}
	})
	b.Run("new clients", func(b *testing.B) {
		l := newClientLimit(60, nil, nil)
		rs := make([]*http.Request, 1<<20)
		for i := range rs {
			rs[i] = req(i)
		}
		i := 0
		for b.Loop() {
			l.allow(rs[i%len(rs)])
			i++
		}
	})
}
