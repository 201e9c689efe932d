// Package h2client is the HTTP/2 client each push service backend keeps:
// TLS 1.2 or later, optional client certificates and a CA directory, pings
// that notice a dead connection, and a pool of connections per host that
// it manages itself. The connections are its own, on x/net/http2's framer
// and HPACK codec (see clientConn for why not net/http's).
//
// net/http's own pool does not fit a push service either. Its retries of requests
// the server never processed (GOAWAY, refused streams) sleep 1, 2, 4 s
// between attempts, so under repeated GOAWAY pushes miss their deadline;
// and when the service resets connections, every request dials again. The
// pool here retries unprocessed requests at once on another connection,
// dials one connection at a time per host (a burst at start shares one
// connection), opens another only when all are at the service's stream
// limit (up to MaxConns), and backs off dialling after failed attempts.
package h2client

import (
	"bytes"
	"cmp"
	"container/list"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http/httpproxy"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/push-appserver/push-appserver/internal/push"
)

// Options configure the client.
type Options struct {
	// CAPath is a directory of PEM CA certificates to trust instead of the
	// system pool (mod_push_appserver's capath options).
	CAPath string
	// Certificates are TLS client certificates (APNS certificate auth).
	Certificates []tls.Certificate
	// MaxConns bounds the connections per host; default 4. A new one is
	// opened only when the others are at the service's stream limit.
	MaxConns int
	// PingAfter is how long a connection may stay quiet before it is
	// pinged (up to a quarter more), PingTimeout how long after that it
	// may stay quiet before it is taken for dead and closed; defaults
	// 30 s and 10 s.
	PingAfter, PingTimeout time.Duration
	// Proxy returns the proxy to reach an https URL through, by an HTTP
	// CONNECT tunnel, or nil to connect directly. When Proxy is nil the
	// environment decides, as for Go's own HTTP clients: HTTPS_PROXY
	// (http:// or https://, credentials in the URL) and NO_PROXY, read
	// when the client is made; never for localhost or a loopback
	// address.
	Proxy func(*url.URL) (*url.URL, error)
}

const (
	dialTimeout = 10 * time.Second
	// Dial backoff after a failed attempt: from dialBackoffBase, doubling
	// up to dialBackoffMax (jittered to half of it at least), reset by the
	// first answer on a new connection. The cap stays well under a push's
	// deadline (5 s by default), so a push that arrives while dialling
	// backs off still sees an attempt within its time; one attempt a
	// second is no burden for a service that is down.
	dialBackoffBase = 100 * time.Millisecond
	dialBackoffMax  = time.Second
	// maxResends bounds how often one request goes out again after a
	// connection refused it unprocessed; the request's deadline usually
	// ends it first.
	maxResends = 100
	// slowStart is how many requests a connection takes before its
	// first answer.
	slowStart = 8
	// churnWindow is how long after a lost connection dials may run in
	// parallel.
	churnWindow = 10 * time.Second
	// dialStall is how long a dial may be under way before a request
	// waiting for it starts another beside it. A connection comes up
	// in a few round trips, well under a second to a push service on
	// another continent; one that takes longer is most likely stuck (a
	// front end that took the TCP connection and never answers the TLS
	// hello, a lost SYN to one of the service's addresses), and would
	// otherwise hold every push until dialTimeout, twice the default
	// push deadline, while another attempt connects at once.
	dialStall = 2 * time.Second
)

// Client is an HTTP/2-only client. HTTP gives it to code that speaks
// net/http; Do is the leaner call for a backend that builds its requests
// itself.
type Client struct {
	p    *pool
	http *http.Client
}

// Request is a request for Do: an http.Request's parts, the body whole.
// Without the URL to copy, the body reader and the context copy of an
// http.Request, and the http.Response around the answer, a push costs
// several allocations fewer.
type Request struct {
	Method string
	// Addr is the host:port to connect to; Authority is sent as the
	// request's :authority (host, and port when not 443).
	Addr, Authority string
	// Path is the escaped path and query. PathTail, escaped too, follows
	// it: a caller whose paths are a fixed part and a device token need
	// not join the two for every request.
	Path, PathTail string
	// Fields are sent first, then Header's fields. Fields made once
	// and sent with many requests cost a connection far less to send
	// than the same fields in a Header.
	Fields *Fields
	Header http.Header
	Body   []byte
	// SkipSuccessFields says the caller reads no header field of a 2xx
	// response, so the client need not decode them: Response.Get then
	// finds none. A push service's answer to a push that went through
	// is a status and an id or two, and decoding the ids was a tenth of
	// the instructions of a push (see clientConn.start's SETTINGS).
	SkipSuccessFields bool
	// Refused, when set, is asked about the debug data of a GOAWAY that
	// kept the request from the service; true ends the request with
	// that error (GoAwayDebug finds the data in it) instead of sending
	// it again on a new connection. APNS ends every connection of a
	// client certificate it refuses so, before answering any request:
	// sent again, the request would only meet the same GOAWAY on
	// connection after connection until its deadline.
	Refused func(goAwayDebug string) bool
}

// GoAwayDebug returns the debug data (as text, cleaned for logs) of the
// GOAWAY that err, a request's failure, came from.
func GoAwayDebug(err error) (string, bool) {
	var g *goneAway
	if errors.As(err, &g) {
		return g.debug, true
	}
	return "", false
}

// Response is a whole response: the read loop reads the body before Do
// returns (push services answer with small JSON documents).
type Response struct {
	StatusCode int
	Body       []byte

	// The header fields as they came, names in lower case. A push's
	// caller looks at one or two of them, and a map of them all was three
	// allocations per push.
	fields []hpack.HeaderField
}

// Get returns the first value of the header field name, in any case, or
// "" if there is none.
func (r Response) Get(name string) string {
	for _, f := range r.fields {
		if strings.EqualFold(f.Name, name) {
			return f.Value
		}
	}
	return ""
}

// Header returns all the header fields, in a new map.
func (r Response) Header() http.Header {
	h := make(http.Header, len(r.fields))
	for _, f := range r.fields {
		k := http.CanonicalHeaderKey(f.Name)
		h[k] = append(h[k], f.Value)
	}
	return h
}

// New returns an HTTP/2-only client.
func New(o Options) (*Client, error) {
	// Session resumption makes a reconnect after GOAWAY a cheap
	// handshake.
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, Certificates: o.Certificates, ClientSessionCache: tls.NewLRUClientSessionCache(16)}
	if o.CAPath != "" {
		pool, err := LoadCAs(o.CAPath)
		if err != nil {
			return nil, err
		}
		cfg.RootCAs = pool
	}
	if o.MaxConns <= 0 {
		o.MaxConns = 4
	}
	if o.Proxy == nil {
		o.Proxy = envProxy()
	}
	cfg.NextProtos = []string{"h2"}
	p := &pool{
		proxy:    o.Proxy,
		dialer:   &net.Dialer{Timeout: dialTimeout, KeepAlive: 30 * time.Second},
		tls:      cfg,
		maxConns: o.MaxConns,
		pings:    pings{after: cmp.Or(o.PingAfter, 30*time.Second), timeout: cmp.Or(o.PingTimeout, 10*time.Second)},
		hosts:    map[string]*hostPool{},
	}
	return &Client{p: p, http: &http.Client{Transport: p}}, nil
}

// Addr is the host:port to dial for an https URL: its port, or 443.
func Addr(u *url.URL) string {
	if u.Port() == "" {
		return net.JoinHostPort(u.Hostname(), "443")
	}
	return u.Host
}

// HTTP returns the client as an http.Client.
func (c *Client) HTTP() *http.Client { return c.http }

// Do sends req on one of its host's connections and returns the whole
// response.
func (c *Client) Do(ctx context.Context, req *Request) (Response, error) {
	if len(req.Body) > maxRequestBody {
		return Response{}, fmt.Errorf("h2client: request body over %d bytes", maxRequestBody)
	}
	return c.p.do(ctx, req)
}

// Warm makes sure a connection to addr (host:port) is up, as a request
// would, without sending one: it dials unless a connection is open, and
// waits for a dial under way (a push's), whose failure is its own too. The
// first push after a start then finds its connection ready, without the
// handshakes' round trips, and a service that cannot be reached (a proxy,
// a refused client certificate) shows at once. A failure counts as a
// failed dial does, so the requests that follow wait the same backoff.
func (c *Client) Warm(ctx context.Context, addr string) error {
	if c.p.closed.Load() {
		return errClientClosed
	}
	cn, err := c.p.host(addr).get(ctx)
	if err != nil {
		return err
	}
	// get reserved a stream for a request that will not come.
	cn.cc.unreserve()
	return nil
}

// Close closes the client's connections, and those it is dialling as they
// come up: a backend a reload replaced keeps none open until the idle
// timeout. Requests still on them fail, and requests after it fail at
// once.
func (c *Client) Close() error {
	c.p.closed.Store(true)
	c.p.mu.Lock()
	hosts := make([]*hostPool, 0, len(c.p.hosts))
	for _, h := range c.p.hosts {
		hosts = append(hosts, h)
	}
	c.p.mu.Unlock()
	for _, h := range hosts {
		h.mu.Lock()
		conns := h.conns
		h.conns = nil
		h.mu.Unlock()
		for _, cn := range conns {
			cn.cc.Close()
		}
		h.wake(true)
	}
	return nil
}

// errClientClosed fails the requests made after Close.
var errClientClosed = errors.New("h2client: client closed")

// envProxy is the environment's proxy function. httpproxy takes an
// HTTPS_PROXY that is not a URL for none at all; here a host it would
// have been used for gets an error instead (see pool.host), so that the
// operator learns of the slip rather than of dials that bypass the proxy.
func envProxy() func(*url.URL) (*url.URL, error) {
	env := httpproxy.FromEnvironment()
	v := env.HTTPSProxy
	if v == "" {
		return env.ProxyFunc()
	}
	if _, err := url.Parse(v); err == nil {
		return env.ProxyFunc()
	}
	if _, err := url.Parse("http://" + v); err == nil {
		return env.ProxyFunc()
	}
	probe := *env
	probe.HTTPSProxy = "http://proxy.invalid"
	pf := probe.ProxyFunc()
	return func(u *url.URL) (*url.URL, error) {
		if p, _ := pf(u); p != nil {
			return nil, errors.New("HTTPS_PROXY is not a URL")
		}
		return nil, nil
	}
}

// pool is an http.RoundTripper over a set of connections per host.
type pool struct {
	proxy    func(*url.URL) (*url.URL, error)
	dialer   *net.Dialer
	tls      *tls.Config
	maxConns int
	pings    pings

	mu    sync.Mutex
	hosts map[string]*hostPool
	// last is the host a request last had to find in hosts: a client
	// mostly sends to one host (APNS's, FCM's), whose requests then find
	// it without taking mu and hashing the address. Hosts stay in hosts
	// for good, so last is always hosts' entry for its address.
	last atomic.Pointer[hostPool]
	// closed is set by Client.Close; read by every request, so not
	// under mu.
	closed atomic.Bool
}

// host returns the pool of addr's connections.
func (p *pool) host(addr string) *hostPool {
	if h := p.last.Load(); h != nil && h.addr == addr {
		return h
	}
	h := p.findHost(addr)
	p.last.Store(h)
	return h
}

// findHost returns addr's entry in hosts, made if there is none, taking
// mu.
func (p *pool) findHost(addr string) *hostPool {
	key := addr
	p.mu.Lock()
	defer p.mu.Unlock()
	h := p.hosts[key]
	if h == nil {
		h = &hostPool{p: p, addr: addr,
			backoff: push.Backoff{Base: dialBackoffBase, Max: dialBackoffMax}}
		var err error
		if h.proxy, err = p.proxy(&url.URL{Scheme: "https", Host: addr}); err != nil {
			h.proxyErr = fmt.Errorf("h2client: proxy: %w", err)
		}
		p.hosts[key] = h
	}
	return h
}

// RoundTrip sends req on one of its host's connections.
func (p *pool) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Scheme != "https" {
		closeBody(req)
		return nil, fmt.Errorf("h2client: scheme %q is not https", req.URL.Scheme)
	}
	body, err := readBody(req)
	if err != nil {
		return nil, err
	}
	r := &Request{Method: req.Method, Addr: Addr(req.URL), Authority: cmp.Or(req.Host, req.URL.Host), Path: req.URL.RequestURI(), Header: req.Header, Body: body}
	resp, err := p.do(req.Context(), r)
	if err != nil {
		return nil, err
	}
	hr := &http.Response{
		Status:        statusLine(resp.StatusCode),
		StatusCode:    resp.StatusCode,
		Proto:         "HTTP/2.0",
		ProtoMajor:    2,
		Header:        resp.Header(),
		ContentLength: int64(len(resp.Body)),
		Body:          http.NoBody,
		Request:       req,
	}
	if len(resp.Body) > 0 {
		hr.Body = io.NopCloser(bytes.NewReader(resp.Body))
	}
	return hr, nil
}

// do sends req on one of its host's connections, and again at once on
// another when one could not take it.
func (p *pool) do(ctx context.Context, req *Request) (Response, error) {
	if p.closed.Load() {
		return Response{}, errClientClosed
	}
	h := p.host(req.Addr)
	var before error // why the request was last sent again
	for resends := 0; ; resends++ {
		c, err := h.get(ctx)
		if err != nil {
			return Response{}, cutShort(err, before)
		}
		resp, err := c.cc.roundTrip(ctx, req)
		if err == nil {
			if c.reported.CompareAndSwap(false, true) {
				h.connected()
			}
			if resp.StatusCode == http.StatusMisdirectedRequest {
				// The connection cannot serve the host (RFC 9110
				// 15.5.20): the request may be sent again, over
				// another one. Kept, every retry would meet the same
				// answer there.
				c.cc.drain()
			}
			return resp, nil
		}
		// The read loop marks a connection answered before it fails the
		// requests a GOAWAY excluded, so a connection the service closes
		// after one answer never looks as if it died unanswered.
		if c.cc.Err() != nil && !c.cc.Answered() && c.failed.CompareAndSwap(false, true) {
			// A new connection that died before its first answer counts
			// as a failed dial (once), so resets cannot make us dial in
			// a loop.
			h.dialFailed(err)
		}
		if req.Refused != nil {
			if debug, ok := GoAwayDebug(err); ok && req.Refused(debug) {
				return Response{}, err
			}
		}
		if !unprocessed(err) || resends >= maxResends || ctx.Err() != nil {
			return Response{}, cutShort(err, before)
		}
		// The server never saw this request: send it again at once, on
		// another connection.
		before = err
		h.lost()
	}
}

// cutShort is err, which ended a request, with the text of the error that
// had it sent again before when err is its context's end: a request that
// a service's GOAWAY kept excluding (APNS's carries its reason, such as
// BadCertificateEnvironment) would otherwise end saying only that its
// time was up. The earlier error is text only: what the caller makes of
// err stays what the context's end means.
func cutShort(err, before error) error {
	if before == nil || !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, context.Canceled) {
		return err
	}
	return fmt.Errorf("%w (sent again after: %v)", err, before)
}

// statusLine is http.Response's Status for code, without a new string
// for the answer almost every push gets.
func statusLine(code int) string {
	if code == http.StatusOK {
		return "200 OK"
	}
	return strconv.Itoa(code) + " " + http.StatusText(code)
}

func readBody(req *http.Request) ([]byte, error) {
	if req.Body == nil || req.Body == http.NoBody {
		return nil, nil
	}
	defer req.Body.Close()
	if n := req.ContentLength; n > 0 && n <= maxRequestBody {
		// The length is known: one buffer of it (and a byte to find a
		// body longer than it said), not io.ReadAll's growing one.
		body := make([]byte, n, n+1)
		if _, err := io.ReadFull(req.Body, body); err != nil {
			return nil, fmt.Errorf("h2client: reading the request body: %w", err)
		}
		if m, _ := req.Body.Read(body[n : n+1]); m > 0 {
			return nil, fmt.Errorf("h2client: request body longer than its Content-Length %d", n)
		}
		return body, nil
	}
	body, err := io.ReadAll(io.LimitReader(req.Body, maxRequestBody+1))
	if err != nil {
		return nil, fmt.Errorf("h2client: reading the request body: %w", err)
	}
	if len(body) > maxRequestBody {
		return nil, fmt.Errorf("h2client: request body over %d bytes", maxRequestBody)
	}
	return body, nil
}

func closeBody(req *http.Request) {
	if req.Body != nil {
		req.Body.Close()
	}
}

// unprocessed reports whether err says the service did not process the
// request, so it can go out again without being delivered twice: the
// connection could not take it, the service's GOAWAY excluded it, or the
// service refused the stream (RFC 9113 8.7).
func unprocessed(err error) bool {
	var se streamReset
	if errors.As(err, &se) {
		return se.code == http2.ErrCodeRefusedStream
	}
	return errors.Is(err, errUnprocessed)
}

// hostPool holds the connections to one host.
type hostPool struct {
	p    *pool
	addr string // host:port; the scheme is always https
	// proxy is the proxy to tunnel through (nil: none), or proxyErr why
	// the one named cannot be used.
	proxy    *url.URL
	proxyErr error

	mu       sync.Mutex
	conns    []*conn
	dialing  int // dials under way
	lostAt   time.Time
	dialAt   time.Time // when the latest dial started
	backoff  push.Backoff
	nextDial time.Time
	lastErr  error
	failures uint64 // failed dials so far

	// waiting holds the requests waiting for room, oldest first. A stream
	// that ends wakes the oldest alone, since it makes room for one:
	// waking every waiter made each of them take mu and try every
	// connection, so thousands of waiters (a burst beyond the service's
	// stream limit) cost quadratic CPU (get was 47 % of the server's
	// with 6,400 pushes in flight). A change of state (a connection up,
	// lost or draining, new settings, a failed dial) wakes them all.
	// Own lock: connection state hooks run inside ClientConn calls made
	// while mu is held.
	wakeMu   sync.Mutex
	waiting  list.List // of *waiter
	nwaiting atomic.Int32
}

// A waiter is a request waiting in hostPool.waiting.
type waiter struct {
	woken chan struct{} // gets one value when the waiter leaves the queue by a wake
	el    *list.Element // in waiting; nil once woken
}

type conn struct {
	cc       *clientConn
	reported atomic.Bool // the host pool was told it answered
	failed   atomic.Bool // it died before any response, and was counted
}

// queue adds a waiter at the back of the queue.
func (h *hostPool) queue() *waiter {
	w := &waiter{woken: make(chan struct{}, 1)}
	h.wakeMu.Lock()
	w.el = h.waiting.PushBack(w)
	h.nwaiting.Add(1)
	h.wakeMu.Unlock()
	return w
}

// leave takes w out of the queue. A wake it got and did not act on goes
// to the next waiter, so that no room is left unused.
func (h *hostPool) leave(w *waiter) {
	h.wakeMu.Lock()
	queued := w.el != nil
	if queued {
		h.waiting.Remove(w.el)
		w.el = nil
		h.nwaiting.Add(-1)
	}
	h.wakeMu.Unlock()
	if !queued {
		select {
		case <-w.woken:
			h.wake(false)
		default:
		}
	}
}

// wake wakes the oldest waiter, or all of them.
func (h *hostPool) wake(all bool) {
	// Most streams end with nobody waiting: skip the lock then. A
	// waiter queues itself before it looks at the connections a last
	// time, so it cannot miss room made after this.
	if h.nwaiting.Load() == 0 {
		return
	}
	h.wakeMu.Lock()
	for e := h.waiting.Front(); e != nil; e = h.waiting.Front() {
		w := h.waiting.Remove(e).(*waiter)
		w.el = nil
		h.nwaiting.Add(-1)
		w.woken <- struct{}{}
		if !all {
			break
		}
	}
	h.wakeMu.Unlock()
}

// get returns a connection with a stream reserved for one request,
// waiting for room or a new connection until ctx is done.
//
// While dialling backs off after failures and no connection is left, a
// request whose deadline reaches the next attempt waits for it, so pushes
// go out as soon as the service is back instead of failing until the
// backoff ends; one whose deadline comes first fails at once. Either way a
// call sees at most one dial fail: then it returns that error, and the
// caller's own retrying decides (do calls again only to resend what
// a connection refused unprocessed, within the request's deadline).
func (h *hostPool) get(ctx context.Context) (*conn, error) {
	h.mu.Lock()
	failures := h.failures
	h.mu.Unlock()
	var retryAt *time.Timer
	var w *waiter // while queued, or woken and not yet acting on it
	woken := false
	defer func() {
		if retryAt != nil {
			retryAt.Stop()
		}
		if w != nil {
			h.leave(w)
		}
	}()
	for {
		h.mu.Lock()
		if h.failures != failures && len(h.conns) == 0 {
			err := h.lastErr
			h.mu.Unlock()
			return nil, fmt.Errorf("h2client: connecting to %s: %w", h.addr, err)
		}
		live := h.conns[:0]
		for _, c := range h.conns {
			if c.cc.Err() == nil {
				live = append(live, c)
			}
		}
		clear(h.conns[len(live):])
		h.conns = live
		starting := false
		for _, c := range h.conns {
			// Until a connection has answered, it takes only a few
			// requests: if the service closes it after one answer, the
			// rest would have been written for nothing.
			if !c.cc.Answered() && c.cc.InFlight() >= slowStart {
				starting = true
				continue
			}
			if more, err := c.cc.Reserve(); err == nil {
				h.mu.Unlock()
				if woken && more {
					// The room this waiter was woken for may be
					// more than its own: a new connection's first
					// answer, a stream limit raised.
					h.wake(false)
				}
				return c, nil
			}
		}
		// One dial at a time, so a burst at start shares one
		// connection; while the service keeps closing connections
		// (GOAWAY), dial up to MaxConns at once to keep up.
		churn := time.Since(h.lostAt) < churnWindow
		parallel := 1
		if churn {
			parallel = h.p.maxConns
		}
		var timer <-chan time.Time
		var wakeAt time.Time // look again then, unless woken before
		switch {
		case starting && !churn:
			// Wait for the new connection's first answer.
		case len(h.conns)+h.dialing >= h.p.maxConns:
			// All at their stream limit: wait for a request to end.
		case h.dialing >= parallel:
			// Wait for the dial under way, unless it is stalled: then
			// another goes beside it (see dialStall).
			if time.Now().Before(h.nextDial) {
				break
			}
			if stalled := h.dialAt.Add(dialStall); time.Now().Before(stalled) {
				wakeAt = stalled
				break
			}
			h.startDialLocked()
		case time.Now().Before(h.nextDial):
			if len(h.conns) == 0 {
				if deadline, ok := ctx.Deadline(); ok && deadline.Before(h.nextDial) {
					err := h.lastErr
					h.mu.Unlock()
					return nil, fmt.Errorf("h2client: not reconnecting to %s yet after: %w", h.addr, err)
				}
				wakeAt = h.nextDial
			}
		default:
			h.startDialLocked()
		}
		if !wakeAt.IsZero() {
			if retryAt == nil {
				retryAt = time.NewTimer(time.Until(wakeAt))
			} else {
				retryAt.Reset(time.Until(wakeAt))
			}
			timer = retryAt.C
		}
		if w == nil {
			// Queue up, then look once more: room made between the
			// look above and the queueing would wake nobody.
			h.mu.Unlock()
			w = h.queue()
			continue
		}
		h.mu.Unlock()
		select {
		case <-w.woken:
			w, woken = nil, true
		case <-timer:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// startDialLocked starts a dial; h.mu is held.
func (h *hostPool) startDialLocked() {
	h.dialing++
	h.dialAt = time.Now()
	go h.dial()
}

// dial opens one connection. It runs on its own, so a request whose
// deadline passes does not abort a dial that others wait for.
func (h *hostPool) dial() {
	ctx, cancel := context.WithTimeout(context.Background(), dialTimeout)
	defer cancel()
	var cc *clientConn
	err := h.proxyErr
	if err == nil {
		cc, err = dialConn(ctx, h.p.dialer, h.p.tls, h.addr, h.proxy, h.p.pings, h.wake)
	}
	h.mu.Lock()
	h.dialing--
	// Under h.mu, which Close takes after it sets closed: a connection
	// that comes up after Close took h.conns is closed here.
	if err == nil && h.p.closed.Load() {
		cc.Close()
		err = errClientClosed
	}
	if err != nil {
		h.failedLocked(err)
	} else {
		h.conns = append(h.conns, &conn{cc: cc})
	}
	h.mu.Unlock()
	h.wake(true)
}

// dialFailed records a failed connection attempt.
func (h *hostPool) dialFailed(err error) {
	h.mu.Lock()
	h.failedLocked(err)
	h.mu.Unlock()
	h.wake(true)
}

func (h *hostPool) failedLocked(err error) {
	h.lastErr = err
	h.failures++
	if next := time.Now().Add(h.backoff.Next()); next.After(h.nextDial) {
		h.nextDial = next
	}
}

// lost records that the service closed a connection on us.
func (h *hostPool) lost() {
	h.mu.Lock()
	h.lostAt = time.Now()
	h.mu.Unlock()
}

// connected records that a new connection answered: the service is
// reachable again.
func (h *hostPool) connected() {
	h.mu.Lock()
	h.backoff.Reset()
	h.nextDial = time.Time{}
	h.mu.Unlock()
}

// LoadCAs reads every PEM certificate in dir into a pool.
func LoadCAs(dir string) (*x509.CertPool, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("CA path: %w", err)
	}
	pool := x509.NewCertPool()
	for _, e := range entries {
		// Regular files only, followed through links as the system's
		// certificate directories hold them: reading a FIFO would wait
		// for a writer, and with it the start or the reload.
		p := filepath.Join(dir, e.Name())
		if st, err := os.Stat(p); err != nil || !st.Mode().IsRegular() {
			continue
		}
		if data, err := os.ReadFile(p); err == nil {
			pool.AppendCertsFromPEM(data)
		}
	}
	return pool, nil
}
