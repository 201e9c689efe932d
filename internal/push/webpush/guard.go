package webpush

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"syscall"
)

// ErrRefused marks an endpoint the guard will not connect to.
var ErrRefused = errors.New("webpush: endpoint refused")

// Guard decides which push endpoints we connect to. A subscription's
// endpoint is a URL chosen by whoever registers, so without it anyone with
// the HTTP API could make us POST to hosts inside our network (SSRF).
// The zero value is the safe default: https on port 443 only, to public
// addresses only, any host.
type Guard struct {
	// AllowPrivate lets endpoints resolve to loopback, private,
	// link-local and other non-public addresses: for a self-hosted
	// UnifiedPush distributor on the same network, and for tests.
	AllowPrivate bool
	// Ports are the endpoint ports allowed; empty means 443 only.
	Ports []int
	// Hosts, when not empty, is the only push-service hosts we send to:
	// "push.example.org" is that host, "*.example.org" its subdomains.
	Hosts []string
}

// CheckURL checks what can be checked before connecting: scheme, port and
// host allow-list.
func (g *Guard) CheckURL(u *url.URL) error {
	if u.Scheme != "https" {
		return fmt.Errorf("%w: scheme %q is not https", ErrRefused, u.Scheme)
	}
	port := 443
	if p := u.Port(); p != "" {
		n, err := strconv.Atoi(p)
		if err != nil {
			return fmt.Errorf("%w: bad port %q", ErrRefused, p)
		}
		port = n
	}
	if !g.portAllowed(port) {
		return fmt.Errorf("%w: port %d is not allowed", ErrRefused, port)
	}
	if len(g.Hosts) > 0 && !g.hostAllowed(u.Hostname()) {
		return fmt.Errorf("%w: host %q is not on the allow-list", ErrRefused, u.Hostname())
	}
	return nil
}

func (g *Guard) portAllowed(port int) bool {
	if len(g.Ports) == 0 {
		return port == 443
	}
	return slices.Contains(g.Ports, port)
}

func (g *Guard) hostAllowed(host string) bool {
	host = strings.ToLower(strings.TrimSuffix(host, "."))
	for _, h := range g.Hosts {
		h = strings.ToLower(strings.TrimSuffix(h, "."))
		if suffix, ok := strings.CutPrefix(h, "*."); ok {
			if strings.HasSuffix(host, "."+suffix) {
				return true
			}
		} else if host == h {
			return true
		}
	}
	return false
}

// control is a net.Dialer ControlContext hook: it runs on the address
// actually being connected to, after name resolution, so a name that
// resolves to a public address at registration and to 127.0.0.1 later
// (DNS rebinding) is still refused, as is every address of a name that
// resolves to several.
func (g *Guard) control(_ context.Context, network, address string, _ syscall.RawConn) error {
	host, portStr, err := net.SplitHostPort(address)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrRefused, err)
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return fmt.Errorf("%w: %q is not an IP address", ErrRefused, host)
	}
	if port, err := strconv.Atoi(portStr); err != nil || !g.portAllowed(port) {
		return fmt.Errorf("%w: port %s is not allowed", ErrRefused, portStr)
	}
	if !g.AllowPrivate && !isPublic(ip) {
		return fmt.Errorf("%w: %s is not a public address", ErrRefused, ip)
	}
	return nil
}

// Ranges that are not globally reachable beyond what netip's predicates
// cover (RFC 6890 and its updates).
var nonPublic = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"),       // "this network"
	netip.MustParsePrefix("100.64.0.0/10"),   // carrier-grade NAT
	netip.MustParsePrefix("192.0.0.0/24"),    // IETF protocol assignments
	netip.MustParsePrefix("192.0.2.0/24"),    // documentation
	netip.MustParsePrefix("198.18.0.0/15"),   // benchmarking
	netip.MustParsePrefix("198.51.100.0/24"), // documentation
	netip.MustParsePrefix("203.0.113.0/24"),  // documentation
	netip.MustParsePrefix("240.0.0.0/4"),     // reserved, broadcast
	netip.MustParsePrefix("64:ff9b:1::/48"),  // local-use NAT64
	netip.MustParsePrefix("100::/64"),        // discard
	netip.MustParsePrefix("2001:db8::/32"),   // documentation
	netip.MustParsePrefix("2001:2::/48"),     // benchmarking
	netip.MustParsePrefix("3fff::/20"),       // documentation (RFC 9637)
}

// Prefixes of IPv6 addresses that carry an IPv4 address a translator or
// tunnel on the way connects to: NAT64's well-known prefix (RFC 6052:
// the IPv4 address in the last 32 bits) and 6to4 (RFC 3056: in bits 16
// to 48).
var (
	nat64  = netip.MustParsePrefix("64:ff9b::/96")
	sixTo4 = netip.MustParsePrefix("2002::/16")
	// IANA's global unicast space: the rest of IPv6 is reserved (::/8
	// with the IPv4-compatible ::a.b.c.d that Linux's sit0 takes as its
	// own, fec0::/10) or special (5f00::/16 SRv6), whatever netip's
	// IsGlobalUnicast says of it.
	globalV6 = netip.MustParsePrefix("2000::/3")
)

// isPublic reports whether ip is a globally reachable unicast address.
// IPv6 addresses that carry an IPv4 address (IPv4-mapped, NAT64's
// well-known prefix, 6to4) are judged as the IPv4 address they carry: a
// host behind DNS64/NAT64 reaches 10.0.0.5 through 64:ff9b::a00:5.
func isPublic(ip netip.Addr) bool {
	// Without its zone: netip's prefixes contain no zoned address, and
	// the zone names an interface, not another destination.
	ip = ip.WithZone("").Unmap()
	if a := ip.As16(); nat64.Contains(ip) {
		ip = netip.AddrFrom4([4]byte(a[12:16]))
	} else if sixTo4.Contains(ip) {
		ip = netip.AddrFrom4([4]byte(a[2:6]))
	}
	if ip.Is6() && !globalV6.Contains(ip) {
		return false
	}
	// Not global unicast: loopback, link-local, multicast, unspecified,
	// broadcast. Private (RFC 1918, fc00::/7) is global unicast to netip.
	if !ip.IsGlobalUnicast() || ip.IsPrivate() {
		return false
	}
	for _, p := range nonPublic {
		if p.Contains(ip) {
			return false
		}
	}
	return true
}
