package httpapi

import (
	"net/http"
	"sync/atomic"
)

// Starting is the HTTP API of a server that is not serving yet (it waits
// for its registry, as for PostgreSQL at boot). The health page says the
// process runs and why it does not serve, so that a container's liveness
// probe leaves it be; the ready page and everything else answer 503, as
// the API does while it shuts down. why says what the server waits for.
func Starting(why func() string) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+v1+"health", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-store")
		text(w, "RUNNING\n", "starting: ", why(), "\n")
	})
	mux.HandleFunc("GET "+v1+"ready", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-store")
		textStatus(w, http.StatusServiceUnavailable, "NOT READY\n", "starting: ", why(), "\n")
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		textStatus(w, http.StatusServiceUnavailable, "ERROR\n", "Starting, try again later!")
	})
	return mux
}

// Switch serves through the handler last given to Set: a listener opened
// while the server starts (see Starting) goes on with the API proper.
type Switch struct{ h atomic.Pointer[http.Handler] }

// NewSwitch returns a Switch serving through h.
func NewSwitch(h http.Handler) *Switch {
	s := &Switch{}
	s.Set(h)
	return s
}

// Set makes h serve the requests from now on.
func (s *Switch) Set(h http.Handler) { s.h.Store(&h) }

func (s *Switch) ServeHTTP(w http.ResponseWriter, r *http.Request) { (*s.h.Load()).ServeHTTP(w, r) }
