// Package fcmmock is a stand-in for Firebase Cloud Messaging's HTTP v1 API
// and Google's OAuth2 token endpoint, over HTTP/2 and TLS. The token
// endpoint checks the service account's signed JWT assertion and issues
// bearer tokens; messages:send checks the bearer, the project and the
// message JSON as Google documents it, answers validate_only sends
// without delivering them, records every request, and injects Google's
// errors (UNREGISTERED, INVALID_ARGUMENT, QUOTA_EXCEEDED with
// Retry-After, UNAVAILABLE, INTERNAL, UNAUTHENTICATED, delays) per token
// or by schedule. A message whose data is larger than FCM takes (see
// DataSize) is refused as FCM refuses it.
package fcmmock

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/push-appserver/push-appserver/internal/testutil/mockhttp"
)

// Scope is the OAuth2 scope FCM needs.
const Scope = "https://www.googleapis.com/auth/firebase.messaging"

// Request is one messages:send call as the mock saw it.
type Request struct {
	Project string
	Bearer  string
	Message map[string]any
	Status  int
	Code    string // FCM error code answered, if any
	Name    string // the message's name answered on success
	// ValidateOnly marks a send FCM only checks, delivering nothing:
	// Checks, not Requests, holds it.
	ValidateOnly bool
}

// Fault is an answer to inject.
type Fault struct {
	Status     int    // HTTP status
	Code       string // FCM errorCode (UNREGISTERED, QUOTA_EXCEEDED, ...)
	Message    string
	RetryAfter string // Retry-After header value
	Delay      time.Duration
	// Details are more entries of the error's details, after the
	// FcmError one (google.rpc.BadRequest's fieldViolations, ...).
	Details []map[string]any
}

// Server is a running mock.
type Server struct {
	URL      string // base URL for messages:send
	TokenURL string
	CADir    string // directory with the mock's CA certificate, for a CA path option

	srv         *mockhttp.Server
	caPool      *x509.CertPool // for the mock's own tests
	faults      mockhttp.Faults[Fault]
	key         *rsa.PrivateKey
	email       string
	project     string
	tokenTTL    time.Duration
	tokenDelay  time.Duration
	mu          sync.Mutex
	tokens      map[string]time.Time
	tokenCalls  int
	requests    []Request
	checks      []Request
	accepted    int
	maxRequests int
}

// New starts a mock for one project with a freshly generated service
// account key.
func New(project string) (*Server, error) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, err
	}
	s := &Server{key: key, email: "push@" + project + ".iam.gserviceaccount.com", project: project,
		tokenTTL: time.Hour, tokens: map[string]time.Time{}, maxRequests: 100000}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /token", s.token)
	mux.HandleFunc("POST /v1/projects/{project}/messages:send", s.send)
	srv, err := mockhttp.Start("fcmmock", mux, nil)
	if err != nil {
		return nil, err
	}
	s.srv, s.URL, s.CADir, s.caPool = srv, srv.URL, srv.CADir, srv.CAPool
	s.TokenURL = s.URL + "/token"
	return s, nil
}

// KeepRequests sets how many requests Requests keeps (100,000 unless
// set): a benchmark that sends millions needs only the count.
func (s *Server) KeepRequests(n int) {
	s.mu.Lock()
	s.maxRequests = n
	s.mu.Unlock()
}

// Close stops the mock.
func (s *Server) Close() { s.srv.Close() }

// Connections returns how many connections clients opened.
func (s *Server) Connections() int { return s.srv.Connections() }

// OpenConnections returns how many connections are open now.
func (s *Server) OpenConnections() int { return s.srv.Open() }

// ServiceAccountJSON returns a service-account key file's content for the
// mock's project, its token_uri pointing at the mock.
func (s *Server) ServiceAccountJSON() []byte {
	der := x509.MarshalPKCS1PrivateKey(s.key)
	b, _ := json.Marshal(map[string]string{
		"type":           "service_account",
		"project_id":     s.project,
		"private_key_id": "key1",
		"private_key":    string(pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: der})),
		"client_email":   s.email,
		"client_id":      "1",
		"token_uri":      s.TokenURL,
	})
	return b
}

// WriteServiceAccount writes ServiceAccountJSON to a file in dir.
func (s *Server) WriteServiceAccount(dir string) (string, error) {
	p := filepath.Join(dir, "service-account.json")
	return p, os.WriteFile(p, s.ServiceAccountJSON(), 0o600)
}

// WriteForeignServiceAccount writes in dir the service account of a
// project of that name whose key no running mock knows: any mock's token
// endpoint refuses it, as Google refuses a key it does not know or that
// was deleted.
func WriteForeignServiceAccount(dir, project string) (string, error) {
	s, err := New(project)
	if err != nil {
		return "", err
	}
	s.Close()
	return s.WriteServiceAccount(dir)
}

// SetTokenTTL sets the lifetime of the access tokens issued from now on.
func (s *Server) SetTokenTTL(d time.Duration) {
	s.mu.Lock()
	s.tokenTTL = d
	s.mu.Unlock()
}

// SetTokenDelay makes the token endpoint answer d late, as a slow or
// distant one does.
func (s *Server) SetTokenDelay(d time.Duration) {
	s.mu.Lock()
	s.tokenDelay = d
	s.mu.Unlock()
}

// RevokeTokens makes every issued access token invalid (401).
func (s *Server) RevokeTokens() {
	s.mu.Lock()
	s.tokens = map[string]time.Time{}
	s.mu.Unlock()
}

// TokenRequests returns how many access tokens were issued.
func (s *Server) TokenRequests() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.tokenCalls
}

// Requests returns the recorded messages:send calls.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Request(nil), s.requests...)
}

// Checks returns the recorded validate_only sends, which Requests and
// Accepted leave out: they deliver nothing. Faults queued by FailNext
// are not theirs either, only those FailToken queued for their token.
func (s *Server) Checks() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Request(nil), s.checks...)
}

// Accepted returns how many messages were accepted.
func (s *Server) Accepted() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.accepted
}

// FailToken makes the next sends to a device token fail, one fault each.
func (s *Server) FailToken(token string, faults ...Fault) { s.faults.ForToken(token, faults...) }

// FailNext makes the next sends fail, whatever their token.
func (s *Server) FailNext(faults ...Fault) { s.faults.Next(faults...) }

func (s *Server) token(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	delay := s.tokenDelay
	s.mu.Unlock()
	time.Sleep(delay)
	if err := r.ParseForm(); err != nil {
		oauthError(w, "invalid_request")
		return
	}
	if r.PostForm.Get("grant_type") != "urn:ietf:params:oauth:grant-type:jwt-bearer" {
		oauthError(w, "unsupported_grant_type")
		return
	}
	var claims struct {
		jwt.RegisteredClaims
		Scope string `json:"scope"`
	}
	_, err := jwt.ParseWithClaims(r.PostForm.Get("assertion"), &claims, func(*jwt.Token) (any, error) {
		return &s.key.PublicKey, nil
	}, jwt.WithValidMethods([]string{"RS256"}), jwt.WithAudience(s.TokenURL), jwt.WithIssuer(s.email), jwt.WithIssuedAt(), jwt.WithExpirationRequired())
	if err != nil || !strings.Contains(claims.Scope, Scope) {
		oauthError(w, "invalid_grant")
		return
	}
	b := make([]byte, 16)
	rand.Read(b)
	tok := "ya29.mock-" + hex.EncodeToString(b)
	s.mu.Lock()
	s.tokenCalls++
	ttl := s.tokenTTL
	s.tokens[tok] = time.Now().Add(ttl)
	s.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(map[string]any{"access_token": tok, "token_type": "Bearer", "expires_in": int(ttl.Seconds())})
}

func oauthError(w http.ResponseWriter, code string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusBadRequest)
	json.NewEncoder(w).Encode(map[string]string{"error": code})
}

var ttlRE = regexp.MustCompile(`^\d+(\.\d{1,9})?s$`)

func (s *Server) send(w http.ResponseWriter, r *http.Request) {
	req := Request{Project: r.PathValue("project")}
	var extra []map[string]any
	fail := func(status int, code, status2, msg string, retryAfter string) {
		req.Status, req.Code = status, code
		s.record(req, false)
		if retryAfter != "" {
			w.Header().Set("Retry-After", retryAfter)
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		details := []any{map[string]any{"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": code}}
		for _, d := range extra {
			details = append(details, d)
		}
		body := map[string]any{"error": map[string]any{"code": status, "message": msg, "status": status2, "details": details}}
		json.NewEncoder(w).Encode(body)
	}
	// Read first, so that a refused validate_only send is recorded as
	// one.
	var body struct {
		ValidateOnly bool           `json:"validate_only"`
		Message      map[string]any `json:"message"`
	}
	malformed := json.NewDecoder(io.LimitReader(r.Body, 64<<10)).Decode(&body) != nil || body.Message == nil
	req.Message, req.ValidateOnly = body.Message, body.ValidateOnly
	bearer, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	req.Bearer = bearer
	s.mu.Lock()
	exp, ok := s.tokens[bearer]
	s.mu.Unlock()
	if !ok || time.Now().After(exp) {
		fail(http.StatusUnauthorized, "UNAUTHENTICATED", "UNAUTHENTICATED", "Request had invalid authentication credentials.", "")
		return
	}
	if req.Project != s.project {
		fail(http.StatusForbidden, "SENDER_ID_MISMATCH", "PERMISSION_DENIED", "SenderId mismatch", "")
		return
	}
	if malformed {
		fail(http.StatusBadRequest, "INVALID_ARGUMENT", "INVALID_ARGUMENT", "Invalid JSON payload received.", "")
		return
	}
	if msg := validate(body.Message); msg != "" {
		fail(http.StatusBadRequest, "INVALID_ARGUMENT", "INVALID_ARGUMENT", msg, "")
		return
	}
	if data, _ := body.Message["data"].(map[string]any); DataSize(data) > MaxData {
		// What FCM answers a message too big, naming no field.
		fail(http.StatusBadRequest, "INVALID_ARGUMENT", "INVALID_ARGUMENT", "Request contains an invalid argument.", "")
		return
	}
	token, _ := body.Message["token"].(string)
	take := s.faults.Take
	if req.ValidateOnly {
		take = s.faults.TakeForToken
	}
	if f, ok := take(token); ok {
		if f.Delay > 0 {
			time.Sleep(f.Delay)
		}
		if f.Status != 0 {
			extra = f.Details
			status := map[int]string{400: "INVALID_ARGUMENT", 404: "NOT_FOUND", 429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 503: "UNAVAILABLE", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED"}[f.Status]
			fail(f.Status, f.Code, status, f.Message, f.RetryAfter)
			return
		}
	}
	if !issuable(token) {
		// Whether a device has the token is known only by looking it
		// up, once the request passed every other check.
		fail(http.StatusBadRequest, "INVALID_ARGUMENT", "INVALID_ARGUMENT", "The registration token is not a valid FCM registration token", "")
		return
	}
	req.Status = http.StatusOK
	req.Name = fmt.Sprintf("projects/%s/messages/%d", s.project, time.Now().UnixNano())
	if req.ValidateOnly {
		// What FCM names a message it did not send.
		req.Name = fmt.Sprintf("projects/%s/messages/fake_message_id", s.project)
	}
	s.record(req, !req.ValidateOnly)
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(map[string]string{"name": req.Name})
}

// validate checks a message the way FCM does, returning Google's
// complaint or "".
func validate(m map[string]any) string {
	targets := 0
	for _, k := range []string{"token", "topic", "condition"} {
		if v, ok := m[k]; ok {
			if s, ok := v.(string); !ok || s == "" {
				return fmt.Sprintf("Invalid value at 'message.%s'", k)
			}
			targets++
		}
	}
	if targets != 1 {
		return "Exactly one of token, topic or condition must be set"
	}
	if d, ok := m["data"]; ok {
		dm, ok := d.(map[string]any)
		if !ok {
			return "Invalid value at 'message.data'"
		}
		for k, v := range dm {
			if _, ok := v.(string); !ok {
				return fmt.Sprintf("Invalid value at 'message.data[%s]' (TYPE_STRING)", k)
			}
		}
	}
	if a, ok := m["android"]; ok {
		am, ok := a.(map[string]any)
		if !ok {
			return "Invalid value at 'message.android'"
		}
		if p, ok := am["priority"]; ok && p != "HIGH" && p != "NORMAL" {
			return "Invalid value at 'message.android.priority'"
		}
		if ttl, ok := am["ttl"]; ok {
			if s, ok := ttl.(string); !ok || !ttlRE.MatchString(s) {
				return "Invalid value at 'message.android.ttl' (type.googleapis.com/google.protobuf.Duration)"
			}
		}
	}
	if tok, _ := m["token"].(string); strings.ContainsAny(tok, " \t\n") {
		return "The registration token is not a valid FCM registration token"
	}
	return ""
}

// MaxData is what FCM takes of a message's data, as DataSize counts it.
const MaxData = 4096

// DataSize is a message's data as FCM counts it against MaxData: not
// only its keys' and values' bytes, as Google's documentation has it,
// but 6 bytes more for each pair and 39 for the message. Measured
// against FCM's HTTP v1 API: data of one pair is taken up to 4,051
// bytes of key and value, of two up to 4,045, of three up to 4,039,
// and refused above with 400 INVALID_ARGUMENT "Request contains an
// invalid argument."
func DataSize(data map[string]any) int {
	if len(data) == 0 {
		return 0
	}
	n := 39
	for k, v := range data {
		s, _ := v.(string)
		n += len(k) + len(s) + 6
	}
	return n
}

// issuable reports whether FCM could have issued token: its tokens are
// letters, digits, '-', '_' and ':'. A topic or condition send has none.
func issuable(token string) bool {
	for _, c := range []byte(token) {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_' || c == ':') {
			return false
		}
	}
	return true
}

func (s *Server) record(r Request, ok bool) {
	s.mu.Lock()
	if ok {
		s.accepted++
	}
	if r.ValidateOnly {
		s.checks = append(s.checks, r)
	} else if len(s.requests) < s.maxRequests {
		s.requests = append(s.requests, r)
	}
	s.mu.Unlock()
}
