package httpapi

import (
	"net/http"
	"sync/atomic"
	"time"
)

// Starting answers for a server whose listeners are bound but which cannot
// serve the API yet, as while it waits for PostgreSQL. A listener that
// refused connections meanwhile would fail an orchestrator's liveness
// probe, which restarts the process in a loop, and show an operator
// "connection refused" rather than the cause. So the health page answers
// 200 (the process is alive, doing what it should: waiting) and the
// ready page 503, both with the reason, and every other path 503 with
// Retry-After: a client that registers must try again, never take a 404
// or a 200 for an answer.
type Starting struct {
	reason     atomic.Pointer[string]
	retryAfter []string
	mux        *http.ServeMux
}

// NewStarting returns a Starting that gives reason until SetReason, asks
// clients to retry after retry, and serves metrics, when set, at /metrics.
func NewStarting(reason string, metrics http.Handler, retry time.Duration) *Starting {
	s := &Starting{retryAfter: []string{retryAfter(retry)}, mux: http.NewServeMux()}
	s.SetReason(reason)
	s.mux.HandleFunc("GET "+v1+"health", s.health)
	s.mux.HandleFunc("GET "+v1+"ready", s.ready)
	s.mux.HandleFunc("GET "+v1+"live", s.health)
	if metrics != nil {
		s.mux.Handle("GET /metrics", metrics)
	}
	s.mux.HandleFunc("/", s.unavailable)
	return s
}

// SetReason replaces what the health and ready pages say the server is
// waiting for. It must be one line, and is shown to anyone who can reach
// the API: no password or secret in it.
func (s *Starting) SetReason(reason string) { s.reason.Store(&reason) }

func (s *Starting) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

// health says STARTING where a server that serves says RUNNING: a
// check that greps for RUNNING does not take a waiting server for one
// that serves, and a probe that reads the status alone lets it wait.
// The live page answers the same, for the same probe.
func (s *Starting) health(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	text(w, "STARTING\n", *s.reason.Load(), "\n")
}

func (s *Starting) ready(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	textStatus(w, http.StatusServiceUnavailable, "NOT READY\n", *s.reason.Load(), "\n")
}

// unavailable answers in the API's ERROR form, as a push refused while
// shutting down is.
func (s *Starting) unavailable(w http.ResponseWriter, r *http.Request) {
	w.Header()["Retry-After"] = s.retryAfter
	textStatus(w, http.StatusServiceUnavailable, "ERROR\n", "Starting, try again later!")
}

// Switch is the handler of the API's listeners from the moment they are
// bound: a Starting first, then the API once it is built. The handler is
// looked up for each request, so a connection opened before the switch,
// kept alive or an HTTP/2 one, gets the API for its requests after it,
// and the listeners are bound once, with no moment in which nobody
// answers.
type Switch struct {
	h atomic.Pointer[http.Handler]
}

// NewSwitch returns a Switch that serves h until Set.
func NewSwitch(h http.Handler) *Switch {
	s := &Switch{}
	s.Set(h)
	return s
}

// Set makes h serve every request from now on, including those of
// connections already open.
func (s *Switch) Set(h http.Handler) { s.h.Store(&h) }

func (s *Switch) ServeHTTP(w http.ResponseWriter, r *http.Request) { (*s.h.Load()).ServeHTTP(w, r) }
