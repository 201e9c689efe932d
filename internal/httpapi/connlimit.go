package httpapi

import (
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"syscall"
	"time"

	"golang.org/x/time/rate"
)

// ConnectionCap is how many connections the API listeners may hold
// together: the process's descriptor limit less a reserve for what it
// must open itself (the component's connections, the push services',
// the registry's, its files).
func ConnectionCap() int { return connectionCap(descriptorLimit()) }

// DescriptorReserve is the reserve ConnectionCap keeps back: what the
// process may open itself. What it opens in numbers that others choose
// (WebPush connections, to origins that subscriptions name) must stay
// within a share of it, or the rest (APNS, FCM, the component, the
// registry) finds none left.
func DescriptorReserve() int { return descriptorReserve(descriptorLimit()) }

// descriptorLimit is the process's soft limit of descriptors, or 0 when
// it is unknown or too high (over 2^20) to bound anything here.
func descriptorLimit() int {
	var l syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l); err != nil || l.Cur > 1<<20 {
		return 0
	}
	return int(l.Cur)
}

func connectionCap(limit int) int {
	if limit == 0 {
		return 1 << 16
	}
	return max(limit-max(limit/4, 100), 16)
}

func descriptorReserve(limit int) int {
	if limit == 0 {
		return 1 << 16
	}
	return max(limit-connectionCap(limit), 0)
}

// MonitoringSlots is how many connections a listener of the monitoring's
// own (metrics_listen) holds, out of ConnectionCap: a scraper keeps one
// open, a pair of them for redundancy two, and each may open another
// while the last one closes.
const MonitoringSlots = 8

// DefaultMaxConnectionsPerClient is how many connections one client
// address (an IPv6 client's /64) may hold at once. An app holds one or
// two, a browser six, an XMPP server pushing over HTTP/1.1 a keep-alive
// pool of tens (over HTTP/2, one). The most are those of many phones
// behind one carrier's NAT: within http.register_limit they register
// about once a second, and each connection stays at most the 90 s idle
// timeout, so about 90. Yet without a bound one address could hold every
// slot of ConnectionCap (tens of thousands under systemd) with idle
// connections, each costing memory, and every other client would be
// refused.
const DefaultMaxConnectionsPerClient = 128

// Why a connection was closed at once, as ConnLimitOptions.Refused is
// told.
const (
	// RefusedSlots: every slot of the listeners was taken, or the
	// process had no descriptor left to accept the connection with.
	RefusedSlots = "descriptors"
	// RefusedClient: its client held PerClient connections already.
	RefusedClient = "per_client"
)

// ConnLimitOptions bound the connections of the API's listeners.
type ConnLimitOptions struct {
	// Slots is how many connections the listeners may hold together
	// (ConnectionCap); at least one.
	Slots int
	// PerClient is how many of them one client may hold, an IPv6
	// client's /64 counted as one; 0 leaves clients unbounded but by
	// Slots.
	PerClient int
	// Exempt are addresses PerClient does not bound, beside loopback:
	// the reverse proxies (http.trusted_proxies), every client's
	// connections coming from them.
	Exempt []netip.Prefix
	// Refused, when set, is told of each connection closed at once, by
	// RefusedSlots or RefusedClient, and of each accept that failed for
	// want of a descriptor, by RefusedSlots.
	Refused func(limit string)
	Logger  *slog.Logger
}

// ConnLimit holds the connection slots that the API's listeners share,
// and how many each client holds: a client's connections to the plain
// and the TLS listener count together.
type ConnLimit struct {
	slots     int
	perClient int
	exempt    []netip.Prefix
	refused   func(string)
	logger    *slog.Logger
	// refusals logs a refused client at most once a second, as the
	// registration limit does; full the slots all being taken.
	refusals, full rate.Sometimes

	mu   sync.Mutex
	held int
	// clients holds the connections of each client that has any, and
	// nothing else: an entry goes with its client's last connection, so
	// addresses seen once do not pile up.
	clients map[netip.Addr]int
}

// NewConnLimit returns the slots o describes.
func NewConnLimit(o ConnLimitOptions) *ConnLimit {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	l := &ConnLimit{
		slots:     max(o.Slots, 1),
		perClient: o.PerClient,
		exempt:    o.Exempt,
		refused:   o.Refused,
		logger:    o.Logger,
		refusals:  rate.Sometimes{Interval: time.Second},
		full:      rate.Sometimes{Interval: time.Second},
	}
	if l.perClient > 0 {
		l.clients = make(map[netip.Addr]int)
	}
	return l
}

// client returns what c is counted by, or the zero Addr when its
// client is not bounded (PerClient off, loopback, an exempt proxy, a
// peer that is no IP address).
func (l *ConnLimit) client(c net.Conn) netip.Addr {
	if l.perClient <= 0 {
		return netip.Addr{}
	}
	// The *net.TCPAddr the connection keeps: a String and a parse would
	// cost allocations on every accept.
	ta, ok := c.RemoteAddr().(*net.TCPAddr)
	if !ok {
		return netip.Addr{}
	}
	a, ok := netip.AddrFromSlice(ta.IP)
	if !ok {
		return netip.Addr{}
	}
	a = a.Unmap()
	if a.IsLoopback() {
		return netip.Addr{}
	}
	for _, p := range l.exempt {
		if p.Contains(a) {
			return netip.Addr{}
		}
	}
	return clientKey(a)
}

// take takes a slot for a connection of client (the zero Addr: one not
// bounded per client), or returns why not.
func (l *ConnLimit) take(client netip.Addr) (refused string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.takeLocked(client)
}

// takeLocked is take with l.mu held.
func (l *ConnLimit) takeLocked(client netip.Addr) (refused string) {
	// The client's bound first: a client over it is named as such even
	// when the slots are gone too.
	n := 0
	if client.IsValid() {
		if n = l.clients[client]; n >= l.perClient {
			return RefusedClient
		}
	}
	if l.held >= l.slots {
		return RefusedSlots
	}
	l.held++
	if client.IsValid() {
		l.clients[client] = n + 1
	}
	return ""
}

// release gives back what take took.
func (l *ConnLimit) release(client netip.Addr) {
	l.mu.Lock()
	l.releaseLocked(client)
	l.mu.Unlock()
}

// releaseLocked is release with l.mu held.
func (l *ConnLimit) releaseLocked(client netip.Addr) {
	l.held--
	if client.IsValid() {
		if n := l.clients[client]; n > 1 {
			l.clients[client] = n - 1
		} else {
			delete(l.clients, client)
		}
	}
}

func (l *ConnLimit) refuse(c net.Conn, client netip.Addr, why string) {
	c.Close()
	l.tell(why)
	switch why {
	case RefusedClient:
		l.refusals.Do(func() {
			l.logger.Info("connection refused: its client holds http.max_connections_per_client already", "client", clientString(client), "max", l.perClient)
		})
	case RefusedSlots:
		// Every client is refused from now on, /metrics too where it is
		// served on these listeners: the log may be all an operator
		// has to tell why.
		l.full.Do(func() {
			l.logger.Warn("connection refused: every connection slot the descriptor limit leaves the HTTP listeners is taken (raise LimitNOFILE, or find who holds them)", "slots", l.slots)
		})
	}
}

// tell tells Refused of a connection refused by why.
func (l *ConnLimit) tell(why string) {
	if l.refused != nil {
		l.refused(why)
	}
}

// outOfDescriptors reports whether an accept failed for want of a
// descriptor, the process's or the system's.
func outOfDescriptors(err error) bool {
	return errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE)
}

// clientString names a client as it is counted: an IPv6 one by its /64.
func clientString(a netip.Addr) string {
	if a.Is6() {
		return netip.PrefixFrom(a, ipv6Bits).String()
	}
	return a.String()
}

// LimitListener closes at once what it accepts past lim: past the slots
// (one per open connection), so that a flood of connections cannot take
// the descriptors the process needs, nor sit in the kernel's backlog;
// past its client's share, so that one client cannot take the slots of
// all others.
func LimitListener(l net.Listener, lim *ConnLimit) net.Listener {
	return &limitListener{Listener: l, lim: lim}
}

type limitListener struct {
	net.Listener
	lim *ConnLimit
}

func (l *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			if outOfDescriptors(err) {
				// The slots left the process none: the connection
				// waits in the backlog while net/http retries, up to
				// a second later, and logs it; counted, the alert on
				// refused connections sees it too.
				l.lim.tell(RefusedSlots)
			}
			return nil, err
		}
		client := l.lim.client(c)
		if why := l.lim.take(client); why != "" {
			l.lim.refuse(c, client, why)
			continue
		}
		return &limitConn{Conn: c, lim: l.lim, client: client}, nil
	}
}

type limitConn struct {
	net.Conn
	lim    *ConnLimit
	client netip.Addr
	once   sync.Once
	// requests is how many requests the connection carries at once
	// (see beginRequest); guarded by lim.mu.
	requests int
}

// beginRequest counts a request the connection carries, or returns why
// it may not. Over HTTP/2 a connection carries up to
// MaxStreamsPerConnection requests at once, each a handler that may
// wait ReadTimeout for its body, with a goroutine and a body buffer:
// about 28 KiB each, 0.9 MiB a connection where an HTTP/1.1 connection
// holds about 25 KiB. Bounded by connections alone, one client address
// held 115 MiB this way, and the slots tens of GiB. So each request
// beyond the connection's first holds a slot, and one of its client's
// share, as a connection of its own would: a client's HTTP/2
// connections hold no more requests than its HTTP/1.1 connections can.
func (c *limitConn) beginRequest() (refused string) {
	l := c.lim
	l.mu.Lock()
	defer l.mu.Unlock()
	if c.requests > 0 {
		if why := l.takeLocked(c.client); why != "" {
			return why
		}
	}
	c.requests++
	return ""
}

// endRequest gives back what beginRequest took.
func (c *limitConn) endRequest() {
	l := c.lim
	l.mu.Lock()
	defer l.mu.Unlock()
	c.requests--
	if c.requests > 0 {
		l.releaseLocked(c.client)
	}
}

// connKey is the context key of a request's *limitConn (see
// limitContext).
type connKey struct{}

// limitContext keeps c in the context of its requests, when c is a
// connection LimitListener admitted (under TLS or not): limitRequests
// reads it there. An http.Server's ConnContext.
func limitContext(ctx context.Context, c net.Conn) context.Context {
	if tc, ok := c.(*tls.Conn); ok {
		c = tc.NetConn()
	}
	if lc, ok := c.(*limitConn); ok {
		return context.WithValue(ctx, connKey{}, lc)
	}
	return ctx
}

// limitRequests bounds the requests of an HTTP/2 connection that
// LimitListener admitted (see limitConn.beginRequest). An HTTP/1.x
// connection carries one request at a time, which its own slot covers:
// those go straight through.
type limitRequests struct{ next http.Handler }

func (h limitRequests) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.ProtoMajor < 2 {
		h.next.ServeHTTP(w, r)
		return
	}
	c, _ := r.Context().Value(connKey{}).(*limitConn)
	if c == nil {
		h.next.ServeHTTP(w, r)
		return
	}
	if why := c.beginRequest(); why != "" {
		c.lim.refuseRequest(c.client, why)
		// Answered, not reset: a reset (the only one a handler can
		// give is INTERNAL_ERROR) is what clients and curl do not
		// send again, and a push backend multiplexing its pushes
		// would take it for a push that failed. The answer is
		// headers alone: a body waits for the stream's flow-control
		// window, which the client grants at will, and one that
		// gives none held each refused request's handler and
		// stream until WriteTimeout, as many as the share refused.
		// The body never read, the server resets the stream after
		// it. The request was not served: Retry-After says when to
		// send it again.
		w.Header().Set("Retry-After", "1")
		w.Header().Set("Content-Length", "0")
		w.WriteHeader(http.StatusServiceUnavailable)
		return
	}
	defer c.endRequest()
	h.next.ServeHTTP(w, r)
}

// refuseRequest counts and logs a request refused by why, as refuse
// does a connection.
func (l *ConnLimit) refuseRequest(client netip.Addr, why string) {
	l.tell(why)
	switch why {
	case RefusedClient:
		l.refusals.Do(func() {
			l.logger.Info("HTTP/2 request refused: its client holds http.max_connections_per_client in connections and requests already", "client", clientString(client), "max", l.perClient)
		})
	case RefusedSlots:
		l.full.Do(func() {
			l.logger.Warn("HTTP/2 request refused: every connection slot the descriptor limit leaves the HTTP listeners is taken (raise LimitNOFILE, or find who holds them)", "slots", l.slots)
		})
	}
}

func (c *limitConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { c.lim.release(c.client) })
	return err
}
