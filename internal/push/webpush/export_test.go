package webpush

import (
	"context"
	"net"
	"net/http"
	"strings"
	"time"
)

// SetPings times the HTTP/2 health check of b's connections; call it
// before b's first push, when the transport reads it.
func SetPings(b *Backend, after, timeout time.Duration) {
	h := b.client.Transport.(*http.Transport).HTTP2
	h.SendPingTimeout, h.PingTimeout = after, timeout
}

// ResolveExampleTo makes b's connections to any *.example.com host go to
// ip, as a wildcard DNS name would, through b's own dialing.
func ResolveExampleTo(b *Backend, ip string) { ResolveTo(b, ".example.com", ip) }

// ResolveTo makes b's connections to any host whose name ends in suffix
// go to ip, through b's own dialing; calls for several suffixes stack.
func ResolveTo(b *Backend, suffix, ip string) {
	tr := b.client.Transport.(*http.Transport)
	dial := tr.DialContext
	tr.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		if host, port, err := net.SplitHostPort(addr); err == nil && strings.HasSuffix(host, suffix) {
			addr = net.JoinHostPort(ip, port)
		}
		return dial(ctx, network, addr)
	}
}

// UnderWay is how many pushes b has under way, and how many of them at
// quiet origins.
func UnderWay(b *Backend) (all, quiet int) {
	b.flights.mu.Lock()
	defer b.flights.mu.Unlock()
	return b.flights.total, b.flights.quiet
}

// InFlight is how many pushes hold s.
func InFlight(s *SharedBound) int64 { return s.n.Load() }

// GoneHosts is how many push services g remembers.
func GoneHosts(g *GoneGuard) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.hosts)
}
