package httpapi

import (
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/push-appserver/push-appserver/internal/testutil/logbuf"
)

func TestClientOfRequest(t *testing.T) {
	l := newClientLimit(60, append(DefaultTrustedProxies, netip.MustParsePrefix("10.0.0.0/8")), nil)
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

func TestClientLimitBucket(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	l := newClientLimit(3, nil, nil)
	l.now = func() time.Time { return now }
	req := func(peer string) *http.Request { return &http.Request{RemoteAddr: peer + ":1", Header: http.Header{}} }

	for i := range 3 {
		if ok, _ := l.allow(req("198.51.100.7")); !ok {
			t.Fatalf("request %d of a burst of 3 refused", i+1)
		}
	}
	ok, wait := l.allow(req("198.51.100.7"))
	if ok {
		t.Fatal("fourth request within the burst allowed")
	}
	// 3 a minute: one every 20 s.
	if wait < 19*time.Second || wait > 20*time.Second {
		t.Errorf("wait = %v, want about 20s", wait)
	}
	if got := retryAfter(wait); got != "20" {
		t.Errorf("Retry-After = %q, want 20", got)
	}
	if ok, _ := l.allow(req("198.51.100.8")); !ok {
		t.Error("another client refused")
	}
	now = now.Add(20 * time.Second)
	if ok, _ := l.allow(req("198.51.100.7")); !ok {
		t.Error("refused after the bucket gained a token")
	}
	if ok, _ := l.allow(req("198.51.100.7")); ok {
		t.Error("allowed a second request on one token")
	}
}

func TestClientLimitOverflow(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	l := newClientLimit(2, nil, nil)
	l.now = func() time.Time { return now }
	peer := func(i int) *http.Request {
		return &http.Request{RemoteAddr: fmt.Sprintf("10.%d.%d.%d:1", i>>16&255, i>>8&255, i&255), Header: http.Header{}}
	}
	for i := range maxClients {
		if ok, _ := l.allow(peer(i)); !ok {
			t.Fatalf("client %d refused", i)
		}
	}
	// The clients beyond what is tracked share one bucket of 2.
	for i := maxClients; i < maxClients+2; i++ {
		if ok, _ := l.allow(peer(i)); !ok {
			t.Fatalf("client %d refused while the shared bucket had tokens", i)
		}
	}
	if ok, _ := l.allow(peer(maxClients + 2)); ok {
		t.Fatal("a new client beyond the tracked ones got past an empty shared bucket")
	}
	// A tracked client keeps its own bucket meanwhile.
	if ok, _ := l.allow(peer(0)); !ok {
		t.Fatal("a tracked client refused with a token left")
	}
	// Once the tracked clients' buckets are full again they are
	// forgotten, and a new client gets a bucket of its own.
	now = now.Add(time.Minute)
	if ok, _ := l.allow(peer(maxClients + 3)); !ok {
		t.Fatal("new client refused after the sweep")
	}
	l.mu.Lock()
	n := len(l.clients)
	l.mu.Unlock()
	if n != 1 {
		t.Errorf("%d clients tracked after the sweep, want 1", n)
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
		{"10.0.0.5:1", true},
		{"127.0.0.1:1", false},
	} {
		var log logbuf.Buffer
		l := newClientLimit(1, DefaultTrustedProxies, slog.New(slog.NewTextHandler(&log, nil)))
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
