package httpapi

import (
	"log/slog"
	"math"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"

	"github.com/push-appserver/push-appserver/internal/ratelimit"
)

// DefaultRegisterLimit is how many registrations and unregistrations a
// client address may make a minute, at once or spread out. An app
// registers when it starts, so this is far above what the devices behind
// one address need, even behind a carrier's NAT, and far below what fills
// a registry.
const DefaultRegisterLimit = 60

// DefaultTrustedProxies returns the addresses whose X-Forwarded-For names the
// client: loopback, for a reverse proxy on the same machine in front of
// the default listener on 127.0.0.1, and the private ranges, for one in
// another container or on another host of the network. Believing too
// much costs little: the header is read for this limit alone, so a
// client on a private network could at most evade it. Believing too
// little costs much: every client behind an unlisted proxy would share
// one limit, and new devices would fail to register.
//
// It is a function, not a variable, so that nobody can change the default
// for everyone.
func DefaultTrustedProxies() []netip.Prefix {
	return []netip.Prefix{
		netip.MustParsePrefix("127.0.0.0/8"),
		netip.MustParsePrefix("::1/128"),
		netip.MustParsePrefix("10.0.0.0/8"),
		netip.MustParsePrefix("172.16.0.0/12"),
		netip.MustParsePrefix("192.168.0.0/16"),
		netip.MustParsePrefix("fc00::/7"),
	}
}

const (
	// maxHops bounds the X-Forwarded-For entries read of a request.
	maxHops = 32
	// ipv6Bits is the prefix one IPv6 client is counted by: a home or
	// a phone gets at least a /64, and can use any address in it.
	ipv6Bits = 64
	// ipv6NetworkBits and ipv4NetworkBits are the networks whose
	// clients hold at most bucketsPerNetwork of the limiter's buckets:
	// a /48 is what a host or a site is given (65,536 /64s, its to
	// use), a /24 the smallest IPv4 block routed.
	ipv6NetworkBits = 48
	ipv4NetworkBits = 24
	// bucketsPerNetwork is how many clients of one network have a
	// limit of their own at once; beyond it, the network's other
	// clients share one. The limiter tracks 65,536 clients: one /48
	// could otherwise hold them all, and every new client elsewhere
	// would share the one limit beyond them. At 64, filling it takes
	// 1,024 networks (an IPv6 /38). A client's bucket is forgotten a
	// second after its registration (one token at 60 a minute), once
	// its network or the table is full, so 64 is 64 clients of one
	// network registering within a second: no site's phones do that.
	bucketsPerNetwork = 64
)

// clientLimit bounds the requests of each client address. Registrations
// are what it guards. Pushes are not bounded by client: they come from
// a few XMPP servers in volume, and each device's are throttled already
// (per node, and per client address and device: pushSource).
type clientLimit struct {
	buckets *ratelimit.Limiter[netip.Addr]
	trusted []netip.Prefix
	logger  *slog.Logger

	warnedAnonymous atomic.Bool
	warnedUntrusted atomic.Bool
	// refusals logs a refused client at most once a second: enough to
	// see who is over the limit (a carrier's NAT, a script), too few to
	// let a flood of requests flood the log.
	refusals rate.Sometimes
	// fullNetworks logs a network whose clients share a limit (see
	// bucketsPerNetwork) at most once a second, whatever their number.
	fullNetworks rate.Sometimes
}

func newClientLimit(perMinute int, trusted []netip.Prefix, logger *slog.Logger) *clientLimit {
	return newClientLimitAt(perMinute, trusted, logger, nil)
}

// newClientLimitAt is newClientLimit reading the time from now (time.Now
// when nil).
func newClientLimitAt(perMinute int, trusted []netip.Prefix, logger *slog.Logger, now func() time.Time) *clientLimit {
	if perMinute <= 0 {
		return nil
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	l := &clientLimit{
		trusted:      trusted,
		logger:       logger,
		refusals:     rate.Sometimes{Interval: time.Second},
		fullNetworks: rate.Sometimes{Interval: time.Second},
	}
	l.buckets = ratelimit.NewWith(perMinute, ratelimit.Options[netip.Addr]{
		Overflowed: func() {
			logger.Warn("more client addresses registering than the registration limit tracks; the newest share one limit", "clients", ratelimit.MaxKeys)
		},
		Group:    clientNetwork,
		PerGroup: bucketsPerNetwork,
		GroupFull: func(n netip.Addr) {
			l.fullNetworks.Do(func() {
				logger.Warn("the clients of one network hold as many registration limits as a network may; its other clients share one", "network", clientNetworkString(n), "limits", bucketsPerNetwork)
			})
		},
		Now: now,
	})
	return l
}

// allow takes a token from the bucket of r's client. When there is none
// it returns false and how long until there is.
func (l *clientLimit) allow(r *http.Request) (bool, time.Duration) {
	if l == nil {
		return true, 0
	}
	client, ok := l.client(r)
	if !ok {
		return true, 0
	}
	ok, wait := l.buckets.Allow(client)
	if ok {
		return true, 0
	}
	l.refusals.Do(func() {
		l.logger.Info("registration refused by the per-client limit", "client", clientString(client), "retry_in", wait.Round(time.Second))
	})
	if peer, ok := l.ignoredForwarded(r); ok && l.warnedUntrusted.CompareAndSwap(false, true) {
		// Most likely a proxy left out of trusted_proxies, whose
		// clients all count as one: say so, once, naming the address
		// to list (not the /64 it is counted by).
		l.logger.Warn("registrations over the limit came with X-Forwarded-For from an address that is not in http.trusted_proxies; if it is a proxy, every client behind it shares one limit", "addr", peer.String())
	}
	return ok, wait
}

// client returns the address r is counted by, and false when r is not
// to be limited: one every hop of which is trusted (a proxy that named
// no client, a check run on the machine) names nobody to count it
// against.
func (l *clientLimit) client(r *http.Request) (netip.Addr, bool) {
	client, proxy := clientOf(r, l.trusted)
	if client.IsValid() {
		return client, true
	}
	if proxy.IsValid() && l.warnedAnonymous.CompareAndSwap(false, true) {
		l.logger.Info("a registration came from a trusted proxy that named no client in X-Forwarded-For; such requests are not limited per client", "proxy", proxy.String())
	}
	return netip.Addr{}, false
}

// clientOf returns the address r's client is counted by (clientKey),
// or, when every hop is trusted, the zero Addr and the last trusted
// proxy. The client is the connection's peer unless that is a trusted
// proxy; then X-Forwarded-For is read from its end (each proxy appends
// the address it was connected from), and the first address that is not
// a trusted proxy's is the client: what a client writes itself comes
// before that and is never believed. A peer that is no IP address gives
// two zero Addrs.
func clientOf(r *http.Request, trusted []netip.Prefix) (client, proxy netip.Addr) {
	hop, ok := peerOf(r.RemoteAddr)
	if !ok {
		return netip.Addr{}, netip.Addr{}
	}
	return clientBehind(r, trusted, hop, isTrusted(trusted, hop))
}

// peerOf reads the address of a request's peer from its RemoteAddr.
func peerOf(remote string) (netip.Addr, bool) {
	ap, err := netip.ParseAddrPort(remote)
	if err != nil {
		return netip.Addr{}, false
	}
	// Without its zone, as the connection limit sees it: a prefix
	// contains no zoned address.
	return ap.Addr().Unmap().WithZone(""), true
}

// clientBehind is clientOf for a request whose peer is hop, which
// hopTrusted says is a trusted proxy or not.
func clientBehind(r *http.Request, trusted []netip.Prefix, hop netip.Addr, hopTrusted bool) (client, proxy netip.Addr) {
	if !hopTrusted {
		return clientKey(hop), netip.Addr{}
	}
	fields := r.Header.Values("X-Forwarded-For")
	seen := 0
	for i := len(fields) - 1; i >= 0; i-- {
		rest := fields[i]
		for rest != "" {
			var entry string
			if j := strings.LastIndexByte(rest, ','); j >= 0 {
				rest, entry = rest[:j], rest[j+1:]
			} else {
				rest, entry = "", rest
			}
			entry = strings.TrimSpace(entry)
			if entry == "" {
				continue
			}
			if seen++; seen > maxHops {
				// More trusted proxies in a row than any setup has:
				// count them against the last rather than read on.
				return clientKey(hop), netip.Addr{}
			}
			a, ok := parseHop(entry)
			if !ok {
				// A trusted proxy wrote what is no address: count
				// it against that proxy rather than let it pass.
				return clientKey(hop), netip.Addr{}
			}
			if !isTrusted(trusted, a) {
				return clientKey(a), netip.Addr{}
			}
			hop = a
		}
	}
	return netip.Addr{}, hop
}

// ignoredForwarded reports whether r has an X-Forwarded-For that was not
// believed, its peer being no trusted proxy.
func (l *clientLimit) ignoredForwarded(r *http.Request) (netip.Addr, bool) {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	peer := ap.Addr().Unmap().WithZone("")
	return peer, err == nil && !isTrusted(l.trusted, peer) && r.Header.Get("X-Forwarded-For") != ""
}

// parseHop reads one X-Forwarded-For entry: an address, or an address
// with a port as some proxies write it ("192.0.2.1:4711", "[2001:db8::1]:4711").
func parseHop(s string) (netip.Addr, bool) {
	if len(s) > 2 && s[0] == '[' && s[len(s)-1] == ']' {
		s = s[1 : len(s)-1] // "[2001:db8::1]", a bracketed address without a port
	}
	if a, err := netip.ParseAddr(s); err == nil {
		return a.Unmap().WithZone(""), true
	}
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return ap.Addr().Unmap().WithZone(""), true
	}
	return netip.Addr{}, false
}

func isTrusted(trusted []netip.Prefix, a netip.Addr) bool {
	for _, p := range trusted {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// nat64 is RFC 6052's well-known prefix, in which a translator names
// each IPv4 client by its own address.
var nat64 = netip.MustParsePrefix("64:ff9b::/96")

// nat64Local is RFC 8215's local-use prefix, taken with the /96 embedding
// (the IPv4 address in the last 32 bits) that translators use by default.
var nat64Local = netip.MustParsePrefix("64:ff9b:1::/48")

// clientKey is what a client is counted by: its IPv4 address, or its
// IPv6 address's /64.
func clientKey(a netip.Addr) netip.Addr {
	if nat64.Contains(a) || nat64Local.Contains(a) {
		// An IPv4 client translated (RFC 6052): its IPv4 address.
		b := a.As16()
		return netip.AddrFrom4([4]byte(b[12:]))
	}
	if a.Is6() {
		p, _ := a.Prefix(ipv6Bits)
		return p.Addr()
	}
	return a
}

// clientNetwork is the network a client key (clientKey) is grouped by
// in the limiter: its IPv6 /48 or IPv4 /24.
func clientNetwork(a netip.Addr) (netip.Addr, bool) {
	bits := ipv4NetworkBits
	if a.Is6() {
		bits = ipv6NetworkBits
	}
	p, err := a.Prefix(bits)
	return p.Addr(), err == nil
}

// clientNetworkString names a network of clientNetwork for the log.
func clientNetworkString(n netip.Addr) string {
	if n.Is6() {
		return netip.PrefixFrom(n, ipv6NetworkBits).String()
	}
	return netip.PrefixFrom(n, ipv4NetworkBits).String()
}

// retryAfter is the Retry-After field for a wait of d: whole seconds,
// at least one.
func retryAfter(d time.Duration) string {
	s := int64(math.Ceil(d.Seconds()))
	if s < 1 {
		s = 1
	}
	return strconv.FormatInt(s, 10)
}
