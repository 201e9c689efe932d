// Package apnsmock is a stand-in for Apple's APNS provider API (HTTP/2 over
// TLS) that checks requests the way Apple documents them: method and path,
// the apns-* headers and their allowed values, the provider JWT (ES256,
// signature, kid, iss, age) or the client certificate, the device token
// and the payload's JSON and size. It answers a push to a token no device
// has (NoDevice), a provider's check of its credentials, as Apple does.
// It records every request and injects the faults a real service
// produces (410 with timestamp, 400, 403, 429, 500, 503, delays, GOAWAY,
// reset streams), per token or by schedule.
// Tests and the benchmark tool both use it.
package apnsmock

import (
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"golang.org/x/net/http2"

	"github.com/push-appserver/push-appserver/internal/testutil/mockhttp"
)

// Config says how the mock authenticates providers.
type Config struct {
	// TokenKey is the public half of the provider's p8 key; with it, every
	// request must carry a valid bearer JWT with KeyID and TeamID.
	TokenKey *ecdsa.PublicKey
	KeyID    string
	TeamID   string
	// ClientCAs, when set, makes the mock require a client certificate
	// signed by one of them (certificate-based provider auth).
	ClientCAs *x509.CertPool
	// Topic, when set, is the only apns-topic accepted (and Topic+".voip").
	Topic string
	// KeepRequests bounds the recorded requests; default 100,000.
	KeepRequests int
	// Now is the clock provider tokens' age is checked against; time.Now
	// when nil. Tests that move their backend's clock give it here too.
	Now func() time.Time
	// Latency delays every answer, as Apple's servers do over the
	// internet, so that pushes are under way at any moment.
	Latency time.Duration
}

// Request is one accepted or rejected request, as the mock saw it.
type Request struct {
	Token      string
	Topic      string
	PushType   string
	Priority   string
	Expiration string
	CollapseID string
	Auth       string    // "token" or "certificate"
	IssuedAt   time.Time // the provider token's iat, with token auth
	Bearer     string    // the provider token itself, with token auth
	Payload    map[string]any
	RawPayload []byte
	Status     int
	Reason     string
	// ID and UniqueID are the apns-id and apns-unique-id it answered.
	ID, UniqueID string
}

// Fault is an answer to inject instead of the normal one.
type Fault struct {
	Status    int           // HTTP status; 0 = answer normally after Delay
	Reason    string        // Apple's reason string
	Timestamp time.Time     // for 410 Unregistered
	Delay     time.Duration // wait before answering
	GoAway    bool          // answer, then send GOAWAY on the connection
	Reset     bool          // reset the stream instead of answering
	// RetryAfter, when set, is sent as a Retry-After header. Apple does
	// not document one; a proxy or a future APNS may send it.
	RetryAfter string
}

// Server is a running mock.
type Server struct {
	// URL is the base URL, to be used as the client's endpoint.
	URL string
	// CADir is a directory holding the mock's CA certificate in PEM, for a
	// client's CA path option; CAPool is the same as a pool.
	CADir  string
	CAPool *x509.CertPool

	cfg    Config
	srv    *mockhttp.Server
	faults mockhttp.Faults[Fault]

	accepted atomic.Int64
	// revoked refuses every provider token (see Revoke).
	revoked atomic.Bool
	// refuse, when set, is the reason every new connection is ended
	// with (see RefuseConnections); refused counts them.
	refuse  atomic.Pointer[string]
	refused atomic.Int64
	// verified is the last provider token whose signature checked out.
	// A provider sends the same token for up to an hour, and verifying
	// its ES256 signature on every request cost the mock more CPU than
	// the server it shares the benchmark's cores with spent on the push.
	verified atomic.Pointer[verifiedToken]

	mu        sync.Mutex
	requests  []Request
	checks    []Request
	total     int
	goAwayN   int
	sinceGoAw int
}

// New starts a mock on a loopback port.
func New(cfg Config) (*Server, error) {
	if cfg.KeepRequests == 0 {
		cfg.KeepRequests = 100000
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	s := &Server{cfg: cfg}
	var tlsCfg *tls.Config
	if cfg.ClientCAs != nil {
		tlsCfg = &tls.Config{ClientCAs: cfg.ClientCAs, ClientAuth: tls.RequireAndVerifyClientCert}
	}
	var setupErr error
	srv, err := mockhttp.StartWith("apnsmock", http.HandlerFunc(s.handle), tlsCfg, func(hs *http.Server) {
		// The mock must take a connection over before HTTP/2 serves
		// it, which only the TLSNextProto hook this installs allows.
		//lint:ignore SA1019 net/http's own HTTP/2 has no such hook
		if setupErr = http2.ConfigureServer(hs, nil); setupErr != nil {
			return
		}
		serve := hs.TLSNextProto["h2"]
		hs.TLSNextProto["h2"] = func(hs *http.Server, c *tls.Conn, h http.Handler) {
			if reason := s.refuse.Load(); reason != nil {
				s.refuseConn(c, *reason)
				return
			}
			serve(hs, c, h)
		}
	})
	if err == nil && setupErr != nil {
		srv.Close()
		err = setupErr
	}
	if err != nil {
		return nil, err
	}
	s.srv, s.URL, s.CADir, s.CAPool = srv, srv.URL, srv.CADir, srv.CAPool
	return s, nil
}

// Close stops the mock and removes its files.
func (s *Server) Close() { s.srv.Close() }

// AppConfig is the push-appserver configuration of an APNS app named app
// that pushes to this mock with token auth: the p8 key in keyFile, the
// mock's key ID, team and topic, its endpoint and CA. More keys of the
// app's table may follow it.
func (s *Server) AppConfig(app, keyFile string) string {
	return s.AppConfigKey(app, keyFile, s.cfg.KeyID)
}

// AppConfigKey is AppConfig with the key named keyID, which may be one
// the mock does not know (a key before its renewal).
func (s *Server) AppConfigKey(app, keyFile, keyID string) string {
	return fmt.Sprintf(`[apps.%s]
kind = "apns"
topic = %q
token_key_file = %q
key_id = %q
team_id = %q
endpoint = %q
ca_path = %q
`, app, s.cfg.Topic, keyFile, keyID, s.cfg.TeamID, s.URL, s.CADir)
}

// Connections returns how many connections clients opened.
func (s *Server) Connections() int { return s.srv.Connections() }

// OpenConnections returns how many connections are open now.
func (s *Server) OpenConnections() int { return s.srv.Open() }

// ResetConnections makes the mock reset every new TCP connection (on), or
// serve them again (off).
func (s *Server) ResetConnections(on bool) { s.srv.ResetConnections(on) }

// Requests returns the recorded requests.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Request(nil), s.requests...)
}

// Total returns the number of requests received, recorded or not.
func (s *Server) Total() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.total
}

// Accepted returns the number of requests answered 200.
func (s *Server) Accepted() int { return int(s.accepted.Load()) }

// NoDevice, 64 zeros, is a device token Apple never issues. A request to
// it is a provider's check of its credentials, which reaches no device:
// the mock answers it BadDeviceToken once every other check passed (Apple
// judges the provider's credentials and topic before the device token,
// as far as its answers show), and keeps it out of Requests, Total and
// Accepted, which count pushes, and out of the faults queued by
// FailNext. Checks returns them.
const NoDevice = "0000000000000000000000000000000000000000000000000000000000000000"

// Checks returns the recorded requests to NoDevice.
func (s *Server) Checks() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Request(nil), s.checks...)
}

// FailToken makes the next requests for token answer with faults, one
// each; the last fault repeats if sticky.
func (s *Server) FailToken(token string, faults ...Fault) { s.faults.ForToken(token, faults...) }

// FailNext makes the next requests, whatever their token, answer with
// faults, one each.
func (s *Server) FailNext(faults ...Fault) { s.faults.Next(faults...) }

// PendingFaults returns how many queued faults no request has taken yet.
func (s *Server) PendingFaults() int { return s.faults.Pending() }

// Revoke makes the mock refuse every provider token, however freshly
// signed, as InvalidProviderToken (on), as Apple does once the key is
// revoked in its portal, or take them again (off). Checks are refused
// too.
func (s *Server) Revoke(on bool) { s.revoked.Store(on) }

// RefuseConnections makes the mock end every new connection as Apple ends
// one whose client certificate it refuses: its SETTINGS, then, once the
// client's first request came, a GOAWAY with last stream 0, NO_ERROR and
// {"reason":reason} as debug data, answering no request, then the close. "" serves connections
// again.
func (s *Server) RefuseConnections(reason string) {
	if reason == "" {
		s.refuse.Store(nil)
		return
	}
	s.refuse.Store(&reason)
}

// Refused returns how many connections RefuseConnections ended.
func (s *Server) Refused() int { return int(s.refused.Load()) }

func (s *Server) refuseConn(c *tls.Conn, reason string) {
	defer c.Close()
	s.refused.Add(1)
	preface := make([]byte, len(http2.ClientPreface))
	if _, err := io.ReadFull(c, preface); err != nil {
		return
	}
	fr := http2.NewFramer(c, c)
	fr.WriteSettings(http2.Setting{ID: http2.SettingMaxConcurrentStreams, Val: 1})
	if f, err := fr.ReadFrame(); err != nil {
		return
	} else if sf, ok := f.(*http2.SettingsFrame); !ok || sf.IsAck() {
		return
	}
	fr.WriteSettingsAck()
	// Apple's GOAWAY follows the client's first request (which it
	// leaves unanswered); a client that sends none gets it a moment on.
	c.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			break
		}
		if _, ok := f.(*http2.HeadersFrame); ok {
			break
		}
	}
	debug, _ := json.Marshal(map[string]string{"reason": reason})
	fr.WriteGoAway(0, http2.ErrCodeNo, debug)
	// Drain what the client sent meanwhile, so the close is no reset
	// that would lose the GOAWAY, until it closes or a moment passes.
	c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	io.Copy(io.Discard, c)
}

// GoAwayEvery sends GOAWAY after every n-th request on a connection; 0 off.
func (s *Server) GoAwayEvery(n int) {
	s.mu.Lock()
	s.goAwayN = n
	s.mu.Unlock()
}

// Reset clears recorded requests and pending faults.
func (s *Server) Reset() {
	s.mu.Lock()
	s.requests, s.checks, s.total = nil, nil, 0
	s.mu.Unlock()
	s.faults.Clear()
	s.accepted.Store(0)
}

func (s *Server) nextFault(token string) (Fault, bool, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if token == NoDevice {
		f, ok := s.faults.TakeForToken(token)
		return f, ok, false
	}
	s.total++
	goAway := false
	if s.goAwayN > 0 {
		s.sinceGoAw++
		if s.sinceGoAw >= s.goAwayN {
			s.sinceGoAw = 0
			goAway = true
		}
	}
	f, ok := s.faults.Take(token)
	return f, ok, goAway
}

func (s *Server) record(r Request) {
	s.mu.Lock()
	if r.Token == NoDevice {
		s.checks = append(s.checks, r)
	} else if len(s.requests) < s.cfg.KeepRequests {
		s.requests = append(s.requests, r)
	}
	s.mu.Unlock()
}

var pushTypes = map[string]bool{"alert": true, "background": true, "voip": true, "location": true, "complication": true, "fileprovider": true, "mdm": true, "liveactivity": true, "pushtotalk": true}

func (s *Server) handle(w http.ResponseWriter, r *http.Request) {
	token := strings.TrimPrefix(r.URL.Path, "/3/device/")
	fault, hasFault, goAway := s.nextFault(token)
	req := Request{
		Token:      token,
		Topic:      r.Header.Get("apns-topic"),
		PushType:   r.Header.Get("apns-push-type"),
		Priority:   r.Header.Get("apns-priority"),
		Expiration: r.Header.Get("apns-expiration"),
		CollapseID: r.Header.Get("apns-collapse-id"),
	}
	answer := func(status int, reason string, ts time.Time) {
		req.Status, req.Reason = status, reason
		if goAway || fault.GoAway {
			w.Header().Set("Connection", "close")
		}
		if fault.RetryAfter != "" {
			w.Header().Set("Retry-After", fault.RetryAfter)
		}
		// Apple echoes the request's apns-id or makes one; its
		// development environment adds apns-unique-id, the id its
		// delivery log knows the notification by.
		req.ID = r.Header.Get("apns-id")
		if req.ID == "" {
			req.ID = newID()
		}
		req.UniqueID = strings.ToLower(newID())
		w.Header().Set("apns-id", req.ID)
		w.Header().Set("apns-unique-id", req.UniqueID)
		s.record(req)
		if status == http.StatusOK {
			s.accepted.Add(1)
			w.WriteHeader(status)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		body := map[string]any{"reason": reason}
		if !ts.IsZero() {
			body["timestamp"] = ts.UnixMilli()
		}
		json.NewEncoder(w).Encode(body)
	}
	delay := s.cfg.Latency
	if hasFault {
		delay += fault.Delay
	}
	if delay > 0 {
		select {
		case <-time.After(delay):
		case <-r.Context().Done():
			return
		}
	}
	if hasFault && fault.Reset {
		req.Status, req.Reason = -1, "reset"
		s.record(req)
		panic(http.ErrAbortHandler)
	}

	// Apple's checks, in the order its documentation lists the errors.
	if r.ProtoMajor != 2 {
		answer(http.StatusBadRequest, "BadPath", time.Time{}) // HTTP/2 is required
		return
	}
	if r.Method != http.MethodPost {
		answer(http.StatusMethodNotAllowed, "MethodNotAllowed", time.Time{})
		return
	}
	if !strings.HasPrefix(r.URL.Path, "/3/device/") || token == "" {
		answer(http.StatusNotFound, "BadPath", time.Time{})
		return
	}
	if auth, reason := s.authenticate(r, &req); reason != "" {
		answer(http.StatusForbidden, reason, time.Time{})
		return
	} else {
		req.Auth = auth
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, 8192))
	if err != nil {
		answer(http.StatusBadRequest, "BadMessageId", time.Time{})
		return
	}
	req.RawPayload = body
	switch {
	case req.Topic == "":
		answer(http.StatusBadRequest, "MissingTopic", time.Time{})
		return
	case s.cfg.Topic != "" && req.Topic != s.cfg.Topic && req.Topic != s.cfg.Topic+".voip":
		answer(http.StatusBadRequest, "TopicDisallowed", time.Time{})
		return
	case req.PushType != "" && !pushTypes[req.PushType]:
		answer(http.StatusBadRequest, "InvalidPushType", time.Time{})
		return
	case req.Priority != "" && req.Priority != "5" && req.Priority != "10" && req.Priority != "1":
		answer(http.StatusBadRequest, "BadPriority", time.Time{})
		return
	case req.PushType == "voip" && !strings.HasSuffix(req.Topic, ".voip"):
		answer(http.StatusBadRequest, "TopicDisallowed", time.Time{})
		return
	case len(req.CollapseID) > 64:
		answer(http.StatusBadRequest, "BadCollapseId", time.Time{})
		return
	}
	if req.Expiration != "" {
		if _, err := strconv.ParseInt(req.Expiration, 10, 64); err != nil {
			answer(http.StatusBadRequest, "BadExpirationDate", time.Time{})
			return
		}
	}
	if _, err := hex.DecodeString(token); err != nil || len(token) < 64 || len(token) > 200 {
		answer(http.StatusBadRequest, "BadDeviceToken", time.Time{})
		return
	}
	limit := 4096
	if req.PushType == "voip" {
		limit = 5120
	}
	switch {
	case len(body) == 0:
		answer(http.StatusBadRequest, "PayloadEmpty", time.Time{})
		return
	case len(body) > limit:
		answer(http.StatusRequestEntityTooLarge, "PayloadTooLarge", time.Time{})
		return
	}
	if err := json.Unmarshal(body, &req.Payload); err != nil {
		answer(http.StatusBadRequest, "BadMessageId", time.Time{}) // Apple answers malformed JSON with a 400
		return
	}
	aps, ok := req.Payload["aps"].(map[string]any)
	if !ok {
		answer(http.StatusBadRequest, "PayloadEmpty", time.Time{})
		return
	}
	// Background pushes must be priority 5, carry content-available and no
	// alert, sound or badge.
	if req.PushType == "background" {
		_, alert := aps["alert"]
		_, sound := aps["sound"]
		if req.Priority != "5" || aps["content-available"] != float64(1) || alert || sound {
			answer(http.StatusBadRequest, "BadPriority", time.Time{})
			return
		}
	}
	if hasFault && fault.Status != 0 {
		answer(fault.Status, fault.Reason, fault.Timestamp)
		return
	}
	if token == NoDevice {
		// Whether a device has the token is known only by looking it
		// up, once the request passed every other check.
		answer(http.StatusBadRequest, "BadDeviceToken", time.Time{})
		return
	}
	answer(http.StatusOK, "", time.Time{})
}

// authenticate checks the provider's credentials and returns how it
// authenticated, or Apple's 403 reason.
func (s *Server) authenticate(r *http.Request, req *Request) (string, string) {
	if s.cfg.ClientCAs != nil {
		if r.TLS == nil || len(r.TLS.VerifiedChains) == 0 {
			return "", "BadCertificate"
		}
		return "certificate", ""
	}
	if s.cfg.TokenKey == nil {
		return "", ""
	}
	h := r.Header.Get("authorization")
	bearer, ok := strings.CutPrefix(h, "bearer ")
	if !ok || bearer == "" {
		return "", "MissingProviderToken"
	}
	req.Bearer = bearer
	if s.revoked.Load() {
		return "", "InvalidProviderToken"
	}
	issuedAt, reason := s.verify(bearer)
	if reason != "" {
		return "", reason
	}
	req.IssuedAt = issuedAt
	if s.cfg.Now().Sub(issuedAt) > time.Hour {
		return "", "ExpiredProviderToken"
	}
	return "token", ""
}

type verifiedToken struct {
	bearer   string
	issuedAt time.Time
}

// verify checks a provider token's signature, key id and team, and
// returns when it was issued, or Apple's 403 reason.
func (s *Server) verify(bearer string) (time.Time, string) {
	if v := s.verified.Load(); v != nil && v.bearer == bearer {
		return v.issuedAt, ""
	}
	var claims jwt.RegisteredClaims
	tok, err := jwt.ParseWithClaims(bearer, &claims, func(t *jwt.Token) (any, error) {
		if kid, _ := t.Header["kid"].(string); kid != s.cfg.KeyID {
			return nil, fmt.Errorf("unknown kid %q", kid)
		}
		return s.cfg.TokenKey, nil
	}, jwt.WithValidMethods([]string{"ES256"}), jwt.WithoutClaimsValidation())
	if err != nil || !tok.Valid {
		return time.Time{}, "InvalidProviderToken"
	}
	if claims.Issuer != s.cfg.TeamID || claims.IssuedAt == nil {
		return time.Time{}, "InvalidProviderToken"
	}
	s.verified.Store(&verifiedToken{bearer: bearer, issuedAt: claims.IssuedAt.Time})
	return claims.IssuedAt.Time, ""
}

func newID() string {
	b := make([]byte, 16)
	rand.Read(b)
	h := strings.ToUpper(hex.EncodeToString(b))
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

// ClientCert makes a CA and a client certificate signed by it, for
// certificate-based provider auth in tests. It returns the CA pool for
// Config.ClientCAs and the client's certificate and key in PEM.
func ClientCert() (*x509.CertPool, []byte, []byte, error) {
	caKey, err := ecdsaKey()
	if err != nil {
		return nil, nil, nil, err
	}
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "Test Apple Push CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, nil, nil, err
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, err := ecdsaKey()
	if err != nil {
		return nil, nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "Apple Push Services: im.example.app"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return nil, nil, nil, err
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, nil, err
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	return pool, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), nil
}
