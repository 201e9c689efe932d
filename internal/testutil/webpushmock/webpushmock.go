// Package webpushmock is a stand-in for an RFC 8030 push service (the
// browsers' push services, a UnifiedPush distributor) over HTTP/2 and TLS.
// It hands out subscriptions bound to an application server key as
// PushManager.subscribe does, and for every push checks what a real
// service checks: the VAPID token (RFC 8292: ES256 signature against the
// subscription's key, aud, exp within 24 hours, sub), the RFC 8030 headers
// (TTL, Urgency, Topic) and the aes128gcm coding; it then decrypts the
// message with the subscription's private key as the browser would, and
// records it. Faults (404, 410, 413, 429 with Retry-After, 5xx, redirects,
// oversized answers) are injected per subscription or for the next pushes.
package webpushmock

import (
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/push-appserver/push-appserver/internal/push/webpush"
	"github.com/push-appserver/push-appserver/internal/testutil/mockhttp"
)

// Message is one push as the mock saw it.
type Message struct {
	Subscription string // the subscription's id (the endpoint's last path segment)
	Header       http.Header
	Proto        string // HTTP/2.0 or HTTP/1.1
	Plaintext    []byte // decrypted payload; nil when the push was refused before
	Size         int    // bytes of the encrypted body: all a push service learns of the payload
	Status       int
	Reason       string // why it was refused, if it was
}

// Fault is an answer to inject.
type Fault struct {
	Status     int
	RetryAfter string // Retry-After header value
	Location   string // Location header (redirects)
	// BodyBytes, when set, makes the answer body that long, to see that
	// the client reads no more than it needs.
	BodyBytes int
}

// Server is a running mock push service.
type Server struct {
	URL   string // origin, https://127.0.0.1:port
	Port  int
	CADir string // directory with the mock's CA certificate, for a ca_path option

	srv    *mockhttp.Server
	faults mockhttp.Faults[Fault]

	// latency delays every answer that decrypts (SetLatency).
	latency atomic.Int64
	// maxBody, when set, is the largest body taken (SetMaxBody).
	maxBody atomic.Int64

	mu       sync.Mutex
	subs     map[string]*subscription
	messages []Message
	accepted int
	// oversize receives how many bytes of an oversized answer body the
	// client took before it hung up.
	oversize chan int64
}

type subscription struct {
	key       *ecdh.PrivateKey
	auth      []byte
	serverKey string // the application server key it was created for (base64url)
	// origin is the endpoint's: the JWT's audience must be it (RFC 8292
	// section 2), whichever way the request reached the mock.
	origin string
}

// New starts a mock.
func New() (*Server, error) {
	s := &Server{subs: map[string]*subscription{}, oversize: make(chan int64, 16)}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /push/{id}", s.push)
	srv, err := mockhttp.Start("webpushmock", mux, nil)
	if err != nil {
		return nil, err
	}
	s.srv, s.URL, s.CADir = srv, srv.URL, srv.CADir
	_, port, _ := strings.Cut(strings.TrimPrefix(s.URL, "https://"), ":")
	s.Port, _ = strconv.Atoi(port)
	return s, nil
}

// Close stops the mock.
func (s *Server) Close() { s.srv.Close() }

// SetLatency makes the mock take d before each answer, as a busy push
// service does.
func (s *Server) SetLatency(d time.Duration) { s.latency.Store(int64(d)) }

// SetMaxBody makes the mock refuse bodies longer than n bytes with 413,
// as a service that takes less than RFC 8030's 4,096 does: Mozilla's,
// bridging Firefox on Android to FCM, takes at most 4,096 bytes of JSON
// that holds the body in base64, about 3,015 bytes of body. 0 restores
// the 4,096.
func (s *Server) SetMaxBody(n int) { s.maxBody.Store(int64(n)) }

// Start starts a mock, closed when the test ends, and writes a VAPID key
// for the app server under test, returning the key's file and its public
// half, which subscriptions are made for.
func Start(t testing.TB) (s *Server, keyFile, pub string) {
	t.Helper()
	s, err := New()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	keyFile = filepath.Join(t.TempDir(), "vapid.pem")
	if pub, err = webpush.GenerateVAPIDKey(keyFile); err != nil {
		t.Fatal(err)
	}
	return s, keyFile, pub
}

// Subscription is what a browser gets from PushManager.subscribe.
type Subscription struct {
	ID       string
	Endpoint string
	JSON     string // PushSubscription.toJSON(), the token a client registers
	// Key and Auth are the browser's secrets, for decrypting.
	Key  *ecdh.PrivateKey
	Auth []byte
}

// Subscribe creates a subscription for the application server key
// serverKey (base64url, uncompressed point), at the mock's origin.
func (s *Server) Subscribe(serverKey string) (Subscription, error) {
	return s.SubscribeAt(s.URL, serverKey)
}

// SubscribeAt is Subscribe with the endpoint on another origin that
// reaches the mock (https://localhost:port, say).
func (s *Server) SubscribeAt(origin, serverKey string) (Subscription, error) {
	key, err := ecdh.P256().GenerateKey(rand.Reader)
	if err != nil {
		return Subscription{}, err
	}
	auth := make([]byte, 16)
	idb := make([]byte, 12)
	rand.Read(auth)
	rand.Read(idb)
	id := hex.EncodeToString(idb)
	endpoint := origin + "/push/" + id
	js, err := webpush.SubscriptionJSON(endpoint, base64.RawURLEncoding.EncodeToString(key.PublicKey().Bytes()), base64.RawURLEncoding.EncodeToString(auth))
	if err != nil {
		return Subscription{}, err
	}
	s.mu.Lock()
	s.subs[id] = &subscription{key: key, auth: auth, serverKey: serverKey, origin: origin}
	s.mu.Unlock()
	return Subscription{ID: id, Endpoint: endpoint, JSON: js, Key: key, Auth: auth}, nil
}

// Unsubscribe forgets a subscription: pushes to it get 410 Gone, as after
// the user revoked the permission.
func (s *Server) Unsubscribe(id string) {
	s.mu.Lock()
	s.subs[id] = nil
	s.mu.Unlock()
}

// Fail makes the next pushes to subscription id fail, one fault each.
func (s *Server) Fail(id string, faults ...Fault) { s.faults.ForToken(id, faults...) }

// FailNext makes the next pushes fail, whatever their subscription.
func (s *Server) FailNext(faults ...Fault) { s.faults.Next(faults...) }

// Messages returns every push received.
func (s *Server) Messages() []Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Message(nil), s.messages...)
}

// Accepted returns how many pushes were accepted (201).
func (s *Server) Accepted() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.accepted
}

// Connections returns how many TCP connections clients opened.
func (s *Server) Connections() int { return s.srv.Connections() }

// OversizeWritten waits until the mock has finished writing an oversized
// answer body (the client closed the stream, or all was read) and returns
// how many bytes it wrote; -1 after a minute without one.
func (s *Server) OversizeWritten() int64 {
	select {
	case n := <-s.oversize:
		return n
	case <-time.After(time.Minute):
		return -1
	}
}

var (
	topicRE   = regexp.MustCompile(`^[A-Za-z0-9_-]{1,32}$`)
	vapidRE   = regexp.MustCompile(`^vapid t=([A-Za-z0-9_.-]+), ?k=([A-Za-z0-9_-]+)$`)
	urgencies = map[string]bool{"very-low": true, "low": true, "normal": true, "high": true}
)

func (s *Server) push(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	m := Message{Subscription: id, Header: r.Header.Clone(), Proto: r.Proto}
	answer := func(status int, reason string) {
		m.Status, m.Reason = status, reason
		s.record(m)
		if status >= 400 {
			http.Error(w, reason, status)
			return
		}
		w.Header().Set("Location", s.URL+"/message/"+id)
		w.WriteHeader(status)
	}
	s.mu.Lock()
	sub, known := s.subs[id]
	s.mu.Unlock()
	switch {
	case !known:
		answer(http.StatusNotFound, "no such subscription")
		return
	case sub == nil:
		answer(http.StatusGone, "subscription expired")
		return
	}
	if status, reason := s.checkVAPID(r, sub); status != 0 {
		answer(status, reason)
		return
	}
	if reason := checkHeaders(r.Header); reason != "" {
		answer(http.StatusBadRequest, reason)
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, 4097))
	if err != nil {
		answer(http.StatusBadRequest, "reading body: "+err.Error())
		return
	}
	if len(body) > 4096 {
		answer(http.StatusRequestEntityTooLarge, "payload larger than 4096 bytes")
		return
	}
	if n := s.maxBody.Load(); n > 0 && int64(len(body)) > n {
		answer(http.StatusRequestEntityTooLarge, fmt.Sprintf("payload larger than %d bytes", n))
		return
	}
	m.Size = len(body)
	plain, err := webpush.Decrypt(body, sub.key, sub.auth)
	if err != nil {
		answer(http.StatusBadRequest, "cannot decrypt: "+err.Error())
		return
	}
	m.Plaintext = plain
	time.Sleep(time.Duration(s.latency.Load()))
	if f, ok := s.faults.Take(id); ok {
		s.fault(w, m, f)
		return
	}
	s.mu.Lock()
	s.accepted++
	s.mu.Unlock()
	answer(http.StatusCreated, "")
}

func (s *Server) fault(w http.ResponseWriter, m Message, f Fault) {
	m.Status, m.Reason = f.Status, "injected"
	s.record(m)
	if f.RetryAfter != "" {
		w.Header().Set("Retry-After", f.RetryAfter)
	}
	if f.Location != "" {
		w.Header().Set("Location", f.Location)
	}
	w.WriteHeader(f.Status)
	if f.BodyBytes > 0 {
		chunk := make([]byte, 16<<10)
		var n int64
		for n < int64(f.BodyBytes) {
			k, err := w.Write(chunk)
			n += int64(k)
			if err != nil {
				break
			}
			w.(http.Flusher).Flush()
		}
		s.oversize <- n
	}
}

// checkVAPID checks the Authorization header as RFC 8292 section 4.2
// says a push service does for a subscription bound to a key.
func (s *Server) checkVAPID(r *http.Request, sub *subscription) (int, string) {
	v := vapidRE.FindStringSubmatch(r.Header.Get("Authorization"))
	if v == nil {
		return http.StatusUnauthorized, "missing or malformed vapid Authorization"
	}
	if v[2] != sub.serverKey {
		return http.StatusForbidden, "k does not match the subscription's application server key"
	}
	raw, err := base64.RawURLEncoding.DecodeString(v[2])
	if err != nil {
		return http.StatusUnauthorized, "k is not base64url"
	}
	pub, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), raw)
	if err != nil {
		return http.StatusUnauthorized, "k is not a P-256 point"
	}
	var claims jwt.RegisteredClaims
	_, err = jwt.ParseWithClaims(v[1], &claims, func(*jwt.Token) (any, error) { return pub, nil },
		jwt.WithValidMethods([]string{"ES256"}), jwt.WithAudience(sub.origin), jwt.WithExpirationRequired())
	if err != nil {
		return http.StatusUnauthorized, "JWT: " + err.Error()
	}
	if claims.ExpiresAt.After(time.Now().Add(24 * time.Hour)) {
		return http.StatusUnauthorized, "JWT exp more than 24 hours ahead"
	}
	if !strings.HasPrefix(claims.Subject, "mailto:") && !strings.HasPrefix(claims.Subject, "https://") {
		return http.StatusUnauthorized, "JWT sub is not a mailto: or https: URI"
	}
	return 0, ""
}

func checkHeaders(h http.Header) string {
	ttl := h.Get("TTL")
	if n, err := strconv.Atoi(ttl); err != nil || n < 0 {
		return fmt.Sprintf("TTL header missing or not a number: %q", ttl)
	}
	if u := h.Get("Urgency"); u != "" && !urgencies[u] {
		return fmt.Sprintf("bad Urgency %q", u)
	}
	if t, ok := h["Topic"]; ok && (len(t) != 1 || !topicRE.MatchString(t[0])) {
		return fmt.Sprintf("bad Topic %q", t)
	}
	if ce := h.Values("Content-Encoding"); len(ce) != 1 || ce[0] != "aes128gcm" {
		return fmt.Sprintf("Content-Encoding must be exactly aes128gcm, got %q", ce)
	}
	return ""
}

func (s *Server) record(m Message) {
	s.mu.Lock()
	if len(s.messages) < 100000 {
		s.messages = append(s.messages, m)
	}
	s.mu.Unlock()
}
