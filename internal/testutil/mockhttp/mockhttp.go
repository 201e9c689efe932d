// Package mockhttp is what the push-service mocks (apnsmock, fcmmock, ...)
// share: an HTTP/2 server over TLS on a loopback port whose CA a client can
// be pointed at, and the queue of faults a test asks a mock to answer
// with, per device token or for whatever request comes next.
package mockhttp

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
)

// Server is a running HTTP/2 TLS server with a throwaway certificate.
type Server struct {
	// URL is the base URL ("https://127.0.0.1:port").
	URL string
	// CADir is a directory holding the server's certificate in PEM, for a
	// client's CA path option; CAPool is the same as a pool.
	CADir  string
	CAPool *x509.CertPool

	srv   *httptest.Server
	conns atomic.Int64
	open  atomic.Int64
	reset atomic.Bool
}

// resetListener counts every connection a client opens and, while the
// server is set to, resets it at once (TCP RST), as a broken middlebox or
// an overloaded service does.
type resetListener struct {
	net.Listener
	s *Server
}

func (l resetListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		l.s.conns.Add(1)
		if !l.s.reset.Load() {
			return c, nil
		}
		if tc, ok := c.(*net.TCPConn); ok {
			tc.SetLinger(0)
		}
		c.Close()
	}
}

// Start serves h over HTTP/2 and TLS. tlsCfg, when not nil, is the base
// TLS configuration (client certificate checks, for example).
func Start(name string, h http.Handler, tlsCfg *tls.Config) (*Server, error) {
	return StartWith(name, h, tlsCfg, nil)
}

// StartWith is Start with setup, when not nil, applied to the HTTP server
// before it starts (its HTTP/2 settings, for example).
func StartWith(name string, h http.Handler, tlsCfg *tls.Config, setup func(*http.Server)) (*Server, error) {
	s := &Server{}
	s.srv = httptest.NewUnstartedServer(h)
	s.srv.EnableHTTP2 = true
	s.srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	if setup != nil {
		setup(s.srv.Config)
	}
	hook := s.srv.Config.ConnState
	s.srv.Config.ConnState = func(c net.Conn, state http.ConnState) {
		switch state {
		case http.StateNew:
			s.open.Add(1)
		case http.StateClosed, http.StateHijacked:
			s.open.Add(-1)
		}
		if hook != nil {
			hook(c, state)
		}
	}
	s.srv.Listener = resetListener{Listener: s.srv.Listener, s: s}
	s.srv.TLS = tlsCfg
	s.srv.StartTLS()
	s.URL = s.srv.URL
	s.CAPool = x509.NewCertPool()
	s.CAPool.AddCert(s.srv.Certificate())
	dir, err := os.MkdirTemp("", name+"-ca")
	if err != nil {
		s.srv.Close()
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	s.CADir = dir
	cert := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: s.srv.Certificate().Raw})
	if err := os.WriteFile(filepath.Join(dir, name+".pem"), cert, 0o644); err != nil {
		s.Close()
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return s, nil
}

// Close stops the server and removes its files.
func (s *Server) Close() {
	s.srv.Close()
	os.RemoveAll(s.CADir)
}

// Connections returns how many connections clients opened (or tried to,
// while they are reset).
func (s *Server) Connections() int { return int(s.conns.Load()) }

// Open returns how many connections are open now: those clients opened
// and neither side closed yet (the server sees a close after the client
// made it).
func (s *Server) Open() int { return int(s.open.Load()) }

// ResetConnections makes the server reset every new connection (on) or
// serve them again (off).
func (s *Server) ResetConnections(on bool) { s.reset.Store(on) }

// HTTPServer is the underlying server, for hooks a mock needs.
func (s *Server) HTTPServer() *http.Server { return s.srv.Config }

// Faults is a queue of injected answers of type F: per device token first,
// then a schedule that applies to any request. Safe for concurrent use.
type Faults[F any] struct {
	mu       sync.Mutex
	byToken  map[string][]F
	schedule []F
}

// ForToken queues faults for the next requests to token, one each.
func (q *Faults[F]) ForToken(token string, faults ...F) {
	q.mu.Lock()
	if q.byToken == nil {
		q.byToken = map[string][]F{}
	}
	q.byToken[token] = append(q.byToken[token], faults...)
	q.mu.Unlock()
}

// Next queues faults for the next requests, whatever their token.
func (q *Faults[F]) Next(faults ...F) {
	q.mu.Lock()
	q.schedule = append(q.schedule, faults...)
	q.mu.Unlock()
}

// Take removes and returns the fault for a request to token, if any.
func (q *Faults[F]) Take(token string) (F, bool) { return q.take(token, true) }

// TakeForToken is Take of the faults queued for token alone, for a
// request the schedule is not meant for.
func (q *Faults[F]) TakeForToken(token string) (F, bool) { return q.take(token, false) }

func (q *Faults[F]) take(token string, scheduled bool) (F, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if fs := q.byToken[token]; len(fs) > 0 {
		q.byToken[token] = fs[1:]
		return fs[0], true
	}
	if scheduled && len(q.schedule) > 0 {
		f := q.schedule[0]
		q.schedule = q.schedule[1:]
		return f, true
	}
	var zero F
	return zero, false
}

// Pending returns how many faults are queued still: 0 once the requests
// they were queued for have come.
func (q *Faults[F]) Pending() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	n := len(q.schedule)
	for _, fs := range q.byToken {
		n += len(fs)
	}
	return n
}

// Clear drops every queued fault.
func (q *Faults[F]) Clear() {
	q.mu.Lock()
	q.byToken, q.schedule = nil, nil
	q.mu.Unlock()
}
