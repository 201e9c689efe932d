// Package httpapi serves mod_push_appserver's HTTP API (/push_appserver/v1/),
// byte for byte as the Prosody module answered it, so apps and servers that
// talk to it can switch without changes; plus push-batch, several pushes in
// one request (ours), health and Prometheus metrics. Debug pages (settings
// and the HTML forms) exist only with debugging on.
package httpapi

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"html/template"
	"io"
	"log"
	"log/slog"
	"net/http"
	"net/netip"
	"net/url"
	"runtime/debug"
	"strings"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/push-appserver/push-appserver/internal/appserver"
	"github.com/push-appserver/push-appserver/internal/logging"
	"github.com/push-appserver/push-appserver/internal/push"
	"github.com/push-appserver/push-appserver/internal/registry"
)

// MaxBodySize is the seed's limit on POST bodies.
const MaxBodySize = 4096

// maxSettingsNodes bounds the debug settings page.
const maxSettingsNodes = 1000

// Service is what the API needs from the core.
type Service interface {
	Register(ctx context.Context, caller appserver.Caller, typ, node, token string) (registry.Registration, error)
	Unregister(ctx context.Context, caller appserver.Caller, typ, node string) (registry.Registration, error)
	Push(ctx context.Context, req appserver.PushRequest) error
}

// Registrations is what the debug settings pages read.
type Registrations interface {
	Get(ctx context.Context, node string) (registry.Registration, error)
	Nodes(ctx context.Context, limit int) ([]string, error)
}

// Check is one line of the health page: a named part and whether it is up.
type Check struct {
	Name string
	OK   func() bool
	// StandingBy, when set, says whether a part that is not OK waits for
	// its turn (a component another instance serves, as Prosody takes
	// one connection per component): shown so, and ready, since the
	// instance serves the rest and takes over when the other goes.
	StandingBy func() bool
	// HealthOnly keeps the part off the ready page: it is shown, but the
	// server serves what it can without it.
	HealthOnly bool
	// ReadOnly, when set, says whether a part that is not OK answers
	// reads but refuses writes (a registry on a standby): shown so, not
	// as down, and ready, since what reads serve goes on.
	ReadOnly func() bool
}

// State says how the part is ("up", "standing by", "read-only" or
// "down"), as the health page shows it, and whether that counts as ready.
func (c Check) State() (string, bool) {
	switch {
	case c.OK():
		return "up", true
	case c.ReadOnly != nil && c.ReadOnly():
		return "read-only", true
	case c.StandingBy != nil && c.StandingBy():
		return "standing by", true
	}
	return "down", false
}

// Options configure the handler.
type Options struct {
	Service       Service
	Registrations Registrations
	// Debugging enables the settings pages and the HTML forms (the seed's
	// push_appserver_debugging). They show secrets: never in production.
	Debugging bool
	// Metrics, when set, is served at /metrics.
	Metrics http.Handler
	// Checks are listed on the health page; the ready page answers 503
	// while any of them fails.
	Checks func() []Check
	// Stuck, when set, says whether the server is stuck and for how
	// long (see Liveness): the live page answers 503 while it is.
	Stuck func() (time.Duration, bool)
	// Draining, when set, says the server is about to stop: the ready
	// page answers 503 while everything else is served as usual, so
	// that load balancers stop sending requests before the listeners
	// close.
	Draining func() bool
	// RegisterLimit bounds the registrations and unregistrations of a
	// client address (an IPv6 client's /64) to this many a minute, as
	// many at once; 0 leaves them unbounded.
	RegisterLimit int
	// TrustedProxies are the reverse proxies whose X-Forwarded-For names
	// the client that RegisterLimit counts, and that a push's source is
	// (appserver.PushRequest.Source).
	TrustedProxies []netip.Prefix
	// Limited, when set, is told of each request RegisterLimit refused,
	// by endpoint.
	Limited func(endpoint string)
	// Panicked, when set, is told of each request whose handler panicked
	// (and was answered 500).
	Panicked func()
	// TigaseDevices, by component JID, serve Siskin's unregistration of
	// a register-device registration over HTTP (POST
	// /unregister-device/<component JID>, and the same under
	// /rest/push/): the components with Tigase's commands on.
	TigaseDevices map[string]TigaseDevices
	Logger        *slog.Logger
}

// TigaseDevices removes a device's register-device registration for an
// account named in the request (adhoc.Commands.UnregisterTigaseDevice).
type TigaseDevices interface {
	UnregisterTigaseDevice(ctx context.Context, account, provider, token string) error
}

// New returns the API's handler.
func New(o Options) http.Handler {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	g := &guarded{panicked: o.Panicked, log: logging.NewLimited(o.Logger, time.Now, slog.LevelError, 1,
		"handling a request panicked; it failed and the server goes on", "panics while handling requests not logged (rate limit)")}
	a := &api{
		guard:   g,
		Options: o,
		pushers: newPushers(maxBatchInFlight, maxBatchWaiting, pusherIdle),
		limit:   newClientLimit(o.RegisterLimit, o.TrustedProxies, o.Logger),
		failed: logging.NewLimited(o.Logger, time.Now, slog.LevelError, 10,
			"the registry failed a registration or unregistration", "failed registrations and unregistrations not logged (rate limit)"),
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+v1+"register", a.register)
	mux.HandleFunc("POST "+v1+"unregister", a.unregister)
	mux.HandleFunc("POST "+v1+"push", a.push)
	mux.HandleFunc("POST "+v1+"push-batch", a.pushBatch)
	for _, name := range []string{"register", "unregister", "push", "push-batch"} {
		mux.HandleFunc("OPTIONS "+v1+name, preflight)
	}
	for name, fields := range map[string][]string{
		"register":   {"type", "node", "token"},
		"unregister": {"type", "node"},
		"push":       {"node", "secret"},
	} {
		h := a.form(formTitles[name], fields)
		mux.Handle("GET "+v1+name, h)
		mux.Handle("GET "+v1+name+"/", h)
	}
	// Where Siskin unregisters a device when it cannot over XMPP: the
	// paths of Tigase's push component and of its REST API, at the
	// component JID's host.
	mux.HandleFunc("POST /unregister-device/{jid}", a.unregisterDevice)
	mux.HandleFunc("POST /rest/push/unregister-device/{jid}", a.unregisterDevice)
	mux.HandleFunc("GET "+v1+"settings", a.settings)
	mux.HandleFunc("GET "+v1+"settings/{node}", a.settingsNode)
	mux.HandleFunc("GET "+v1+"health", a.health)
	mux.HandleFunc("GET "+v1+"ready", a.ready)
	mux.HandleFunc("GET "+v1+"live", a.live)
	mux.HandleFunc("GET /push_appserver/{$}", a.hello)
	mux.HandleFunc("GET /{$}", a.hello)
	if o.Metrics != nil {
		mux.Handle("GET /metrics", o.Metrics)
	}
	g.next = &posts{a: a, mux: mux}
	return &dated{next: g}
}

// v1 is the path of the API's endpoints.
const v1 = "/push_appserver/v1/"

// posts hands a POST to one of the v1 endpoints, nearly all of the API's
// requests, straight to its handler when its path names the endpoint as
// it stands: the mux would find the same handler, but only after
// cleaning, escaping and unescaping the path and matching it segment by
// segment, about 2,000 instructions a request. A path written any other
// way (with escapes, or unclean) goes to the mux, which answers it as it
// always has: "%2F" in a path is no separator to the mux, though
// URL.Path shows a '/' for it, which is why a path with escapes never
// takes this way.
type posts struct {
	a   *api
	mux http.Handler
}

func (p *posts) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodPost && r.URL.RawPath == "" {
		switch r.URL.Path {
		case v1 + "push":
			p.a.push(w, r)
			return
		case v1 + "push-batch":
			p.a.pushBatch(w, r)
			return
		case v1 + "register":
			p.a.register(w, r)
			return
		case v1 + "unregister":
			p.a.unregister(w, r)
			return
		}
	}
	p.mux.ServeHTTP(w, r)
}

// guarded answers a request whose handler panicked with the API's
// internal error, and logs the panic with its stack at error. net/http
// would recover too, but close the connection without an answer and log
// to its own logger, where no metric counts it.
type guarded struct {
	next     http.Handler
	panicked func()
	log      *logging.Limited // one stack a second: the same request may come again and again
}

func (g *guarded) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	defer func() {
		p := recover()
		if p == nil {
			return
		}
		if p == http.ErrAbortHandler {
			panic(p) // net/http's own way to cut a request short
		}
		g.logPanic(p, "method", r.Method, "path", r.URL.Path)
		http.Error(w, "ERROR\nInternal server error!", http.StatusInternalServerError)
	}()
	g.next.ServeHTTP(w, r)
}

// logPanic counts the panic p and logs it with the stack and args.
func (g *guarded) logPanic(p any, args ...any) {
	if g.panicked != nil {
		g.panicked()
	}
	g.log.Log(append(args, "panic", fmt.Sprint(p), "stack", string(debug.Stack()))...)
}

// dated gives every answer its Date header field. net/http formats one
// for each answer that has none, about 1,300 instructions of an HTTP
// push, though it changes once a second: dated formats it once a second.
type dated struct {
	next http.Handler
	cur  atomic.Pointer[dateField]
}

type dateField struct {
	unix  int64    // the second it names
	value []string // of length and capacity 1: whoever appends copies
}

func (d *dated) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	now := time.Now()
	f := d.cur.Load()
	if f == nil || f.unix != now.Unix() {
		f = &dateField{unix: now.Unix(), value: []string{now.UTC().Format(http.TimeFormat)}}
		d.cur.Store(f)
	}
	// net/http copies a handler's header before it writes it and never
	// changes the values, so one slice serves every answer of a second.
	w.Header()["Date"] = f.value
	d.next.ServeHTTP(w, r)
}

// MaxStreamsPerConnection bounds the requests an HTTP/2 connection
// carries at once: an XMPP server pushing over one connection keeps
// this many pushes under way, push-batch carries more.
const MaxStreamsPerConnection = 32

// readTimeout bounds the reading of a request, its body included.
const readTimeout = 10 * time.Second

// defaultWriteTimeout is the write timeout of a server whose pushes take
// at most the default push_timeout.
const defaultWriteTimeout = 40 * time.Second

// WriteTimeout is how long the server may take over a request from the
// end of its header to the end of its answer when a push takes at most
// pushTimeout (push_timeout: its throttle window, the push service and
// the retries included): the body's read (readTimeout), the push, and
// room for the rest. The server's write deadline runs from the end of
// the header, so a push still under way past it was sent but its answer
// never written: the client got an empty reply, and a proxy that retries
// such requests sent the push again.
func WriteTimeout(pushTimeout time.Duration) time.Duration {
	return max(defaultWriteTimeout, readTimeout+pushTimeout+15*time.Second)
}

// NewServer wraps h in an http.Server with timeouts, so a slow or idle
// client cannot hold connections open (slowloris). The write timeout leaves
// room for a push that waits for the throttle window and the push service
// as long as the default push_timeout lets it; a server whose pushes may
// take longer sets WriteTimeout.
//
// On connections a LimitListener admitted, each HTTP/2 request beyond a
// connection's first holds a slot of its ConnLimit and one of its
// client's share (see limitConn.beginRequest).
func NewServer(addr string, h http.Handler, logger *slog.Logger) *http.Server {
	return &http.Server{
		Addr:              addr,
		Handler:           limitRequests{next: h},
		ConnContext:       limitContext,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       readTimeout,
		WriteTimeout:      defaultWriteTimeout,
		IdleTimeout:       90 * time.Second,
		MaxHeaderBytes:    16 << 10,
		// HTTP/2 carries up to this many requests on one connection at
		// once (net/http's default is 250): max_connections_per_client
		// bounds connections, and with 250 streams each one client's
		// 128 connections would hold 32,000 requests, each a handler
		// waiting up to ReadTimeout for its body.
		HTTP2: &http.HTTP2Config{MaxConcurrentStreams: MaxStreamsPerConnection},
		ErrorLog: log.New(&serverLog{logger: logger,
			handshakes: logging.NewLimited(logger, time.Now, slog.LevelInfo, 1, "TLS handshake failed", "TLS handshakes failed (rate limit)"),
			other:      logging.NewLimited(logger, time.Now, slog.LevelWarn, 5, "HTTP server", "HTTP server lines not logged (rate limit)")}, "", 0),
	}
}

// serverLog is net/http's error log. A failed TLS handshake is one line
// per connection that anyone on the internet can open (a port scanner,
// plain HTTP on the HTTPS port): at most one a second, the rest counted.
type serverLog struct {
	logger     *slog.Logger
	handshakes *logging.Limited
	// other is every other line: HTTP/2's include lines a client sets
	// off at will (a GOAWAY frame, a bogus preface), one per frame.
	other *logging.Limited
}

func (l *serverLog) Write(p []byte) (int, error) {
	msg := strings.TrimSuffix(string(p), "\n")
	if strings.HasPrefix(msg, "http: TLS handshake error") {
		l.handshakes.Log("err", msg)
	} else {
		l.other.Log("err", msg)
	}
	return len(p), nil
}

var formTitles = map[string]string{
	"register":   "Register Push Node",
	"unregister": "Unregister Push Node",
	"push":       "Send Push Request",
}

type api struct {
	Options
	pushers *pushers     // push-batch's
	limit   *clientLimit // nil: registrations unbounded
	guard   *guarded     // logs and counts panics
	// failed logs registrations and unregistrations the registry failed
	// (a full disk, a database down), a few a second: each is a request
	// anyone may repeat.
	failed *logging.Limited

	// sources are push sources named lately (see pushSource), one a
	// slot by a hash of the address: pushes come from a few addresses,
	// their senders' servers, and naming one anew was an allocation of
	// every push.
	sources [256]atomic.Pointer[sourceName]
	// peers are the connections' peers read lately (see peer), one a
	// slot by a hash of the RemoteAddr: net/http gives every request of
	// a connection the same one, and parsing it again was about 700
	// instructions of every push.
	peers [256]atomic.Pointer[peerAddr]
}

// peerAddr is a connection's peer as clientOf reads it: its RemoteAddr,
// the address in it (invalid when it holds none) and whether that is a
// trusted proxy.
type peerAddr struct {
	remote  string
	hop     netip.Addr
	trusted bool
}

// peer reads the peer named by remote, a request's RemoteAddr, or takes
// it from the last request that came with the same.
func (a *api) peer(remote string) *peerAddr {
	// By its last eight bytes, the port and the end of the address: a
	// connection's differ from those of the others of its client.
	var last [8]byte
	copy(last[:], remote[max(len(remote)-8, 0):])
	h := binary.LittleEndian.Uint64(last[:]) * 0x9e3779b97f4a7c15
	slot := &a.peers[h>>56]
	if p := slot.Load(); p != nil && p.remote == remote {
		return p
	}
	hop, ok := peerOf(remote)
	p := &peerAddr{remote: remote, hop: hop, trusted: ok && isTrusted(a.TrustedProxies, hop)}
	slot.Store(p)
	return p
}

// sourceName is a push source's address and its name.
type sourceName struct {
	addr netip.Addr
	name string
}

// admit answers 429 and returns false when r's client has used up its
// registrations for now. It runs before the body is read: a client over
// its limit costs no more than its request's header.
func (a *api) admit(w http.ResponseWriter, r *http.Request, endpoint string) bool {
	ok, wait := a.limit.allow(r)
	if ok {
		return true
	}
	if a.Limited != nil {
		a.Limited(endpoint)
	}
	w.Header().Set("Retry-After", retryAfter(wait))
	textStatus(w, http.StatusTooManyRequests, "ERROR\n", "Rate limit exceeded, try again later!")
	return false
}

// readForm decodes a form-encoded body of at most MaxBodySize bytes into
// f and checks that every required field is there. The content type is
// not checked: the seed never did, and some clients send none.
func readForm(w http.ResponseWriter, r *http.Request, f *form, required ...string) bool {
	if msg := parseRequestForm(r, f, required...); msg != "" {
		badRequest(w, msg)
		return false
	}
	return true
}

// parseRequestForm is readForm without the answer: it returns the one
// line saying what is wrong with the form, or "". f is the form read,
// also when a required field is missing, and else empty. The form is
// the caller's to keep where it likes (a handler's, on its stack): it is
// a few hundred bytes, which copying cost a push more than reading them.
func parseRequestForm(r *http.Request, f *form, required ...string) string {
	body, msg := readBody(r.Body, r.ContentLength, MaxBodySize)
	if msg != "" {
		*f = form{}
		return msg
	}
	// The body is read into a buffer of its own that nothing writes
	// again: the form's strings share it rather than a copy of it.
	if err := f.parse(unsafe.String(unsafe.SliceData(body), len(body))); err != nil {
		*f = form{}
		return "Malformed form data"
	}
	// A field given twice has no one meaning: we would read the first,
	// mod_push_appserver (Prosody's form decoding) took the last.
	if name, dup := f.duplicate(); dup {
		*f = form{}
		msg := fmt.Sprintf("Duplicate field '%s'", name)
		if strings.ContainsAny(name, "\r\n") {
			// The name is the client's: it must not add lines.
			msg = fmt.Sprintf("Duplicate field %q", name)
		}
		return msg
	}
	for _, name := range required {
		if f.Get(name) == "" {
			return fmt.Sprintf("Missing field '%s'", name)
		}
	}
	return ""
}

// form is a decoded form: url.ParseQuery's, read by first value only.
// A form of plain fields (nothing escaped, no '+' for a space) is read
// straight from its text, as such forms (every push's node and secret)
// are nearly all: url.ParseQuery's map and a slice per field were a
// tenth of the allocations of an HTTP push. A plain form of at most
// fewFields fields is cut into them once, with its duplicate found on
// the way: a push's form was otherwise read five times over, once for
// the duplicate and once for each Get.
type form struct {
	plain  string     // the body, when it has nothing to decode
	values url.Values // otherwise
	// fields are a plain form's first n fields, all of them unless n is
	// -1: then Get reads plain. dup names a field given twice, when
	// hasDup.
	fields [fewFields]formField
	n      int
	dup    string
	hasDup bool
}

// formField is one field of a plain form: its name, and its value ("" for
// a field without '=').
type formField struct{ name, value string }

// fewFields is the most fields a plain form is cut into: a push has two,
// a registration four.
const fewFields = 4

// parse reads body into f, whatever f held before.
func (f *form) parse(body string) error {
	// Three IndexBytes rather than ContainsAny: they go a word at a
	// time, and ContainsAny byte by byte.
	if strings.IndexByte(body, '%') < 0 && strings.IndexByte(body, '+') < 0 && strings.IndexByte(body, ';') < 0 {
		// What url.ParseQuery decodes and refuses ('%' escapes, '+',
		// and ';', its error) is absent: it would give each field
		// as written.
		f.plain, f.values, f.n, f.dup, f.hasDup = body, nil, 0, "", false
		f.cut()
		return nil
	}
	v, err := url.ParseQuery(body)
	*f = form{values: v}
	return err
}

// cut reads a plain form into fields, and the first name given twice
// into dup, unless it has more than fewFields fields (n is then -1).
func (f *form) cut() {
	for rest := f.plain; rest != ""; {
		var field string
		field, rest, _ = strings.Cut(rest, "&")
		if field == "" {
			continue
		}
		if f.n == len(f.fields) {
			f.n, f.dup, f.hasDup = -1, "", false
			return
		}
		k, v, _ := strings.Cut(field, "=")
		if !f.hasDup {
			for _, seen := range f.fields[:f.n] {
				if seen.name == k {
					f.dup, f.hasDup = k, true
					break
				}
			}
		}
		f.fields[f.n] = formField{k, v}
		f.n++
	}
}

// Get returns the first value of the field name, or "". name holds no
// '=': no field's name can.
func (f *form) Get(name string) string {
	if f.values != nil {
		return f.values.Get(name)
	}
	if f.n >= 0 {
		for _, field := range f.fields[:f.n] {
			if field.name == name {
				return field.value
			}
		}
		return ""
	}
	for rest := f.plain; rest != ""; {
		var field string
		field, rest, _ = strings.Cut(rest, "&")
		// The field's name is name when the field is name, or starts
		// with it and an '=': only a field that starts so needs its
		// '=' found (the names asked for hold none).
		if field == "" || !strings.HasPrefix(field, name) {
			continue
		}
		if len(field) == len(name) {
			return ""
		}
		if field[len(name)] == '=' {
			return field[len(name)+1:]
		}
	}
	return ""
}

// duplicate returns the name of a field the form gives more than once
// ("" is a name too), and whether there is one.
func (f *form) duplicate() (string, bool) {
	if f.values != nil {
		for k, v := range f.values {
			if len(v) > 1 {
				return k, true
			}
		}
		return "", false
	}
	if f.n >= 0 {
		return f.dup, f.hasDup
	}
	// A form has a handful of fields: comparing each with those before
	// it beats a map, up to a point.
	var few [8]string
	var many map[string]bool
	n := 0
	for rest := f.plain; rest != ""; {
		var field string
		field, rest, _ = strings.Cut(rest, "&")
		if field == "" {
			continue
		}
		k, _, _ := strings.Cut(field, "=")
		if n < len(few) {
			for _, seen := range few[:n] {
				if seen == k {
					return k, true
				}
			}
			few[n] = k
		} else {
			if many == nil {
				many = make(map[string]bool)
				for _, seen := range few {
					many[seen] = true
				}
			}
			if many[k] {
				return k, true
			}
			many[k] = true
		}
		n++
	}
	return "", false
}

// readBody reads a body of at most limit bytes, or says in one line why
// it could not. A small body whose length the request declares is read
// into a buffer of that size, at once; a larger one into a buffer that
// grows as it arrives, or a client that declares the limit and sends
// nothing would have it allocated (on HTTP/2, for each of 250 streams of
// a connection). A body read whole is closed: net/http
// would otherwise look for more of it when the answer is written, at the
// cost of an io.LimitReader an answer.
func readBody(body io.ReadCloser, length int64, limit int) ([]byte, string) {
	if length > int64(limit) {
		return nil, tooLarge(limit)
	}
	var b []byte
	var err error
	switch {
	case length >= 0 && length <= firstBodyBuffer:
		// net/http ends the body after the declared length.
		b = make([]byte, length)
		_, err = io.ReadFull(body, b)
	case length >= 0:
		// io.ReadAll's buffer grows as the body arrives.
		b, err = io.ReadAll(io.LimitReader(body, length))
		if err == nil && int64(len(b)) < length {
			err = io.ErrUnexpectedEOF
		}
	default:
		b, err = io.ReadAll(io.LimitReader(body, int64(limit)+1))
	}
	if err != nil {
		return nil, "Could not read request body"
	}
	if len(b) > limit {
		return nil, tooLarge(limit)
	}
	body.Close()
	return b, ""
}

// firstBodyBuffer is the largest declared body readBody allocates whole
// at once: a push's form fits.
const firstBodyBuffer = 1024

func tooLarge(limit int) string { return fmt.Sprintf("Request body larger than %d bytes", limit) }

func badRequest(w http.ResponseWriter, msg string) {
	textStatus(w, http.StatusBadRequest, "ERROR\n", msg)
}

// forbidden answers a registration change the caller may not make.
func forbidden(w http.ResponseWriter, err error) {
	textStatus(w, http.StatusForbidden, "ERROR\n", firstLine(err))
}

// textPlain is the Content-Type of every text answer. net/http copies a
// handler's header before it writes it and never changes the values, so
// one slice serves every answer: Header.Set allocated one per answer.
var textPlain = []string{"text/plain; charset=utf-8"}

// text answers 200 with the lines given.
func text(w http.ResponseWriter, lines ...string) { textStatus(w, http.StatusOK, lines...) }

// textStatus answers status with the lines given, written one after the
// other into the response's buffer rather than joined first.
func textStatus(w http.ResponseWriter, status int, lines ...string) {
	w.Header()["Content-Type"] = textPlain
	w.WriteHeader(status)
	for _, l := range lines {
		io.WriteString(w, l)
	}
}

func (a *api) register(w http.ResponseWriter, r *http.Request) {
	allowOrigin(w, r)
	if !a.admit(w, r, "register") {
		return
	}
	var f form
	if !readForm(w, r, &f, "type", "node", "token") {
		return
	}
	// secret is optional: the registration's current secret, proof that
	// lets a client change the token of a node it registered before.
	caller := appserver.Caller{Secret: f.Get("secret")}
	reg, err := a.Service.Register(r.Context(), caller, f.Get("type"), f.Get("node"), f.Get("token"))
	switch {
	case err == nil:
		text(w, "OK\n", reg.Node, "\n", reg.Secret)
	case errors.Is(err, appserver.ErrForbidden):
		forbidden(w, err)
	case errors.Is(err, appserver.ErrUnknownType):
		text(w, "ERROR\nUnknown push type!")
	case errors.Is(err, appserver.ErrBadRequest):
		badRequest(w, firstLine(err))
	case errors.Is(err, appserver.ErrInvalidToken):
		text(w, "ERROR\n"+firstLine(err))
	case errors.Is(err, appserver.ErrUnconfirmed):
		// Stored; the core logged it. 200 as for the registry's other
		// failures: clients read the first line.
		text(w, "ERROR\n", unconfirmed)
	case errors.Is(err, context.Canceled) && r.Context().Err() != nil:
		// The client hung up: nobody's failure, nothing to log.
		text(w, "ERROR\nInternal server error!")
	default:
		a.failed.Log("endpoint", "register", "err", err)
		text(w, "ERROR\nInternal server error!")
	}
}

func (a *api) unregister(w http.ResponseWriter, r *http.Request) {
	allowOrigin(w, r)
	if !a.admit(w, r, "unregister") {
		return
	}
	var f form
	if !readForm(w, r, &f, "type", "node") {
		return
	}
	reg, err := a.Service.Unregister(r.Context(), appserver.Caller{Secret: f.Get("secret")}, f.Get("type"), f.Get("node"))
	switch {
	case err == nil:
		// The seed answered the secret on a third line, to whoever asked.
		// The line stays, empty, for clients that count lines.
		text(w, "OK\n", reg.Node, "\n")
	case errors.Is(err, appserver.ErrForbidden):
		forbidden(w, err)
	case errors.Is(err, appserver.ErrNotFound):
		text(w, "ERROR\nNode not found!")
	case errors.Is(err, appserver.ErrBadRequest):
		badRequest(w, firstLine(err))
	case errors.Is(err, appserver.ErrUnconfirmed):
		text(w, "ERROR\n", unconfirmed)
	case errors.Is(err, context.Canceled) && r.Context().Err() != nil:
		// The client hung up: nobody's failure, nothing to log.
		text(w, "ERROR\nInternal server error!")
	default:
		a.failed.Log("endpoint", "unregister", "err", err)
		text(w, "ERROR\nInternal server error!")
	}
}

// The API's endpoints answer web apps of any origin as Prosody's HTTP
// server answered mod_push_appserver's routes by default (its
// http_default_cors_enabled, on since 0.12): a browser XMPP client served
// from another origin registers its WebPush subscription here, and
// without these fields the browser sent the registration but hid its
// answer, the secret, from the app, and sent no push-batch (JSON, which
// it asks about first) at all. No credentials are allowed: the API
// authenticates by what the body carries, so a page reading an answer
// learns nothing its author could not ask for directly. The debug pages
// (every secret) get none of this. The slices are shared, as textPlain.
var (
	corsAnyOrigin = []string{"*"}
	corsExposed   = []string{"Retry-After"}
	corsMethods   = []string{"POST, OPTIONS"}
	corsHeaders   = []string{"Content-Type"}
	corsMaxAge    = []string{"7200"} // Prosody's access_control_max_age
)

// allowOrigin lets the page that sent r read its answer, when a browser
// sent it: only they send Origin, and servers and apps pay nothing.
func allowOrigin(w http.ResponseWriter, r *http.Request) {
	if _, ok := r.Header["Origin"]; ok {
		h := w.Header()
		h["Access-Control-Allow-Origin"] = corsAnyOrigin
		h["Access-Control-Expose-Headers"] = corsExposed
	}
}

// preflight answers the question a browser asks before a request a form
// could not send (a JSON body, a Content-Type of its own).
func preflight(w http.ResponseWriter, r *http.Request) {
	allowOrigin(w, r)
	h := w.Header()
	h["Access-Control-Allow-Methods"] = corsMethods
	h["Access-Control-Allow-Headers"] = corsHeaders
	h["Access-Control-Max-Age"] = corsMaxAge
	w.WriteHeader(http.StatusOK)
}

// unconfirmed answers a change stored but not confirmed by every instance
// (appserver.ErrUnconfirmed): the client must not take it as done, and
// its next try finds it stored.
const unconfirmed = "Not confirmed, try again later!"

func (a *api) push(w http.ResponseWriter, r *http.Request) {
	allowOrigin(w, r)
	skipWatch(r)
	var f form
	if msg := parseRequestForm(r, &f, "node", "secret"); msg != "" {
		// Counted and logged as a malformed publish is: a client that
		// sends every push without its secret would otherwise move no
		// push metric and write no line at all.
		a.rejectMalformed(f.Get("node"), msg)
		badRequest(w, msg)
		return
	}
	node := f.Get("node")
	// No summary: priority auto makes this a silent push, as the seed does.
	err := a.Service.Push(pushContext(r), appserver.PushRequest{Node: node, Secret: f.Get("secret"), Source: a.pushSource(r)})
	if err != nil {
		_, why := pushOutcome(err)
		text(w, "ERROR\n", why)
		return
	}
	text(w, "OK\n", node)
}

// pushSource is who asked for the push r carries, as the core's
// per-device limit counts it (appserver.PushRequest.Source): its client's
// address as RegisterLimit counts it, an IPv6 client by its /64, or the
// last trusted proxy when every hop is one. Only addresses the client
// cannot choose, so that no one can spend another's budget; a server
// whose XMPP domain is an IP address shares its budget with the HTTP
// pushes from that address, that is with its own.
func (a *api) pushSource(r *http.Request) string {
	p := a.peer(r.RemoteAddr)
	if !p.hop.IsValid() {
		return ""
	}
	client, proxy := clientBehind(r, a.TrustedProxies, p.hop, p.trusted)
	if !client.IsValid() && proxy.IsValid() {
		client = clientKey(proxy)
	}
	if !client.IsValid() {
		return ""
	}
	b := client.As16()
	h := binary.LittleEndian.Uint64(b[:8]) ^ binary.LittleEndian.Uint64(b[8:])
	h ^= h >> 32
	h ^= h >> 16
	slot := &a.sources[uint8(h^h>>8)]
	if known := slot.Load(); known != nil && known.addr == client {
		return known.name
	}
	name := client.String()
	slot.Store(&sourceName{addr: client, name: name})
	return name
}

// watchSkipper is a connection that can let net/http's watch of the
// client go for the request under way (sockio.Conn).
type watchSkipper interface{ SkipWatch() }

// skipWatch tells the connection of r, a request over cleartext HTTP/1.x
// on a connection LimitListener admitted, that r's handler does not need
// net/http to watch the client while it runs: r's context then does not
// end when the client hangs up. Only for a push, carried out whether or
// not the client waits (see pushContext); push-batch needs the watch, as
// a batch whose client is gone starts no more pushes. It must come
// before the body is read, whose end starts the watch (sockio.SkipWatch),
// and the body must be there to read: a request without one has its
// watch started before its handler, and the mark would be left for the
// watch of a request sent after it in the same packets.
func skipWatch(r *http.Request) {
	if r.ProtoMajor != 1 || r.TLS != nil || r.ContentLength == 0 {
		// HTTP/2 has no such watch, and over TLS net/http watches the
		// TLS connection, whose reads are not of one byte.
		return
	}
	if c, _ := r.Context().Value(connKey{}).(*limitConn); c != nil {
		if s, ok := c.Conn.(watchSkipper); ok {
			s.SkipWatch()
		}
	}
}

// pushContext is the context a requested push runs under: the request's
// push values (push.Detach), but not its end. A push once asked for is
// carried out whether or not the client waits for the answer, as a
// publish IQ's push is; its own deadline (the app's push_deadline) bounds
// it. Under the request's context, which ends when the client hangs up, a
// push would also take a timer and five allocations of its own, where
// pushes under way together share their deadline's (internal/deadline).
func pushContext(r *http.Request) context.Context { return push.Detach(r.Context()) }

// pushOutcome is a failed push's status code in a push-batch answer and
// the text both push endpoints answer.
func pushOutcome(err error) (status, text string) {
	switch {
	case errors.Is(err, appserver.ErrNotFound):
		return "not-found", "Node or secret not found!"
	case errors.Is(err, appserver.ErrThrottled):
		return "rate-limited", "Rate limit exceeded, try again later!"
	case errors.Is(err, appserver.ErrUnavailable):
		return "unavailable", "Shutting down, try again later!"
	default:
		return "failed", "Internal server error!"
	}
}

// firstLine keeps an error answer to the one line the protocol allows.
func firstLine(err error) string {
	s, _, _ := strings.Cut(err.Error(), "\n")
	return s
}

var pages = template.Must(template.New("").Parse(`
{{define "head"}}<!DOCTYPE html>
<html><head><title>push-appserver</title></head><body>
{{end}}
{{define "foot"}}
</body></html>{{end}}
{{define "hello"}}{{template "head"}}<h1>Hello from push-appserver!</h1>{{template "foot"}}{{end}}
{{define "form"}}{{template "head"}}<h1>{{.Title}}</h1><form method="post"><table>
{{range .Fields}}<tr><td>{{.}}</td><td><input type="text" name="{{.}}" required></td></tr>
{{end}}<tr><td>&nbsp;</td><td><button type="submit">send request</button></td></tr>
</table></form>{{template "foot"}}{{end}}
{{define "settings"}}{{template "head"}}<h1>List of devices (node uuids)</h1>
{{range .}}<a href="settings/{{.}}">{{.}}</a><br>
{{end}}{{template "foot"}}{{end}}
{{define "node"}}{{template "head"}}<a href="../settings">Back to List</a><br>
<pre>{{range .}}{{.Key}} = {{.Value}}
{{end}}</pre>{{template "foot"}}{{end}}
`))

func (a *api) render(w http.ResponseWriter, name string, data any) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	if err := pages.ExecuteTemplate(w, name, data); err != nil {
		a.Logger.Error("rendering page", "page", name, "err", err)
	}
}

func (a *api) hello(w http.ResponseWriter, r *http.Request) { a.render(w, "hello", nil) }

func (a *api) forbidden(w http.ResponseWriter) bool {
	if a.Debugging {
		return false
	}
	textStatus(w, http.StatusForbidden, "ERROR\nDebugging is disabled")
	return true
}

func (a *api) form(title string, fields []string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if a.forbidden(w) {
			return
		}
		a.render(w, "form", struct {
			Title  string
			Fields []string
		}{title, fields})
	}
}

func (a *api) settings(w http.ResponseWriter, r *http.Request) {
	if a.forbidden(w) {
		return
	}
	nodes, err := a.Registrations.Nodes(r.Context(), maxSettingsNodes)
	if err != nil {
		a.Logger.Error("listing nodes", "err", err)
		http.Error(w, "ERROR\nInternal server error!", http.StatusInternalServerError)
		return
	}
	a.render(w, "settings", nodes)
}

func (a *api) settingsNode(w http.ResponseWriter, r *http.Request) {
	if a.forbidden(w) {
		return
	}
	reg, err := a.Registrations.Get(r.Context(), r.PathValue("node"))
	if errors.Is(err, registry.ErrNotFound) {
		textStatus(w, http.StatusNotFound, "ERROR\nNode not found!")
		return
	}
	if err != nil {
		a.Logger.Error("reading node", "err", err)
		http.Error(w, "ERROR\nInternal server error!", http.StatusInternalServerError)
		return
	}
	type kv struct{ Key, Value string }
	ts := func(t time.Time) string {
		if t.IsZero() {
			return ""
		}
		return t.UTC().Format(time.RFC3339)
	}
	a.render(w, "node", []kv{
		{"type", reg.Type}, {"node", reg.Node}, {"token", reg.Token}, {"secret", reg.Secret},
		{"registered", ts(reg.Registered)}, {"renewed", ts(reg.Renewed)},
		{"last_successful_push", ts(reg.LastSuccessfulPush)}, {"last_push_error", ts(reg.LastPushError)},
		{"last_error_reason", reg.LastErrorReason}, {"domain", reg.Domain},
	})
}

// ready is for load balancers and orchestrators: 200 while every part
// works, 503 naming the parts that do not (a component that lost its XMPP
// server). Liveness stays with live and health, and so do the parts every
// instance shares (the registry, an app's configuration), whose failure
// would take all of them out of service together.
//
// require=http asks only whether the HTTP API serves: a load balancer in
// front of the API alone has no use for the components, and following
// them took every instance's API out of service while their XMPP server
// was down, though registrations and pushes over HTTP worked.
// require=components is the default, which existing probes rely on.
func (a *api) ready(w http.ResponseWriter, r *http.Request) {
	components := true
	if r.URL.RawQuery != "" {
		q := r.URL.Query()
		switch req := q["require"]; {
		case len(req) == 0 || len(req) == 1 && req[0] == "components":
		case len(req) == 1 && req[0] == "http":
			components = false
		default:
			textStatus(w, http.StatusBadRequest, "ERROR\n", "require must be components or http")
			return
		}
	}
	w.Header().Set("Cache-Control", "no-store")
	if a.Draining != nil && a.Draining() {
		textStatus(w, http.StatusServiceUnavailable, "NOT READY\nshutting down\n")
		return
	}
	var down []string
	if components && a.Checks != nil {
		for _, c := range a.Checks() {
			if c.HealthOnly {
				continue // not waited for either: a hung registry must not time the probe out
			}
			if _, ok := c.State(); !ok {
				down = append(down, c.Name+": down")
			}
		}
	}
	if len(down) > 0 {
		textStatus(w, http.StatusServiceUnavailable, "NOT READY\n", strings.Join(down, "\n"), "\n")
		return
	}
	text(w, "READY\n")
}

// live is for an orchestrator's liveness probe: 503 once the server is
// stuck (see Liveness), the check systemd's watchdog makes under a unit,
// which nothing outside systemd made. It asks nothing that may hang
// (the registry, an XMPP server): an outage the server rides out is no
// reason to restart it.
func (a *api) live(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	if a.Stuck != nil {
		if d, stuck := a.Stuck(); stuck {
			textStatus(w, http.StatusServiceUnavailable, "NOT ALIVE\n", "core: stuck for ", d.Round(time.Second).String(), "\n")
			return
		}
	}
	text(w, "ALIVE\n")
}

// health always says RUNNING while the process serves HTTP, as the seed
// did; the lines after it give the state of each part so an operator (or a
// check that greps for "down") can see a lost XMPP connection.
func (a *api) health(w http.ResponseWriter, r *http.Request) {
	var b strings.Builder
	b.WriteString("RUNNING\n")
	if a.Checks != nil {
		for _, c := range a.Checks() {
			state, _ := c.State()
			fmt.Fprintf(&b, "%s: %s\n", c.Name, state)
		}
	}
	text(w, b.String())
}

// malformedRejecter is a Service that counts and logs push requests it
// could not read (appserver.Service).
type malformedRejecter interface {
	RejectMalformed(node, why string)
}

// rejectMalformed tells the service, if it listens, of a push request
// refused as malformed; why is the answer's line, node the request's
// (maybe empty).
func (a *api) rejectMalformed(node, why string) {
	if m, ok := a.Service.(malformedRejecter); ok {
		m.RejectMalformed(node, why)
	}
}
